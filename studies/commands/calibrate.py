"""``spanmix calibrate``: does the study's budget separate schedules, before the study spends it?"""

from __future__ import annotations

import argparse

from spanmix.search.calibration import separation
from spanmix.search.logs import quiet_libraries
from spanmix.search.run import calibrate_study
from spanmix.search.storage import sqlite_file
from spanmix.studies.commands.common import (
    add_config_args,
    from_config,
    print_calibration,
    stage_bars,
)


def add(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "calibrate", help="can the study's budget tell schedules apart? measure it before the study",
        description="Train the space's dearest and cheapest schedules with the study's seeds (at least 2) and "
        "score each training at 1/4, 1/2 and all of its steps. Print, for each, the two schedules' gap in units of "
        f"the seed noise and each long-range probe's accuracy against chance. Exit 0 when at the full budget the "
        f"gap is at least {separation(2):.3g} noise units at 2 seeds ({separation(3):.3g} at 3, {separation(4):.3g} from 4 on: "
        "two equal schedules reach it 5% of the time or less where seed noise is normal) and the dearest schedule learned every probe (twice chance or "
        "more), else exit 2 with the figures and what would help. The trainings are stored in the study's storage: "
        "a study with 2 seeds or more reuses them.",
        epilog="examples:\n  spanmix calibrate --preset quick\n  spanmix calibrate --config my.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg, out, storage = from_config(args)
    quiet_libraries()
    with stage_bars(cfg.name, args.no_progress) as stage:
        calibrate_study(cfg, storage, progress=not args.no_progress, stage=stage,
                        on_calibration=lambda result, advice: print_calibration(result, advice, False),
                        new_files=(out, *filter(None, [sqlite_file(storage)])))
    return 0
