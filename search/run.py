"""Running studies: the calls the command line (and a notebook) makes.

Each asks the study's strategy (:mod:`spanmix.search.strategies`) how to run; nothing here knows
which strategy that is.
"""

from __future__ import annotations

import logging
from pathlib import Path

import optuna

from spanmix.search import record, strategies
from spanmix.search.config import StudyConfig
from spanmix.search.fidelity import Fidelity, confirm_set, fidelity_report
from spanmix.search.front import front_of
from spanmix.search.objective import STANDALONE, Objective, Standalone
from spanmix.search.queue import measure_schedules
from spanmix.search.strategies import RunOptions
from spanmix.search.view import StudyView
from spanmix.search.workers import preflight
from spanmix.space import ConfigError

log = logging.getLogger("spanmix.fidelity")


def run_study(
    cfg: StudyConfig,
    storage_url: str,
    n_trials: int | None = None,
    timeout: float | None = None,
    workers: int = 1,
    on_progress: strategies.base.Progress | None = None,
    workdir: str | Path | None = None,
    retry_failed: bool = False,
) -> optuna.Study:
    """Run until the study has measured ``n_trials`` distinct schedules (default ``cfg.n_trials``,
    at most the size of the space) at its strategy's measurement; repeated draws reuse results
    and do not count.

    ``workers`` processes share the storage where the strategy allows it; ``on_progress`` is
    called with the study as trials finish. ``workdir`` holds what a strategy keeps besides the
    storage (checkpoints). A schedule whose training raised is not trained again unless
    ``retry_failed``.
    """
    preflight(cfg, workers)
    options = RunOptions(timeout=timeout, workers=workers, on_progress=on_progress,
                         workdir=Path(workdir) if workdir is not None else None, retry_failed=retry_failed)
    return strategies.get(cfg.strategy).run(cfg, storage_url, n_trials or cfg.n_trials, options)


def join_study(
    cfg: StudyConfig,
    storage_url: str,
    target: int,
    timeout: float | None = None,
    stream: int | None = None,
    threads: int | None = None,
    retry_failed: bool = False,
    on_progress: strategies.base.Progress | None = None,
    workdir: str | Path | None = None,
) -> optuna.Study:
    """One more worker's share of a study: draw schedules with this worker's seed stream and
    measure them until the study holds ``target``; ``threads`` caps torch's CPU threads;
    ``workdir`` holds this worker's checkpoints."""
    options = RunOptions(timeout=timeout, on_progress=on_progress, retry_failed=retry_failed, threads=threads,
                         workdir=Path(workdir) if workdir is not None else None)
    return strategies.get(cfg.strategy).join(cfg, storage_url, target, options, stream)


def pick_for_retraining(view: StudyView, k: int, seed: int) -> list[str]:
    """``k`` schedules the study measured standalone, chosen as a confirmation chooses (front
    first, then near-front controls), to retrain at a larger budget."""
    pts = view.points(STANDALONE)
    front = front_of(pts, view.maximize)
    return [p.schedule for p in confirm_set(pts, view.maximize, max(0, k - len(front)), seed)[:k]]


def run_fidelity(cfg: StudyConfig, study: optuna.Study, budget: int, k: int,
                 on_progress: strategies.base.Progress | None = None) -> list[Fidelity]:
    """Retrain ``k`` of the study's standalone schedules at ``budget`` times the steps and report
    the rank fidelity of the 1x numbers against them (resumable: done schedules are kept)."""
    if not cfg.trains:
        raise ConfigError("spanmix fidelity retrains at a larger budget; a zero-shot checkpoint study trains nothing "
                          "(its fidelity against healing is not built yet)")
    if not isinstance(budget, int) or budget < 2:
        raise ConfigError(f"--budget must be a whole number >= 2 (got {budget!r}); 1 is the study's own budget")
    view = StudyView(study, cfg)
    available = len({p.schedule for p in view.points(STANDALONE)})
    if not 3 <= k <= available:
        raise ConfigError(f"--schedules must be in 3..{available} (the schedules this study trained standalone; got {k})")
    chosen = pick_for_retraining(view, k, cfg.seed)
    precision = record.pinned_precision(study.user_attrs)
    longer = Standalone(cfg, budget, precision)
    log.info("retraining %d schedules of study %r at %dx its %d steps", k, study.study_name, budget, cfg.train.steps)
    callbacks = RunOptions(on_progress=on_progress).callbacks()
    # the study's own measure first: trials it queued untagged (a grid's rest) run at its budget
    objective = Objective(cfg, Standalone(cfg, precision=precision), longer)
    measure_schedules(study, objective, chosen, longer.name, callbacks=callbacks)
    view = StudyView(study, cfg)
    wanted = set(chosen)
    return fidelity_report([p for p in view.points(STANDALONE) if p.schedule in wanted],
                           view.points(longer.name), view.maximize)
