"""A pretrained decoder under a spanmix schedule, proven on tiny random models of the real
transformers classes: the all-full schedule gives the unmodified model's logits, and a local
schedule gives what the family's own sliding-window or chunked attention gives, with the same
weights (GQA, Gemma 3's per-type rotary embeddings and GPT-OSS's attention sinks included)."""

from __future__ import annotations

import pytest
import torch
import transformers

from spanmix.proxies.retrofit import apply_schedule
from spanmix.space import ConfigError, Schedule
from spanmix.studies.export import hf_fragment

T = 200
TINY = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            vocab_size=128, max_position_embeddings=512, attn_implementation="eager")
EXTRA = {"gpt_oss": dict(num_local_experts=2, num_experts_per_tok=1),
         "llama4": dict(intermediate_size_mlp=64, num_local_experts=1, interleave_moe_layer_step=0, moe_layers=[])}
IDS = torch.randint(0, 128, (2, T), generator=torch.Generator().manual_seed(0))


def _model(family: str, schedule: str, **overrides) -> torch.nn.Module:
    config = transformers.AutoConfig.for_model(**hf_fragment(Schedule.parse(schedule), family),
                                               **{**TINY, **EXTRA.get(family, {}), **overrides})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    if family == "gpt_oss":  # sinks start at zero; make them matter
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.sinks.normal_()
    return model


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


@pytest.mark.parametrize("family, schedule", [
    ("llama", "F F"), ("qwen2", "F F"),
    ("qwen2", "F S37 S37 F"), ("gemma3", "S37 S37 F"), ("gpt_oss", "S37 F"), ("llama4", "B37 B37 F"),
    ("mistral", "S37 S37 S37"), ("mistral", "F F"),
])
def test_a_schedule_on_a_pretrained_model_equals_the_familys_own_attention(family, schedule):
    native = _model(family, schedule)
    expected = _logits(native)
    retrofitted = apply_schedule(native, schedule)
    torch.testing.assert_close(_logits(retrofitted), expected, rtol=1e-5, atol=1e-5)


def test_a_schedule_the_family_cannot_express_runs_and_differs_from_all_full():
    # several windows in one model: spanmix runs it; here its first layer sees 8 tokens, not 200
    model = _model("qwen2", "F F")
    full = _logits(model)
    apply_schedule(model, "S8 F")
    assert not torch.allclose(_logits(model), full, atol=1e-3)
    apply_schedule(model, "F F")
    torch.testing.assert_close(_logits(model), full, rtol=1e-5, atol=1e-5)


def test_a_schedule_of_the_wrong_length_or_a_cached_generation_step_is_refused():
    model = _model("qwen2", "F F")
    with pytest.raises(ConfigError, match="the schedule has 3 layers and the model 2"):
        apply_schedule(model, "F F F")
    apply_schedule(model, "S8 F")
    with torch.no_grad(), pytest.raises(ConfigError, match="generation with a KV cache is not supported"):
        model.generate(IDS[:1, :10], max_new_tokens=2, do_sample=False)


def test_zero_shot_scores_of_a_schedule_are_the_hybrid_models_own():
    from spanmix.proxies.data import DataConfig
    from spanmix.proxies.retrofit import zero_shot

    data = DataConfig(tasks=("recall", "code"), seq_len=128, min_distance=48, val_samples=4)
    native = _model("qwen2", "F S37 S37 F", vocab_size=256)
    scores = zero_shot(native, "F F F F", data, batch_size=4)  # the all-full model first: the schedule is applied
    hybrid = zero_shot(_model("qwen2", "F S37 S37 F", vocab_size=256), "F S37 S37 F", data, batch_size=4)
    assert hybrid == zero_shot(native, "F S37 S37 F", data, batch_size=4) != scores  # same weights, same numbers
    assert {"loss", "recall/acc", "code/loss"} <= set(hybrid)
    with pytest.raises(ConfigError, match="do not fit the model's vocabulary of 128"):
        zero_shot(_model("qwen2", "F F"), "F F", data)


@pytest.mark.parametrize("family", ["qwen2", "gemma3", "gpt_oss"])
def test_sink_tokens_on_a_pretrained_model_equal_masked_attention(family, monkeypatch):
    """``S<w>+<s>`` (StreamingLLM's sink tokens) on a pretrained model: the kernels' logits equal
    plain masked attention's over the same pattern, and the sinks change what the model says."""
    import spanmix.proxies.attention as attention

    model = apply_schedule(_model(family, "S8 F"), "S8+4 F")
    fast = _logits(model)

    def masked(q, k, v, window, block=False, sinks=0):  # the definition, as the kernels are tested against
        mask = attention.allowed_mask(q.shape[2], window, block, sinks=sinks)
        scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
        scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, -1) @ v, torch.logsumexp(scores, -1)

    monkeypatch.setattr("spanmix.proxies.retrofit.local_attention", lambda *a, **k: masked(*a, **k)[0])
    monkeypatch.setattr("spanmix.proxies.retrofit.local_attention_with_lse", masked)
    torch.testing.assert_close(fast, _logits(model), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(fast, _logits(apply_schedule(model, "S8 F")), atol=1e-3)
