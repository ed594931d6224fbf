"""The standalone strategy: every schedule the sampler draws trains its own proxy from scratch.

Exact and slow: each measurement is a full training at the study's budget, so the front is as
good as that budget. Several workers (processes here, or ``spanmix worker`` on other machines)
share the draws through the storage: each draws from its own seed stream, skips what another is
measuring, and never trains a schedule twice (see :mod:`spanmix.search.objective`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna

from spanmix.search import record, strategies
from spanmix.search.config import StudyConfig
from spanmix.search.logs import log_to_stderr, quiet_libraries
from spanmix.search.measures import StandaloneMeasure
from spanmix.search.objective import Objective
from spanmix.search.queue import work
from spanmix.search.strategies.base import RunOptions, Strategy
from spanmix.search.study import open_study, worker_seed
from spanmix.search.workers import cores, spawn

log = logging.getLogger("spanmix.search")


class Standalone(Strategy):
    name = "standalone"
    measurement = record.STANDALONE

    def run(self, cfg: StudyConfig, storage_url: str, target: int, options: RunOptions) -> optuna.Study:
        if options.workers == 1:
            return self.join(cfg, storage_url, target, options)
        study = options.study or open_study(cfg, storage_url)  # the config recorded before any worker starts
        study.set_user_attr(record.SEARCHED, self.measurement)
        threads = max(1, cores() // options.workers)
        workdir = str(options.workdir) if options.workdir is not None else None
        args = [(self.name, cfg.to_dict(), storage_url, target, options.timeout, i, threads, options.retry_failed,
                 workdir, log.getEffectiveLevel()) for i in range(options.workers)]
        spawn(_worker_main, args, study, options.on_progress)
        return study

    def join(self, cfg: StudyConfig, storage_url: str, target: int, options: RunOptions,
             stream: int | None = None) -> optuna.Study:
        if options.threads is not None:
            import torch

            torch.set_num_threads(options.threads)
        study = options.study if options.study is not None and stream is None else open_study(cfg, storage_url, stream)
        study.set_user_attr(record.SEARCHED, self.measurement)
        self.search(study, cfg, target, options, record.pinned_precision(study.user_attrs), worker_seed(cfg.seed, stream))
        return study

    def search(self, study: optuna.Study, cfg: StudyConfig, target: int, options: RunOptions, precision: str | None,
               seed: int) -> None:
        """This worker's share of the search, drawing with sampler seed ``seed``, in ``precision``."""
        objective = Objective(cfg, StandaloneMeasure(cfg, precision=precision), retry_failed=options.retry_failed)
        work(study, objective, target, options.timeout, options.callbacks(), seed)


def _worker_main(strategy: str, cfg_dict: dict[str, Any], storage_url: str, target: int, timeout: float | None,
                 stream: int, threads: int, retry_failed: bool, workdir: str | None, log_level: int) -> None:
    """One spawned worker process: its own logging, then its share of the study."""
    quiet_libraries()
    log_to_stderr(log_level)
    options = RunOptions(timeout=timeout, threads=threads, retry_failed=retry_failed,
                         workdir=Path(workdir) if workdir is not None else None)
    strategies.get(strategy).join(StudyConfig.from_dict(cfg_dict), storage_url, target, options, stream)
