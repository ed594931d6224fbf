"""What spanmix prints and tabulates about a study: the summary, every trial as a table, and the
rank-fidelity figures, all from one :class:`~spanmix.search.StudyView`."""

from __future__ import annotations

import pandas as pd

from spanmix.search import Point, StudyView, strategies
from spanmix.search.front import maximized
from spanmix.search.noise import LEVEL, Noise


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
    chosen, noise = view.knee(score), view.noise(score)
    if not noise.measured:
        print(f"Pareto front ({quality} vs {cfg.cost}, measured {view.final}{cfg.subject.header}):")
        print(f"  {'trial':>5}  {'schedule':<40} {quality:>12} {'cost ratio':>10}")
        for p in front:
            mark = "  <- knee" if p == chosen else ""
            print(f"  {p.number:>5}  {p.schedule:<40} {p.quality:>12.4f} {p.cost_ratio:>10.1%}{mark}")
        print(cfg.unmeasured_noise)
    else:
        print_noisy_front(view, front, noise, quality, chosen)
    for line in strategies.get(cfg.strategy).summary(view):
        print(line)
    if view.stage_seconds:
        print("wall time by stage: " + ", ".join(f"{k} {v:.0f} s" for k, v in view.stage_seconds.items()))
    for cheap, dear, report in view.comparisons:
        print(f"rank fidelity of {cheap} against {dear} (95% bootstrap intervals):")
        for f in report:
            print("  " + f.line())
    if view.repeatability:
        print(f"repeatability of {view.final} (each schedule's seed 1 against its seed 2: what the reference "
              "itself can order; 95% bootstrap intervals):")
        for f in view.repeatability:
            print("  " + f.line())
    if not view.comparisons and cfg.trains:
        print("rank fidelity: not measured yet; `spanmix fidelity` retrains schedules at a larger budget to measure it")
    elif not view.comparisons:
        print("rank fidelity: not measured; zero-shot scores are compared with healed ones by shared healing "
              "([study] strategy = \"supernet\" with [base] heal_steps > 0)")


def _interval(noise: Noise, p: Point) -> str:
    lo, hi = noise.intervals[p.number]
    return f"[{lo:.4f}, {hi:.4f}]"


def print_noisy_front(view: StudyView, front: list[Point], noise: Noise, quality: str, chosen: Point | None) -> None:
    """The front with each point's value and 95% interval on the study's noise basis (its seeds,
    or resamples of its validation sequences), the schedules tied with it, how stable the knee is
    and how far apart the front's points are in units of the noise."""
    cfg, basis = view.config, noise.basis
    assert basis is not None
    print(f"Pareto front ({quality} vs {cfg.cost}, measured {view.final}{cfg.subject.header}; {noise.estimate}):")
    print(f"  {'trial':>5}  {'schedule':<40} {quality:>12} {'95% interval':>20} {'cost ratio':>10}")
    rows = [(p, "  <- knee" if p == chosen else "") for p in front] + [(p, "  (tied)") for p in noise.tied]
    for p, mark in sorted(rows, key=lambda r: (r[0].cost, r[0].number)):
        print(f"  {p.number:>5}  {p.schedule:<40} {p.quality:>12.4f} {_interval(noise, p):>20} {p.cost_ratio:>10.1%}{mark}")
    if noise.tied:
        print(f"tied: {len(noise.tied)} schedule(s) off the front that no schedule costing no more is better than "
              f"({basis.test}, {LEVEL:.0%} level): {basis.resampled} cannot tell them from the front")
    if chosen is not None and noise.knee_share is not None:
        clear = "" if noise.knee_share >= 0.9 else ": not clearly separated from its neighbours"
        print(f"knee: trial {chosen.number} in {noise.knee_share:.0%} of {noise.draws} resamples of {basis.resampled}{clear}")
    if noise.resolution:
        gaps = ", ".join(f"{g:.1f}" for g in noise.resolution)
        print(f"resolution: neighbouring front points are {gaps} noise units apart "
              f"(noise unit: {basis.unit} {noise.unit:.4g})")


def print_difference(view: StudyView, a: Point, b: Point, score: str | None = None) -> None:
    """The paired difference of ``a`` and ``b`` in the study's quality (or ``score``), its 95%
    interval, what it was paired over and the verdict of the study's one-sided test (a tie where
    neither is better). A difference that cannot be taken is refused before anything is printed."""
    d, quality = view.compare(a, b, score), score or view.config.quality
    basis = view.basis(a.measurement, score)
    assert basis is not None  # compare refuses a difference without noise
    over = f"{d.pairs} shared seeds" if d.df is not None else f"{d.pairs} paired resamples of the validation sequences"
    df = "" if d.df is None else f", {d.df:.1f} degrees of freedom"
    print(f"trial {a.number} ({a.schedule}) - trial {b.number} ({b.schedule}), {quality} measured {a.measurement}:")
    print(f"  difference {d.estimate:+.4f}, 95% interval [{d.interval[0]:+.4f}, {d.interval[1]:+.4f}] "
          f"(paired over {over}{df}; {basis.test})")
    maximize = maximized(score) if score else view.maximize
    better = "higher" if maximize else "lower"
    p_a, p_b = (d.p_higher, d.p_lower) if maximize else (d.p_lower, d.p_higher)
    if d.better(maximize):
        verdict = f"trial {a.number} is better ({better} {quality}, one-sided p={p_a:.3g} < {LEVEL:g})"
    elif p_b < LEVEL:
        verdict = f"trial {b.number} is better ({better} {quality}, one-sided p={p_b:.3g} < {LEVEL:g})"
    else:
        verdict = (f"tie: neither is shown better at the {LEVEL:g} level (one-sided p={min(p_a, p_b):.3g}); "
                   "the difference is within the noise")
    print(f"  {verdict}; {a.cost_ratio:.1%} against {b.cost_ratio:.1%} of the all-full cost")


def trials_frame(view: StudyView) -> pd.DataFrame:
    """Every trial as a flat table: number, state, the two values, the parameters, the duration,
    then the schedule, its measurement, cost ratio, reuse, failure, training, its seeds with the
    95% interval of its quality (on the study's noise basis, as the front's) and its standing (``front``, ``tied`` with the front,
    ``dominated``; empty where untested), and every score."""
    noise = view.noise()
    front, tied = {p.number for p in view.front()}, {p.number for p in noise.tied}
    rows = []
    for r in view.records:
        basis = view.basis(r.measurement) if r.complete and r.measurement and r.schedule else None
        lo, hi = (basis.interval(r.point) if basis is not None else None) or (None, None)
        tested = noise.measured and r.complete and r.measurement == view.final and lo is not None
        standing = "front" if r.number in front else "tied" if r.number in tied else "dominated" if tested else ""
        values = r.values or (None, None)
        row = {"number": r.number, "state": r.state.name, "quality": values[0], "cost": values[1],
               **{f"params_{k}": v for k, v in r.params.items()},
               "duration": r.duration if r.duration is not None else pd.NaT,
               "schedule": r.schedule, "measurement": r.measurement, "cost_ratio": r.cost_ratio,
               "reused_from": r.reused_from, "failure": r.failure, "tokens_seen": r.tokens_seen,
               "train_seconds": r.train_seconds, "precision": r.precision, "seeds": len(r.seed_scores) or None,
               "quality_lo": lo, "quality_hi": hi, "standing": standing, "n_full": r.layers.n_full if r.layers is not None else None}
        rows.append(row | {f"score:{name}": value for name, value in r.scores.items()})
    frame = pd.DataFrame(rows)
    params = sorted(c for c in frame.columns if c.startswith("params_"))
    first = ["number", "state", "quality", "cost", *params, "duration"]
    return frame[first + [c for c in frame.columns if c not in first]] if rows else frame


def fidelity_frame(view: StudyView) -> pd.DataFrame:
    """Every rank-fidelity figure the study holds, one row per comparison and subset."""
    seeds = [(f"{view.final} seed 1", f"{view.final} seed 2", view.repeatability)] if view.repeatability else []
    return pd.DataFrame([{"cheap": cheap, "dear": dear, **f.to_dict()} for cheap, dear, report in [*view.comparisons, *seeds]
                         for f in report])
