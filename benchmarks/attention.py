"""Forward+backward time of spanmix's local attention against full causal SDPA and masked SDPA.

Batch 1, 4 heads, head dim 64, fp32. Each cell is the best of ``--reps`` runs after one warm-up;
ratios are full-causal-SDPA time over the kernel's time (higher is faster), all measured in this
run. Targets on a 2-core CPU: at T=8192, w=256 local >= 5x full causal; never slower than masked
SDPA; at T=1024 no slower than full causal.

    python benchmarks/attention.py            # the full table (about two minutes on 2 cores)
    python benchmarks/attention.py --quick    # T=1024, 2048 only
    python benchmarks/attention.py --crossover   # where the dense masked path beats the pieces

The crossover table times the two exact CPU paths of ``local_attention`` side by side (the
window-sized causal pieces on the fused kernel; the band, every chunk of w queries against its own
and the previous chunk in one batched matmul) next to full causal SDPA, at the proxy shapes spanmix trains (fp32 and
bf16). ``proxies.attention.kernel_path`` is the rule spanmix applies, read off this table, and the
last columns show what it takes and how fast that is.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import spanmix.proxies.attention as attention  # noqa: E402
from benchmarks.machine import describe  # noqa: E402
from spanmix.proxies.attention import allowed_mask, local_attention  # noqa: E402
from spanmix.space import Layer  # noqa: E402

Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def fwd_bwd_seconds(fn: Kernel, t: int, reps: int, shape: tuple[int, int, int] = (1, 4, 64),
                    dtype: torch.dtype = torch.float32) -> float:
    b, h, d = shape
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b, h, t, d, generator=g, dtype=dtype, requires_grad=True) for _ in range(3))
    grad = torch.randn(b, h, t, d, generator=g, dtype=dtype)
    best = float("inf")
    for i in range(reps + 1):
        start = time.perf_counter()
        fn(q, k, v).backward(grad)
        if i:
            best = min(best, time.perf_counter() - start)
        q.grad = k.grad = v.grad = None
    return best


@contextlib.contextmanager
def _forced(path: str | None) -> Iterator[None]:
    """Force local_attention's path for a whole forward and backward (None: its own rule)."""
    saved = attention.kernel_path
    if path is not None:
        attention.kernel_path = lambda *args: path  # type: ignore[assignment]
    try:
        yield
    finally:
        attention.kernel_path = saved  # type: ignore[assignment]


def _best_in_rounds(paths: list[tuple[Kernel, str | None]], t: int, reps: int, shape: tuple[int, int, int],
                    dtype: torch.dtype) -> list[float]:
    """Best time of each (kernel, forced path), timed in alternating rounds so that a burst of load
    elsewhere on the machine hits every path alike rather than one of them."""
    best = [float("inf")] * len(paths)
    for _ in range(reps):
        for i, (fn, path) in enumerate(paths):
            with _forced(path):
                best[i] = min(best[i], fwd_bwd_seconds(fn, t, 1, shape, dtype))
    return best


def crossover(reps: int) -> None:
    """Pieces vs band vs full causal at the proxy shapes the presets train, and the path
    ``local_attention`` takes there (``proxies.attention.kernel_path``)."""
    print("crossover: x = full-causal time / path time (fwd+bwd, best of alternating rounds)\n")
    print(f"{'dtype':>8} {'B,H,D':>8} {'T':>5} {'w':>4} {'kind':>7} {'full ms':>8} {'pieces x':>8} {'band x':>8} "
          f"{'fastest':>7} {'taken':>6} {'taken x':>7}")
    causal: Kernel = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    paths = (attention.PIECES, attention.BAND)
    below = cells = 0
    for dtype in (torch.float32, torch.bfloat16):
        for shape in ((32, 2, 32), (8, 2, 32)):
            for t in (64, 96, 128, 256, 512, 1024):
                for w in sorted({8, t // 8, t // 4}):
                    for block in (False, True):
                        local: Kernel = lambda q, k, v: local_attention(q, k, v, w, block)  # noqa: E731
                        full, *times = _best_in_rounds([(causal, None), *((local, p) for p in paths)], t, reps, shape, dtype)
                        speed = {p: full / s for p, s in zip(paths, times)}
                        taken = attention.kernel_path(t, w, block, dtype)
                        cells, below = cells + 1, below + (speed[taken] < 1.0)
                        print(f"{str(dtype)[6:]:>8} {','.join(map(str, shape)):>8} {t:>5} {w:>4} "
                              f"{'block' if block else 'sliding':>7} {full * 1e3:>8.2f} "
                              + " ".join(f"{speed[p]:>8.2f}" for p in paths)
                              + f" {max(speed, key=speed.get):>7} {taken:>6} {speed[taken]:>7.2f}", flush=True)
    print(f"\n{below} of {cells} cells below 1.0x with the path taken")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only T=1024 and 2048")
    parser.add_argument("--reps", type=int, default=3, help="timed runs per cell (best is kept)")
    parser.add_argument("--crossover", action="store_true", help="the pieces vs dense table instead")
    args = parser.parse_args()
    if args.crossover:
        print(describe())
        crossover(args.reps)
        return
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
