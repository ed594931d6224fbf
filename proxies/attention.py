"""Attention kernels whose cost follows the schedule.

Full layers use causal SDPA. Local layers use :func:`local_attention`, which on the CPU runs only
causal sub-problems whose size is the window, so its cost grows as T*w, not T^2:

* ``block`` (MASFormer): one causal attention per block of ``w`` tokens.
* ``sliding``: with chunks of ``c = w - 1`` tokens, a query at offset ``i`` of its chunk sees its own
  chunk up to ``i`` (causal) and the previous chunk from offset ``i`` on. Reversing that previous
  chunk and the queries turns the second part into a causal problem too, so both parts run on the
  fused causal kernel (which skips masked tiles), and the two softmaxes are merged by their
  log-sum-exp. The backward pass feeds the merged output and log-sum-exp to each part's fused
  backward, which gives exact gradients (the same identity ring attention uses).

Small windows take a second path, chosen by a crossover measured in ``benchmarks/attention.py
--crossover`` (:func:`kernel_path`): there the pieces' fixed cost per fused call dominates, and the
*band* is faster, and faster than full causal SDPA itself: the sequence cut into chunks of ``w``
queries, each against its own chunk (block) or the previous chunk and its own (sliding) with the
pattern as a mask, all chunks in one batched matmul, softmax and backward written out.

Attention sinks (``S<w>+<s>``: StreamingLLM's first ``s`` tokens kept beside the window) are one
more sub-problem of every query past the window against the ``s`` sink keys it does not already
see, written out (it is T x s), merged into the window's result by log-sum-exp like the pieces.

On CUDA the same patterns run through FlexAttention with a block mask.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default
_flash_backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward.default


def _sliding(block: bool, window: int) -> bool:
    return not block and window > 1


PIECES, BAND = "pieces", "band"  # the exact CPU paths of local attention


def kernel_path(seq_len: int, window: int, block: bool, dtype: torch.dtype = torch.float32) -> str:
    """Which exact CPU path runs this pattern: ``band`` for windows up to 64, ``pieces`` above.

    Read off ``benchmarks/attention.py --crossover`` (2-core AMD EPYC without AMX, torch 2.13;
    the table is in docs/benchmarks.md). Up to w=64 the band (every chunk of w queries against
    its own and the previous chunk, one batched matmul) mostly beats the fused kernel's pieces,
    whose fixed cost per call dominates small windows; from w=128 the pieces skip more masked
    work than the band's 2w keys per query waste. With this rule 22 of the table's 136 cells run
    below full causal attention's speed (re-measured 2026-12-03), and in each of them both paths
    do, so the faster path in every cell would leave the same 22. Attention maths over the whole
    T x T matrix, the path short sequences took before, lost to the band in 108 of the 136 cells.
    """
    return BAND if min(window, seq_len) <= BAND_LIMIT else PIECES


BAND_LIMIT = 64  # the largest window (or sequence, when shorter) the band path takes
# The pieces of a bf16 (or fp16) layer run in fp32 and are cast back: on the CPU the fused kernel is
# slow on small bf16 pieces. Measured side by side (AMD EPYC, 2026-12-03, docs/benchmarks.md): bf16
# sliding windows of 128-256 at T=512-1024 went from 0.63-0.78x of bf16 full causal attention to
# 0.95-1.58x, and the result is the more accurate one.
PIECES_DTYPE = torch.float32


def chunk_size(window: int, block: bool, seq_len: int) -> int:
    """The side of the causal sub-problems the CPU kernel solves for this pattern."""
    return min(window - 1 if _sliding(block, window) else window, seq_len)


def kernel_pairs(seq_len: int, window: int, block: bool, dtype: torch.dtype = torch.float32, sinks: int = 0) -> int:
    """Query-key pairs inside the sub-problems the CPU kernel runs at ``dtype``.

    This is what the kernel computes, next to what the pattern allows (``Layer.attended_pairs``);
    the pieces differ only by the masked part of a ragged tail against its previous chunk; the
    band path (see :func:`kernel_path`) computes each chunk of c = min(w, T) queries against c keys
    (block) or 2c (sliding), padded to whole chunks. Sinks add every query past the window
    against the ``sinks`` first keys.
    """
    return _window_pairs(seq_len, window, block, dtype) + max(0, seq_len - window) * sinks


def _window_pairs(seq_len: int, window: int, block: bool, dtype: torch.dtype) -> int:
    if kernel_path(seq_len, window, block, dtype) == BAND:
        c = min(window, seq_len)
        return -(-seq_len // c) * c * (2 * c if _sliding(block, window) else c)
    own, prev = _pieces(seq_len, window, block)
    return sum(p.n * (p.q_len * p.k_len if p.upper else p.q_len * (p.q_len + 1) // 2) for p in own + prev)


def allowed_mask(seq_len: int, window: int | None, block: bool = False, device: torch.device | None = None,
                 sinks: int = 0) -> Tensor:
    """The (T, T) boolean mask of the pattern: the definition the fast kernels are tested against."""
    i = torch.arange(seq_len, device=device)
    q, k = i[:, None], i[None, :]
    mask = k <= q
    if window is None:
        return mask
    if block:
        return mask & (q // window == k // window)
    return mask & ((k > q - window) | (k < sinks))


def reference_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """Dense masked attention in plain maths (no fused kernel): the ground truth for tests."""
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v


# --- CPU kernel ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Piece:
    """One batched sub-problem: ``n`` query runs of ``q_len`` rows from ``q_start`` against ``n`` key
    runs of ``k_len`` rows from ``k_start``; causal (top-left) or, for a ragged tail, ``key >= query``.
    ``reverse`` flips both runs so a ``key >= query`` pattern becomes causal."""

    q_start: int
    k_start: int
    n: int
    q_len: int
    k_len: int
    reverse: bool = False
    upper: bool = False


def _pieces(seq_len: int, window: int, block: bool) -> tuple[list[_Piece], list[_Piece]]:
    """The sub-problems of a pattern: those covering every query (own chunk), and those covering
    queries from ``chunk_size`` on (previous chunk, sliding only). No padding: a ragged tail is its
    own piece."""
    c = chunk_size(window, block, seq_len)
    n, t = divmod(seq_len, c)
    own = [_Piece(0, 0, n, c, c)] + ([_Piece(n * c, n * c, 1, t, t)] if t else [])
    if not _sliding(block, window):
        return own, []
    prev = [_Piece(c, 0, n - 1, c, c, reverse=True)] if n > 1 else []
    if t and n:
        prev.append(_Piece(n * c, (n - 1) * c, 1, t, c, upper=True))
    return own, prev


def _view(x: Tensor, start: int, n: int, length: int, reverse: bool) -> Tensor:
    """Rows ``start .. start + n*length`` of (B, H, T, ...) as (B*H, n, length, ...)."""
    b, h = x.shape[:2]
    y = x[:, :, start : start + n * length].reshape(b * h, n, length, *x.shape[3:])
    return y.flip(2) if reverse else y


def _unview(y: Tensor, b: int, h: int, reverse: bool) -> Tensor:
    y = y.flip(2) if reverse else y
    return y.reshape(b, h, -1, *y.shape[3:])


def _upper_mask(p: _Piece, dtype: torch.dtype) -> Tensor | None:
    """``key >= query`` as an additive mask, for a ragged tail's upper piece; None for causal pieces."""
    if not p.upper:
        return None
    i = torch.arange(p.q_len)[:, None]
    m = torch.arange(p.k_len)[None, :]
    return torch.zeros(p.q_len, p.k_len, dtype=dtype).masked_fill(m < i, float("-inf"))


def _run(pieces: list[_Piece], q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Forward of consecutive pieces; their query rows are contiguous, so results concatenate."""
    b, h = q.shape[:2]
    outs, lses = [], []
    for p in pieces:
        qv = _view(q, p.q_start, p.n, p.q_len, p.reverse)
        kv, vv = (_view(x, p.k_start, p.n, p.k_len, p.reverse) for x in (k, v))
        mask = _upper_mask(p, q.dtype)
        out, lse = _flash(qv, kv, vv, 0.0, mask is None, attn_mask=mask)
        outs.append(_unview(out, b, h, p.reverse))
        lses.append(_unview(lse, b, h, p.reverse))
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


def _masked_scores(q: Tensor, k: Tensor, mask: Tensor) -> Tensor:
    return (q @ k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5 + mask


def _masked_forward(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    # fused softmax, not exp(scores - lse): on x86 exp of -inf (the masked entries) takes a slow
    # path, 25x slower here. The largest probability of a row is 1/Z, so the log-sum-exp is
    # max(scores) - log(max(p)), exactly, and max(p) >= 1/T never underflows.
    scores = _masked_scores(q, k, mask)
    p = torch.softmax(scores, -1)
    lse = scores.amax(-1) - p.amax(-1).log()
    return p.to(v.dtype) @ v, lse


def _masked_backward(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, mask: Tensor,
                     lse: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    # softmax backward: dS = P * (dP - rowsum(dO * O)), with P recomputed (as in the forward). When
    # this part's softmax was merged with another's (sinks), ``out`` and ``lse`` are the merged
    # ones and P is renormalised to the merged denominator: each part's share is then exact.
    scores = _masked_scores(q, k, mask)
    p = torch.softmax(scores, -1)
    if lse is not None:
        p.mul_((scores.amax(-1) - p.amax(-1).log() - lse).exp().unsqueeze(-1))
    dv = p.to(v.dtype).transpose(-1, -2) @ grad
    ds = (grad @ v.transpose(-1, -2)).float()
    ds.sub_((grad.float() * out.float()).sum(-1, keepdim=True)).mul_(p).mul_(q.shape[-1] ** -0.5)
    ds = ds.to(q.dtype)
    return ds @ k, ds.transpose(-1, -2) @ q, dv


@functools.cache
def _band_mask(seq_len: int, window: int, block: bool, device: torch.device) -> Tensor:
    """(n, c, K) additive mask of each chunk's queries against its band of keys: its own chunk
    (block), or the previous chunk then its own (sliding; before the first chunk, nothing)."""
    c, sliding = min(window, seq_len), _sliding(block, window)
    start = torch.arange(-(-seq_len // c), device=device)[:, None, None] * c
    query = start + torch.arange(c, device=device)[None, :, None]
    key = start - (c if sliding else 0) + torch.arange(2 * c if sliding else c, device=device)[None, None, :]
    ok = (key <= query) & (key > query - window) & (key >= 0)
    return torch.zeros(ok.shape, device=device).masked_fill(~ok, float("-inf"))


def _chunks(x: Tensor, c: int) -> Tensor:
    """(B, H, T, D) as (B, H, n, c, D), zero-padded to whole chunks."""
    pad = -x.shape[2] % c
    return F.pad(x, (0, 0, 0, pad)).unflatten(2, (-1, c))


def _band_keys(x: Tensor, sliding: bool) -> Tensor:
    """Each chunk's keys: the chunk itself, or (sliding) the previous chunk and the chunk."""
    return torch.cat([F.pad(x, (0, 0, 0, 0, 1, 0))[:, :, :-1], x], dim=3) if sliding else x


def _band_forward(q: Tensor, k: Tensor, v: Tensor, window: int, block: bool) -> tuple[Tensor, Tensor]:
    t, c, sliding = q.shape[2], min(window, q.shape[2]), _sliding(block, window)
    out, lse = _masked_forward(_chunks(q, c), *(_band_keys(_chunks(x, c), sliding) for x in (k, v)),
                              _band_mask(t, window, block, q.device))
    # contiguous, as the fake kernel and the pieces path return it (a padded tail makes a strided view)
    return out.flatten(2, 3)[:, :, :t].contiguous(), lse.flatten(2, 3)[:, :, :t].contiguous()


def _band_backward(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, window: int,
                   block: bool, lse: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    t, c, sliding = q.shape[2], min(window, q.shape[2]), _sliding(block, window)
    merged = None if lse is None else _chunks(lse.unsqueeze(-1), c).squeeze(-1)
    dq, dk, dv = _masked_backward(_chunks(grad, c), _chunks(q, c), *(_band_keys(_chunks(x, c), sliding) for x in (k, v)),
                                 _chunks(out, c), _band_mask(t, window, block, q.device), merged)
    if sliding:  # a chunk's first c keys are the previous chunk's: fold their gradients back there
        dk, dv = (d[:, :, :, c:] + F.pad(d[:, :, 1:, :c], (0, 0, 0, 0, 0, 1)) for d in (dk, dv))
    return tuple(d.flatten(2, 3)[:, :, :t].contiguous() for d in (dq, dk, dv))  # type: ignore[return-value]


def _merge(out: Tensor, lse: Tensor, start: int, out2: Tensor, lse2: Tensor) -> tuple[Tensor, Tensor]:
    """One softmax from two over disjoint keys: rows ``start..`` of (out, lse) with (out2, lse2)."""
    head_lse = lse[:, :, start:]
    merged = torch.logaddexp(head_lse, lse2)
    tail = out[:, :, start:].float() * (head_lse - merged).exp().unsqueeze(-1)
    tail += out2.float() * (lse2 - merged).exp().unsqueeze(-1)
    out = torch.cat([out[:, :, :start], tail.to(out.dtype)], dim=2)
    lse = torch.cat([lse[:, :, :start], merged], dim=2)
    return out.contiguous(), lse.contiguous()


@functools.cache
def _sink_mask(seq_len: int, window: int, sinks: int, device: torch.device) -> Tensor:
    """(T - w, s) additive mask of the queries past the window against the sink keys they do not
    already see in it: query i sees sink j when j <= i - w (query w sees sink 0)."""
    query = torch.arange(window, seq_len, device=device)[:, None]
    key = torch.arange(sinks, device=device)[None, :]
    return torch.zeros(seq_len - window, sinks, device=device).masked_fill(key > query - window, float("-inf"))


def _has_sinks(seq_len: int, window: int, sinks: int) -> bool:
    return sinks > 0 and seq_len > window


def _sink_parts(q: Tensor, k: Tensor, v: Tensor, window: int, sinks: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return q[:, :, window:], k[:, :, :sinks], v[:, :, :sinks], _sink_mask(q.shape[2], window, sinks, q.device)


def _local_forward(q: Tensor, k: Tensor, v: Tensor, window: int, block: bool, sinks: int = 0) -> tuple[Tensor, Tensor]:
    out, lse = _window_forward(q, k, v, window, block)
    if _has_sinks(q.shape[2], window, sinks):
        out, lse = _merge(out, lse, window, *_masked_forward(*_sink_parts(q, k, v, window, sinks)))
    return out, lse


def _window_forward(q: Tensor, k: Tensor, v: Tensor, window: int, block: bool) -> tuple[Tensor, Tensor]:
    if kernel_path(q.shape[2], window, block, q.dtype) == BAND:
        return _band_forward(q, k, v, window, block)
    if q.dtype != PIECES_DTYPE:  # see PIECES_DTYPE
        out, lse = _window_forward(*(x.to(PIECES_DTYPE) for x in (q, k, v)), window, block)
        return out.to(q.dtype), lse
    own, prev = _pieces(q.shape[2], window, block)
    out, lse = _run(own, q, k, v)
    if prev:
        return _merge(out, lse, prev[0].q_start, *_run(prev, q, k, v))
    return out.contiguous(), lse.contiguous()


def _local_backward(
    grad: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, window: int, block: bool, sinks: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    if not _has_sinks(q.shape[2], window, sinks):
        return _window_backward(grad, q, k, v, out, lse, window, block, merged=False)
    dq, dk, dv = _window_backward(grad, q, k, v, out, lse, window, block, merged=True)
    sq, sk, sv, mask = _sink_parts(q, k, v, window, sinks)
    gq, gk, gv = _masked_backward(grad[:, :, window:], sq, sk, sv, out[:, :, window:], mask, lse[:, :, window:])
    dq[:, :, window:] += gq
    dk[:, :, :sinks] += gk
    dv[:, :, :sinks] += gv
    return dq, dk, dv


def _window_backward(
    grad: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, window: int, block: bool, merged: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """The window's share of the gradients; ``merged``: its softmax was merged with the sinks', so
    ``out`` and ``lse`` are not its own (the fused pieces take the merged ones as they are)."""
    if kernel_path(q.shape[2], window, block, q.dtype) == BAND:
        return _band_backward(grad, q, k, v, out, window, block, lse if merged else None)
    if q.dtype != PIECES_DTYPE:  # the forward ran in PIECES_DTYPE; so does its backward
        grads = _window_backward(*(x.to(PIECES_DTYPE) for x in (grad, q, k, v, out)), lse, window, block, merged)
        return tuple(g.to(q.dtype) for g in grads)  # type: ignore[return-value]
    b, h = q.shape[:2]
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    own, prev = _pieces(q.shape[2], window, block)
    for p in own + prev:
        # each piece's fused backward, fed the merged output and log-sum-exp, yields its exact share
        qs = (_view(x, p.q_start, p.n, p.q_len, p.reverse) for x in (grad, q))
        ks = (_view(x, p.k_start, p.n, p.k_len, p.reverse) for x in (k, v))
        os = (_view(x, p.q_start, p.n, p.q_len, p.reverse) for x in (out, lse))
        mask = _upper_mask(p, q.dtype)
        gq, gk, gv = _flash_backward(*qs, *ks, *os, 0.0, mask is None, attn_mask=mask)
        qrows = slice(p.q_start, p.q_start + p.n * p.q_len)
        krows = slice(p.k_start, p.k_start + p.n * p.k_len)
        dq[:, :, qrows] += _unview(gq, b, h, p.reverse)
        dk[:, :, krows] += _unview(gk, b, h, p.reverse)
        dv[:, :, krows] += _unview(gv, b, h, p.reverse)
    return dq, dk, dv


@torch.library.custom_op("spanmix::local_attention", mutates_args=())
def _local_attention_op(q: Tensor, k: Tensor, v: Tensor, window: int, block: bool, sinks: int) -> tuple[Tensor, Tensor]:
    return _local_forward(q, k, v, window, block, sinks)


@_local_attention_op.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, window: int, block: bool, sinks: int) -> tuple[Tensor, Tensor]:
    return torch.empty_like(q), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("spanmix::local_attention_backward", mutates_args=())
def _local_attention_backward_op(
    grad: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, window: int, block: bool, sinks: int
) -> tuple[Tensor, Tensor, Tensor]:
    return _local_backward(grad, q, k, v, out, lse, window, block, sinks)


@_local_attention_backward_op.register_fake
def _(grad, q, k, v, out, lse, window, block, sinks):  # type: ignore[no-untyped-def]
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    q, k, v, window, block, sinks = inputs
    ctx.save_for_backward(q, k, v, *output)
    ctx.window, ctx.block, ctx.sinks = window, block, sinks


def _backward(ctx, grad_out: Tensor, _grad_lse: Tensor | None):  # type: ignore[no-untyped-def]
    # the log-sum-exp is an internal by-product; nothing downstream differentiates it
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = _local_attention_backward_op(grad_out.contiguous(), q, k, v, out, lse, ctx.window, ctx.block, ctx.sinks)
    return dq, dk, dv, None, None, None


_local_attention_op.register_autograd(_backward, setup_context=_setup_context)


# --- CUDA kernel ----------------------------------------------------------------------------------------
@functools.cache
def _flex_block_mask(seq_len: int, window: int, block: bool, device: str, sinks: int = 0):  # type: ignore[no-untyped-def]
    from torch.nn.attention.flex_attention import create_block_mask

    if block:
        def mask_mod(b, h, q, k):  # type: ignore[no-untyped-def]
            return (k <= q) & (q // window == k // window)
    elif sinks:
        def mask_mod(b, h, q, k):  # type: ignore[no-untyped-def]
            return (k <= q) & ((k > q - window) | (k < sinks))
    else:
        def mask_mod(b, h, q, k):  # type: ignore[no-untyped-def]
            return (k <= q) & (k > q - window)
    return create_block_mask(mask_mod, None, None, seq_len, seq_len, device=device)


@functools.cache
def _compiled_flex():  # type: ignore[no-untyped-def]
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_local_attention(q: Tensor, k: Tensor, v: Tensor, window: int, block: bool, compiled: bool = True,
                         sinks: int = 0) -> Tensor:
    """FlexAttention with a block mask (skips whole masked tiles); the CUDA path."""
    from torch.nn.attention.flex_attention import flex_attention

    mask = _flex_block_mask(q.shape[2], window, block, str(q.device), sinks)
    fn = _compiled_flex() if compiled else flex_attention
    return fn(q, k, v, block_mask=mask)


# --- public entry points -------------------------------------------------------------------------------
def local_attention(q: Tensor, k: Tensor, v: Tensor, window: int, block: bool = False, sinks: int = 0) -> Tensor:
    """Causal local attention over (batch, heads, T, head_dim) tensors.

    ``block=False``: sliding window (a token sees itself and ``window - 1`` predecessors, and the
    first ``sinks`` tokens); ``block=True``: MASFormer blocks of ``window`` tokens.
    """
    if q.is_cuda:
        return flex_local_attention(q, k, v, window, block, sinks=sinks)
    return _local_attention_op(q, k, v, window, block, sinks)[0]


def local_attention_with_lse(q: Tensor, k: Tensor, v: Tensor, window: int, block: bool = False,
                             sinks: int = 0) -> tuple[Tensor, Tensor]:
    """:func:`local_attention` (CPU kernels) with each query's log-sum-exp of its scores (float32),
    for what renormalises the softmax afterwards (GPT-OSS's learned sinks). A window of the whole
    sequence is full causal attention. The gradient flows through the output only."""
    return _local_attention_op(q, k, v, window, block, sinks)


def full_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Causal attention over the whole prefix (fused SDPA)."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)
