"""``spanmix fidelity``: retrain a study's schedules at a larger budget, and say whether its
ranking can be trusted."""

from __future__ import annotations

import argparse

from tqdm import tqdm

from spanmix.search import Fidelity, run_fidelity
from spanmix.studies.commands.common import add_study_args, open_named


def add(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "fidelity", help="retrain a finished study's schedules at a larger budget: is its ranking to be trusted?",
        description="Retrain K schedules that the study trained standalone (its front first, then near-front "
        "controls) at BUDGET times the study's steps, and report Kendall tau, Spearman rho (with 95%% bootstrap "
        "intervals) and top-3 overlap between the study's numbers and the longer training's. High agreement "
        "says the study's budget was enough to rank schedules; low agreement says train longer. The retrained "
        "trials are stored in the study (measurement standalone-BUDGETx), so an interrupted run resumes.",
        epilog="example: spanmix fidelity --study quick --budget 4 --schedules 6\n\nIt says at the start how many "
        "trainings it will run and about how long they take (from the study's own trainings), and shows a bar of "
        "schedules retrained with the rank correlation so far once three are back.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_study_args(p)
    p.add_argument("--budget", type=int, default=4, help="multiple of the study's training steps (default 4)")
    p.add_argument("--schedules", type=int, default=6, help="how many schedules to retrain (default 6)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    study, cfg, _ = open_named(args)
    with tqdm(total=args.schedules, unit="schedule", desc=f"fidelity {args.budget}x", disable=args.no_progress,
              dynamic_ncols=True) as bar:

        def progress(done: int, total: int, so_far: Fidelity | None) -> None:
            bar.update(done - bar.n)
            if so_far is not None:
                bar.set_postfix(tau=f"{so_far.kendall_tau:+.2f}", n=so_far.n)

        report = run_fidelity(cfg, study, args.budget, args.schedules, None if args.no_progress else progress)
    print(f"rank fidelity of the study's {cfg.train.steps}-step numbers against {args.budget * cfg.train.steps} steps "
          "(95% bootstrap intervals):")
    for f in report:
        print("  " + f.line())
    if not report:
        print("  too few schedules were measured both ways (a failed training leaves its schedule out)")
    return 0
