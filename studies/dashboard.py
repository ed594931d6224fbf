"""The study dashboard: plotly figures (returned, not shown) and one self-contained HTML page."""

from __future__ import annotations

import html
import http.server
import json
from typing import Callable

import optuna
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from search import Fidelity, Point, StudyConfig, final_fidelity, finished, knee, maximized, pareto_front, points
from search.fidelity import comparisons, paired
from space import Schedule

KIND_COLOURS = {"full": "#b2182b", "sliding": "#2166ac", "block": "#1b7837"}


def _hover(p: Point) -> str:
    scores = "<br>".join(f"{k}: {v:.4g}" for k, v in sorted(p.scores.items()) if "@" not in k)
    reused = f"<br>(reused trial {p.reused_from})" if p.reused_from is not None else ""
    return f"trial {p.number}: <b>{p.schedule}</b><br>cost ratio {p.cost_ratio:.1%}{reused}<br>{scores}"


def front_figure(cfg: StudyConfig, pts: list[Point], front: list[Point], chosen: Point | None) -> go.Figure:
    """Quality against cost ratio for every trial; the Pareto front joined; the knee starred."""
    fig = go.Figure()
    for feasible, name, symbol in ((True, "trials", "circle"), (False, "over budget", "x")):
        sel = [p for p in pts if p.feasible == feasible and p not in front]
        if sel:
            fig.add_scatter(
                x=[p.cost_ratio for p in sel], y=[p.quality for p in sel], mode="markers", name=name,
                marker={"color": "#999", "symbol": symbol, "size": 8},
                hovertext=[_hover(p) for p in sel], hoverinfo="text",
            )
    fig.add_scatter(
        x=[p.cost_ratio for p in front], y=[p.quality for p in front], mode="lines+markers", name="Pareto front",
        marker={"color": "#d6604d", "size": 11}, line={"shape": "hv"},
        hovertext=[_hover(p) for p in front], hoverinfo="text",
    )
    if chosen is not None:
        fig.add_scatter(
            x=[chosen.cost_ratio], y=[chosen.quality], mode="markers", name=f"knee (trial {chosen.number})",
            marker={"color": "gold", "symbol": "star", "size": 20, "line": {"color": "black", "width": 1}},
            hovertext=[_hover(chosen)], hoverinfo="text",
        )
    if cfg.budget is not None:
        fig.add_vline(x=cfg.budget, line_dash="dot", annotation_text="budget")
    fig.update_layout(
        title="Pareto front: quality vs cost",
        xaxis_title=f"{cfg.cost} relative to all-full attention",
        yaxis_title=f"{cfg.quality} ({'higher' if maximized(cfg.quality) else 'lower'} is better)",
        xaxis_tickformat=".0%", template="plotly_white", height=480,
    )
    return fig


def strips_figure(cfg: StudyConfig, pts: list[Point]) -> go.Figure:
    """Each trial's schedule as a strip of layers, coloured by kind, shaded by window."""
    fig = go.Figure()
    windows = sorted({l.window for p in pts for l in Schedule.parse(p.schedule) if l.window}) or [1]
    for p in pts:
        for i, layer in enumerate(Schedule.parse(p.schedule)):
            shade = 1.0 if layer.window is None else 0.35 + 0.5 * windows.index(layer.window) / max(1, len(windows) - 1)
            fig.add_shape(
                type="rect", x0=i, x1=i + 0.95, y0=p.number - 0.45, y1=p.number + 0.45,
                fillcolor=KIND_COLOURS[layer.kind], opacity=shade, line={"width": 0}, layer="below",
            )
        fig.add_scatter(
            x=[i + 0.475 for i in range(cfg.space.n_layers)], y=[p.number] * cfg.space.n_layers,
            mode="text", text=[l.token for l in Schedule.parse(p.schedule)], showlegend=False,
            textfont={"color": "black", "size": 11}, hovertext=_hover(p), hoverinfo="text",
        )
    for kind, colour in KIND_COLOURS.items():
        fig.add_scatter(x=[None], y=[None], mode="markers", marker={"color": colour, "size": 12, "symbol": "square"}, name=kind)
    fig.update_layout(
        title="Schedules by trial (layer 0 = input side; lighter = shorter window)",
        xaxis={"title": "layer", "range": [0, cfg.space.n_layers], "dtick": 1},
        yaxis={"title": "trial", "autorange": "reversed"},
        template="plotly_white", height=max(300, 26 * len(pts) + 120),
    )
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


def fidelity_figures(study: optuna.Study, cfg: StudyConfig) -> dict[str, go.Figure]:
    """One scatter for each pair of fidelities the study measured the same schedules at."""
    return {
        f"fidelity-{dear}": fidelity_figure(cfg, paired(points(study, cheap), points(study, dear)), report, cheap, dear)
        for cheap, dear, report in comparisons(study)
    }


_SORT_JS = """
document.querySelectorAll('table.trials th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const dir = th.dataset.dir = th.dataset.dir === 'asc' ? 'desc' : 'asc';
  const key = r => { const t = r.cells[col].dataset.v ?? r.cells[col].textContent; const n = parseFloat(t); return isNaN(n) ? t : n; };
  [...body.rows].sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (dir === 'asc' ? 1 : -1))
    .forEach(r => body.appendChild(r));
}));
"""


def trial_table(study: optuna.Study, front: list[Point]) -> str:
    """Every trial, finished or not, as a sortable HTML table (click a header)."""
    on_front = {p.number for p in front}
    head = ["trial", "state", "schedule", "fidelity", "quality", "cost", "cost ratio", "front", "note"]
    rows = []
    for t in study.get_trials(deepcopy=False):
        values = t.values or [None, None]
        note = t.user_attrs.get("failure") or (f"reused trial {t.user_attrs['reused_from']}" if "reused_from" in t.user_attrs else "")
        cells = [
            (t.number, str(t.number)),
            (t.state.name, t.state.name),
            (t.user_attrs.get("schedule", ""), t.user_attrs.get("schedule", "")),
            (t.user_attrs.get("fidelity", ""), t.user_attrs.get("fidelity", "")),
            (values[0], "" if values[0] is None else f"{values[0]:.4g}"),
            (values[1], "" if values[1] is None else f"{values[1]:.4g}"),
            (t.user_attrs.get("cost_ratio"), f"{t.user_attrs['cost_ratio']:.1%}" if "cost_ratio" in t.user_attrs else ""),
            ("yes" if t.number in on_front else "", "yes" if t.number in on_front else ""),
            (note, note),
        ]
        rows.append("<tr>" + "".join(
            f'<td data-v="{html.escape(str(v if v is not None else ""))}">{html.escape(text)}</td>' for v, text in cells
        ) + "</tr>")
    header = "".join(f"<th>{h}</th>" for h in head)
    return f'<table class="trials"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def render(study: optuna.Study, cfg: StudyConfig, refresh_seconds: int | None = None) -> str:
    """The whole dashboard as one HTML page with plotly.js inlined (opens offline)."""
    pts = points(study)
    front = pareto_front(study)
    chosen = knee(front, maximized(cfg.quality)) if front else None
    fidelity = final_fidelity(study)
    shown = [p for p in pts if p.fidelity == fidelity]
    figures = {"front": front_figure(cfg, shown, front, chosen), **fidelity_figures(study, cfg),
               "strips": strips_figure(cfg, pts), "history": history_figure(cfg, pts)}
    divs = "\n".join(f.to_html(full_html=False, include_plotlyjs=False, div_id=name) for name, f in figures.items())
    refresh = f'<meta http-equiv="refresh" content="{refresh_seconds}">' if refresh_seconds else ""
    summary = (
        f"{len(study.trials)} trials, {len(pts)} finished, {finished(study)} schedules measured, front of {len(front)} "
        f"(measured {fidelity})"
        + (f"; knee: trial {chosen.number} <code>{html.escape(chosen.schedule)}</code>" if chosen else "")
    )
    data = json.dumps([p.__dict__ for p in front])
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8">{refresh}<title>spanmix: {html.escape(study.study_name)}</title>
<script type="text/javascript">{get_plotlyjs()}</script>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ddd;padding:3px 8px}} th{{cursor:pointer;background:#f3f3f3}} code{{background:#f3f3f3}}</style>
</head><body>
<h1>spanmix study <code>{html.escape(study.study_name)}</code></h1>
<p id="summary">{summary}. Quality: {cfg.quality}; cost: {cfg.cost}; sampler: {cfg.sampler}.</p>
{divs}
<h2>Trials</h2>
{trial_table(study, front)}
<script type="application/json" id="front-data">{html.escape(data)}</script>
<script>{_SORT_JS}</script>
</body></html>
"""


def make_server(render_page: Callable[[], str], port: int = 8050) -> http.server.ThreadingHTTPServer:
    """A server for the page on 127.0.0.1, rendered afresh on every request (call serve_forever)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            body = render_page().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
