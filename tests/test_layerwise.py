"""The layerwise strategy: a beam that finds the best set of local layers of every size when the
layers' harms add up, scoring a few dozen schedules of 2^L; its budget; a proxy study through the
command line that resumes without scoring anything twice; a zero-shot checkpoint study with sink
tokens; and its refusals."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from spanmix.search import StudyConfig, StudyView, preflight, run_study
from spanmix.search.layers import full_share, sensitivities
from spanmix.search.strategies.layerwise import beam_search, planned
from spanmix.space import ConfigError, Layer, Schedule

LAYERWISE = """
[space]
n_layers = 5
context = 32
placements = ["free"]
windows = [4]
sinks = [0, 2]
local = ["sliding"]

[layerwise]
beam = 2
expand = 2
"""


@pytest.mark.parametrize("seed", range(4))
def test_when_the_layers_harms_add_up_the_beam_finds_the_best_set_of_every_size(seed):
    L, rng = 12, random.Random(seed)
    harm = {(kind, i): rng.random() for kind in ("S8", "S8+4") for i in range(L)}
    kinds = [Layer("sliding", 8), Layer("sliding", 8, 4)]
    scored: list[Schedule] = []

    def loss(s: Schedule) -> float:
        return sum(harm[(layer.token, i)] for i, layer in enumerate(s.layers) if not layer.is_full)

    def measure(schedules):
        scored.extend(s for s in schedules if s not in scored)
        return {s: (loss(s), 0.0, 0.0, s.text) for s in schedules}

    assert beam_search(L, kinds, beam=2, expand=2, measure=measure) == L
    assert len(scored) <= 1 + L * len(kinds) + (L - 1) * len(kinds) * 2 * 2 < 2 ** L // 20
    for k in range(1, L + 1):
        best = min(loss(s) for s in scored if L - s.n_full == k)
        optimum = min(sum(sorted(harm[(kind, i)] for i in range(L))[:k]) for kind in ("S8", "S8+4"))
        assert best == pytest.approx(optimum), k


def test_the_search_stops_where_its_budget_ends():
    budget, scored = 9, []

    def measure(schedules):
        for s in schedules:
            if s not in scored and len(scored) < budget:
                scored.append(s)
        return {s: (float(len(s.text)), 0.0, 0.0, s.text) for s in schedules if s in scored}

    reached = beam_search(6, [Layer("sliding", 4)], beam=2, expand=2, measure=measure)
    assert len(scored) == budget and reached == 2  # 1 + 6 singles, then 2 of the size-2 candidates


def test_the_sensitivity_table_reads_the_single_layer_schedules_paired_by_seed():
    from spanmix.search.record import Point

    def point(text, seeds):
        return Point(number=0, schedule=text, quality=sum(seeds) / len(seeds), cost=1.0, cost_ratio=1.0, feasible=True,
                     reused_from=None, scores={"loss": sum(seeds) / len(seeds)},
                     seed_scores=tuple({"loss": s} for s in seeds))

    # seed 1 is worse for every schedule by 1.0: paired, the change of layer 0 is exactly +0.5 each seed
    pts = [point("F F F", [1.0, 2.0]), point("S4 F F", [1.5, 2.5]), point("F S4 F", [0.9, 2.0]),
           point("F F S4+2", [1.2, 2.2]), point("S4 S4 F", [3.0, 3.0])]
    table = sensitivities(pts, "loss", maximize=False)
    assert [(s.layer, s.change) for s in table["S4"]] == [(0, 0.5), (1, pytest.approx(-0.05))]
    assert table["S4"][0].interval == (0.5, 0.5)  # no spread in the paired differences; unpaired, each seed's spread is 0.7
    assert table["S4"][1].interval[0] < -0.05 < table["S4"][1].interval[1] and table["S4+2"][0].layer == 2
    assert sensitivities(pts, "loss", maximize=True)["S4"][0].change == -0.5
    assert full_share([pts[1], pts[4]], 3) == [0.0, 0.5, 1.0]


def _config(tiny_config) -> Path:
    path = tiny_config(name="lw", strategy="layerwise", n_trials=100, cost="kv_cache")
    text = path.read_text()
    text = text[: text.index("[space]")] + LAYERWISE.strip() + "\n\n" + text[text.index("[proxy]"):]
    path.write_text(text)
    return path


def _spanmix(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spanmix.studies.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_a_layerwise_study_from_the_command_line_scans_each_layer_then_grows_a_beam_and_resumes(tmp_path, tiny_config):
    config = _config(tiny_config)
    cfg = StudyConfig.from_dict(tomllib.loads(config.read_text()))
    done = _spanmix("launch", "--config", str(config), "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    view = StudyView(__import__("optuna").load_study(study_name="lw", storage=f"sqlite:///{tmp_path}/runs/lw/study.db"))
    texts = {p.schedule for p in view.points("standalone")}
    kinds = cfg.space.local_layers()
    singles = {Schedule(tuple(k if j == i else Layer("full") for j in range(5))).text for k in kinds for i in range(5)}
    assert "F F F F F" in texts and singles <= texts and "S4 S4 S4 S4 S4" in texts
    assert 1 + 10 < len(texts) <= planned(cfg) < cfg.space.size()
    assert "layerwise: loss change when one layer alone is S4+2 (5 layers scanned), least sensitive first: " in done.stdout
    assert f"layerwise: {len(texts)} schedules scored of {cfg.space.size()} in the space" in done.stdout
    # relaunched, it replays its decisions from the stored scores and scores nothing again
    again = _spanmix("launch", "--config", str(config), "--no-progress", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    view = StudyView(__import__("optuna").load_study(study_name="lw", storage=f"sqlite:///{tmp_path}/runs/lw/study.db"))
    assert len(view.records) == len(texts)


@pytest.mark.parametrize("change, message", [
    ({"placements": '["bottom", "top"]'}, r"study.strategy 'layerwise' chooses which layers go local, one at a time: "
                                          r"set \[space\] placements = \[\"free\"\]"),
    ({"workers": "2"}, r"--workers 2: the layerwise strategy decides each step from the scores of the step before; use 1"),
    ({"beam": "0"}, r"layerwise.beam must be a whole number from 1"),
])
def test_what_the_layerwise_strategy_cannot_do_is_refused_in_one_line(tmp_path, tiny_config, change, message):
    config = _config(tiny_config)
    text = config.read_text()
    args = []
    if "placements" in change:
        text = text.replace('placements = ["free"]', f"placements = {change['placements']}\nn_full = [0, 5]")
    if "beam" in change:
        text = text.replace("beam = 2", f"beam = {change['beam']}")
    if "workers" in change:
        args = ["--workers", change["workers"]]
    config.write_text(text)
    result = _spanmix("launch", "--config", str(config), "--no-progress", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert not (tmp_path / "runs" / "lw" / "study.db").exists()


def test_a_grid_over_a_free_space_too_large_to_list_is_refused():
    with pytest.raises(ConfigError, match=r"study.sampler 'grid' queues every schedule, and the space holds 2,147,483,647"):
        StudyConfig.from_dict({"study": {"name": "g", "sampler": "grid"},
                               "space": {"n_layers": 30, "context": 64, "placements": ["free"], "windows": [8], "sinks": [0, 4]},
                               "data": {"seq_len": 64}, "proxy": {"context": 64}})


def test_a_zero_shot_checkpoint_is_searched_layer_by_layer_with_sink_tokens(tmp_path):
    from test_checkpoint import _cfg, save_tiny

    from spanmix.proxies import checkpoint

    data = _cfg(save_tiny(tmp_path / "m", num_hidden_layers=6))
    data["study"].update(strategy="layerwise", sampler="nsga2", n_trials=40)
    data["space"].update(placements=["free"], sinks=[0, 4])
    data["layerwise"] = {"beam": 2, "expand": 1}
    cfg = StudyConfig.from_user(data)
    preflight(cfg)
    study = run_study(cfg, f"sqlite:///{tmp_path / 'ck.db'}")
    view = StudyView(study, cfg)
    pts = {p.schedule: p for p in view.points("standalone")}
    # all-full, 6 layers x 2 kinds alone, then at least one set of each size for each kind
    assert 1 + 12 + 5 * 2 <= len(pts) <= planned(cfg) == 1 + 12 + 5 * 2 * 2 * 1
    table = sensitivities(list(pts.values()), cfg.quality, view.maximize)
    assert set(table) == {"S16", "S16+4"} and [s.layer for s in table["S16+4"]] == list(range(6))
    assert all(s.interval is not None and s.interval[0] <= s.change <= s.interval[1] for s in table["S16"])
    # each score is the checkpoint's own under that schedule, zero-shot
    text = "F F S16+4 F F F"
    alone = checkpoint.score(cfg.base, Schedule.parse(text), cfg.data, cfg.train, seed=cfg.train.seed)
    assert pts[text].scores == alone.scores
    assert max(len(Schedule.parse(t)) - Schedule.parse(t).n_full for t in pts) == 6  # the beam reached every layer


def test_readme_layerwise_study_on_the_tiny_checkpoint(tmp_path):
    """README's "Which layers, one by one" as a user runs it: the tiny Qwen2 of its snippet, its
    ``layers.toml`` and its command; the study scans every layer for both kinds, grows the beam to
    every layer, and exports the knee."""
    from test_checkpoint import _readme_block, _run

    _run(_readme_block("## Retrofit a pretrained model", "bash").strip(), tmp_path)
    (tmp_path / "layers.toml").write_text(_readme_block("**Which layers, one by one.**", "toml"))
    done = _run("spanmix launch --config layers.toml", tmp_path)
    assert "layerwise: loss change when one layer alone is S32+4 (4 layers scanned), least sensitive first: " in done.stdout
    assert "layerwise: 23 schedules scored of 31 in the space (beam 2, expand 2); changes within the study's noise unit" in done.stdout
    assert "no Hugging Face family keeps sink tokens" in done.stdout or "hf-qwen2" in done.stdout
    assert list((tmp_path / "runs" / "layers").glob("knee-*.json"))


def test_a_checkpoint_that_heals_is_ranked_zero_shot_and_only_the_beams_survivors_are_healed(tmp_path):
    from test_checkpoint import _cfg, save_tiny

    from spanmix.proxies import checkpoint

    data = _cfg(save_tiny(tmp_path / "m"), heal_steps=2)
    data["study"].update(strategy="layerwise", sampler="nsga2", n_trials=40)
    data["space"].update(placements=["free"])
    data["layerwise"] = {"beam": 1, "expand": 2}
    cfg = StudyConfig.from_user(data)
    preflight(cfg)
    study = run_study(cfg, f"sqlite:///{tmp_path / 'ck.db'}")
    view = StudyView(study, cfg)
    ranked = {p.schedule: p for p in view.points("zero-shot")}
    healed = {p.schedule: p for p in view.points("standalone")}
    assert len(ranked) == 1 + 4 + 2 + 2 + 1  # all-full, each layer alone, then the survivor grown by 2 layers
    # the survivors: all-full and the best zero-shot set of each size, each grown from the one before
    best = [min((p for t, p in ranked.items() if t.split().count("S16") == n), key=lambda p: (p.quality, p.cost, p.schedule))
            for n in range(5)]
    assert set(healed) == {p.schedule for p in best}
    assert all(set(np.flatnonzero([x == "S16" for x in a.schedule.split()])) <= set(np.flatnonzero([x == "S16" for x in b.schedule.split()]))
               for a, b in zip(best, best[1:]))
    # a survivor's score is its healing alone, and differs from its zero-shot score
    text = best[2].schedule
    alone = checkpoint.score(cfg.base, Schedule.parse(text), cfg.data, cfg.train, seed=cfg.train.seed)
    assert healed[text].scores == alone.scores and healed[text].quality != ranked[text].quality
    assert {p.schedule for p in view.front()} <= set(healed)
    # relaunched, it replays its decisions from the stored scores and measures nothing again
    again = StudyView(run_study(cfg, f"sqlite:///{tmp_path / 'ck.db'}"), cfg)
    assert len(again.points_all) == len(view.points_all)
