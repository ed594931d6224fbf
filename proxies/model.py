"""The proxy: a small decoder-only transformer whose layer i runs the attention schedule[i] names.

Pre-norm (RMSNorm), rotary positions, GELU MLP, tied input/output embeddings; nanoGPT-sized so the
whole model reads in one screen.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spanmix.proxies.attention import full_attention, local_attention
from spanmix.space import (
    ConfigError,
    Layer,
    Schedule,
    ScheduleError,
    from_section,
    require_whole,
)
from spanmix.space.validation import MAX_CONTEXT

# wider than the widest released models' residual stream (~16k) or vocabularies past 2**20 are typos
MAX_WIDTH = 2**20


@dataclass(frozen=True)
class ProxyConfig:
    """Width and context of a proxy; the depth comes from the schedule.

    Attributes:
        d_model: residual width.
        n_heads: attention heads; ``d_model / n_heads`` must be even (rotary pairs).
        mlp_ratio: MLP hidden width as a multiple of ``d_model``.
        vocab_size: token vocabulary (256 for bytes).
        context: the longest sequence the model takes.
        rope_base: rotary frequency base.
    """

    d_model: int = 256
    n_heads: int = 4
    mlp_ratio: int = 4
    vocab_size: int = 256
    context: int = 2048
    rope_base: float = 10_000.0

    def __post_init__(self) -> None:
        require_whole(self, "proxy", ("d_model", "n_heads", "vocab_size"), maximum=MAX_WIDTH)
        require_whole(self, "proxy", ("mlp_ratio",), maximum=64)
        require_whole(self, "proxy", ("context",), maximum=MAX_CONTEXT)
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ConfigError(
                f"proxy.d_model={self.d_model} must split into n_heads={self.n_heads} heads of even size"
            )
        if not (isinstance(self.rope_base, (int, float)) and not isinstance(self.rope_base, bool)
                and 1 < self.rope_base < float("inf")):
            raise ConfigError(f"proxy.rope_base must be > 1 (got {self.rope_base!r})")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProxyConfig:
        return from_section(cls, data, "proxy")


def rope_tables(cfg: ProxyConfig, seq_len: int) -> tuple[Tensor, Tensor]:
    half = cfg.head_dim // 2
    inv_freq = cfg.rope_base ** (-torch.arange(half, dtype=torch.float32) / half)
    angles = torch.arange(seq_len, dtype=torch.float32)[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ProxyConfig, layer: Layer) -> None:
        super().__init__()
        self.layer, self.n_heads = layer, cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, layer: Layer | None = None) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        layer = layer or self.layer
        if layer.window is None or layer.span >= t:  # type: ignore[operator]
            y = full_attention(q, k, v)
        else:
            y = local_attention(q, k, v, layer.window, layer.kind == "block", layer.sinks)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, cfg: ProxyConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: ProxyConfig, layer: Layer) -> None:
        super().__init__()
        self.norm1, self.attn = nn.RMSNorm(cfg.d_model), Attention(cfg, layer)
        self.norm2, self.mlp = nn.RMSNorm(cfg.d_model), MLP(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, layer: Layer | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), cos, sin, layer)
        return x + self.mlp(self.norm2(x))


class ProxyGPT(nn.Module):
    """``ProxyGPT(ProxyConfig(...), Schedule.parse("F S256 S256 F"))`` maps token ids (B, T) to logits.

    Full, sliding and block layers share every parameter and differ only in which query-key pairs
    attend, so ``forward(idx, schedule=other)`` runs the same weights under another schedule of the
    same depth: that is all a weight-sharing supernet needs from the model.
    """

    def __init__(self, cfg: ProxyConfig, schedule: Schedule) -> None:
        super().__init__()
        schedule.validate(cfg.context)
        self.cfg, self.schedule = cfg, schedule
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, layer) for layer in schedule.layers)
        self.norm = nn.RMSNorm(cfg.d_model)
        cos, sin = rope_tables(cfg, cfg.context)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.apply(self._init)
        for block in self.blocks:  # GPT-2's scaled init keeps the residual stream's variance flat
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * len(self.blocks)))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, idx: Tensor, schedule: Schedule | None = None, keep: Tensor | None = None) -> Tensor:
        """Logits for ``idx``; ``schedule`` (default: the one the model was built with) picks each
        layer's attention; ``keep`` (positions) limits the logits to those positions."""
        t = idx.shape[1]
        if t > self.cfg.context:
            raise ConfigError(f"input length {t} exceeds proxy.context={self.cfg.context}")
        layers = (schedule or self.schedule).layers
        if len(layers) != len(self.blocks):
            raise ConfigError(f"schedule {schedule} has {len(layers)} layers; this model has {len(self.blocks)}")
        x = self.wte(idx)
        cos, sin = self.cos[:t], self.sin[:t]
        for block, layer in zip(self.blocks, layers):
            x = block(x, cos, sin, layer)
        return F.linear(self.norm(x if keep is None else x[:, keep]), self.wte.weight)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_model(cfg: ProxyConfig, schedule: Schedule | str) -> ProxyGPT:
    """The proxy for a schedule given as a value or in text form (``"F S256 S256 F"``)."""
    if isinstance(schedule, str):
        schedule = Schedule.parse(schedule)
    try:
        return ProxyGPT(cfg, schedule)
    except ScheduleError as err:
        raise ConfigError(f"schedule: {err}") from None
