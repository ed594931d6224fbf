"""The halving strategy: successive halving across training budgets, asynchronous as ASHA.

The study's budget is cut into ``[halving] rungs`` budgets, each ``eta`` times the one before (or
spaced geometrically from ``first_steps``), the last being the full ``train.steps``. Every schedule
the sampler proposes (every schedule of the space with ``sampler = "grid"``) trains to the first
rung and is scored there (measurement ``rung-0``, with ``early_seeds`` training seeds; the last
rung has the study's ``seeds``). Whenever a rung holds ``n`` finished schedules, the best ``n // eta`` of them, ranked
as NSGA-II ranks a population (non-dominated front, then crowding, then seed noise:
:func:`spanmix.search.front.ranked`), train on to the next rung **from their checkpoint**. The
learning-rate schedule is always the full budget's, so a schedule that reaches the last rung has
had exactly the training a standalone measurement gives it, bit for bit on the CPU: it is stored
as one (``standalone``), and the front is read there.

Promotion is asynchronous, as ASHA (Li et al., MLSys 2020): a worker promotes whatever the current
top ``1/eta`` of a rung holds and has not gone on yet, and proposes a new schedule when nothing
can be promoted; it never waits for a rung to fill. (The price, as in ASHA: a schedule promoted
early may fall out of its rung's top later.) The study's ``n_trials`` counts schedules measured at
the first rung. Optuna cannot report intermediate values or prune in a multi-objective study
(optuna#3450), so Optuna's sampler proposes and the halving decides how far each proposal trains.

On a pretrained checkpoint (``[base] model`` with ``heal_steps``) the training halved is the
healing: rungs cut ``heal_steps``, and a promoted schedule continues its healing.

Checkpoints: ``WORKDIR/halving/SCHEDULE-KEY-sSEED/step-N/last.ckpt``, one per schedule, seed and
rung below the last; a rung's checkpoint is removed once the next rung has trained from it. A
worker that lacks a checkpoint (one on another machine) trains from scratch to the same step,
which gives the same numbers at a higher cost.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from spanmix.proxies.train import ProxyResult
from spanmix.search import record
from spanmix.search.calibration import Calibration
from spanmix.search.config import StudyConfig
from spanmix.search.front import ranked
from spanmix.search.logs import stable_enough
from spanmix.search.measures import STANDALONE, StandaloneMeasure, digest
from spanmix.search.objective import Objective
from spanmix.search.queue import finished, measure_schedules, work
from spanmix.search.record import Point, TrialRecord
from spanmix.search.strategies.base import RunOptions
from spanmix.search.strategies.standalone import Standalone
from spanmix.search.view import StudyView
from spanmix.space import ConfigError, Schedule, from_section, require_whole

log = logging.getLogger("spanmix.halving")
WAIT_SECONDS = 1.0  # between looks at the study while other workers finish the last trainings


MAX_RUNGS = 8
RUNG = "rung-"  # the measurement name of a rung below the full budget, before its index


def rung(index: int) -> str:
    """The measurement name of rung ``index`` below the full budget."""
    return f"{RUNG}{index}"


def rung_index(measurement: str) -> int | None:
    """The rung a measurement name stands for, or None for any other measurement."""
    tail = measurement.removeprefix(RUNG)
    return int(tail) if tail != measurement and tail.isdigit() else None


@dataclass(frozen=True)
class HalvingConfig:
    """How the halving strategy spreads the training budget over rungs (successive halving).

    Attributes:
        eta: at each rung the best ``1/eta`` of the schedules that finished it (by non-dominated
            sorting) train on to the next rung.
        rungs: how many budgets, the last being the study's full ``train.steps``.
        first_steps: the first rung's steps; the rungs between are spaced geometrically up to the
            full budget (None: ``train.steps / eta**(rungs - 1)``, so each rung is ``eta`` times
            the one before). Set it where calibration says a short training starts to rank
            schedules: a first rung below that ranks them by seed noise.
        early_seeds: training seeds of every rung below the last (None: the study's ``seeds``).
            The last rung is the standalone measurement and always has the study's seeds; a seed
            the rung below did not train starts there from scratch. One seed below the last rung
            spends a ``1/seeds`` share on the schedules that go no further.
    """

    eta: int = 3
    rungs: int = 3
    first_steps: int | None = None
    early_seeds: int | None = None

    def __post_init__(self) -> None:
        require_whole(self, "halving", ("eta", "rungs"), minimum=2)
        require_whole(self, "halving", ("rungs",), minimum=2, maximum=MAX_RUNGS)
        require_whole(self, "halving", tuple(n for n in ("first_steps", "early_seeds") if getattr(self, n) is not None))

    def steps(self, total: int) -> tuple[int, ...]:
        """The step each rung trains to, for a full budget of ``total`` steps; refuses a budget too
        short to give every rung a step of its own."""
        last = self.rungs - 1
        if self.first_steps is None:
            steps = tuple(round(total / self.eta ** (last - i)) for i in range(self.rungs))
            if total < self.eta ** last or len(set(steps)) < len(steps):
                raise ConfigError(f"halving: train.steps={total} is too few for {self.rungs} rungs of eta={self.eta} "
                                  f"(rungs at {list(steps)} steps); allowed: train.steps >= {self.eta ** last}, "
                                  "or fewer rungs")
            return steps
        if self.first_steps >= total:
            raise ConfigError(f"halving.first_steps={self.first_steps} must be below train.steps={total}: the last "
                              "rung is the full budget")
        steps = tuple(round(self.first_steps * (total / self.first_steps) ** (i / last)) for i in range(self.rungs))
        if len(set(steps)) < len(steps):
            raise ConfigError(f"halving: {self.rungs} rungs from first_steps={self.first_steps} to train.steps={total} "
                              f"do not each get a step of their own (rungs at {list(steps)} steps); allowed: fewer "
                              "rungs, or a smaller first_steps")
        return steps

    def seeds(self, study_seeds: int) -> int:
        """The training seeds of a rung below the last."""
        return self.early_seeds if self.early_seeds is not None else study_seeds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HalvingConfig:
        return from_section(cls, data, "halving")


@dataclass(frozen=True)
class Ladder:
    """What a successive halving trained: for each rung (the full budget last) its measurement, the
    step it trains to and the distinct schedules trained there; the tokens trained over every rung,
    and the tokens that training every first-rung schedule to the full budget would have taken."""

    rungs: list[tuple[str, int, int]]
    tokens: int
    full_tokens: int

    @property
    def share(self) -> float:
        return self.tokens / self.full_tokens if self.full_tokens else 0.0


def rungs_of(measurements: set[str]) -> list[str]:
    """The rung measurements among ``measurements``, lowest first."""
    return sorted((n for n in measurements if rung_index(n) is not None), key=lambda n: rung_index(n) or 0)


def ladder(view: StudyView) -> Ladder | None:
    """The rungs a study's successive halving trained (None where it trained none)."""
    names = rungs_of(set(view.by_measurement))
    if not names:
        return None
    cfg = view.config
    names.append(STANDALONE)
    steps = settings(cfg).steps(cfg.train.steps)
    trained = {n: [p for p in view.by_measurement.get(n, []) if p.reused_from is None] for n in names}
    tokens = sum(r.tokens_seen or 0 for r in view.records
                 if r.complete and r.reused_from is None and (r.measurement or STANDALONE) in trained)
    per_schedule = cfg.seeds * cfg.train.steps * cfg.train.batch_size * cfg.data.seq_len
    return Ladder([(n, s, len({p.schedule for p in trained[n]})) for n, s in zip(names, steps)], tokens,
                  len({p.schedule for p in trained[names[0]]}) * per_schedule)


def settings(cfg: StudyConfig) -> HalvingConfig:
    """The study's ``[halving]`` section."""
    return cfg.section("halving")


class Rung(StandaloneMeasure):
    """A standalone training stopped at rung ``index``'s step, continued from the rung below's
    checkpoint; the last rung is the standalone measurement itself."""

    def __init__(self, cfg: StudyConfig, index: int, precision: str | None, workdir: Path | None) -> None:
        steps = settings(cfg).steps(cfg.train.steps)
        last = index == len(steps) - 1
        early = settings(cfg).seeds(cfg.seeds)
        super().__init__(cfg, precision=precision, seeds=None if last else early,
                         name=STANDALONE if last else rung(index))
        self.until, self.previous = steps[index], steps[index - 1] if index else None
        self.continued = early if index else 0  # seeds the rung below trained: each should find its checkpoint
        self.last = last
        # every rung of one schedule continues one training: the full one names its folder
        self.family = self.training
        self.folder = workdir / "halving" if workdir is not None else None
        if not last:
            self.key = {**self.key, "until": self.until}
            self.training = digest({"training": self.training, "until": self.until})

    def checkpoint(self, schedule: Schedule, replicate: int, step: int) -> Path | None:
        """The folder of the checkpoint at ``step`` of ``schedule``'s training seed ``replicate``."""
        if self.folder is None:
            return None
        return self.folder / f"{schedule.hash}-{self.family}-s{replicate}" / f"step-{step}"

    def __call__(self, schedule: Schedule, replicate: int = 0) -> ProxyResult:
        below = self.checkpoint(schedule, replicate, self.previous) if self.previous is not None else None
        start = below / "last.ckpt" if below is not None and (below / "last.ckpt").exists() else None
        if start is None and replicate < self.continued:
            log.info("halving: no checkpoint of %s seed %d at step %d here; training from scratch to step %d",
                     schedule.text, replicate, self.previous, self.until)
        save = None if self.last else self.checkpoint(schedule, replicate, self.until)
        result = self.measure(schedule, replicate, until=self.until, checkpoint_dir=save, start_from=start)
        if below is not None:
            shutil.rmtree(below, ignore_errors=True)  # its trial is complete: nothing continues from it again
        return result


def promotions(rungs: list[list[Point]], started: list[set[str]], eta: int, maximize: bool,
               score: str) -> list[tuple[int, str]]:
    """``(rung, schedule)`` for each schedule that may train on to ``rung``: among the best
    ``n // eta`` of the ``n`` schedules finished at the rung below (:func:`ranked`) and not
    ``started`` at ``rung``; the highest rung first, so the full budget is reached early."""
    out = []
    for k in reversed(range(len(rungs) - 1)):
        n = len({p.schedule for p in rungs[k]})
        top = ranked(rungs[k], maximize, score)[: n // eta]
        out += [(k + 1, p.schedule) for p in top if p.schedule not in started[k + 1]]
    return out


def started_at(records: list[TrialRecord], name: str, retry_failed: bool) -> set[str]:
    """Schedules a trial at measurement ``name`` has measured, is measuring, or failed in a way
    that is remembered (a queued trial still waiting is not started: whoever promotes runs it)."""
    remembered = () if retry_failed else (record.FAILED_BY_ERROR, record.FAILED_BY_REMEMBERED)
    return {r.schedule for r in records
            if r.schedule is not None and (r.measurement or STANDALONE) == name
            and (r.state in (TrialState.COMPLETE, TrialState.RUNNING) or (r.state == TrialState.FAIL and r.failed_by in remembered))}


class Halving(Standalone):
    """Propose schedules at the first rung, promote the best ``1/eta`` of each rung onwards."""

    name = "halving"
    measurement = rung(0)
    section = HalvingConfig

    heals = "halves its healing across rungs"

    def chain(self, measurements: set[str], searched: str) -> list[str]:
        """Each rung against the next, the last against standalone training (the full budget)."""
        rungs = rungs_of(measurements)
        return [*rungs, STANDALONE] if rungs else super().chain(measurements, searched)

    def summary(self, view: StudyView) -> list[str]:
        trained = ladder(view)
        if trained is None:
            return []
        rungs = ", ".join(f"{n} at {steps} steps ({name})" for name, steps, n in trained.rungs)
        return [f"halving: schedules trained {rungs}; {trained.tokens:,} tokens, {trained.share:.0%} of training "
                "every first-rung schedule to the full budget"]

    def check(self, cfg: StudyConfig, workers: int) -> None:
        super().check(cfg, workers)
        settings(cfg).steps(cfg.train.steps)
        if settings(cfg).seeds(cfg.seeds) > cfg.seeds:
            raise ConfigError(f"halving.early_seeds={settings(cfg).early_seeds} is more than study.seeds={cfg.seeds}, "
                              f"the last rung's; allowed: 1 to {cfg.seeds}")
        least, target = settings(cfg).eta ** (settings(cfg).rungs - 1), self.target(cfg, cfg.n_trials)
        if target < least:
            raise ConfigError(f"halving: {target} schedules (study.n_trials={cfg.n_trials}, a space of "
                              f"{cfg.space.size()}) are too few for any to reach the full budget through "
                              f"{settings(cfg).rungs} rungs of eta={settings(cfg).eta}; allowed: at least {least}, "
                              "or a smaller eta or fewer rungs")

    def advise(self, cfg: StudyConfig, calibration: Calibration) -> str | None:
        """A first rung shorter than the budget at which calibration separates the extremes ranks
        schedules by seed noise: say so, with the figures."""
        first = settings(cfg).steps(cfg.train.steps)[0]
        point = calibration.earliest_separating()
        if point is not None and first >= point.steps:
            return None
        where = (f"from {point.steps} steps ({point.fraction:.0%}) on" if point is not None else "not even at the full budget")
        return (f"halving: the first rung trains {first} steps, but calibration separates the dearest and cheapest "
                f"schedules {where}: rungs below that rank by seed noise; use fewer rungs or a smaller eta "
                f"([halving] rungs = {settings(cfg).rungs}, eta = {settings(cfg).eta})")

    def search(self, study: optuna.Study, cfg: StudyConfig, target: int, options: RunOptions, precision: str | None,
               seed: int) -> None:
        rungs = [Rung(cfg, i, precision, options.workdir) for i in range(settings(cfg).rungs)]
        names = [r.name for r in rungs]
        objective = Objective(cfg, *rungs, retry_failed=options.retry_failed)
        callbacks = options.callbacks()
        deadline = time.monotonic() + options.timeout if options.timeout else math.inf
        log.info("halving: rungs at %s steps, the best 1/%d of each rung on to the next",
                 [r.until for r in rungs], settings(cfg).eta)
        tried: set[tuple[int, str]] = set()  # a promotion whose trial failed is not retried by this run
        while (left := deadline - time.monotonic()) > 0:
            timeout = left if options.timeout else None
            view = StudyView(study, cfg)
            started = [started_at(view.records, n, options.retry_failed) for n in names]
            chosen = [c for c in promotions([view.points(n) for n in names], started, settings(cfg).eta, view.maximize,
                                            cfg.quality) if c not in tried]
            running = any(r.state == TrialState.RUNNING for r in view.records)
            if chosen:
                rung, schedule = chosen[0]
                tried.add(chosen[0])
                log.info("halving: %s on to rung %d (%d steps)", schedule, rung, rungs[rung].until)
                measure_schedules(study, objective, [schedule], names[rung], timeout, callbacks)
            elif (done := view.finished(names[0])) < target:
                work(study, objective, done + 1, timeout, callbacks, seed)
                if finished(study, names[0]) == done and not running:
                    return  # the sampler found nothing more to measure (every draw failed or was spent)
            elif running:
                with stable_enough():  # a dead worker's trial must not hold the others forever
                    optuna.storages.fail_stale_trials(study)
                time.sleep(WAIT_SECONDS)  # another worker's training may yet promote something
            else:
                return
