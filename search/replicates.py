"""One measurement's training seeds: each stored as it finishes, the seeds another measurement
already trained taken instead of trained again, and the seeds of a schedule shared between workers:
a worker that draws a schedule another is measuring trains a seed that one has not begun, for it
(the owner/helper protocol, whose bookkeeping is :mod:`spanmix.search.sharing`)."""

from __future__ import annotations

import logging
import time

import optuna
from optuna.trial import Trial, TrialState

from spanmix.proxies.train import ProxyResult
from spanmix.search import record, sharing
from spanmix.search.logs import stable_enough
from spanmix.search.measures import Measure
from spanmix.space import Schedule

log = logging.getLogger("spanmix.search")


def measure_seeds(trial: Trial, measure: Measure, schedule: Schedule, key: str, wait_seconds: float) -> ProxyResult:
    """Every seed of the measurement that this trial (or the killed attempt it retries) has
    not finished, each stored as it finishes. A seed another worker claimed to train for this
    trial (:mod:`spanmix.search.sharing`) is left to it and taken when it is done; if that
    worker lets go of it or dies, this trial trains it. The result holds the mean scores and
    the summed tokens and seconds of what was trained for this attempt."""
    attrs = trial.user_attrs
    done, curves, resamples = record.seed_scores_of(attrs), record.seed_curves_of(attrs), record.seed_resamples_of(attrs)
    tokens, seconds, precisions = 0, 0.0, []

    def store(r: int, scores: dict[str, float], curve: dict[int, dict[str, float]], trained: int, took: float,
              precision: str, resampled: dict[str, list[float]]) -> None:
        nonlocal tokens, seconds
        done[r], tokens, seconds = scores, tokens + trained, seconds + took
        precisions.append(precision)
        if curve:
            curves[r] = curve
        if resampled:
            resamples[r] = resampled
        record.seeds_done(trial, done, curves, resamples)

    def train(r: int) -> None:
        run = measure(schedule, r)
        store(r, run.scores, run.curve, run.tokens_seen, run.train_seconds, run.precision, run.resamples)

    def take_help() -> None:
        for r, h in sharing.finished(trial.study.get_trials(deepcopy=False), key).items():
            if r not in done and r < measure.replicates:
                store(r, h["scores"], {int(s): v for s, v in h["curve"].items()}, h["tokens_seen"], h["train_seconds"],
                      h["precision"], h.get("resamples") or {})

    for r, (other, scores, curve, precision, resampled) in same_training(trial, measure, schedule).items():
        if r not in done:
            log.info("trial %d: seed %d of %s is trial %d's (the same training)", trial.number, r, schedule.text, other)
            store(r, scores, curve, 0, 0.0, precision, resampled)
    deferred: set[int] = set()
    for r in range(measure.replicates):
        take_help()
        if r in done:
            continue
        record.seed_started(trial, r)
        if r in sharing.claims(trial.study.get_trials(deepcopy=False), key, trial.number):
            deferred.add(r)  # a helper claimed it first: its result is taken below
            continue
        train(r)
    while deferred - set(done):
        take_help()
        live = sharing.claims(trial.study.get_trials(deepcopy=False), key, trial.number)
        for r in sorted(deferred - set(done) - set(live)):  # let go of, or its helper died
            train(r)
        if deferred - set(done):
            with stable_enough():  # a dead helper's claim dies with its trial
                optuna.storages.fail_stale_trials(trial.study)
            time.sleep(wait_seconds)
    common = set.intersection(*(set(s) for s in done.values()))
    scores = {k: sum(s[k] for s in done.values()) / len(done) for k in sorted(common)}
    # a retry of an attempt killed after its last seed trains nothing, and keeps its precision
    precision = precisions[-1] if precisions else trial.user_attrs.get(record.PRECISION, "unknown")
    return ProxyResult(schedule=schedule.text, scores=scores, cost={}, tokens_seen=tokens,
                       steps=0, train_seconds=seconds,
                       tokens_per_second=tokens / seconds if seconds else 0.0, seed=0, precision=precision)


def same_training(trial: Trial, measure: Measure, schedule: Schedule
                   ) -> dict[int, tuple[int, dict[str, float], dict[int, dict[str, float]], str, dict[str, list[float]]]]:
    """Seeds below ``measure.replicates`` that finished trials of another measurement trained
    exactly as this one would (same schedule, same training): seed -> (trial, scores, curve,
    precision, resampled scores)."""
    if measure.training is None:
        return {}
    found = {}
    for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        r = record.TrialRecord.read(t)
        if r.training == measure.training and r.schedule == schedule.text and r.reused_from is None:
            curves = record.seed_curves_of(t.user_attrs)
            for seed, scores in record.seed_scores_of(t.user_attrs).items():
                if seed < measure.replicates:
                    found.setdefault(seed, (t.number, scores, curves.get(seed, {}), r.precision or "unknown",
                                            r.seed_resamples.get(seed, {})))
    return found


def help_owner(trial: Trial, owner: int, key: str, measure: Measure, schedule: Schedule) -> int | None:
    """Train a seed of ``key`` that trial ``owner`` is measuring and has not begun, for it;
    the seed trained, or None when none was left to take."""
    trials = trial.study.get_trials(deepcopy=False)
    seed = sharing.free_seed(trials, trials[owner], key, measure.replicates)
    if seed is None:
        return None
    record.claim(trial, key, seed)
    if not sharing.still_mine(trial.study, trial, owner, key, seed):
        return None
    log.info("trial %d: training seed %d of %s for trial %d", trial.number, seed, schedule.text, owner)
    run = measure(schedule, seed)
    record.helped(trial, key, seed, {"scores": run.scores, "curve": {str(s): v for s, v in run.curve.items()},
                                     "tokens_seen": run.tokens_seen, "train_seconds": run.train_seconds,
                                     "precision": run.precision, "resamples": run.resamples})
    return seed
