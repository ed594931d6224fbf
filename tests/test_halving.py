"""The halving strategy: a training continued from its checkpoint equals the uninterrupted one, bit
for bit; promotion by non-dominated sorting, crowding and noise on constructed values; a study
whose two workers promote asynchronously without training any rung twice; and its refusals."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from spanmix.proxies import ProxyConfig
from spanmix.proxies.data import DataConfig
from spanmix.proxies.train import TrainConfig, train_and_score
from spanmix.search.config import StudyConfig
from spanmix.search.front import crowding, ranked
from spanmix.search.measures import StandaloneMeasure
from spanmix.search.record import Point
from spanmix.search.strategies.halving import HalvingConfig, Rung, promotions
from spanmix.space import ConfigError, Schedule
from spanmix.studies.cli import main

HALVING = "[halving]\neta = 2\nrungs = 3\n"


def test_a_training_continued_from_its_checkpoints_equals_the_uninterrupted_one(tmp_path):
    args = ("F S8", ProxyConfig(d_model=32, n_heads=2, context=32),
            DataConfig(tasks=("recall",), seq_len=32, n_pairs=4, n_queries=4, val_samples=4),
            TrainConfig(steps=12, batch_size=2, precision="fp32", warmup=3))
    whole = train_and_score(*args, seed=1, stream=1)
    first = train_and_score(*args, seed=1, stream=1, until=4, checkpoint_dir=tmp_path / "a")
    second = train_and_score(*args, seed=1, stream=1, until=9, checkpoint_dir=tmp_path / "b",
                             start_from=tmp_path / "a" / "last.ckpt")
    third = train_and_score(*args, seed=1, stream=1, start_from=tmp_path / "b" / "last.ckpt")
    assert third.scores == whole.scores  # exactly: same steps, same batches, same learning rates
    assert first.scores != whole.scores and (first.steps, second.start_step, third.start_step) == (4, 4, 9)
    assert third.tokens_seen == (12 - 9) * 2 * 32  # what this call trained, not what the model saw


def test_the_last_rung_is_the_standalone_measurement_itself(tiny_config, tmp_path):
    cfg = StudyConfig.from_dict(tomllib.loads(tiny_config(steps=12, extra=HALVING).read_text()))
    rungs = [Rung(cfg, i, "fp32", tmp_path) for i in range(3)]
    assert [r.until for r in rungs] == [3, 6, 12] and [r.name for r in rungs] == ["rung-0", "rung-1", "standalone"]
    plain = StandaloneMeasure(cfg, precision="fp32")
    assert rungs[-1].key == plain.key and rungs[0].key != plain.key  # so a standalone study's result is reused
    schedule = Schedule.parse("F S4")
    climbed = [r(schedule, 1) for r in rungs][-1]
    assert climbed.scores == plain(schedule, 1).scores and climbed.start_step == 6
    assert not list(tmp_path.glob("halving/*/step-*"))  # each checkpoint removed once the next rung trained from it


def test_one_seed_below_the_last_rung_and_the_study_s_seeds_at_it(tiny_config, tmp_path):
    """``early_seeds = 1``: the rungs below train seed 0 only; at the last rung seed 0 continues
    from its checkpoint and seed 1 trains from scratch, both equal to the standalone seeds."""
    data = tomllib.loads(tiny_config(steps=12, extra="[halving]\neta = 2\nrungs = 2\nearly_seeds = 1\n").read_text())
    data["study"]["seeds"] = 2
    cfg = StudyConfig.from_dict(data)
    low, top = Rung(cfg, 0, "fp32", tmp_path), Rung(cfg, 1, "fp32", tmp_path)
    plain = StandaloneMeasure(cfg, precision="fp32")
    assert (low.replicates, top.replicates) == (1, 2) and "seeds" not in low.key and top.key == plain.key
    schedule = Schedule.parse("F S4")
    low(schedule, 0)
    continued, fresh = top(schedule, 0), top(schedule, 1)
    assert (continued.start_step, fresh.start_step) == (6, 0)
    assert continued.scores == plain(schedule, 0).scores and fresh.scores == plain(schedule, 1).scores


def test_a_first_rung_set_in_steps_spaces_the_rungs_geometrically():
    assert HalvingConfig(eta=8, rungs=2, first_steps=80).steps(240) == (80, 240)
    assert HalvingConfig(eta=3, rungs=3, first_steps=30).steps(240) == (30, 85, 240)  # 30 * (240/30) ** 0.5
    with pytest.raises(ConfigError, match=r"halving.first_steps=240 must be below train.steps=240"):
        HalvingConfig(eta=3, rungs=2, first_steps=240).steps(240)
    with pytest.raises(ConfigError, match=r"rungs at \[8, 9, 9, 10\] steps\); allowed: fewer rungs"):
        HalvingConfig(eta=3, rungs=4, first_steps=8).steps(10)


def _point(name: str, quality: float, cost: float, seeds: tuple[float, ...] = ()) -> Point:
    return Point(0, name, quality, cost, cost, True, None, {}, "rung-0", tuple({"loss": s} for s in seeds))


def test_promotion_is_by_front_then_crowding_then_noise():
    # front: a (cheap, bad), b (middle), c (dear, good); d, e, f dominated
    a, b, c = _point("a", 3.0, 1.0, (2.9, 3.1)), _point("b", 2.0, 2.0), _point("c", 1.0, 3.0, (0.99, 1.01))
    d, e, f = _point("d", 3.5, 2.5), _point("e", 2.5, 3.5), _point("f", 4.0, 4.0)
    assert crowding([a, b, c]) == {"a": math.inf, "b": 2.0, "c": math.inf}
    # the ends of the front first (uncrowded), the surer of them first; then b; then the second front
    assert [p.schedule for p in ranked([f, e, d, c, b, a], False, "loss")] == ["c", "a", "b", "d", "e", "f"]
    rungs = [[a, b, c, d, e, f], [c], []]
    # rung 0 holds 6: its best 6 // 3 = 2 go on (c already has); rung 1 holds 1: none yet
    assert promotions(rungs, [set(), {"c"}, set()], 3, False, "loss") == [(1, "a")]
    assert promotions(rungs, [set(), set(), set()], 2, False, "loss") == [(1, "c"), (1, "a"), (1, "b")]
    # asynchronous: whatever the current top holds goes on; a rung above is served first
    rungs[1] = [c, a]
    assert promotions(rungs, [set(), {"c", "a"}, set()], 2, False, "loss") == [(2, "c"), (1, "b")]


def test_halving_refuses_a_budget_or_a_study_too_small_for_its_rungs(tiny_config, tmp_path, capsys):
    assert HalvingConfig(eta=3, rungs=3).steps(27) == (3, 9, 27)
    with pytest.raises(ConfigError, match=r"train.steps=5 is too few for 3 rungs of eta=3 .* train.steps >= 9"):
        HalvingConfig(eta=3, rungs=3).steps(5)
    config = tiny_config(strategy="halving", n_trials=7, steps=27)
    assert main(["launch", "--config", str(config), "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()  # refused before anything was written
    config = tiny_config(strategy="halving", n_trials=7, steps=27, extra="[halving]\nrungs = 2\nearly_seeds = 2\n")
    assert main(["launch", "--config", str(config), "--out", str(tmp_path / "y")]) == 2
    assert "halving.early_seeds=2 is more than study.seeds=1, the last rung's; allowed: 1 to 1" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def _trials(out: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}").get_trials()


def test_two_workers_promote_asynchronously_and_train_no_rung_twice(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    # 64 steps: enough work that the second worker process is up before the first could do it all alone
    config = tiny_config(strategy="halving", n_trials=7, steps=64, extra=HALVING)
    assert main(["launch", "--config", str(config), "--out", str(out), "--workers", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    trials = _trials(out)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    trained = [(t.user_attrs["measurement"], t.user_attrs["schedule"]) for t in done if "reused_from" not in t.user_attrs]
    assert len(trained) == len(set(trained))  # no rung of any schedule trained twice
    by_rung = {m: {s for n, s in trained if n == m} for m in ("rung-0", "rung-1", "standalone")}
    assert len(by_rung["rung-0"]) == 7 and 3 <= len(by_rung["rung-1"]) and 1 <= len(by_rung["standalone"])
    assert by_rung["standalone"] <= by_rung["rung-1"] <= by_rung["rung-0"]  # each went on from the rung below
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both workers trained
    # a promoted training started from its checkpoint: only the steps above the rung below were trained
    assert {t.user_attrs["tokens_seen"] for t in done if t.user_attrs["measurement"] == "standalone"} == {(64 - 32) * 4 * 32}
    assert "Pareto front (loss vs flops, measured standalone)" in printed
    assert "rank fidelity of rung-0 against rung-1" in printed
    # a relaunch finds everything done and trains nothing
    assert main(["launch", "--config", str(config), "--out", str(out), "--no-progress", "--no-report"]) == 0
    assert len(_trials(out)) == len(trials)


def test_calibration_warns_when_the_first_rung_comes_before_the_budget_separates(tiny_config):
    from spanmix.search.calibration import Calibration, CurvePoint
    from spanmix.search.strategies.halving import Halving

    def point(fraction: float, gap: float) -> CurvePoint:  # paired seed noise 0.1: gap / 0.1 noise units
        return CurvePoint(fraction, round(fraction * 240), [1.0, 1.2], [1.1 + gap, 1.1 + gap], {})

    # the quick preset's curve, measured: 7.3, 14.4 and 31.2 units at 1/4, 1/2 and all of 240 steps
    calibration = Calibration("F F F", "B8 B8 B8", "loss", 2, [point(0.25, 0.73), point(0.5, 1.44), point(1.0, 3.12)], {})
    assert [round(p.units, 1) for p in calibration.points] == [7.3, 14.4, 31.2]
    assert calibration.earliest_separating().steps == 120
    cfg = StudyConfig.from_dict(tomllib.loads(tiny_config(steps=240, n_trials=7).read_text()))
    warning = Halving().advise(cfg.with_section("halving", HalvingConfig(eta=3, rungs=3)), calibration)
    assert "first rung trains 27 steps" in warning and "from 120 steps (50%) on" in warning
    assert Halving().advise(cfg.with_section("halving", HalvingConfig(eta=2, rungs=2)), calibration) is None
