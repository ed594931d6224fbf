"""Noise: how far a measured difference between two schedules can be trusted.

A study that trains each schedule with ``k`` seeds (``study.seeds``) knows each schedule's noise:
the spread of its seeds. Every answer it gives is then read against that noise:

* **Intervals.** A schedule's quality is the mean of its seeds, with a 95% Student-t interval
  (``scipy.stats.t``; k - 1 degrees of freedom).
* **Ties.** Costs are counted exactly, so only quality is uncertain. A schedule off the front is
  *tied with the front* when no schedule that costs no more is significantly better: a one-sided
  Welch t-test (``scipy.stats.ttest_ind``, unequal variances) at the 5% level. Schedules the data
  cannot show to be dominated are reported next to the front, not dropped from it.
* **The knee's stability.** Each schedule's seeds are resampled with replacement (a bootstrap),
  the front and knee found again, and the share of resamples whose knee is the same schedule is
  reported.
* **Resolution.** The gaps in quality between neighbouring front points, in units of the noise
  (the seeds' pooled standard deviation over the front).

With one seed per schedule there is no noise to measure: every report says so instead.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from spanmix.search.front import front_of, knee
from spanmix.search.record import Point

CONFIDENCE = 0.95  # of every interval
LEVEL = 0.05  # of the one-sided test that calls one schedule better than another
RESAMPLES = 400  # of the knee's bootstrap


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


def _distinct(pts: list[Point]) -> list[Point]:
    """The feasible points, one per schedule (its latest trial), as the front takes them."""
    return list({p.schedule: p for p in sorted(pts, key=lambda p: -p.number) if p.feasible}.values())


@dataclass(frozen=True)
class Noise:
    """What a study's seeds say about its front on one score.

    Attributes:
        seeds: the fewest seeds a front point holds (1: the noise is unmeasured).
        intervals: each point's 95% interval by trial number (points with two seeds or more).
        tied: points off the front that no point costing no more is significantly better than.
        knee_share: the share of seed resamples whose knee is the knee's schedule (None: one seed).
        resolution: the gaps between neighbouring front points, cheapest first, in noise units.
        unit: the noise unit: the seeds' pooled standard deviation over the front.
    """

    seeds: int
    intervals: dict[int, tuple[float, float]]
    tied: list[Point]
    knee_share: float | None
    resolution: list[float]
    unit: float | None

    @property
    def measured(self) -> bool:
        return self.seeds >= 2


def tied_with_front(pts: list[Point], front: list[Point], score: str, maximize: bool) -> list[Point]:
    """Points off ``front`` that no point costing no more is significantly better than (see the
    module), cheapest first; points with fewer than two seeds cannot be tested and are left out."""
    distinct, on_front = _distinct(pts), {p.schedule for p in front}

    def tied(p: Point) -> bool:
        rivals = [q.samples(score) for q in distinct if q.cost <= p.cost and q.schedule != p.schedule]
        return not any(better_than(rivals, p.samples(score), maximize))

    return sorted((p for p in distinct if p.schedule not in on_front and len(p.samples(score)) >= 2 and tied(p)),
                  key=lambda p: (p.cost, p.number))


def knee_share(pts: list[Point], score: str, maximize: bool, resamples: int = RESAMPLES, seed: int = 0) -> float | None:
    """The share of bootstrap resamples of the seeds in which the knee is the same schedule."""
    distinct = _distinct(pts)
    front = front_of(distinct, maximize)
    if not front or all(len(p.samples(score)) < 2 for p in distinct):
        return None
    chosen = knee(front, maximize).schedule
    rng, same = random.Random(seed), 0
    for _ in range(resamples):
        drawn = [replace(p, quality=statistics.fmean(rng.choices(p.samples(score), k=len(p.samples(score)))))
                 if len(p.samples(score)) >= 2 else p for p in distinct]
        same += knee(front_of(drawn, maximize), maximize).schedule == chosen
    return same / resamples


def noise_of(pts: list[Point], front: list[Point], score: str, maximize: bool) -> Noise:
    """Intervals, ties, the knee's stability and the resolution of ``front`` among ``pts``,
    whose ``quality`` is ``score``."""
    seeds = min((len(p.samples(score)) for p in front), default=0)
    if seeds < 2:
        return Noise(max(seeds, 1), {}, [], None, [], None)
    intervals = {p.number: iv for p in _distinct(pts) if (iv := interval(p.samples(score))) is not None}
    unit = math.sqrt(statistics.fmean(statistics.variance(p.samples(score)) for p in front))
    gaps = [abs(b.quality - a.quality) / unit if unit else math.inf for a, b in zip(front, front[1:])]
    return Noise(seeds, intervals, tied_with_front(pts, front, score, maximize), knee_share(pts, score, maximize), gaps,
                 unit)
