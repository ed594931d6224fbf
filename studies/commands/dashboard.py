"""``spanmix dashboard``: the study's dashboard as one offline HTML file, or served live."""

from __future__ import annotations

import argparse
from pathlib import Path

from spanmix.space import ConfigError
from spanmix.studies.commands.common import add_study_args, open_named, writable
from spanmix.studies.dashboard import make_server, render


def add(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("dashboard", help="write the study's dashboard as one HTML file, or serve it live",
                       description="One self-contained HTML page (plotly inlined; opens offline): the Pareto "
                       "front with each point's schedule on hover, every trial's schedule as a strip of layers, "
                       "a sortable trial table and the optimisation history.")
    add_study_args(p)
    p.add_argument("--html", help="output file (default: OUT/dashboard.html)")
    p.add_argument("--serve", action="store_true", help="serve it on 127.0.0.1 instead, refreshed as trials finish")
    p.add_argument("--port", type=int, default=8050, help="port for --serve (default 8050)")
    p.add_argument("--refresh", type=int, default=10, help="page refresh seconds for --serve (default 10)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be from 0 to 65535 (got {args.port}); 0 picks a free one")
    if args.refresh < 1:
        raise ConfigError(f"--refresh must be a whole number of seconds >= 1 (got {args.refresh})")
    if args.html:
        writable(Path(args.html), "--html")
    study, cfg, out = open_named(args)
    if args.serve:
        try:
            server = make_server(lambda src: render(study, cfg, refresh_seconds=args.refresh, plotly_src=src), args.port)
        except OSError as err:
            raise ConfigError(f"--port {args.port}: cannot listen on 127.0.0.1: {err.strerror}") from None
        print(f"serving http://127.0.0.1:{server.server_address[1]}/ (refreshes every {args.refresh} s; Ctrl-C stops)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            server.server_close()
        return 0
    path = Path(args.html or out / "dashboard.html")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(study, cfg))
    print(f"wrote {path}")
    return 0
