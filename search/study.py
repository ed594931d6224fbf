"""Opening a study: create it or resume it under the same configuration, with its sampler.

A study stores the :class:`StudyConfig` it was launched with, so a relaunch, a worker on another
machine and every reader (``show``, ``dashboard``, ``export``) know what it measures from the
storage URL and the study name alone. Resuming under a different configuration is refused: it
would mix measurements.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import optuna
from optuna.storages import RDBStorage

from spanmix.search import record
from spanmix.search.config import StudyConfig
from spanmix.search.logs import stable_enough
from spanmix.search.queue import enqueue_space
from spanmix.search.storage import open_storage
from spanmix.space import ConfigError

log = logging.getLogger("spanmix")


def worker_seed(seed: int, stream: int | None) -> int:
    """The sampler seed of one worker: the study seed itself for a lone worker (reproducible), and
    for worker ``stream`` of several an independent seed derived from it, so workers draw
    different schedules instead of the same ones in lockstep."""
    if stream is None:
        return seed
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def make_sampler(cfg: StudyConfig, stream: int | None = None) -> optuna.samplers.BaseSampler:
    # the budget reaches the samplers as each trial's Optuna constraint (see record.costed)
    seed = worker_seed(cfg.seed, stream)
    if cfg.sampler == "nsga2":
        population = max(4, min(20, cfg.n_trials // 3))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    if cfg.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    # grid: the whole space is enqueued once (see open_study); random covers what is left
    return optuna.samplers.RandomSampler(seed=seed)


# study keys that change how a launch runs, not what it measures: a relaunch may change them
RUN_ONLY = ("n_trials", "calibrate", "reuse")  # settings a resumed study may change: the results stay the same


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
    stored = study.user_attrs.get(record.CONFIG)
    mine = json.loads(json.dumps(cfg.to_dict()))
    if stored is not None:  # keys added since the study was made read as their defaults
        stored = json.loads(json.dumps(StudyConfig.from_dict(stored).to_dict()))
    if stored is None:
        study.set_user_attr(record.CONFIG, mine)
        pin_precision(study, cfg)
        study.set_user_attr(record.MODEL_TYPE, cfg.subject.model_type)
        # Optuna Dashboard and other tools then show "loss" and "attention_flops", not "Objective 0/1"
        with stable_enough():
            study.set_metric_names([cfg.quality, cfg.cost])
        if cfg.sampler == "grid":
            enqueue_space(study, cfg.space)
    elif stored != mine:
        changed = sorted(
            f"{section}.{key}"
            for section in mine
            for key in set(mine[section]) | set(stored.get(section, {}))
            if mine[section].get(key) != stored.get(section, {}).get(key) and key not in RUN_ONLY
        )
        if changed:
            raise ConfigError(
                f"study {cfg.name!r} already exists in this storage with a different configuration "
                f"({', '.join(changed)}); choose another study.name or storage"
            )
    return study


def pin_precision(study: optuna.Study, cfg: StudyConfig) -> str:
    """Resolve ``train.precision`` once, here, and store it in the study: every worker that joins
    later trains in it, whatever its own machine would choose, so a study never mixes
    measurements made in fp32 with ones made in bf16."""
    subject = cfg.subject
    precision = subject.precision(cfg.train.precision, cfg.data, cfg.train.batch_size, cfg.space.local)
    study.set_user_attr(record.PINNED_PRECISION, precision)
    log.info("study %r %s; every worker follows it", cfg.name, subject.why_precision(cfg.train.precision, precision))
    return precision


def model_type_of(study: optuna.Study, cfg: StudyConfig) -> str | None:
    """The Hugging Face ``model_type`` of the model under search, as the study recorded it when it
    was made, so that a study is exported where the checkpoint is not; a study made before spanmix
    recorded it asks the checkpoint."""
    if record.MODEL_TYPE in study.user_attrs:
        return study.user_attrs[record.MODEL_TYPE]
    return cfg.subject.model_type


def config_of(study: optuna.Study) -> StudyConfig:
    """The configuration a study was launched with (stored in the study itself)."""
    stored = study.user_attrs.get(record.CONFIG)
    if stored is None:
        raise ConfigError(f"study {study.study_name!r} was not made by spanmix (no stored configuration)")
    return StudyConfig.from_dict(stored)
