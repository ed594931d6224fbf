"""Rank fidelity: how far a cheap measurement's ranking of schedules can be trusted.

A cheap measurement (a supernet's shared weights, a short training) is compared with a dearer one
(standalone training, a longer budget) on the same schedules. Kendall's tau (tau-b, ties handled)
counts pairs of schedules the two order alike; Spearman's rho correlates their ranks; both come
with a percentile bootstrap interval over the schedules, because a handful of points gives a wide
one and a reader should see how wide. Top-3 overlap says whether the schedules a user would pick
survive the dearer measurement.

Fidelity is judged where it matters: on the front and the schedules next to it. A set that mixes
schedules that cannot see far (all local) with ones that can orders the two groups alike under
any measurement, so the report also gives the figures among schedules with a full layer.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
from scipy import stats

from spanmix.search.front import fronts
from spanmix.search.record import STANDALONE, ZERO_SHOT, Point


@dataclass(frozen=True)
class Fidelity:
    """Agreement between a cheap and a dear measurement of the same ``n`` schedules."""

    label: str
    n: int
    kendall_tau: float
    tau_interval: tuple[float, float]
    spearman_rho: float
    rho_interval: tuple[float, float]
    top3_overlap: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        lo, hi = self.tau_interval
        rlo, rhi = self.rho_interval
        return (f"{self.label}: n={self.n}, Kendall tau {self.kendall_tau:+.2f} [{lo:+.2f}, {hi:+.2f}], "
                f"Spearman rho {self.spearman_rho:+.2f} [{rlo:+.2f}, {rhi:+.2f}], top-3 overlap {self.top3_overlap}/3")


def top_overlap(cheap: list[float], dear: list[float], maximize: bool, k: int = 3) -> int:
    """How many of the ``k`` best schedules by ``cheap`` are among the ``k`` best by ``dear``."""
    sign = -1.0 if maximize else 1.0

    def best(values: list[float]) -> set[int]:
        return set(sorted(range(len(values)), key=lambda i: sign * values[i])[:k])

    return len(best(cheap) & best(dear))


def _interval(cheap: np.ndarray, dear: np.ndarray, statistic: Any, seed: int, resamples: int) -> tuple[float, float]:
    """95% percentile bootstrap over schedules. Resamples in which either side is constant have no
    correlation and are skipped (scipy's ``bootstrap`` would turn the whole interval into NaN)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        idx = rng.integers(0, len(cheap), len(cheap))
        x, y = cheap[idx], dear[idx]
        if np.ptp(x) > 0 and np.ptp(y) > 0:
            values.append(statistic(x, y).statistic)
    if not values:
        return (math.nan, math.nan)
    lo, hi = np.percentile(values, [2.5, 97.5])
    return (float(lo), float(hi))


def rank_fidelity(cheap: list[float], dear: list[float], maximize: bool, label: str = "all",
                  seed: int = 0, resamples: int = 2000) -> Fidelity:
    """Kendall tau-b, Spearman rho (each with a bootstrap interval) and top-3 overlap between two
    measurements of the same schedules, in the same order. Needs at least 3 schedules."""
    if len(cheap) != len(dear) or len(cheap) < 3:
        raise ValueError(f"rank fidelity needs two equal lists of at least 3 values (got {len(cheap)} and {len(dear)})")
    x, y = np.asarray(cheap, dtype=float), np.asarray(dear, dtype=float)
    return Fidelity(
        label=label,
        n=len(x),
        kendall_tau=float(stats.kendalltau(x, y).statistic),
        tau_interval=_interval(x, y, stats.kendalltau, seed, resamples),
        spearman_rho=float(stats.spearmanr(x, y).statistic),
        rho_interval=_interval(x, y, stats.spearmanr, seed, resamples),
        top3_overlap=top_overlap(cheap, dear, maximize),
    )


def paired(cheap: list[Point], dear: list[Point]) -> list[tuple[Point, Point]]:
    """The schedules measured both ways, as (cheap, dear) point pairs, by schedule text."""
    by_schedule = {p.schedule: p for p in sorted(dear, key=lambda p: p.number)}
    return [(c, by_schedule[c.schedule]) for c in sorted(cheap, key=lambda p: p.number) if c.schedule in by_schedule
            and c.reused_from is None]


def _with_and_without_full(rows: list[tuple[Point, float, float]], labels: tuple[str, str], maximize: bool,
                           seed: int) -> list[Fidelity]:
    """Fidelity between the two values of each row (its schedule's point, cheap, dear) over every
    row and over those whose schedule has a full layer (where the all-local vs rest split cannot
    inflate it); a subset of fewer than 3 is left out."""
    subsets = {labels[0]: rows, labels[1]: [r for r in rows if r[0].layers.n_full > 0]}
    return [
        rank_fidelity([x for _, x, _ in sel], [y for _, _, y in sel], maximize, label, seed)
        for label, sel in subsets.items() if len(sel) >= 3
    ]


def fidelity_report(cheap: list[Point], dear: list[Point], maximize: bool, seed: int = 0,
                    over: tuple[str, str] = ("all confirmed", "with a full layer")) -> list[Fidelity]:
    """Fidelity over every schedule measured both ways, and over those with a full layer (named ``over``)."""
    rows = [(c, c.quality, d.quality) for c, d in paired(cheap, dear)]
    return _with_and_without_full(rows, over, maximize, seed)


def repeatability(points: list[Point], score: str, maximize: bool, seed: int = 0) -> list[Fidelity]:
    """The reference against itself: each schedule's first training seed against its second, over
    the schedules measured with two or more (all of them, and those with a full layer).

    This is how far two trainings of the same schedules agree. A cheap measurement is compared with
    the mean of the seeds, which is surer than one seed, so its figures may come out somewhat above
    these; far above them they cannot honestly be read, and a low figure here says the reference
    itself cannot order the schedules (more seeds or a larger budget would)."""
    pts = [p for p in sorted(points, key=lambda p: p.number) if len(p.samples(score)) >= 2 and p.reused_from is None]
    rows = [(p, p.samples(score)[0], p.samples(score)[1]) for p in pts]
    return _with_and_without_full(rows, ("all, seed 1 against seed 2", "with a full layer, seed 1 against seed 2"),
                                  maximize, seed)


def confirm_set(pts: list[Point], maximize: bool, controls: int, seed: int,
                keep: Callable[[list[Point]], list[Point]] | None = None) -> list[Point]:
    """What to confirm standalone: the whole front (or what ``keep`` keeps of it), plus ``controls``
    schedules drawn with ``seed`` from the next two fronts (near the front, where a wrong order would
    change the answer), topped up from the rest of the points when those are too few."""
    layers = fronts(pts, maximize, depth=len(pts))
    front = layers[0] if layers else []
    if keep is not None:
        front = keep(front)
    near = [p for layer in layers[1:3] for p in layer]
    rest = [p for layer in layers[3:] for p in layer]
    rng = random.Random(seed)
    picked = rng.sample(near, min(controls, len(near)))
    picked += rng.sample(rest, min(controls - len(picked), len(rest)))
    return front + picked


def comparisons(by_measurement: dict[str, list[Point]], searched: str, chain: list[str],
                maximize: bool) -> list[tuple[str, str, list[Fidelity]]]:
    """Every (cheap, dear, report) that points measured several ways hold: each measurement of the
    strategy's ``chain`` against the next (a cheap strategy's search against its confirmation,
    each rung of a successive halving against the next), standalone training against each longer
    budget (``spanmix fidelity``), and a checkpoint's zero-shot scores against its shared healing
    (the ``searched`` measurement) and its healing alone."""
    names = set(by_measurement)
    pairs = list(zip(chain, chain[1:]))
    pairs += [(STANDALONE, n) for n in sorted(names) if n.startswith(f"{STANDALONE}-")]
    # a checkpoint scored as it is, against its shared healing and against each schedule healed alone
    pairs += [(ZERO_SHOT, n) for n in dict.fromkeys((searched, STANDALONE)) if n != ZERO_SHOT]
    found = [(cheap, dear, fidelity_report(by_measurement[cheap], by_measurement[dear], maximize))
             for cheap, dear in pairs if {cheap, dear} <= names]
    return [c for c in found if c[2]]
