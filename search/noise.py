"""Noise: how far a measured difference between two schedules can be trusted.

A study knows each schedule's noise in one of two ways, its *basis*:

* **Seeds.** A study that trains each schedule with ``k`` seeds (``study.seeds``) measures the
  spread of its seeds. A schedule's quality is their mean, with a 95% Student-t interval
  (``scipy.stats.t``; k - 1 degrees of freedom), and one schedule is better than another by a
  one-sided Welch t-test (``scipy.stats.ttest_ind``, unequal variances) at the 5% level.
* **Validation sequences.** A score with no training in it (a checkpoint scored as it is) is
  deterministic; its only noise is which sequences it was evaluated on. Each trial keeps its
  scores on bootstrap resamples of the sequences, resample ``i`` the same sequences for every
  schedule (:meth:`spanmix.proxies.scoring.Scorer.resamples`). The interval is the resamples'
  2.5 and 97.5 percentiles, and one schedule is better than another when it is better on at
  least 95% of the resamples (a one-sided paired bootstrap test).

Every answer is then read against that noise:

* **Intervals**, as above.
* **Ties.** Costs are counted exactly, so only quality is uncertain. A schedule off the front is
  *tied with the front* when no schedule that costs no more is significantly better. Schedules
  the data cannot show to be dominated are reported next to the front, not dropped from it.
* **The knee's stability.** The front and knee are found again on each resample (of each
  schedule's seeds, or resample ``i`` of every schedule), and the share of resamples whose knee
  is the same schedule is reported.
* **Resolution.** The gaps in quality between neighbouring front points, in units of the noise
  (over the front, the pooled standard deviation of the seeds or of the resamples).

With one seed and no resamples there is no noise to measure: every report says so instead.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
from scipy import stats

from spanmix.search.front import front_of, knee
from spanmix.search.record import Point, TrialRecord

CONFIDENCE = 0.95  # of every interval
LEVEL = 0.05  # of the one-sided test that calls one schedule better than another
RESAMPLES = 400  # of the knee's bootstrap over seeds


def interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The Student-t interval of the mean of ``values``; None for fewer than two."""
    if len(values) < 2:
        return None
    mean, sem = statistics.fmean(values), stats.sem(values)
    if sem == 0:
        return (mean, mean)
    lo, hi = stats.t.interval(confidence, len(values) - 1, loc=mean, scale=sem)
    return (float(lo), float(hi))


def better_than(candidates: list[list[float]], b: list[float], maximize: bool, level: float = LEVEL) -> list[bool]:
    """Which of ``candidates`` are significantly better than samples ``b``: a one-sided Welch
    t-test at ``level``, run as one vectorised call per candidate sample size; never with fewer
    than two samples a side. Two sides without spread differ for certain when their values differ."""
    out = [False] * len(candidates)
    if len(b) < 2:
        return out
    flat_b = statistics.pvariance(b) == 0
    by_size: dict[int, list[int]] = {}
    for i, a in enumerate(candidates):
        if len(a) < 2:
            continue
        if flat_b and statistics.pvariance(a) == 0:
            out[i] = (a[0] > b[0]) if maximize else (a[0] < b[0])
        else:
            by_size.setdefault(len(a), []).append(i)
    for rows in by_size.values():
        p = stats.ttest_ind(np.array([candidates[i] for i in rows]), np.array(b)[None, :], axis=1, equal_var=False,
                            alternative="greater" if maximize else "less").pvalue
        for i, pvalue in zip(rows, p):
            out[i] = bool(pvalue < level)
    return out


def better(a: list[float], b: list[float], maximize: bool, level: float = LEVEL) -> bool:
    """Whether samples ``a`` are significantly better than ``b`` (see :func:`better_than`)."""
    return better_than([a], b, maximize, level)[0]


def paired_better_than(candidates: list[list[float]], b: list[float], maximize: bool, level: float = LEVEL) -> list[bool]:
    """Which of ``candidates`` are significantly better than ``b``, each a list of scores on the
    same bootstrap resamples: better on all but a share below ``level`` of them (a one-sided
    paired bootstrap test); never with fewer than two resamples."""
    if len(b) < 2:
        return [False] * len(candidates)
    ref = np.array(b)
    out = []
    for a in candidates:
        if len(a) != len(ref):
            out.append(False)
            continue
        wins = np.array(a) > ref if maximize else np.array(a) < ref
        out.append(bool(1.0 - wins.mean() < level))
    return out


def percentile_interval(resamples: list[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The bootstrap percentile interval of ``resamples``; None for fewer than two."""
    if len(resamples) < 2:
        return None
    lo, hi = np.quantile(resamples, [(1 - confidence) / 2, (1 + confidence) / 2])
    return (float(lo), float(hi))


@dataclass(frozen=True)
class Basis:
    """Where a study's noise comes from, and how each answer is read against it (see the module).

    Attributes:
        name: ``seeds`` or ``sequences``.
        samples: a point's values of a score on this basis (its seeds', or its resamples').
        interval: the 95% interval of those values.
        better_than: which candidates' values are significantly better than a rival's.
        draw: the quality of a point in resample ``i`` of the knee's bootstrap.
        estimate, test, resampled, unit: how reports name the estimate and its interval (a
            format string of ``seeds``), the test, what is resampled and the noise unit.
    """

    name: str
    samples: Callable[[Point, str], list[float]]
    interval: Callable[[list[float]], tuple[float, float] | None]
    better_than: Callable[[list[list[float]], list[float], bool], list[bool]]
    draw: Callable[[random.Random, list[float], int], float]
    estimate: str
    test: str
    resampled: str
    unit: str


SEEDS = Basis("seeds", lambda p, score: p.samples(score), interval, better_than,
              lambda rng, values, i: statistics.fmean(rng.choices(values, k=len(values))),
              "mean of {seeds}+ seeds with 95% t-interval", "one-sided Welch t-test", "the seeds", "seed standard deviation")
SEQUENCES = Basis("sequences", lambda p, score: p.resamples(score), percentile_interval, paired_better_than,
                  lambda rng, values, i: values[i],
                  "95% bootstrap interval over the validation sequences",
                  "paired bootstrap over the validation sequences", "the validation sequences", "bootstrap standard error")


def basis_of(points: list[Point], score: str) -> Basis | None:
    """The basis all of ``points`` share for ``score``: seeds where each has two or more, else
    resampled sequences where each has them; None when their noise is unmeasured."""
    if points and all(len(p.samples(score)) >= 2 for p in points):
        return SEEDS
    if points and all(len(p.resamples(score)) >= 2 for p in points):
        return SEQUENCES
    return None


def interval_of(p: Point | TrialRecord, score: str) -> tuple[float, float] | None:
    """One trial's 95% interval of ``score``: over its seeds where it has two or more, else over
    its resamples of the validation sequences; None where it has neither."""
    if len(seeds := p.samples(score)) >= 2:
        return interval(seeds)
    return percentile_interval(p.resamples(score))


def _distinct(pts: list[Point]) -> list[Point]:
    """The feasible points, one per schedule (its latest trial), as the front takes them."""
    return list({p.schedule: p for p in sorted(pts, key=lambda p: -p.number) if p.feasible}.values())


@dataclass(frozen=True)
class Noise:
    """What a study's noise says about its front on one score.

    Attributes:
        seeds: the fewest seeds a front point holds.
        intervals: each point's 95% interval by trial number (points with two values on the basis).
        tied: points off the front that no point costing no more is significantly better than.
        knee_share: the share of seed resamples whose knee is the knee's schedule (None: one seed).
        resolution: the gaps between neighbouring front points, cheapest first, in noise units.
        unit: the noise unit: the pooled standard deviation of the basis's values over the front.
        basis: where the noise comes from; None: unmeasured.
        draws: how many resamples the knee's share was found on.
    """

    seeds: int
    intervals: dict[int, tuple[float, float]]
    tied: list[Point]
    knee_share: float | None
    resolution: list[float]
    unit: float | None
    basis: Basis | None = None
    draws: int = 0

    @property
    def measured(self) -> bool:
        return self.basis is not None

    @property
    def estimate(self) -> str:
        """What each front point's value and interval are, for headers."""
        return self.basis.estimate.format(seeds=self.seeds) if self.basis is not None else "one seed, noise unmeasured"


def tied_with_front(pts: list[Point], front: list[Point], score: str, maximize: bool, basis: Basis = SEEDS) -> list[Point]:
    """Points off ``front`` that no point costing no more is significantly better than (see the
    module), cheapest first; points without two values on ``basis`` cannot be tested and are left out."""
    distinct, on_front = _distinct(pts), {p.schedule for p in front}

    def tied(p: Point) -> bool:
        rivals = [basis.samples(q, score) for q in distinct if q.cost <= p.cost and q.schedule != p.schedule]
        return not any(basis.better_than(rivals, basis.samples(p, score), maximize))

    return sorted((p for p in distinct if p.schedule not in on_front and len(basis.samples(p, score)) >= 2 and tied(p)),
                  key=lambda p: (p.cost, p.number))


def resolved(front: list[Point], score: str, maximize: bool, basis: Basis = SEEDS) -> list[Point]:
    """The points of ``front`` that are significantly better than every cheaper front point, cheapest
    first (the cheapest always is). Each other point is tied with a cheaper one: the data cannot
    show that its extra cost buys anything, and which point of such a group lands on a front is noise."""
    ordered = sorted(front, key=lambda p: (p.cost, p.number))
    return [p for i, p in enumerate(ordered)
            if all(basis.better_than([basis.samples(p, score)], basis.samples(q, score), maximize)[0] for q in ordered[:i])]


def draws(pts: list[Point], score: str, basis: Basis, resamples: int = RESAMPLES) -> int:
    """How many resamples the knee's bootstrap draws: ``resamples`` of the seeds, or every
    resample of the sequences the points share (they were drawn once, each the same for all)."""
    if basis is SEEDS:
        return resamples
    return min((len(v) for p in pts if len(v := basis.samples(p, score)) >= 2), default=0)


def knee_share(pts: list[Point], score: str, maximize: bool, resamples: int = RESAMPLES, seed: int = 0,
               basis: Basis = SEEDS) -> float | None:
    """The share of bootstrap resamples (of ``basis``) in which the knee is the same schedule."""
    distinct = _distinct(pts)
    front = front_of(distinct, maximize)
    if not front or all(len(basis.samples(p, score)) < 2 for p in distinct):
        return None
    resamples = draws(distinct, score, basis, resamples)
    chosen = knee(front, maximize).schedule
    rng, same = random.Random(seed), 0
    for i in range(resamples):
        drawn = [replace(p, quality=basis.draw(rng, values, i)) if len(values := basis.samples(p, score)) >= 2 else p
                 for p in distinct]
        same += knee(front_of(drawn, maximize), maximize).schedule == chosen
    return same / resamples


def noise_of(pts: list[Point], front: list[Point], score: str, maximize: bool) -> Noise:
    """Intervals, ties, the knee's stability and the resolution of ``front`` among ``pts``,
    whose ``quality`` is ``score``, on the basis the front's points share (see :func:`basis_of`)."""
    basis = basis_of(front, score)
    if basis is None:
        return Noise(max(min((len(p.samples(score)) for p in front), default=1), 1), {}, [], None, [], None)
    intervals = {p.number: iv for p in _distinct(pts) if (iv := basis.interval(basis.samples(p, score))) is not None}
    unit = math.sqrt(statistics.fmean(statistics.variance(basis.samples(p, score)) for p in front))
    gaps = [abs(b.quality - a.quality) / unit if unit else math.inf for a, b in zip(front, front[1:])]
    return Noise(min(len(p.samples(score)) for p in front), intervals, tied_with_front(pts, front, score, maximize, basis),
                 knee_share(pts, score, maximize, basis=basis), gaps, unit, basis, draws(_distinct(pts), score, basis))
