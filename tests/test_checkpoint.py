"""A pretrained checkpoint as the model under search (``[base] model``), on tiny random checkpoints
of the real transformers classes saved with ``save_pretrained``: its cost counted exactly, its
refusals before any weight is read, healing, and a study whose exported hybrid model loads in
transformers and gives the score spanmix measured."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import optuna
import pandas
import pytest
import torch
import transformers
from test_files import write_tokenizer

from spanmix.proxies import checkpoint, resources
from spanmix.proxies.checkpoint import BaseConfig
from spanmix.proxies.cost import closed_form
from spanmix.proxies.data import TASKS, DataConfig
from spanmix.proxies.model import ProxyConfig, build_model
from spanmix.proxies.retrofit import Retrofitted
from spanmix.proxies.scoring import answer_columns, evaluate, score_batches, val_batches
from spanmix.proxies.train import TrainConfig
from spanmix.search import (
    Point,
    StudyConfig,
    StudyView,
    config_of,
    preflight,
    run_study,
)
from spanmix.space import ConfigError, Schedule
from spanmix.studies.dashboard import render

README = Path(__file__).parent.parent / "README.md"
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, vocab_size=256, max_position_embeddings=512)
DATA = DataConfig(tasks=("recall", "code"), seq_len=96, min_distance=40, val_samples=4)
TRAIN = TrainConfig(steps=10, batch_size=4, lr=3e-3, warmup=2)


def save_tiny(folder: Path, family: str = "qwen2", **overrides) -> str:
    config = transformers.AutoConfig.for_model(family, **{**TINY, **overrides})
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return str(folder)


class Native(torch.nn.Module):
    """A transformers model as spanmix's scoring calls a model, running its own attention."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor, schedule: Schedule | None = None, keep: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_ids=idx, logits_to_keep=0 if keep is None else keep).logits


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3_text"])
def test_the_cost_counted_by_fvcore_on_the_checkpoint_equals_its_closed_form(tmp_path, family):
    base = BaseConfig(model=save_tiny(tmp_path / family, family), dtype="bfloat16")
    schedule = Schedule.parse("F S16 B32 F")
    report = checkpoint.count(base, schedule, 96)
    assert report.total == report.closed_form_total and report.decode == report.closed_form_decode
    # by hand: q and o projections 32x64 each, k and v 32x32 each (2 key-value heads), a gated MLP
    # of three 32x64 matrices, the head 32x256, and attention 2 * 4 heads * 16 per query-key pair
    pairs = 96 * 97 // 2 + Schedule.parse("S16").layers[0].attended_pairs(96) + Schedule.parse("B32").layers[0].attended_pairs(96) + 96 * 97 // 2
    assert report.total == 96 * (4 * (2 * 32 * 64 + 2 * 32 * 32 + 3 * 32 * 64) + 32 * 256) + 2 * 4 * 16 * pairs
    # the KV cache: 2 key-value heads of 16 in bf16 (2 bytes), keys and values, per token held
    assert report.kv_cache_bytes == 2 * 2 * 16 * 2 * (96 + 16 + 32 + 96)
    assert report.full_kv_cache_bytes == 2 * 2 * 16 * 2 * 4 * 96


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3_text", "mistral"])
def test_a_count_assembled_layer_by_layer_equals_tracing_the_schedule(tmp_path, family):
    """fvcore traces a checkpoint once per layer kind and assembles a schedule's count from them
    (a layer-wise search would otherwise trace every schedule): module for module, operator for
    operator, the same as tracing the schedule itself."""
    from spanmix.proxies.checkpoint import (
        UNCOUNTED,
        _meta_count,
        fvcore_by_module,
        hf_config,
    )
    from spanmix.proxies.retrofit import Retrofitted, apply_schedule

    folder = save_tiny(tmp_path / family, family)
    for text in ("F S16 B32 F", "S16+4 F F S16", "B32 B32 S8 S8"):
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(hf_config(folder)).eval()
        traced = fvcore_by_module(Retrofitted(apply_schedule(model, text)), torch.zeros(1, 96, dtype=torch.long), UNCOUNTED)
        assembled = _meta_count(folder, Schedule.parse(text), 96)
        assert set(assembled) == set(traced)
        for name in traced:
            assert {op: n for op, n in assembled[name].items() if n} == {op: n for op, n in traced[name].items() if n}, name


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3_text"])
def test_zero_shot_scores_reusing_the_unchanged_layers_equal_scoring_each_schedule_whole(tmp_path, family):
    """Prefix reuse: a schedule scored after another runs only from the first layer where they
    differ, and its scores are exactly those of scoring it whole."""
    folder = save_tiny(tmp_path / family, family, num_hidden_layers=6)
    texts = ["F F F F F F", "F F F F F S16", "F F F F S16 F", "F F F S16+4 F F", "F F F S16+4 S16+4 F", "S16 F F F F F"]
    reused = {t: checkpoint.score(BaseConfig(model=folder, reuse=True), Schedule.parse(t), DATA, TRAIN).scores for t in texts}
    cache = checkpoint._zero_shot(BaseConfig(model=folder, reuse=True), True, "fp32").cache
    batches = len(val_batches(DATA, TRAIN.batch_size))
    # 36 layers per batch whole; run: 6 + 1 + 2 + 3 + 2 + 6 (each from its first layer unlike the last run)
    assert (cache.computed, cache.reused) == (20 * batches, 16 * batches)
    for t in texts:
        assert checkpoint.score(BaseConfig(model=folder, reuse=False), Schedule.parse(t), DATA, TRAIN).scores == reused[t], t


@pytest.mark.parametrize("tasks", [("passkey", "recall"), ("recall", "code")])
def test_the_head_at_the_scored_positions_alone_gives_the_scores_of_every_position(tmp_path, tasks):
    """Probes are scored at their answers alone, so the logits are made there alone: the scores
    and every bootstrap resample are those of the head at every position, for a proxy and for a
    checkpoint (with prefix reuse); a text task scores every position and keeps them all."""
    data = replace(DATA, tasks=tasks, seq_len=160)  # the passkey's shortest
    batches = val_batches(data, TRAIN.batch_size)
    columns = [answer_columns(b["y"]) for b in batches]
    if "code" in tasks:
        assert all(c is None for c in columns)
    else:
        assert all(c is not None and 0 < len(c) < data.seq_len / 4 for c in columns)
    schedule = Schedule.parse("F S16+4 F S16")
    models = (build_model(ProxyConfig(d_model=32, n_heads=2, context=160), schedule),
              Retrofitted(checkpoint.load(BaseConfig(model=save_tiny(tmp_path / "llama", "llama"))), reuse=True))
    for model in models:
        answers, whole = (score_batches(model, schedule, data, batches, "fp32", every_position=e) for e in (False, True))
        assert answers.scores() == pytest.approx(whole.scores(), rel=1e-6, abs=1e-7)
        for name, values in answers.resamples().items():
            assert values == pytest.approx(whole.resamples()[name], rel=1e-6, abs=1e-7), name


def test_a_reuse_cache_that_would_not_fit_is_refused_before_any_work(tmp_path, monkeypatch):
    base = BaseConfig(model=save_tiny(tmp_path / "m"), reuse=True)
    need = checkpoint.reuse_bytes(base, DATA)
    assert need == 4 * 4 * 2 * 96 * 32 * 4 * 4  # 4 prefixes of: 4 validation sequences of each task, 96 tokens, width 32, 4 layers, fp32
    monkeypatch.setattr(checkpoint, "available_memory", lambda: checkpoint.memory_needed(base, 4, 96) + need)
    with pytest.raises(ConfigError, match=r"base.reuse = true keeps every layer's hidden states .* set base.reuse = false"):
        checkpoint.check_fits(base, 4, DATA)
    assert not checkpoint.reuses(replace(base, reuse=None), DATA)  # unset: off where it takes over a quarter
    with pytest.raises(ConfigError, match=r"base.reuse must be true or false \(got 'yes'\)"):
        BaseConfig(model="m", reuse="yes")


def test_a_mixture_of_experts_is_costed_by_its_closed_form(tmp_path):
    base = BaseConfig(model=save_tiny(tmp_path / "moe", "gpt_oss", num_local_experts=4, num_experts_per_tok=2,
                                      layer_types=["full_attention"] * 4))
    report = checkpoint.count(base, Schedule.parse("F S16 S16 F"), 96)
    per_token_mlp = 32 * 4 + 2 * 3 * 32 * 64  # the router, then 2 of the 4 experts
    assert report.layers[0].mlp == 96 * per_token_mlp and report.total == report.closed_form_total
    assert report.total == closed_form(checkpoint.shape(base), Schedule.parse("F S16 S16 F"), 96)["total"]


def _cfg(model: str, **base) -> dict:
    return {"study": {"name": "ck", "sampler": "grid", "cost": "kv_cache", "calibrate": False},
            "base": {"model": model, **base}, "space": {"context": 96, "windows": [16], "local": ["sliding"]},
            "data": {"tasks": ["recall", "code"], "seq_len": 96, "min_distance": 40, "val_samples": 4},
            "train": {"batch_size": 4, "steps": 10, "lr": 3e-3, "warmup": 2}}


def test_a_checkpoint_study_takes_the_checkpoints_depth(tmp_path):
    cfg = StudyConfig.from_user(_cfg(save_tiny(tmp_path / "m")))
    assert cfg.space.n_layers == 4 and cfg.count(Schedule.parse("F S16 S16 F")).kv_ratio == 0.5 + 2 * 16 / 96 / 4


def test_a_checkpoint_with_a_tokenizer_is_asked_its_probes_in_its_own_tokens(tmp_path):
    model = save_tiny(tmp_path / "m", vocab_size=400)
    write_tokenizer(tmp_path / "m", vocab=400)
    raw = _cfg(model)
    raw["space"]["context"] = 256
    raw["data"].update(seq_len=256, n_pairs=4, n_queries=4)
    cfg = StudyConfig.from_user(raw)
    assert cfg.data.tokenizer == str(tmp_path / "m" / "tokenizer.json") and cfg.data.task("recall") is TASKS["recall"].worded
    result = checkpoint.score(cfg.base, Schedule.parse("F S16 S16 F"), cfg.data, cfg.train)
    batch = val_batches(cfg.data, 4)[0]
    assert int(batch["x"].max()) >= 256  # ids beyond bytes: the tokenizer's own
    assert 0 <= result.scores["recall/acc"] <= 1 and len(result.resamples["loss"]) == 400


@pytest.mark.parametrize("change, message", [
    (lambda c, m: c["base"].update(model=str(m.parent / "nowhere")), r"base.model: '.*nowhere' is not a folder"),
    (lambda c, m: (m / "config.json").unlink(), r"has no config.json"),
    (lambda c, m: [p.unlink() for p in m.glob("*.safetensors")], r"has no \*.safetensors weights"),
    (lambda c, m: (m / "config.json").write_text(json.dumps({"model_type": "t5", "num_layers": 2})),
     r"model_type 't5' is not a causal decoder"),
    (lambda c, m: c["space"].update(n_layers=6), r"space.n_layers=6 but base.model .* has 4 layers"),
    (lambda c, m: c["data"].update(seq_len=1024) or c["space"].update(context=1024),
     r"data.seq_len=1024 is longer than base.model's max_position_embeddings=512"),
    (lambda c, m: c["study"].update(seeds=2), r"study.seeds=2 with base.heal_steps=0: zero-shot scoring has no seed"),
    (lambda c, m: c["study"].update(cost="latency"), r"study.cost 'latency' is measured on proxies only"),
    (lambda c, m: c["base"].update(heal="mlp"), r"base.heal 'mlp' is unknown; allowed: all, attention"),
    (lambda c, m: c["base"].update(dtype="fp8"), r"base.dtype 'fp8' is unknown"),
    (lambda c, m: c["base"].update(heal_tasks=["prose"]), r"base.heal_tasks \['prose'\] with base.heal_steps=0: nothing heals"),
    (lambda c, m: c["base"].update(heal_steps=2, heal_tasks=["poems"]),
     r"base.heal_tasks \['poems'\]: data.tasks: unknown data set 'poems'; allowed: "),
])
def test_what_a_checkpoint_cannot_do_is_refused_in_one_line(tmp_path, change, message):
    model = Path(save_tiny(tmp_path / "m"))
    cfg = _cfg(str(model))
    change(cfg, model)
    checkpoint.hf_config.cache_clear()
    with pytest.raises(ConfigError, match=message):
        preflight(StudyConfig.from_user(cfg))


@pytest.mark.parametrize("strategy, message", [
    ("supernet", r"study.strategy 'supernet' on a checkpoint is shared healing, .* set base.heal_steps > 0"),
    ("halving", r"study.strategy 'halving' on a checkpoint halves its healing across rungs: set base.heal_steps > 0"),
])
def test_a_strategy_that_needs_healing_refuses_a_zero_shot_checkpoint_before_any_work(tmp_path, strategy, message):
    data = _cfg(save_tiny(tmp_path / "m"))
    with pytest.raises(ConfigError, match=message):
        preflight(StudyConfig.from_user({**data, "study": {**data["study"], "strategy": strategy}}))


def test_halving_heals_to_each_rung_and_a_promoted_schedule_equals_healing_it_in_one_go(tmp_path):
    """Successive halving on a checkpoint: every schedule healed to the first rung, the best half
    healed on from its checkpoint to the full heal_steps, which gives what healing it alone gives."""
    data = _cfg(save_tiny(tmp_path / "m"), heal_steps=6)
    data["study"].update(strategy="halving")
    data["space"].update(n_full=[2, 4], placements=["bottom", "top"])
    data["halving"] = {"eta": 2, "rungs": 2}
    cfg = StudyConfig.from_user(data)
    preflight(cfg)
    study = run_study(cfg, f"sqlite:///{tmp_path / 'ck.db'}", workdir=tmp_path / "work")
    view = StudyView(study, cfg)
    first, full = view.points("rung-0"), view.points("standalone")
    assert len({p.schedule for p in first}) == cfg.space.size() and 1 <= len(full) < len(first)
    promoted = full[0]
    alone = checkpoint.score(cfg.base, promoted.layers, cfg.data, cfg.train, seed=cfg.train.seed)
    assert promoted.scores == alone.scores  # continued from the rung's checkpoint, bit for bit
    # a rung's checkpoint is removed once continued; the others wait for a promotion
    assert len(list((tmp_path / "work").rglob("last.ckpt"))) == len(first) - len(full)


def test_shared_healing_scores_every_schedule_healed_once_zero_shot_and_confirms_the_front_healed_alone(tmp_path):
    """The supernet strategy on a checkpoint (PostNAS's shared healing): one healing with the
    sandwich's schedules, every schedule scored on it and on the checkpoint as it is, the front
    healed alone, and rank fidelity between the three measurements."""
    data = _cfg(save_tiny(tmp_path / "m"), heal_steps=4)
    data["study"].update(strategy="supernet")
    data["space"].update(n_full=[2, 4])
    data["supernet"] = {"steps": 12, "controls": 1}
    cfg = StudyConfig.from_user(data)
    study = run_study(cfg, f"sqlite:///{tmp_path / 'ck.db'}", workdir=tmp_path / "work")
    view = StudyView(study, cfg)
    by = {m: {p.schedule: p for p in pts} for m, pts in view.by_measurement.items()}
    assert set(by) == {"supernet", "zero-shot", "standalone"}
    assert set(by["zero-shot"]) == set(by["supernet"]) and len(by["supernet"]) == cfg.space.size() == 8
    # the shared weights are healed: every schedule scores better on them than on the checkpoint as it is
    assert all(by["supernet"][s].quality < by["zero-shot"][s].quality for s in by["supernet"])
    assert set(by["standalone"]) >= {p.schedule for p in view.front(measurement="supernet")}
    healed = checkpoint.score(cfg.base, Schedule.parse(next(iter(by["standalone"]))), cfg.data, cfg.train)
    assert by["standalone"][healed.schedule].quality == pytest.approx(healed.scores["loss"])  # healed alone
    pairs = {("supernet", "standalone"), ("zero-shot", "supernet"), ("zero-shot", "standalone")}
    assert {(cheap, dear) for cheap, dear, _ in view.comparisons} == pairs and view.final == "standalone"
    page = render(study, cfg)  # one rank-fidelity scatter per pair, none hiding another
    assert all(f'id="fidelity-{cheap}-{dear}"' in page for cheap, dear in pairs)


def test_weights_that_do_not_fit_are_refused_before_loading(tmp_path, monkeypatch):
    cfg = StudyConfig.from_user(_cfg(save_tiny(tmp_path / "m")))
    monkeypatch.setattr(checkpoint, "available_memory", lambda: 1000)
    with pytest.raises(ConfigError, match=r"scoring needs about 0.0 GiB .* more than the 0.0 GiB available"):
        preflight(cfg)


def test_healing_changes_the_weights_lowers_the_training_loss_and_is_repeatable(tmp_path):
    base = BaseConfig(model=save_tiny(tmp_path / "m"), heal_steps=10)
    schedule = Schedule.parse("F S16 S16 F")
    before = checkpoint.score(BaseConfig(model=base.model), schedule, DATA, TRAIN)
    healed = checkpoint.score(base, schedule, DATA, TRAIN, curve_at=(5,))
    assert healed.scores["loss"] < before.scores["loss"] - 0.1 and healed.steps == 10 and 5 in healed.curve
    assert checkpoint.score(base, schedule, DATA, TRAIN).scores == healed.scores  # same seed, same numbers
    module, _ = checkpoint.heal(BaseConfig(model=base.model, heal_steps=3, heal="attention"), schedule, DATA, TRAIN)
    original = checkpoint.load(BaseConfig(model=base.model))
    changed = {n for n, p in module.model.model.named_parameters() if not torch.equal(p, original.get_parameter(n))}
    assert changed and all(".self_attn." in n for n in changed)  # attention healed, the rest frozen


def _readme_block(after: str, lang: str, index: int = 0) -> str:
    body = README.read_text()
    return re.findall(rf"```{lang}\n(.*?)```", body[body.index(after):], re.S)[index]


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    argv = command.split()
    argv = [sys.executable, "-m", "spanmix.studies.cli", *argv[1:]] if argv[0] == "spanmix" else ["bash", "-c", command]
    done = subprocess.run(argv, cwd=cwd, env={**os.environ, "SPANMIX_CACHE": str(cwd / "cache")}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    return done


def test_healing_on_other_tasks_trains_on_them_and_scores_the_studys(tmp_path):
    """base.heal_tasks: healing reads its batches from those tasks alone (the weights equal healing
    with them as the data), while the scores are the study's tasks'."""
    model = save_tiny(tmp_path / "m")
    schedule, text = Schedule.parse("F S16 S16 F"), replace(DATA, tasks=("code",))
    on_text = BaseConfig(model=model, heal_steps=4, heal_tasks=("code",))
    weights = {name: checkpoint.heal(base, schedule, data, TRAIN)[0].model.state_dict()
               for name, base, data in (("heal_tasks", on_text, DATA), ("text data", replace(on_text, heal_tasks=()), text),
                                        ("study data", replace(on_text, heal_tasks=()), DATA))}
    assert all(torch.equal(v, weights["text data"][k]) for k, v in weights["heal_tasks"].items())
    assert not all(torch.equal(v, weights["study data"][k]) for k, v in weights["heal_tasks"].items())
    scored = checkpoint.score(on_text, schedule, DATA, TRAIN)
    assert "recall/acc" in scored.scores and list(scored.config["base"]["heal_tasks"]) == ["code"]


def test_readme_retrofit_study_exports_a_hybrid_model_that_transformers_loads(tmp_path):
    """The README's "Retrofit a pretrained model" as a user runs it: its snippet makes the tiny
    checkpoint, its config and two commands search and export; the exported folder loads with
    AutoModelForCausalLM and, running transformers' own attention, scores what spanmix measured."""
    (tmp_path / "retrofit.toml").write_text(_readme_block("## Retrofit a pretrained model", "toml"))
    _run(_readme_block("## Retrofit a pretrained model", "bash").strip(), tmp_path)
    commands = _readme_block("## Retrofit a pretrained model", "bash", 1).strip().splitlines()
    assert [c.split()[:2] for c in commands] == [["spanmix", "launch"], ["spanmix", "export"]]
    launched = _run(commands[0], tmp_path)
    assert "on checkpoint" in launched.stdout and "calibration: skipped" in launched.stdout
    # zero-shot scores are deterministic: their interval is a bootstrap over the validation sequences
    assert "95% bootstrap interval over the validation sequences" in launched.stdout
    shown = _run("spanmix show --study retrofit --csv trials.csv", tmp_path)
    trials = pandas.read_csv(tmp_path / "trials.csv")
    assert (trials.quality_lo < trials.quality).all() and (trials.quality < trials.quality_hi).all()
    assert set(trials.standing) <= {"front", "tied", "dominated"} and "paired bootstrap" in shown.stdout
    by_bucket = _run("spanmix show --study retrofit --quality code/loss@128-256", tmp_path)  # no resamples kept
    assert "noise: unmeasured: zero-shot scores are deterministic" in by_bucket.stdout
    exported = _run(commands[1], tmp_path)
    out = tmp_path / commands[1].split("--checkpoint")[1].split()[0]
    assert (out / "model.safetensors").is_symlink() and "wrote" in exported.stdout

    study = optuna.load_study(study_name="retrofit", storage=f"sqlite:///{tmp_path / 'runs/retrofit/study.db'}")
    cfg = config_of(study)
    knee = json.loads(next((tmp_path / "runs/retrofit").glob("knee-*.json")).read_text())
    measured = next(t for t in study.trials if t.number == knee["trial"])
    hybrid = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    assert hybrid.config.layer_types == [{"F": "full_attention"}.get(t[0], "sliding_attention")
                                         for t in measured.user_attrs["schedule"].split()]
    scores = evaluate(Native(hybrid), Schedule.parse(measured.user_attrs["schedule"]), cfg.data,
                      val_batches(cfg.data, cfg.train.batch_size), "fp32")
    assert scores[cfg.quality] == pytest.approx(measured.values[0], abs=1e-5)


def test_a_healed_study_exports_its_healed_weights(tmp_path):
    """Gemma 3 picks its rotary base by layer type: the exported config's types must be the ones
    spanmix scored with, and the healed weights the ones it measured."""
    from spanmix.studies.commands.common import default_storage
    from spanmix.studies.export import write_checkpoint

    data = _cfg(save_tiny(tmp_path / "g", "gemma3_text", layer_types=["full_attention"] * 4), heal_steps=3)
    cfg = StudyConfig.from_user({**data, "study": {**data["study"], "n_trials": 2}})
    study = run_study(cfg, default_storage(tmp_path / "run"))
    point = next(p for p in StudyView(study, cfg).points() if p.layers.n_full < 4)
    write_checkpoint(cfg, point, tmp_path / "hybrid")
    assert not (tmp_path / "hybrid" / "model.safetensors").is_symlink()  # healed weights, saved
    with pytest.raises(ConfigError, match="exists and is not an empty folder"):
        write_checkpoint(cfg, point, tmp_path / "hybrid")
    hybrid = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hybrid", attn_implementation="eager").eval()
    scores = evaluate(Native(hybrid), point.layers, cfg.data, val_batches(cfg.data, cfg.train.batch_size), "fp32")
    assert scores[cfg.quality] == pytest.approx(point.quality, abs=1e-5)


def test_a_schedule_the_checkpoints_family_cannot_express_is_refused_with_the_module_line(tmp_path):
    from spanmix.studies.export import write_checkpoint

    cfg = StudyConfig.from_user(_cfg(save_tiny(tmp_path / "m", "llama")))
    point = Point(number=0, schedule="F S16 B32 F", quality=1.0, cost=1.0, cost_ratio=0.5, feasible=True,
                  reused_from=None, scores={})
    with pytest.raises(ConfigError, match=r"need a size per layer.*run it under spanmix instead: .*apply_schedule"):
        write_checkpoint(cfg, point, tmp_path / "out")
    biased = StudyConfig.from_user(_cfg(save_tiny(tmp_path / "b", "llama", attention_bias=True)))
    with pytest.raises(ConfigError, match=r"sets attention_bias, which a qwen2 model cannot carry"):
        write_checkpoint(biased, replace(point, schedule="F S16 S16 F"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_a_hybrid_its_family_cannot_express_is_written_as_qwen2_and_computes_what_spanmix_ran(tmp_path, family, caplog,
                                                                                                monkeypatch):
    """Llama has no sliding layers and Mistral one window for all of them: the hybrid is written as
    Qwen2 (Llama's architecture with q/k/v biases, zeros here), which transformers loads and whose
    logits equal spanmix's run of the original under the schedule."""
    from spanmix.proxies.retrofit import Retrofitted, apply_schedule
    from spanmix.studies.export import write_checkpoint

    cfg = StudyConfig.from_user(_cfg(save_tiny(tmp_path / "m", family)))
    point = Point(number=0, schedule="F S16 S16 F", quality=1.0, cost=1.0, cost_ratio=0.5, feasible=True,
                  reused_from=None, scores={})
    monkeypatch.setattr(logging.getLogger("spanmix"), "propagate", True)  # the CLI's own handler may hold it
    with caplog.at_level("INFO", logger="spanmix"):
        write_checkpoint(cfg, point, tmp_path / "hybrid")
    assert "writing it as qwen2" in caplog.text and "q, k and v projections" in caplog.text
    hybrid = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hybrid", attn_implementation="eager").eval()
    assert hybrid.config.model_type == "qwen2" and hybrid.config.layer_types == [
        "full_attention", "sliding_attention", "sliding_attention", "full_attention"] and hybrid.config.sliding_window == 16
    idx = torch.randint(0, 256, (2, 96), generator=torch.Generator().manual_seed(0))
    ours = Retrofitted(apply_schedule(checkpoint.load(cfg.base), point.layers)).eval()
    with torch.no_grad():
        assert torch.allclose(hybrid(input_ids=idx).logits, ours(idx), atol=1e-5)


def test_spanmix_cost_counts_a_checkpoint(tmp_path, capsys):
    from spanmix.studies.cli import main

    model = save_tiny(tmp_path / "m", "qwen2")
    assert main(["cost", "--checkpoint", model, "--context", "96", "-s", "F S16 S16 F", "-s", "F F F F"]) == 0
    printed = capsys.readouterr().out
    assert "kv_heads=2" in printed and "counted by fvcore (equal to the closed form: True)" in printed
    report = checkpoint.count(BaseConfig(model=model), Schedule.parse("F S16 S16 F"), 96)
    line = next(row for row in printed.splitlines() if row.startswith("F S16 S16 F "))
    assert line.split()[4:6] == [f"{report.total / 1e9:.3f}", f"{report.ratio:.1%}"]
    assert main(["cost", "--checkpoint", model, "-s", "F F"]) == 2
    assert "the schedule 'F F' has 2 layers and the checkpoint 4" in capsys.readouterr().err


MOVED = """
[study]
name = "moved"
sampler = "grid"
cost = "kv_cache"
calibrate = false

[base]
model = "m"

[space]
context = 256
windows = [16]
local = ["sliding"]
placements = ["bottom"]

[data]
tasks = ["recall"]
seq_len = 256
n_pairs = 4
n_queries = 4
min_distance = 40
val_samples = 4
"""


def test_a_checkpoint_study_is_read_from_its_storage_alone_once_the_checkpoint_is_gone(tmp_path):
    """A finished study whose checkpoint folder (with its tokenizer) was moved, as on another
    machine: show, its CSV, the dashboard and the export of the JSON schedule and Hugging Face
    fragment read the storage alone; only writing the hybrid model needs the checkpoint, and says so."""
    write_tokenizer(Path(save_tiny(tmp_path / "m", vocab_size=400)), vocab=400)
    (tmp_path / "moved.toml").write_text(MOVED)
    launched = _run("spanmix launch --config moved.toml --no-progress --no-report", tmp_path)
    assert "on checkpoint" in launched.stdout
    (tmp_path / "m").rename(tmp_path / "elsewhere")

    shown = _run("spanmix show --study moved --csv trials.csv", tmp_path)
    assert "Pareto front" in shown.stdout and len(pandas.read_csv(tmp_path / "trials.csv")) == 5
    _run("spanmix dashboard --study moved", tmp_path)
    assert "Plotly" in (tmp_path / "runs/moved/dashboard.html").read_text()
    _run("spanmix export --study moved knee", tmp_path)
    knee = next(p for p in (tmp_path / "runs/moved").glob("knee-*.json") if ".hf-" not in p.name)
    schedule = Schedule.from_dict(json.loads(knee.read_text()))
    fragment = json.loads(knee.with_name(f"{knee.stem}.hf-qwen2.json").read_text())  # the checkpoint's family, stored
    assert fragment["num_hidden_layers"] == schedule.n_layers == 4

    argv = [sys.executable, "-m", "spanmix.studies.cli", "export", "--study", "moved", "knee", "--checkpoint", "hybrid"]
    refused = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert re.search(r"base.model: '.*/m' is not a folder", refused.stderr) and not (tmp_path / "hybrid").exists()


def test_zero_shot_precision_is_measured_and_recorded_per_trial_as_a_proxys(tmp_path, monkeypatch):
    """``train.precision`` reaches zero-shot scoring: ``auto`` is bf16 only where a forward is
    measured BF16_MARGIN x faster here, bf16 is autocast over the float32 weights (scores close to
    fp32's but not equal), the trial records it; healing keeps the weights' own dtype."""
    folder = save_tiny(tmp_path / "m")
    base = BaseConfig(model=folder)
    timed = checkpoint.forward_speedup
    assert timed.__wrapped__(base, 96) > 0  # the real timing runs
    monkeypatch.setattr(resources, "native_bf16", lambda: True)  # as on an AVX-512 BF16 machine
    for measured, resolved in [(3.0, "bf16"), (1.2, "fp32")]:
        monkeypatch.setattr(checkpoint, "forward_speedup", lambda b, t, s=measured: s)
        assert checkpoint.scores_in(base, "auto", 96) == resolved
    assert checkpoint.scores_in(replace(base, heal_steps=2), "bf16", 96) == "fp32"  # healing: the weights' dtype
    assert checkpoint.scores_in(replace(base, dtype="bfloat16"), "fp32", 96) == "bf16"

    schedule = Schedule.parse("F S16 S16+4 F")
    fp32, bf16 = (checkpoint.score(base, schedule, DATA, replace(TRAIN, precision=p)) for p in ("fp32", "bf16"))
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert bf16.scores["loss"] != fp32.scores["loss"] and bf16.scores["loss"] == pytest.approx(fp32.scores["loss"], rel=0.02)

    raw = _cfg(folder)
    raw["train"]["precision"] = "bf16"
    run_study(StudyConfig.from_user({**raw, "study": {**raw["study"], "n_trials": 2}}), f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.load_study(study_name="ck", storage=f"sqlite:///{tmp_path / 's.db'}")
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 2 and {t.user_attrs["precision"] for t in done} == {"bf16"}
