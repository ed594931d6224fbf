"""Calibration: a budget too small to learn the recall probe is refused before the study spends it,
with nothing else trained; one that learns it passes; the learning curve comes from the same
trainings."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from spanmix.search.calibration import Calibration, CurvePoint, separation
from spanmix.studies.cli import main

# the README's recall test (tests/test_training.py): F F learns the lookup in 260 steps, S8 S8 cannot
CONFIG = """
[study]
name = "calib"
quality = "loss"
n_trials = 3

[space]
n_layers = 2
context = 128
n_full = [0, 2]
placements = ["bottom"]
windows = [8]
local = ["sliding"]

[proxy]
d_model = 64
n_heads = 2
context = 128

[data]
tasks = ["recall"]
seq_len = 128
n_pairs = 8
n_queries = 8
min_distance = 64
val_samples = 64

[train]
steps = {steps}
batch_size = 32
lr = 3e-3
warmup = 20
weight_decay = 0.0
precision = "fp32"
"""


def _calibrate(tmp_path: Path, steps: int, command: tuple[str, ...] = ("calibrate",)) -> tuple[int, optuna.Study]:
    config = tmp_path / "calib.toml"
    config.write_text(CONFIG.format(steps=steps))
    out = tmp_path / "run"
    code = main([*command, "--config", str(config), "--out", str(out), "--no-progress"])
    return code, optuna.load_study(study_name="calib", storage=f"sqlite:///{out / 'study.db'}")


def _trained(study: optuna.Study) -> list[tuple[str, str]]:
    return sorted((t.user_attrs["measurement"], t.user_attrs["schedule"]) for t in study.get_trials(states=(TrialState.COMPLETE,))
                  if "reused_from" not in t.user_attrs)


def test_a_budget_too_small_to_learn_the_probe_is_refused_and_nothing_else_is_trained(tmp_path, capsys):
    code, study = _calibrate(tmp_path, steps=60)
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2 and len(err) == 1
    assert "does not separate" in err[0] and "recall accuracy" in err[0] and "train.steps" in err[0]
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert {t.user_attrs["schedule"] for t in done} == {"F F", "S8 S8"} and len(done) == 2
    assert all(t.user_attrs["measurement"] == "calibration" for t in done)  # apart from the 1-seed study's


def test_a_budget_that_learns_the_probe_separates_on_the_same_trainings(tmp_path, capsys):
    code, study = _calibrate(tmp_path, steps=260)
    printed = capsys.readouterr().out
    assert code == 0 and "the budget separates" in printed
    rows = [line.split() for line in printed.splitlines() if line.strip().startswith(("25%", "50%", "100%"))]
    assert [r[1] for r in rows] == ["65", "130", "260"]  # scored on the way, at 1/4, 1/2 and the end
    assert float(rows[-1][6]) >= separation(2)  # noise units at the full budget: the threshold at 2 seeds
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        assert sorted(t.user_attrs["seed_scores"]) == ["0", "1"]
        assert all(sorted(c) == ["130", "65"] for c in t.user_attrs["seed_curves"].values())


def test_launch_calibrates_first_and_stops_before_the_space_is_spent_unless_forced(tmp_path, capsys):
    code, study = _calibrate(tmp_path, steps=60, command=("launch",))
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if "error" in line]
    assert code == 2 and len(err) == 1 and "does not separate" in err[0] and "--force" in err[0]
    assert "calibration: F F (dearest) against S8 S8 (cheapest)" in captured.out
    assert _trained(study) == [("calibration", "F F"), ("calibration", "S8 S8")]  # nothing of the study itself

    code, study = _calibrate(tmp_path, steps=60, command=("launch", "--force", "--no-report"))
    assert code == 0 and "running anyway (--force)" in capsys.readouterr().out
    # the calibration found again, not retrained; then the study's own three schedules at its one seed
    assert _trained(study) == [("calibration", "F F"), ("calibration", "S8 S8"),
                               ("standalone", "F F"), ("standalone", "F S8"), ("standalone", "S8 S8")]
    # of which the calibration's two are its seed 0, taken from it: the same training, not trained again
    done = {(t.user_attrs["measurement"], t.user_attrs["schedule"]): t.user_attrs
            for t in study.get_trials(states=(TrialState.COMPLETE,))}
    for schedule in ("F F", "S8 S8"):
        mine, calibration = done["standalone", schedule], done["calibration", schedule]
        assert mine["seed_scores"]["0"] == calibration["seed_scores"]["0"] and mine["tokens_seen"] == 0
    assert done["standalone", "F S8"]["tokens_seen"] == 60 * 32 * 128


def test_two_seeds_need_a_wider_gap_than_three():
    # the noise is paired: seed k of both schedules shares its start and batches, so it is the
    # spread of the per-seed differences over sqrt(2). Two equal schedules reach 12.7 such units
    # 5% of the time with 2 seeds (t with 1 degree of freedom) and 3.51 with 3 (t with 2).
    shared = CurvePoint(1.0, 10, [-0.5, 2.5], [5.0, 8.0], {})  # seed 1 moves both by 3: no part of the noise
    assert shared.noise == 0.0 and shared.units == math.inf
    two = Calibration("F F", "S8 S8", "loss", 2, [CurvePoint(1.0, 10, [-0.5, 0.5], [5.0, 5.0], {})], {})
    three = Calibration("F F", "S8 S8", "loss", 3, [CurvePoint(1.0, 10, [-1.0, 0.0, 1.0], [4.0, 4.0, 4.0], {})], {})
    assert two.last.units == pytest.approx(10.0) and three.last.units == pytest.approx(4 * math.sqrt(2))
    assert not two.separated and "10.0 noise units apart (need 12.7 at 2 seeds)" in two.verdict()
    assert "try 3 seeds (study.seeds; they need 3.51 units), more steps" in two.verdict()
    assert three.separated and "(need 3.51 at 3 seeds)" in three.verdict()
    assert two.earliest_separating() is None and three.earliest_separating() is three.last
    # what the threshold promises: equal schedules with normal per-seed differences reach it 5% of the time
    rng = np.random.default_rng(0)
    for k in (2, 3):
        d = rng.standard_normal((20000, k))
        units = np.abs(d.mean(1)) / (d.std(1, ddof=1) / math.sqrt(2))
        assert (units >= separation(k)).mean() == pytest.approx(0.05, abs=0.005)


@pytest.mark.parametrize("steps", [8])
def test_scoring_on_the_way_does_not_change_the_training(steps):
    from spanmix.proxies import ProxyConfig
    from spanmix.proxies.data import DataConfig
    from spanmix.proxies.train import TrainConfig, train_and_score

    args = ("F S8", ProxyConfig(d_model=32, n_heads=2, context=32),
            DataConfig(tasks=("recall",), seq_len=32, n_pairs=4, n_queries=4, val_samples=4),
            TrainConfig(steps=steps, batch_size=2, precision="fp32"))
    plain, scored = train_and_score(*args), train_and_score(*args, curve_at=(2, 4))
    assert plain.scores == scored.scores and sorted(scored.curve) == [2, 4] and plain.curve == {}
