"""What the machine decides: the precision a proxy trains in here, and whether a training step
fits in this machine's memory. Checked before a study starts, so every trial does not fail alike."""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING

import torch

from spanmix.proxies.cost import measure_latency
from spanmix.proxies.data import DataConfig
from spanmix.proxies.model import ProxyConfig
from spanmix.space import ConfigError, Schedule

if TYPE_CHECKING:  # train.py resolves its precision here
    from spanmix.proxies.train import TrainConfig


@functools.cache
def bf16_speedup(proxy: ProxyConfig, seq_len: int) -> float:
    """How much faster a training step of this proxy runs in bf16 than in fp32 here, measured.

    A bare matmul does not answer it. CPUs with AVX-512 BF16 or AMX run bf16 matmuls 2-3x faster,
    AVX2-only CPUs emulate them about 100x slower, and on the AMX machine the fused attention
    kernels run slower in bf16 at small head sizes: a d=64, T=1024 proxy with local layers trained
    at 8.2k tokens/s in bf16 against 13.7k in fp32 while its matmuls ran 2x faster. So this times a
    forward and backward of the proxy itself, with one full and one sliding layer so both kernels
    count.
    """
    if torch.cuda.is_available():
        return float("inf")
    schedule = Schedule.parse(f"F S{max(2, seq_len // 8)}") if seq_len > 2 else Schedule.parse("F F")
    fp32, bf16 = (measure_latency(proxy, schedule, seq_len, reps=2, dtype=d) for d in (torch.float32, torch.bfloat16))
    return fp32 / bf16


def resolve_precision(precision: str, proxy: ProxyConfig, seq_len: int) -> str:
    """``auto`` becomes ``bf16`` where this proxy trains at least 1.2x faster in bf16, else ``fp32``."""
    if precision != "auto":
        return precision
    return "bf16" if bf16_speedup(proxy, seq_len) >= 1.2 else "fp32"


def check_vocab(proxy: ProxyConfig, data: DataConfig) -> None:
    """The embedding must hold every token id the data can produce."""
    need = data.vocab_needed()
    if proxy.vocab_size < need:
        what = "byte tokens" if data.tokenizer is None else f"the tokens of data.tokenizer {data.tokenizer!r}"
        raise ConfigError(f"proxy.vocab_size={proxy.vocab_size} is too small for {what}; needs >= {need}")


def physical_memory() -> int:
    """Bytes of RAM on this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def step_memory(proxy: ProxyConfig, n_layers: int, seq_len: int, batch_size: int) -> int:
    """About the bytes one fp32 training step keeps for its backward pass: per token and layer the
    block's saved activations (~(16 + 2 * mlp_ratio) * d_model values), plus three copies of the
    logits (logits, softmax and their gradient). An estimate to refuse impossible sizes early, not a
    measurement."""
    per_token = n_layers * (16 + 2 * proxy.mlp_ratio) * proxy.d_model + 3 * proxy.vocab_size
    return 4 * batch_size * seq_len * per_token


def check_fits(proxy: ProxyConfig, data: DataConfig, train: TrainConfig, n_layers: int, processes: int = 1) -> None:
    """Refuse, before any trial, what would make every trial fail: tokens the vocabulary cannot
    hold, or a training step that cannot fit in this machine's memory."""
    check_vocab(proxy, data)
    need, have = processes * step_memory(proxy, n_layers, data.seq_len, train.batch_size), physical_memory()
    if need > have:
        each = " each" if processes > 1 else ""
        raise ConfigError(
            f"train.batch_size={train.batch_size} x data.seq_len={data.seq_len} x {n_layers} layers of d_model="
            f"{proxy.d_model} needs about {need / 2**30:.1f} GiB for one training step ({processes} process(es){each}), "
            f"more than this machine's {have / 2**30:.1f} GiB; lower train.batch_size"
        )
