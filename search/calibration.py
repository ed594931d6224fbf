"""Calibration: can a study's training budget tell schedules apart at all, before it is spent?

The dearest and the cheapest schedules of the space belong to every front, and they differ most: if
the budget cannot separate them, it separates nothing in between. Calibration trains both with the
study's seeds (at least 2, to measure the noise) and scores each training on the way, at 1/4 and
1/2 of its steps and at its end: one learning curve per seed, not extra trainings. (The learning
rate decays over the whole budget, so a score at 1/4 of the steps is where a training stands then,
a little worse than a training given only that budget would reach.)

For each point of the curve it reports the two schedules' gap in units of the seed noise, paired:
seed k of both starts from the same weights and reads the same batches, so the noise is the spread
of their per-seed differences over sqrt(2), one schedule's share of it (see :class:`CurvePoint`);
and, for each long-range probe, the dearest schedule's answer accuracy against chance. The budget **separates** when at its end the gap is at least
:func:`separation` noise units for the seeds it has and every probe's accuracy is at least twice
chance; otherwise it names what would help. Its trainings are the study's own measurement when the
study has 2 seeds or more (and so are reused by it); with 1 seed they are kept apart, under the
measurement ``calibration``.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable

import optuna
from optuna.trial import FrozenTrial
from scipy import stats

from spanmix.proxies.subject import Proxy
from spanmix.search import record
from spanmix.search.config import StudyConfig
from spanmix.search.measures import CURVE, STANDALONE, StandaloneMeasure
from spanmix.search.objective import Objective
from spanmix.search.queue import measure_schedules
from spanmix.search.record import TrialRecord
from spanmix.space import ConfigError


def separation(seeds: int) -> float:
    """The noise units the extremes must be apart at the full budget, with ``seeds`` seeds each (2 or more)."""
    # With k paired seeds the units are sqrt(2/k) times |t| with k - 1 degrees of freedom, so two
    # equal schedules reach t(0.975, k - 1) * sqrt(2/k) units 5% of the time where the per-seed
    # differences are normal: 12.7 at 2 seeds, 3.51 at 3, 2.25 at 4. 3 is kept as a floor so that
    # the extremes leave room for the schedules between them (benchmarks/calibration.py measures
    # both rates on trained seeds).
    return max(3.0, float(stats.t.ppf(0.975, seeds - 1)) * math.sqrt(2 / seeds))


PROBE_FACTOR = 2.0  # a probe counts as learned at this many times chance accuracy
CALIBRATION = "calibration"  # the measurement's name when the study itself has one seed
PROBE_HELP = ", more fact copies (data.fact_copies) or a shorter distance (data.min_distance)"


@dataclass(frozen=True)
class CurvePoint:
    """The dearest and cheapest schedules at one point of their learning curves."""

    fraction: float
    steps: int
    dear: list[float]
    cheap: list[float]
    probes: dict[str, float]  # the dearest schedule's mean answer accuracy, by probe task

    @property
    def gap(self) -> float:
        return abs(statistics.fmean(self.dear) - statistics.fmean(self.cheap))

    @property
    def noise(self) -> float:
        """One schedule's paired seed noise: the standard deviation of the per-seed differences
        (seed k of both, ``dear[k] - cheap[k]``) over sqrt(2). What a seed does to both alike
        cancels in each difference, so this is the noise a comparison of the two meets."""
        return statistics.stdev(d - c for d, c in zip(self.dear, self.cheap, strict=True)) / math.sqrt(2)

    @property
    def units(self) -> float:
        return self.gap / self.noise if self.noise else math.inf if self.gap else 0.0


@dataclass(frozen=True)
class Calibration:
    """What the study's budget can tell apart."""

    dear: str
    cheap: str
    quality: str
    seeds: int
    points: list[CurvePoint]
    chance: dict[str, float]
    helps: str = Proxy.budget_help  # what a larger budget means for the model under search

    @property
    def last(self) -> CurvePoint:
        return self.points[-1]

    @property
    def separated(self) -> bool:
        return self.last.units >= self.threshold and self.probes_learned

    @property
    def threshold(self) -> float:
        return separation(self.seeds)

    @property
    def probes_learned(self) -> bool:
        return all(self.last.probes.get(t, 0.0) >= PROBE_FACTOR * c for t, c in self.chance.items())

    def earliest_separating(self) -> CurvePoint | None:
        """The first point of the curve from which on the extremes stay at least
        :attr:`threshold` noise units apart (None: not even at the full budget)."""
        for i, p in enumerate(self.points):
            if all(q.units >= self.threshold for q in self.points[i:]):
                return p
        return None

    def table(self) -> list[str]:
        """The report, a line each."""
        probes = list(self.chance)
        lines = [f"calibration: {self.dear} (dearest) against {self.cheap} (cheapest), {self.seeds} seeds each, "
                 f"{self.quality} at points of the same trainings",
                 f"  {'budget':>7} {'steps':>6} {'dearest':>9} {'cheapest':>9} {'gap':>8} {'noise':>8} {'units':>6}"
                 + "".join(f" {t + ' acc':>12}" for t in probes)]
        for p in self.points:
            accs = "".join(f" {p.probes.get(t, math.nan):>6.3f}/{self.chance[t]:<5.3f}" for t in probes)
            lines.append(f"  {p.fraction:>7.0%} {p.steps:>6} {statistics.fmean(p.dear):>9.4f} {statistics.fmean(p.cheap):>9.4f} "
                         f"{p.gap:>8.4f} {p.noise:>8.4f} {p.units:>6.1f}{accs}")
        if probes:
            lines.append("  (acc: the dearest schedule's answer accuracy / chance)")
        return lines

    def verdict(self) -> str:
        """One line: whether the budget separates, with the figures and what would help."""
        figures = (f"the dearest and cheapest schedules are {self.last.units:.1f} noise units apart "
                   f"(need {self.threshold:.3g} at {self.seeds} seeds)")
        if self.separated:
            return f"the budget separates: {figures}"
        missing = [f"{t} accuracy {self.last.probes.get(t, 0.0):.3f} against chance {c:.3f}"
                   for t, c in self.chance.items() if self.last.probes.get(t, 0.0) < PROBE_FACTOR * c]
        learned = f"; the dearest schedule did not learn the probe ({', '.join(missing)})" if missing else ""
        helps = f"{self.helps}{PROBE_HELP}" if self.chance else f"{self.helps} or more data"
        if separation(self.seeds + 1) <= self.last.units < self.threshold:  # apart enough for 3 seeds' threshold
            helps = f"{self.seeds + 1} seeds (study.seeds; they need {separation(self.seeds + 1):.3g} units), {helps}"
        return f"the budget does not separate schedules: {figures}{learned}; try {helps}"


def calibrate(cfg: StudyConfig, study: optuna.Study,
              callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] | None = None) -> Calibration:
    """Train (or find) the space's dearest and cheapest schedules with ``max(2, study.seeds)``
    seeds in ``study`` (opened by :func:`~spanmix.search.study.open_study`), and read what their
    learning curves can separate. ``callbacks`` are Optuna's, called as each schedule's trainings
    finish."""
    if not cfg.trains:
        raise ConfigError("nothing to calibrate: base.heal_steps=0 scores the checkpoint as it is, with no training "
                          "budget or seed (its interval comes from the evaluation sequences)")
    seeds = max(2, cfg.seeds)
    precision = record.pinned_precision(study.user_attrs)
    name = STANDALONE if seeds == cfg.seeds else CALIBRATION
    measure = StandaloneMeasure(cfg, precision=precision, seeds=seeds, name=name)
    cheap, dear = (s.canonical(cfg.space.context).text for s in cfg.space.extremes())
    # the study's own measure first: trials it queued untagged (a grid's) run as the study would
    objective = Objective(cfg, StandaloneMeasure(cfg, precision=precision), measure)
    measure_schedules(study, objective, [dear, cheap], name, callbacks=callbacks)
    return read_calibration(study, cfg, dear, cheap, name)


def read_calibration(study: optuna.Study, cfg: StudyConfig, dear: str, cheap: str, measurement: str) -> Calibration:
    """The calibration the study holds for ``dear`` and ``cheap`` at ``measurement``."""
    done = {r.schedule: r for r in map(TrialRecord.read, study.get_trials(deepcopy=False))
            if r.complete and r.measurement == measurement and r.reused_from is None}
    missing = [s for s in (dear, cheap) if s not in done]
    if missing:
        raise ConfigError(f"calibration: {', '.join(missing)} could not be measured (see the failure logged above)")
    steps = cfg.train.steps
    chance = {t: c(cfg.data) for t in cfg.data.tasks if (c := cfg.data.task(t).chance) is not None}
    points = []
    for fraction in (*CURVE, 1.0):
        step = None if fraction == 1.0 else round(fraction * steps)
        d, c = (done[s].samples(cfg.quality, step) for s in (dear, cheap))
        if len(d) < 2 or len(c) < 2:
            continue  # a measurement made before curves were recorded has only its end
        probes = {t: statistics.fmean(done[dear].samples(f"{t}/acc", step)) for t in chance}
        points.append(CurvePoint(fraction, round(fraction * steps), d, c, probes))
    return Calibration(dear, cheap, cfg.quality, len(done[dear].seed_scores), points, chance, cfg.subject.budget_help)
