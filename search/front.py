"""The Pareto front and its knee: which measured schedules no other beats on both quality and cost."""

from __future__ import annotations

import math
import statistics
from dataclasses import replace

from spanmix.search.record import Point
from spanmix.space import ConfigError


def maximized(metric: str) -> bool:
    """Accuracies are maximised; losses and perplexities minimised."""
    return metric == "recall" or "/acc" in metric


def fronts(pts: list[Point], maximize: bool, depth: int = 1) -> list[list[Point]]:
    """The first ``depth`` non-dominated fronts of the feasible points (one point per schedule,
    the latest trial's), each cheapest first: front 1 is the Pareto front, front 2 the front of
    what is left, and so on."""
    sign = -1.0 if maximize else 1.0
    unique = {p.schedule: p for p in sorted(pts, key=lambda p: -p.number) if p.feasible}
    left = list(unique.values())

    def dominates(a: Point, b: Point) -> bool:
        qa, qb = sign * a.quality, sign * b.quality
        return qa <= qb and a.cost <= b.cost and (qa < qb or a.cost < b.cost)

    out = []
    while left and len(out) < depth:
        front = [p for p in left if not any(dominates(o, p) for o in left)]
        out.append(sorted(front, key=lambda p: (p.cost, sign * p.quality)))
        left = [p for p in left if p not in front]
    return out


def front_of(pts: list[Point], maximize: bool) -> list[Point]:
    """The Pareto front of ``pts`` (empty when no point is feasible)."""
    found = fronts(pts, maximize)
    return found[0] if found else []


def crowding(front: list[Point]) -> dict[str, float]:
    """NSGA-II's crowding distance of each point of one front, by schedule: the sides of the box
    its two neighbours span on each objective, each scaled by the front's extent on it. The ends
    of the front are infinitely far from crowded."""
    distance = dict.fromkeys((p.schedule for p in front), 0.0)
    for value in (lambda p: p.quality, lambda p: p.cost):
        ordered = sorted(front, key=value)
        span = value(ordered[-1]) - value(ordered[0])
        distance[ordered[0].schedule] = distance[ordered[-1].schedule] = math.inf
        for before, p, after in zip(ordered, ordered[1:], ordered[2:]):
            if span:
                distance[p.schedule] += (value(after) - value(before)) / span
    return distance


def standard_error(p: Point, score: str) -> float:
    """The standard error of ``p``'s ``score``: of its mean over its seeds, or with one seed the
    spread of its resamples of the validation sequences (infinite with neither: a schedule whose
    noise is unmeasured is the least sure)."""
    samples = p.samples(score)
    if len(samples) > 1:
        return statistics.stdev(samples) / math.sqrt(len(samples))
    resampled = p.resamples(score)
    return statistics.stdev(resampled) if len(resampled) > 1 else math.inf


def ranked(pts: list[Point], maximize: bool, score: str) -> list[Point]:
    """The feasible points best first, one per schedule, as NSGA-II ranks a population: by
    non-dominated front, then by crowding distance (the less crowded first, so a front's spread
    survives), then by noise on ``score`` (the surer first), then by schedule text."""
    order: list[Point] = []
    for front in fronts(pts, maximize, depth=len(pts)):
        distance = crowding(front)
        order += sorted(front, key=lambda p: (-distance[p.schedule], standard_error(p, score), p.schedule))
    return order


def rescored(pts: list[Point], score: str) -> list[Point]:
    """The points that hold ``score``, with it as their quality: the front of any score."""
    return [replace(p, quality=p.scores[score]) for p in pts if score in p.scores]


def knee(front: list[Point], maximize: bool) -> Point:
    """The front point nearest the ideal corner (best quality at least cost) once both axes are
    scaled to [0, 1] over the front: the best quality per cost for users who want one answer. A
    tie goes to the better quality: the two ends of a front with no point inside the unit circle
    are both exactly 1 from the corner, and the cheapest end is then often at chance."""
    if not front:
        raise ConfigError("the study has no finished feasible trial yet")
    qs, cs = [p.quality for p in front], [p.cost for p in front]
    q_span, c_span = (max(qs) - min(qs)) or 1.0, (max(cs) - min(cs)) or 1.0
    best_q = max(qs) if maximize else min(qs)

    def distance(p: Point) -> float:
        return ((p.quality - best_q) / q_span) ** 2 + ((p.cost - min(cs)) / c_span) ** 2

    return min(front, key=lambda p: (round(distance(p), 12), -p.quality if maximize else p.quality))
