"""The calibration threshold, measured: how often k seeds call a budget separating when it is not, and when it is.

Calibration (``spanmix calibrate``) passes a budget when the dearest and cheapest schedules of the
space are at least ``search.calibration.separation(k)`` noise units apart with the study's k seeds
each (units: the gap of their means over the paired seed noise, the standard deviation of their
per-seed differences over sqrt(2)). This script trains
both schedules with many more seeds (``--seeds N``, scored at 1/4, 1/2 and all of the budget, as
calibration scores them) and, for every budget and k, counts over all ways of drawing k of the N
seeds:

* **false**: two disjoint draws of k seeds of the *same* schedule, paired in the order drawn,
  which no budget can separate, that reach the threshold (pooled over both schedules);
* **t**: the same rate where the per-seed differences are normal (the units are then sqrt(2/k)
  times a t with k - 1 degrees of freedom): where ``false`` is above it, the noise has heavier tails;
* **pass**: the same k seeds of the dearest and of the cheapest (paired, as a study trains them)
  that reach it: how often the study would go on at that budget.

Beside them, the gap with all N seeds and the paired t-test's two-sided p between the two schedules:
what the budget really separates. Each seed's scores are kept in ``--out`` as it finishes, so a
stopped run resumes; every training is fp32 (``--precision``).

    python benchmarks/calibration.py                                # quick, 12 seeds: about 8 minutes on 2 cores
    python benchmarks/calibration.py --preset medium --seeds 6      # about 33 minutes
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
from dataclasses import replace
from datetime import date
from pathlib import Path

from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import describe  # noqa: E402
from spanmix.search.calibration import CurvePoint, separation  # noqa: E402
from spanmix.search.config import StudyConfig  # noqa: E402
from spanmix.search.logs import quiet_libraries  # noqa: E402
from spanmix.search.measures import CURVE, StandaloneMeasure, digest  # noqa: E402
from spanmix.space import Schedule  # noqa: E402
from spanmix.studies.config import load_config, preset_names  # noqa: E402

THRESHOLDS = (3.0, 3.51, 5.0, 8.0, 12.7)


def seed_scores(cfg: StudyConfig, seeds: int, out: Path, schedules: list[Schedule] | None = None
                ) -> dict[str, dict[int, dict[float, float]]]:
    """Each of ``schedules`` (default: the space's extremes, dearest first) trained with ``seeds``
    seeds: schedule -> seed -> budget fraction -> quality. Read from ``out/seeds.json`` where an
    earlier run of the same measurement left it; each new seed is written there as it finishes, so
    a stopped run resumes."""
    measure = StandaloneMeasure(cfg, seeds=seeds)
    key = digest(measure.key)
    path = out / "seeds.json"
    kept = json.loads(path.read_text()) if path.exists() else {}
    if kept.get("key") != key:
        kept = {"key": key, "machine": describe(), "date": str(date.today()), "schedules": {}}
    steps = cfg.train.steps
    scores: dict[str, dict[int, dict[float, float]]] = {}
    for schedule in (s.canonical(cfg.space.context) for s in schedules or reversed(cfg.space.extremes())):
        runs = kept["schedules"].setdefault(schedule.text, {})
        for r in range(seeds):
            if str(r) not in runs:
                result = measure.measure(schedule, r)
                curve = {f: result.curve[round(f * steps)][cfg.quality] for f in CURVE}
                runs[str(r)] = {**{str(f): v for f, v in curve.items()}, "1.0": result.scores[cfg.quality]}
                out.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(kept, indent=1))
                print(f"  {schedule.text} seed {r}: {cfg.quality} {result.scores[cfg.quality]:.4f} "
                      f"({result.train_seconds:.0f} s)", flush=True)
        scores[schedule.text] = {int(r): {float(f): v for f, v in run.items()} for r, run in runs.items() if int(r) < seeds}
    return scores


def units(a: list[float], b: list[float]) -> float:
    """The gap of two draws in noise units, exactly as calibration computes it."""
    return CurvePoint(1.0, 0, a, b, {}).units


def null_units(values: list[float], k: int) -> list[float]:
    """Units between every two disjoint draws of ``k`` of one schedule's seeds (each pair once)."""
    n = len(values)
    return [units([values[i] for i in a], [values[i] for i in b])
            for a in itertools.combinations(range(n), k) for b in itertools.combinations(range(n), k)
            if a < b and not set(a) & set(b)]


def pass_units(dear: list[float], cheap: list[float], k: int) -> list[float]:
    """Units between the dearest and the cheapest on every draw of ``k`` seeds, the same seeds of both."""
    return [units([dear[i] for i in seeds], [cheap[i] for i in seeds]) for seeds in itertools.combinations(range(len(dear)), k)]


def t_rate(threshold: float, k: int) -> float:
    """P(units >= threshold) for two equal schedules with normal per-seed differences and ``k`` seeds each."""
    return 2 * stats.t.sf(threshold * math.sqrt(k / 2), k - 1)


def report(cfg: StudyConfig, scores: dict[str, dict[int, dict[float, float]]], ks: list[int]) -> None:
    dear, cheap = scores  # dearest first (see seed_scores)
    n = min(len(v) for v in scores.values())
    print(f"\n{dear} (dearest) against {cheap} (cheapest), {n} seeds each; {cfg.quality} at {cfg.train.steps} steps "
          f"x the budget; the study's threshold: {separation(max(2, cfg.seeds)):.3g} units at {max(2, cfg.seeds)} seeds")
    rate = lambda xs, thr: sum(x >= thr for x in xs) / len(xs)  # noqa: E731
    for f in (*CURVE, 1.0):
        d, c = ([scores[s][r][f] for r in range(n)] for s in (dear, cheap))
        p = stats.ttest_rel(d, c).pvalue
        print(f"\nbudget {f:.0%} ({round(f * cfg.train.steps)} steps): means {statistics.fmean(d):.4f} / {statistics.fmean(c):.4f}, "
              f"seed SD {statistics.stdev(d):.4f} / {statistics.stdev(c):.4f}; all {n} seeds: {units(d, c):.1f} units, paired p={p:.1e}")
        print(f"  {'k':>2} {'draws':>11} " + " ".join(f"{'>=' + format(t, 'g') + ' false/t/pass':>21}" for t in THRESHOLDS))
        for k in ks:
            null = null_units(d, k) + null_units(c, k)
            alt = pass_units(d, c, k)
            print(f"  {k:>2} {len(null):>5}/{len(alt):<5} "
                  + " ".join(f"{rate(null, t):>7.3f}/{t_rate(t, k):.3f}/{rate(alt, t):.3f}" for t in THRESHOLDS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick", choices=preset_names(), help="a built-in preset (default quick)")
    parser.add_argument("--seeds", type=int, default=12, help="seeds of each of the two schedules (default 12)")
    parser.add_argument("--k", type=int, action="append", help="seeds a study would have (repeatable; default 2, 3 "
                        "and 4, those that leave two disjoint draws)")
    parser.add_argument("--out", default="runs/bench-calibration", help="where each seed's scores are kept")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"],
                        help="what every training runs in (default fp32; auto: as the preset's study would, so "
                        "`--precision auto --out runs/bench-coverage` reads the trainings benchmarks/coverage.py kept)")
    args = parser.parse_args()
    if args.seeds < 4:
        parser.error(f"--seeds {args.seeds}: at least 4, for two disjoint draws of 2 of one schedule's seeds")
    ks = args.k or [k for k in (2, 3, 4) if 2 * k <= args.seeds]
    if bad := [k for k in ks if k < 2 or 2 * k > args.seeds]:
        parser.error(f"--k {bad[0]}: each k must be 2 to --seeds/2 = {args.seeds // 2} (two disjoint draws of k seeds)")
    quiet_libraries()
    sys.stdout.reconfigure(line_buffering=True)
    cfg = load_config(args.preset, None, {})
    cfg = replace(cfg, train=replace(cfg.train, precision=args.precision))
    print(describe())
    print(f"preset {args.preset}: the extremes of {cfg.space.size()} schedules, {args.seeds} seeds each, "
          f"{args.precision}, {date.today()}")
    report(cfg, seed_scores(cfg, args.seeds, Path(args.out) / args.preset), ks)


if __name__ == "__main__":
    main()
