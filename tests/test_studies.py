"""End to end through the ``spanmix`` command: launch, resume, workers, dashboard, export, show."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from optuna.trial import TrialState

from spanmix.space import Schedule
from spanmix.studies.cli import main


def _load(out: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")


def _trained(study: optuna.Study) -> list:
    """Complete trials that trained (not reused)."""
    return [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if "reused_from" not in t.user_attrs]


def test_launch_writes_front_dashboard_and_export(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["launch", "--config", str(tiny_config(n_trials=5)), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Pareto front" in printed and "<- knee" in printed
    study = _load(out, "tiny")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(_trained(study)) == 5 <= len(complete)  # n_trials counts distinct schedules measured
    # identical schedules are trained once: every trained trial has its own key
    keys = [t.user_attrs["key"] for t in _trained(study)]
    assert len(keys) == len(set(keys))
    for t in complete:
        if "reused_from" in t.user_attrs:
            assert t.values == study.trials[t.user_attrs["reused_from"]].values
    # the dashboard holds every trial and the front
    page = (out / "dashboard.html").read_text()
    for t in study.trials:
        assert f">{t.number}</td>" in page and t.user_attrs["schedule"] in page
    front = json.loads(re.search(r'<script type="application/json" id="front-data">(.*?)</script>', page, re.S).group(1)
                       .replace("&quot;", '"'))
    assert front and {p["number"] for p in front} <= {t.number for t in complete}
    assert "Plotly" in page and not re.search(r"<script[^>]*\bsrc=", page)  # plotly inlined: opens offline
    # the knee export round-trips
    exported = next(p for p in out.glob("knee-*.json") if ".hf-" not in p.name)
    data = json.loads(exported.read_text())
    assert Schedule.from_dict(data) == Schedule.parse(data["text"])
    assert data["trial"] in {p["number"] for p in front}


def test_export_out_names_where_to_write_and_the_study_is_found_by_its_name(tiny_config, tmp_path, monkeypatch):
    """``--out`` on a reading command is where it writes: the study launched to its default place
    (runs/STUDY) is found there, not looked for in the new folder."""
    monkeypatch.chdir(tmp_path)
    assert main(["launch", "--config", str(tiny_config(n_trials=2)), "--no-progress", "--no-report"]) == 0
    assert main(["export", "--study", "tiny", "knee", "--out", "exported"]) == 0
    assert list((tmp_path / "exported").glob("knee-*.json")) and not (tmp_path / "exported" / "study.db").exists()
    assert main(["show", "--study", "tiny", "--out", "exported"]) == 0


def test_export_show_and_csv(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["launch", "--config", str(tiny_config(n_trials=3)), "--out", str(out), "--no-progress", "--no-report"]) == 0
    study = _load(out, "tiny")
    trial = study.get_trials(states=(TrialState.COMPLETE,))[0]
    assert main(["export", "--study", "tiny", "--out", str(out), str(trial.number)]) == 0
    schedule = Schedule.parse(trial.user_attrs["schedule"])
    saved = json.loads((out / f"trial-{trial.number}.json").read_text())
    assert Schedule.from_dict(saved) == schedule
    hf = json.loads((out / f"trial-{trial.number}.hf-qwen2.json").read_text())
    assert len(hf["layer_types"]) == schedule.n_layers == hf["num_hidden_layers"]
    assert hf["layer_types"] == ["full_attention" if l.is_full else "sliding_attention" for l in schedule]
    assert "build_model(ProxyConfig(" in capsys.readouterr().out
    csv = tmp_path / "trials.csv"
    assert main(["show", "--study", "tiny", "--out", str(out), "--csv", str(csv)]) == 0
    import pandas as pd

    frame = pd.read_csv(csv)
    assert len(frame) == len(study.trials)
    assert {"schedule", "cost_ratio", "n_full", "quality", "cost", "score:recall"} <= set(frame.columns)
    assert main(["export", "--study", "tiny", "--out", str(out), "999"]) == 2
    # the front on another score: recall is maximised, so its front is read the other way
    capsys.readouterr()
    assert main(["show", "--study", "tiny", "--out", str(out), "--quality", "recall"]) == 0
    printed = capsys.readouterr().out
    assert "Pareto front (recall vs flops" in printed
    best = max(t.user_attrs["scores"]["recall"] for t in study.get_trials(states=(TrialState.COMPLETE,)))
    assert f"{best:.4f}" in printed
    assert main(["show", "--study", "tiny", "--out", str(out), "--quality", "bleu"]) == 2
    assert "--quality 'bleu' is not a score of study 'tiny'; its scores: " in capsys.readouterr().err


def test_dashboard_views(tiny_config, tmp_path):
    import math

    from spanmix.search import config_of, pareto_front, points
    from spanmix.space import placement_of
    from spanmix.studies.dashboard import (
        heatmap_figures,
        hypervolume_figure,
        render,
        strips_figure,
    )

    out = tmp_path / "run"
    assert main(["launch", "--config", str(tiny_config(n_trials=5)), "--out", str(out), "--no-progress"]) == 0
    study = _load(out, "tiny")
    cfg = config_of(study)
    assert study.metric_names == ["loss", "flops"]  # optuna-dashboard shows these, not "Objective 0/1"
    page = (out / "dashboard.html").read_text()
    for div in ("front", "heatmap-placement", "heatmap-window", "strips", "history", "hypervolume"):
        assert f'id="{div}"' in page, div
    pts = points(study)
    # heatmaps: the best (lowest) loss in each cell, from the trials themselves
    placement = heatmap_figures(cfg, pts, "standalone")["heatmap-placement"].data[0]
    for row, n_full in enumerate(placement.y):
        for col, name in enumerate(placement.x):
            cell = [p.quality for p in pts  # categorical axes: the full-layer counts are labels
                    if str(Schedule.parse(p.schedule).n_full) == n_full and placement_of(Schedule.parse(p.schedule)) == name]
            z = placement.z[row][col]
            assert (math.isnan(z) and not cell) or z == min(cell)
    # strips: each distinct schedule once, the front's first
    front = pareto_front(study)
    strips = strips_figure(cfg, pts, front)
    labels = strips.layout.yaxis.ticktext
    assert len(labels) == len({p.schedule for p in pts}) and all(label.startswith("* ") for label in labels[:len(front)])
    assert strips.layout.width is None and strips.data[0].mode == "text"  # 2 layers: the tokens fit in the cells
    # 64 layers: the strips keep a readable width per layer (the page scrolls them) and tokens go to hover
    deep = replace(cfg, space=replace(cfg.space, n_layers=64, n_full=(0, 64)))
    wide = strips_figure(deep, [replace(pts[0], schedule="F S4 " * 32)], [])
    assert wide.layout.width == 22 * 64 + 200 and wide.data[0].mode == "markers" and "layer 63: S4" in wide.data[0].hovertext[-1]
    # Optuna's own hypervolume, rising as trials finish
    hv = [y for trace in hypervolume_figure(study).data for y in trace.y]
    assert hv == sorted(hv) and hv[-1] > 0
    assert 'id="front"' in render(study, cfg)


def _spanmix(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "spanmix.studies.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_killed_study_resumes_without_losing_or_retraining(tiny_config, tmp_path):
    out = tmp_path / "run"
    config = tiny_config(n_trials=5, steps=600, sampler="grid")
    proc = _spanmix("launch", "--config", str(config), "--out", str(out), "--no-progress", "--no-report")
    deadline = time.time() + 240
    study = None
    while time.time() < deadline:  # kill once a trial has finished and the next is mid-training
        time.sleep(0.1)
        if (out / "study.db").exists():
            try:
                study = _load(out, "tiny")
            except (KeyError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError):  # the child may still be creating the schema
                continue
            trials = study.get_trials()
            # a RUNNING trial is created before its objective runs; "key" says it is training
            training = [t for t in trials if t.state == TrialState.RUNNING and "key" in t.user_attrs]
            if training and any(t.state == TrialState.COMPLETE for t in trials):
                break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert study is not None
    before = {t.number: (t.user_attrs["key"], t.values) for t in study.get_trials(states=(TrialState.COMPLETE,))}
    killed = [t for t in study.get_trials() if t.state == TrialState.RUNNING]
    assert before and len(killed) == 1
    time.sleep(3.5)  # past the heartbeat's grace period (3 x 1 s)
    relaunch = _spanmix("launch", "--config", str(config), "--out", str(out), "--no-progress", "--no-report")
    output, _ = relaunch.communicate(timeout=300)
    assert relaunch.returncode == 0, output
    assert "Warning" not in output and "Traceback" not in output  # a relaunch is quiet
    study = _load(out, "tiny")
    after = {t.number: (t.user_attrs["key"], t.values) for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert all(after[n] == before[n] for n in before)  # nothing finished was lost or changed
    assert len(_trained(study)) == 5
    dead = study.trials[killed[0].number]
    assert dead.state == TrialState.FAIL
    # the heartbeat says why it failed, naming the worker that stopped
    assert dead.user_attrs["failed_by"] == "heartbeat"
    assert dead.user_attrs["failure"].startswith(f"{dead.user_attrs['worker']} stopped beating for more than 3 s")
    keys = [t.user_attrs["key"] for t in _trained(study)]
    assert len(keys) == len(set(keys))  # nothing trained twice
    # the killed trial's schedule was retried, not dropped
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retried) == 1 and retried[0].state in (TrialState.WAITING, TrialState.COMPLETE), [
        (t.number, t.state.name, t.system_attrs) for t in study.trials[dead.number:]
    ]
    assert retried[0].params == dead.params or retried[0].system_attrs["fixed_params"] == dead.params
    assert "failure" not in retried[0].user_attrs  # the retry does not inherit the failed attempt's reason


@pytest.mark.parametrize(
    "extra, fragment",
    [
        ("\n[extra]\nx = 1\n", r"unknown section\(s\) \['extra'\]"),
        ("", None),
    ],
)
def test_config_file_sections(tiny_config, tmp_path, capsys, extra, fragment):
    out = tmp_path / "run"
    code = main(["launch", "--config", str(tiny_config(n_trials=1, extra=extra)), "--out", str(out), "--no-progress", "--no-report"])
    if fragment:
        assert code == 2 and re.search(fragment, capsys.readouterr().err)
        assert not out.exists()
    else:
        assert code == 0


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (("steps = 3", "stpes = 3"), r"unknown train key\(s\) \['stpes'\]"),
        (("n_full = [0, 2]", "n_full = [0, 5]"), r"space: n_full range \(0, 5\)"),
        (("windows = [4, 8]", "windows = [4, 64]"), r"window 64 is outside the allowed range 2..31"),
        (('cost = "flops"', 'cost = "watts"'), r"study.cost 'watts' is unknown"),
        (('tasks = ["recall"]', 'tasks = ["wikitext"]'), r"unknown data set 'wikitext'"),
        (("n_trials = 1", "n_trials = 0"), r"study.n_trials must be a whole number from 1 to"),
        (("n_full = [0, 2]", "n_full = 2"), r"space.n_full must be a list of 2 whole numbers \(got 2\)"),
        (("steps = 3", 'steps = "ten"'), r"train.steps must be a whole number \(got 'ten'\)"),
    ],
)
def test_bad_configs_fail_before_work(tiny_config, tmp_path, capsys, edit, fragment):
    path = tiny_config(n_trials=1)
    path.write_text(path.read_text().replace(*edit))
    out = tmp_path / "run"
    assert main(["launch", "--config", str(path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert re.search(fragment, err), err
    assert str(path) in err and "Traceback" not in err
    assert not out.exists()  # nothing ran, nothing was written


def test_bad_storage_and_preset(tiny_config, tmp_path, capsys):
    assert main(["launch", "--config", str(tiny_config()), "--storage", "nosuchdb://x", "--no-progress"]) == 2
    assert "storage 'nosuchdb://x'" in capsys.readouterr().err
    assert main(["launch", "--preset", "fast"]) == 2
    assert "preset 'fast' is unknown; allowed: masformer, medium, quick" in capsys.readouterr().err


def test_resuming_with_another_config_is_refused(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["launch", "--config", str(tiny_config(n_trials=1)), "--out", str(out), "--no-progress", "--no-report"]) == 0
    assert main(["launch", "--config", str(tiny_config(n_trials=1, steps=5)), "--out", str(out), "--no-progress"]) == 2
    assert "train.steps" in capsys.readouterr().err


def test_presets_load_and_quick_space_is_small():
    from spanmix.studies.config import load_config, preset_names

    for name in preset_names():
        cfg = load_config(name)
        assert cfg.space.size() > 1
    assert load_config("quick").space.size() < 40
    medium = load_config("medium")  # scored whole on its supernet: the front is exact for the supernet
    assert medium.strategy == "supernet" and medium.space.size() == 163 <= medium.section("supernet").exhaustive_limit
    assert medium.data.seq_len == 1024 and medium.space.n_layers == 8
    # docs/placement.toml asks medium's placement question at medium's budget: the same measurement
    placement = load_config(path=Path(__file__).parent.parent / "docs" / "placement.toml")
    assert placement.measurement_key() == medium.measurement_key() and placement.seeds == medium.seeds
    assert {s.text for s in placement.space.enumerate()} == {
        "B64 B64 B64 B64 B64 B64 B64 B64", "F B64 B64 B64 B64 B64 B64 B64", "B64 B64 B64 F B64 B64 B64 B64",
        "B64 B64 B64 B64 B64 B64 B64 F", "F F B64 B64 B64 B64 B64 B64", "B64 B64 B64 F F B64 B64 B64",
        "B64 B64 B64 B64 B64 B64 F F", "B64 B64 B64 F B64 B64 B64 F"}


def test_serve_renders_fresh_page_on_loopback(tiny_config, tmp_path):
    import threading
    import urllib.error
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    from spanmix.search import run_study
    from spanmix.studies.config import load_config
    from spanmix.studies.dashboard import make_server, render

    cfg = load_config(path=tiny_config(n_trials=2))
    study = run_study(cfg, f"sqlite:///{tmp_path / 's.db'}")
    renders = []

    def page(src):
        renders.append(src)
        return render(study, cfg, refresh_seconds=5, plotly_src=src)

    server = make_server(page, port=0, fresh_seconds=0.5)
    assert server.server_address[0] == "127.0.0.1"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        first = urllib.request.urlopen(url + "/", timeout=30).read().decode()
        assert '<meta http-equiv="refresh" content="5">' in first and "2 schedules measured" in first
        # plotly is one cached asset, not part of every page
        assert '<script src="/plotly.min.js">' in first and len(first) < 500_000
        library = urllib.request.urlopen(url + "/plotly.min.js", timeout=30)
        assert library.headers["Cache-Control"].startswith("public") and b"Plotly" in library.read()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(url + "/favicon.ico", timeout=30)
        assert missing.value.code == 404
        # many clients at once: every one answered, the page rendered once for all of them
        before = len(renders)
        with ThreadPoolExecutor(64) as pool:
            bodies = list(pool.map(lambda _: urllib.request.urlopen(url + "/", timeout=60).read(), range(64)))
        assert all(b"schedules measured" in b for b in bodies) and len(renders) - before <= 1
        run_study(cfg, f"sqlite:///{tmp_path / 's.db'}", n_trials=3)  # a trial finishes meanwhile
        time.sleep(0.6)
        assert "3 schedules measured" in urllib.request.urlopen(url + "/", timeout=30).read().decode()
    finally:
        server.shutdown()
        server.server_close()
