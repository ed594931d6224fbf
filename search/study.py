"""Optuna multi-objective studies over schedules: (quality, cost), Pareto front, knee.

Each trial draws a schedule, counts its cost, trains and scores its proxy. A schedule already
measured under the same configuration is not trained again: the trial reuses the stored result and
says so (``reused_from``). A trial that raises is recorded as failed with its reason; a worker that
dies mid-trial stops its heartbeat, and the next worker fails that trial and retries its schedule.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import multiprocessing
import os
import random
import socket
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, Trial, TrialState

from proxies.cost import count, measure_latency
from proxies.train import ProxyResult, check_fits, train_and_score
from search.config import StudyConfig, maximized
from search.logs import log_to_stderr, quiet_libraries
from search.storage import open_storage
from space import ConfigError, Layer, Schedule, SearchSpace

log = logging.getLogger("spanmix.search")
CONFIG_ATTR = "spanmix_config"


# --- the objective ------------------------------------------------------------------------------------
def _constraint(trial: FrozenTrial) -> list[float]:
    """Optuna's convention: feasible when every value is <= 0."""
    return trial.user_attrs.get("constraint", [0.0])


def worker_seed(seed: int, stream: int | None) -> int:
    """The sampler seed of one worker: the study seed itself for a lone worker (reproducible), and
    for worker ``stream`` of several an independent seed derived from it, so workers draw
    different schedules instead of the same ones in lockstep."""
    if stream is None:
        return seed
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def make_sampler(cfg: StudyConfig, stream: int | None = None) -> optuna.samplers.BaseSampler:
    constraints = _constraint if cfg.budget is not None else None
    seed = worker_seed(cfg.seed, stream)
    if cfg.sampler == "nsga2":
        population = max(4, min(20, cfg.n_trials // 3))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed, constraints_func=constraints)
    if cfg.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constraints_func=constraints, multivariate=True)
    # grid: the whole space is enqueued once (see open_study); random covers what is left
    return optuna.samplers.RandomSampler(seed=seed)


@functools.lru_cache(maxsize=32)
def _full_latency(cfg: StudyConfig, n_layers: int) -> float:
    return measure_latency(cfg.proxy, Schedule((Layer("full"),) * n_layers), cfg.data.seq_len)


def cost_of(cfg: StudyConfig, schedule: Schedule) -> tuple[float, float, dict[str, Any]]:
    """(cost, cost relative to the all-full schedule, the counted report)."""
    report = count(cfg.proxy, schedule, cfg.data.seq_len)
    if cfg.cost == "latency":
        ms = measure_latency(cfg.proxy, schedule, cfg.data.seq_len)
        return ms, ms / _full_latency(cfg, len(schedule)), report.to_dict()
    value, full = {
        "flops": (report.total, report.full_total),
        "prefill_flops": (report.total, report.full_total),
        "decode_flops": (report.decode, report.full_decode),
        "attention_flops": (report.attention, report.full_attention),
        "kv_cache": (report.kv_cache_bytes, report.full_kv_cache_bytes),
    }[cfg.cost]
    return float(value), value / full, report.to_dict()


# what a trial that reuses another's measurement copies from it
MEASURED_ATTRS = ("cost_ratio", "cost_report", "constraint", "scores", "tokens_seen", "train_seconds", "tokens_per_second")
STANDALONE, SUPERNET = "standalone", "supernet"


class ScheduleFailed(RuntimeError):
    """The schedule already failed under this measurement; it is not trained again."""


class Measure(Protocol):
    """How a trial turns a schedule into scores. ``fidelity`` names the measurement in each trial
    (``standalone``, ``supernet``, ``standalone-4x``); ``key`` is everything that makes two
    measurements of one schedule interchangeable."""

    fidelity: str
    key: dict[str, Any]

    def __call__(self, schedule: Schedule) -> ProxyResult: ...


class Standalone:
    """Train the schedule's own proxy from scratch for ``budget`` times ``train.steps`` steps."""

    def __init__(self, cfg: StudyConfig, budget: int = 1) -> None:
        self.cfg, self.train = cfg, replace(cfg.train, steps=cfg.train.steps * budget)
        self.fidelity = STANDALONE if budget == 1 else f"{STANDALONE}-{budget}x"
        self.key = {**cfg.measurement_key(), "train": self.train.to_dict()}

    def __call__(self, schedule: Schedule) -> ProxyResult:
        return train_and_score(schedule, self.cfg.proxy, self.cfg.data, self.train)


def fidelity_of(trial: FrozenTrial) -> str:
    return trial.user_attrs.get("fidelity", STANDALONE)


class Objective:
    """``(trial) -> (quality, cost)`` for a :class:`StudyConfig`.

    A trial is measured by the measure its ``fidelity`` user attribute names (set when it was
    enqueued); an untagged trial (drawn by the sampler, queued by a grid) belongs to the study's
    search fidelity when this objective measures it, else to the first of ``measures``.
    """

    def __init__(self, cfg: StudyConfig, *measures: Measure, wait_seconds: float = 1.0, retry_failed: bool = False) -> None:
        self.cfg, self.wait_seconds, self.retry_failed = cfg, wait_seconds, retry_failed
        self.measures = {m.fidelity: m for m in (measures or (Standalone(cfg),))}
        self.default = next(iter(self.measures))
        self.config_hashes = {
            name: hashlib.sha256(json.dumps({"fidelity": name, **m.key}, sort_keys=True).encode()).hexdigest()[:12]
            for name, m in self.measures.items()
        }

    def __call__(self, trial: Trial) -> tuple[float, float]:
        try:
            return self._measure(trial)
        except (optuna.TrialPruned, ScheduleFailed):
            raise
        except Exception as err:
            if "failed_by" not in trial.user_attrs:  # not the schedule's fault: a later draw retries it
                self._fail(trial, err, "spanmix")
            raise

    @staticmethod
    def _fail(trial: Trial, err: Exception, by: str) -> None:
        """Record and log why ``trial`` failed: Optuna keeps no reason, and the study report,
        ``spanmix show`` and the retry rules read it from here."""
        trial.set_user_attr("failure", f"{type(err).__name__}: {err}")
        trial.set_user_attr("failed_by", by)
        log.warning("trial %d: %s failed: %s: %s", trial.number, trial.user_attrs.get("schedule", "?"), type(err).__name__, err)

    def _measure(self, trial: Trial) -> tuple[float, float]:
        cfg = self.cfg
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # first: a heartbeat failure names it
        searched = search_fidelity(trial.study)
        fidelity = trial.user_attrs.get("fidelity", searched if searched in self.measures else self.default)
        if fidelity not in self.measures:
            raise ConfigError(f"trial {trial.number} asks for fidelity {fidelity!r}; this run measures {sorted(self.measures)}")
        schedule = cfg.space.suggest(trial).canonical(cfg.data.seq_len)
        key = f"{schedule.hash}-{self.config_hashes[fidelity]}"
        trial.set_user_attr("schedule", schedule.text)
        trial.set_user_attr("fidelity", fidelity)
        trial.set_user_attr("key", key)
        failed = None if self.retry_failed else self._failed(trial, key)
        if failed is not None:
            trial.set_user_attr("failed_by", "remembered")
            trial.set_user_attr("failure", f"not trained again: trial {failed.number} failed under the same "
                                f"measurement ({failed.user_attrs.get('failure')}); --retry-failed trains it again")
            raise ScheduleFailed(trial.user_attrs["failure"])
        prior = self._measured(trial, key)
        if prior is not None:
            # the stored cost too: a latency is a measurement, and measuring it again would differ
            log.info("trial %d: %s already measured in trial %d; reusing", trial.number, schedule.text, prior.number)
            trial.set_user_attr("reused_from", prior.number)
            for attr in MEASURED_ATTRS:
                trial.set_user_attr(attr, prior.user_attrs.get(attr))
            return prior.values[0], prior.values[1]
        cost, ratio, report = cost_of(cfg, schedule)
        trial.set_user_attr("cost_ratio", ratio)
        trial.set_user_attr("cost_report", {k: report[k] for k in ("total", "attention", "decode", "kv_cache_bytes", "ratio", "attention_ratio",
                                                           "decode_ratio", "kv_ratio")})
        trial.set_user_attr("constraint", [ratio - cfg.budget] if cfg.budget is not None else [0.0])
        try:
            result = self.measures[fidelity](schedule)
        except Exception as err:
            self._fail(trial, err, "error")
            raise
        if cfg.quality not in result.scores:
            raise ConfigError(f"study.quality {cfg.quality!r} is not among the scores {sorted(result.scores)}")
        trial.set_user_attr("scores", result.scores)
        trial.set_user_attr("tokens_seen", result.tokens_seen)
        trial.set_user_attr("train_seconds", result.train_seconds)
        trial.set_user_attr("tokens_per_second", result.tokens_per_second)
        log.info("trial %d: %s %s=%.4f cost ratio %.1f%% (%s, %.1f s)", trial.number, schedule.text,
                 cfg.quality, result.scores[cfg.quality], 100 * ratio, fidelity, result.train_seconds)
        return result.scores[cfg.quality], cost

    @staticmethod
    def _failed(trial: Trial, key: str) -> FrozenTrial | None:
        """An earlier trial in which measuring this key raised (a dead worker's trial does not
        count: that was not the schedule's fault)."""
        states = (TrialState.FAIL,)
        for t in trial.study.get_trials(deepcopy=False, states=states):
            if t.user_attrs.get("key") == key and t.user_attrs.get("failed_by") == "error":
                return t
        return None

    def _measured(self, trial: Trial, key: str) -> FrozenTrial | None:
        """A finished trial with this key, or None when this trial should measure it.

        When another worker is measuring the key, a sampled trial is skipped (pruned) so that its
        worker draws another schedule; a queued trial, whose schedule was chosen for it, waits.
        """
        study = trial.study
        while True:
            trials = study.get_trials(deepcopy=False)
            queued = "fixed_params" in trials[trial.number].system_attrs  # Trial itself no longer shows them
            others = [t for t in trials if t.user_attrs.get("key") == key and t.number != trial.number]
            done = [t for t in others if t.state == TrialState.COMPLETE and "reused_from" not in t.user_attrs]
            if done:
                return done[0]
            running = [t for t in others if t.state == TrialState.RUNNING and t.number < trial.number]
            if not running:
                return None
            if not queued:
                trial.set_user_attr("skipped", f"being measured in trial {running[0].number}")
                time.sleep(self.wait_seconds)  # a worker whose draws all collide must not spin
                raise optuna.TrialPruned(trial.user_attrs["skipped"])
            with warnings.catch_warnings():  # experimental since Optuna 2.9; a dead worker must not hang this one
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            time.sleep(self.wait_seconds)


# --- studies ---------------------------------------------------------------------------------------------
def open_study(cfg: StudyConfig, storage: str | RDBStorage, stream: int | None = None) -> optuna.Study:
    """Create the study, or load it to resume; refuses to resume under a different configuration.
    ``stream`` numbers this worker among several (see :func:`worker_seed`)."""
    if isinstance(storage, str):
        storage = open_storage(storage, cfg.heartbeat_seconds)
    study = optuna.create_study(
        storage=storage,
        study_name=cfg.name,
        directions=cfg.directions,
        sampler=make_sampler(cfg, stream),
        load_if_exists=True,
    )
    stored = study.user_attrs.get(CONFIG_ATTR)
    mine = json.loads(json.dumps(cfg.to_dict()))
    if stored is None:
        study.set_user_attr(CONFIG_ATTR, mine)
        # Optuna Dashboard and other tools then show "loss" and "attention_flops", not "Objective 0/1"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # stable since 3.2
            study.set_metric_names([cfg.quality, cfg.cost])
        if cfg.sampler == "grid":
            for params, _ in cfg.space.all_params():
                study.enqueue_trial(params, skip_if_exists=True)
    elif {k: v for k, v in stored.items()} != mine:
        changed = sorted(
            f"{section}.{key}"
            for section in mine
            for key in set(mine[section]) | set(stored.get(section, {}))
            if mine[section].get(key) != stored.get(section, {}).get(key) and key != "n_trials"
        )
        if changed:
            raise ConfigError(
                f"study {cfg.name!r} already exists in this storage with a different configuration "
                f"({', '.join(changed)}); choose another study.name or storage"
            )
    return study


def config_of(study: optuna.Study) -> StudyConfig:
    """The configuration a study was launched with (stored in the study itself)."""
    stored = study.user_attrs.get(CONFIG_ATTR)
    if stored is None:
        raise ConfigError(f"study {study.study_name!r} was not made by spanmix (no stored configuration)")
    return StudyConfig.from_dict(stored)


def search_fidelity(study: optuna.Study) -> str:
    """The fidelity a study searches at: ``supernet`` for the supernet strategy, else ``standalone``."""
    strategy = (study.user_attrs.get(CONFIG_ATTR) or {}).get("study", {}).get("strategy")
    return SUPERNET if strategy == "supernet" else STANDALONE


def finished(study: optuna.Study, fidelity: str | None = None) -> int:
    """Distinct schedules measured at ``fidelity`` (default: the one the study searches at):
    finished trials that did not reuse another's result."""
    fidelity = fidelity or search_fidelity(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sum("reused_from" not in t.user_attrs and fidelity_of(t) == fidelity for t in complete)


# a sampler that keeps proposing measured schedules costs little per draw, but must not loop forever
MAX_DRAWS_PER_TARGET = 5
# spaces up to this size are listed (about 40 us a schedule) to queue what the sampler did not reach
FILL_LIMIT = 20_000


def _stop_at(target: int, fidelity: str) -> Callable[[optuna.Study, FrozenTrial], None]:
    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        if finished(study, fidelity) >= target:
            study.stop()

    return callback


def _schedule_of(trial: FrozenTrial, space: SearchSpace) -> str | None:
    """The canonical schedule a trial measures, or None while a sampled trial is still drawing
    it. A queued trial holds only the parameters it was queued with; a retried one, its params."""
    if "schedule" in trial.user_attrs:
        return trial.user_attrs["schedule"]
    if "fixed_params" in trial.system_attrs:
        params = trial.system_attrs["fixed_params"]
    elif trial.state == TrialState.WAITING:
        params = trial.params
    else:
        return None
    return space.suggest(optuna.trial.FixedTrial(params)).canonical(space.context).text


def unmeasured(study: optuna.Study, space: SearchSpace, fidelity: str, retry_failed: bool = False) -> list[tuple[dict[str, Any], str]]:
    """(parameters, schedule) of each schedule of ``space`` that no trial at ``fidelity`` has
    measured, is measuring or holds queued, and that did not fail there (unless ``retry_failed``)."""
    taken, untagged = set(), search_fidelity(study)  # what an untagged trial is measured at
    for t in study.get_trials(deepcopy=False):
        failed = t.state == TrialState.FAIL and t.user_attrs.get("failed_by") == "error" and not retry_failed
        live = t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
        if (live or failed) and t.user_attrs.get("fidelity", untagged) == fidelity:
            taken.add(_schedule_of(t, space))
    todo = {s.canonical(space.context).text: p for p, s in space.all_params()}
    return [(p, text) for text, p in todo.items() if text not in taken]


def _queue(study: optuna.Study, todo: list[tuple[dict[str, Any], str]], fidelity: str) -> None:
    for params, text in todo:
        study.enqueue_trial(params, user_attrs={"fidelity": fidelity, "schedule": text})


def _fill(study: optuna.Study, objective: Objective, remaining: int, rng: random.Random) -> int:
    """Queue up to ``remaining`` schedules the sampler has not reached, in ``rng``'s order;
    how many were queued."""
    space, fidelity = objective.cfg.space, objective.default
    if remaining <= 0:
        return 0
    if space.size() > FILL_LIMIT:
        log.warning("the sampler keeps drawing measured schedules, and %d schedules are too many to list "
                    "what is left; stopping %d short of the target", space.size(), remaining)
        return 0
    todo = unmeasured(study, space, fidelity, objective.retry_failed)
    rng.shuffle(todo)
    todo = todo[:remaining]
    if todo:
        log.info("the sampler keeps drawing measured schedules; queuing %d not measured yet", len(todo))
        _queue(study, todo, fidelity)
    return len(todo)


def work(
    study: optuna.Study,
    objective: Objective,
    target: int,
    timeout: float | None = None,
    callbacks: list[Callable[..., None]] | None = None,
    seed: int = 0,
) -> None:
    """Optimise until ``target`` distinct schedules are measured at the objective's default fidelity.

    The sampler draws first. When its draws keep landing on measured schedules (a small space, a
    converged sampler) and the space can be listed, the schedules it did not reach are queued in
    an order drawn from ``seed`` (each worker its own), so a target the space can meet is met.
    """
    fidelity = objective.default
    target = min(target, objective.cfg.space.size())
    deadline = None if timeout is None else time.monotonic() + timeout
    stop = [_stop_at(target, fidelity), *(callbacks or [])]
    rng = random.Random(seed)
    n, filled = MAX_DRAWS_PER_TARGET * (target - finished(study, fidelity)), False
    while n > 0:
        before = finished(study, fidelity)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        study.optimize(objective, n_trials=n, timeout=left, catch=(Exception,), callbacks=stop)
        if deadline is not None and time.monotonic() >= deadline:
            return
        if filled and finished(study, fidelity) == before:
            return  # what was queued failed, or is another worker's now
        n, filled = _fill(study, objective, target - finished(study, fidelity), rng), True


def measure_schedules(
    study: optuna.Study,
    objective: Objective,
    schedules: list[str],
    fidelity: str,
    timeout: float | None = None,
    callbacks: list[Callable[..., None]] | None = None,
) -> None:
    """Measure each schedule (canonical text) at ``fidelity`` unless it already was: each is
    enqueued with the parameters that draw it, tagged with the fidelity, and run by ``objective``.
    Resumable: what was measured or queued by an interrupted run is not queued again. Optuna runs
    queued trials oldest first, so trials queued before these (a grid's rest) run first, each at
    its own fidelity."""
    left = {text: params for params, text in unmeasured(study, objective.cfg.space, fidelity, objective.retry_failed)}
    _queue(study, [(left[text], text) for text in schedules if text in left], fidelity)
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    mine = [i for i, t in enumerate(waiting) if t.user_attrs.get("fidelity") == fidelity]
    n = mine[-1] + 1 if mine else 0
    if n:
        study.optimize(objective, n_trials=n, timeout=timeout, catch=(Exception,), callbacks=callbacks or [])


def preflight(cfg: StudyConfig, workers: int = 1, progress: bool = False) -> None:
    """What the configuration alone cannot tell: whether this machine can train it with ``workers``
    processes (see :func:`proxies.train.check_fits`), and whether the user's files make a corpus
    (tokenized here, once, with a bar if ``progress``). Run before a study is created or joined."""
    if workers < 1:
        raise ConfigError(f"workers must be >= 1 (got {workers})")
    if cfg.strategy == SUPERNET and workers > 1:
        raise ConfigError(f"--workers {workers}: the supernet strategy trains its shared weights in one process; use 1")
    check_fits(cfg.proxy, cfg.data, cfg.train, cfg.space.n_layers, workers)
    if cfg.data.files:  # trials and workers then open the cached token files
        cfg.data.user_corpus(progress)


def cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def join_study(
    cfg: StudyConfig,
    storage: str | RDBStorage,
    target: int,
    timeout: float | None = None,
    stream: int | None = None,
    threads: int | None = None,
    retry_failed: bool = False,
    callbacks: list[Callable[..., None]] | None = None,
) -> optuna.Study:
    """One worker's share of a standalone study: draw schedules with this worker's seed stream
    and measure them until the study holds ``target``; ``threads`` caps torch's CPU threads."""
    if cfg.strategy == SUPERNET:
        raise ConfigError(f"study {cfg.name!r} uses the supernet strategy, which trains its shared weights in one "
                          "process; workers join standalone studies")
    preflight(cfg)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    study = open_study(cfg, storage, stream)
    work(study, Objective(cfg, retry_failed=retry_failed), target, timeout, callbacks, worker_seed(cfg.seed, stream))
    return study


def _worker_main(cfg_dict: dict[str, Any], storage_url: str, target: int, timeout: float | None,
                 stream: int, threads: int, retry_failed: bool, log_level: int) -> None:
    quiet_libraries()
    log_to_stderr(log_level)
    join_study(StudyConfig.from_dict(cfg_dict), storage_url, target, timeout, stream, threads, retry_failed)


def run_study(
    cfg: StudyConfig,
    storage_url: str,
    n_trials: int | None = None,
    timeout: float | None = None,
    workers: int = 1,
    on_progress: Callable[[optuna.Study], None] | None = None,
    workdir: str | Path | None = None,
    retry_failed: bool = False,
) -> optuna.Study:
    """Run until the study has measured ``n_trials`` distinct schedules (default ``cfg.n_trials``,
    at most the size of the space); repeated draws reuse results and do not count.

    ``workers`` processes share the storage, each with its own seed stream and an equal share of
    the CPU cores; ``on_progress`` is called after each finished trial (one worker) or about once
    a second (several). The supernet strategy runs in one process and keeps its checkpoints under
    ``workdir`` (see :mod:`search.supernet`). A schedule whose training raised is not trained
    again unless ``retry_failed``.
    """
    preflight(cfg, workers)
    target = n_trials or cfg.n_trials
    if cfg.strategy == "supernet":
        from search.supernet import run_supernet  # the strategy builds on this module

        if workdir is None:
            raise ConfigError("the supernet strategy needs a folder for its checkpoints (workdir)")
        return run_supernet(cfg, storage_url, Path(workdir), target, timeout, on_progress)
    if workers == 1:
        callbacks = [lambda s, t: on_progress(s)] if on_progress else []
        return join_study(cfg, storage_url, target, timeout, retry_failed=retry_failed, callbacks=callbacks)
    study = open_study(cfg, storage_url)  # validates and records the config before any worker starts
    threads = max(1, cores() // workers)
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker_main, args=(cfg.to_dict(), storage_url, target, timeout, i, threads, retry_failed, log.getEffectiveLevel()))
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    while any(p.is_alive() for p in procs):
        if on_progress:
            on_progress(study)
        time.sleep(1.0)
    for p in procs:
        p.join()
    return study


# --- the front ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    """A finished trial as the front and the dashboard see it."""

    number: int
    schedule: str
    quality: float
    cost: float
    cost_ratio: float
    feasible: bool
    reused_from: int | None
    scores: dict[str, float]
    fidelity: str = STANDALONE


def points(study: optuna.Study, fidelity: str | None = None) -> list[Point]:
    """Finished trials as points; only those measured at ``fidelity`` when it is given."""
    pts = [
        Point(
            number=t.number,
            schedule=t.user_attrs["schedule"],
            quality=t.values[0],
            cost=t.values[1],
            cost_ratio=t.user_attrs.get("cost_ratio", float("nan")),
            feasible=all(c <= 0 for c in _constraint(t)),
            reused_from=t.user_attrs.get("reused_from"),
            scores=t.user_attrs.get("scores") or {},
            fidelity=fidelity_of(t),
        )
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ]
    return [p for p in pts if fidelity is None or p.fidelity == fidelity]


def final_fidelity(study: optuna.Study) -> str:
    """The fidelity a study's answer is read at: standalone once any schedule was measured
    standalone (a supernet study's confirmed set), else what it searched at."""
    return STANDALONE if points(study, STANDALONE) else search_fidelity(study)


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


def rescored(pts: list[Point], score: str) -> list[Point]:
    """The points that hold ``score``, with it as their quality: the front of any score."""
    return [replace(p, quality=p.scores[score]) for p in pts if score in p.scores]


def scores_of(study: optuna.Study) -> list[str]:
    """Every score a finished trial holds, sorted."""
    return sorted({s for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                   for s in t.user_attrs.get("scores") or {}})


def pareto_front(study: optuna.Study, fidelity: str | None = None, score: str | None = None) -> list[Point]:
    """Feasible, non-dominated points (one per schedule), cheapest first, among the trials at
    ``fidelity`` (default: :func:`final_fidelity`), on the study's quality or on ``score``."""
    pts = points(study, fidelity or final_fidelity(study))
    if score is None:
        maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    else:
        pts, maximize = rescored(pts, score), maximized(score)
    found = fronts(pts, maximize)
    return found[0] if found else []


def knee(front: list[Point], maximize: bool) -> Point:
    """The front point nearest the ideal corner (best quality at least cost) once both axes are
    scaled to [0, 1] over the front: the best quality per cost for users who want one answer."""
    if not front:
        raise ConfigError("the study has no finished feasible trial yet")
    qs, cs = [p.quality for p in front], [p.cost for p in front]
    q_span, c_span = (max(qs) - min(qs)) or 1.0, (max(cs) - min(cs)) or 1.0
    best_q = max(qs) if maximize else min(qs)

    def distance(p: Point) -> float:
        return ((p.quality - best_q) / q_span) ** 2 + ((p.cost - min(cs)) / c_span) ** 2

    return min(front, key=distance)


