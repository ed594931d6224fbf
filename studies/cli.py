"""The ``spanmix`` command line: launch a study, look at it, export what it found.

Each command is a module of :mod:`spanmix.studies.commands` holding its parser and its handler;
this one assembles them and turns errors into one line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from spanmix.search.logs import log_to_stderr
from spanmix.space import ConfigError
from spanmix.studies.commands import (
    calibrate,
    cost,
    dashboard,
    export,
    fidelity,
    launch,
    show,
    worker,
)

COMMANDS = (launch, calibrate, worker, dashboard, export, show, fidelity, cost)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spanmix",
        description="Find, by measurement, which layers of a long-context transformer need full attention "
        "and which can use a local window. Typical use: spanmix launch --preset quick; then "
        "spanmix show / dashboard / export --study quick.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every trial")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_to_stderr(logging.INFO if args.verbose else logging.WARNING)
    try:
        return args.run(args)
    except ConfigError as err:
        if args.debug:
            raise
        print(f"spanmix {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # a bug, not the user's mistake: one line, the traceback on request
        if args.debug:
            raise
        print(f"spanmix {args.command}: internal error: {type(err).__name__}: {err} (rerun with --debug for the "
              "traceback, and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
