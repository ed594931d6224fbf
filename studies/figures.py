"""The dashboard's figures: each function gathers what it needs from points it is given and
returns a plotly figure, never shows it (as ``optuna.visualization.plot_*`` do)."""

from __future__ import annotations

from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go

from spanmix.search import (
    Fidelity,
    Point,
    StudyConfig,
    StudyView,
    knee,
    maximized,
    rescored,
)
from spanmix.search.fidelity import paired
from spanmix.search.front import fronts
from spanmix.search.layers import full_share, sensitivities
from spanmix.search.logs import stable_enough
from spanmix.search.noise import Noise
from spanmix.space import FREE, Schedule, placement_of

KIND_COLOURS = {"full": "#b2182b", "sliding": "#2166ac", "block": "#1b7837"}
TEXT_LAYERS = 24  # the most layers whose tokens fit in a strip's cells across the page
LAYER_PX = 22  # a layer's width in a deeper model's strips, which then scroll sideways
PLOT_PX = 1000  # the plotting width of a figure on the page (its max-width less the margins)
CELL_TEXT_PX = 48  # the narrowest heatmap cell that holds its number


def _hover(p: Point) -> str:
    scores = "<br>".join(f"{k}: {v:.4g}" for k, v in sorted(p.scores.items()) if "@" not in k)
    reused = f"<br>(reused trial {p.reused_from})" if p.reused_from is not None else ""
    seeds = f" (mean of {len(p.seed_scores)} seeds)" if len(p.seed_scores) > 1 else ""
    return f"trial {p.number}: <b>{p.schedule}</b>{seeds}<br>cost ratio {p.cost_ratio:.1%}{reused}<br>{scores}"


def _error_bars(points: list[Point], noise: Noise | None) -> dict[str, Any] | None:
    """Plotly error bars of the points' 95% intervals on the study's noise basis (None where unmeasured)."""
    if noise is None or not noise.measured:
        return None
    spans = [noise.intervals.get(p.number, (p.quality, p.quality)) for p in points]
    return _asymmetric([p.quality for p in points], spans) | {"thickness": 1.5}


def _asymmetric(values: list[float], spans: list[tuple[float, float]]) -> dict[str, Any]:
    """Plotly error bars from each value to the ends of its interval."""
    return {"type": "data", "symmetric": False, "array": [hi - v for v, (_, hi) in zip(values, spans)],
            "arrayminus": [v - lo for v, (lo, _) in zip(values, spans)]}


def _front_traces(pts: list[Point], front: list[Point], chosen: Point | None, visible: bool,
                  noise: Noise | None = None) -> list[go.Scatter]:
    tied = noise.tied if noise is not None else []
    traces = []
    for feasible, name, symbol in ((True, "trials", "circle"), (False, "over budget", "x")):
        sel = [p for p in pts if p.feasible == feasible and p not in front and p not in tied]
        traces.append(go.Scatter(
            x=[p.cost_ratio for p in sel], y=[p.quality for p in sel], mode="markers", name=name, visible=visible,
            marker={"color": "#999", "symbol": symbol, "size": 8}, hovertext=[_hover(p) for p in sel], hoverinfo="text",
        ))
    if tied:
        traces.append(go.Scatter(
            x=[p.cost_ratio for p in tied], y=[p.quality for p in tied], mode="markers", visible=visible,
            name="tied with the front", marker={"color": "#d6604d", "symbol": "diamond-open", "size": 11},
            error_y=_error_bars(tied, noise), hovertext=[_hover(p) for p in tied], hoverinfo="text",
        ))
    traces.append(go.Scatter(
        x=[p.cost_ratio for p in front], y=[p.quality for p in front], mode="lines+markers", name="Pareto front",
        marker={"color": "#d6604d", "size": 11}, line={"shape": "hv"}, visible=visible, error_y=_error_bars(front, noise),
        hovertext=[_hover(p) for p in front], hoverinfo="text",
    ))
    if chosen is not None:
        traces.append(go.Scatter(
            x=[chosen.cost_ratio], y=[chosen.quality], mode="markers", name=f"knee (trial {chosen.number})",
            marker={"color": "gold", "symbol": "star", "size": 20, "line": {"color": "black", "width": 1}},
            hovertext=[_hover(chosen)], hoverinfo="text", visible=visible,
        ))
    return traces


def front_figure(cfg: StudyConfig, pts: list[Point], scores: list[str] | None = None,
                 noise: Noise | None = None) -> go.Figure:
    """Quality against cost ratio for every trial; the Pareto front joined; the knee starred. With
    ``scores``, a selector shows the front on each of those scores instead of the study's quality.
    With the study's ``noise``, the front and the schedules tied with it carry their 95% intervals."""
    fig = go.Figure()
    names = [cfg.quality] + [s for s in scores or [] if s != cfg.quality]
    spans, buttons = [], []
    for i, name in enumerate(names):
        mine = pts if i == 0 else rescored(pts, name)
        found = fronts(mine, maximized(name))
        front = found[0] if found else []
        start = len(fig.data)
        fig.add_traces(_front_traces(mine, front, knee(front, maximized(name)) if front else None, visible=i == 0,
                                     noise=noise if i == 0 else None))
        spans.append((start, len(fig.data)))
    for name, (start, end) in zip(names, spans):
        visible = [start <= j < end for j in range(len(fig.data))]
        label = f"{name} ({'higher' if maximized(name) else 'lower'} is better)"
        buttons.append({"label": name, "method": "update", "args": [{"visible": visible}, {"yaxis.title.text": label}]})
    if cfg.budget is not None:
        fig.add_vline(x=cfg.budget, line_dash="dot", annotation_text="budget")
    fig.update_layout(
        title="Pareto front: quality vs cost",
        xaxis_title=f"{cfg.cost} relative to all-full attention",
        yaxis_title=f"{cfg.quality} ({'higher' if maximized(cfg.quality) else 'lower'} is better)",
        xaxis_tickformat=".0%", template="plotly_white", height=480,
        updatemenus=[{"buttons": buttons, "x": 1.0, "y": 1.15, "xanchor": "right", "showactive": True}] if len(names) > 1 else [],
    )
    return fig


def _unique(pts: list[Point], front: list[Point]) -> list[Point]:
    """One point per schedule (its first trial), the front's first, cheapest first, then the rest
    by trial number."""
    first: dict[str, Point] = {}
    for p in sorted(pts, key=lambda p: p.number):
        first.setdefault(p.schedule, p)
    on_front = [first[p.schedule] for p in front if p.schedule in first]
    return on_front + [p for p in first.values() if p not in on_front]


def strips_figure(cfg: StudyConfig, pts: list[Point], front: list[Point]) -> go.Figure:
    """Each distinct schedule once as a strip of layers, coloured by kind, shaded by window; the
    front's schedules on top."""
    fig = go.Figure()
    pts, on_front = _unique(pts, front), {p.schedule for p in front}
    windows = sorted({l.window for p in pts for l in p.layers if l.window}) or [1]
    # shapes and text go in at once: plotly re-validates every shape on each add_shape (quadratic)
    shapes, xs, ys, tokens, hovers = [], [], [], [], []
    for row, p in enumerate(pts):
        for i, layer in enumerate(p.layers):
            shade = 1.0 if layer.window is None else 0.35 + 0.5 * windows.index(layer.window) / max(1, len(windows) - 1)
            shapes.append({"type": "rect", "x0": i, "x1": i + 0.95, "y0": row - 0.45, "y1": row + 0.45, "layer": "below",
                           "fillcolor": KIND_COLOURS[layer.kind], "opacity": shade, "line": {"width": 0}})
            xs.append(i + 0.475)
            ys.append(row)
            tokens.append(layer.token)
            hovers.append(_hover(p))
    # a token is written in its cell only where it fits; deeper models scroll sideways (see the page)
    fits = cfg.space.n_layers <= TEXT_LAYERS
    fig.add_scatter(x=xs, y=ys, mode="text" if fits else "markers", text=tokens if fits else None, showlegend=False,
                    textfont={"color": "black", "size": 11}, marker={"opacity": 0, "size": 14},
                    hovertext=[f"layer {x - 0.475:.0f}: {t}<br>{h}" for x, t, h in zip(xs, tokens, hovers)], hoverinfo="text")
    fig.update_layout(shapes=shapes)
    for kind, colour in KIND_COLOURS.items():
        fig.add_scatter(x=[None], y=[None], mode="markers", marker={"color": colour, "size": 12, "symbol": "square"}, name=kind)
    fig.update_layout(
        title=f"Distinct schedules, the front's {len(front)} first (layer 0 = input side; lighter = shorter window)",
        xaxis={"title": "layer", "range": [0, cfg.space.n_layers], "dtick": 1 if fits else 4},
        width=None if fits else LAYER_PX * cfg.space.n_layers + 200,
        yaxis={"title": "schedule (first trial; * on the front)", "range": [len(pts) - 0.5, -0.5], "tickmode": "array",
               "tickvals": list(range(len(pts))),
               "ticktext": [f"{'* ' if p.schedule in on_front else ''}trial {p.number}" for p in pts]},
        template="plotly_white", height=max(300, 26 * len(pts) + 120),
    )
    return fig


def _local_label(schedule: Schedule) -> str:
    tokens = {layer.token for layer in schedule.layers if not layer.is_full}
    return "all full" if not tokens else tokens.pop() if len(tokens) == 1 else "mixed"


def heatmap_figures(cfg: StudyConfig, pts: list[Point], measurement: str) -> dict[str, go.Figure]:
    """The best quality at each number of full layers, by placement (not for free placements,
    where the per-layer figure says more) and by local window. Both axes are categories holding
    only the values measured, sorted; a cell's number is written where it fits (hover always)."""
    schedules = [p.layers for p in pts]
    frame = pd.DataFrame({"n_full": [s.n_full for s in schedules], "placement": [placement_of(s) for s in schedules],
                          "window": [_local_label(s) for s in schedules], "quality": [p.quality for p in pts]})
    best = "max" if maximized(cfg.quality) else "min"
    columns = ("window",) if cfg.space.placements == (FREE,) else ("placement", "window")
    figures: dict[str, go.Figure] = {}
    for column in columns if len(frame) else ():
        table = frame.pivot_table(index="n_full", columns=column, values="quality", aggfunc=best).sort_index()
        table = table[sorted(table.columns, key=lambda c: (c not in ("all full", "none"), c in ("mixed", "other"), c))]
        x, y = [str(c) for c in table.columns], [str(n) for n in table.index]
        fits = PLOT_PX / len(x) >= CELL_TEXT_PX
        fig = go.Figure(go.Heatmap(
            z=table.values, x=x, y=y, colorscale="Viridis", reversescale=best == "min",
            texttemplate="%{z:.4g}" if fits else None,
            hovertemplate=f"n_full %{{y}}, {column} %{{x}}: {cfg.quality} %{{z:.4g}}<extra></extra>",
            colorbar={"title": cfg.quality},
        ))
        fig.update_layout(title=f"Best {cfg.quality} by number of full layers and {column} (measured {measurement})",
                          xaxis={"title": column, "type": "category", "categoryorder": "array", "categoryarray": x},
                          yaxis={"title": "full layers", "type": "category", "categoryorder": "array", "categoryarray": y},
                          template="plotly_white", height=max(360, 140 + ROW_PX * len(y)))
        figures[f"heatmap-{column}"] = fig
    return figures


ROW_PX = 24  # a heatmap row's height: one line of cell text and its tick label


def layer_figure(cfg: StudyConfig, pts: list[Point], front: list[Point], measurement: str) -> go.Figure | None:
    """Which layers matter: for each layer, the change in quality when it alone goes local (one
    bar per layer and local kind, with its 95% paired interval), and the share of the front's
    schedules in which it is full. None where the study measured no single-local schedule."""
    table = sensitivities(pts, cfg.quality, maximized(cfg.quality))
    if not table:
        return None
    fig = go.Figure()
    for token, rows in table.items():
        spans = [s.interval or (s.change, s.change) for s in rows]
        fig.add_bar(x=[s.layer for s in rows], y=[s.change for s in rows], name=f"alone {token}",
                    error_y=_asymmetric([s.change for s in rows], spans),
                    hovertemplate=[f"layer {s.layer} alone {token}: {s.change:+.4g}"
                                   + (f" [{s.interval[0]:+.4g}, {s.interval[1]:+.4g}]" if s.interval else " (noise unmeasured)")
                                   + "<extra></extra>" for s in rows])
    share = full_share(front, cfg.space.n_layers)
    fig.add_scatter(x=list(range(cfg.space.n_layers)), y=share, yaxis="y2", mode="markers", name="full on the front",
                    marker={"color": KIND_COLOURS["full"], "symbol": "line-ew-open", "size": 14, "line": {"width": 3}},
                    hovertemplate="layer %{x}: full in %{y:.0%} of the front's schedules<extra></extra>")
    fig.update_layout(
        title=f"Which layers matter: {cfg.quality} change when one layer alone goes local, against all-full "
              f"(positive: worse; 95% paired interval; measured {measurement})",
        xaxis={"title": "layer (0 = input side)", "dtick": 1 if cfg.space.n_layers <= TEXT_LAYERS * 2 else 4,
               "range": [-0.5, cfg.space.n_layers - 0.5]},
        yaxis={"title": f"{cfg.quality} change"}, barmode="group", template="plotly_white", height=440,
        yaxis2={"title": "full on the front", "overlaying": "y", "side": "right", "range": [-0.02, 1.05],
                "tickformat": ".0%", "tickvals": [0, 0.25, 0.5, 0.75, 1], "showgrid": False},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def hypervolume_figure(study: optuna.Study) -> go.Figure | None:
    """Optuna's hypervolume history of the study's objectives (all trials; None before two have
    finished). The reference point is 5% past the worst value seen on each objective."""
    values = [t.values for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    if len(values) < 2:
        return None
    reference = []
    for i, direction in enumerate(study.directions):
        column = [v[i] for v in values]
        worst = max(column) if direction == optuna.study.StudyDirection.MINIMIZE else min(column)
        margin = 0.05 * ((max(column) - min(column)) or abs(worst) or 1.0)
        reference.append(worst + margin if direction == optuna.study.StudyDirection.MINIMIZE else worst - margin)
    with stable_enough():
        fig = optuna.visualization.plot_hypervolume_history(study, reference)
    fig.update_layout(template="plotly_white", height=360)
    return fig


def history_figure(cfg: StudyConfig, pts: list[Point]) -> go.Figure:
    """Quality by trial number, with the best so far."""
    pts = sorted(pts, key=lambda p: p.number)
    best, running = [], None
    for p in pts:
        better = running is None or (p.quality > running if maximized(cfg.quality) else p.quality < running)
        running = p.quality if better else running
        best.append(running)
    fig = go.Figure()
    fig.add_scatter(x=[p.number for p in pts], y=[p.quality for p in pts], mode="markers", name=cfg.quality,
                    hovertext=[_hover(p) for p in pts], hoverinfo="text")
    fig.add_scatter(x=[p.number for p in pts], y=best, mode="lines", name="best so far", line={"shape": "hv"})
    fig.update_layout(title="Optimisation history", xaxis_title="trial", yaxis_title=cfg.quality, template="plotly_white", height=380)
    return fig


def fidelity_figure(cfg: StudyConfig, pairs: list[tuple[Point, Point]], report: list[Fidelity], cheap: str, dear: str) -> go.Figure:
    """Each schedule measured both ways: the cheap measurement's quality against the dear one's,
    labelled with its schedule; points on a rising line mean the cheap ranking holds."""
    fig = go.Figure()
    fig.add_scatter(
        x=[c.quality for c, _ in pairs], y=[d.quality for _, d in pairs], mode="markers+text",
        text=[c.schedule for c, _ in pairs], textposition="top center", textfont={"size": 10},
        marker={"size": 10, "color": "#2166ac"}, name="schedule",
        hovertext=[f"<b>{c.schedule}</b><br>{cheap}: {c.quality:.4g} (trial {c.number})<br>{dear}: {d.quality:.4g} "
                   f"(trial {d.number})" for c, d in pairs], hoverinfo="text",
    )
    subtitle = "<br>".join(f.line() for f in report) or "fewer than 3 schedules measured both ways"
    fig.update_layout(
        title={"text": f"Rank fidelity: {cheap} vs {dear}<br><sup>{subtitle}</sup>"},
        xaxis_title=f"{cfg.quality}, {cheap}", yaxis_title=f"{cfg.quality}, {dear}",
        template="plotly_white", height=520, margin={"t": 110},
    )
    return fig


def fidelity_figures(view: StudyView) -> dict[str, go.Figure]:
    """One scatter for each pair of measurements the study made of the same schedules."""
    return {  # the reference's own seed-against-seed figures go under the scatters against it
        f"fidelity-{cheap}-{dear}": fidelity_figure(view.config, paired(view.points(cheap), view.points(dear)),
                                                    report + (view.repeatability if dear == view.final else []), cheap, dear)
        for cheap, dear, report in view.comparisons
    }
