"""Running studies: the calls the command line (and a notebook) makes.

Each asks the study's strategy (:mod:`spanmix.search.strategies`) how to run; nothing here knows
which strategy that is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna

from spanmix.search import record, strategies
from spanmix.search.calibration import Calibration, calibrate
from spanmix.search.config import StudyConfig
from spanmix.search.fidelity import Fidelity, confirm_set, fidelity_report
from spanmix.search.front import front_of
from spanmix.search.measures import STANDALONE, StandaloneMeasure
from spanmix.search.objective import Objective
from spanmix.search.queue import measure_schedules
from spanmix.search.storage import undone_on_error
from spanmix.search.strategies import RunOptions
from spanmix.search.study import make_sampler, open_study
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
    return _search(cfg, storage_url, n_trials or cfg.n_trials, timeout, workers, on_progress, workdir, retry_failed)


def _search(cfg: StudyConfig, storage_url: str, n_trials: int, timeout: float | None, workers: int,
            on_progress: strategies.base.Progress | None, workdir: str | Path | None,
            retry_failed: bool, study: optuna.Study | None = None) -> optuna.Study:
    options = RunOptions(timeout=timeout, workers=workers, on_progress=on_progress,
                         workdir=Path(workdir) if workdir is not None else None, retry_failed=retry_failed, study=study)
    return strategies.get(cfg.strategy).run(cfg, storage_url, n_trials, options)


class NotSeparated(ConfigError):
    """Calibration found that the study's budget does not separate its dearest schedule from its
    cheapest: the launch stops before the rest of the space is spent (its trainings are kept)."""

    def __init__(self, calibration: Calibration) -> None:
        super().__init__(f"{calibration.verdict()}; or --force to run the study anyway")
        self.calibration = calibration


@dataclass(frozen=True)
class Launched:
    """What :func:`launch` did.

    Attributes:
        study: the study, resumed or created, with what the search measured.
        calibration: what calibration read (None where it was skipped).
        skipped: why calibration was skipped (empty where it ran).
    """

    study: optuna.Study
    calibration: Calibration | None
    skipped: str


# (stage name, schedules it aims to measure, at which measurement: None where each call is one
# schedule done) -> the callback that follows the stage, or None
Stage = Callable[[str, int, "str | None"], "strategies.base.Progress | None"]


def calibrate_study(cfg: StudyConfig, storage_url: str, *, progress: bool = False, stage: Stage | None = None,
                    on_calibration: Callable[[Calibration, str | None], None] | None = None,
                    new_files: tuple[Path, ...] = ()) -> Calibration:
    """What ``spanmix calibrate`` does: :func:`launch`'s first stages alone (the arguments as there),
    refusing a budget that separates nothing with :class:`NotSeparated`."""
    return _calibration(cfg, _opened(cfg, storage_url, 1, progress, new_files), False, stage, on_calibration)


def _opened(cfg: StudyConfig, storage_url: str, workers: int, progress: bool, new_files: tuple[Path, ...]) -> optuna.Study:
    preflight(cfg, workers, progress)
    with undone_on_error(*new_files):
        return open_study(cfg, storage_url)  # connects, and refuses a resume under another configuration


def _calibration(cfg: StudyConfig, study: optuna.Study, force: bool, stage: Stage | None,
                 on_calibration: Callable[[Calibration, str | None], None] | None) -> Calibration:
    """The calibration stage, outside any clean-up: a refused budget keeps the trainings that showed it."""
    follow = stage("calibration", 2, None) if stage else None
    calibration = calibrate(cfg, study, callbacks=[lambda s, t: follow(s)] if follow else None)
    if on_calibration is not None:
        on_calibration(calibration, strategies.get(cfg.strategy).advise(cfg, calibration))
    if not calibration.separated and not force:
        raise NotSeparated(calibration)
    return calibration


def launch(cfg: StudyConfig, storage_url: str, *, workers: int = 1, timeout: float | None = None, force: bool = False,
           workdir: str | Path | None = None, retry_failed: bool = False, progress: bool = False,
           stage: Stage | None = None, on_calibration: Callable[[Calibration, str | None], None] | None = None,
           new_files: tuple[Path, ...] = ()) -> Launched:
    """What ``spanmix launch`` does, in one call the command line and a notebook share: the
    preflight (once), the study opened or resumed once (a refusal leaves none of ``new_files`` behind),
    the calibration stage (see :mod:`spanmix.search.calibration`), then the strategy's search.

    ``stage(name, total, measurement)`` is called as ``calibration`` and ``search`` begin (with
    the schedules each aims to measure, at which measurement: None for calibration, whose
    callback is called once per schedule done) and returns the callback that follows it, or None; ``on_calibration(calibration, advice)`` is called as soon as calibration
    is read, with what it says of the strategy's settings. A budget that separates nothing raises
    :class:`NotSeparated` unless ``force``. ``progress`` shows a bar while the user's files are
    tokenized."""
    study = _opened(cfg, storage_url, workers, progress, new_files)
    calibration, skipped = None, ""
    if not cfg.calibrate:
        skipped = "study.calibrate = false"
    elif not cfg.trains:
        skipped = "zero-shot scoring of a checkpoint has no training budget to check"
    else:
        calibration = _calibration(cfg, study, force, stage, on_calibration)
    strategy = strategies.get(cfg.strategy)
    target = strategy.target(cfg, cfg.n_trials)
    log.info("study %r: %s schedules in the space, target %d measured (%s strategy), storage %s",
             cfg.name, f"{cfg.space.size():,}", target, strategy.name, storage_url)
    follow = stage("search", target, strategy.measurement) if stage else None
    study.sampler = make_sampler(cfg)  # as freshly seeded as a study opened for the search alone: same seed, same draws
    study = _search(cfg, storage_url, cfg.n_trials, timeout, workers, follow, workdir, retry_failed, study)
    return Launched(study, calibration, skipped)


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
    progress: bool = False,
) -> optuna.Study:
    """One more worker's share of a study: the preflight (``progress``: a bar while the user's
    files are tokenized), then draw schedules with this worker's seed stream and measure them
    until the study holds ``target``; ``threads`` caps torch's CPU threads; ``workdir`` holds this
    worker's checkpoints."""
    preflight(cfg, progress=progress)
    options = RunOptions(timeout=timeout, on_progress=on_progress, retry_failed=retry_failed, threads=threads,
                         workdir=Path(workdir) if workdir is not None else None)
    return strategies.get(cfg.strategy).join(cfg, storage_url, target, options, stream)


def pick_for_retraining(view: StudyView, k: int, seed: int) -> list[str]:
    """``k`` schedules the study measured standalone, chosen as a confirmation chooses (front
    first, then near-front controls), to retrain at a larger budget."""
    pts = view.points(STANDALONE)
    front = front_of(pts, view.maximize)
    return [p.schedule for p in confirm_set(pts, view.maximize, max(0, k - len(front)), seed)[:k]]


FidelityProgress = Callable[[int, int, "Fidelity | None"], None]


def run_fidelity(cfg: StudyConfig, study: optuna.Study, budget: int, k: int,
                 on_progress: FidelityProgress | None = None) -> list[Fidelity]:
    """Retrain ``k`` of the study's standalone schedules at ``budget`` times the steps and report
    the rank fidelity of the 1x numbers against them (resumable: done schedules are kept).
    ``on_progress(done, k, so_far)`` is called at the start and as each schedule comes back, with
    the fidelity over every schedule back so far (None below three: a rank needs them)."""
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
    longer = StandaloneMeasure(cfg, budget, precision)
    wanted = set(chosen)

    def so_far(view: StudyView) -> list[Fidelity]:
        return fidelity_report([p for p in view.points(STANDALONE) if p.schedule in wanted],
                               view.points(longer.name), view.maximize)

    def retrained(view: StudyView) -> int:
        return len(wanted & {p.schedule for p in view.points(longer.name)})

    def report(now: optuna.Study) -> None:
        if on_progress is None:  # reading the study costs a query: only for someone who asked
            return
        view = StudyView(now, cfg)
        done = retrained(view)
        on_progress(done, k, next(iter(so_far(view)), None) if done >= 3 else None)

    left = k - retrained(view)
    log.info("retraining %d schedules of study %r at %dx its %d steps (%d seed(s) each)%s", left, study.study_name,
             budget, cfg.train.steps, cfg.seeds, _estimate(view, left * budget * cfg.seeds))
    report(study)
    # the study's own measure first: trials it queued untagged (a grid's rest) run at its budget
    objective = Objective(cfg, StandaloneMeasure(cfg, precision=precision), longer)
    measure_schedules(study, objective, chosen, longer.name, callbacks=[lambda now, trial: report(now)])
    return so_far(StudyView(study, cfg))


def _estimate(view: StudyView, trainings: int) -> str:
    """About how long ``trainings`` of the study's own length take, from the seconds its standalone
    trainings took here (a longer budget takes its multiple of them)."""
    seconds = [r.train_seconds / max(1, len(r.seed_scores)) for r in view.records
               if r.complete and r.measurement == STANDALONE and r.reused_from is None and r.train_seconds]
    if not trainings or not seconds:
        return ""
    return f": about {trainings * sum(seconds) / len(seconds) / 60:.0f} min ({len(seconds)} of its trainings took " \
           f"{sum(seconds) / len(seconds):.0f} s each)"
