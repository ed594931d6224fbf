"""What spanmix prints: its own log lines on stderr, and the libraries it drives kept quiet."""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from typing import Iterator

import optuna


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now, so repeated in-process runs (tests, notebooks)
    never log to a stream an earlier run's caller has closed."""

    @property  # type: ignore[override]
    def stream(self):  # type: ignore[no-untyped-def]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # type: ignore[no-untyped-def]
        pass


def log_to_stderr(trial_level: int = logging.WARNING) -> None:
    """spanmix's log lines on stderr; ``trial_level`` for the per-trial lines (``spanmix.search``:
    INFO shows every trial, WARNING only failures). The CLI sets this up, and each worker process
    it spawns repeats it for itself."""
    logger = logging.getLogger("spanmix")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.INFO)
    logging.getLogger("spanmix.search").setLevel(trial_level)


def quiet_libraries() -> None:
    """Keep the terminal to the progress bar, spanmix's per-trial lines and the summary: no
    Optuna per-trial lines or failure tracebacks (spanmix logs one line per failed trial), no
    Lightning banners and tips, no warnings that heartbeats are experimental."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@contextlib.contextmanager
def stable_enough() -> Iterator[None]:
    """Call Optuna APIs it still marks experimental (heartbeats since 2.8, ``fail_stale_trials``
    since 2.9, metric names since 3.2) without their warning: spanmix relies on them on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield
