"""Optuna's RDB storage against a real PostgreSQL server, with the URL form the README shows
(``postgresql://USER@HOST:PORT/DB``, read by psycopg 3): workers on one study share the work, and a
``spanmix worker`` from another process joins it."""

import os
import shutil
import subprocess

import optuna
import pytest
from optuna.trial import TrialState

from benchmarks.postgres import available, temporary_server
from spanmix.studies.cli import main


@pytest.fixture(scope="module")
def postgres_url():
    why = available()
    if why:
        pytest.skip(why)
    with temporary_server() as url:
        yield url


def test_readme_url_workers_and_a_joining_worker_share_one_study(tiny_config, postgres_url, capsys):
    assert postgres_url.startswith("postgresql://postgres@127.0.0.1:")  # no +driver: what users type
    config = tiny_config(name="pg", n_trials=4, steps=150, sampler="random")
    assert main(["launch", "--config", str(config), "--storage", postgres_url, "--workers", "2",
                 "--no-progress", "--no-report"]) == 0
    study = optuna.load_study(study_name="pg", storage=postgres_url)
    trained = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if "reused_from" not in t.user_attrs]
    keys = [t.user_attrs["key"] for t in trained]
    assert len(keys) == len(set(keys)) >= 4  # nothing trained twice
    assert len({t.user_attrs["worker"] for t in trained}) == 2  # both workers trained
    # a worker on "another machine" needs only the URL and the name; asked for the whole space (7), it
    # measures what is left
    worker = subprocess.run([shutil.which("spanmix") or "spanmix", "worker", "--study", "pg", "--storage", postgres_url,
                             "--n-trials", "7", "--no-progress"], capture_output=True, text=True, timeout=300,
                            env=dict(os.environ))
    assert worker.returncode == 0, worker.stderr
    study = optuna.load_study(study_name="pg", storage=postgres_url)
    trained = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if "reused_from" not in t.user_attrs]
    assert len({t.user_attrs["key"] for t in trained}) == len(trained) == 7  # all of the space, each once
    assert not study.get_trials(states=(TrialState.FAIL,))
    assert len({t.user_attrs["worker"] for t in trained}) == 3
    # and the study reads back through the CLI with the same URL
    capsys.readouterr()
    assert main(["show", "--study", "pg", "--storage", postgres_url]) == 0
    assert "Pareto front" in capsys.readouterr().out
