"""Seed variances shared across a study: empirical-Bayes moderation (Smyth 2004, limma's ``squeezeVar``).

A study trains many schedules with one recipe and a few seeds each. One schedule's seed variance
from 2 seeds has 1 degree of freedom, and a Student-t interval on it is as wide as t(0.975, 1) =
12.7 standard errors. But the schedules' variances estimate related quantities, so each is shrunk
toward a prior fitted across the study, and gains the prior's degrees of freedom ``d0``:

    s~^2 = (d0 * s0^2 + d * s^2) / (d0 + d),    df = d0 + d   (at most the study's total, sum d).

The prior (``s0^2``, ``d0``) is fitted by the method of moments on log variances (Smyth 2004,
section 6.2; limma's ``fitFDist``): the mean of ``log s^2`` corrected by ``digamma(d/2) - log(d/2)``
gives ``s0^2``; what its scatter exceeds the sampling scatter ``trigamma(d/2)`` by gives ``d0``.
Where variances follow the score's level (schedules that never learn a probe have a tenth of the
spread of those that do), the prior's log variance is a smooth of the schedule's mean (as
limma-trend's loess; here a Gaussian kernel smooth with Silverman's bandwidth, from
:data:`TREND_FROM` schedules on): schedules far from the others in level are then shrunk toward
their own level's variance, and the scatter left about the smooth sets ``d0``. Variances
that differ beyond that give a small ``d0``: the data then say that pooling is not warranted, and
each schedule keeps close to its own variance. Variances no more scattered than sampling allows give
``d0 = inf``: every schedule takes the prior's, which is then their pooled (df-weighted mean)
variance about the trend, the efficient estimate of a shared variance, rather than limma's
log-moment one.

A score's domain is kept by the scale it is moderated on (:func:`scale_of`): log for losses, the
arcsine of the square root for accuracies (the variance-stabilising scale of a proportion, bounded
to [0, pi/2]), so an interval built there and mapped back never leaves the domain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import special

TREND_FROM = 8  # schedules from which the prior's variance follows the schedules' level
FIT_FROM = 3  # schedules from which a prior is fitted at all
ZERO_OFFSET = 1e-5  # zero variances are offset to this share of the median before taking logs (limma's rule)


@dataclass(frozen=True)
class Scale:
    """A monotone map of a score's domain onto a scale its seed noise is moderated on.

    Attributes:
        name: as reports name it.
        forward, inverse: the map and its inverse, elementwise on arrays.
        low, high: the domain's ends on the scale (an interval is the part of it within reach).
    """

    name: str
    forward: Callable[[np.ndarray], np.ndarray]
    inverse: Callable[[np.ndarray], np.ndarray]
    low: float = -math.inf
    high: float = math.inf

    def interval(self, centre: float, half_width: float) -> tuple[float, float]:
        """The domain's values within ``half_width`` of ``centre`` (a raw value) on this scale."""
        c = float(self.forward(np.array(centre)))
        lo, hi = max(c - half_width, self.low), min(c + half_width, self.high)
        return float(self.inverse(np.array(lo))), float(self.inverse(np.array(hi)))


LOG = Scale("log", np.log, np.exp)
ANGULAR = Scale("arcsine square root", lambda p: np.arcsin(np.sqrt(p)), lambda a: np.sin(a) ** 2, 0.0, math.pi / 2)
IDENTITY = Scale("identity", lambda x: np.asarray(x, dtype=float), lambda x: np.asarray(x, dtype=float))


def scale_of(values: Sequence[float], accuracy: bool) -> Scale:
    """The scale a score's seed noise is moderated on: angular for an accuracy (values in [0, 1]),
    log for a positive score (a loss, a perplexity), the identity for anything else."""
    if accuracy and all(0.0 <= v <= 1.0 for v in values):
        return ANGULAR
    if all(v > 0 for v in values):
        return LOG
    return IDENTITY


@dataclass(frozen=True)
class Prior:
    """The study's prior for one schedule's variance: ``log s0^2 = shift + trend(level)``, with
    ``d0`` degrees of freedom (inf: every schedule takes the prior's variance).

    The trend is a kernel smooth (Nadaraya-Watson, Gaussian kernel of ``bandwidth``) of the
    schedules' corrected log variances ``logs`` over their ``levels``; an infinite bandwidth is no
    trend (their mean). A smooth, not a line: a study's schedules often fall into clusters of level
    (those that learn a probe and those that never do), and a line through two clusters would set
    the variance within each by the other.

    Attributes:
        d0: the prior's degrees of freedom.
        shift: added to the smooth (limma's digamma correction, or the pooled scale).
        levels, logs, bandwidth: the smooth's data and width.
        schedules: how many schedules' variances it was fitted on.
        total_df: their summed degrees of freedom: no schedule's moderated variance has more.
    """

    d0: float
    shift: float
    levels: tuple[float, ...]
    logs: tuple[float, ...]
    bandwidth: float
    schedules: int
    total_df: float

    @property
    def trend(self) -> bool:
        return not math.isinf(self.bandwidth)

    def variance(self, level: float) -> float:
        """The prior's variance ``s0^2`` at a schedule of ``level``."""
        return math.exp(self.shift + float(_smooth(np.array(self.levels), np.array(self.logs), self.bandwidth,
                                                   np.array([level]))[0]))

    def weights(self, level: float) -> np.ndarray:
        """How much each fitted schedule (in the order fitted) counts at ``level``: the smooth's
        kernel weights, summing to 1 (all alike without a trend)."""
        return _weights(np.array(self.levels), self.bandwidth, np.array([level]))[0]

    def moderate(self, variance: float, df: float, level: float) -> tuple[float, float]:
        """A schedule's moderated variance and its degrees of freedom."""
        return self.shrink(variance, df, self.variance(level))

    def shrink(self, variance: float, df: float, prior: float) -> tuple[float, float]:
        """``variance`` on ``df`` degrees of freedom shrunk toward ``prior`` (the prior's variance of
        that quantity, e.g. the sum of two schedules' for their paired difference), with its degrees
        of freedom."""
        if math.isinf(self.d0):
            return prior, self.total_df
        return (self.d0 * prior + df * variance) / (self.d0 + df), min(self.d0 + df, self.total_df)

    def describe(self) -> str:
        """One phrase for report headers: ``d0=3.1, trend on the mean, 25 schedules``."""
        d0 = "inf" if math.isinf(self.d0) else f"{self.d0:.1f}"
        return f"d0={d0}{', trend on the mean' if self.trend else ''}, {self.schedules} schedules"


def _weights(x: np.ndarray, bandwidth: float, at: np.ndarray) -> np.ndarray:
    """Gaussian kernel weights of the points ``x`` at each of ``at`` (rows), each row summing to 1."""
    if math.isinf(bandwidth):
        w = np.ones((len(at), len(x)))
    else:
        w = np.exp(-0.5 * ((at[:, None] - x[None, :]) / bandwidth) ** 2)
    return w / w.sum(axis=1, keepdims=True)


def _smooth(x: np.ndarray, y: np.ndarray, bandwidth: float, at: np.ndarray) -> np.ndarray:
    return _weights(x, bandwidth, at) @ y


def bandwidth_of(levels: np.ndarray) -> float:
    """Silverman's rule of thumb, ``0.9 min(sd, IQR / 1.34) n^(-1/5)``: the IQR keeps it narrow
    where levels fall into clusters (the sd then measures the distance between them)."""
    q75, q25 = np.percentile(levels, [75, 25])
    spread = min(float(np.std(levels, ddof=1)), float(q75 - q25) / 1.34) or float(np.std(levels, ddof=1))
    return 0.9 * spread * len(levels) ** -0.2 if spread > 0 else math.inf


def trigamma_inverse(y: float) -> float:
    """The ``x`` with ``trigamma(x) = y`` (y > 0), by limma's Newton iteration on 1/trigamma."""
    if y > 1e7:
        return 1.0 / math.sqrt(y)
    if y < 1e-6:
        return 1.0 / y
    x = 0.5 + 1.0 / y
    for _ in range(50):
        tri = float(special.polygamma(1, x))
        step = tri * (1 - tri / y) / float(special.polygamma(2, x))
        x += step
        if -step / x < 1e-8:
            break
    return x


def fit_prior(variances: Sequence[float], dfs: Sequence[float], levels: Sequence[float]) -> Prior | None:
    """The prior fitted to the schedules' ``variances`` with ``dfs`` degrees of freedom each, at
    ``levels`` (their means); a smooth in the level from :data:`TREND_FROM` schedules on. None below
    :data:`FIT_FROM` schedules with a degree of freedom, or where all their variances are zero."""
    keep = [i for i, d in enumerate(dfs) if d > 0]
    if len(keep) < FIT_FROM:
        return None
    s2 = np.array([max(variances[i], 0.0) for i in keep])
    d = np.array([dfs[i] for i in keep], dtype=float)
    x = np.array([levels[i] for i in keep], dtype=float)
    median = float(np.median(s2))
    if median == 0.0 and not s2.any():
        return None
    s2 = np.maximum(s2, ZERO_OFFSET * (median or float(s2[s2 > 0].min())))
    e = np.log(s2) - special.digamma(d / 2) + np.log(d / 2)
    width = bandwidth_of(x) if len(keep) >= TREND_FROM else math.inf
    hat = _weights(x, width, x)
    fitted = hat @ e
    used = float(np.trace(hat))  # the smooth's degrees of freedom (1 for a plain mean)
    residual = e - fitted
    excess = float(residual @ residual) / max(len(e) - used, 1.0) - float(np.mean(special.polygamma(1, d / 2)))
    levels, logs = tuple(float(v) for v in x), tuple(float(v) for v in e)
    if excess <= 0:
        # the variances share one value (about the trend): its pooled estimate, the df-weighted mean
        # of the variances, is the efficient one; the log-moment one limma uses scatters ~1.6x as
        # much at 1 degree of freedom each (trigamma(1/2) = 4.93 against 2 on the log scale)
        pooled = float(np.sum(d * s2 * np.exp(-fitted)) / d.sum())
        return Prior(math.inf, math.log(pooled), levels, logs, width, len(keep), float(d.sum()))
    d0 = 2 * trigamma_inverse(excess)
    shift = float(special.digamma(d0 / 2) - math.log(d0 / 2))
    return Prior(d0, shift, levels, logs, width, len(keep), float(d.sum()))
