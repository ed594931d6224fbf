"""``spanmix cost``: what schedules cost, counted by fvcore on the real proxy model."""

from __future__ import annotations

import argparse
import json

from spanmix.proxies import ProxyConfig, checkpoint, count, measure_latency
from spanmix.proxies.checkpoint import BaseConfig
from spanmix.space import Schedule

EXAMPLES = (
    "F F F F F F F F",
    "S256 S256 S256 F S256 S256 S256 F",
    "F S256 S256 S256 S256 S256 S256 S256",
    "B256 B256 B256 F B256 B256 B256 F",
    "S256 S256 S256 S256 S256 S256 S256 S256",
)


def add(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "cost", help="count what schedules cost (fvcore, closed form, KV cache, latency)",
        description="Count each schedule's multiply-adds with fvcore on the real proxy model, next to "
        "the all-full schedule of the same depth. A schedule is one token per layer: F (full), "
        "S<w> (sliding window w), S<w>+<s> (sliding window w plus the first s tokens, attention sinks) "
        "or B<w> (MASFormer block of w).",
        epilog='examples:\n  spanmix cost -s "F S256 S256 F" -s "F F F F" --layers\n'
        '  spanmix cost --checkpoint tiny-qwen2 --context 1024 -s "F S32 S32 F" -s "F F F F"',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-s", "--schedule", action="append", help="a schedule in text form; repeat for more")
    p.add_argument("--d-model", type=int, default=256, help="proxy width (default 256)")
    p.add_argument("--n-heads", type=int, default=4, help="attention heads (default 4)")
    p.add_argument("--context", type=int, default=2048, help="sequence length counted (default 2048)")
    p.add_argument("--checkpoint", metavar="FOLDER",
                   help="count a pretrained checkpoint's cost instead of a proxy's (a local save_pretrained folder: "
                   "its layers, key-value heads and dtype; --d-model and --n-heads are then its own)")
    p.add_argument("--layers", action="store_true", help="also print each schedule's per-layer breakdown")
    p.add_argument("--latency", action="store_true", help="also measure fwd+bwd time on this machine")
    p.add_argument("--json", action="store_true", help="print the full reports as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg = ProxyConfig(d_model=args.d_model, n_heads=args.n_heads, context=args.context)
    schedules = [Schedule.parse(text).validate(cfg.context) for text in (args.schedule or EXAMPLES)]
    if args.checkpoint is not None:
        base = BaseConfig(model=args.checkpoint)
        for s in schedules:  # one line naming both depths, before anything is counted
            checkpoint.check_layers(base, s)
        reports = [checkpoint.count(base, s, args.context) for s in schedules]
        shape = checkpoint.shape(base)
        counted = "fvcore" if checkpoint.is_dense(base) else "the closed form (a mixture of experts)"
        what = (f"checkpoint {args.checkpoint} d_model={shape.d_model} heads={shape.n_heads} kv_heads={shape.kv_heads} "
                f"KV bytes/value={shape.kv_bytes} T={args.context}; multiply-adds counted by {counted}")
    else:
        reports = [count(cfg, s) for s in schedules]
        what = f"proxy d_model={cfg.d_model} heads={cfg.n_heads} T={cfg.context}; multiply-adds counted by fvcore"
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
        return 0
    exact = all(r.total == r.closed_form_total and r.decode == r.closed_form_decode for r in reports)
    print(f"{what} (equal to the closed form: {exact}). prefill: a forward over the T tokens; decode: generating "
          f"token T; KV: the peak cache")
    header = (f"{'schedule':<40} {'prefill G':>9} {'vs full':>8} {'attn vs full':>12} {'decode M':>9} {'vs full':>8} "
              f"{'KV MiB':>8}")
    print(header + (f" {'fwd+bwd ms':>11}" if args.latency else ""))
    for s, r in zip(schedules, reports):
        line = (f"{s.text:<40} {r.total / 1e9:>9.3f} {r.ratio:>8.1%} {r.attention_ratio:>12.1%} "
                f"{r.decode / 1e6:>9.3f} {r.decode_ratio:>8.1%} {r.kv_cache_bytes / 2**20:>8.2f}")
        print(line + (f" {measure_latency(cfg, s):>11.0f}" if args.latency and args.checkpoint is None else ""))
    if args.layers:
        for r in reports:
            print(f"\n{r.schedule}\n{r.table()}")
    return 0
