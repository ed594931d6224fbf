"""What a study stores, named once: every trial and study attribute spanmix writes, and the typed
record a stored trial is read into.

Optuna keeps a trial's parameters and values; everything else spanmix knows about a trial (its
schedule, how it was measured, its scores, why it failed) lives in the trial's user attributes, and
the study's configuration in the study's. This module is the only place those keys are spelled: the
objective, the queue, the storage and every reader (``show``, the dashboard, the CSV, the
benchmarks) write through its functions and read through :class:`TrialRecord`, which parses a
trial's schedule once.

Studies written before the per-trial measurement was renamed hold it under ``fidelity``; it is
read from there too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import Any, Mapping, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from spanmix.space import Schedule

# --- trial attributes ------------------------------------------------------------------------------------
SCHEDULE = "schedule"  # canonical text of the schedule measured
MEASUREMENT = "measurement"  # how it was measured: standalone, standalone-4x, supernet, ...
LEGACY_MEASUREMENT = "fidelity"  # the same, as studies written by spanmix 0.1 name it
KEY = "key"  # schedule hash + measurement hash: equal keys are interchangeable measurements
TRAINING = "training"  # hash of one seed's training: equal ones trained alike, whatever the measurement
WORKER = "worker"  # host:pid of the process measuring it
FAILURE = "failure"  # why it failed, one line
FAILED_BY = "failed_by"  # who failed it (see FAILED_BY_* below)
REUSED_FROM = "reused_from"  # the trial whose measurement this one copies
SKIPPED = "skipped"  # why a sampled draw was skipped (pruned)
COST_RATIO, COST_REPORT, CONSTRAINT = "cost_ratio", "cost_report", "constraint"
# study attributes: the Hugging Face model_type of the model under search (None: a proxy)
MODEL_TYPE = "model_type"
# the name of the budget constraint among a trial's Optuna constraints
BUDGET = "budget"
SCORES, TOKENS_SEEN, TRAIN_SECONDS, TOKENS_PER_SECOND = "scores", "tokens_seen", "train_seconds", "tokens_per_second"
PRECISION = "precision"  # what it trained (or was scored) in: fp32 or bf16
SEED_SCORES = "seed_scores"  # each training seed's scores, by replicate ("0", "1", ...), as each finishes
SEED_CURVES = "seed_curves"  # each seed's scores on the way, by replicate then step: its learning curve
# each seed's scores on bootstrap resamples of the validation sequences, by replicate then score, where
# those are the scores' only noise (a checkpoint scored as it is); resample i is the same for every trial
SEED_RESAMPLES = "seed_resamples"
SEEDS_STARTED = "seeds_started"  # the training seeds this attempt began itself, as each begins
HELPING = "helping"  # a seed this trial trains for another trial measuring the same key: {"key", "seed"}
HELPED = "helped"  # what it trained for it: {"key", "seed", "scores", "curve", "tokens_seen", "train_seconds"}

# what a trial that reuses another's measurement copies from it
MEASURED = (COST_RATIO, COST_REPORT, CONSTRAINT, SCORES, TOKENS_SEEN, TRAIN_SECONDS, TOKENS_PER_SECOND, PRECISION,
            SEED_SCORES, SEED_CURVES, SEED_RESAMPLES)
# what describes one attempt, not the schedule: a retried trial starts without them
ATTEMPT = (FAILURE, FAILED_BY, WORKER, SEEDS_STARTED)

FAILED_BY_ERROR = "error"  # measuring the schedule raised: remembered, not trained again
FAILED_BY_REMEMBERED = "remembered"  # not trained: an earlier trial failed under the same key
FAILED_BY_SPANMIX = "spanmix"  # an error outside the measurement: the schedule is drawn again
FAILED_BY_HEARTBEAT = "heartbeat"  # its worker stopped beating: the schedule is retried

# the measurement of a schedule's own proxy trained from scratch at the study's budget
STANDALONE = "standalone"
# the measurement of a checkpoint scored as it is, beside its healed measurements (shared healing)
ZERO_SHOT = "zero-shot"

# --- study attributes ------------------------------------------------------------------------------------
CONFIG = "spanmix_config"  # the StudyConfig as a dict
SEARCHED = "spanmix_measurement"  # the measurement the study's strategy searches at
PINNED_PRECISION = "spanmix_precision"  # the precision every trial of the study trains in
STAGES = "spanmix_stage_seconds"  # wall seconds by stage of a strategy that has stages
WEIGHTS = "spanmix_supernet"  # where shared weights were trained, and how fast


class TrialLike(Protocol):
    """A live trial (``optuna.Trial``) or anything else spanmix writes attributes to."""

    @property
    def user_attrs(self) -> dict[str, Any]: ...

    def set_user_attr(self, key: str, value: Any) -> None: ...


# --- writing ----------------------------------------------------------------------------------------------
def start(trial: TrialLike, worker: str) -> None:
    """First thing a trial records, so that a heartbeat failure can name its worker."""
    trial.set_user_attr(WORKER, worker)


def drawn(trial: TrialLike, schedule: str, measurement: str, key: str, training: str | None = None) -> None:
    trial.set_user_attr(SCHEDULE, schedule)
    trial.set_user_attr(MEASUREMENT, measurement)
    trial.set_user_attr(KEY, key)
    if training is not None:
        trial.set_user_attr(TRAINING, training)


def fail(trial: TrialLike, reason: str, by: str) -> None:
    trial.set_user_attr(FAILURE, reason)
    trial.set_user_attr(FAILED_BY, by)


def skip(trial: TrialLike, reason: str) -> None:
    trial.set_user_attr(SKIPPED, reason)


def reuse(trial: optuna.Trial, prior: FrozenTrial) -> None:
    """Copy ``prior``'s measurement, its cost and its budget constraint included: a latency is
    measured, and measuring it again would differ."""
    trial.set_user_attr(REUSED_FROM, prior.number)
    for attr in MEASURED:
        trial.set_user_attr(attr, prior.user_attrs.get(attr))
    for key, value in prior.constraints.items():
        _constrain(trial, key, value)


def costed(trial: optuna.Trial, ratio: float, report: dict[str, Any], over_budget: float | None) -> None:
    """The trial's counted cost; ``over_budget`` (its cost ratio less the budget; None: the study
    has no budget) becomes Optuna's constraint, which the samplers and the front read."""
    trial.set_user_attr(COST_RATIO, ratio)
    trial.set_user_attr(COST_REPORT, report)
    trial.set_user_attr(CONSTRAINT, [0.0 if over_budget is None else over_budget])
    if over_budget is not None:
        _constrain(trial, BUDGET, over_budget)


def _constrain(trial: optuna.Trial, key: str, value: float) -> None:
    if key not in trial.constraints:  # a retried attempt keeps what its first attempt set
        trial.set_constraint(key, value)


def measured(trial: TrialLike, scores: dict[str, float], tokens_seen: int, train_seconds: float,
             tokens_per_second: float, precision: str) -> None:
    trial.set_user_attr(PRECISION, precision)
    trial.set_user_attr(SCORES, scores)
    trial.set_user_attr(TOKENS_SEEN, tokens_seen)
    trial.set_user_attr(TRAIN_SECONDS, train_seconds)
    trial.set_user_attr(TOKENS_PER_SECOND, tokens_per_second)


def seeds_done(trial: TrialLike, by_replicate: dict[int, dict[str, float]],
               curves: dict[int, dict[int, dict[str, float]]],
               resamples: dict[int, dict[str, list[float]]] | None = None) -> None:
    """Each finished training seed's scores, learning curve and resampled scores, stored as soon as
    it finishes: a retry of a killed trial (which keeps its user attributes) trains only the seeds
    that are missing. Resampled scores are kept to 6 significant digits, far below their spread."""
    trial.set_user_attr(SEED_SCORES, {str(r): s for r, s in sorted(by_replicate.items())})
    if curves:
        trial.set_user_attr(SEED_CURVES, {str(r): {str(step): s for step, s in sorted(c.items())}
                                          for r, c in sorted(curves.items())})
    if resamples:
        trial.set_user_attr(SEED_RESAMPLES, {str(r): {k: [float(f"{v:.6g}") for v in vs] for k, vs in sorted(s.items())}
                                             for r, s in sorted(resamples.items())})


def seed_started(trial: TrialLike, seed: int) -> None:
    """This attempt begins training ``seed`` itself (a helper that claimed it too then lets go)."""
    trial.set_user_attr(SEEDS_STARTED, sorted({*trial.user_attrs.get(SEEDS_STARTED, []), seed}))


def claim(trial: TrialLike, key: str, seed: int | None) -> None:
    """This trial trains ``seed`` of ``key`` for the trial measuring it (None: lets go of it)."""
    trial.set_user_attr(HELPING, None if seed is None else {"key": key, "seed": seed})


def helped(trial: TrialLike, key: str, seed: int, result: dict[str, Any]) -> None:
    trial.set_user_attr(HELPED, {"key": key, "seed": seed, **result})


def started_of(attrs: Mapping[str, Any]) -> set[int]:
    return set(attrs.get(SEEDS_STARTED) or [])


def claim_of(trial: FrozenTrial) -> tuple[str, int] | None:
    """The (key, seed) a running trial is training for another, until it has finished it."""
    held = trial.user_attrs.get(HELPING)
    if trial.state != TrialState.RUNNING or not held or HELPED in trial.user_attrs:
        return None
    return held["key"], held["seed"]


def help_of(trial: FrozenTrial) -> dict[str, Any] | None:
    """What a trial trained for another: key, seed, scores, curve, tokens and seconds."""
    return trial.user_attrs.get(HELPED)


def seed_curves_of(attrs: Mapping[str, Any]) -> dict[int, dict[int, dict[str, float]]]:
    """Each finished seed's learning curve, by replicate then step."""
    return {int(r): {int(step): s for step, s in c.items()} for r, c in (attrs.get(SEED_CURVES) or {}).items()}


def seed_resamples_of(attrs: Mapping[str, Any]) -> dict[int, dict[str, list[float]]]:
    """Each finished seed's scores on resamples of the validation sequences, by replicate then score."""
    return {int(r): s for r, s in (attrs.get(SEED_RESAMPLES) or {}).items()}


def seed_scores_of(attrs: Mapping[str, Any]) -> dict[int, dict[str, float]]:
    """The training seeds a trial (or the attempt it retries) finished, by replicate."""
    return {int(r): s for r, s in (attrs.get(SEED_SCORES) or {}).items()}


def queued(measurement: str, schedule: str) -> dict[str, Any]:
    """The user attributes a trial is enqueued with: what to measure, and how."""
    return {MEASUREMENT: measurement, SCHEDULE: schedule}


def stale(worker_attrs: Mapping[str, Any], grace_seconds: float) -> dict[str, Any]:
    """What a trial whose worker stopped beating records (Optuna fails it without a word)."""
    worker = worker_attrs.get(WORKER, "its worker")
    return {FAILURE: f"{worker} stopped beating for more than {grace_seconds} s (killed or hung); the schedule is "
                     "retried", FAILED_BY: FAILED_BY_HEARTBEAT}


def retried(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A retry's user attributes: the schedule's, without the failed attempt's."""
    return {k: v for k, v in attrs.items() if k not in ATTEMPT}


# Optuna's own retry bookkeeping (``RetryFailedTrialCallback`` writes and reads these system attributes)
FAILED_TRIAL, RETRY_HISTORY = "failed_trial", "retry_history"


def retry_bookkeeping(trial: FrozenTrial) -> dict[str, Any]:
    """The system attributes of a retry of ``trial``, as Optuna's retry callback writes them: the
    first failed trial, and every trial of the history so far."""
    history = [*trial.system_attrs.get(RETRY_HISTORY, []), trial.number]
    return {**trial.system_attrs, FAILED_TRIAL: trial.system_attrs.get(FAILED_TRIAL, trial.number), RETRY_HISTORY: history}


# --- reading ----------------------------------------------------------------------------------------------
def pinned_precision(study_attrs: Mapping[str, Any]) -> str | None:
    """The precision a study pinned when it was created; None for a study written before
    precisions were pinned (its workers resolve their own, as they did then)."""
    return study_attrs.get(PINNED_PRECISION)


def measurement_of(attrs: Mapping[str, Any], default: str | None = None) -> str | None:
    """The measurement a trial was made (or queued) at, under the current key or the legacy one."""
    return attrs.get(MEASUREMENT, attrs.get(LEGACY_MEASUREMENT, default))


def searched(study_attrs: Mapping[str, Any], measurements: list[str]) -> str:
    """The measurement a study searches at: what its strategy recorded, or for a study written
    before that was recorded, the measurement most of its finished trials hold."""
    if SEARCHED in study_attrs:
        return study_attrs[SEARCHED]
    return max(sorted(set(measurements)), key=measurements.count) if measurements else STANDALONE


def is_queued(trial: FrozenTrial) -> bool:
    """Whether the trial was enqueued with its parameters chosen for it (Optuna's own system
    attribute says so; a live ``Trial`` no longer shows it, its stored ``FrozenTrial`` does)."""
    return "fixed_params" in trial.system_attrs


def queued_params(trial: FrozenTrial) -> dict[str, Any] | None:
    """The parameters a queued trial was enqueued with, or a waiting retry's; None for a sampled
    trial that has not drawn yet."""
    if is_queued(trial):
        return trial.system_attrs["fixed_params"]
    if trial.state == TrialState.WAITING:
        return trial.params
    return None


@dataclass(frozen=True)
class Point:
    """A finished trial as the front, the fidelity report and the dashboard see it."""

    number: int
    schedule: str
    quality: float
    cost: float
    cost_ratio: float
    feasible: bool
    reused_from: int | None
    scores: dict[str, float]
    measurement: str = STANDALONE
    seed_scores: tuple[dict[str, float], ...] = ()
    resampled: dict[str, list[float]] = field(default_factory=dict, compare=False)
    seed_ids: tuple[int, ...] = ()  # the replicate of each of seed_scores (default 0, 1, ...)

    @cached_property
    def layers(self) -> Schedule:
        """The schedule, parsed once."""
        return Schedule.parse(self.schedule)

    def samples(self, score: str) -> list[float]:
        """``score`` of each training seed (empty for a trial that kept none: one seed of a
        study made before seeds were recorded)."""
        return [s[score] for s in self.seed_scores if score in s]

    def seed_values(self, score: str) -> dict[int, float]:
        """``score`` by training seed (replicate): seed k of every schedule of a study starts from the
        same weights and reads the same batches, so two schedules' values of one seed are paired."""
        ids = self.seed_ids or range(len(self.seed_scores))
        return {k: s[score] for k, s in zip(ids, self.seed_scores) if score in s}

    def resamples(self, score: str) -> list[float]:
        """``score`` on each bootstrap resample of the validation sequences (empty unless the
        trial's one seed kept them: see :data:`SEED_RESAMPLES`)."""
        return self.resampled.get(score, []) if len(self.seed_scores) == 1 else []

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


@dataclass(frozen=True)
class TrialRecord:
    """One stored trial, typed: Optuna's state and values with everything spanmix recorded."""

    number: int
    state: TrialState
    values: tuple[float, ...] | None
    params: dict[str, Any]
    duration: timedelta | None
    schedule: str | None
    measurement: str | None
    key: str | None
    training: str | None
    worker: str | None
    failure: str | None
    failed_by: str | None
    reused_from: int | None
    skipped: str | None
    cost_ratio: float | None
    cost_report: dict[str, Any]
    constraint: list[float]
    scores: dict[str, float]
    tokens_seen: int | None
    train_seconds: float | None
    precision: str | None
    seed_scores: dict[int, dict[str, float]]
    seed_curves: dict[int, dict[int, dict[str, float]]]
    seed_resamples: dict[int, dict[str, list[float]]] = field(default_factory=dict, compare=False)
    queued_params: dict[str, Any] | None = field(default=None, compare=False)

    @classmethod
    def read(cls, trial: FrozenTrial) -> TrialRecord:
        a = trial.user_attrs
        return cls(
            number=trial.number, state=trial.state, values=tuple(trial.values) if trial.values else None,
            params=dict(trial.params), duration=trial.duration,
            schedule=a.get(SCHEDULE), measurement=measurement_of(a), key=a.get(KEY), training=a.get(TRAINING), worker=a.get(WORKER),
            failure=a.get(FAILURE), failed_by=a.get(FAILED_BY), reused_from=a.get(REUSED_FROM),
            skipped=a.get(SKIPPED), cost_ratio=a.get(COST_RATIO), cost_report=a.get(COST_REPORT) or {},
            constraint=a.get(CONSTRAINT) or [0.0], scores=a.get(SCORES) or {}, tokens_seen=a.get(TOKENS_SEEN),
            train_seconds=a.get(TRAIN_SECONDS), precision=a.get(PRECISION), seed_scores=seed_scores_of(a),
            seed_curves=seed_curves_of(a), seed_resamples=seed_resamples_of(a),
            queued_params=queued_params(trial),
        )

    def samples(self, score: str, step: int | None = None) -> list[float]:
        """``score`` of each training seed, by replicate: at its end, or at ``step`` of its curve."""
        if step is None:
            return [s[score] for _, s in sorted(self.seed_scores.items()) if score in s]
        return [c[step][score] for _, c in sorted(self.seed_curves.items()) if step in c and score in c[step]]

    def resamples(self, score: str) -> list[float]:
        """``score`` on each bootstrap resample of the validation sequences (see :meth:`Point.resamples`)."""
        return self.point.resamples(score) if self.complete and self.values is not None and self.schedule else []

    @cached_property
    def layers(self) -> Schedule | None:
        """The schedule, parsed once (None before the trial has drawn it)."""
        return None if self.schedule is None else Schedule.parse(self.schedule)

    @property
    def feasible(self) -> bool:
        """Optuna's convention: feasible when every constraint value is <= 0."""
        return all(c <= 0 for c in self.constraint)

    @property
    def complete(self) -> bool:
        return self.state == TrialState.COMPLETE

    @property
    def point(self) -> Point:
        """This finished trial as a point (the quality and cost are Optuna's two values)."""
        if not self.complete or self.values is None or self.schedule is None:
            raise ValueError(f"trial {self.number} is not a finished trial")
        return Point(
            number=self.number, schedule=self.schedule, quality=self.values[0], cost=self.values[1],
            cost_ratio=self.cost_ratio if self.cost_ratio is not None else float("nan"), feasible=self.feasible,
            reused_from=self.reused_from, scores=self.scores, measurement=self.measurement or STANDALONE,
            seed_scores=tuple(s for _, s in sorted(self.seed_scores.items())), seed_ids=tuple(sorted(self.seed_scores)),
            resampled=next(iter(self.seed_resamples.values()), {}),
        )
