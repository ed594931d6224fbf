"""What the commands share: the options that name a study, opening it, checks of arguments before
any work, leaving nothing behind on failure, the progress bar and the end of a run."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Callable, Iterator

import optuna
from tqdm import tqdm

from spanmix.search import (
    StudyConfig,
    StudyView,
    check_storage_url,
    finished,
    open_storage,
    pareto_front,
)
from spanmix.search.calibration import Calibration
from spanmix.search.logs import quiet_libraries
from spanmix.search.run import Stage
from spanmix.search.study import config_of
from spanmix.space import ConfigError, require_name
from spanmix.studies.config import load_config, preset_names
from spanmix.studies.dashboard import page
from spanmix.studies.export import export_trial
from spanmix.studies.report import print_summary


def default_storage(out: Path) -> str:
    return f"sqlite:///{out / 'study.db'}"


def study_storage(name: str, out: Path) -> str:
    """Where a reading command finds study ``name`` by default: in ``out`` when the study was
    launched with that ``--out``, else where ``launch`` puts it by default (so ``--out`` can name a
    new folder to write into)."""
    launched = out / "study.db"
    return default_storage(out if launched.is_file() else Path(f"runs/{name}"))


def add_study_args(p: argparse.ArgumentParser) -> None:
    """``--study``, ``--storage`` and ``--out``: the options of every command that reads a study."""
    p.add_argument("--study", required=True, help="the study name (a preset's name unless --name changed it)")
    p.add_argument("--storage", help="Optuna storage URL (default: OUT/study.db where --out holds one, else "
                   "sqlite:///runs/STUDY/study.db)")
    p.add_argument("--out", help="folder for written files (default: runs/STUDY)")


def add_config_args(p: argparse.ArgumentParser) -> None:
    """``--preset`` or ``--config``, ``--name``, ``--storage`` and ``--out``: the options of every
    command that starts from a study's configuration."""
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help=f"a built-in study: {', '.join(preset_names())}")
    source.add_argument("--config", help="a TOML file with [study], [space], [proxy], [data], [train] sections")
    p.add_argument("--name", help="study name (default: the config's study.name)")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///OUT/study.db)")
    p.add_argument("--out", help="folder for the database, dashboard and export (default: runs/NAME)")


def from_config(args: argparse.Namespace, **overrides: object) -> tuple[StudyConfig, Path, str]:
    """The configuration ``--preset``/``--config`` names (``--name`` and ``overrides`` applied to
    ``[study]``), the folder to write to and the checked storage URL; nothing is written."""
    cfg = load_config(args.preset, args.config, {"name": args.name, **overrides})
    out = Path(args.out or f"runs/{cfg.name}")
    return cfg, out, check_storage_url(args.storage or default_storage(out))


def open_named(args: argparse.Namespace) -> tuple[optuna.Study, StudyConfig, Path]:
    """The study ``--study`` names, which must exist (looking at a study never creates one); its
    configuration; and the folder to write to."""
    quiet_libraries()
    name = require_name(args.study, "--study")
    out = Path(args.out or f"runs/{name}")
    url = args.storage or study_storage(name, out)
    storage = open_storage(url, create=False)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise ConfigError(f"--study {name!r} is not in {url}; it holds: {names or 'no study'}") from None
    return study, config_of(study), out


def check_timeout(timeout: float | None) -> None:
    if timeout is not None and not 0 < timeout < float("inf"):
        raise ConfigError(f"--timeout must be a number of seconds > 0 (got {timeout})")


def check_positive(value: int | None, option: str) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"{option} must be a whole number >= 1 (got {value})")


def writable(path: Path, what: str) -> Path:
    """Refuse, before any work, to write where the folder is missing or a folder is in the way."""
    if not path.parent.is_dir():
        raise ConfigError(f"{what} {str(path)!r}: folder {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a folder; give a file name")
    return path


@contextlib.contextmanager
def progress_bar(name: str, total: int, measurement: str, disabled: bool) -> Iterator[Callable[[optuna.Study], None] | None]:
    """A progress bar of distinct schedules measured at ``measurement``; yields the callback that
    updates it (None when disabled)."""
    with stage_bars(name, disabled) as stage:
        yield stage(name, total, measurement)


@contextlib.contextmanager
def stage_bars(name: str, disabled: bool) -> Iterator[Stage]:
    """A progress bar for each stage of a run, one after the other (see
    :func:`spanmix.search.run.launch`): schedules measured at the stage's measurement, with the
    front so far, or for a stage without one (calibration) the schedules done."""
    bars: list[tqdm] = []

    def stage(what: str, total: int, measurement: str | None) -> Callable[[optuna.Study], None] | None:
        for bar in bars:
            bar.close()
        bar = tqdm(total=total, unit="schedule", desc=what if measurement is None else name, disable=disabled,
                   dynamic_ncols=True)
        bars.append(bar)

        def update(study: optuna.Study) -> None:
            if measurement is None:
                bar.update(1)
                return
            bar.update(finished(study, measurement) - bar.n)
            bar.set_postfix(front=len(pareto_front(study)), trials=len(study.trials))

        return None if disabled else update

    try:
        yield stage
    finally:
        for bar in bars:
            bar.close()


def print_calibration(result: Calibration, advice: str | None, force: bool) -> None:
    """What calibration read, what it says of the strategy's settings, and its verdict (a budget
    that separates nothing is refused after this, unless ``force``)."""
    print("\n".join(result.table()))
    if advice:
        print(f"warning: {advice}")
    if result.separated:
        print(result.verdict())
    elif force:
        print(f"warning: {result.verdict()}; running anyway (--force)")


def finish(study: optuna.Study, cfg: StudyConfig, out: Path, report: bool) -> int:
    """The summary, then the dashboard and the knee's export; exit 1 when no trial finished and
    some failed (a study that produced nothing is not a success)."""
    view = StudyView(study, cfg)
    print_summary(view)
    failed = view.failed()
    if failed and not view.points():
        first = next((r.failure for r in failed if r.failure), "no reason recorded")
        print(f"spanmix: every trial failed ({len(failed)}); the first: {first}", file=sys.stderr)
        return 1
    if report:
        out.mkdir(parents=True, exist_ok=True)
        path = out / "dashboard.html"
        path.write_text(page(view))  # the view already read and reported on: its noise is not computed again
        print(f"\nwrote {path}")
        try:
            for path in export_trial(view, "knee", out):
                print(f"wrote {path}")
        except ConfigError as err:
            print(f"no export: {err}")
    return 0
