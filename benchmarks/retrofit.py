"""Scoring a pretrained checkpoint under a schedule: spanmix's attention against the family's own.

Builds a random Llama checkpoint (``save_pretrained`` into a temporary folder; default about 100M
parameters: 12 layers, d=768, 12 query and 4 key-value heads) and scores it at T=4096 on the CPU,
in fp32, batch 1, without gradients, as a zero-shot study scores each schedule:

* **spanmix**: ``apply_schedule`` on the loaded checkpoint: full layers run full causal
  attention, local layers spanmix's own window kernels (only the pairs inside the window);
* **reference**: the family's own sdpa implementation. All-full: Llama as loaded. All ``S<w>``:
  the same weights loaded as Mistral (Llama's architecture plus a ``sliding_window``), whose
  sliding window is a mask over the whole T x T score matrix, every pair computed.

Each (schedule, implementation) runs in its own process, so its peak memory (the resident set's
peak while scoring, above the loaded weights: Linux's VmHWM, reset after loading) is its own. Printed, all measured in this run: tokens per
second (best of ``--reps`` after a warm-up) and spanmix's speed-up over the reference, the same for
the attention function alone (target: >= 2x at w <= 512; the projections, MLPs and head cost the
same in both and bound the whole forward's speed-up), peak memory, the largest difference of the
two final hidden states (they compute the same function), and what scoring one schedule on a
study's validation set costs.

    python benchmarks/retrofit.py                 # about 10 minutes on 2 cores
    python benchmarks/retrofit.py --quick         # a 4-layer model at T=1024: about a minute
    python benchmarks/retrofit.py --heal          # also one healing step (forward and backward)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import describe  # noqa: E402

SIZES = {  # name: (layers, hidden, intermediate, heads, kv heads, vocab)
    "100m": (12, 768, 2048, 12, 4, 32_000),
    "quick": (4, 256, 688, 4, 2, 32_000),
}


def build(folder: Path, shape: tuple[int, int, int, int, int, int], context: int) -> int:
    """A random Llama of ``shape`` (as a ``SIZES`` entry) saved into ``folder``; returns its
    parameter count."""
    import transformers

    layers, hidden, inter, heads, kv, vocab = shape
    config = transformers.LlamaConfig(num_hidden_layers=layers, hidden_size=hidden, intermediate_size=inter,
                                      num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab,
                                      max_position_embeddings=context, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024


def _reset_peak() -> float:
    """Start measuring the peak resident memory afresh (Linux: clear_refs 5 resets VmHWM); the
    resident memory now."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_mib("VmRSS")


def _timed_attention(name: str) -> list[float]:
    """Time every call of the attention function registered as ``name`` (the family's sdpa, or
    spanmix's): the seconds of each call are appended to the list returned."""
    from transformers import AttentionInterface

    spent: list[float] = []
    inner = AttentionInterface._global_mapping[name]

    def timed(*args: object, **kwargs: object) -> object:
        start = time.perf_counter()
        out = inner(*args, **kwargs)
        spent.append(time.perf_counter() - start)
        return out

    AttentionInterface.register(name, timed)
    return spent


def measure(folder: str, schedule: str, impl: str, context: int, reps: int, heal: bool, save: str) -> dict[str, float]:
    """One (schedule, implementation) in this process: tokens per second of scoring, the peak
    memory above the loaded weights and, with ``heal``, one training step's seconds; the final
    hidden state is saved to ``save``."""
    import transformers

    from spanmix.proxies.retrofit import apply_schedule
    from spanmix.space import Schedule

    parsed = Schedule.parse(schedule)
    windows = {layer.window for layer in parsed.layers}
    if impl == "spanmix":
        model = apply_schedule(transformers.AutoModelForCausalLM.from_pretrained(folder), parsed)
    elif windows == {None}:
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa")
    else:  # every layer S<w>: Mistral is Llama with a sliding window, masked over all T^2 pairs
        (window,) = windows
        config = transformers.MistralConfig.from_pretrained(folder, sliding_window=window)
        model = transformers.MistralForCausalLM.from_pretrained(folder, config=config, attn_implementation="sdpa")
    model.eval()
    loaded = _reset_peak()  # loading peaks above what scoring holds; only scoring's peak counts
    ids = torch.randint(0, model.config.vocab_size, (1, context), generator=torch.Generator().manual_seed(0))
    # the last hidden state (before the head, where a random model's logits hide every difference), kept from the warm-up
    final: list[torch.Tensor] = []
    hook = model.model.norm.register_forward_hook(lambda module, inputs, output: final.append(output[0].clone()))
    spent = _timed_attention(model.config._attn_implementation)
    best, attention = float("inf"), float("inf")
    with torch.no_grad():
        for i in range(reps + 1):
            spent.clear()
            start = time.perf_counter()
            model(input_ids=ids, labels=ids)
            if i:
                best, attention = min(best, time.perf_counter() - start), min(attention, sum(spent))
            hook.remove()
    torch.save(final[0], save)
    out = {"tokens_per_second": context / best, "attention_seconds": attention, "peak_mib": _status_mib("VmHWM") - loaded,
           "loaded_mib": loaded}
    if heal:
        model.train()
        model.gradient_checkpointing_enable()
        start = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        out["heal_step_seconds"] = time.perf_counter() - start
    return out


def _in_process(args: list[str]) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--one", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a 4-layer model at T=1024")
    parser.add_argument("--context", type=int, help="tokens per sequence (default 4096; 1024 with --quick)")
    parser.add_argument("--windows", type=int, nargs="+", default=[128, 512, 1024], help="local windows to time")
    parser.add_argument("--reps", type=int, default=2, help="timed forward passes after one warm-up (best is kept)")
    parser.add_argument("--heal", action="store_true", help="also time one healing step (forward and backward)")
    parser.add_argument("--sequences", type=int, default=64, help="validation sequences a study scores each schedule on")
    parser.add_argument("--one", nargs=6, metavar=("FOLDER", "SCHEDULE", "IMPL", "CONTEXT", "REPS", "SAVE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        folder, schedule, impl, context, reps, save = args.one
        print(json.dumps(measure(folder, schedule, impl, int(context), int(reps), args.heal, save)))
        return
    size = "quick" if args.quick else "100m"
    context = args.context or (1024 if args.quick else 4096)
    print(describe())
    import transformers

    print(f"transformers {transformers.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        params = build(Path(tmp), SIZES[size], context)
        layers = SIZES[size][0]
        print(f"random Llama checkpoint: {params / 1e6:.0f}M parameters, {layers} layers, T={context}, fp32, batch 1, "
              f"no gradients; best of {args.reps} after a warm-up\n")
        head = (f"{'schedule':<14} {'impl':<10} {'tok/s':>8} {'speed-up':>9} {'attention s':>12} {'speed-up':>9} "
                f"{'peak MiB':>9} {'max |diff|':>11}")
        print(head + (f" {'heal step s':>12}" if args.heal else ""))
        print("(attention s: the attention function's own seconds in one forward, projections and rotary excluded; "
              "max |diff|: of the final hidden state, relative to its largest value, spanmix against the reference)")
        rows = [("F", None)] + [(f"S{w}", w) for w in args.windows if w < context]
        hidden: dict[str, torch.Tensor] = {}
        minutes: dict[str, float] = {}
        for name, _ in rows:
            schedule = " ".join([name] * layers)
            runs = {}
            for impl in ("reference", "spanmix"):
                save = str(Path(tmp) / f"{impl}-{name}.pt")
                runs[impl] = _in_process([tmp, schedule, impl, str(context), str(args.reps), save] + (["--heal"] if args.heal else []))
                hidden[f"{impl}-{name}"] = torch.load(save)
            ref, ours = runs["reference"], runs["spanmix"]
            scale = float(hidden[f"reference-{name}"].abs().max())
            for impl, r in runs.items():
                speed = f"{r['tokens_per_second'] / ref['tokens_per_second']:>8.2f}x"
                kernel = f"{r['attention_seconds']:>12.2f} {ref['attention_seconds'] / r['attention_seconds']:>8.2f}x"
                diff = float((hidden[f"{impl}-{name}"] - hidden[f"reference-{name}"]).abs().max()) / scale
                shown = f"{diff:>11.2e}" if impl == "spanmix" else " " * 11
                heal = f" {r['heal_step_seconds']:>12.1f}" if args.heal else ""
                print(f"{'all ' + name:<14} {impl:<10} {r['tokens_per_second']:>8.0f} {speed} {kernel} {r['peak_mib']:>9.0f} "
                      f"{shown}{heal}", flush=True)
            minutes[name] = args.sequences * context / ours["tokens_per_second"] / 60
            if name != "F":
                effect = float((hidden[f"spanmix-{name}"] - hidden["spanmix-F"]).abs().max()) / scale
                print(f"{'':<14} (all {name} against all F differs by {effect:.2e}: the window changes the function)")
        print(f"\nscoring one schedule zero-shot on {args.sequences} sequences of {context} tokens with spanmix: "
              + ", ".join(f"{m:.1f} min all-{name}" for name, m in minutes.items()))
        print("weights loaded: {:.0f} MiB resident".format(ours["loaded_mib"]))


if __name__ == "__main__":
    main()
