"""``spanmix worker``: join a running study as one more worker, on this machine or another."""

from __future__ import annotations

import argparse
import secrets

from spanmix.search import join_study, strategies
from spanmix.studies.commands.common import (
    add_study_args,
    check_positive,
    check_timeout,
    default_storage,
    finish,
    open_named,
    progress_bar,
)


def add(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "worker", help="join a running study as one more worker (on this machine or another)",
        description="Join an existing study and measure schedules for it until it holds its n_trials. The "
        "configuration is read from the study itself, so a worker on another machine needs only the storage "
        "URL and the study name. Each worker draws from its own seed stream; a schedule another worker is "
        "measuring it helps with (it trains one of its seeds not yet begun) or leaves, and it never trains a "
        "schedule (or a seed) already measured. Ctrl-C or a kill loses no finished trial; "
        "the trial it was running is failed by the heartbeat and retried. A study whose strategy trains in one "
        "process refuses extra workers.",
        epilog="example, on every machine:\n  spanmix worker --study masformer --storage "
        "postgresql://me@db-host:5432/spanmix",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_study_args(p)
    p.add_argument("--n-trials", type=int, help="distinct schedules the study should hold (default: the study's)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--threads", type=int, help="CPU threads for training (default: all this machine's cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--retry-failed", action="store_true", help="train again schedules whose training failed")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_positive(args.n_trials, "--n-trials")
    check_timeout(args.timeout)
    check_positive(args.threads, "--threads")
    study, cfg, out = open_named(args)
    strategy = strategies.get(cfg.strategy)
    target = args.n_trials or cfg.n_trials
    with progress_bar(cfg.name, strategy.target(cfg, target), strategy.measurement, args.no_progress) as progress:
        # a random stream: workers on other machines cannot agree on numbers without talking
        study = join_study(cfg, args.storage or default_storage(out), target, args.timeout, stream=secrets.randbits(32),
                           threads=args.threads, retry_failed=args.retry_failed, on_progress=progress, workdir=out,
                           progress=not args.no_progress)
    return finish(study, cfg, out, report=False)
