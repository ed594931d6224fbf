"""One read of a study, for everything that reports on it.

``show``, the dashboard, the CSV and the benchmarks each need the trials as records, the points of
each measurement, the front, the knee and the rank fidelity. :class:`StudyView` reads the storage
once (the trials, the study's attributes and directions) and derives the rest from that read, so a
page of ten figures costs one query, and every view of a study agrees with the others.
"""

from __future__ import annotations

from collections import Counter
from functools import cached_property
from typing import Any

import optuna
from optuna.trial import TrialState

from spanmix.search import record, strategies
from spanmix.search.config import StudyConfig
from spanmix.search.fidelity import Fidelity, comparisons, repeatability
from spanmix.search.front import front_of, knee, maximized, rescored
from spanmix.search.noise import Basis, Difference, Noise, basis_of, noise_of
from spanmix.search.record import STANDALONE, Point, TrialRecord
from spanmix.search.study import config_of
from spanmix.space import ConfigError, Schedule, ScheduleError


class StudyView:
    """A study as it stood when the view was made (make another to see newer trials)."""

    def __init__(self, study: optuna.Study, config: StudyConfig | None = None) -> None:
        self.study = study
        self.name = study.study_name
        self.attrs: dict[str, Any] = study.user_attrs
        self.config = config or config_of(study)
        self.maximize = maximized(self.config.quality)
        self.metric_names: list[str] | None = study.metric_names
        self.records = [TrialRecord.read(t) for t in study.get_trials(deepcopy=False)]
        self._noise: dict[str, Noise] = {}
        self._bases: dict[tuple[str, str], Basis | None] = {}

    @cached_property
    def points_all(self) -> list[Point]:
        """Every finished trial as a point, whatever its measurement."""
        return [r.point for r in self.records if r.complete and r.schedule is not None]

    def points(self, measurement: str | None = None) -> list[Point]:
        """Finished trials as points; only those measured at ``measurement`` when it is given."""
        return [p for p in self.points_all if measurement is None or p.measurement == measurement]

    @cached_property
    def by_measurement(self) -> dict[str, list[Point]]:
        out: dict[str, list[Point]] = {}
        for p in self.points_all:
            out.setdefault(p.measurement, []).append(p)
        return out

    @cached_property
    def searched(self) -> str:
        """The measurement the study's strategy searches at."""
        return record.searched(self.attrs, [p.measurement for p in self.points_all])

    @cached_property
    def final(self) -> str:
        """The measurement the study's answer is read at: standalone training, the trusted one,
        once any schedule was measured so (a cheap strategy's confirmed set), else the searched."""
        return STANDALONE if STANDALONE in self.by_measurement else self.searched

    def finished(self, measurement: str | None = None) -> int:
        """Distinct schedules measured at ``measurement`` (default: the searched one)."""
        measurement = measurement or self.searched
        return sum(p.reused_from is None for p in self.by_measurement.get(measurement, []))

    @cached_property
    def scores(self) -> list[str]:
        """Every score a finished trial holds, sorted."""
        return sorted({s for p in self.points_all for s in p.scores})

    def front(self, measurement: str | None = None, score: str | None = None) -> list[Point]:
        """Feasible, non-dominated points (one per schedule), cheapest first, among the trials at
        ``measurement`` (default: :attr:`final`), on the study's quality or on ``score``."""
        pts = self.points(measurement or self.final)
        if score is None:
            return front_of(pts, self.maximize)
        return front_of(rescored(pts, score), maximized(score))

    def noise(self, score: str | None = None) -> Noise:
        """What the seeds say about :meth:`front` (on the study's quality or ``score``): intervals,
        ties, the knee's stability, the resolution (see :mod:`spanmix.search.noise`)."""
        key = score or self.config.quality
        if key not in self._noise:
            pts = self.points(self.final)
            pts = rescored(pts, score) if score else pts
            self._noise[key] = noise_of(pts, self.front(score=score), key, maximized(score) if score else self.maximize)
        return self._noise[key]

    def basis(self, measurement: str, score: str | None = None) -> Basis | None:
        """The noise basis of the study's quality (or ``score``) among the trials at
        ``measurement``, fitted on them (None where a point has neither two seeds nor resamples)."""
        key = (measurement, score or self.config.quality)
        if key not in self._bases:
            pts = [p for p in self.by_measurement.get(measurement, []) if p.feasible]
            self._bases[key] = basis_of(pts, key[1], maximized(score) if score else self.maximize)
        return self._bases[key]

    def point(self, ref: str, field: str = "--compare") -> Point:
        """The finished trial ``ref`` names: a trial number, or a schedule's text (its latest trial at
        :attr:`final`, else at any measurement). Refuses, naming ``field``, a trial that is not a
        finished schedule and a schedule the study has not measured."""
        if ref.strip().isdigit():
            number = int(ref)
            found = [p for p in self.points_all if p.number == number]
            if not found:
                known = ", ".join(str(p.number) for p in self.points_all[:12]) or "none yet"
                raise ConfigError(f"{field} {ref!r}: study {self.name!r} has no finished trial {number}; "
                                  f"its finished trials include: {known}")
            return found[0]
        try:
            text = Schedule.parse(ref).canonical(self.config.space.context).text
        except ScheduleError as err:
            raise ConfigError(f"{field} {ref!r} is neither a trial number nor a schedule: {err}") from None
        found = sorted((p for p in self.points_all if p.schedule == text), key=lambda p: (p.measurement != self.final, -p.number))
        if not found:
            raise ConfigError(f"{field} {ref!r}: schedule {text!r} is not in study {self.name!r} "
                              f"({self.finished(self.final)} schedules measured; `spanmix show --csv` lists them)")
        return found[0]

    def compare(self, a: Point, b: Point, score: str | None = None) -> Difference:
        """The paired difference ``a - b`` of the study's quality (or ``score``) on the noise basis
        of their measurement (see :mod:`spanmix.search.noise`). Refuses points measured differently
        (their scores are not on one footing) and a difference the noise cannot be measured for."""
        if a.measurement != b.measurement:
            raise ConfigError(f"--compare: trial {a.number} was measured {a.measurement!r} and trial {b.number} "
                              f"{b.measurement!r}; a difference needs one measurement (pick two trials of one)")
        basis = self.basis(a.measurement, score)
        difference = basis.difference(a, b) if basis is not None else None
        if difference is None:
            raise ConfigError(f"--compare: trials {a.number} and {b.number} share fewer than two seeds and no "
                              f"resamples of the validation sequences, so their difference has no measured noise "
                              f"(study.seeds = {self.config.seeds}; two or more measure it)")
        return difference

    def knee(self, score: str | None = None) -> Point | None:
        """The knee of :meth:`front` (None before any feasible trial has finished)."""
        front = self.front(score=score)
        return knee(front, maximized(score) if score else self.maximize) if front else None

    @cached_property
    def comparisons(self) -> list[tuple[str, str, list[Fidelity]]]:
        """Rank fidelity between every pair of measurements the study holds (see
        :func:`spanmix.search.fidelity.comparisons`)."""
        chain = strategies.get(self.config.strategy).chain(set(self.by_measurement), self.searched)
        return comparisons(self.by_measurement, self.searched, chain, self.maximize)

    @cached_property
    def repeatability(self) -> list[Fidelity]:
        """How far two seeds of the final measurement order its schedules alike (see
        :func:`spanmix.search.fidelity.repeatability`); empty below 3 schedules with 2 seeds."""
        return repeatability(self.points(self.final), self.config.quality, self.maximize)

    @cached_property
    def states(self) -> dict[str, int]:
        """How many trials are in each state, by Optuna's state name."""
        return dict(sorted(Counter(r.state.name for r in self.records).items()))

    def failed(self) -> list[TrialRecord]:
        return [r for r in self.records if r.state == TrialState.FAIL]

    @property
    def stage_seconds(self) -> dict[str, float]:
        """Wall seconds by stage, for a strategy that records stages."""
        return self.attrs.get(record.STAGES, {})

    @property
    def weights(self) -> dict[str, Any]:
        """Where a strategy that trains shared weights trained them, and how fast."""
        return self.attrs.get(record.WEIGHTS, {})


def points(study: optuna.Study, measurement: str | None = None) -> list[Point]:
    """Finished trials as points (see :meth:`StudyView.points`)."""
    return StudyView(study).points(measurement)


def pareto_front(study: optuna.Study, measurement: str | None = None, score: str | None = None) -> list[Point]:
    """The study's front (see :meth:`StudyView.front`)."""
    return StudyView(study).front(measurement, score)
