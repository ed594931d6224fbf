"""The head at the scored positions alone: probe scoring with the logits made only where an answer
is scored, against the logits at every position, side by side in one process.

A probe (passkey, recall) scores its answers alone, yet a causal LM's head maps every position to
the whole vocabulary: for a checkpoint of SmolLM2-135M's shape (a random Llama of
``benchmarks.reuse.SIZES["135m"]``: 30 layers, d=576, vocabulary 49,152) at T=1024 that is about a
fifth of a forward's multiply-adds, and a batch of 8 sequences' logits take 1.6 GB in fp32.
spanmix's scoring asks the model for the logits at the scored positions alone (transformers'
``logits_to_keep``; a proxy slices before its head). Each schedule is scored both ways, in turns,
``--rounds`` times each, in fp32 and under bf16 autocast. Printed, all measured in this run: the
best seconds of each way, their ratio, and the largest relative difference between the two ways'
scores.

    python benchmarks/head.py             # T=1024, 4 validation sequences a task: about 4.5 minutes on 2 cores
    python benchmarks/head.py --quick     # T=256, narrow layers: seconds
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import describe  # noqa: E402
from benchmarks.retrofit import build  # noqa: E402
from benchmarks.reuse import SIZES  # noqa: E402
from spanmix.proxies import checkpoint  # noqa: E402
from spanmix.proxies.checkpoint import BaseConfig  # noqa: E402
from spanmix.proxies.data import IGNORE, DataConfig  # noqa: E402
from spanmix.proxies.retrofit import Retrofitted  # noqa: E402
from spanmix.proxies.scoring import score_batches, val_batches  # noqa: E402
from spanmix.space import Schedule  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="30 narrow layers at T=256")
    parser.add_argument("--val-samples", type=int, default=4, help="validation sequences per probe task")
    parser.add_argument("--rounds", type=int, default=3, help="turns of each way per schedule (the best is kept)")
    args = parser.parse_args()
    size = "quick" if args.quick else "135m"
    *shape, context = SIZES[size]
    layers = shape[0]
    data = DataConfig(tasks=("passkey", "recall"), seq_len=context, min_distance=context // 2, val_samples=args.val_samples)
    batches = val_batches(data, 8)
    scored = sum(int((b["y"] != IGNORE).sum()) for b in batches)
    print(describe())
    with tempfile.TemporaryDirectory() as folder:
        params = build(Path(folder), tuple(shape), context)  # type: ignore[arg-type]
        model = Retrofitted(checkpoint.load(BaseConfig(model=folder)))
        print(f"random Llama of {size} shape ({params / 1e6:.0f}M parameters, {layers} layers, vocabulary {shape[-1]:,}); "
              f"T={context}, passkey + recall, {len(batches)} batches of 8: {scored:,} of "
              f"{sum(b['y'].numel() for b in batches):,} positions scored\n")
        for text in ("F " * layers, "S64+4 " * layers):
            schedule = Schedule.parse(text)
            for precision in ("fp32", "bf16"):
                best = {True: float("inf"), False: float("inf")}
                scores = {}
                for _ in range(args.rounds):
                    for every in (True, False):
                        start = time.perf_counter()
                        scores[every] = score_batches(model, schedule, data, batches, precision, every_position=every).scores()
                        best[every] = min(best[every], time.perf_counter() - start)
                gap = max(abs(scores[True][k] - scores[False][k]) / max(abs(scores[True][k]), 1e-12) for k in scores[True])
                print(f"{schedule.text.split()[0]} x {layers}, {precision}: every position {best[True]:.2f} s, "
                      f"scored positions {best[False]:.2f} s: {best[True] / best[False]:.2f}x; "
                      f"largest relative score difference {gap:.1e}")


if __name__ == "__main__":
    main()
