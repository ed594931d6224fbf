"""``spanmix export``: a trial's schedule as JSON, as a Hugging Face config fragment, and as the
line that builds its PyTorch module."""

from __future__ import annotations

import argparse
from pathlib import Path

from spanmix.search import StudyView
from spanmix.studies.commands.common import add_study_args, open_named
from spanmix.studies.export import (
    FAMILIES,
    check_family,
    chosen_point,
    export_trial,
    write_checkpoint,
)


def add(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("export", help="export a trial's schedule: JSON, Hugging Face fragment, PyTorch line",
                       description="Write TRIAL's schedule as JSON (OUT/knee-N.json or trial-N.json), as the "
                       "config keys a Hugging Face model family reads (OUT/...hf-FAMILY.json: layer_types plus "
                       "sliding_window, or attention_chunk_size for block layers), and print the Python line that "
                       "builds the proxy module. Hugging Face families take one local size for all layers: a "
                       "schedule with several windows, or sliding and block layers together, has no Hugging Face "
                       "form and is exported as JSON and module only.",
                       epilog="families: qwen2, gemma3, gpt_oss (sliding layers), llama4 (block layers: "
                       "chunked_attention), llama (full attention only), mistral (one sliding window for every "
                       "layer, or none); auto picks the first that reads the schedule.\n\nexamples:\n  spanmix export --study quick knee\n"
                       "  spanmix export --study quick 2 --hf-family gemma3\n"
                       "  spanmix export --study retrofit knee --checkpoint hybrid/",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_study_args(p)
    p.add_argument("trial", help="a trial number, or 'knee' for the front's best quality per cost")
    p.add_argument("--hf-family", default="auto", metavar="FAMILY",
                   help=f"auto (default: a checkpoint study's own family, else the first that reads the schedule), "
                   f"{', '.join(FAMILIES)}")
    p.add_argument("--checkpoint", type=Path, metavar="OUT",
                   help="a checkpoint study ([base] model): also write the hybrid model to the new folder OUT, the "
                   "checkpoint's config.json with the schedule in its family's keys and its other files linked (the "
                   "healed weights when the study healed); AutoModelForCausalLM.from_pretrained(OUT) loads it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while --checkpoint heals")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_family(args.hf_family)
    study, cfg, out = open_named(args)
    view = StudyView(study, cfg)
    if args.checkpoint is not None:  # refused before anything is written
        point = chosen_point(view, args.trial)
        for path in write_checkpoint(cfg, point, args.checkpoint, progress=not args.no_progress):
            print(f"wrote {path} (the {point.layers.text} model: AutoModelForCausalLM.from_pretrained("
                  f"{str(args.checkpoint)!r}))")
    for path in export_trial(view, args.trial, out, args.hf_family):
        print(f"wrote {path}")
    return 0
