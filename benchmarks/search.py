"""Wall time of the supernet strategy to a confirmed front, against training every schedule standalone.

Runs a preset (default ``medium``) with ``strategy = "supernet"`` into a fresh folder and prints, all
measured in this run:

* the wall time of each stage (supernet training, scoring the space, standalone confirmation);
* the mean wall time of one standalone trial (the confirmation trials), times the number of
  schedules in the space: what the standalone strategy would need to measure the space;
* the ratio of the two (target: >= 20x);
* rank fidelity of the supernet against standalone training on the confirmed set (target: Kendall
  tau >= 0.6 among schedules with a full layer, top-3 overlap >= 2);
* the cost of switching schedules every step: the same schedules trained in turns (one per step,
  as the sandwich rule does) against in runs (one schedule for many steps), tokens per second
  (target: under 5% slower);
* for the README: the best schedule per number of full layers, and placements compared at equal
  numbers of full layers, from the supernet's scores of the whole space.

    python benchmarks/search.py                        # the medium preset: about an hour on 2 cores
    python benchmarks/search.py --preset quick --out /tmp/q
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402

from benchmarks.machine import describe  # noqa: E402
from spanmix.proxies.resources import resolve_precision  # noqa: E402
from spanmix.proxies.train import ProxyLM, fit  # noqa: E402
from spanmix.search import STANDALONE, StudyConfig, StudyView, run_study  # noqa: E402
from spanmix.search.strategies.supernet import SUPERNET, Sandwich, settings  # noqa: E402
from spanmix.space import Schedule  # noqa: E402
from spanmix.studies.config import load_config, preset_names  # noqa: E402
from spanmix.studies.report import print_summary, trials_frame  # noqa: E402


def switching_cost(cfg: StudyConfig, steps_each: int = 6, rounds: int = 4) -> tuple[list[float], list[float], list[Schedule]]:
    """Tokens/s training the sandwich's first cycle in turns (a new schedule every step) and in
    runs (each schedule ``steps_each`` steps in a row): the same steps, the same schedules, timed
    in ``rounds`` rounds whose order alternates (turns first, then runs first), after one warm-up
    fit, so a one-time cost (allocator, thread pool, first kernels) falls on neither side."""
    sandwich = Sandwich(cfg.space, settings(cfg).random_draws, cfg.train.seed)
    schedules = [sandwich(s) for s in range(sandwich.cycle)]
    n = len(schedules) * steps_each
    precision = resolve_precision(cfg.train.precision, cfg.proxy, cfg.data.seq_len, cfg.train.batch_size, cfg.space.local)
    train = replace(cfg.train, steps=n, warmup=0, precision=precision)
    draws = {"turns": lambda step: schedules[step % len(schedules)], "runs": lambda step: schedules[step // steps_each]}

    def rate(how: str) -> float:
        module = ProxyLM(cfg.proxy, sandwich.dearest, cfg.data, train, draw=draws[how])
        return fit(module, train).tokens_per_second(train.batch_size, cfg.data.seq_len)

    rate("runs")  # warm-up, not counted
    rates: dict[str, list[float]] = {"turns": [], "runs": []}
    for i in range(rounds):
        for how in ("turns", "runs") if i % 2 == 0 else ("runs", "turns"):
            rates[how].append(rate(how))
    return rates["turns"], rates["runs"], schedules


def report_switching(cfg: StudyConfig, rounds: int) -> None:
    turns, runs, schedules = switching_cost(cfg, rounds=rounds)
    ratios = [t / r - 1 for t, r in zip(turns, runs)]
    print(f"\nswitching every step, over {', '.join(s.text for s in schedules)} ({rounds} rounds, order alternating):")
    print("  turns tokens/s: " + ", ".join(f"{t:.0f}" for t in turns))
    print("  runs  tokens/s: " + ", ".join(f"{r:.0f}" for r in runs))
    print(f"  turns vs runs by round: {', '.join(f'{x:+.1%}' for x in ratios)}; median {statistics.median(ratios):+.1%} "
          f"(target > -5%)", flush=True)


def best_tables(frame: pd.DataFrame, quality: str, maximize: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Best schedule per number of full layers, and the best quality per placement at each count."""
    frame = frame.copy()
    frame["placement"] = frame["params_placement"].fillna("-") if "params_placement" in frame else "-"
    ordered = frame.sort_values("quality", ascending=not maximize)
    best = ordered.groupby("n_full", as_index=False).first()[["n_full", "schedule", "quality", "cost_ratio"]]
    placements = ordered[ordered["placement"] != "-"].pivot_table(
        index="n_full", columns="placement", values="quality", aggfunc="max" if maximize else "min")
    return best, placements


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="medium", choices=preset_names(), help="a built-in preset (default medium)")
    parser.add_argument("--out", default="runs/bench-search", help="folder for the study (emptied first)")
    parser.add_argument("--keep", action="store_true", help="resume in --out instead of emptying it")
    parser.add_argument("--switching-only", action="store_true", help="only the cost of switching schedules every step")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of the switching measurement (default 4)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    cfg = load_config(preset=args.preset)
    cfg = replace(cfg, strategy="supernet", name=f"{cfg.name}-bench")
    if args.switching_only:
        print(describe(), flush=True)
        report_switching(cfg, args.rounds)
        return
    out = Path(args.out)
    if out.exists() and not args.keep:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    print(describe(), flush=True)
    print(f"preset {args.preset}: {cfg.space.size()} schedules, proxy d={cfg.proxy.d_model} T={cfg.data.seq_len}, "
          f"{cfg.train.steps} standalone steps, {settings(cfg).total_steps(cfg.train)} supernet steps, "
          f"precision {resolve_precision(cfg.train.precision, cfg.proxy, cfg.data.seq_len, cfg.train.batch_size, cfg.space.local)}\n", flush=True)

    start = time.perf_counter()
    study = run_study(cfg, f"sqlite:///{out / 'study.db'}", workdir=out)
    wall = time.perf_counter() - start
    view = StudyView(study, cfg)
    print_summary(view)
    confirm = [r for r in view.records if r.complete and r.measurement == STANDALONE and r.reused_from is None]
    one = sum(r.duration.total_seconds() for r in confirm) / len(confirm)
    exhaustive = one * cfg.space.size()
    print("\nwall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in view.stage_seconds.items()) + f"; total {wall:.0f}")
    print(f"one standalone trial: {one:.0f} s (mean of {len(confirm)}); x {cfg.space.size()} schedules = {exhaustive:.0f} s")
    print(f"speed-up to a confirmed front: {exhaustive / wall:.1f}x (target 20x)")
    for cheap, dear, report in view.comparisons:
        for f in report:
            print(f"fidelity of {cheap} against {dear}: {f.line()}")

    report_switching(cfg, args.rounds)
    print(f"supernet training throughput: {view.weights.get('tokens_per_second', 0):.0f} tokens/s")

    frame = trials_frame(view)
    frame = frame[(frame["measurement"] == SUPERNET) & (frame["state"] == "COMPLETE")]
    best, placements = best_tables(frame, cfg.quality, maximize=False)
    print(f"\nbest schedule per number of full layers (supernet {cfg.quality}):")
    print(best.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"\nbest {cfg.quality} by placement at equal numbers of full layers (supernet):")
    print(placements.to_string(float_format=lambda v: f"{v:.4f}"))
    standalone = {p.schedule: p.quality for p in view.points(STANDALONE)}
    print(f"\nconfirmed standalone ({len(standalone)}):")
    for p in sorted(view.points(SUPERNET), key=lambda p: p.cost_ratio):
        if p.schedule in standalone:
            print(f"  {p.schedule:<40} supernet {p.quality:.4f}  standalone {standalone[p.schedule]:.4f}  cost {p.cost_ratio:.1%}")


if __name__ == "__main__":
    main()
