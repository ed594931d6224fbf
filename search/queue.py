"""Meeting a target: optimise until a study holds N distinct measured schedules.

The sampler draws first. Repeated draws reuse a stored result and do not count, so when a
sampler keeps landing on measured schedules (a small space, a converged sampler), the schedules it
did not reach are queued in a seeded order, each worker its own: a target the space can meet is
met. Queued trials carry the measurement they are for, so one study can hold several
measurements of the same schedules (a strategy's search, its confirmation, a longer budget).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from spanmix.search import record
from spanmix.search.objective import Objective
from spanmix.space import Schedule, SearchSpace

log = logging.getLogger("spanmix.search")

# a sampler that keeps proposing measured schedules costs little per draw, but must not loop forever
MAX_DRAWS_PER_TARGET = 5
# spaces up to this size are listed (about 40 us a schedule) to queue what the sampler did not reach
FILL_LIMIT = 20_000


def finished(study: optuna.Study, measurement: str | None = None) -> int:
    """Distinct schedules measured at ``measurement`` (default: the one the study searches at):
    finished trials that did not reuse another's result."""
    done = [record.TrialRecord.read(t) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    measurement = measurement or record.searched(study.user_attrs, [r.measurement or record.STANDALONE for r in done])
    return sum(r.reused_from is None and (r.measurement or record.STANDALONE) == measurement for r in done)


def _stop_at(target: int, measurement: str) -> Callable[[optuna.Study, FrozenTrial], None]:
    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        if finished(study, measurement) >= target:
            study.stop()

    return callback


def _schedule_of(r: record.TrialRecord, space: SearchSpace) -> str | None:
    """The canonical schedule a trial measures, or None while a sampled trial is still drawing
    it. A queued trial holds only the parameters it was queued with; a retried one, its params."""
    if r.schedule is not None:
        return r.schedule
    if r.queued_params is None:
        return None
    return space.suggest(optuna.trial.FixedTrial(r.queued_params)).canonical(space.context).text


def unmeasured(study: optuna.Study, space: SearchSpace, measurement: str, untagged: str = record.STANDALONE,
               retry_failed: bool = False) -> list[tuple[dict[str, Any], str]]:
    """(parameters, schedule) of each schedule of ``space`` that no trial at ``measurement`` has
    measured, is measuring or holds queued, and that did not fail there (unless ``retry_failed``).
    ``untagged`` is the measurement a trial queued without one gets."""
    taken = _taken(study, space, measurement, untagged, retry_failed)
    todo = {s.canonical(space.context).text: p for p, s in space.all_params()}
    return [(p, text) for text, p in todo.items() if text not in taken]


def _taken(study: optuna.Study, space: SearchSpace, measurement: str, untagged: str, retry_failed: bool) -> set[str | None]:
    """The schedules a trial at ``measurement`` has measured, is measuring, holds queued, or
    failed (unless ``retry_failed``)."""
    taken = set()
    for t in study.get_trials(deepcopy=False):
        r = record.TrialRecord.read(t)
        failed = r.state == TrialState.FAIL and r.failed_by == record.FAILED_BY_ERROR and not retry_failed
        live = r.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
        if (live or failed) and (r.measurement or untagged) == measurement:
            taken.add(_schedule_of(r, space))
    return taken


def enqueue(study: optuna.Study, todo: list[tuple[dict[str, Any], str]], measurement: str) -> None:
    """Queue each (parameters, schedule) to be measured at ``measurement``."""
    for params, text in todo:
        study.enqueue_trial(params, user_attrs=record.queued(measurement, text))


def enqueue_space(study: optuna.Study, space: SearchSpace, measurement: str | None = None) -> None:
    """Queue every schedule of ``space`` once (a resumed run queues nothing twice); without a
    measurement each goes to whatever measures untagged trials (a grid sampler's search). With
    one, a schedule is left out only when a trial at that measurement holds it: trials of the same
    parameters at another (a calibration's) do not count, as Optuna's ``skip_if_exists`` would."""
    if measurement is not None:
        enqueue(study, unmeasured(study, space, measurement), measurement)
        return
    for params, _ in space.all_params():
        study.enqueue_trial(params, skip_if_exists=True)


def _fill(study: optuna.Study, objective: Objective, remaining: int, rng: random.Random) -> int:
    """Queue up to ``remaining`` schedules the sampler has not reached, in ``rng``'s order;
    how many were queued."""
    space, measurement = objective.cfg.space, objective.default
    if remaining <= 0:
        return 0
    if space.size() > FILL_LIMIT:
        log.warning("the sampler keeps drawing measured schedules, and %d schedules are too many to list "
                    "what is left; stopping %d short of the target", space.size(), remaining)
        return 0
    todo = unmeasured(study, space, measurement, objective.default, objective.retry_failed)
    rng.shuffle(todo)
    todo = todo[:remaining]
    if todo:
        log.info("the sampler keeps drawing measured schedules; queuing %d not measured yet", len(todo))
        enqueue(study, todo, measurement)
    return len(todo)


def work(
    study: optuna.Study,
    objective: Objective,
    target: int,
    timeout: float | None = None,
    callbacks: list[Callable[..., None]] | None = None,
    seed: int = 0,
) -> None:
    """Optimise until ``target`` distinct schedules are measured at the objective's default
    measurement, filling from the unreached schedules in ``seed``'s order (see the module)."""
    measurement = objective.default
    target = min(target, objective.cfg.space.size())
    deadline = None if timeout is None else time.monotonic() + timeout
    stop = [_stop_at(target, measurement), *(callbacks or [])]
    rng = random.Random(seed)
    n, filled = MAX_DRAWS_PER_TARGET * (target - finished(study, measurement)), False
    while n > 0:
        before = finished(study, measurement)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        study.optimize(objective, n_trials=n, timeout=left, catch=(Exception,), callbacks=stop)
        if deadline is not None and time.monotonic() >= deadline:
            return
        if filled and finished(study, measurement) == before:
            return  # what was queued failed, or is another worker's now
        n, filled = _fill(study, objective, target - finished(study, measurement), rng), True


def measure_schedules(
    study: optuna.Study,
    objective: Objective,
    schedules: list[str],
    measurement: str,
    timeout: float | None = None,
    callbacks: list[Callable[..., None]] | None = None,
) -> None:
    """Measure each schedule (canonical text) at ``measurement`` unless it already was: each is
    enqueued with the parameters that draw it, tagged with the measurement, and run by
    ``objective``. Resumable: what was measured or queued by an interrupted run is not queued
    again. Optuna runs queued trials oldest first, so trials queued before these (a grid's rest)
    run first, each at its own measurement."""
    space = objective.cfg.space
    taken = _taken(study, space, measurement, objective.default, objective.retry_failed)
    todo = [text for text in dict.fromkeys(schedules) if text not in taken]  # a space of any size: nothing listed
    enqueue(study, [(space.params_of(Schedule.parse(text)), text) for text in todo], measurement)
    waiting = [record.TrialRecord.read(t) for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))]
    wanted = set(schedules)
    # the last waiting trial that measures a wanted schedule at ``measurement``, tagged or (a grid's) not
    mine = [i for i, r in enumerate(waiting)
            if (r.measurement or objective.default) == measurement and _schedule_of(r, space) in wanted]
    n = mine[-1] + 1 if mine else 0
    if n:
        study.optimize(objective, n_trials=n, timeout=timeout, catch=(Exception,), callbacks=callbacks or [])
