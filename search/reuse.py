"""A schedule is measured once per measurement: a finished trial with the same key is reused, one
being measured by another worker is waited for (a queued trial) or skipped for another draw (a
sampled one), and one whose measuring raised is not tried again (a remembered failure)."""

from __future__ import annotations

import time

import optuna
from optuna.trial import FrozenTrial, Trial, TrialState

from spanmix.search import record
from spanmix.search.logs import stable_enough
from spanmix.search.measures import Measure
from spanmix.search.replicates import help_owner
from spanmix.space import Schedule

# how long a trial waits for an earlier one to name its key (drawing a schedule takes milliseconds)
DRAW_WAIT_SECONDS = 0.05


def remembered_failure(trial: Trial, key: str) -> FrozenTrial | None:
    """An earlier trial in which measuring this key raised (a dead worker's trial does not
    count: that was not the schedule's fault)."""
    for t in trial.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        r = record.TrialRecord.read(t)
        if r.key == key and r.failed_by == record.FAILED_BY_ERROR:
            return t
    return None


def measured_before(trial: Trial, key: str, measure: Measure, schedule: Schedule, wait_seconds: float) -> FrozenTrial | None:
    """A finished trial with this key, or None when this trial should measure it.

    When another worker is measuring the key, a sampled trial is skipped (pruned) so that its
    worker draws another schedule; a queued trial, whose schedule was chosen for it, waits.
    Of two trials that draw one key at once, the earlier-numbered measures it: each names its
    key before it looks, and a trial does not decide while an earlier one has not named its
    key yet (otherwise each could look before the other named it, and both would train).
    """
    study = trial.study
    helped = False
    while True:
        trials = study.get_trials(deepcopy=False)
        queued = record.is_queued(trials[trial.number])
        others = [(t, record.TrialRecord.read(t)) for t in trials if t.number != trial.number]
        # an earlier trial still drawing may yet name this key, and it would not wait for this one
        drawing = [t for t, r in others if t.state == TrialState.RUNNING and t.number < trial.number and r.key is None]
        others = [(t, r) for t, r in others if r.key == key]
        done = [t for t, r in others if r.complete and r.reused_from is None]
        if done:
            return done[0]
        running = [t for t, _ in others if t.state == TrialState.RUNNING and t.number < trial.number]
        if not running and drawing:
            with stable_enough():
                optuna.storages.fail_stale_trials(study)
            time.sleep(DRAW_WAIT_SECONDS)
            continue
        if not running:
            return None
        if not helped:  # rather than wait or draw again, train a seed the measuring trial has not begun
            helped = True
            seed = help_owner(trial, running[0].number, key, measure, schedule)
            if seed is not None and not queued:
                reason = f"helped trial {running[0].number}: trained its seed {seed}"
                record.skip(trial, reason)
                raise optuna.TrialPruned(reason)
            if seed is not None:
                continue  # a queued trial then waits for the result, as before
        if not queued:
            reason = f"being measured in trial {running[0].number}"
            record.skip(trial, reason)
            time.sleep(wait_seconds)  # a worker whose draws all collide must not spin
            raise optuna.TrialPruned(reason)
        with stable_enough():  # a dead worker must not hang this one
            optuna.storages.fail_stale_trials(study)
        time.sleep(wait_seconds)
