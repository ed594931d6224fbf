"""What spanmix prints and tabulates about a study: the summary, every trial as a table, and the
rank-fidelity figures, all from one :class:`~spanmix.search.StudyView`."""

from __future__ import annotations

import pandas as pd

from spanmix.search import StudyView


def print_summary(view: StudyView, score: str | None = None) -> None:
    """The trials by state, the front (on the study's quality or on ``score``) with its knee, the
    wall time by stage and every rank-fidelity comparison the study holds."""
    cfg = view.config
    print(f"\nstudy {view.name!r}: " + ", ".join(f"{n} {s.lower()}" for s, n in view.states.items()))
    front = view.front(score=score)
    if not front:
        print("no finished feasible trial yet")
        return
    quality = score or cfg.quality
    chosen = view.knee(score)
    print(f"Pareto front ({quality} vs {cfg.cost}, measured {view.final}):")
    print(f"  {'trial':>5}  {'schedule':<40} {quality:>12} {'cost ratio':>10}")
    for p in front:
        mark = "  <- knee" if p == chosen else ""
        print(f"  {p.number:>5}  {p.schedule:<40} {p.quality:>12.4f} {p.cost_ratio:>10.1%}{mark}")
    if view.stage_seconds:
        print("wall time by stage: " + ", ".join(f"{k} {v:.0f} s" for k, v in view.stage_seconds.items()))
    for cheap, dear, report in view.comparisons:
        print(f"rank fidelity of {cheap} against {dear} (95% bootstrap intervals):")
        for f in report:
            print("  " + f.line())
    if not view.comparisons:
        print("rank fidelity: not measured yet; `spanmix fidelity` retrains schedules at a larger budget to measure it")


def trials_frame(view: StudyView) -> pd.DataFrame:
    """Every trial as a flat table: number, state, the two values, the parameters, the duration,
    then the schedule, its measurement, cost ratio, reuse, failure, training and every score."""
    rows = []
    for r in view.records:
        values = r.values or (None, None)
        row = {"number": r.number, "state": r.state.name, "quality": values[0], "cost": values[1],
               **{f"params_{k}": v for k, v in r.params.items()},
               "duration": r.duration if r.duration is not None else pd.NaT,
               "schedule": r.schedule, "measurement": r.measurement, "cost_ratio": r.cost_ratio,
               "reused_from": r.reused_from, "failure": r.failure, "tokens_seen": r.tokens_seen,
               "train_seconds": r.train_seconds, "precision": r.precision, "n_full": r.layers.n_full if r.layers is not None else None}
        rows.append(row | {f"score:{name}": value for name, value in r.scores.items()})
    frame = pd.DataFrame(rows)
    params = sorted(c for c in frame.columns if c.startswith("params_"))
    first = ["number", "state", "quality", "cost", *params, "duration"]
    return frame[first + [c for c in frame.columns if c not in first]] if rows else frame


def fidelity_frame(view: StudyView) -> pd.DataFrame:
    """Every rank-fidelity figure the study holds, one row per comparison and subset."""
    return pd.DataFrame([{"cheap": cheap, "dear": dear, **f.to_dict()} for cheap, dear, report in view.comparisons
                         for f in report])
