import pytest
import torch

import spanmix.proxies.attention as attention
from spanmix.proxies.attention import (
    allowed_mask,
    flex_local_attention,
    kernel_pairs,
    local_attention,
    reference_attention,
)
from spanmix.space import Layer


def _qkv(t: int, seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, t, 16, generator=g, dtype=dtype, requires_grad=True) for _ in range(3)]


# lengths that are and are not multiples of the window (and of window-1, the sliding chunk), and
# windows at least the length
@pytest.mark.parametrize("t", [1, 9, 32, 33, 100])
@pytest.mark.parametrize("window", [1, 2, 4, 8, 33, 128])
@pytest.mark.parametrize("block", [False, True])
@pytest.mark.parametrize("path", [attention.PIECES, attention.BAND])
def test_local_attention_matches_masked_reference(t, window, block, path, monkeypatch):
    # every exact path, whichever the crossover picks at this size
    monkeypatch.setattr(attention, "kernel_path", lambda *args: path)
    q, k, v = _qkv(t, seed=t * 1000 + window)
    grad = torch.randn(2, 3, t, 16, generator=torch.Generator().manual_seed(1))
    out = local_attention(q, k, v, window, block)
    out.backward(grad)
    ours = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    ref = reference_attention(q, k, v, allowed_mask(t, window, block))
    ref.backward(grad)
    assert (out - ref).abs().max().item() < 1e-5
    for mine, x in zip(ours, (q, k, v)):
        assert (mine - x.grad).abs().max().item() < 1e-5


@pytest.mark.parametrize("t", [9, 33, 100])
@pytest.mark.parametrize("window", [1, 2, 8, 33])
@pytest.mark.parametrize("sinks", [1, 4])
@pytest.mark.parametrize("path", [attention.PIECES, attention.BAND])
def test_sliding_attention_with_sinks_matches_masked_reference(t, window, sinks, path, monkeypatch):
    monkeypatch.setattr(attention, "kernel_path", lambda *args: path)
    q, k, v = _qkv(t, seed=t * 1000 + window * 10 + sinks)
    grad = torch.randn(2, 3, t, 16, generator=torch.Generator().manual_seed(2))
    out = local_attention(q, k, v, window, sinks=sinks)
    ours = torch.autograd.grad(out, (q, k, v), grad)
    ref = reference_attention(q, k, v, allowed_mask(t, window, sinks=sinks))
    theirs = torch.autograd.grad(ref, (q, k, v), grad)
    assert (out - ref).abs().max().item() < 1e-5
    for mine, want in zip(ours, theirs):
        assert (mine - want).abs().max().item() < 1e-5
    # the sinks change what a query past the window sees (query w sees sink 0), and nothing before it
    plain = local_attention(q, k, v, window)
    assert torch.equal(out[:, :, :window], plain[:, :, :window])
    if t > window:
        assert (out[:, :, window:] - plain[:, :, window:]).abs().amax(dim=(0, 1, 3)).min().item() > 1e-4


def test_reference_mask_is_the_layer_definition():
    # the mask the kernels are checked against has exactly the pairs the cost model counts
    for t in (7, 40):
        for layer in (Layer("sliding", 5), Layer("block", 6), Layer("sliding", 64), Layer("sliding", 5, 3), Layer("sliding", 1, 2)):
            mask = allowed_mask(t, layer.window, layer.kind == "block", sinks=layer.sinks)
            assert int(mask.sum()) == layer.attended_pairs(t)
            assert int(mask[-1].sum()) == min(layer.kv_tokens(t), t) or layer.kind == "block"


def test_bf16_runs_close_to_fp32():
    q, k, v = _qkv(70, seed=3)
    fp32 = local_attention(q, k, v, 16)
    bf16 = local_attention(*(x.detach().bfloat16() for x in (q, k, v)), 16)
    assert bf16.dtype == torch.bfloat16
    assert (bf16.float() - fp32).abs().max().item() < 5e-2


@pytest.mark.parametrize("block", [False, True])
def test_a_bf16_layer_on_the_pieces_path_is_computed_in_fp32_and_cast_back(block):
    t, w = 300, 128  # above the band's limit: the fused pieces
    assert attention.kernel_path(t, w, block, torch.bfloat16) == attention.PIECES
    q, k, v = (x.detach().bfloat16().requires_grad_() for x in _qkv(t, seed=5))
    q32, k32, v32 = (x.detach().float().requires_grad_() for x in (q, k, v))
    grad = torch.randn(q.shape, generator=torch.Generator().manual_seed(6)).bfloat16()
    out, out32 = local_attention(q, k, v, w, block), local_attention(q32, k32, v32, w, block)
    out.backward(grad)
    out32.backward(grad.float())
    assert out.dtype == torch.bfloat16 and torch.equal(out, out32.bfloat16())
    for x, x32 in ((q, q32), (k, k32), (v, v32)):  # the backward reads the output as rounded to bf16
        assert x.grad.dtype == torch.bfloat16
        assert (x.grad.float() - x32.grad).abs().max().item() <= 1e-2 * x32.grad.abs().max().item()


def test_kernel_work_tracks_the_window_not_the_length():
    t = 8192
    full = t * (t + 1) // 2
    for block in (False, True):
        pairs = kernel_pairs(t, 256, block)
        allowed = Layer("block" if block else "sliding", 256).attended_pairs(t)
        assert allowed <= pairs < 1.01 * allowed
        assert pairs < full / 15
    # sinks: every query past the window against the 4 sink keys, as the kernel computes them
    assert kernel_pairs(t, 256, False, sinks=4) == kernel_pairs(t, 256, False) + (t - 256) * 4
    assert kernel_pairs(t, 256, False, sinks=4) >= Layer("sliding", 256, 4).attended_pairs(t)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_attention_path_forward_matches_reference():
    # FlexAttention is the CUDA path; its forward also runs (uncompiled) on the CPU, which checks
    # the mask functions it is given
    q, k, v = (x.detach() for x in _qkv(50, seed=5))
    for block, sinks in ((False, 0), (True, 0), (False, 3)):
        out = flex_local_attention(q, k, v, 7, block, compiled=False, sinks=sinks)
        ref = reference_attention(q, k, v, allowed_mask(50, 7, block, sinks=sinks))
        assert (out - ref).abs().max().item() < 1e-5


def test_deterministic():
    q, k, v = _qkv(300, seed=9)
    a = local_attention(q, k, v, 40)
    b = local_attention(q, k, v, 40)
    assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_flex_matches_reference():  # pragma: no cover - runs on GPU machines only
    q, k, v = (x.detach().cuda() for x in _qkv(300, seed=11))
    for block, sinks in ((False, 0), (True, 0), (False, 4)):
        out = local_attention(q, k, v, 64, block, sinks)
        ref = reference_attention(q, k, v, allowed_mask(300, 64, block, device=q.device, sinks=sinks))
        assert (out - ref).abs().max().item() < 1e-4
