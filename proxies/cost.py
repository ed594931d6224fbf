"""What a schedule costs: counted by fvcore on the real model, in closed form, and measured.

Convention (fvcore's): one multiply-add is one FLOP. Matrix products are counted (projections, MLP,
LM head, and the attention score and value products); element-wise work (norms, RoPE, GELU,
softmax, residual adds) is not. Attention counts the query-key pairs its pattern allows, as
MASFormer counts cost: causal full attention has T(T+1)/2 pairs per head, each costing
``head_dim`` multiply-adds for the score and ``head_dim`` for the value product.
"""

from __future__ import annotations

import functools
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape

from spanmix.proxies.attention import kernel_pairs
from spanmix.proxies.model import ProxyConfig, build_model
from spanmix.space import Layer, Schedule

ATTENTION_OPS = ("scaled_dot_product_attention", "local_attention")
# element-wise work the convention leaves out; anything else fvcore cannot count is an error
UNCOUNTED_OPS = frozenset(
    {"aten::mul", "aten::add", "aten::sub", "aten::neg", "aten::rms_norm", "aten::gelu", "aten::embedding", "aten::cos", "aten::sin"}
)


class CountError(RuntimeError):
    """fvcore met an operator the cost convention does not know how to count."""


def _attention_macs(q_shape: list[int], layer: Layer) -> int:
    b, h, t, hd = q_shape
    return 2 * b * h * hd * layer.attended_pairs(t)


def _sdpa_handle(inputs: list[Any], outputs: list[Any]) -> int:
    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    attn_mask, is_causal = inputs[3].toIValue(), inputs[5].toIValue()
    if attn_mask is not None or not is_causal or q[2] != k[2]:
        raise CountError("only causal self-attention SDPA (is_causal=True, no mask) has a counting rule")
    return _attention_macs(q, Layer("full"))


def _local_handle(inputs: list[Any], outputs: list[Any]) -> int:
    window, block, sinks = (x.toIValue() for x in inputs[3:6])
    return _attention_macs(get_shape(inputs[0]), Layer("block" if block else "sliding", window, sinks))


@dataclass(frozen=True)
class Shape:
    """The sizes the cost formulas need: a proxy's or a pretrained checkpoint's.

    Attributes:
        d_model: residual width.
        n_heads, kv_heads, head_dim: query heads, key-value heads (grouped-query attention when
            fewer) and their width.
        mlp: multiply-adds of each layer's MLP per token (a mixture of experts counts its router
            and the experts a token is sent to).
        vocab_size: the LM head's outputs.
        kv_bytes: bytes per cached key or value number.
    """

    d_model: int
    n_heads: int
    kv_heads: int
    head_dim: int
    mlp: tuple[int, ...]
    vocab_size: int
    kv_bytes: int = 2

    @classmethod
    def of(cls, cfg: ProxyConfig | Shape, n_layers: int) -> Shape:
        """A proxy's shape (its depth is the schedule's); a shape as it is."""
        if isinstance(cfg, Shape):
            return cfg
        return cls(cfg.d_model, cfg.n_heads, cfg.n_heads, cfg.head_dim, (2 * cfg.mlp_ratio * cfg.d_model**2,) * n_layers,
                   cfg.vocab_size)

    @property
    def projections(self) -> int:
        """Multiply-adds of the query, key, value and output projections per token."""
        return 2 * self.d_model * self.head_dim * (self.n_heads + self.kv_heads)


def closed_form(cfg: ProxyConfig | Shape, schedule: Schedule, seq_len: int, batch: int = 1) -> dict[str, Any]:
    """Multiply-adds per layer part, by formula alone (no model)."""
    shape, t = Shape.of(cfg, len(schedule)), seq_len
    width = shape.n_heads * shape.head_dim  # every query head scores its keys (grouped KV heads are shared, not fewer)
    per_layer = [
        {
            "attention": batch * 2 * width * layer.attended_pairs(t),
            "projections": batch * shape.projections * t,
            "mlp": batch * mlp * t,
        }
        for layer, mlp in zip(schedule.layers, shape.mlp)
    ]
    lm_head = batch * t * shape.d_model * shape.vocab_size
    total = lm_head + sum(sum(p.values()) for p in per_layer)
    # generating token t: one token through every projection, MLP and the head, and its attention
    # to the keys its layer lets it see
    decode = batch * (shape.d_model * shape.vocab_size + sum(
        shape.projections + mlp + 2 * width * layer.decode_keys(t) for layer, mlp in zip(schedule.layers, shape.mlp)))
    return {"layers": per_layer, "lm_head": lm_head, "total": total, "decode": decode}


@dataclass(frozen=True)
class LayerCost:
    """Multiply-adds of one layer, as fvcore counted them on the model."""

    index: int
    token: str
    attention: int
    attention_kernel: int
    projections: int
    mlp: int

    @property
    def total(self) -> int:
        return self.attention + self.projections + self.mlp


@dataclass(frozen=True)
class CostReport:
    """A schedule's cost at one sequence length and batch, next to the all-full schedule's.

    ``total`` is the prefill: one forward over the whole context. ``decode`` is generating one
    token at position ``seq_len``, counted by fvcore as the forward at ``seq_len`` minus the forward
    at ``seq_len - 1`` (causal attention: the extra token changes nothing before it). ``kv_cache_bytes``
    is the peak a decoder holds (a block layer's peaks at a full block of ``window``).
    """

    schedule: str
    seq_len: int
    batch: int
    layers: tuple[LayerCost, ...]
    lm_head: int
    total: int
    closed_form_total: int
    full_total: int
    full_attention: int
    decode: int
    closed_form_decode: int
    full_decode: int
    kv_cache_bytes: int
    full_kv_cache_bytes: int

    @property
    def prefill(self) -> int:
        return self.total

    @property
    def decode_ratio(self) -> float:
        return self.decode / self.full_decode

    @property
    def attention(self) -> int:
        return sum(layer.attention for layer in self.layers)

    @property
    def attention_kernel(self) -> int:
        return sum(layer.attention_kernel for layer in self.layers)

    @property
    def ratio(self) -> float:
        """Total multiply-adds over the all-full schedule's."""
        return self.total / self.full_total

    @property
    def attention_ratio(self) -> float:
        return self.attention / self.full_attention

    @property
    def kv_ratio(self) -> float:
        return self.kv_cache_bytes / self.full_kv_cache_bytes

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(ratio=self.ratio, attention_ratio=self.attention_ratio, kv_ratio=self.kv_ratio,
                    attention=self.attention, attention_kernel=self.attention_kernel, prefill=self.prefill,
                    decode_ratio=self.decode_ratio)
        return data

    def table(self) -> str:
        """The per-layer breakdown as aligned text (mega multiply-adds)."""
        rows = [f"{'layer':>5} {'kind':>6} {'attn':>10} {'kernel':>10} {'proj':>10} {'mlp':>10}  (M MACs)"]
        for c in self.layers:
            rows.append(
                f"{c.index:>5} {c.token:>6} {c.attention / 1e6:>10.2f} {c.attention_kernel / 1e6:>10.2f} "
                f"{c.projections / 1e6:>10.2f} {c.mlp / 1e6:>10.2f}"
            )
        rows.append(
            f"prefill {self.total / 1e9:.4f} G MACs ({self.ratio:.1%} of all-full), attention {self.attention_ratio:.1%} "
            f"of all-full, decode at {self.seq_len} {self.decode / 1e6:.3f} M MACs ({self.decode_ratio:.1%}), "
            f"KV cache {self.kv_cache_bytes / 2**20:.2f} MiB ({self.kv_ratio:.1%})"
        )
        return "\n".join(rows)


def kv_cache_bytes(cfg: ProxyConfig | Shape, schedule: Schedule, context: int, batch: int = 1,
                   bytes_per_value: int | None = None) -> int:
    """Keys and values held to decode at position ``context`` (in the shape's bytes per value, bf16
    for a proxy, unless given): a full layer keeps every token, a local layer at most ``window``
    (a block layer restarts at each block)."""
    shape = Shape.of(cfg, len(schedule))
    per_token = 2 * shape.kv_heads * shape.head_dim * (bytes_per_value or shape.kv_bytes)
    return batch * per_token * sum(schedule.kv_tokens(context))


def fvcore_by_module(model: torch.nn.Module, idx: torch.Tensor, uncounted: frozenset[str] = UNCOUNTED_OPS) -> dict[str, Any]:
    """fvcore's multiply-adds by module and operator for ``model(idx)``, with spanmix's attention
    handles; any operator it cannot count outside ``uncounted`` is an error."""
    analysis = FlopCountAnalysis(model, (idx,))
    analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_handle, "spanmix::local_attention", _local_handle)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    with torch.no_grad():
        by_module = analysis.by_module_and_operator()
    unknown = set(analysis.unsupported_ops()) - uncounted
    if unknown:
        raise CountError(f"fvcore cannot count {sorted(unknown)}; add a handle or extend the convention")
    return by_module


@functools.lru_cache(maxsize=256)
def _analyse(cfg: ProxyConfig, schedule: Schedule, seq_len: int, batch: int) -> dict[str, Any]:
    """fvcore's multiply-adds by module and operator for a forward over ``seq_len`` tokens."""
    # on the meta device the trace records shapes without computing anything, so counting a long
    # context costs milliseconds, not a forward pass
    with torch.device("meta"):
        model = build_model(cfg, schedule).eval()
        idx = torch.zeros(batch, seq_len, dtype=torch.long)
    return fvcore_by_module(model, idx)


Analyse = Callable[[int], dict[str, Any]]


def report(shape: Shape, schedule: Schedule, seq_len: int, batch: int = 1, analyse: Analyse | None = None,
           modules: tuple[str, str] = ("", "")) -> CostReport:
    """A schedule's cost report: counted by fvcore where ``analyse`` gives its by-module count at a
    sequence length (``modules`` name a layer's attention and MLP modules, formatted with its
    index), else by the closed form alone."""
    mine = closed_form(shape, schedule, seq_len, batch)
    width = shape.n_heads * shape.head_dim
    layers = []
    by_module = analyse(seq_len) if analyse else None
    for i, layer in enumerate(schedule.layers):
        if layer.window is None or layer.span >= seq_len:  # type: ignore[operator]
            kernel = seq_len * (seq_len + 1) // 2
        else:
            kernel = kernel_pairs(seq_len, layer.window, layer.kind == "block", sinks=layer.sinks)
        if by_module is None:
            attention, projections, mlp = (mine["layers"][i][part] for part in ("attention", "projections", "mlp"))
        else:
            attn = by_module[modules[0].format(i)]
            attention, projections, mlp = sum(attn[op] for op in ATTENTION_OPS), attn["linear"], sum(by_module[modules[1].format(i)].values())
        layers.append(LayerCost(index=i, token=layer.token, attention=attention, attention_kernel=batch * 2 * width * kernel,
                                projections=projections, mlp=mlp))
    if by_module is None or analyse is None:
        total, decode = mine["total"], mine["decode"]
    else:
        total = sum(by_module[""].values())
        decode = total - (sum(analyse(seq_len - 1)[""].values()) if seq_len > 1 else 0)
    all_full = Schedule((Layer("full"),) * len(schedule))
    full = closed_form(shape, all_full, seq_len, batch)
    return CostReport(
        schedule=schedule.text,
        seq_len=seq_len,
        batch=batch,
        layers=tuple(layers),
        lm_head=total - sum(c.total for c in layers),
        total=total,
        closed_form_total=mine["total"],
        full_total=full["total"],
        full_attention=sum(p["attention"] for p in full["layers"]),
        decode=decode,
        closed_form_decode=mine["decode"],
        full_decode=full["decode"],
        kv_cache_bytes=kv_cache_bytes(shape, schedule, seq_len, batch),
        full_kv_cache_bytes=kv_cache_bytes(shape, all_full, seq_len, batch),
    )


@functools.lru_cache(maxsize=256)
def _count(cfg: ProxyConfig, schedule: Schedule, seq_len: int, batch: int) -> CostReport:
    return report(Shape.of(cfg, len(schedule)), schedule, seq_len, batch,
                  lambda t: _analyse(cfg, schedule, t, batch), ("blocks.{}.attn", "blocks.{}.mlp"))


def count(cfg: ProxyConfig, schedule: Schedule, seq_len: int | None = None, batch: int = 1) -> CostReport:
    """Count a schedule's multiply-adds with fvcore on the real model (cached per schedule and size)."""
    seq_len = cfg.context if seq_len is None else seq_len
    schedule.validate(cfg.context)
    return _count(cfg, schedule, seq_len, batch)


def step_seconds(model: torch.nn.Module, idx: torch.Tensor, bf16: bool = False) -> float:
    """Wall seconds of one forward and backward pass of ``model`` on ``idx`` (bf16 autocast if asked)."""
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(idx)
    logits.float().logsumexp(-1).mean().backward()
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return seconds


def measure_latency(
    cfg: ProxyConfig,
    schedule: Schedule,
    seq_len: int | None = None,
    batch: int = 1,
    reps: int = 3,
    dtype: torch.dtype = torch.float32,
) -> float:
    """Median wall time in milliseconds of one forward+backward pass on this machine."""
    seq_len = cfg.context if seq_len is None else seq_len
    model = build_model(cfg, schedule)
    idx = torch.randint(cfg.vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    step_seconds(model, idx, dtype == torch.bfloat16)  # the first pass warms allocators and kernels
    return 1e3 * statistics.median(step_seconds(model, idx, dtype == torch.bfloat16) for _ in range(reps))
