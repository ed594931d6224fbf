"""``spanmix show``: the study's front in the terminal, and every trial as a CSV table."""

from __future__ import annotations

import argparse
from pathlib import Path

from spanmix.search import StudyView
from spanmix.space import ConfigError
from spanmix.studies.commands.common import add_study_args, open_named, writable
from spanmix.studies.report import (
    fidelity_frame,
    print_difference,
    print_summary,
    trials_frame,
)


def add(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("show", help="the study's Pareto front in the terminal; --csv for every trial",
                       description="Print the study's state, its Pareto front and the rank fidelity it measured; "
                       "with --compare A B the paired difference of two schedules (seed k of each starts from the same weights and "
                       "reads the same batches, so what a seed does to both alike cancels in it; on --quality's score "
                       "where given); "
                       "with --csv write every trial as a flat table (quality, cost, parameters, duration, schedule, "
                       "measurement, cost ratio, n_full and every score) and, beside it, FILE-fidelity.csv with the "
                       "fidelity figures.")
    add_study_args(p)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--csv", help="write every trial to this CSV file")
    p.add_argument("--quality", metavar="SCORE",
                   help="the front on another score the trials hold (e.g. recall, code/loss); default: the study's")
    out.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="the paired difference A - B of two schedules' quality, with its 95%% interval and a verdict "
                   "(better or tie); A and B are trial numbers or schedule texts, e.g. --compare 10 'F S8 S8'")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.csv:
        writable(Path(args.csv), "--csv")
    study, cfg, _ = open_named(args)
    view = StudyView(study, cfg)
    if args.quality is not None and args.quality not in view.scores:
        raise ConfigError(f"--quality {args.quality!r} is not a score of study {view.name!r}; "
                          f"its scores: {', '.join(view.scores) or 'none yet'}")
    if args.compare:
        a, b = (view.point(ref) for ref in args.compare)
        print_difference(view, a, b, args.quality)
        return 0
    print_summary(view, args.quality)
    if args.csv:
        csv = Path(args.csv)
        trials_frame(view).to_csv(csv, index=False)
        print(f"wrote {csv}")
        fidelity = fidelity_frame(view)
        if len(fidelity):
            path = csv.with_name(csv.stem + "-fidelity.csv")
            fidelity.to_csv(path, index=False)
            print(f"wrote {path}")
    return 0
