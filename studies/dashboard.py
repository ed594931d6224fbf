"""The study dashboard: one self-contained HTML page of the study's figures and trials, and a
small server that keeps it live. The figures themselves are :mod:`spanmix.studies.figures`."""

from __future__ import annotations

import html
import http.server
import json
import threading
import time
from typing import Any, Callable

import optuna
from plotly.offline import get_plotlyjs

from spanmix.search import Point, StudyConfig, StudyView
from spanmix.search.noise import Noise
from spanmix.studies.figures import (
    fidelity_figures,
    front_figure,
    heatmap_figures,
    history_figure,
    hypervolume_figure,
    layer_figure,
    strips_figure,
)

_SORT_JS = """
document.querySelectorAll('table.trials th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const dir = th.dataset.dir = th.dataset.dir === 'asc' ? 'desc' : 'asc';
  const key = r => { const t = r.cells[col].dataset.v ?? r.cells[col].textContent; const n = parseFloat(t); return isNaN(n) ? t : n; };
  [...body.rows].sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (dir === 'asc' ? 1 : -1))
    .forEach(r => body.appendChild(r));
}));
"""


_CLASSES = {2: ' class="schedule"'}  # the schedule column wraps: a deep model's schedule is hundreds of characters


def trial_table(view: StudyView, front: list[Point]) -> str:
    """Every trial, finished or not, as a sortable HTML table (click a header)."""
    on_front = {p.number for p in front}
    head = ["trial", "state", "schedule", "measurement", "precision", "quality", "cost", "cost ratio",
            "prefill vs full", "decode vs full", "KV vs full", "front", "note"]
    rows = []
    for r in view.records:
        values = r.values or (None, None)
        report = r.cost_report
        note = r.failure or (f"reused trial {r.reused_from}" if r.reused_from is not None else "")
        cells = [
            (r.number, str(r.number)),
            (r.state.name, r.state.name),
            (r.schedule or "", r.schedule or ""),
            (r.measurement or "", r.measurement or ""),
            (r.precision or "", r.precision or ""),
            (values[0], "" if values[0] is None else f"{values[0]:.4g}"),
            (values[1], "" if values[1] is None else f"{values[1]:.4g}"),
            (r.cost_ratio, "" if r.cost_ratio is None else f"{r.cost_ratio:.1%}"),
            *((report.get(k), "" if report.get(k) is None else f"{report[k]:.1%}") for k in ("ratio", "decode_ratio", "kv_ratio")),
            ("yes" if r.number in on_front else "", "yes" if r.number in on_front else ""),
            (note, note),
        ]
        rows.append("<tr>" + "".join(
            f'<td data-v="{html.escape(str(v if v is not None else ""))}"{_CLASSES.get(i, "")}>{html.escape(text)}</td>'
            for i, (v, text) in enumerate(cells)
        ) + "</tr>")
    header = "".join(f"<th>{h}</th>" for h in head)
    return f'<table class="trials"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _noise_summary(noise: Noise, cfg: StudyConfig) -> str:
    if noise.basis is None:
        return "; " + cfg.unmeasured_noise
    knee = f", knee in {noise.knee_share:.0%} of resamples of {noise.basis.resampled}" if noise.knee_share is not None else ""
    return f"; {noise.estimate}, {len(noise.tied)} schedule(s) tied with the front ({noise.basis.test}, 5%){knee}"


def render(study: optuna.Study, cfg: StudyConfig, refresh_seconds: int | None = None, plotly_src: str | None = None) -> str:
    """The whole dashboard of the study as it stands now (see :func:`page`)."""
    return page(StudyView(study, cfg), refresh_seconds, plotly_src)


def page(view: StudyView, refresh_seconds: int | None = None, plotly_src: str | None = None) -> str:
    """The dashboard of a study already read as one HTML page with plotly.js inlined (opens
    offline), or loaded from ``plotly_src`` (what the live server does, so the 4.6 MB library is
    sent once and cached)."""
    study, cfg = view.study, view.config
    pts, front, chosen = view.points(), view.front(), view.knee()
    hypervolume = hypervolume_figure(study)
    layers = layer_figure(cfg, view.points(view.final), front, view.final)
    figures = {"front": front_figure(cfg, view.points(view.final), [s for s in view.scores if "@" not in s],
                                     view.noise()),
               **fidelity_figures(view),
               **({"layers": layers} if layers else {}),
               **heatmap_figures(cfg, view.points(view.searched), view.searched),
               "strips": strips_figure(cfg, pts, front), "history": history_figure(cfg, pts),
               **({"hypervolume": hypervolume} if hypervolume else {})}
    # each figure scrolls sideways inside the page where it is wider (the strips of a deep model)
    divs = "\n".join(f'<div class="figure">{f.to_html(full_html=False, include_plotlyjs=False, div_id=name)}</div>'
                      for name, f in figures.items())
    refresh = f'<meta http-equiv="refresh" content="{refresh_seconds}">' if refresh_seconds else ""
    summary = (
        f"{len(view.records)} trials, {len(pts)} finished, {view.finished()} schedules measured, front of {len(front)} "
        f"(measured {view.final}{html.escape(cfg.subject.header)})"
        + (f"; knee: trial {chosen.number} <code>{html.escape(chosen.schedule)}</code>" if chosen else "")
        + _noise_summary(view.noise(), view.config)
    )
    data = json.dumps([p.to_dict() for p in front])
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8">{refresh}<title>spanmix: {html.escape(study.study_name)}</title>
{f'<script src="{plotly_src}"></script>' if plotly_src else f'<script type="text/javascript">{get_plotlyjs()}</script>'}
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ddd;padding:3px 8px}} th{{cursor:pointer;background:#f3f3f3}} code{{background:#f3f3f3}}
.figure,.table{{overflow-x:auto}} td.schedule{{font-family:monospace;min-width:16em;max-width:48em;overflow-wrap:anywhere}}</style>
</head><body>
<h1>spanmix study <code>{html.escape(study.study_name)}</code></h1>
<p id="summary">{summary}. Quality: {cfg.quality}; cost: {cfg.cost}; sampler: {cfg.sampler}.</p>
{divs}
<h2>Trials</h2>
<div class="table">{trial_table(view, front)}</div>
<script type="application/json" id="front-data">{html.escape(data)}</script>
<script>{_SORT_JS}</script>
</body></html>
"""


PLOTLY_PATH = "/plotly.min.js"


def make_server(render_page: Callable[[str], str], port: int = 8050, fresh_seconds: float = 2.0) -> http.server.ThreadingHTTPServer:
    """A threaded server on 127.0.0.1 (call serve_forever): ``/`` is the page, rendered by
    ``render_page(PLOTLY_PATH)`` at most once per ``fresh_seconds`` however many clients ask;
    plotly.js is one static, cacheable asset; any other path is 404."""
    library = get_plotlyjs().encode()
    lock = threading.Lock()
    cache: dict[str, Any] = {"at": float("-inf"), "page": b""}

    def page() -> bytes:
        with lock:  # concurrent requests wait for one render instead of rendering in parallel
            if time.monotonic() - cache["at"] > fresh_seconds:
                cache["page"], cache["at"] = render_page(PLOTLY_PATH).encode(), time.monotonic()
            return cache["page"]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?")[0]
            if path in ("/", "/index.html"):
                self._send(page(), "text/html; charset=utf-8", "no-cache")
            elif path == PLOTLY_PATH:
                self._send(library, "application/javascript", "public, max-age=86400")
            else:
                self._send(b"not found\n", "text/plain", "no-cache", status=404)

        def _send(self, body: bytes, kind: str, cache_control: str, status: int = 200) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", cache_control)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024  # the default of 5 resets connections when many clients arrive at once

    return Server(("127.0.0.1", port), Handler)
