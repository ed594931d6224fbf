"""``spanmix calibrate``: does the study's budget separate schedules, before the study spends it?"""

from __future__ import annotations

import argparse
from pathlib import Path

from spanmix.search import check_storage_url, preflight
from spanmix.search.calibration import SEPARATION, calibrate
from spanmix.search.logs import quiet_libraries
from spanmix.search.storage import sqlite_file
from spanmix.space import ConfigError
from spanmix.studies.commands.common import default_storage, undone_on_error
from spanmix.studies.config import load_config, preset_names


def add(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "calibrate", help="can the study's budget tell schedules apart? measure it before the study",
        description="Train the space's dearest and cheapest schedules with the study's seeds (at least 2) and "
        "score each training at 1/4, 1/2 and all of its steps. Print, for each, the two schedules' gap in units of "
        f"the seed noise and each long-range probe's accuracy against chance. Exit 0 when at the full budget the "
        f"gap is at least {SEPARATION:g} noise units and the dearest schedule learned every probe (twice chance or "
        "more), else exit 2 with the figures and what would help. The trainings are stored in the study's storage: "
        "a study with 2 seeds or more reuses them.",
        epilog="examples:\n  spanmix calibrate --preset quick\n  spanmix calibrate --config my.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help=f"a built-in study: {', '.join(preset_names())}")
    source.add_argument("--config", help="a TOML study config")
    p.add_argument("--name", help="study name (default: the config's study.name)")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///OUT/study.db)")
    p.add_argument("--out", help="the study's folder (default: runs/NAME)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.preset, args.config, {"name": args.name})
    preflight(cfg, progress=True)
    out = Path(args.out or f"runs/{cfg.name}")
    storage = check_storage_url(args.storage or default_storage(out))
    quiet_libraries()
    with undone_on_error(out, *filter(None, [sqlite_file(storage)])):
        result = calibrate(cfg, storage)
    print("\n".join(result.table()))
    if not result.separated:
        raise ConfigError(result.verdict())
    print(result.verdict())
    return 0
