"""The objective: one trial turns a schedule into (quality, cost), measured once.

A trial draws a schedule, counts its cost (:mod:`.costs`), has a :class:`~.measures.Measure`
train or score each of its seeds (:mod:`.replicates`), and returns (quality, cost). A schedule already measured under the same measurement is not measured again: the
trial copies the stored result and says so (``reused_from``). A sampled draw of a schedule another
worker is measuring right now is skipped (pruned), so its worker draws another; a queued trial,
whose schedule was chosen for it, waits for the result instead (:mod:`.reuse`). A trial that
raises is recorded as failed with its reason and who failed it (see :mod:`spanmix.search.record`).
"""

from __future__ import annotations

import logging
import os
import socket

import optuna
from optuna.trial import Trial

from spanmix.search import record
from spanmix.search.config import StudyConfig
from spanmix.search.costs import REPORTED, cost_of
from spanmix.search.measures import Measure, StandaloneMeasure, digest
from spanmix.search.replicates import measure_seeds
from spanmix.search.reuse import measured_before, remembered_failure
from spanmix.space import ConfigError

log = logging.getLogger("spanmix.search")


class ScheduleFailed(RuntimeError):
    """The schedule already failed under this measurement; it is not trained again."""


class Objective:
    """``(trial) -> (quality, cost)`` for a :class:`StudyConfig`.

    A trial is measured by the measure its queued ``measurement`` names; a trial drawn by the
    sampler (or queued by a grid without one) by the first of ``measures``, the one the search
    measures at.
    """

    def __init__(self, cfg: StudyConfig, *measures: Measure, wait_seconds: float = 1.0, retry_failed: bool = False) -> None:
        self.cfg, self.wait_seconds, self.retry_failed = cfg, wait_seconds, retry_failed
        self.measures = {m.name: m for m in (measures or (StandaloneMeasure(cfg),))}
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
        failed = None if self.retry_failed else remembered_failure(trial, key)
        if failed is not None:
            reason = (f"not trained again: trial {failed.number} failed under the same measurement "
                      f"({failed.user_attrs.get(record.FAILURE)}); --retry-failed trains it again")
            record.fail(trial, reason, record.FAILED_BY_REMEMBERED)
            raise ScheduleFailed(reason)
        prior = measured_before(trial, key, self.measures[measurement], schedule, self.wait_seconds)
        if prior is not None:
            log.info("trial %d: %s already measured in trial %d; reusing", trial.number, schedule.text, prior.number)
            record.reuse(trial, prior)
            return prior.values[0], prior.values[1]
        cost, ratio, report = cost_of(cfg, schedule)
        record.costed(trial, ratio, {k: report[k] for k in REPORTED}, None if cfg.budget is None else ratio - cfg.budget)
        try:
            result = measure_seeds(trial, self.measures[measurement], schedule, key, self.wait_seconds)
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
