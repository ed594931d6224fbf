"""``precision = "auto"``: what the machine warrants, never a timing on a CPU without native bf16;
one precision per study, pinned when it starts, recorded on every trial."""

from __future__ import annotations

import pandas as pd
import pytest
from optuna.trial import TrialState

import spanmix.proxies.resources as resources
from spanmix.proxies import ProxyConfig
from spanmix.search import join_study, open_study, run_study
from spanmix.studies.cli import main
from spanmix.studies.config import load_config

CFG = ProxyConfig(d_model=32, n_heads=2, context=32)


def _machine(monkeypatch, native: bool, speedup: float) -> None:
    """Pretend to be a machine with or without native bf16 whose timing says ``speedup``."""
    monkeypatch.setattr(resources, "native_bf16", lambda: native)
    monkeypatch.setattr(resources, "bf16_speedup", lambda *args: speedup)


def test_without_native_bf16_auto_is_fp32_whatever_the_timing_says(monkeypatch):
    _machine(monkeypatch, native=False, speedup=3.0)  # a busy AVX2 machine's timing read 2.5-2.7x
    assert resources.resolve_precision("auto", CFG, 32, 4) == "fp32"
    _machine(monkeypatch, native=True, speedup=3.0)
    assert resources.resolve_precision("auto", CFG, 32, 4) == "bf16"
    # the medium proxy's idle reads, 1.36-1.60 on one machine: all fp32, so two launches agree
    for speedup in (1.4, 1.6):
        _machine(monkeypatch, native=True, speedup=speedup)
        assert resources.resolve_precision("auto", CFG, 32, 4) == "fp32"
    assert resources.why_precision("auto", "fp32") == "auto: bf16 not measured 1.8x faster here"
    _machine(monkeypatch, native=True, speedup=2.1)  # a d=256, T=2048 proxy's lowest read: bf16
    assert resources.resolve_precision("auto", CFG, 32, 4) == "bf16"
    assert resources.resolve_precision("bf16", CFG, 32, 4) == "bf16"  # a choice the user made stands


def test_this_machines_gate_is_what_torch_reports():
    import torch

    reported = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert resources.native_bf16() == reported


def test_the_speedup_is_measured_at_the_training_shape_and_cached(monkeypatch):
    shapes = []
    real = resources.build_model

    def build(proxy, schedule):
        shapes.append(schedule.text)
        return real(proxy, schedule)

    monkeypatch.setattr(resources, "build_model", build)
    resources.bf16_speedup.cache_clear()
    first = resources.bf16_speedup(CFG, 32, 4, ("sliding", "block"))
    assert first > 0 and shapes == ["F S4 B4"]  # a full layer and one of each local kind of the space
    assert resources.bf16_speedup(CFG, 32, 4, ("sliding", "block")) == first and len(shapes) == 1


def _auto(tiny_config, **kwargs):
    path = tiny_config(**kwargs)
    path.write_text(path.read_text().replace('precision = "fp32"', 'precision = "auto"'))
    return path


def test_each_trial_records_its_precision_and_the_study_prints_it(tiny_config, tmp_path, monkeypatch, capsys):
    _machine(monkeypatch, native=False, speedup=3.0)
    out = tmp_path / "run"
    assert main(["launch", "--config", str(_auto(tiny_config, n_trials=3)), "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "trains in fp32 (auto: no native bf16 on this CPU)" in err
    csv = tmp_path / "t.csv"
    assert main(["show", "--study", "tiny", "--out", str(out), "--csv", str(csv)]) == 0
    frame = pd.read_csv(csv)
    assert set(frame.loc[frame["state"] == "COMPLETE", "precision"]) == {"fp32"}
    assert "<th>precision</th>" in (out / "dashboard.html").read_text()


def test_a_worker_that_would_choose_another_precision_trains_in_the_studys(tiny_config, tmp_path, monkeypatch):
    cfg = load_config(path=_auto(tiny_config, n_trials=7, sampler="random"))
    url = f"sqlite:///{tmp_path / 's.db'}"
    _machine(monkeypatch, native=False, speedup=3.0)  # the first worker's machine: fp32
    study = run_study(cfg, url, n_trials=3)
    assert study.user_attrs["spanmix_precision"] == "fp32"
    _machine(monkeypatch, native=True, speedup=3.0)  # a joining machine that alone would pick bf16
    assert open_study(cfg, url).user_attrs["spanmix_precision"] == "fp32"  # resuming pins nothing new
    study = join_study(cfg, url, target=7, stream=5)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len({t.user_attrs["schedule"] for t in complete}) == 7
    assert {t.user_attrs["precision"] for t in complete} == {"fp32"}


@pytest.mark.parametrize("setting", ["fp32", "bf16"])
def test_a_set_precision_is_pinned_as_it_is(tiny_config, tmp_path, setting, monkeypatch):
    _machine(monkeypatch, native=False, speedup=0.1)
    path = tiny_config(n_trials=1)
    path.write_text(path.read_text().replace('precision = "fp32"', f'precision = "{setting}"'))
    study = run_study(load_config(path=path), f"sqlite:///{tmp_path / 's.db'}")
    assert study.user_attrs["spanmix_precision"] == setting
    assert [t.user_attrs["precision"] for t in study.get_trials(states=(TrialState.COMPLETE,))] == [setting]
