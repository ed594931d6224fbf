"""The live dashboard under load: 200 requests at once, and 200 at 20 at a time, on loopback.

Serves a finished study (made here: the quick space, 6 schedules, a few steps each) with
``spanmix dashboard --serve``'s server and prints, for the page and for plotly.js, how many requests
were answered, the bytes sent and the latency percentiles. Target: every request answered.

    python benchmarks/dashboard.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import describe  # noqa: E402
from spanmix.search import run_study  # noqa: E402
from spanmix.search.logs import quiet_libraries  # noqa: E402
from spanmix.studies.config import load_config  # noqa: E402
from spanmix.studies.dashboard import PLOTLY_PATH, make_server, render  # noqa: E402


def fetch(url: str) -> tuple[float, int, str]:
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            size = len(r.read())
        return time.perf_counter() - start, size, ""
    except OSError as err:
        return time.perf_counter() - start, 0, type(err).__name__


def burst(url: str, n: int, parallel: int) -> str:
    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(fetch, [url] * n))
    wall = time.perf_counter() - start
    ok = [r for r in results if not r[2]]
    errors = sorted({r[2] for r in results if r[2]})
    lat = sorted(r[0] for r in ok) or [float("nan")]
    return (f"{len(ok)}/{n} answered{' (errors: ' + ', '.join(errors) + ')' if errors else ''}, "
            f"{sum(r[1] for r in ok) / 2**20:.1f} MiB in {wall:.2f} s; latency median {statistics.median(lat) * 1e3:.0f} ms, "
            f"p95 {lat[int(0.95 * (len(lat) - 1))] * 1e3:.0f} ms, max {lat[-1] * 1e3:.0f} ms")


def main() -> None:
    quiet_libraries()
    print(describe())
    with tempfile.TemporaryDirectory() as tmp:
        cfg = replace(load_config(preset="quick"), n_trials=6)
        cfg = replace(cfg, train=replace(cfg.train, steps=20))
        study = run_study(cfg, f"sqlite:///{tmp}/study.db")
        server = make_server(lambda src: render(study, cfg, refresh_seconds=10, plotly_src=src), port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        print(f"study: {len(study.trials)} trials; one file page (plotly inlined) {len(render(study, cfg)) / 2**20:.2f} MiB\n")
        try:
            for path in ("/", PLOTLY_PATH):
                for n, parallel in ((200, 200), (200, 20)):
                    print(f"{path:<15} {n} requests, {parallel} at a time: {burst(base + path, n, parallel)}", flush=True)
        finally:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    main()
