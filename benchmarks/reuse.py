"""Prefix reuse in a layer-wise search: each schedule run only from its first layer unlike the last.

Builds a random checkpoint of SmolLM2-135M's shape (Llama: 30 layers, d=576, 9 query and 3
key-value heads, vocabulary 49,152; about 135M parameters; ``save_pretrained`` into a temporary
folder) and runs the layerwise strategy's search (:func:`spanmix.search.strategies.layerwise.beam_search`:
the all-full schedule, each layer local alone, then the beam) zero-shot at T=1024 for
``--schedules`` schedules, twice in this process: scoring each schedule whole (``base.reuse =
false``), then reusing the unchanged layers' outputs (``base.reuse = true``), with the schedules
of each step in the strategy's order. Printed, side by side: decoder-layer forwards run, wall time
per scored schedule, the ratios, and the largest difference between the two runs' scores (the
reuse is exact: 0). Target (issue 31): >= 2x fewer layer forwards and >= 1.7x less wall time.

    python benchmarks/reuse.py --schedules 205  # the whole search (143 schedules): about 45 minutes on 2 cores
    python benchmarks/reuse.py                  # its first 40 schedules
    python benchmarks/reuse.py --quick          # 30 narrow layers at T=256: about a minute
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

SIZES = {  # name: (layers, hidden, intermediate, heads, kv heads, vocab, context)
    "135m": (30, 576, 1536, 9, 3, 49_152, 1024),
    "quick": (30, 64, 128, 4, 2, 4_096, 256),
}


def search(folder: str, size: str, reuse: bool, budget: int, window: int, val_samples: int) -> tuple[dict[str, float], float, int]:
    """The layer-wise search's first ``budget`` schedules scored zero-shot: (each schedule's
    loss, seconds per schedule, decoder-layer forwards run)."""
    from spanmix.proxies import checkpoint
    from spanmix.proxies.checkpoint import BaseConfig
    from spanmix.proxies.data import DataConfig
    from spanmix.proxies.scoring import val_batches
    from spanmix.proxies.train import TrainConfig
    from spanmix.search.strategies.layerwise import beam_search
    from spanmix.space import Layer, Schedule

    layers, context = SIZES[size][0], SIZES[size][-1]
    base = BaseConfig(model=folder, reuse=reuse)
    data = DataConfig(tasks=("recall",), seq_len=context, min_distance=context // 4, val_samples=val_samples)
    train = TrainConfig(batch_size=8)
    checkpoint.score(base, Schedule.parse("F " * layers), data, train)  # load once, outside the timing
    if reuse:
        checkpoint._zero_shot(base, True, "fp32").cache.states.clear()
    losses: dict[str, float] = {}
    seconds = 0.0

    def measure(schedules):  # the strategy's measure, without the study: its order, its budget
        nonlocal seconds
        todo = sorted({s.text: s for s in schedules if s.text not in losses}.values(), key=lambda s: s.text.split())
        for s in todo[: budget - len(losses)]:
            start = time.perf_counter()
            losses[s.text] = checkpoint.score(base, s, data, train).scores["loss"]
            seconds += time.perf_counter() - start
        return {s: (losses[s.text], 0.0, 0.0, s.text) for s in schedules if s.text in losses}

    beam_search(layers, [Layer("sliding", window)], beam=3, expand=2, measure=measure)
    batches = len(val_batches(data, train.batch_size))
    forwards = checkpoint._zero_shot(base, True, "fp32").cache.computed if reuse else len(losses) * layers * batches
    return losses, seconds / len(losses), forwards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="30 narrow layers at T=256")
    parser.add_argument("--schedules", type=int, default=40, help="schedules of the search to score (default 40)")
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--val-samples", type=int, default=4, help="validation sequences (default 4)")
    args = parser.parse_args()
    size = "quick" if args.quick else "135m"
    print(describe())
    with tempfile.TemporaryDirectory() as tmp:
        params = build(Path(tmp), SIZES[size][:6], SIZES[size][-1])
        layers, *_, context = SIZES[size]
        print(f"random Llama of SmolLM2-135M's shape ({size}): {params / 1e6:.0f}M parameters, {layers} layers, T={context}, "
              f"zero-shot, fp32, {args.val_samples} validation sequences; the layerwise search's first {args.schedules} "
              f"schedules (S{args.window}; beam 3, expand 2)")
        whole = search(tmp, size, False, args.schedules, args.window, args.val_samples)
        reused = search(tmp, size, True, args.schedules, args.window, args.val_samples)
    diff = max(abs(whole[0][t] - reused[0][t]) for t in whole[0])
    print(f"{'':>22} {'layer forwards':>15} {'s / schedule':>13}")
    print(f"{'each schedule whole':>22} {whole[2]:>15,} {whole[1]:>13.3f}")
    print(f"{'prefix reuse':>22} {reused[2]:>15,} {reused[1]:>13.3f}")
    print(f"{'ratio':>22} {whole[2] / reused[2]:>14.2f}x {whole[1] / reused[1]:>12.2f}x")
    print(f"largest difference between the two runs' losses: {diff:.3g} over {len(whole[0])} schedules")


if __name__ == "__main__":
    main()
