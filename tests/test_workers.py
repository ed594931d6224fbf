"""Workers that share a study, and failures that are remembered: through the ``spanmix`` command,
as the README shows it."""

import multiprocessing
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from optuna.trial import TrialState

from spanmix.search.study import worker_seed
from spanmix.studies.cli import main


def spanmix(*args: str) -> subprocess.Popen:
    """The installed ``spanmix`` command, as a user runs it."""
    exe = shutil.which("spanmix")
    assert exe, "the spanmix command is not installed (pip install -e '.[test]')"
    return subprocess.Popen([exe, *args], env=dict(os.environ, PYTHONUNBUFFERED="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _load(out: Path, name: str = "tiny") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")


def _trained_by_worker(study: optuna.Study) -> dict[str, list[str]]:
    """Schedules each worker trained (not reused), by worker."""
    by: dict[str, list[str]] = {}
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        if "reused_from" not in t.user_attrs:
            by.setdefault(t.user_attrs["worker"], []).append(t.user_attrs["key"])
    return by


def test_worker_seed_streams_differ_and_a_lone_worker_keeps_the_study_seed():
    assert worker_seed(7, None) == 7
    seeds = {worker_seed(7, i) for i in range(16)}
    assert len(seeds) == 16 and all(0 <= s < 2**32 for s in seeds)
    assert worker_seed(7, 3) == worker_seed(7, 3) != worker_seed(8, 3)


def test_two_local_workers_both_train_with_the_default_sampler(tiny_config, tmp_path, capfd):
    # nsga2 (the default): before seed streams both workers drew the same schedules and one trained all
    out = tmp_path / "run"
    config = tiny_config(n_trials=6, steps=150, sampler="nsga2")
    assert main(["-v", "launch", "--config", str(config), "--out", str(out), "--workers", "2", "--no-progress", "--no-report"]) == 0
    err = capfd.readouterr().err
    # -v: the worker processes log their trials too, and nothing else reaches the terminal
    measured = re.findall(r"spanmix.search: trial \d+: .* loss=", err)
    assert len(measured) >= 6, err
    assert "Warning" not in err and "GPU available" not in err and "Traceback" not in err
    by = _trained_by_worker(_load(out))
    keys = [k for ks in by.values() for k in ks]
    assert len(keys) == len(set(keys)) >= 6  # nothing trained twice
    assert len(by) == 2 and all(len(ks) >= 1 for ks in by.values()), {w: len(k) for w, k in by.items()}


def test_spanmix_worker_joins_a_running_study(tiny_config, tmp_path):
    """``spanmix worker --study NAME --storage URL`` from another process shares one search."""
    out = tmp_path / "run"
    storage = f"sqlite:///{out / 'study.db'}"
    config = tiny_config(n_trials=6, steps=300, sampler="random")
    first = spanmix("launch", "--config", str(config), "--storage", storage, "--out", str(out), "--no-progress", "--no-report")
    deadline = time.time() + 120
    while time.time() < deadline:  # join once the study exists, as a second machine would
        time.sleep(0.2)
        try:
            if _load(out).trials:
                break
        except (KeyError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError):  # schema still being made
            continue
    second = spanmix("worker", "--study", "tiny", "--storage", storage, "--out", str(out), "--no-progress")
    out1, _ = first.communicate(timeout=300)
    out2, _ = second.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, (out1, out2)
    by = _trained_by_worker(_load(out))
    keys = [k for ks in by.values() for k in ks]
    assert len(keys) == len(set(keys)) >= 6
    assert len(by) == 2, {w: len(k) for w, k in by.items()}
    for text in (out1, out2):  # the terminal holds spanmix's lines, not the libraries'
        assert "Traceback" not in text and "ExperimentalWarning" not in text and "GPU available" not in text


def test_a_failing_schedule_is_trained_once_and_an_all_failed_study_exits_1(tiny_config, tmp_path, capsys):
    # lr = 1e30 overflows the weights at the first step: every schedule's training raises
    out = tmp_path / "run"
    config = tiny_config(n_trials=4, steps=5, sampler="nsga2", extra="")
    config.write_text(config.read_text().replace('precision = "fp32"', 'precision = "fp32"\nlr = 1e30'))
    argv = ["launch", "--config", str(config), "--out", str(out), "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "every trial failed" in err and "Traceback" not in err
    assert len(err.splitlines()) < 40  # one line per failed schedule and the summary, not tracebacks
    study = _load(out)
    failed = study.get_trials(states=(TrialState.FAIL,))
    trained = [t.user_attrs["key"] for t in failed if t.user_attrs.get("failed_by") == "error"]
    remembered = [t for t in failed if t.user_attrs.get("failed_by") == "remembered"]
    assert trained and len(trained) == len(set(trained))  # no schedule's failure was trained twice
    assert remembered and all("not trained again: trial" in t.user_attrs["failure"] for t in remembered)
    assert all("TrainingDiverged" in t.user_attrs["failure"] for t in failed if t.user_attrs["failed_by"] == "error")
    assert not (out / "dashboard.html").exists()
    # asked to, it trains them again
    assert main([*argv, "--retry-failed", "--n-trials", "1"]) == 1
    again = [t for t in _load(out).get_trials(states=(TrialState.FAIL,)) if t.user_attrs.get("failed_by") == "error"]
    assert len(again) > len(trained)


@pytest.mark.parametrize("command", [["worker"], ["launch", "--workers", "2"]])
def test_supernet_studies_refuse_extra_workers(tiny_config, tmp_path, capsys, command):
    out = tmp_path / "run"
    config = tiny_config(n_trials=1, strategy="supernet")
    if command == ["worker"]:
        from spanmix.search import open_study
        from spanmix.studies.config import load_config

        open_study(load_config(path=config), f"sqlite:///{out / 'study.db'}")
        argv = ["worker", "--study", "tiny", "--out", str(out)]
    else:
        argv = ["launch", "--config", str(config), "--out", str(out), "--workers", "2"]
    assert main(argv) == 2
    assert "supernet strategy" in capsys.readouterr().err


def _open_when(url: str, start, results) -> None:  # type: ignore[no-untyped-def]
    from spanmix.search.storage import open_storage

    start.wait()
    try:
        open_storage(url)
        results.put("ok")
    except Exception as err:  # noqa: BLE001 - the test reports whatever a process met
        results.put(f"{type(err).__name__}: {err}")


def test_processes_that_open_a_new_storage_together_all_get_it(tmp_path):
    # a launch and its workers started at once each write Optuna's schema into the new database;
    # without the retry 8 of 15 such rounds failed one of them ("table studies already exists")
    ctx = multiprocessing.get_context("fork")
    for round_ in range(6):
        start, results = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_open_when, args=(f"sqlite:///{tmp_path / str(round_) / 'study.db'}", start, results))
                 for _ in range(4)]
        for p in procs:
            p.start()
        time.sleep(0.3)
        start.set()
        for p in procs:
            p.join(timeout=60)
        assert [results.get(timeout=5) for _ in procs] == ["ok"] * 4
