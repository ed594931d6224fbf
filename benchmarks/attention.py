"""Forward+backward time of spanmix's local attention against full causal SDPA and masked SDPA.

Batch 1, 4 heads, head dim 64, fp32. Each cell is the best of ``--reps`` runs after one warm-up;
ratios are full-causal-SDPA time over the kernel's time (higher is faster), all measured in this
run. Targets on a 2-core CPU: at T=8192, w=256 local >= 5x full causal; never slower than masked
SDPA; at T=1024 no slower than full causal.

    python benchmarks/attention.py            # the full table (about two minutes on 2 cores)
    python benchmarks/attention.py --quick    # T=1024, 2048 only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._machine import describe  # noqa: E402
from proxies.attention import allowed_mask, local_attention  # noqa: E402
from space import Layer  # noqa: E402

Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def fwd_bwd_seconds(fn: Kernel, t: int, reps: int) -> float:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 4, t, 64, generator=g, requires_grad=True) for _ in range(3))
    grad = torch.randn(1, 4, t, 64, generator=g)
    best = float("inf")
    for i in range(reps + 1):
        start = time.perf_counter()
        fn(q, k, v).backward(grad)
        if i:
            best = min(best, time.perf_counter() - start)
        q.grad = k.grad = v.grad = None
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only T=1024 and 2048")
    parser.add_argument("--reps", type=int, default=3, help="timed runs per cell (best is kept)")
    args = parser.parse_args()
    lengths = (1024, 2048) if args.quick else (1024, 2048, 4096, 8192)
    print(describe())
    print("fwd+bwd ms, batch 1, 4 heads, head dim 64, fp32; x = full-causal-SDPA time / kernel time\n")
    print(f"{'T':>5} {'w':>4} {'full':>8} {'masked':>8} {'sliding':>8} {'block':>8} "
          f"{'slide x':>7} {'block x':>7} {'mask x':>6} {'FLOP x':>6}")
    for t in lengths:
        full = fwd_bwd_seconds(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), t, args.reps)
        for w in (128, 256, 512):
            mask = allowed_mask(t, w)
            masked = fwd_bwd_seconds(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), t, args.reps)
            sliding = fwd_bwd_seconds(lambda q, k, v: local_attention(q, k, v, w), t, args.reps)
            block = fwd_bwd_seconds(lambda q, k, v: local_attention(q, k, v, w, block=True), t, args.reps)
            flop_x = Layer("full").attended_pairs(t) / Layer("sliding", w).attended_pairs(t)
            print(f"{t:>5} {w:>4} {full * 1e3:>8.1f} {masked * 1e3:>8.1f} {sliding * 1e3:>8.1f} {block * 1e3:>8.1f} "
                  f"{full / sliding:>7.2f} {full / block:>7.2f} {full / masked:>6.2f} {flop_x:>6.1f}", flush=True)


if __name__ == "__main__":
    main()
