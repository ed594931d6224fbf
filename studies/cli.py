"""The ``spanmix`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from proxies import ConfigError, ProxyConfig, count, measure_latency
from space import Schedule, ScheduleError

EXAMPLES = (
    "F F F F F F F F",
    "S256 S256 S256 F S256 S256 S256 F",
    "F S256 S256 S256 S256 S256 S256 S256",
    "B256 B256 B256 F B256 B256 B256 F",
    "S256 S256 S256 S256 S256 S256 S256 S256",
)


def _cost(args: argparse.Namespace) -> int:
    cfg = ProxyConfig(d_model=args.d_model, n_heads=args.n_heads, context=args.context)
    texts = args.schedule or list(EXAMPLES)
    schedules = [Schedule.parse(text) for text in texts]
    for s in schedules:
        s.validate(cfg.context)
    reports = [count(cfg, s) for s in schedules]
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
        return 0
    print(f"proxy d_model={cfg.d_model} heads={cfg.n_heads} T={cfg.context}; multiply-adds counted by fvcore "
          f"(equal to the closed form: {all(r.total == r.closed_form_total for r in reports)})")
    header = f"{'schedule':<40} {'G MACs':>8} {'vs full':>8} {'attn vs full':>12} {'KV MiB':>8}"
    if args.latency:
        header += f" {'fwd+bwd ms':>11}"
    print(header)
    for s, r in zip(schedules, reports):
        line = (f"{s.text:<40} {r.total / 1e9:>8.3f} {r.ratio:>8.1%} {r.attention_ratio:>12.1%} "
                f"{r.kv_cache_bytes / 2**20:>8.2f}")
        if args.latency:
            line += f" {measure_latency(cfg, s):>11.0f}"
        print(line)
    if args.layers:
        for r in reports:
            print(f"\n{r.schedule}\n{r.table()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spanmix",
        description="Find, by measurement, which layers of a long-context transformer need full attention.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cost = sub.add_parser(
        "cost",
        help="count what schedules cost (fvcore, closed form, KV cache, latency)",
        description="Count each schedule's multiply-adds with fvcore on the real proxy model, next to "
        "the all-full schedule of the same depth. A schedule is one token per layer: F (full), "
        "S<w> (sliding window w) or B<w> (MASFormer block of w).",
        epilog='example: spanmix cost -s "F S256 S256 F" -s "F F F F" --layers',
    )
    cost.add_argument("-s", "--schedule", action="append", help="a schedule in text form; repeat for more")
    cost.add_argument("--d-model", type=int, default=256, help="proxy width (default 256)")
    cost.add_argument("--n-heads", type=int, default=4, help="attention heads (default 4)")
    cost.add_argument("--context", type=int, default=2048, help="sequence length counted (default 2048)")
    cost.add_argument("--layers", action="store_true", help="also print each schedule's per-layer breakdown")
    cost.add_argument("--latency", action="store_true", help="also measure fwd+bwd time on this machine")
    cost.add_argument("--json", action="store_true", help="print the full reports as JSON")
    cost.set_defaults(run=_cost)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ConfigError, ScheduleError) as err:
        print(f"spanmix {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
