"""Seeds and what they say: each schedule trained with k seeds, its mean and interval, the
schedules tied with the front, the knee's stability, and a retry that trains only missing seeds."""

from __future__ import annotations

import re
import statistics
from dataclasses import replace

import optuna
import pandas as pd
import pytest
import scipy.stats
import torch
from optuna.trial import TrialState

import spanmix.proxies.subject as subject
from spanmix.proxies.data import DataConfig
from spanmix.proxies.scoring import RESAMPLES, Scorer
from spanmix.search import StudyView, run_study
from spanmix.search.fidelity import repeatability
from spanmix.search.measures import StandaloneMeasure
from spanmix.search.noise import (
    Sequences,
    interval,
    knee_share,
    noise_of,
    percentile_interval,
    resolved,
    tied_with_front,
)
from spanmix.search.objective import Objective
from spanmix.search.record import Point
from spanmix.search.study import open_study
from spanmix.studies.cli import main
from spanmix.studies.config import load_config


def test_the_interval_is_students_t_on_known_numbers():
    lo, hi = interval([1.0, 2.0, 3.0, 4.0])
    # mean 2.5, standard error 1.2909944 / 2, t(0.975, 3 df) = 3.1824463
    assert lo == pytest.approx(2.5 - 3.1824463 * 0.6454972, abs=1e-6)
    assert hi == pytest.approx(2.5 + 3.1824463 * 0.6454972, abs=1e-6)
    assert interval([5.0]) is None and interval([2.0, 2.0]) == (2.0, 2.0)


def _pt(n: int, cost: float, samples: list[float]) -> Point:
    return Point(n, f"S{n + 2}", sum(samples) / len(samples), cost, cost, True, None, {},
                 seed_scores=tuple({"loss": v} for v in samples))


def test_schedules_the_seeds_cannot_show_dominated_are_tied_with_the_front():
    a = _pt(0, 1.0, [1.00, 1.01, 0.99])  # cheapest: on the front
    b = _pt(1, 3.0, [0.50, 0.52, 0.48])  # much better: on the front
    c = _pt(2, 2.0, [1.05, 0.97, 1.00])  # worse than a on average, inside its noise: tied
    d = _pt(3, 2.0, [1.50, 1.52, 1.48])  # clearly worse than a: dominated
    e = _pt(4, 4.0, [0.45, 0.58, 0.55])  # worse than b on average, inside the noise: tied
    pts = [a, b, c, d, e]
    front = [a, b]
    assert [p.number for p in tied_with_front(pts, front, "loss", maximize=False)] == [2, 4]
    noise = noise_of(pts, front, "loss", maximize=False)
    assert noise.seeds == 3 and set(noise.intervals) == {0, 1, 2, 3, 4}
    assert noise.resolution and noise.resolution[0] > 10  # a and b are far apart in noise units
    share = knee_share(pts, "loss", maximize=False)
    assert 0 <= share <= 1 and share == knee_share(pts, "loss", maximize=False)  # seeded: the same each time
    one_seed = [_pt(n, c, [q]) for n, c, q in ((0, 1.0, 1.0), (1, 2.0, 0.5))]
    unmeasured = noise_of(one_seed, one_seed, "loss", maximize=False)
    assert not unmeasured.measured and unmeasured.tied == [] and unmeasured.knee_share is None


def test_a_front_point_is_resolved_only_when_better_than_every_cheaper_one():
    a = _pt(0, 1.0, [1.00, 1.01, 0.99])  # cheapest: always resolved
    b = _pt(1, 2.0, [0.99, 1.02, 0.97])  # lower mean than a, inside its noise: tied with a
    c = _pt(2, 3.0, [0.50, 0.52, 0.48])  # far better than a and b
    d = _pt(3, 4.0, [0.51, 0.47, 0.49])  # better than a and b; than c only on one seed of three
    front = [d, c, b, a]  # in any order
    assert [p.number for p in resolved(front, "loss", maximize=False)] == [0, 2]
    assert resolved([], "loss", maximize=False) == []
    one_seed = [_pt(0, 1.0, [1.0]), _pt(1, 2.0, [0.1])]  # no noise, nothing shown better
    assert [p.number for p in resolved(one_seed, "loss", maximize=False)] == [0]


def test_repeatability_is_seed_1_against_seed_2_over_schedules_with_two_seeds():
    def two(n: int, first: float, second: float, full: bool = True) -> Point:
        return replace(_pt(n, 1.0, [first, second]), schedule=("F " if full else "") + f"S{n + 2}")

    alike = [two(n, 0.1 * n, 0.1 * n + 0.01) for n in range(4)]  # both seeds order them 0 < 1 < 2 < 3
    swapped = [two(n, 0.1 * n, 1.0 - 0.1 * n) for n in range(4)]  # the second seed reverses the order
    assert [f.kendall_tau for f in repeatability(alike, "loss", maximize=False)] == [1.0, 1.0]
    assert [(f.label, f.kendall_tau) for f in repeatability(swapped, "loss", maximize=False)] == [
        ("all, seed 1 against seed 2", -1.0), ("with a full layer, seed 1 against seed 2", -1.0)]
    # all-local schedules count in "all" only; schedules with one seed do not count
    mixed = [two(n, 0.1 * n, 0.1 * n, full=n < 2) for n in range(4)] + [_pt(9, 1.0, [0.5])]
    assert [(f.label, f.n) for f in repeatability(mixed, "loss", maximize=False)] == [("all, seed 1 against seed 2", 4)]


def _seeded(tiny_config, seeds: int, **kwargs):
    path = tiny_config(**kwargs)
    path.write_text(path.read_text().replace("seed = 0\n", f"seed = 0\nseeds = {seeds}\n", 1))
    return path


def test_each_schedule_trains_its_seeds_and_its_value_is_their_mean(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    config = _seeded(tiny_config, 2, n_trials=3, sampler="grid")
    assert main(["launch", "--config", str(config), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "95% interval" in printed and re.search(r"knee: trial \d+ in \d+% of 400 resamples", printed)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}")
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        seeds = t.user_attrs["seed_scores"]
        assert sorted(seeds) == ["0", "1"] and seeds["0"]["loss"] != seeds["1"]["loss"]  # two different trainings
        assert t.values[0] == pytest.approx((seeds["0"]["loss"] + seeds["1"]["loss"]) / 2)
        assert t.user_attrs["tokens_seen"] == 2 * 3 * 4 * 32
    csv = tmp_path / "t.csv"
    assert main(["show", "--study", "tiny", "--out", str(out), "--csv", str(csv)]) == 0
    frame = pd.read_csv(csv)
    done = frame[frame["state"] == "COMPLETE"]
    assert (done["seeds"] == 2).all() and (done["quality_lo"] <= done["quality"]).all()
    assert (done["quality"] <= done["quality_hi"]).all() and set(done["standing"]) <= {"front", "tied", "dominated"}
    # the reference against itself: each schedule's seed 1 against its seed 2, over the 3 schedules
    assert "repeatability of standalone (each schedule's seed 1 against its seed 2" in capsys.readouterr().out
    seeds = pd.read_csv(tmp_path / "t-fidelity.csv").query("cheap == 'standalone seed 1'").iloc[0]
    trials = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    first, second = ([t.user_attrs["seed_scores"][k]["loss"] for t in trials] for k in ("0", "1"))
    assert seeds["n"] == 3 and seeds["kendall_tau"] == pytest.approx(scipy.stats.kendalltau(first, second).statistic)
    page = (out / "dashboard.html").read_text()
    assert '"error_y":{"array"' in page.replace(" ", "")  # the front's intervals drawn


def test_one_seed_says_the_noise_is_unmeasured(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["launch", "--config", str(tiny_config(n_trials=2)), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "noise: unmeasured (study.seeds = 1)" in printed
    assert "note: the knee's neighbours may be as good (noise: unmeasured (study.seeds = 1)" in printed  # the knee's export says it too


@pytest.fixture
def trained(monkeypatch):
    """(schedule, seed stream) of every training the objective starts."""
    calls = []
    real = subject.train_and_score

    def counting(schedule, *args, **kwargs):
        calls.append((schedule.text, kwargs["stream"]))
        return real(schedule, *args, **kwargs)

    monkeypatch.setattr(subject, "train_and_score", counting)
    return calls


def test_a_retried_trial_trains_only_the_seeds_its_killed_attempt_did_not_finish(tiny_config, tmp_path, trained):
    cfg = load_config(path=_seeded(tiny_config, 3, sampler="random"))
    study = open_study(cfg, optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}"))
    # what a heartbeat retry of a killed attempt holds: its parameters and the seed it finished
    finished_seed = {"0": {"loss": 5.0, "ppl": 148.4, "long_loss": 5.0, "recall": 0.0, "recall/loss": 5.0,
                           "recall/acc": 0.0}}
    study.enqueue_trial({"n_full": 1, "placement": "bottom", "window": 8}, user_attrs={"seed_scores": finished_seed})
    study.optimize(Objective(cfg, StandaloneMeasure(cfg)), n_trials=1)
    assert trained == [("F S8", 1), ("F S8", 2)]  # seed 0 is not trained again
    t = study.trials[0]
    assert sorted(t.user_attrs["seed_scores"]) == ["0", "1", "2"] and t.user_attrs["seed_scores"]["0"]["loss"] == 5.0
    losses = [s["loss"] for s in t.user_attrs["seed_scores"].values()]
    assert t.values[0] == pytest.approx(sum(losses) / 3)


def test_seeds_of_a_schedule_resume_in_a_relaunched_study_without_repeats(tiny_config, tmp_path, trained):
    cfg = load_config(path=_seeded(tiny_config, 2, n_trials=2, sampler="grid"))
    url = f"sqlite:///{tmp_path / 's.db'}"
    run_study(cfg, url)
    run_study(cfg, url, n_trials=4)  # relaunched with a larger target: only new schedules train
    assert len(trained) == len(set(trained)) == 2 * 4
    assert StudyView(optuna.load_study(study_name="tiny", storage=url)).finished() == 4


def _scored(logits: torch.Tensor, y: torch.Tensor, data: DataConfig) -> Scorer:
    scorer = Scorer(data)
    scorer.update(logits, {"y": y, "dist": torch.zeros_like(y), "task": torch.zeros(len(y), dtype=torch.long)})
    return scorer


def test_resampled_sequences_are_paired_so_a_uniform_gain_shows_inside_overlapping_intervals():
    """Two models scored on the same sequences: B is A with every sequence's loss a little lower.
    The resamples of the sequences are the same for both, so B is lower on every one of them and
    the paired test calls it better, although each one's interval is far wider than the gain."""
    data = DataConfig(tasks=("code",), seq_len=32, val_samples=24)
    torch.manual_seed(0)
    y = torch.randint(0, 256, (24, 32))
    a = torch.randn(24, 32, 256) * torch.linspace(0.5, 4.0, 24)[:, None, None]  # sequences far apart in loss
    b = a.clone()
    b.scatter_add_(-1, y[..., None], torch.full((24, 32, 1), 0.02))
    ra, rb = _scored(a, y, data).resamples()["loss"], _scored(b, y, data).resamples()["loss"]
    assert len(ra) == len(rb) == RESAMPLES and all(x > z for x, z in zip(ra, rb))
    (lo_a, hi_a), (lo_b, hi_b) = percentile_interval(ra), percentile_interval(rb)
    assert lo_a < _scored(a, y, data).scores()["loss"] < hi_a and hi_a - lo_a > 10 * (statistics.fmean(ra) - statistics.fmean(rb))
    assert lo_a < hi_b and lo_b < hi_a  # unpaired, the intervals overlap
    pa, pb = (Point(n, f"S{n + 2}", statistics.fmean(r), 1.0, 1.0, True, None, {}, seed_scores=({"loss": 0.0},),
                    resampled={"loss": r}) for n, r in ((0, ra), (1, rb)))
    assert Sequences("loss").better_than([pb, pa], pa, maximize=False) == [True, False]
    assert _scored(a, y, data).resamples() == _scored(a, y, data).resamples()  # the draws are fixed

