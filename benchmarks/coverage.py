"""Coverage of the intervals a study prints, measured: do 2 or 3 seeds' intervals contain the many-seed mean?

Every schedule of a preset's space is trained with ``--seeds N`` seeds (default 8; seed k of every
schedule starts from the same weights and reads the same batches, as in a study). Then, for every
way of drawing k of the N seeds (k = 2, 3), the study that would have trained those k seeds is
rebuilt, and each schedule's 95% interval is built two ways:

* **plain**: the Student-t interval on the schedule's own k seeds (k - 1 degrees of freedom),
  what spanmix printed before the intervals were pooled;
* **independent**: the seed variance moderated across the draw's schedules, on the score's scale,
  as if their seeds were independent (``Seeds(design_effect=False)``);
* **moderated**: what ``spanmix show`` prints (:class:`spanmix.search.noise.Seeds`): the same, with
  the degrees of freedom cut to what the schedules' correlated seeds lend (Kish's design effect).

Each row counts how often the interval contains the schedule's N-seed mean, and the median ratio
of the plain interval's width to the moderated one's, over all schedules and over the draw's own
front (what the user reads). The same for the paired difference of neighbouring front points
against the unpaired Welch interval of their means, whose target is the N-seed mean difference.

The N-seed mean is the reference, not the true mean: it holds the k drawn seeds, which flatters
every method alike, and has its own noise (SD / sqrt(N)), which works the other way.

    python benchmarks/coverage.py                     # quick: 25 schedules x 8 seeds, about 55 minutes on 2 cores
    python benchmarks/coverage.py --schedules 12      # the first 12 (4 all-local, 8 with one full layer): 25 minutes

Each seed's scores are kept in ``--out`` as they finish (a stopped run resumes), in the precision
the preset asks for (``auto``: what the machine trains faster).
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.calibration import seed_scores  # noqa: E402
from benchmarks.machine import describe  # noqa: E402
from spanmix.search.costs import cost_of  # noqa: E402
from spanmix.search.front import front_of, maximized  # noqa: E402
from spanmix.search.logs import quiet_libraries  # noqa: E402
from spanmix.search.noise import CONFIDENCE, Seeds, interval  # noqa: E402
from spanmix.search.record import Point  # noqa: E402
from spanmix.studies.config import load_config, preset_names  # noqa: E402


@dataclass
class Tally:
    """Intervals counted: how many contained their target, and their widths."""

    hits: int = 0
    count: int = 0
    widths: list[float] = field(default_factory=list)

    def add(self, lo: float, hi: float, target: float) -> None:
        self.hits += lo <= target <= hi
        self.count += 1
        self.widths.append(hi - lo)

    @property
    def rate(self) -> float:
        return self.hits / self.count if self.count else math.nan


def welch(a: list[float], b: list[float]) -> tuple[float, float]:
    """The unpaired (Welch) 95% interval of mean(a) - mean(b)."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se else math.inf
    d = statistics.fmean(a) - statistics.fmean(b)
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, df)) * se
    return d - half, d + half


def draw_points(scores: dict[str, dict[int, float]], costs: dict[str, float], seeds: tuple[int, ...]) -> list[Point]:
    """The points a study that trained ``seeds`` of each schedule would hold."""
    return [Point(n, text, statistics.fmean(runs[k] for k in seeds), costs[text], costs[text], True, None, {},
                  seed_scores=tuple({"q": runs[k]} for k in seeds), seed_ids=seeds)
            for n, (text, runs) in enumerate(scores.items())]


def tally(scores: dict[str, dict[int, float]], costs: dict[str, float], k: int, n: int, maximize: bool
          ) -> dict[str, Tally]:
    truth = {s: statistics.fmean(runs[r] for r in range(n)) for s, runs in scores.items()}
    out = {name: Tally() for name in ("plain", "independent", "moderated", "plain front", "independent front",
                                      "moderated front", "welch", "paired")}
    for seeds in itertools.combinations(range(n), k):
        pts = draw_points(scores, costs, seeds)
        basis, independent = Seeds(pts, "q", maximize), Seeds(pts, "q", maximize, design_effect=False)
        front = {p.schedule for p in front_of(pts, maximize)}
        for p in pts:
            for name, iv in (("plain", interval(p.samples("q"))), ("independent", independent.interval(p)),
                             ("moderated", basis.interval(p))):
                out[name].add(*iv, truth[p.schedule])
                if p.schedule in front:
                    out[f"{name} front"].add(*iv, truth[p.schedule])
        ordered = sorted((p for p in pts if p.schedule in front), key=lambda p: p.cost)
        for a, b in zip(ordered, ordered[1:]):
            target = truth[b.schedule] - truth[a.schedule]
            out["welch"].add(*welch(b.samples("q"), a.samples("q")), target)
            out["paired"].add(*basis.difference(b, a).interval, target)
    return out


def report(scores: dict[str, dict[int, float]], costs: dict[str, float], n: int, maximize: bool, ks: list[int]) -> None:
    print(f"\n95% intervals against the {n}-seed mean: coverage, and the plain interval's width over each one's "
          "(median; > 1: narrower than plain)")
    print(f"  {'k':>2} {'draws':>5}  {'all schedules: plain / independent / moderated':<53}"
          f"{'front: plain / independent / moderated':<42}{'neighbours: Welch / paired':<28}")
    for k in ks:
        t = tally(scores, costs, k, n, maximize)
        ratio = lambda a, b: statistics.median(t[a].widths or [math.nan]) / statistics.median(t[b].widths or [math.nan])  # noqa: E731
        cells = [f"{t['plain'].rate:.1%} / {t['independent'].rate:.1%} ({ratio('plain', 'independent'):.1f}x) / "
                 f"{t['moderated'].rate:.1%} ({ratio('plain', 'moderated'):.1f}x)",
                 f"{t['plain front'].rate:.1%} / {t['independent front'].rate:.1%} "
                 f"({ratio('plain front', 'independent front'):.1f}x) / {t['moderated front'].rate:.1%} "
                 f"({ratio('plain front', 'moderated front'):.1f}x)",
                 f"{t['welch'].rate:.1%} / {t['paired'].rate:.1%} ({ratio('welch', 'paired'):.1f}x)"]
        print(f"  {k:>2} {math.comb(n, k):>5}  {cells[0]:<53}{cells[1]:<42}{cells[2]:<28}"
              f"({t['moderated'].count} intervals, {t['moderated front'].count} on fronts, {t['paired'].count} pairs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick", choices=preset_names(), help="a built-in preset (default quick)")
    parser.add_argument("--seeds", type=int, default=8, help="seeds of every schedule: the reference mean (default 8)")
    parser.add_argument("--k", type=int, action="append", help="seeds a study would have (repeatable; default 2 and 3)")
    parser.add_argument("--schedules", type=int,
                        help="only the first N schedules in the order the space lists them (all-local first, "
                        "then by full layers and placement; default: all, up to 60)")
    parser.add_argument("--out", default="runs/bench-coverage", help="where each seed's scores are kept")
    args = parser.parse_args()
    ks = args.k or [2, 3]
    if bad := [k for k in ks if not 2 <= k < args.seeds]:
        parser.error(f"--k {bad[0]}: each k must be 2 to --seeds - 1 = {args.seeds - 1}")
    cfg = load_config(args.preset, None, {})
    size = cfg.space.size()
    if args.schedules is not None and not 3 <= args.schedules <= size:
        parser.error(f"--schedules {args.schedules}: 3 (the fewest the study's variance is pooled over) to {size}")
    if args.schedules is None and size > 60:
        parser.error(f"--preset {args.preset}: its space holds {size} schedules, each trained --seeds {args.seeds} "
                     "times; pass --schedules N (up to 60) for the first N")
    quiet_libraries()
    sys.stdout.reconfigure(line_buffering=True)
    print(describe())
    schedules = [s.canonical(cfg.space.context) for s in cfg.space.enumerate()][:args.schedules]
    print(f"preset {args.preset}: {len(schedules)} of its {size} schedules x {args.seeds} seeds, {cfg.quality}, precision "
          f"{cfg.train.precision}, {date.today()}")
    trained = seed_scores(cfg, args.seeds, Path(args.out) / args.preset, schedules)
    scores = {s: {r: runs[r][1.0] for r in range(args.seeds)} for s, runs in trained.items()}
    costs = {s.text: cost_of(cfg, s)[1] for s in schedules}
    report(scores, costs, args.seeds, maximized(cfg.quality), ks)


if __name__ == "__main__":
    main()
