"""Noise: how far a measured difference between two schedules can be trusted.

A study knows each schedule's noise in one of two ways, its *basis*:

* **Seeds** (:class:`Seeds`). A study that trains each schedule with ``k`` seeds (``study.seeds``)
  measures the spread of its seeds; a schedule's quality is their mean. Two things the study holds
  beyond one schedule's own ``k`` values are used:

  - *the seed variance is shared*: each schedule's seed variance is moderated toward a prior fitted
    across the study's schedules (:mod:`spanmix.search.moderation`, Smyth 2004), gaining the prior's
    degrees of freedom, and its 95% Student-t interval is built on the score's own scale (log for a
    loss, angular for an accuracy) so it never leaves the score's domain;
  - *seeds are paired*: seed k of every schedule starts from the same weights and reads the same
    batches, so what a seed does to every schedule alike (its seed effect) cancels in a difference.
    A difference between two schedules is the mean of their per-seed differences; its variance is
    the pair's own (the spread of those differences), moderated toward the sum of the two
    schedules' prior *residual* variances: their spread once each seed's effect over the study (its
    median offset, as in Tukey's median polish) is removed, a two-way layout of schedule + seed.
    One schedule is better than another by a one-sided paired t-test on that at the 5% level.

  With fewer than :data:`~spanmix.search.moderation.FIT_FROM` schedules nothing is pooled: each keeps
  its own variance (a plain t-interval, a plain paired t-test).
* **Validation sequences** (:class:`Sequences`). A score with no training in it (a checkpoint scored
  as it is) is deterministic; its only noise is which sequences it was evaluated on. Each trial keeps
  its scores on bootstrap resamples of the sequences, resample ``i`` the same sequences for every
  schedule (:meth:`spanmix.proxies.scoring.Scorer.resamples`). The interval is the resamples' 2.5
  and 97.5 percentiles, and one schedule is better than another when it is better on at least 95% of
  the resamples (a one-sided paired bootstrap test).

Every answer is then read against that noise:

* **Intervals**, as above, and paired **differences** between two schedules (``show --compare``).
* **Ties.** Costs are counted exactly, so only quality is uncertain. A schedule off the front is
  *tied with the front* when no schedule that costs no more is significantly better. Schedules
  the data cannot show to be dominated are reported next to the front, not dropped from it.
* **The knee's stability.** The front and knee are found again on each of 400 draws (each
  schedule's mean drawn from its paired noise, or resample ``i`` of every schedule), and the share
  of draws whose knee is the same schedule is reported. A shift every schedule shares moves no knee
  (the knee reads qualities relative to the front's), so the paired noise is the one that matters.
* **Resolution.** The gaps in quality between neighbouring front points, in units of the noise
  (over the front, the pooled paired standard deviation of the seeds, or of the resamples).

With one seed and no resamples there is no noise to measure: every report says so instead.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from spanmix.search.front import front_of, knee
from spanmix.search.moderation import Prior, Scale, fit_prior, scale_of
from spanmix.search.record import Point

CONFIDENCE = 0.95  # of every interval
LEVEL = 0.05  # of the one-sided test that calls one schedule better than another
RESAMPLES = 400  # of the knee's draws over seeds


def interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The Student-t interval of the mean of ``values`` on their own (k - 1 degrees of freedom);
    None for fewer than two. What one schedule's seeds say alone: the reference the moderated
    intervals are measured against (``benchmarks/coverage.py``)."""
    if len(values) < 2:
        return None
    mean, sem = statistics.fmean(values), stats.sem(values)
    if sem == 0:
        return (mean, mean)
    lo, hi = stats.t.interval(confidence, len(values) - 1, loc=mean, scale=sem)
    return (float(lo), float(hi))


def percentile_interval(resamples: list[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The bootstrap percentile interval of ``resamples``; None for fewer than two."""
    if len(resamples) < 2:
        return None
    lo, hi = np.quantile(resamples, [(1 - confidence) / 2, (1 + confidence) / 2])
    return (float(lo), float(hi))


@dataclass(frozen=True)
class Difference:
    """A paired difference ``a - b`` of two schedules' quality, with its 95% interval.

    Attributes:
        estimate: the mean of the per-seed (or the full-sample) differences.
        interval: its 95% interval.
        pairs: the seeds (or resamples) the two share.
        df: the degrees of freedom of its t-interval (None on resamples).
        p_lower, p_higher: one-sided p-values that ``a`` is lower / higher than ``b``.
    """

    estimate: float
    interval: tuple[float, float]
    pairs: int
    df: float | None
    p_lower: float
    p_higher: float

    def better(self, maximize: bool, level: float = LEVEL) -> bool:
        """Whether ``a`` is significantly better than ``b`` at ``level`` (one-sided)."""
        return (self.p_higher if maximize else self.p_lower) < level


class Basis:
    """Where a study's noise comes from, and how each answer is read against it (see the module).

    Attributes (for reports): ``name``; ``test``, the test that calls one schedule better;
    ``resampled``, what the knee's draws vary; ``unit``, the noise unit's name.
    """

    name: str
    test: str
    resampled: str
    unit: str

    def values(self, p: Point) -> list[float]:
        """``p``'s values on this basis (its seeds', or its resamples')."""
        raise NotImplementedError

    def estimate(self, seeds: int) -> str:
        """What each point's value and interval are, for headers."""
        raise NotImplementedError

    def interval(self, p: Point) -> tuple[float, float] | None:
        """``p``'s 95% interval (None without two values)."""
        raise NotImplementedError

    def difference(self, a: Point, b: Point) -> Difference | None:
        """The paired difference ``a - b`` (None where they share too few seeds or resamples)."""
        raise NotImplementedError

    def spread(self, p: Point) -> float:
        """``p``'s paired noise: a standard deviation of one seed (or of one resample's score)."""
        raise NotImplementedError

    def draws(self, pts: list[Point], resamples: int) -> int:
        """How many draws the knee's stability is found on."""
        raise NotImplementedError

    def draw(self, rng: random.Random, p: Point, i: int) -> float:
        """``p``'s quality in draw ``i`` of the knee's stability."""
        raise NotImplementedError

    def better_than(self, candidates: list[Point], rival: Point, maximize: bool) -> list[bool]:
        """Which of ``candidates`` are significantly better than ``rival`` (one-sided, 5% level)."""
        return [d is not None and d.better(maximize) for d in (self.difference(c, rival) for c in candidates)]


class Seeds(Basis):
    """Seed noise read over a study's schedules (see the module): moderated intervals, paired
    differences. Fitted on ``points`` (one per schedule, each with two seeds or more);
    ``design_effect=False`` pools as if the schedules' seeds were independent (what that would
    cost is measured by ``benchmarks/coverage.py``)."""

    name, resampled = "seeds", "the seeds"

    def __init__(self, points: list[Point], score: str, maximize: bool, design_effect: bool = True) -> None:
        self.score, self.design_effect = score, design_effect
        pts = [p for p in _distinct(points) if len(p.seed_values(score)) >= 2]
        self.scale: Scale = scale_of([v for p in pts for v in self.values(p)], accuracy=maximize)
        scaled = [self._scaled(p) for p in pts]
        self.prior: Prior | None = fit_prior([float(np.var(y, ddof=1)) for y in scaled], [len(y) - 1 for y in scaled],
                                             [float(np.mean(y)) for y in scaled])
        # how alike seeds move each pair of schedules (the correlation of their seed offsets on the
        # scale; 0 on the diagonal), in the prior's order: read by every interval, so found once
        moves = [{k: float(v - np.mean(y)) for k, v in zip(p.seed_values(score), y)} for p, y in zip(pts, scaled)]
        self._alike = np.array([[_correlation(a, b) if i != j else 0.0 for j, b in enumerate(moves)]
                                for i, a in enumerate(moves)])
        self._order = {p.schedule: i for i, p in enumerate(pts)}
        # each seed's effect: how far its scores sit from their schedules' means, over the study
        offsets: dict[int, list[float]] = {}
        for p in pts:
            mine = p.seed_values(score)
            mean = statistics.fmean(mine.values())
            for k, v in mine.items():
                offsets.setdefault(k, []).append(v - mean)
        # the median, as in Tukey's median polish: schedules whose seeds move otherwise (all-local
        # ones that never learn the probe) do not bend the effect the others share
        self.seed_effect = {k: statistics.median(v) for k, v in offsets.items()}
        self.schedules = len(pts)
        self._paired_found: dict[tuple[str, tuple[tuple[int, float], ...]], tuple[float, float]] = {}
        residual = [self._residual(p) for p in pts]
        self.paired_prior: Prior | None = fit_prior([v for v, _ in residual], [d for _, d in residual],
                                                    [statistics.fmean(self.values(p)) for p in pts])
        self.test = ("one-sided paired t-test on the moderated seed variance" if self.paired_prior is not None
                     else "one-sided paired t-test")
        self.unit = "paired seed standard deviation" + (" (moderated)" if self.paired_prior is not None else "")

    def values(self, p: Point) -> list[float]:
        return list(p.seed_values(self.score).values())

    def estimate(self, seeds: int) -> str:
        if self.prior is None:
            return (f"mean of {seeds}+ seeds with 95% t-interval on its own seeds "
                    f"(too few schedules to pool their seed variance: {self.schedules})")
        return (f"mean of {seeds}+ seeds; 95% interval from the study's moderated seed variance "
                f"({self.prior.describe()}, {self.scale.name} scale; degrees of freedom as far as the "
                "schedules' correlated seeds lend them)")

    def _scaled(self, p: Point) -> np.ndarray:
        return self.scale.forward(np.array(self.values(p)))

    def _residual(self, p: Point) -> tuple[float, float]:
        """``p``'s residual variance once each seed's effect is removed, with its degrees of
        freedom: (n - 1)(G - 1)/G of the two-way layout's, G the schedules the effects came from
        (with G = 2 the paired difference's own variance, shared by the two)."""
        mine = p.seed_values(self.score)
        if len(mine) < 2 or self.schedules < 2:
            return 0.0, 0.0
        effects = [self.seed_effect.get(k, 0.0) for k in mine]
        shared = statistics.fmean(effects)
        centred = [v - e + shared for v, e in zip(mine.values(), effects)]
        df = (len(mine) - 1) * (self.schedules - 1) / self.schedules
        return float(np.var(centred, ddof=0)) * len(mine) / df, df

    def _moderated(self, prior: Prior | None, variance: float, df: float, level: float) -> tuple[float, float]:
        return (variance, df) if prior is None else prior.moderate(variance, df, level)

    def _independent_df(self, p: Point, level: float) -> float:
        """The most degrees of freedom the study's schedules near ``p`` can lend its variance.

        Seed k starts every schedule from the same weights and batches, so schedules' seed offsets
        correlate (measured with 8 seeds on ``quick``: 0.76 on average between schedules that learn
        the probe, 0.88 between those that never do), and their variances are not independent
        estimates: ``G`` schedules whose offsets correlate ``r`` on average carry
        ``G / (1 + (G - 1) r)`` schedules' worth (Kish's design effect). ``G`` and ``r`` are read
        near ``p``'s level, weighted by the prior's kernel (every pair of schedules alike below
        8 schedules); the result is ``(n - 1)`` times that."""
        if self.prior is None or p.schedule not in self._order or not self.design_effect:
            return math.inf
        w = self.prior.weights(level)
        weight = float(w.sum() ** 2 - w @ w)  # twice the weight of the pairs i < j; w @ alike @ w is twice theirs
        r = min(max(float(w @ self._alike @ w) / weight, 0.0), 1.0) if weight > 0 else 0.0
        n = len(self.values(p))
        if n == 2:  # two seeds' offsets correlate +-1, their sign: Sheppard, E = (2/pi) arcsin(rho)
            r = math.sin(math.pi * r / 2)
        g = 1.0 / float(np.sum(w**2))
        return (n - 1) * g / (1 + (g - 1) * r)

    def interval(self, p: Point) -> tuple[float, float] | None:
        y = self._scaled(p)
        if len(y) < 2:
            return None
        variance, df = self._moderated(self.prior, float(np.var(y, ddof=1)), len(y) - 1, float(np.mean(y)))
        df = min(df, max(self._independent_df(p, float(np.mean(y))), len(y) - 1.0))
        mean = statistics.fmean(self.values(p))
        if variance == 0:
            return (mean, mean)
        return self.scale.interval(mean, float(stats.t.ppf((1 + CONFIDENCE) / 2, df)) * math.sqrt(variance / len(y)))

    def _paired(self, p: Point) -> tuple[float, float]:
        """``p``'s moderated residual variance and its degrees of freedom (found once per schedule and
        seeds: the knee's draws read it for every schedule in each of 400 draws)."""
        key = (p.schedule, tuple(p.seed_values(self.score).items()))
        if key not in self._paired_found:
            variance, df = self._residual(p)
            self._paired_found[key] = self._moderated(self.paired_prior, variance, df, statistics.fmean(self.values(p)))
        return self._paired_found[key]

    def spread(self, p: Point) -> float:
        return math.sqrt(self._paired(p)[0])

    def difference(self, a: Point, b: Point) -> Difference | None:
        mine, theirs = a.seed_values(self.score), b.seed_values(self.score)
        common = sorted(set(mine) & set(theirs))
        if len(common) < 2:
            return None
        diffs = [mine[k] - theirs[k] for k in common]
        estimate, n = statistics.fmean(diffs), len(common)
        variance, df = float(np.var(diffs, ddof=1)), float(n - 1)
        if (prior := self.paired_prior) is not None:
            # the pair's own variance, shrunk toward the sum of the two schedules' prior residual variances
            la, lb = (statistics.fmean(self.values(p)) for p in (a, b))
            variance, df = prior.shrink(variance, df, prior.variance(la) + prior.variance(lb))
        se = math.sqrt(variance / n)
        if se == 0:
            return Difference(estimate, (estimate, estimate), n, df, float(estimate >= 0), float(estimate <= 0))
        half = float(stats.t.ppf((1 + CONFIDENCE) / 2, df)) * se
        return Difference(estimate, (estimate - half, estimate + half), n, df,
                          float(stats.t.cdf(estimate / se, df)), float(stats.t.sf(estimate / se, df)))

    def draws(self, pts: list[Point], resamples: int) -> int:
        return resamples

    def draw(self, rng: random.Random, p: Point, i: int) -> float:
        variance, df = self._paired(p)
        if variance == 0 or df <= 0:  # a lone schedule: no seed effect to remove, no residual to draw from
            return statistics.fmean(self.values(p))
        z = rng.gauss(0.0, 1.0)
        t = z if math.isinf(df) else z / math.sqrt(2 * rng.gammavariate(df / 2, 1.0) / df)
        return statistics.fmean(self.values(p)) + t * math.sqrt(variance / len(self.values(p)))


class Sequences(Basis):
    """Noise over bootstrap resamples of the validation sequences, resample ``i`` the same
    sequences for every schedule (see the module)."""

    name, resampled = "sequences", "the validation sequences"
    test, unit = "paired bootstrap over the validation sequences", "bootstrap standard error"

    def __init__(self, score: str) -> None:
        self.score = score

    def values(self, p: Point) -> list[float]:
        return p.resamples(self.score)

    def estimate(self, seeds: int) -> str:
        return "95% bootstrap interval over the validation sequences"

    def interval(self, p: Point) -> tuple[float, float] | None:
        return percentile_interval(self.values(p))

    def spread(self, p: Point) -> float:
        values = self.values(p)
        return statistics.stdev(values) if len(values) >= 2 else 0.0

    def difference(self, a: Point, b: Point) -> Difference | None:
        mine, theirs = np.array(self.values(a)), np.array(self.values(b))
        if len(mine) < 2 or len(mine) != len(theirs):
            return None
        diffs = mine - theirs
        lo, hi = np.quantile(diffs, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
        estimate = a.scores.get(self.score, a.quality) - b.scores.get(self.score, b.quality)
        # the share of resamples on which a is not lower (not higher): the one-sided paired bootstrap
        return Difference(estimate, (float(lo), float(hi)), len(diffs), None,
                          float((diffs >= 0).mean()), float((diffs <= 0).mean()))

    def draws(self, pts: list[Point], resamples: int) -> int:
        return min((len(v) for p in pts if len(v := self.values(p)) >= 2), default=0)

    def draw(self, rng: random.Random, p: Point, i: int) -> float:
        return self.values(p)[i]


def basis_of(points: list[Point], score: str, maximize: bool, population: list[Point] | None = None) -> Basis | None:
    """The basis all of ``points`` share for ``score``: seeds where each has two or more (fitted
    on ``population``, default ``points``: its schedules with two seeds or more), else resampled
    sequences where each has them; None when their noise is unmeasured."""
    if points and all(len(p.seed_values(score)) >= 2 for p in points):
        return Seeds(points if population is None else population, score, maximize)
    if points and all(len(p.resamples(score)) >= 2 for p in points):
        return Sequences(score)
    return None


def _correlation(a: dict[int, float], b: dict[int, float]) -> float:
    """The correlation of two schedules' seed offsets over the seeds they share (0 where either
    does not vary or they share fewer than two)."""
    common = sorted(set(a) & set(b))
    x, y = np.array([a[k] for k in common]), np.array([b[k] for k in common])
    if len(common) < 2 or not x.any() or not y.any():
        return 0.0
    return float(x @ y / math.sqrt(float(x @ x) * float(y @ y)))


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
        knee_share: the share of draws whose knee is the knee's schedule (None: one seed).
        resolution: the gaps between neighbouring front points, cheapest first, in noise units.
        unit: the noise unit: the basis's paired spread pooled over the front.
        basis: where the noise comes from; None: unmeasured.
        draws: how many draws the knee's share was found on.
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
        return self.basis.estimate(self.seeds) if self.basis is not None else "one seed, noise unmeasured"


def tied_with_front(pts: list[Point], front: list[Point], score: str, maximize: bool,
                    basis: Basis | None = None) -> list[Point]:
    """Points off ``front`` that no point costing no more is significantly better than (see the
    module), cheapest first; points without two values on the basis cannot be tested and are left
    out. ``basis`` defaults to the front's, fitted on ``pts``."""
    basis = basis or basis_of(front, score, maximize, pts)
    if basis is None:
        return []
    distinct, on_front = _distinct(pts), {p.schedule for p in front}

    def tied(p: Point) -> bool:
        rivals = [q for q in distinct if q.cost <= p.cost and q.schedule != p.schedule]
        return not any(basis.better_than(rivals, p, maximize))

    return sorted((p for p in distinct if p.schedule not in on_front and len(basis.values(p)) >= 2 and tied(p)),
                  key=lambda p: (p.cost, p.number))


def resolved(front: list[Point], score: str, maximize: bool, basis: Basis | None = None) -> list[Point]:
    """The points of ``front`` that are significantly better than every cheaper front point, cheapest
    first (the cheapest always is). Each other point is tied with a cheaper one: the data cannot
    show that its extra cost buys anything, and which point of such a group lands on a front is noise.
    ``basis`` defaults to the front's own."""
    ordered = sorted(front, key=lambda p: (p.cost, p.number))
    basis = basis or basis_of(front, score, maximize)
    if basis is None:
        return ordered[:1]
    return [p for i, p in enumerate(ordered) if all(basis.better_than([p], q, maximize)[0] for q in ordered[:i])]


def knee_share(pts: list[Point], score: str, maximize: bool, resamples: int = RESAMPLES, seed: int = 0,
               basis: Basis | None = None) -> float | None:
    """The share of draws (of ``basis``, default the points' own) in which the knee is the same schedule."""
    distinct = _distinct(pts)
    front = front_of(distinct, maximize)
    basis = basis or basis_of([p for p in distinct if len(p.samples(score)) >= 2], score, maximize)
    if not front or basis is None or all(len(basis.values(p)) < 2 for p in distinct):
        return None
    resamples = basis.draws(distinct, resamples)
    chosen = knee(front, maximize).schedule
    rng, same = random.Random(seed), 0
    for i in range(resamples):
        drawn = [replace(p, quality=basis.draw(rng, p, i)) if len(basis.values(p)) >= 2 else p for p in distinct]
        same += knee(front_of(drawn, maximize), maximize).schedule == chosen
    return same / resamples


def noise_of(pts: list[Point], front: list[Point], score: str, maximize: bool) -> Noise:
    """Intervals, ties, the knee's stability and the resolution of ``front`` among ``pts``,
    whose ``quality`` is ``score``, on the basis the front's points share, fitted on ``pts``
    (see :func:`basis_of`)."""
    basis = basis_of(front, score, maximize, pts)
    if basis is None:
        return Noise(max(min((len(p.samples(score)) for p in front), default=1), 1), {}, [], None, [], None)
    intervals = {p.number: iv for p in _distinct(pts) if (iv := basis.interval(p)) is not None}
    unit = math.sqrt(statistics.fmean(basis.spread(p) ** 2 for p in front))
    gaps = [abs(b.quality - a.quality) / unit if unit else math.inf for a, b in zip(front, front[1:])]
    return Noise(min(len(p.samples(score)) for p in front), intervals, tied_with_front(pts, front, score, maximize, basis),
                 knee_share(pts, score, maximize, basis=basis), gaps, unit, basis, basis.draws(_distinct(pts), RESAMPLES))
