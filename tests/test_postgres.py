"""Optuna's RDB storage against a real PostgreSQL server: two workers, one study, no duplicates."""

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from optuna.trial import TrialState

from search import run_study
from studies.config import load_config


def _pg_bin(name: str) -> str | None:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(found[-1]) if found else shutil.which(name)


def _as_postgres(*cmd: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def postgres_url():
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl and os.geteuid() == 0 and shutil.which("runuser")):
        pytest.skip("needs PostgreSQL's initdb/pg_ctl and root (to run them as the postgres user)")
    pytest.importorskip("psycopg2")
    data = Path(tempfile.mkdtemp(prefix="spanmix-pg-"))
    shutil.chown(data, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _as_postgres(initdb, "-D", str(data / "db"), "-U", "postgres", "--auth=trust")
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {data}"
    _as_postgres(pg_ctl, "-D", str(data / "db"), "-o", opts, "-l", str(data / "log"), "-w", "start")
    try:
        _as_postgres(_pg_bin("createdb") or "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "spanmix")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/spanmix"
    finally:
        _as_postgres(pg_ctl, "-D", str(data / "db"), "-m", "fast", "-w", "stop")
        shutil.rmtree(data, ignore_errors=True)


def test_two_workers_on_postgres(tiny_config, postgres_url):
    cfg = load_config(path=tiny_config(n_trials=6, steps=20, sampler="grid"))
    study = run_study(cfg, postgres_url, workers=2)
    trained = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if "reused_from" not in t.user_attrs]
    keys = [t.user_attrs["key"] for t in trained]
    assert len(keys) == len(set(keys)) >= 6
    assert len({t.user_attrs["worker"] for t in trained}) == 2
    # relaunching resumes: the target is met, so nothing more runs
    before = len(study.trials)
    assert len(run_study(cfg, postgres_url, workers=1).trials) == before
