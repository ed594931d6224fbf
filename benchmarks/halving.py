"""Successive halving against an exhaustive reference: does it find the front, and at what cost?

The reference measures every schedule of a preset's space (default ``quick``: 25 schedules)
standalone at the full budget with ``--seeds`` seeds (default 3). Then, for each ``--ladder``
(``eta:rungs``), a halving study of the same space and seeds, in its own storage so that nothing is
reused, proposes every schedule (``sampler = "grid"``) and promotes. Printed, all measured in this
run, for each ladder:

* tokens trained, as a share of the reference's (target: <= 1/4);
* the reference front's points it found on its own front (target: >= 80%), and the schedules on its
  front that the reference has neither on its front nor tied with it (target: none);
* the rank fidelity of its first rung against the reference's seed means (Kendall tau over
  schedules with a full layer, with its bootstrap interval), and of each rung against the next;
* a check: each schedule's full-budget numbers equal the reference's exactly (a promoted training
  is continued from its checkpoint, bit for bit the uninterrupted one).

    python benchmarks/halving.py                                    # quick: about 30 minutes on 2 cores
    python benchmarks/halving.py --ladder 3:3 --ladder 2:2 --out /tmp/h
    python benchmarks/halving.py --reference-only --save benchmarks/reference-quick.json
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import describe  # noqa: E402
from spanmix.search import STANDALONE, StudyConfig, StudyView, run_study  # noqa: E402
from spanmix.search.config import HalvingConfig  # noqa: E402
from spanmix.search.fidelity import fidelity_report  # noqa: E402
from spanmix.search.logs import quiet_libraries  # noqa: E402
from spanmix.studies.config import load_config  # noqa: E402
from spanmix.studies.report import print_summary  # noqa: E402


def run(cfg: StudyConfig, folder: Path, fresh: bool) -> tuple[StudyView, float]:
    """Run ``cfg`` into ``folder`` (emptied first when ``fresh``, else resumed there); the finished
    study and its wall seconds."""
    if fresh:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    study = run_study(cfg, f"sqlite:///{folder / 'study.db'}", workdir=folder)
    return StudyView(study, cfg), time.perf_counter() - start


def tokens(view: StudyView) -> int:
    return sum(r.tokens_seen or 0 for r in view.records if r.complete and r.reused_from is None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ladder", action="append", help="eta:rungs of a halving run (default: 3:3 and 3:2)")
    parser.add_argument("--out", default="runs/bench-halving")
    parser.add_argument("--reference-only", action="store_true")
    parser.add_argument("--resume", action="store_true", help="resume the studies in --out instead of starting afresh "
                        "(the wall times then count only what was left)")
    parser.add_argument("--save", help="write the reference's per-seed scores to this JSON file")
    args = parser.parse_args()
    quiet_libraries()
    logging.basicConfig(level=logging.WARNING)
    base = load_config(args.preset, None, {})
    # one precision for every study: the full-budget numbers of the two strategies must be comparable
    base = replace(base, train=replace(base.train, precision="fp32"))
    size = base.space.size()
    common = dict(seeds=args.seeds, sampler="grid", n_trials=size, calibrate=False)
    out = Path(args.out)
    print(describe())
    print(f"preset {args.preset}: {size} schedules, {base.train.steps} steps, {args.seeds} seeds each; {date.today()}")

    reference, seconds = run(replace(base, name="reference", strategy="standalone", **common), out / "reference", not args.resume)
    print(f"\nreference: every schedule standalone, {tokens(reference):,} tokens, {seconds / 60:.1f} min")
    print_summary(reference)
    front = {p.schedule for p in reference.front()}
    near = front | {p.schedule for p in reference.noise().tied}
    means = {p.schedule: p for p in reference.points(STANDALONE)}
    if args.save:
        Path(args.save).write_text(json.dumps({
            "machine": describe(), "date": str(date.today()), "preset": args.preset, "seeds": args.seeds,
            "front": sorted(front), "tied": sorted(near - front),
            "schedules": {p.schedule: {"cost_ratio": p.cost_ratio, "seed_scores": list(p.seed_scores)} for p in means.values()},
        }, indent=1))
        print(f"wrote {args.save}")
    if args.reference_only:
        return

    for ladder in args.ladder or ["3:3", "3:2"]:
        eta, rungs = map(int, ladder.split(":"))
        cfg = replace(base, name=f"halving-{eta}-{rungs}", strategy="halving", halving=HalvingConfig(eta, rungs), **common)
        view, seconds = run(cfg, out / cfg.name, not args.resume)
        found = {p.schedule for p in view.front(STANDALONE)}
        top = view.points(STANDALONE)
        exact = all(p.seed_scores == means[p.schedule].seed_scores for p in top)
        first = fidelity_report(view.points(view.searched), list(means.values()), view.maximize)
        print(f"\nhalving eta={eta}, rungs at {list(cfg.halving.steps(cfg.train.steps))} steps: {seconds / 60:.1f} min")
        print(f"  tokens trained: {tokens(view):,}, {tokens(view) / tokens(reference):.0%} of the reference's")
        print(f"  reference front found: {len(found & front)}/{len(front)} ({len(found & front) / len(front):.0%}); "
              f"on its front but neither on the reference's front nor tied with it: {sorted(found - near) or 'none'}")
        print(f"  full-budget numbers equal the reference's, bit for bit: {exact} ({len(top)} schedules)")
        print(f"  rank fidelity of {view.searched} against the reference's seed means:")
        for f in first:
            print("    " + f.line())
        for cheap, dear, report in view.comparisons:
            print(f"  rank fidelity of {cheap} against {dear}:")
            for f in report:
                print("    " + f.line())


if __name__ == "__main__":
    main()
