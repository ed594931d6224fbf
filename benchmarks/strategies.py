"""Successive halving and the supernet against an exhaustive reference: do they find its front, and at what cost?

The reference is a preset's space (default ``quick``: 25 schedules) measured whole, standalone, at the
full budget with 3 seeds, measured once and kept with its machine and date in
``benchmarks/reference-quick.json``; ``--measure-reference`` measures it again (about 20 minutes for
``quick`` on 2 cores) and ``--save`` writes it. Then each ``--halving`` runs as a halving
study and each ``--supernet`` as a supernet study of the same space and seeds, each in its own
storage so that nothing is reused. Printed, all measured in this run, for each:

* tokens trained (standalone trainings and shared weights), as a share of the reference's
  (target: <= 1/4);
* the reference front's *resolved* points found on the strategy's own front (target: >= 80%): a
  front point is resolved when its seeds are significantly better than every cheaper front
  point's (one-sided paired t-test on the moderated seed variance, 5%); the others are tied with a cheaper point, and which of a
  tied group a strategy lands on is noise. All of the reference front's points found is printed
  beside it;
* the schedules on the strategy's front that the reference has neither on its front nor tied with
  it (target: none);
* the rank fidelity of what the strategy searched with (halving's first rung, the supernet's
  scores) against the reference's seed means (Kendall tau, with its bootstrap interval);
* a check: each schedule the strategy trained to the full budget has the reference's numbers (to
  the last digit where the reference was measured by the same code on the same machine).

    python benchmarks/strategies.py                                 # quick: about 20 minutes on 2 cores
    python benchmarks/strategies.py --halving "eta = 3, rungs = 2" --supernet "steps = 480, bands = [1], controls = 0"
    python benchmarks/strategies.py --measure-reference --save benchmarks/reference-quick.json
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import time
import tomllib
from dataclasses import replace
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import describe  # noqa: E402
from spanmix.search import STANDALONE, StudyConfig, StudyView, run_study, strategies  # noqa: E402
from spanmix.search.fidelity import fidelity_report, repeatability  # noqa: E402
from spanmix.search.front import front_of, maximized  # noqa: E402
from spanmix.search.logs import quiet_libraries  # noqa: E402
from spanmix.search.noise import resolved, tied_with_front  # noqa: E402
from spanmix.search.record import Point  # noqa: E402
from spanmix.search.strategies.halving import HalvingConfig, ladder  # noqa: E402
from spanmix.search.strategies.supernet import SupernetConfig  # noqa: E402
from spanmix.space import ConfigError  # noqa: E402
from spanmix.studies.config import load_config, preset_names  # noqa: E402
from spanmix.studies.report import print_summary  # noqa: E402

REFERENCE = Path(__file__).resolve().parent / "reference-quick.json"
# the README's halving rows: rungs as eta sets them, then a first rung where a short training ranks, one seed below the last
DEFAULT_HALVINGS = ("eta = 3, rungs = 2", "eta = 8, rungs = 2, first_steps = 80, early_seeds = 1")
# the README's two supernet rows: few-shot weights, then with distillation and only their resolved front confirmed
DEFAULT_SUPERNETS = ("steps = 480, bands = [1], controls = 0",
                     'steps = 480, bands = [1], controls = 0, distill = true, confirm = "resolved"')


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
    """Tokens a study trained: its own standalone trainings, and its shared weights if any."""
    cfg = view.config
    shared = view.weights.get("steps", 0) * cfg.train.batch_size * cfg.data.seq_len
    return shared + sum(r.tokens_seen or 0 for r in view.records if r.complete and r.reused_from is None)


class Reference:
    """Every schedule of a space measured standalone with the same seeds: its points, front and tied set."""

    def __init__(self, points: list[Point], quality: str, tokens: int) -> None:
        self.points, self.quality, self.tokens, self.maximize = points, quality, tokens, maximized(quality)
        self.by_schedule = {p.schedule: p for p in points}
        self.front = front_of(points, self.maximize)
        self.near = {p.schedule for p in self.front} | {p.schedule for p in tied_with_front(points, self.front, quality, self.maximize)}
        self.resolved = [p.schedule for p in resolved(self.front, quality, self.maximize)]

    @classmethod
    def of(cls, view: StudyView) -> Reference:
        return cls(view.points(STANDALONE), view.config.quality, tokens(view))

    @classmethod
    def load(cls, path: Path, cfg: StudyConfig) -> Reference:
        """The reference kept in ``path``; its tokens are every schedule's seeds at ``cfg``'s budget."""
        data = json.loads(path.read_text())
        points = [Point(number=i, schedule=s, quality=statistics.fmean(seed[cfg.quality] for seed in v["seed_scores"]),
                        cost=v["cost_ratio"], cost_ratio=v["cost_ratio"], feasible=True, reused_from=None, scores={},
                        seed_scores=tuple(v["seed_scores"]))
                  for i, (s, v) in enumerate(data["schedules"].items())]
        per_training = cfg.train.steps * cfg.train.batch_size * cfg.data.seq_len
        print(f"reference: {path.name}, measured {data['date']}, {data['seeds']} seeds; {data['machine'].splitlines()[0]}")
        return cls(points, cfg.quality, len(points) * data["seeds"] * per_training)

    def save(self, path: Path, preset: str, seeds: int) -> None:
        path.write_text(json.dumps({
            "machine": describe(), "date": str(date.today()), "preset": preset, "seeds": seeds,
            "front": sorted(p.schedule for p in self.front), "tied": sorted(self.near - {p.schedule for p in self.front}),
            "schedules": {p.schedule: {"cost_ratio": p.cost_ratio, "seed_scores": list(p.seed_scores)} for p in self.points},
        }, indent=1))
        print(f"wrote {path}")

    def describe(self) -> str:
        return (f"front {[p.schedule for p in self.front]}, resolved {self.resolved}, "
                f"{len(self.near) - len(self.front)} more tied with it")


def compare(name: str, view: StudyView, seconds: float, ref: Reference) -> None:
    """How ``view``'s front and cost compare with the reference's (see the module)."""
    found = {p.schedule for p in view.front(STANDALONE)}
    front = {p.schedule for p in ref.front}
    hits = [s for s in ref.resolved if s in found]
    top = view.points(STANDALONE)
    diff = max((abs(a[ref.quality] - b[ref.quality]) for p in top
                for a, b in zip(p.seed_scores, ref.by_schedule[p.schedule].seed_scores)), default=0.0)
    print(f"\n{name}: {seconds / 60:.1f} min")
    print(f"  tokens trained: {tokens(view):,}, {tokens(view) / ref.tokens:.0%} of the reference's (target <= 25%)")
    rungs = ladder(view)
    if rungs is not None:
        print("  rungs: " + ", ".join(f"{n} schedules to {steps} steps" for _, steps, n in rungs.rungs))
    print(f"  reference front's resolved points found: {len(hits)}/{len(ref.resolved)} ({len(hits) / len(ref.resolved):.0%}, "
          f"target >= 80%): {hits}; all front points: {len(found & front)}/{len(front)}")
    print(f"  on its front but neither on the reference's front nor tied with it: {sorted(found - ref.near) or 'none'}")
    print(f"  full-budget {ref.quality} against the reference's, largest difference over {len(top)} schedules' seeds: {diff:.1e}"
          + (" (bit for bit)" if diff == 0 else " (the reference's code or machine differs)"))
    print(f"  rank fidelity of {view.searched} against the reference's seed means:")
    for f in fidelity_report(view.points(view.searched), ref.points, view.maximize,
                             over=("all it scored", "those with a full layer")):
        print("    " + f.line())
    for cheap, dear, report in view.comparisons:
        print(f"  rank fidelity of {cheap} against {dear}:")
        for f in report:
            print("    " + f.line())


def inline(section: str, spec: str) -> dict:
    """A config section written inline, as TOML: ``steps = 480, bands = [1]``."""
    return tomllib.loads(f"{section} = {{{spec}}}")[section]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick", choices=preset_names(), help="a built-in preset (default quick)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the reference and of every strategy (default 3)")
    parser.add_argument("--halving", action="append", default=[],
                        help="a [halving] section inline, as TOML (repeatable), e.g. 'eta = 3, rungs = 2'")
    parser.add_argument("--supernet", action="append", default=[],
                        help="a [supernet] section inline, as TOML (repeatable; with neither --halving nor --supernet: "
                             f"the halvings {' and '.join(map(repr, DEFAULT_HALVINGS))} and the supernets {' and '.join(map(repr, DEFAULT_SUPERNETS))})")
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="the reference kept from an earlier run")
    parser.add_argument("--measure-reference", action="store_true", help="measure the reference in this run instead")
    parser.add_argument("--save", type=Path, help="with --measure-reference: write the reference to this JSON file")
    parser.add_argument("--out", default="runs/bench-strategies")
    parser.add_argument("--resume", action="store_true", help="resume the studies in --out instead of starting afresh "
                        "(the wall times then count only what was left)")
    args = parser.parse_args()
    if args.save and not args.measure_reference:
        parser.error("--save writes a reference this run measures: add --measure-reference")
    if not args.supernet and not args.halving:
        args.supernet, args.halving = list(DEFAULT_SUPERNETS), list(DEFAULT_HALVINGS)
    quiet_libraries()
    logging.basicConfig(level=logging.WARNING)
    sys.stdout.reconfigure(line_buffering=True)  # each study's lines as it finishes, not at exit
    base = load_config(args.preset, None, {})
    # one precision for every study: the full-budget numbers of the strategies must be comparable
    base = replace(base, train=replace(base.train, precision="fp32"))
    size = base.space.size()
    common = dict(seeds=args.seeds, sampler="grid", n_trials=size, calibrate=False)
    try:  # every study checked before the first one trains
        studies = [(f"halving {spec}", replace(base, name=f"halving-{i}", strategy="halving", **common)
                    .with_section("halving", HalvingConfig.from_dict(inline("halving", spec))))
                   for i, spec in enumerate(args.halving)]
        studies += [(f"supernet {spec}", replace(base, name=f"supernet-{i}", strategy="supernet", **common)
                     .with_section("supernet", SupernetConfig.from_dict(inline("supernet", spec))))
                    for i, spec in enumerate(args.supernet)]
        for _, cfg in studies:
            strategies.get(cfg.strategy).check(cfg, 1)
    except (ConfigError, tomllib.TOMLDecodeError) as e:
        parser.error(f"--halving or --supernet: {e}")
    out = Path(args.out)
    print(describe())
    print(f"preset {args.preset}: {size} schedules, {base.train.steps} steps, {args.seeds} seeds each; {date.today()}")

    if args.measure_reference:
        view, seconds = run(replace(base, name="reference", strategy="standalone", **common), out / "reference", not args.resume)
        print(f"\nreference: every schedule standalone, {tokens(view):,} tokens, {seconds / 60:.1f} min")
        print_summary(view)
        ref = Reference.of(view)
        if args.save:
            ref.save(args.save, args.preset, args.seeds)
    else:
        ref = Reference.load(args.reference, base)
    print(f"reference: {ref.describe()}; {ref.tokens:,} tokens")
    print("reference against itself, seed 1 against seed 2 (what it can order):")
    for f in repeatability(ref.points, ref.quality, ref.maximize):
        print("  " + f.line())

    for name, cfg in studies:
        view, seconds = run(cfg, out / cfg.name, not args.resume)
        compare(name, view, seconds, ref)


if __name__ == "__main__":
    main()
