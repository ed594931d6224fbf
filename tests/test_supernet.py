"""The supernet strategy: shared weights, the sandwich rule, resume after SIGKILL, fidelity, the CLI."""

import json
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace

import optuna
import pandas as pd
import pytest
import torch

from spanmix.proxies.model import ProxyConfig, build_model
from spanmix.search import STANDALONE, config_of, points, rank_fidelity, run_fidelity
from spanmix.search.fidelity import confirm_set, top_overlap
from spanmix.search.front import fronts
from spanmix.search.queue import enqueue, enqueue_space
from spanmix.search.record import Point
from spanmix.search.strategies.supernet import (
    SUPERNET,
    Sandwich,
    band_configs,
    keep_resolved,
    shared_key,
    train_supernet,
    train_supernets,
)
from spanmix.space import Schedule, SearchSpace
from spanmix.studies.cli import main
from spanmix.studies.config import load_config

SUPERNET_SECTION = """
[supernet]
steps = {steps}
checkpoint_every = 5
controls = 2
"""


def test_supernet_forward_equals_a_standalone_model_with_the_same_weights():
    cfg = ProxyConfig(d_model=32, n_heads=2, context=40)
    torch.manual_seed(0)
    supernet = build_model(cfg, "F F F")
    idx = torch.randint(256, (2, 37))  # not a multiple of any window: ragged tails are covered too
    for text in ("S4 B8 F", "B5 B5 B5", "S1 F S16", "F F F"):
        standalone = build_model(cfg, text)
        standalone.load_state_dict(supernet.state_dict())
        assert torch.equal(supernet(idx, Schedule.parse(text)), standalone(idx)), text
    with pytest.raises(ValueError, match="has 2 layers; this model has 3"):
        supernet(idx, Schedule.parse("F F"))


def test_sandwich_rule_draws_dearest_cheapest_then_random_members_of_the_space():
    space = SearchSpace(n_layers=4, context=64, n_full=(0, 3), placements=("bottom", "top"), windows=(4, 8, 16),
                        local=("sliding", "block"))
    sandwich = Sandwich(space, random_draws=3, seed=7)
    assert sandwich.dearest.text == "F F F S16" and sandwich.cheapest.text == "B4 B4 B4 B4"
    pairs = [sum(s.attended_pairs(64)) for s in space.enumerate()]
    assert sum(sandwich.dearest.attended_pairs(64)) == max(pairs)
    assert sum(sandwich.cheapest.attended_pairs(64)) == min(pairs)
    draws = [sandwich(step) for step in range(500)]
    assert all(draws[s] == sandwich.dearest for s in range(0, 500, 5))
    assert all(draws[s] == sandwich.cheapest for s in range(1, 500, 5))
    randoms = [d for s, d in enumerate(draws) if s % 5 >= 2]
    assert all(space.contains(d) for d in randoms)
    assert len(set(randoms)) > space.size() // 2  # uniform draws reach most of the space
    assert draws == [Sandwich(space, 3, 7)(s) for s in range(500)]  # a function of (seed, step): resumable
    assert [Sandwich(space, 3, 8)(s) for s in range(2, 500, 5)] != randoms[::3]


TRAIN_IN_CHILD = (
    "import sys, pathlib; from spanmix.studies.config import load_config; from spanmix.search.strategies.supernet import train_supernet; "
    "train_supernet(load_config(path=sys.argv[1]), pathlib.Path(sys.argv[2]))"
)


def test_killed_supernet_resumes_from_its_checkpoint_to_the_same_weights(tiny_config, tmp_path):
    config = tiny_config(name="sn", strategy="supernet", extra=SUPERNET_SECTION.format(steps=400))
    cfg = load_config(path=config)
    reference = train_supernet(cfg, tmp_path / "a" / "sn")
    folder = tmp_path / "b" / "sn"
    proc = subprocess.Popen([sys.executable, "-c", TRAIN_IN_CHILD, str(config), str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt, deadline = None, time.time() + 120
    while ckpt is None and time.time() < deadline and proc.poll() is None:
        found = list(folder.glob("supernet-*/last.ckpt"))
        if found and torch.load(found[0], weights_only=False)["global_step"] >= 10:
            ckpt = found[0]
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt is not None, "no checkpoint was written before the child finished"
    killed_at = torch.load(ckpt, weights_only=False)["global_step"]
    assert 10 <= killed_at < 400 and not (ckpt.parent / "supernet.pt").exists()
    resumed = train_supernet(cfg, folder)
    assert resumed.steps == 400 and not resumed.reused
    for name, tensor in reference.state.items():
        assert torch.equal(tensor, resumed.state[name]), name


def test_fidelity_statistics_match_a_hand_computed_example():
    # cheap order 1..5; the dear measurement swaps two neighbouring pairs: 8 of the 10 pairs concordant
    f = rank_fidelity([1, 2, 3, 4, 5], [1, 3, 2, 5, 4], maximize=False)
    assert f.kendall_tau == pytest.approx((8 - 2) / 10)
    assert f.spearman_rho == pytest.approx(1 - 6 * 4 / (5 * (25 - 1)))  # sum of squared rank gaps: 4
    assert f.top3_overlap == 3
    g = rank_fidelity([1, 2, 3, 4, 5], [1, 4, 2, 5, 3], maximize=False)
    assert g.kendall_tau == pytest.approx((7 - 3) / 10)
    assert g.spearman_rho == pytest.approx(1 - 6 * 10 / 120)
    assert g.top3_overlap == 2  # best three by dear: positions 0, 2, 4
    assert top_overlap([0.9, 0.8, 0.1, 0.2], [0.1, 0.8, 0.9, 0.7], maximize=True) == 2
    for fid in (f, g):
        lo, hi = fid.tau_interval
        assert -1 <= lo <= hi <= 1
    assert rank_fidelity([1, 2, 3, 4, 5], [1, 4, 2, 5, 3], False, seed=3) == rank_fidelity([1, 2, 3, 4, 5], [1, 4, 2, 5, 3], False, seed=3)
    with pytest.raises(ValueError, match="at least 3"):
        rank_fidelity([1, 2], [2, 1], False)


def test_confirm_set_is_the_front_plus_seeded_near_front_controls():
    def pt(n, q, c):
        return Point(n, f"S{n + 2}", q, c, c, True, None, {})

    pts = [pt(0, 1.0, 1.0), pt(1, 0.5, 2.0), pt(2, 1.1, 1.5), pt(3, 0.6, 3.0), pt(4, 2.0, 5.0), pt(5, 3.0, 6.0)]
    chosen = confirm_set(pts, maximize=False, controls=2, seed=0)
    assert [p.number for p in chosen[:2]] == [0, 1]  # the front, cheapest first
    assert {p.number for p in chosen[2:]} <= {2, 3, 4}  # from the second and third fronts
    assert len(chosen) == 4 and chosen == confirm_set(pts, False, 2, seed=0)


def test_confirm_resolved_trains_only_the_front_points_the_supernets_noise_separates():
    def scored(n: int, cost: float, resamples: list[float]) -> Point:  # one replicate, resampled sequences
        q = sum(resamples) / len(resamples)
        return Point(n, f"S{n + 2}", q, cost, cost, True, None, {}, SUPERNET, ({"loss": q},), {"loss": resamples})

    cheap = scored(0, 1.0, [2.00, 2.10, 2.05, 2.02])
    tied = scored(1, 2.0, [1.99, 2.11, 2.04, 2.01])  # lower on average, not on every resample
    better = scored(2, 3.0, [0.50, 0.60, 0.55, 0.52])  # lower on every resample
    off = scored(3, 4.0, [1.00, 1.10, 1.05, 1.02])
    pts = [cheap, tied, better, off]
    keep = keep_resolved("loss", maximize=False)
    assert [p.number for p in keep([cheap, tied, better])] == [0, 2]
    assert [p.number for p in confirm_set(pts, False, controls=0, seed=0, keep=keep)] == [0, 2]
    assert [p.number for p in confirm_set(pts, False, controls=0, seed=0)] == [0, 1, 2]


def test_a_study_with_confirm_resolved_trains_the_resolved_front(tiny_config, tmp_path, capsys):
    from spanmix.search.noise import Sequences, resolved

    config = tiny_config(name="res", strategy="supernet",
                         extra=SUPERNET_SECTION.format(steps=12).replace("controls = 2", "controls = 0") + 'confirm = "resolved"\n')
    out = tmp_path / "runs" / "res"
    assert main(["launch", "--config", str(config), "--out", str(out), "--no-progress", "--no-report"]) == 0
    assert "front points its scores resolve" in capsys.readouterr().err
    study = optuna.load_study(study_name="res", storage=f"sqlite:///{out / 'study.db'}")
    shared = points(study, SUPERNET)
    front = fronts(shared, maximize=False)[0]
    expected = {p.schedule for p in resolved(front, "loss", False, Sequences("loss"))}
    assert {p.schedule for p in points(study, STANDALONE)} == expected
    assert len(expected) < len(front), [(p.schedule, p.quality) for p in front]  # some of the front was tied
    bad = tiny_config(name="bad", strategy="supernet", extra=SUPERNET_SECTION.format(steps=12) + 'confirm = "all"\n')
    assert main(["launch", "--config", str(bad), "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    assert "supernet.confirm='all': allowed: 'front', 'resolved'" in capsys.readouterr().err


def test_supernet_study_through_the_cli(tiny_config, tmp_path, capsys):
    out = tmp_path / "runs" / "sn"
    config = tiny_config(name="sn", strategy="supernet", sampler="nsga2", extra=SUPERNET_SECTION.format(steps=30))
    assert main(["launch", "--config", str(config), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "measured standalone" in printed and "rank fidelity of supernet against standalone" in printed
    assert "Epoch" not in printed  # --no-progress: no Lightning bar either
    assert re.search(r"all confirmed: n=\d+, Kendall tau [+-]\d\.\d\d \[", printed)
    assert "wall time by stage: train" in printed
    study = optuna.load_study(study_name="sn", storage=f"sqlite:///{out / 'study.db'}")
    cfg = load_config(path=config)
    scored = {p.schedule for p in points(study, SUPERNET)}
    assert len(scored) == cfg.space.size()  # a small space is scored whole
    confirmed = {p.schedule for p in points(study, STANDALONE)}
    assert len(confirmed) >= 3 and confirmed <= scored
    # the knee and the exported schedule come from the standalone numbers
    knee = json.loads(next(p for p in out.glob("knee-*.json") if ".hf-" not in p.name).read_text())
    assert study.trials[knee["trial"]].user_attrs["measurement"] == STANDALONE
    page = (out / "dashboard.html").read_text()
    assert 'id="fidelity-supernet-standalone"' in page and "Rank fidelity: supernet vs standalone" in page
    csv = tmp_path / "trials.csv"
    assert main(["show", "--study", "sn", "--out", str(out), "--csv", str(csv)]) == 0
    frame = pd.read_csv(csv)
    assert set(frame["measurement"].dropna()) == {SUPERNET, STANDALONE}
    # a supernet score has one replicate: its interval is over the validation sequences
    shared = frame[(frame.measurement == SUPERNET) & (frame.state == "COMPLETE")]
    assert (shared.quality_lo <= shared.quality).all() and (shared.quality <= shared.quality_hi).all()
    assert (shared.quality_hi > shared.quality_lo).all()
    fid = pd.read_csv(tmp_path / "trials-fidelity.csv")
    assert {"kendall_tau", "spearman_rho", "top3_overlap"} <= set(fid.columns)
    assert fid.loc[0, "cheap"] == SUPERNET and fid.loc[0, "n"] == len(confirmed)
    # a second study with the same measurement reuses the trained supernet
    other = tiny_config(name="sn2", strategy="supernet", extra=SUPERNET_SECTION.format(steps=30))
    assert main(["launch", "--config", str(other), "--out", str(tmp_path / "runs" / "sn2"), "--no-progress", "--no-report"]) == 0
    assert not list((tmp_path / "runs" / "sn2").glob("supernet-*"))
    assert "reusing" in capsys.readouterr().err


def test_fidelity_command_retrains_at_a_larger_budget(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    config = tiny_config(n_trials=5, sampler="grid")
    assert main(["launch", "--config", str(config), "--out", str(out), "--no-progress", "--no-report"]) == 0
    capsys.readouterr()
    assert main(["fidelity", "--study", "tiny", "--out", str(out), "--budget", "2", "--schedules", "4"]) == 0
    printed, err = capsys.readouterr()
    assert re.search(r"all confirmed: n=4, Kendall tau", printed), printed
    # it says what it will train and about how long, then a bar of schedules with the tau so far
    assert re.search(r"retraining 4 schedules of study 'tiny' at 2x its 3 steps \(1 seed\(s\) each\): about \d+ min", err)
    assert "fidelity 2x" in err and "4/4" in err and "tau=" in err
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}")
    longer = [t for t in study.trials if t.user_attrs.get("measurement") == "standalone-2x"]
    assert len(longer) == 4 and all(t.user_attrs["tokens_seen"] == 2 * 3 * 4 * 32 for t in longer)
    # the grid's two queued schedules ran first, at the study's own budget
    assert len({t.user_attrs["schedule"] for t in study.trials if t.user_attrs.get("measurement") == STANDALONE}) == 7
    assert main(["fidelity", "--study", "tiny", "--out", str(out), "--budget", "2", "--schedules", "99"]) == 2
    err = capsys.readouterr().err
    assert "--schedules must be in 3..7" in err and "retraining" not in err  # refused before any work
    assert main(["fidelity", "--study", "tiny", "--out", str(out), "--budget", "3", "--schedules", "3", "--no-progress"]) == 0
    assert "fidelity 3x" not in capsys.readouterr().err  # no bar

    calls = []
    cfg = config_of(study)
    run_fidelity(cfg, study, 4, 3, on_progress=lambda done, k, so_far: calls.append((done, k, so_far)))
    assert [(done, k) for done, k, _ in calls] == [(0, 3), (1, 3), (2, 3), (3, 3)]  # once at the start, once a schedule
    assert [so_far is None for _, _, so_far in calls] == [True, True, True, False] and calls[-1][2].n == 3


def test_few_shot_bands_score_each_schedule_on_its_own_bands_weights(tiny_config, tmp_path, capsys):
    """``bands = [1]``: one supernet for the schedules without a full layer, one for those with. The
    second is a plain supernet of that part of the space: a study of that space alone reuses it and
    scores its schedules exactly as the few-shot study did."""
    runs = tmp_path / "runs"
    few = tiny_config(name="few", strategy="supernet", extra=SUPERNET_SECTION.format(steps=12) + "bands = [1]\n")
    assert main(["launch", "--config", str(few), "--out", str(runs / "few"), "--no-progress", "--no-report"]) == 0
    assert len(list((runs / "few").glob("supernet-*/supernet.pt"))) == 2
    assert "band of 0-0 full layers (2 schedules)" in capsys.readouterr().err
    study = optuna.load_study(study_name="few", storage=f"sqlite:///{runs / 'few' / 'study.db'}")
    shared = {p.schedule: p.scores["loss"] for p in points(study, SUPERNET)}
    assert len(shared) == 7
    plain = tiny_config(name="plain", strategy="supernet", extra=SUPERNET_SECTION.format(steps=12))
    plain.write_text(plain.read_text().replace("n_full = [0, 2]", "n_full = [1, 2]"))
    assert main(["launch", "--config", str(plain), "--out", str(runs / "plain"), "--no-progress", "--no-report"]) == 0
    assert "reusing" in capsys.readouterr().err and not list((runs / "plain").glob("supernet-*"))
    alone = optuna.load_study(study_name="plain", storage=f"sqlite:///{runs / 'plain' / 'study.db'}")
    with_full = {p.schedule: p.scores["loss"] for p in points(alone, SUPERNET)}
    assert len(with_full) == 5 and with_full == {s: v for s, v in shared.items() if "F" in s.split()}
    # a cut outside the space's range of full-layer counts is refused before any work
    bad = tiny_config(name="bad", strategy="supernet", extra=SUPERNET_SECTION.format(steps=12) + "bands = [3]\n")
    assert main(["launch", "--config", str(bad), "--out", str(runs / "bad"), "--no-progress"]) == 2
    assert "supernet.bands=[3]: allowed: increasing full-layer counts" in capsys.readouterr().err
    assert not (runs / "bad").exists()


def test_shared_weights_trained_in_one_precision_are_not_reused_in_another(tiny_config, tmp_path):
    cfg = load_config(path=tiny_config(name="p", strategy="supernet", extra=SUPERNET_SECTION.format(steps=4)))
    train_supernet(cfg, tmp_path / "a", precision="fp32")
    assert train_supernet(cfg, tmp_path / "b", precision="fp32").reused  # a sibling folder's weights
    assert not train_supernet(cfg, tmp_path / "b", precision="bf16").reused


def test_the_shared_weights_key_names_bands_and_distill_only_when_set():
    # so that weights trained before either option existed (a band's plain supernet among them) are still found
    cfg = load_config("medium")
    assert shared_key(band_configs(cfg)[1][1], "fp32")["supernet"] == {"steps": 1200, "random_draws": 2}
    assert shared_key(cfg, "fp32")["supernet"] == {"steps": 1200, "random_draws": 2, "bands": [1]}
    distilled = cfg.with_section("supernet", replace(cfg.section("supernet"), distill=True))
    assert shared_key(distilled, "fp32")["supernet"] == {"steps": 1200, "random_draws": 2, "bands": [1], "distill": True}


def test_finetune_steps_train_a_copy_before_scoring(tiny_config, tmp_path):
    from spanmix.search.strategies.supernet import SupernetScore

    config = tiny_config(name="ft", strategy="supernet", extra=SUPERNET_SECTION.format(steps=10) + "finetune_steps = 3\n")
    cfg = load_config(path=config)
    weights = train_supernets(cfg, tmp_path / "ft")
    schedule = Schedule.parse("F S4")
    tuned = SupernetScore(cfg, weights)(schedule)
    plain = SupernetScore(cfg.with_section("supernet", replace(cfg.section("supernet"), finetune_steps=0)), weights)(schedule)
    assert tuned.steps == 3 and tuned.tokens_seen == 3 * 4 * 32 and plain.steps == 0
    assert tuned.scores["loss"] != plain.scores["loss"]
    for name, tensor in weights[0][1].state.items():  # the shared weights are untouched
        assert torch.equal(tensor, train_supernet(cfg, tmp_path / "ft").state[name])


def test_in_place_distillation_trains_other_schedules_on_the_dearest_schedules_predictions(tiny_config, tmp_path):
    import torch.nn.functional as F

    from spanmix.proxies.tasks import IGNORE
    from spanmix.proxies.train import ProxyLM

    cfg = load_config(path=tiny_config(name="d", strategy="supernet", extra=SUPERNET_SECTION.format(steps=8) + "distill = true\n"))
    dearest, student = Schedule.parse("F F"), Schedule.parse("S4 F")
    torch.manual_seed(0)
    x = torch.randint(0, cfg.proxy.vocab_size, (3, cfg.data.seq_len))
    y = torch.roll(x, -1, dims=1)
    y[:, : cfg.data.seq_len // 2] = IGNORE  # scored positions only, as the tasks label them
    for drawn in (student, dearest):
        module = ProxyLM(cfg.proxy, dearest, cfg.data, cfg.train, draw=lambda step: drawn, teacher=dearest)
        module.log = lambda *args, **kwargs: None  # no trainer attached
        loss = module.training_step({"x": x, "y": y}, 0)
        scored = y != IGNORE
        if drawn is student:
            teacher = F.log_softmax(module(x, dearest), dim=-1).detach()
            expected = (teacher.exp() * (teacher - F.log_softmax(module(x, student), dim=-1))).sum(-1)[scored].mean()
            assert expected > 0
        else:  # the teacher itself learns the labels
            expected = F.cross_entropy(module(x, dearest).flatten(0, 1), y.flatten(), ignore_index=IGNORE)
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # the shared weights differ from plain training's, and are kept apart from them
    plain = cfg.with_section("supernet", replace(cfg.section("supernet"), distill=False))
    distilled, undistilled = train_supernet(cfg, tmp_path / "a"), train_supernet(plain, tmp_path / "a")
    assert not undistilled.reused and distilled.path != undistilled.path
    assert any(not torch.equal(distilled.state[k], undistilled.state[k]) for k in distilled.state)


def test_the_space_is_queued_whole_at_the_supernet_although_calibration_measured_its_extremes(tmp_path):
    """Calibration measures the dearest and cheapest schedules first, with the same parameters the
    space queues them with: they must still be queued at the supernet, not skipped as existing
    (the sampler would then draw and redraw until it stumbled on them)."""
    space = SearchSpace(n_layers=3, context=64, n_full=(1, 3), windows=(8,))
    study = optuna.create_study(directions=["minimize", "minimize"], storage=f"sqlite:///{tmp_path / 's.db'}")
    extremes = [(p, s.canonical(64).text) for p, s in space.all_params()
                if s.canonical(64) in {e.canonical(64) for e in space.extremes()}]
    enqueue(study, extremes, "calibration")
    enqueue_space(study, space, SUPERNET)
    enqueue_space(study, space, SUPERNET)  # a resumed run queues nothing twice
    queued = [t.user_attrs["schedule"] for t in study.get_trials() if t.user_attrs["measurement"] == SUPERNET]
    assert sorted(queued) == sorted({s.canonical(64).text for _, s in space.all_params()})
