"""``spanmix launch``: run (or resume) a study from a preset or a TOML config."""

from __future__ import annotations

import argparse

from spanmix.search.logs import quiet_libraries
from spanmix.search.run import launch
from spanmix.search.storage import sqlite_file
from spanmix.studies.commands.common import (
    add_config_args,
    check_positive,
    check_timeout,
    finish,
    from_config,
    print_calibration,
    stage_bars,
)


def add(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "launch", help="run (or resume) a study from a preset or a TOML config",
        description="Run a multi-objective study (quality vs cost) over attention schedules. Relaunching "
        "the same study name on the same storage resumes it: finished trials are kept, a trial "
        "killed mid-way is retried, and a schedule already measured is never trained again. It starts with "
        "calibration (see `spanmix calibrate --help`): the space's dearest and cheapest schedules, trained with "
        "the study's seeds (at least 2), must be told apart by the budget, or the launch stops with exit 2 "
        "before the rest of the space is spent (--force runs on; [study] calibrate = false skips the stage). "
        "At the end it writes the dashboard and the knee schedule under --out.",
        epilog="examples:\n  spanmix launch --preset quick\n  spanmix launch --config my.toml --n-trials 40 --workers 2\n"
        "  spanmix launch --preset masformer --storage postgresql://me@127.0.0.1/spanmix",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.add_argument("--n-trials", type=int, help="distinct schedules to have measured, counting earlier runs (default: the config's)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the storage (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help="do not write the dashboard and export at the end")
    p.add_argument("--force", action="store_true",
                   help="run the study even when calibration finds that its budget does not separate schedules")
    p.add_argument("--retry-failed", action="store_true",
                   help="train again schedules whose training failed (by default a failure is remembered)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # every check before anything is written: a refused launch leaves no folder or database
    check_positive(args.workers, "--workers")
    check_timeout(args.timeout)
    cfg, out, storage = from_config(args, n_trials=args.n_trials)
    quiet_libraries()
    with stage_bars(cfg.name, args.no_progress) as stage:
        launched = launch(cfg, storage, workers=args.workers, timeout=args.timeout, force=args.force, workdir=out,
                          retry_failed=args.retry_failed, progress=not args.no_progress, stage=stage,
                          on_calibration=lambda result, advice: print_calibration(result, advice, args.force),
                          new_files=(out, *filter(None, [sqlite_file(storage)])))
    if cfg.calibrate and launched.skipped:
        print(f"calibration: skipped, {launched.skipped}")
    return finish(launched.study, cfg, out, report=not args.no_report)
