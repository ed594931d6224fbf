"""The objective: one trial turns a schedule into (quality, cost), measured once.

A trial draws a schedule, counts its cost, has a :class:`Measure` train or score it, and returns
(quality, cost). A schedule already measured under the same measurement is not measured again: the
trial copies the stored result and says so (``reused_from``). A sampled draw of a schedule another
worker is measuring right now is skipped (pruned), so its worker draws another; a queued trial,
whose schedule was chosen for it, waits for the result instead. A trial that raises is recorded as
failed with its reason and who failed it (see :mod:`spanmix.search.record`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial, Trial, TrialState

from spanmix.proxies.train import ProxyResult
from spanmix.search import record, sharing
from spanmix.search.config import StudyConfig
from spanmix.search.logs import stable_enough
from spanmix.space import ConfigError, Layer, Schedule

log = logging.getLogger("spanmix.search")
STANDALONE = record.STANDALONE
# the fractions of its steps at which a standalone training is also scored (its learning curve)
CURVE = (0.25, 0.5)
# how long a trial waits for an earlier one to name its key (drawing a schedule takes milliseconds)
DRAW_WAIT_SECONDS = 0.05


class ScheduleFailed(RuntimeError):
    """The schedule already failed under this measurement; it is not trained again."""


class Measure(Protocol):
    """How a trial turns a schedule into scores. ``name`` labels the measurement in each trial
    (``standalone``, ``standalone-4x``, ``supernet``); ``key`` is everything that makes two
    measurements of one schedule interchangeable; ``replicates`` is how many runs that differ only
    in their seed make one measurement (1 where the measurement has no seed to vary); ``training``
    names one seed's training, so a seed trained for another measurement with the same training
    (a calibration's, a larger seed count's) is taken instead of trained again (None: never)."""

    name: str
    key: dict[str, Any]
    replicates: int
    training: str | None

    def __call__(self, schedule: Schedule, replicate: int = 0) -> ProxyResult: ...


class Standalone:
    """Train the schedule's own proxy from scratch for ``budget`` times ``train.steps`` steps, in
    ``precision`` (the study's pinned one; None: resolve ``train.precision`` here), once per
    training seed of the study (``study.seeds``)."""

    def __init__(self, cfg: StudyConfig, budget: int = 1, precision: str | None = None, seeds: int | None = None,
                 name: str | None = None) -> None:
        self.cfg, self.train = cfg, replace(cfg.train, steps=cfg.train.steps * budget)
        self.name = name or (STANDALONE if budget == 1 else f"{STANDALONE}-{budget}x")
        self.replicates = seeds or cfg.seeds
        # the learning curve comes with every training: scoring on the way does not change it
        self.curve_at = tuple(round(f * self.train.steps) for f in CURVE)
        # one seed keeps the key it always had, so studies made before seeds keep their results
        self.key = {**cfg.measurement_key(), "train": self.train.to_dict(),
                    **({"seeds": self.replicates} if self.replicates > 1 else {})}
        if precision is not None:  # after the key: a pinned precision does not change what is measured
            self.train = replace(self.train, precision=precision)
        self.training: str | None = digest({**cfg.measurement_key(), "train": self.train.to_dict()})

    def __call__(self, schedule: Schedule, replicate: int = 0) -> ProxyResult:
        return self.measure(schedule, replicate)

    def measure(self, schedule: Schedule, replicate: int, until: int | None = None,
                checkpoint_dir: Path | None = None, start_from: Path | None = None) -> ProxyResult:
        """Replicate ``r`` trains with seed ``train.seed + r`` on its own stream of batches (on a
        checkpoint: heals with them, or scores it as it is); ``until``, ``checkpoint_dir`` and
        ``start_from`` stop it at a step, save it there and continue it."""
        return self.cfg.subject.measure(schedule, self.cfg.data, self.train, self.train.seed + replicate, replicate,
                                        self.curve_at, until, checkpoint_dir, start_from)


def digest(key: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able key."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


@functools.lru_cache(maxsize=32)
def _full_latency(cfg: StudyConfig, n_layers: int) -> float:
    return cfg.subject.latency(Schedule((Layer("full"),) * n_layers), cfg.data.seq_len)


def cost_of(cfg: StudyConfig, schedule: Schedule) -> tuple[float, float, dict[str, Any]]:
    """(cost, cost relative to the all-full schedule, the counted report)."""
    report = cfg.count(schedule)
    if cfg.cost == "latency":
        ms = cfg.subject.latency(schedule, cfg.data.seq_len)
        return ms, ms / _full_latency(cfg, len(schedule)), report.to_dict()
    value, full = {
        "flops": (report.total, report.full_total),
        "prefill_flops": (report.total, report.full_total),
        "decode_flops": (report.decode, report.full_decode),
        "attention_flops": (report.attention, report.full_attention),
        "kv_cache": (report.kv_cache_bytes, report.full_kv_cache_bytes),
    }[cfg.cost]
    return float(value), value / full, report.to_dict()


# the part of the counted report a trial keeps (the per-layer table is recomputed on demand)
REPORTED = ("total", "attention", "decode", "kv_cache_bytes", "ratio", "attention_ratio", "decode_ratio", "kv_ratio")


class Objective:
    """``(trial) -> (quality, cost)`` for a :class:`StudyConfig`.

    A trial is measured by the measure its queued ``measurement`` names; a trial drawn by the
    sampler (or queued by a grid without one) by the first of ``measures``, the one the search
    measures at.
    """

    def __init__(self, cfg: StudyConfig, *measures: Measure, wait_seconds: float = 1.0, retry_failed: bool = False) -> None:
        self.cfg, self.wait_seconds, self.retry_failed = cfg, wait_seconds, retry_failed
        self.measures = {m.name: m for m in (measures or (Standalone(cfg),))}
        self.default = next(iter(self.measures))
        self.config_hashes = {
            # "fidelity": the measurement's name under its 0.1 key, so keys of older studies still match
            name: digest({"fidelity": name, **m.key})
            for name, m in self.measures.items()
        }

    def __call__(self, trial: Trial) -> tuple[float, float]:
        try:
            return self._measure(trial)
        except (optuna.TrialPruned, ScheduleFailed):
            raise
        except Exception as err:
            if record.FAILED_BY not in trial.user_attrs:  # not the schedule's fault: a later draw retries it
                self._fail(trial, err, record.FAILED_BY_SPANMIX)
            raise

    @staticmethod
    def _fail(trial: Trial, err: Exception, by: str) -> None:
        """Record and log why ``trial`` failed: Optuna keeps no reason, and the study report,
        ``spanmix show`` and the retry rules read it from the record."""
        record.fail(trial, f"{type(err).__name__}: {err}", by)
        schedule = trial.user_attrs.get(record.SCHEDULE, "?")
        log.warning("trial %d: %s failed: %s: %s", trial.number, schedule, type(err).__name__, err)

    def _measure(self, trial: Trial) -> tuple[float, float]:
        cfg = self.cfg
        record.start(trial, f"{socket.gethostname()}:{os.getpid()}")
        measurement = record.measurement_of(trial.user_attrs, self.default)
        if measurement not in self.measures:
            raise ConfigError(f"trial {trial.number} asks for measurement {measurement!r}; this run measures "
                              f"{sorted(self.measures)}")
        schedule = cfg.space.suggest(trial).canonical(cfg.data.seq_len)
        key = f"{schedule.hash}-{self.config_hashes[measurement]}"
        record.drawn(trial, schedule.text, measurement, key, self.measures[measurement].training)
        failed = None if self.retry_failed else self._failed(trial, key)
        if failed is not None:
            reason = (f"not trained again: trial {failed.number} failed under the same measurement "
                      f"({failed.user_attrs.get(record.FAILURE)}); --retry-failed trains it again")
            record.fail(trial, reason, record.FAILED_BY_REMEMBERED)
            raise ScheduleFailed(reason)
        prior = self._measured(trial, key, self.measures[measurement], schedule)
        if prior is not None:
            log.info("trial %d: %s already measured in trial %d; reusing", trial.number, schedule.text, prior.number)
            record.reuse(trial, prior)
            return prior.values[0], prior.values[1]
        cost, ratio, report = cost_of(cfg, schedule)
        record.costed(trial, ratio, {k: report[k] for k in REPORTED}, None if cfg.budget is None else ratio - cfg.budget)
        try:
            result = self._replicates(trial, self.measures[measurement], schedule, key)
        except Exception as err:
            self._fail(trial, err, record.FAILED_BY_ERROR)
            raise
        if cfg.quality not in result.scores:
            raise ConfigError(f"study.quality {cfg.quality!r} is not among the scores {sorted(result.scores)}")
        record.measured(trial, result.scores, result.tokens_seen, result.train_seconds, result.tokens_per_second,
                        result.precision)
        log.info("trial %d: %s %s=%.4f cost ratio %.1f%% (%s, %s, %.1f s)", trial.number, schedule.text,
                 cfg.quality, result.scores[cfg.quality], 100 * ratio, measurement, result.precision, result.train_seconds)
        return result.scores[cfg.quality], cost

    def _replicates(self, trial: Trial, measure: Measure, schedule: Schedule, key: str) -> ProxyResult:
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

        for r, (other, scores, curve, precision, resampled) in self._same_training(trial, measure, schedule).items():
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
                time.sleep(self.wait_seconds)
        common = set.intersection(*(set(s) for s in done.values()))
        scores = {k: sum(s[k] for s in done.values()) / len(done) for k in sorted(common)}
        # a retry of an attempt killed after its last seed trains nothing, and keeps its precision
        precision = precisions[-1] if precisions else trial.user_attrs.get(record.PRECISION, "unknown")
        return ProxyResult(schedule=schedule.text, scores=scores, cost={}, tokens_seen=tokens,
                           steps=0, train_seconds=seconds,
                           tokens_per_second=tokens / seconds if seconds else 0.0, seed=0, precision=precision)

    @staticmethod
    def _same_training(trial: Trial, measure: Measure, schedule: Schedule
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

    def _help(self, trial: Trial, owner: int, key: str, measure: Measure, schedule: Schedule) -> int | None:
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

    @staticmethod
    def _failed(trial: Trial, key: str) -> FrozenTrial | None:
        """An earlier trial in which measuring this key raised (a dead worker's trial does not
        count: that was not the schedule's fault)."""
        for t in trial.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            r = record.TrialRecord.read(t)
            if r.key == key and r.failed_by == record.FAILED_BY_ERROR:
                return t
        return None

    def _measured(self, trial: Trial, key: str, measure: Measure, schedule: Schedule) -> FrozenTrial | None:
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
                seed = self._help(trial, running[0].number, key, measure, schedule)
                if seed is not None and not queued:
                    reason = f"helped trial {running[0].number}: trained its seed {seed}"
                    record.skip(trial, reason)
                    raise optuna.TrialPruned(reason)
                if seed is not None:
                    continue  # a queued trial then waits for the result, as before
            if not queued:
                reason = f"being measured in trial {running[0].number}"
                record.skip(trial, reason)
                time.sleep(self.wait_seconds)  # a worker whose draws all collide must not spin
                raise optuna.TrialPruned(reason)
            with stable_enough():  # a dead worker must not hang this one
                optuna.storages.fail_stale_trials(study)
            time.sleep(self.wait_seconds)
