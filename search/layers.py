"""What a study says about each layer: how much the quality changes when that layer alone goes
local, read from the single-local schedules the study measured (the layerwise strategy's scan
measures one per layer and local kind), and how often each layer is full on the front.

A change is paired: each seed (or bootstrap resample of the validation sequences) of the
single-local schedule against the same seed (resample) of the all-full one, so what the two
share (the initial weights, the sequences) cancels; its 95% interval is the study's basis's
paired difference (see :mod:`spanmix.search.noise`: over seeds, on the study's moderated seed variance).
"""

from __future__ import annotations

from dataclasses import dataclass

from spanmix.search.noise import basis_of
from spanmix.search.record import Point


@dataclass(frozen=True)
class Sensitivity:
    """The change in quality when ``layer`` alone is ``kind`` (a local token such as ``S64+4``),
    signed so that positive is worse; ``interval`` is its 95% interval (None: noise unmeasured)."""

    layer: int
    kind: str
    change: float
    interval: tuple[float, float] | None


def sensitivities(points: list[Point], score: str, maximize: bool) -> dict[str, list[Sensitivity]]:
    """Each local kind's sensitivities, by layer, from the all-full point and the single-local
    points among ``points`` (empty without an all-full point)."""
    full = next((p for p in points if p.layers.n_full == p.layers.n_layers), None)
    if full is None:
        return {}
    singles = [(p, i, layer.token) for p in points
               if len(local := [(i, layer) for i, layer in enumerate(p.layers.layers) if not layer.is_full]) == 1
               for i, layer in local]
    basis = basis_of([full, *(p for p, _, _ in singles)], score, maximize, points)
    sign = -1.0 if maximize else 1.0
    found: dict[str, list[Sensitivity]] = {}
    for p, i, token in singles:
        difference = basis.difference(p, full) if basis is not None else None
        interval = None if difference is None else (min(sign * x for x in difference.interval),
                                                    max(sign * x for x in difference.interval))
        found.setdefault(token, []).append(Sensitivity(i, token, sign * (_value(p, score) - _value(full, score)), interval))
    return {token: sorted(rows, key=lambda s: s.layer) for token, rows in found.items()}


def _value(p: Point, score: str) -> float:
    return p.scores.get(score, p.quality)


def full_share(front: list[Point], n_layers: int) -> list[float]:
    """For each layer, the share of the front's schedules in which it is full (0 without a front)."""
    if not front:
        return [0.0] * n_layers
    return [sum(p.layers.layers[i].is_full for p in front) / len(front) for i in range(n_layers)]
