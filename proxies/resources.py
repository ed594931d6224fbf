"""What the machine decides: the precision a proxy trains in here, and whether a training step
fits in this machine's memory. Checked before a study starts, so every trial does not fail alike."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from spanmix.proxies.cost import step_seconds
from spanmix.proxies.data import DataConfig
from spanmix.proxies.model import ProxyConfig, build_model
from spanmix.space import ConfigError, Schedule

if TYPE_CHECKING:  # train.py resolves its precision here
    from spanmix.proxies.train import TrainConfig


# bf16 is chosen only where it is measured at least this much faster. Measured on the AVX-512 BF16
# machine (best of 7 rounds): the quick proxy 1.10-1.33 idle and 1.24-1.46 beside another training,
# the medium proxy (d=64, T=1024, batch 8) 1.36-1.60 idle in 5 processes and 0.96-1.54 busy, a
# d=256, T=2048 proxy 2.1-2.4 either way. At 1.5 two idle launches of medium resolved differently
# (fp32, then bf16); 1.8 keeps both small proxies in fp32 and the large one in bf16, whatever else
# the machine is doing.
BF16_MARGIN = 1.8
# timed rounds (after one warm-up of each), fp32 and bf16 back to back, their order alternating
BF16_ROUNDS = 7


def native_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX), as torch reports
    them. Without them bf16 is emulated, 7-100x slower than fp32, whatever a timing on a busy
    machine says."""
    cpu = torch.cpu
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in probes)


def _probe(seq_len: int, local: tuple[str, ...]) -> Schedule:
    """One full layer and one layer of each local kind, at a window of T/8: every kernel counts."""
    w = max(2, seq_len // 8)
    tokens = ["F"] + [f"{'S' if kind == 'sliding' else 'B'}{w}" for kind in local]
    return Schedule.parse(" ".join(tokens) if seq_len > 2 else "F F")


@functools.cache
def bf16_speedup(proxy: ProxyConfig, seq_len: int, batch_size: int = 1, local: tuple[str, ...] = ("sliding",)) -> float:
    """How much faster a training step runs in bf16 than in fp32 here, measured at the training
    shape (``batch_size`` sequences of ``seq_len``, a full layer and one of each ``local`` kind).

    A bare matmul does not answer it: on the AMX machine the fused attention kernels run slower in
    bf16 at small head sizes (a d=64, T=1024 proxy with local layers trained at 8.2k tokens/s in
    bf16 against 13.7k in fp32 while its matmuls ran 2x faster). The two precisions are timed in
    :data:`BF16_ROUNDS` rounds, back to back in alternating order, and the ratio of their best
    times is returned: load from other processes only ever adds time, so the best of several runs
    is the least disturbed (beside another training, the median of the rounds' ratios read
    0.68-1.81 for a proxy whose best-time ratio read 1.24-1.46, and 1.10-1.33 idle). Measured once
    per shape per process.
    """
    if torch.cuda.is_available():
        return float("inf")
    model = build_model(proxy, _probe(seq_len, local))
    idx = torch.randint(proxy.vocab_size, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
    return best_ratio(lambda bf16: step_seconds(model, idx, bf16))


def best_ratio(seconds: Callable[[bool], float], rounds: int = BF16_ROUNDS) -> float:
    """fp32's best time over bf16's, each timed by ``seconds(bf16)`` in ``rounds`` rounds back to
    back, their order alternating, after one warm-up of each (allocators, kernels)."""
    seconds(False), seconds(True)
    best = {False: float("inf"), True: float("inf")}
    for i in range(rounds):
        for bf16 in (False, True) if i % 2 == 0 else (True, False):
            best[bf16] = min(best[bf16], seconds(bf16))
    return best[False] / best[True]


def auto_precision(speedup: Callable[[], float]) -> str:
    """``bf16`` only on a CPU with native bf16 (or a GPU) where ``speedup()`` measures it at least
    :data:`BF16_MARGIN` times faster; else ``fp32``."""
    if not torch.cuda.is_available() and not native_bf16():
        return "fp32"
    return "bf16" if speedup() >= BF16_MARGIN else "fp32"


def resolve_precision(precision: str, proxy: ProxyConfig, seq_len: int, batch_size: int = 1,
                      local: tuple[str, ...] = ("sliding",)) -> str:
    """``auto`` becomes ``bf16`` only where a training step of this shape is measured at least
    :data:`BF16_MARGIN` times faster in it (:func:`auto_precision`); else ``fp32``."""
    if precision != "auto":
        return precision
    return auto_precision(lambda: bf16_speedup(proxy, seq_len, batch_size, tuple(local)))


def why_precision(setting: str, resolved: str, what: str = "a training step") -> str:
    """Why ``setting`` resolved to ``resolved`` here (``what`` was timed), in a few words for the log."""
    if setting != "auto":
        return "as train.precision says"
    if resolved == "bf16":
        return f"auto: {what} measured at least {BF16_MARGIN:g}x faster in bf16 here"
    if torch.cuda.is_available() or native_bf16():
        return f"auto: bf16 not measured {BF16_MARGIN:g}x faster here"
    return "auto: no native bf16 on this CPU"


def check_vocab(proxy: ProxyConfig, data: DataConfig) -> None:
    """The embedding must hold every token id the data can produce."""
    need = data.vocab_needed()
    if proxy.vocab_size < need:
        what = "byte tokens" if data.tokenizer is None else f"the tokens of data.tokenizer {data.tokenizer!r}"
        raise ConfigError(f"proxy.vocab_size={proxy.vocab_size} is too small for {what}; needs >= {need}")


def available_memory() -> int:
    """Bytes the kernel says can be allocated without swapping (``MemAvailable``), or all of RAM
    where it does not say: the one notion of memory every fit check uses."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def step_memory(proxy: ProxyConfig, n_layers: int, seq_len: int, batch_size: int) -> int:
    """About the bytes one fp32 training step keeps for its backward pass: per token and layer the
    block's saved activations (~(16 + 2 * mlp_ratio) * d_model values), plus three copies of the
    logits (logits, softmax and their gradient). An estimate to refuse impossible sizes early, not a
    measurement."""
    per_token = n_layers * (16 + 2 * proxy.mlp_ratio) * proxy.d_model + 3 * proxy.vocab_size
    return 4 * batch_size * seq_len * per_token


def check_fits(proxy: ProxyConfig, data: DataConfig, train: TrainConfig, n_layers: int, processes: int = 1) -> None:
    """Refuse, before any trial, a training step that cannot fit in this machine's available memory."""
    need, have = processes * step_memory(proxy, n_layers, data.seq_len, train.batch_size), available_memory()
    if need > have:
        each = " each" if processes > 1 else ""
        raise ConfigError(
            f"train.batch_size={train.batch_size} x data.seq_len={data.seq_len} x {n_layers} layers of d_model="
            f"{proxy.d_model} needs about {need / 2**30:.1f} GiB for one training step ({processes} process(es){each}), "
            f"more than the {have / 2**30:.1f} GiB available; lower train.batch_size"
        )
