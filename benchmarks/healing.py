"""A short healing of a zero-shot study's schedules: does fine-tuning under a schedule bring back
what going local lost, and at what cost in time?

Takes a finished zero-shot checkpoint study (layerwise, as docs/retrofit.md runs it on
SmolLM2-135M-Instruct) and, for each ``--local`` count, its best-scored schedule with that many
local layers; heals all-full and each of them for ``--steps`` steps (one seed; batch size and
learning rate from the flags; every weight or only the attention projections, as ``[base] heal``
says) on the training split of the study's own probes, or of ``--heal-tasks`` (``[base]
heal_tasks``: ``prose`` heals on text), and scores each healed model on the study's validation
sequences. All-full is healed too, and a healed schedule is compared with healed all-full, not
with the checkpoint as it was: healing on the probes teaches them to every schedule.

Printed, all measured in this run: the machine, then for each schedule its local layers and KV
cache as a share of all-full's, its zero-shot scores (from the study), its healed passkey and
recall accuracy and answer loss with 95% bootstrap intervals over the validation sequences, the
paired bootstrap difference from healed all-full (the same resamples of the same sequences), and
the minutes its healing took. The intervals cover the sequences only: one healing seed shows no
training noise.

    python benchmarks/healing.py --study-config smollm2.toml --local 23 26 28 30 --steps 20
    python benchmarks/healing.py --study-config smollm2.toml --local 23 26 28 --steps 20 --heal-tasks prose
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import describe  # noqa: E402
from spanmix.proxies import checkpoint  # noqa: E402
from spanmix.proxies.scoring import score_batches, val_batches  # noqa: E402
from spanmix.search import StudyConfig, StudyView, open_storage  # noqa: E402
from spanmix.search.logs import quiet_libraries  # noqa: E402
from spanmix.search.noise import percentile_interval  # noqa: E402
from spanmix.search.record import Point  # noqa: E402
from spanmix.space import Schedule  # noqa: E402

PROBES = ("passkey/acc", "recall/acc", "passkey/loss", "recall/loss")  # losses rank where accuracy saturates


def chosen(view: StudyView, counts: list[int]) -> list[Point]:
    """All-full, then for each count the study's best-scored schedule with that many local layers."""
    points = view.points()
    by_count: dict[int, list[Point]] = {}
    for p in points:
        by_count.setdefault(p.layers.n_layers - p.layers.n_full, []).append(p)
    missing = [n for n in [0, *counts] if n not in by_count]
    if missing:
        raise SystemExit(f"--local: the study scored no schedule with {missing} local layers; "
                         f"it has {sorted(by_count)}")
    return [max(by_count[n], key=lambda p: (p.quality, -p.cost_ratio)) for n in [0, *counts]]


def interval(values: np.ndarray) -> tuple[float, float, str]:
    """The 95% bootstrap interval of the resampled ``values``, and as printed."""
    lo, hi = percentile_interval(values.tolist()) or (float("nan"),) * 2
    return lo, hi, f"[{lo:+.3f}, {hi:+.3f}]" if lo < 0 or hi < 0 else f"[{lo:.3f}, {hi:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study-config", type=Path, required=True, help="the zero-shot study's TOML config")
    parser.add_argument("--storage", help="its storage (default: sqlite:///runs/NAME/study.db, as launch writes it)")
    parser.add_argument("--local", type=int, nargs="+", required=True, help="local-layer counts to heal")
    parser.add_argument("--steps", type=int, default=40, help="healing steps per schedule")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--heal", default="attention", choices=("all", "attention"), help="which weights heal")
    parser.add_argument("--heal-tasks", nargs="+", default=(), help="tasks to heal on (default: the study's, the probes)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    quiet_libraries()

    zero = StudyConfig.from_user(tomllib.loads(args.study_config.read_text()))
    storage = open_storage(args.storage or f"sqlite:///runs/{zero.name}/study.db")
    view = StudyView(optuna.load_study(study_name=zero.name, storage=storage), zero)
    points = chosen(view, args.local)
    base = replace(zero.base, heal_steps=args.steps, heal=args.heal, heal_tasks=tuple(args.heal_tasks))
    train = replace(zero.train, batch_size=args.batch_size, lr=args.lr, warmup=max(1, args.steps // 10))
    print(describe())
    healed_on = ", ".join(base.heal_tasks) or "the probes"
    print(f"checkpoint: {zero.base.model}; healed {args.steps} steps of {args.batch_size} x {zero.data.seq_len} tokens "
          f"({args.heal} weights, lr {args.lr:g}, one seed) on the training split of {healed_on}; scored on "
          f"{zero.data.val_samples} validation sequences a task (fp32); intervals: 95% bootstrap over the sequences\n")

    batches = val_batches(zero.data, train.batch_size)
    healed: dict[str, dict[str, np.ndarray]] = {}
    for p in points:
        schedule = Schedule.parse(p.schedule)
        start = time.perf_counter()
        module, _ = checkpoint.heal(base, schedule, zero.data, train)
        minutes = (time.perf_counter() - start) / 60
        scorer = score_batches(module.model, schedule, zero.data, batches, "fp32")
        scores, resampled = scorer.scores(), scorer.resamples()
        healed[p.schedule] = {k: np.array(resampled[k]) for k in PROBES}
        local = schedule.n_layers - schedule.n_full
        print(f"{local:2d} local, KV {p.cost_ratio:.1%}, healed in {minutes:.1f} min: {p.schedule}")
        full = healed[points[0].schedule]
        for k in PROBES:
            line = f"  {k}: zero-shot {p.scores[k]:.3f} -> healed {scores[k]:.3f} {interval(healed[p.schedule][k])[2]}"
            if p is not points[0]:
                lo, hi, text = interval(healed[p.schedule][k] - full[k])
                line += f"; - healed all-full {text}: {'tie' if lo <= 0 <= hi else 'differ'}"
            print(line)


if __name__ == "__main__":
    main()
