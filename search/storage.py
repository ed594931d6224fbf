"""Where studies live: Optuna RDB storage (SQLite, PostgreSQL), checked before any work, with
heartbeats that fail a dead worker's trial, say why, and retry its schedule."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Iterator

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from spanmix.proxies.files import outermost_missing
from spanmix.search import record
from spanmix.search.logs import stable_enough
from spanmix.space import ConfigError

BACKENDS = {"sqlite": None, "postgresql": "pip install 'spanmix[postgres]'"}
ALLOWED = "sqlite:///FILE or postgresql://USER@HOST:PORT/DB"


def check_storage_url(url: str) -> str:
    """Reject what cannot be a storage URL, or whose database driver is not installed, before
    anything runs. Writes nothing."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        backend = parsed.get_backend_name()
        dialect = parsed.get_dialect() if backend in BACKENDS else None
    except (ArgumentError, ValueError, NoSuchModuleError):
        raise ConfigError(f"storage {url!r} is not a database URL; allowed: {ALLOWED}") from None
    if dialect is None:
        raise ConfigError(f"storage {url!r}: backend {backend!r} is not supported; allowed: {ALLOWED}")
    try:
        dialect.import_dbapi()
    except ImportError:
        raise ConfigError(f"storage {url!r} needs the {dialect.driver} driver: {BACKENDS[backend]}") from None
    return url


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL; None for other backends and in-memory SQLite."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


class _Storage(RDBStorage):
    """RDB storage that writes why a trial failed when its heartbeat stops (Optuna fails it
    without a word)."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        for trial_id in stale:
            try:
                for key, value in record.stale(self.get_trial(trial_id).user_attrs, self.grace_period).items():
                    self.set_trial_user_attr(trial_id, key, value)
            except UpdateFinishedTrialError:  # another worker got there first
                pass
        return stale


def retry_stale(study: optuna.Study, trial: FrozenTrial, max_retry: int = 2) -> None:
    """Queue a stale trial's parameters again (Optuna's retry callback, but the retry starts
    without the failed attempt's ``failure``)."""
    system_attrs = record.retry_bookkeeping(trial)
    if len(system_attrs[record.RETRY_HISTORY]) > max_retry:
        return
    study.add_trial(optuna.create_trial(
        state=TrialState.WAITING,
        params=trial.params,
        distributions=trial.distributions,
        user_attrs=record.retried(trial.user_attrs),
        system_attrs=system_attrs,
    ))


# Optuna writes its schema on the first connection to a new database. Two processes doing so at
# once (a launch and a worker started together) collide: SQLite says one of these, PostgreSQL
# "duplicate key". The loser opens it again once the winner is done (measured: 8 of 15 rounds
# of 4 processes collided before this retry).
SCHEMA_RACE = ("already exists", "UNIQUE constraint failed", "duplicate key", "database is locked")
SCHEMA_RETRIES = 5


def open_storage(url: str, heartbeat_seconds: int = 10, create: bool = True) -> RDBStorage:
    """RDB storage with heartbeats: a trial whose worker died is failed after three missed beats
    and its parameters retried (twice at most). ``create=False`` refuses a SQLite file that does
    not exist instead of making one. Connection problems are :class:`ConfigError`."""
    from sqlalchemy.exc import SQLAlchemyError

    check_storage_url(url)
    path = sqlite_file(url)
    if path is not None and not create and not path.is_file():
        raise ConfigError(f"storage {url!r}: there is no database at {path}; launch a study there first")
    if path is not None and create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"storage {url!r}: cannot create folder {path.parent}: {err.strerror}") from None
    attempt = 0
    while True:
        try:
            with stable_enough():  # heartbeats are what makes resume safe
                return _Storage(
                    url,
                    heartbeat_interval=heartbeat_seconds,
                    grace_period=3 * heartbeat_seconds,
                    heartbeat_stale_trial_callback=retry_stale,
                )
        except SQLAlchemyError as err:
            reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
            if attempt < SCHEMA_RETRIES and any(s in reason for s in SCHEMA_RACE):
                time.sleep(0.1 * 2**attempt)
                attempt += 1
                continue
            raise ConfigError(f"storage {url!r} cannot be used: {reason}") from None


@contextlib.contextmanager
def undone_on_error(*paths: Path) -> Iterator[None]:
    """A command that fails leaves nothing behind: remove each path (with the folders above it
    that it created) that did not exist before the block and exists after it failed."""
    created = [top for top in map(outermost_missing, paths) if top is not None]
    try:
        yield
    except BaseException:
        for top in created:
            if top.is_dir():
                shutil.rmtree(top, ignore_errors=True)
            elif top.exists():
                top.unlink()
        raise
