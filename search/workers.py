"""Running a study's work on this machine: what the machine must hold before a study starts, and
several worker processes sharing one storage."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from typing import Any, Callable

import optuna

from spanmix.search import strategies
from spanmix.search.config import StudyConfig
from spanmix.space import ConfigError

log = logging.getLogger("spanmix.search")


def preflight(cfg: StudyConfig, workers: int = 1, progress: bool = False) -> None:
    """What the configuration alone cannot tell: whether its strategy can use ``workers``
    processes, whether the user's files (a checkpoint, a tokenizer) take its data, whether this
    machine can measure it with that many (see :meth:`~spanmix.proxies.subject.Subject.check_fits`),
    and whether the user's files make a corpus (tokenized here, once, with a bar if
    ``progress``). Run before a study is created or joined."""
    if workers < 1:
        raise ConfigError(f"workers must be >= 1 (got {workers})")
    strategies.get(cfg.strategy).check(cfg, workers)
    cfg.check_files()
    cfg.subject.check_fits(cfg.data, cfg.train, cfg.space.n_layers, workers)
    if cfg.data.files:  # trials and workers then open the cached token files
        cfg.data.user_corpus(progress)


def cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def spawn(main: Callable[..., None], args: list[tuple[Any, ...]], study: optuna.Study,
          on_progress: Callable[[optuna.Study], None] | None = None) -> None:
    """Run ``main(*a)`` for each ``a`` of ``args`` in its own process (spawned: no torch state is
    inherited) and wait for them all, calling ``on_progress(study)`` about once a second."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=main, args=a) for a in args]
    for p in procs:
        p.start()
    while any(p.is_alive() for p in procs):
        if on_progress:
            on_progress(study)
        time.sleep(1.0)
    for p in procs:
        p.join()
