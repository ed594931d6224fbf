"""Tokens per second of proxy training, and model-FLOPs utilisation against a measured matmul.

The default proxy (d_model 256, 4 heads, 8 layers, two full layers evenly placed, sliding window
256) trains on the stdlib code corpus at two context lengths, fp32 and bf16. Model FLOPs come from
spanmix's own counter (2 FLOPs per multiply-add, x3 for forward+backward); the reference is the best
rate of fp32 and bf16 matmuls of the proxy's MLP shape, measured in the same run. Target: at T=2048
at least 30% of the measured matmul rate. Below target, a profile of one step says where time goes.

    python benchmarks/training.py [--steps 8]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import describe  # noqa: E402
from spanmix.proxies.cost import count  # noqa: E402
from spanmix.proxies.data import DataConfig, ProxyDataModule  # noqa: E402
from spanmix.proxies.model import ProxyConfig  # noqa: E402
from spanmix.proxies.train import ProxyLM, TrainConfig, train_and_score  # noqa: E402
from spanmix.space import build  # noqa: E402

SCHEDULE = build(8, 2, "even", 256)
TARGET = 0.30


def matmul_gflops(dtype: torch.dtype, rows: int, d: int) -> float:
    a, b = torch.randn(rows, d, dtype=dtype), torch.randn(d, 4 * d, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * rows * d * 4 * d / best / 1e9


CATEGORIES = {
    "attention": ("flash_attention", "local_attention", "scaled_dot_product"),
    "matmuls": ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul"),
    "norms": ("rms_norm", "aten::pow", "aten::rsqrt", "aten::mean"),
    "optimizer": ("adam", "_foreach", "Optimizer"),
    "loss": ("log_softmax", "nll_loss", "cross_entropy"),
}


def profile_step(proxy: ProxyConfig, data: DataConfig, batch: int) -> None:
    """One training step under the profiler, self time grouped by where it goes."""
    module = ProxyLM(proxy, SCHEDULE, data, TrainConfig(batch_size=batch, precision="fp32"))
    dm = ProxyDataModule(data, batch, 2 * batch)
    dm.setup()
    optimizer = module.configure_optimizers()["optimizer"]
    loader = iter(dm.train_dataloader())
    next(loader)
    start = time.perf_counter()
    batch_data = next(loader)
    data_s = time.perf_counter() - start
    from torch.profiler import profile

    with profile() as prof:
        loss = module.training_step(batch_data, 0)
        loss.backward()
        optimizer.step()
    groups: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        name = event.key
        group = next((g for g, keys in CATEGORIES.items() if any(k in name for k in keys)), "other")
        groups[group] += event.self_cpu_time_total / 1e3
    groups["data"] = data_s * 1e3
    total = sum(groups.values())
    print("  profile of one fp32 step (self time):")
    for group, ms in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"    {group:<10} {ms:>9.1f} ms  {ms / total:>6.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="training steps per measurement")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    print(describe())
    print(f"proxy: d_model 256, 4 heads, schedule {SCHEDULE.text}; data: stdlib code; {args.steps} steps\n")
    tokens_per_step = 8192
    rates = {name: matmul_gflops(dtype, tokens_per_step, 256) for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    peak = max(rates.values())
    print("matmul (8192x256 @ 256x1024): " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in rates.items()))
    print(f"reference rate: {peak:.1f} GFLOP/s\n")
    print(f"{'T':>5} {'prec':>5} {'batch':>5} {'tok/s':>8} {'GFLOP/s':>8} {'MFU':>6}")
    for seq_len in (1024, 2048):
        batch = tokens_per_step // seq_len
        proxy = ProxyConfig(d_model=256, n_heads=4, context=seq_len)
        data = DataConfig(tasks=("code",), seq_len=seq_len, val_samples=1)
        flops_per_step = 6 * count(proxy, SCHEDULE, seq_len, batch).total
        below = False
        for precision in ("fp32", "bf16"):
            if rates[precision] < rates["fp32"] / 4:
                print(f"{seq_len:>5} {precision:>5} {batch:>5}  skipped: this CPU emulates {precision} matmuls "
                      f"({rates[precision]:.1f} GFLOP/s); precision=auto trains in fp32 here")
                continue
            train = TrainConfig(steps=args.steps, batch_size=batch, precision=precision, warmup=0)
            result = train_and_score(SCHEDULE, proxy, data, train)
            achieved = flops_per_step * result.steps / result.train_seconds / 1e9
            mfu = achieved / peak
            below |= seq_len == 2048 and mfu < TARGET
            print(f"{seq_len:>5} {precision:>5} {batch:>5} {result.tokens_per_second:>8.0f} {achieved:>8.1f} {mfu:>6.1%}", flush=True)
        if below:
            profile_step(proxy, data, batch)


if __name__ == "__main__":
    main()
