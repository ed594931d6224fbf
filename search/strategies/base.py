"""The interface every search strategy implements, and the options a run is given.

A strategy decides how a study spends its budget: which measurement its search is made at, how
many worker processes it can use, how many schedules it aims to measure, and how it runs. The rest
of spanmix asks the strategy and never which strategy it is, as Optuna's study asks its sampler.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar

import optuna

from spanmix.search.record import STANDALONE
from spanmix.space import ConfigError

if TYPE_CHECKING:  # the configuration lists strategies by name: it imports this package
    from spanmix.search.calibration import Calibration
    from spanmix.search.config import StudyConfig
    from spanmix.search.view import StudyView

Progress = Callable[[optuna.Study], None]


@dataclass(frozen=True)
class RunOptions:
    """How one run of a study goes (none of it changes what is measured).

    Attributes:
        timeout: seconds after which no new trial starts (None: none).
        workers: processes sharing the storage on this machine.
        on_progress: called with the study as trials finish.
        workdir: a folder of the run's own (checkpoints, shared weights).
        retry_failed: train again schedules whose training failed.
        threads: torch CPU threads for this process (None: torch's default, every core).
        study: the study as the run already opened it (None: the strategy opens it from the
            storage URL), so a launch opens it once.
    """

    timeout: float | None = None
    workers: int = 1
    on_progress: Progress | None = None
    workdir: Path | None = None
    retry_failed: bool = False
    threads: int | None = None
    study: optuna.Study | None = None

    def callbacks(self) -> list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]]:
        """``on_progress`` as Optuna trial callbacks."""
        progress = self.on_progress
        return [lambda study, trial: progress(study)] if progress else []


class Strategy(ABC):
    """How a study turns schedules into measurements.

    Attributes:
        name: the ``[study] strategy`` value that selects it.
        measurement: the measurement its search is made at (trials record it).
        max_workers: how many processes can share its work (None: any).
        single_process: why it cannot use more than ``max_workers``, for the refusal.
        heals: what it makes of a checkpoint's healing, for the refusal of a zero-shot one (empty:
            it scores a checkpoint zero-shot too).
        section: the dataclass of its own config section, the table named as the strategy (None:
            it has none); a frozen dataclass with ``from_dict`` and ``to_dict``.
    """

    name: ClassVar[str]
    measurement: ClassVar[str]
    max_workers: ClassVar[int | None] = None
    single_process: ClassVar[str] = ""
    heals: ClassVar[str] = ""
    section: ClassVar[type | None] = None

    def check(self, cfg: StudyConfig, workers: int) -> None:
        """Refuse, before any work, what this strategy cannot do with ``workers`` processes, or
        with a checkpoint it would not heal."""
        if self.heals and cfg.subject.pretrained and not cfg.trains:
            raise ConfigError(f"study.strategy {self.name!r} on a checkpoint {self.heals}: set base.heal_steps > 0 "
                              "(or strategy = standalone to score zero-shot)")
        if self.max_workers is not None and workers > self.max_workers:
            raise ConfigError(f"--workers {workers}: the {self.name} strategy {self.single_process}; use "
                              f"{self.max_workers}")

    def target(self, cfg: StudyConfig, n_trials: int) -> int:
        """The distinct schedules its search will have measured when ``n_trials`` are asked for."""
        return min(n_trials, cfg.space.size())

    def advise(self, cfg: StudyConfig, calibration: Calibration) -> str | None:
        """What the study's calibration says about this strategy's settings, as a warning (None:
        nothing)."""
        return None

    def chain(self, measurements: set[str], searched: str) -> list[str]:
        """The measurements of its schedules that its search compares, cheapest first, each read
        against the next for rank fidelity: its search's (``searched``) against standalone training."""
        return [searched, STANDALONE] if searched != STANDALONE else []

    def summary(self, view: StudyView) -> list[str]:
        """Lines the study's report adds about how this strategy spent the budget."""
        return []

    @abstractmethod
    def run(self, cfg: StudyConfig, storage_url: str, target: int, options: RunOptions) -> optuna.Study:
        """Run (or resume) the study until ``target`` schedules are measured at
        :attr:`measurement`, then whatever the strategy does after its search."""

    def join(self, cfg: StudyConfig, storage_url: str, target: int, options: RunOptions,
             stream: int | None = None) -> optuna.Study:
        """One more worker's share of a running study (``stream`` numbers its seed stream)."""
        raise ConfigError(f"study {cfg.name!r} uses the {self.name} strategy, which {self.single_process}; "
                          "workers join studies whose strategy shares its work")
