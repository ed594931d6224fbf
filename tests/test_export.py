"""Every Hugging Face fragment spanmix writes, proven on the real model classes: the tiny model
built from it (eager attention) attends, in every layer and head, exactly where spanmix's layer
does, and what a family cannot express is refused with the families that can."""

import pytest
import torch
import transformers

from spanmix.proxies.attention import allowed_mask
from spanmix.space import ConfigError, Schedule
from spanmix.studies.export import FAMILIES, PER_LAYER, HFFamily, hf_fragment

T = 300
TINY = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
            vocab_size=128, max_position_embeddings=512, attn_implementation="eager")
EXTRA = {"gpt_oss": dict(num_local_experts=2, num_experts_per_tok=1),
         "llama4": dict(intermediate_size_mlp=64, num_local_experts=1, interleave_moe_layer_step=0, moe_layers=[])}
# windows of 1 and of the whole context, local and full layers mixed, and all-full
SCHEDULES = {"sliding": ["F S37 S37 F", "S1 S1", "S300 F", "F F", "S37 S37 S37"],
             "block": ["F B37 B37 F", "B1 B1", "B300 F", "F F"],
             None: ["F F"]}


def build(family: str, fragment: dict, **overrides) -> torch.nn.Module:
    config = transformers.AutoConfig.for_model(**fragment, **TINY, **EXTRA.get(family, {}), **overrides)
    assert type(config).__name__ == FAMILIES[family].config_class
    torch.manual_seed(0)
    return getattr(transformers, FAMILIES[family].model_class)(config).eval()


def patterns(model: torch.nn.Module) -> list[torch.Tensor]:
    """Per layer, the (heads, T, T) pattern of non-zero attention weights on random tokens."""
    ids = torch.randint(0, 128, (1, T), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return [a[0] > 0 for a in model(ids, output_attentions=True).attentions]


def _expressible(spec: HFFamily, text: str) -> bool:
    """A family without layer types takes a schedule whose layers are all alike."""
    return spec.per_layer or len(set(text.split())) == 1


@pytest.mark.parametrize("family, text", [(f, s) for f, spec in FAMILIES.items() for s in SCHEDULES[spec.local]
                                          if _expressible(spec, s)])
def test_fragment_attends_like_spanmix_in_every_layer(family, text):
    schedule = Schedule.parse(text)
    fragment = hf_fragment(schedule, family)
    model = build(family, fragment)
    seen = patterns(model)
    assert len(seen) == schedule.n_layers
    for i, (layer, pattern) in enumerate(zip(schedule.layers, seen)):
        expected = allowed_mask(T, layer.window, layer.kind == "block")
        assert torch.equal(pattern, expected.expand_as(pattern)), f"{family} layer {i} ({layer.token})"
    # the fragment survives the config's JSON round trip
    again = type(model.config).from_dict(model.config.to_dict())
    assert getattr(again, "layer_types", None) == fragment.get("layer_types")


def test_auto_picks_the_family_that_reads_the_schedule():
    assert hf_fragment(Schedule.parse("F S64"))["model_type"] == "qwen2"
    assert hf_fragment(Schedule.parse("F B64")) == {"model_type": "llama4_text", "num_hidden_layers": 2,
                                                    "layer_types": ["full_attention", "chunked_attention"],
                                                    "attention_chunk_size": 64}
    assert "sliding_window" not in hf_fragment(Schedule.parse("F F"), "gemma3")  # the family's default stays


@pytest.mark.parametrize("family, text, message", [
    ("qwen2", "F B64", r"--hf-family qwen2 reads only sliding local layers; layer 1 is block \(B64\); families that read block layers: llama4"),
    ("llama4", "S64 F", r"--hf-family llama4 reads only block .* layer 0 is sliding \(S64\); families that read sliding layers: qwen2, gemma3, gpt_oss"),
    ("llama", "F S8", r"--hf-family llama has no local attention; layer 1 is sliding"),
    ("auto", "S64 S128 F", r"S64 S128 F: several windows, .* no family's masks read it"),
    ("auto", "S64 B64 F", r"S64 B64 F: several windows, or sliding and block layers together"),
    ("gemma3", "B8 B16", r"several windows"),
    ("auto", "F S64+4", r"layer 1 is S64\+4: no Hugging Face family keeps sink tokens beside a sliding window"),
    ("gpt_oss", "S64+4 F", r"layer 0 is S64\+4: no Hugging Face family keeps sink tokens"),
    ("phi3", "F F", r"--hf-family 'phi3' is unknown; allowed: auto, qwen2, gemma3, gpt_oss, llama4, llama, mistral"),
    ("mistral", "F S64", r"--hf-family mistral applies one sliding_window to every layer; F S64 mixes full and local "
                         r"layers; families with a type per layer: qwen2, gemma3, gpt_oss"),
])
def test_what_a_family_cannot_express_is_refused_with_who_can(family, text, message):
    with pytest.raises(ConfigError, match=message):
        hf_fragment(Schedule.parse(text), family)


@pytest.mark.parametrize("family", [f for f, spec in FAMILIES.items() if spec.local and spec.per_layer])
def test_per_layer_sizes_are_still_not_read(family):
    """Why several windows are refused: transformers' per_layer_config takes a size per layer, but
    no family's masks read it. If a release makes this fail, export several windows through it."""
    spec = FAMILIES[family]
    letter = "B" if spec.local == "block" else "S"
    fragment = hf_fragment(Schedule.parse(f"{letter}16 {letter}16 F"), family)
    try:
        seen = patterns(build(family, fragment, per_layer_config={1: {spec.size_key: 64}}))
    except Exception as err:  # transformers raises AmbiguousGlobalPerLayerAttributeError building the masks
        assert "per-layer attribute" in str(err)
        return
    block = spec.local == "block"
    assert not torch.equal(seen[1], allowed_mask(T, 64, block).expand_as(seen[1])), PER_LAYER


def test_cli_export_by_family(tiny_config, tmp_path, capsys):
    """``spanmix export --hf-family`` as the README shows it, on a study holding block, sliding and
    mixed-window schedules."""
    import json

    from optuna.trial import TrialState

    from spanmix.studies.cli import main

    out = tmp_path / "run"
    config = tiny_config(sampler="grid", n_trials=40, steps=1)
    config.write_text(config.read_text().replace('local = ["sliding"]', 'local = ["sliding", "block"]\nper_layer_windows = true'))
    assert main(["launch", "--config", str(config), "--out", str(out), "--no-progress", "--no-report"]) == 0
    import optuna

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}")
    trials = {t.user_attrs["schedule"]: t.number for t in study.get_trials(states=(TrialState.COMPLETE,))}
    local = {s: set(s.split()) - {"F"} for s in trials}
    block = next(trials[s] for s, tokens in local.items() if len(tokens) == 1 and next(iter(tokens))[0] == "B")
    mixed = next(trials[s] for s, tokens in local.items() if len(tokens) > 1)
    capsys.readouterr()
    args = ["export", "--study", "tiny", "--out", str(out)]
    assert main([*args, str(block), "--hf-family", "llama4"]) == 0
    fragment = json.loads((out / f"trial-{block}.hf-llama4.json").read_text())
    assert fragment["model_type"] == "llama4_text" and "chunked_attention" in fragment["layer_types"]
    before = sorted(out.iterdir())
    assert main([*args, str(block), "--hf-family", "qwen2"]) == 2
    assert "families that read block layers: llama4" in capsys.readouterr().err
    assert sorted(out.iterdir()) == before  # refused before anything was written
    assert main([*args, str(mixed)]) == 0  # auto: JSON and module line, no fragment, and why
    said = capsys.readouterr().out
    assert "no Hugging Face fragment: " in said and "per_layer_config" in said and "build_model(" in said
    assert (out / f"trial-{mixed}.json").exists() and not list(out.glob(f"trial-{mixed}.hf-*"))
