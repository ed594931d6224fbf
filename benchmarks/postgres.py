"""A throw-away PostgreSQL server for tests and benchmarks: initdb into a temp folder, started as
the ``postgres`` user (it refuses root) on a free loopback port, stopped and removed afterwards."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator


def _pg_bin(name: str) -> str | None:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(found[-1]) if found else shutil.which(name)


def available() -> str | None:
    """Why no server can be started here, or None when one can."""
    if not (_pg_bin("initdb") and _pg_bin("pg_ctl")):
        return "PostgreSQL's initdb/pg_ctl are not installed"
    if os.geteuid() != 0 or not shutil.which("runuser"):
        return "starting PostgreSQL as the postgres user needs root and runuser"
    return None


def _as_postgres(*cmd: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, timeout=120)


@contextlib.contextmanager
def temporary_server(database: str = "spanmix") -> Iterator[str]:
    """Yields ``postgresql://postgres@127.0.0.1:PORT/DATABASE``: the URL form the README shows."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    assert initdb and pg_ctl, available()
    data = Path(tempfile.mkdtemp(prefix="spanmix-pg-"))
    shutil.chown(data, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _as_postgres(initdb, "-D", str(data / "db"), "-U", "postgres", "--auth=trust")
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {data} -c max_connections=200"
    _as_postgres(pg_ctl, "-D", str(data / "db"), "-o", opts, "-l", str(data / "log"), "-w", "start")
    try:
        _as_postgres(_pg_bin("createdb") or "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database)
        yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
    finally:
        _as_postgres(pg_ctl, "-D", str(data / "db"), "-m", "fast", "-w", "stop")
        shutil.rmtree(data, ignore_errors=True)
