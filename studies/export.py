"""Exporting a chosen schedule: JSON, a Hugging Face config fragment, and the line that builds it.

A Hugging Face family reads a schedule as ``layer_types`` plus one size for all its local layers:
``sliding_window`` (a token sees itself and the ``w - 1`` before it, as spanmix's ``S<w>``) or
``attention_chunk_size`` (``chunked_attention``: causal attention within blocks of ``w`` tokens
cut from position 0, as spanmix's ``B<w>``). The table below is what each family reads, checked
on the real model classes: ``tests/test_export.py`` builds each tiny model from the fragment and
compares every layer's non-zero attention weights with spanmix's pattern.

What no family can express is refused with the reason. Several windows, or sliding mixed with
block, would need ``per_layer_config`` (transformers 5.x): it validates, but as of transformers
5.24 every decoder family here builds one mask per layer type from the global size, and reading
that size from a per-layer config raises ``AmbiguousGlobalPerLayerAttributeError``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from spanmix.proxies.retrofit import TYPE_NAMES
from spanmix.search import Point, StudyConfig, StudyView
from spanmix.search.study import model_type_of
from spanmix.space import ConfigError, Schedule

log = logging.getLogger("spanmix")
CONVERSIONS = "Qwen2 is Llama and Mistral with biases on the q, k and v projections, written as zeros"
PER_LAYER = ("several windows, or sliding and block layers together, need a size per layer; transformers' "
             "per_layer_config takes one, but no family's masks read it (checked up to transformers 5.24): "
             "export the JSON schedule and build the spanmix module instead")
NO_SINKS = ("no Hugging Face family keeps sink tokens beside a sliding window (GPT-OSS's learned per-head sinks "
            "are another thing): export the JSON schedule and build the spanmix module instead")


@dataclass(frozen=True)
class HFFamily:
    """How one Hugging Face model family reads a layer schedule.

    Attributes:
        model_type: the config's ``model_type`` (``AutoConfig.for_model`` takes it).
        config_class, model_class: the transformers classes the tests build.
        local: the one local kind the family reads (``sliding`` or ``block``), None for none.
        when_local: keys the family also needs when some layer is local.
        per_layer: whether it reads a type per layer (``layer_types``); False: its window applies to
            every layer or to none.
        converts_to: a family whose model computes this one's function from its weights, written
            where this one cannot express a schedule (Qwen2 is Llama with q/k/v biases: zeros).
    """

    model_type: str
    config_class: str
    model_class: str
    local: str | None
    when_local: dict[str, Any] = field(default_factory=dict)
    per_layer: bool = True
    converts_to: str | None = None

    @property
    def layer_type(self) -> str:
        return TYPE_NAMES[self.local or "full"]

    @property
    def size_key(self) -> str:
        return "attention_chunk_size" if self.local == "block" else "sliding_window"


FAMILIES: dict[str, HFFamily] = {
    # Qwen2 drops sliding_window unless use_sliding_window is set
    "qwen2": HFFamily("qwen2", "Qwen2Config", "Qwen2ForCausalLM", "sliding", {"use_sliding_window": True}),
    "gemma3": HFFamily("gemma3_text", "Gemma3TextConfig", "Gemma3ForCausalLM", "sliding"),
    "gpt_oss": HFFamily("gpt_oss", "GptOssConfig", "GptOssForCausalLM", "sliding"),
    "llama4": HFFamily("llama4_text", "Llama4TextConfig", "Llama4ForCausalLM", "block"),
    # Llama has no local attention: a sliding layer_types entry is silently run as full attention
    "llama": HFFamily("llama", "LlamaConfig", "LlamaForCausalLM", None, converts_to="qwen2"),
    # Mistral is Llama with one sliding_window for every layer (null: full attention everywhere)
    "mistral": HFFamily("mistral", "MistralConfig", "MistralForCausalLM", "sliding", per_layer=False,
                        converts_to="qwen2"),
}
DEFAULT_FAMILY = "auto"


def _able(kind: str) -> str:
    return ", ".join(name for name, f in FAMILIES.items() if f.local == kind)


def check_family(family: str) -> str:
    if family != DEFAULT_FAMILY and family not in FAMILIES:
        raise ConfigError(f"--hf-family {family!r} is unknown; allowed: {DEFAULT_FAMILY}, {', '.join(FAMILIES)}")
    return family


def family_for(schedule: Schedule, family: str = DEFAULT_FAMILY) -> str:
    """The family to export to: ``family`` itself, or for ``auto`` the first in the table that
    reads this schedule's local kind (all-full: the first of all)."""
    if check_family(family) != DEFAULT_FAMILY:
        return family
    kinds = {layer.kind for layer in schedule.layers if not layer.is_full}
    return next((name for name, f in FAMILIES.items() if f.local in kinds), next(iter(FAMILIES)))


def hf_fragment(schedule: Schedule, family: str = DEFAULT_FAMILY) -> dict[str, Any]:
    """The config keys ``family`` reads for ``schedule``; refuses, with the reason and the
    families that can, what the family cannot express."""
    name = family_for(schedule, family)
    spec = FAMILIES[name]
    local = [(i, layer) for i, layer in enumerate(schedule.layers) if not layer.is_full]
    sunk = [(i, layer) for i, layer in local if layer.sinks]
    if sunk:
        raise ConfigError(f"layer {sunk[0][0]} is {sunk[0][1].token}: {NO_SINKS}")
    if len({layer.token for _, layer in local}) > 1:
        raise ConfigError(f"{schedule.text}: {PER_LAYER}")
    for i, layer in local:
        if layer.kind != spec.local:
            reads = f"reads only {spec.local} local layers" if spec.local else "has no local attention"
            raise ConfigError(f"--hf-family {name} {reads}; layer {i} is {layer.kind} ({layer.token}); "
                              f"families that read {layer.kind} layers: {_able(layer.kind)}")
    fragment: dict[str, Any] = {"model_type": spec.model_type, "num_hidden_layers": schedule.n_layers}
    if spec.local is None:
        return fragment
    if not spec.per_layer:
        if local and len(local) < schedule.n_layers:
            typed = ", ".join(n for n, f in FAMILIES.items() if f.local == spec.local and f.per_layer)
            raise ConfigError(f"--hf-family {name} applies one {spec.size_key} to every layer; {schedule.text} mixes "
                              f"full and local layers; families with a type per layer: {typed}")
        fragment[spec.size_key] = local[0][1].window if local else None
        return fragment
    fragment["layer_types"] = [TYPE_NAMES["full"] if layer.is_full else spec.layer_type for layer in schedule.layers]
    if local:  # all-full: the family's default size stays (Gemma 3's model fails on a null sliding_window)
        fragment[spec.size_key] = local[0][1].window
        fragment.update(spec.when_local)
    return fragment


def family_of(model_type: str | None) -> str:
    """The table's family for a ``model_type`` (``auto`` for none, or one not in the table)."""
    return next((name for name, f in FAMILIES.items() if model_type is not None and f.model_type == model_type),
                DEFAULT_FAMILY)


def write_checkpoint(cfg: StudyConfig, point: Point, out: Path, progress: bool = False) -> list[Path]:
    """The model under search as the hybrid model of ``point``'s schedule, in the folder ``out``,
    with the schedule in its family's config keys (see
    :meth:`~spanmix.proxies.subject.Subject.save`); a healed study heals it again (with a
    progress bar if ``progress``). Refuses, before writing anything, a schedule the family cannot
    express, and a model with no weights to write."""
    subject, schedule = cfg.subject, point.layers
    if not subject.pretrained:
        raise ConfigError("--checkpoint exports a checkpoint study ([base] model); this study trained proxies")
    subject.check(cfg.space.n_layers, cfg.data)  # the checkpoint must still be where the study read it
    line = subject.python_line(schedule)
    family = family_of(subject.model_type)
    if family == DEFAULT_FAMILY:
        raise ConfigError(f"--checkpoint: the checkpoint's model_type {subject.model_type!r} has no layer_types spanmix "
                          f"can write (families: {', '.join(FAMILIES)}); run it under spanmix instead: {line}")
    try:
        fragment = hf_fragment(schedule, family)
    except ConfigError as err:
        target = FAMILIES[family].converts_to
        try:
            fragment = hf_fragment(schedule, target) if target else None
        except ConfigError:
            fragment = None
        if fragment is None:
            raise ConfigError(f"--checkpoint: {err}; run it under spanmix instead: {line}") from None
        log.info("--checkpoint: %s; writing it as %s, which computes the same function (%s)", err, target,
                 CONVERSIONS)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--checkpoint {out}: exists and is not an empty folder; choose a new one")
    if cfg.trains:
        log.info("healing the checkpoint under %s for %d steps (seed %d) to write the weights the study measured",
                 schedule.text, cfg.train.steps, cfg.train.seed)
    return [subject.save(schedule, cfg.data, replace(cfg.train, progress=progress), fragment, out)]


def chosen_point(view: StudyView, which: str) -> Point:
    """The point ``which`` names: ``knee`` (of the study's front), or a finished trial's number."""
    if which == "knee":
        point = view.knee()
        if point is None:
            raise ConfigError("the study has no finished feasible trial yet")
        return point
    try:
        number = int(which)
    except ValueError:
        raise ConfigError(f"trial {which!r}: give a trial number or 'knee'") from None
    found = [p for p in view.points() if p.number == number]
    if not found:
        raise ConfigError(f"trial {number} is not a finished trial of study {view.name!r}")
    return found[0]


def export_trial(view: StudyView, which: str, out: Path, family: str = DEFAULT_FAMILY) -> list[Path]:
    """Write a trial's schedule as JSON and, where ``family`` (``auto``: the first that can) reads
    it, as a Hugging Face fragment; print what was exported and the line that builds it. A family
    named explicitly that cannot read the schedule is an error, before anything is written."""
    cfg, point = view.config, chosen_point(view, which)
    schedule = point.layers
    chosen = family
    if family == DEFAULT_FAMILY:  # a checkpoint's config is its own family's
        family = family_of(model_type_of(view.study, cfg))
    name = family_for(schedule, family)  # auto resolved once, for the fragment and its file name
    try:
        fragment, refusal = hf_fragment(schedule, name), None
    except ConfigError as err:
        if chosen != DEFAULT_FAMILY and not cfg.subject.pretrained:  # a checkpoint's JSON says why, below
            raise
        fragment, refusal = None, err
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{'knee' if which == 'knee' else 'trial'}-{point.number}"
    data = schedule.to_dict() | {"trial": point.number, "quality": {cfg.quality: point.quality},
                                 "cost_ratio": point.cost_ratio, "context": cfg.data.seq_len}
    written = [stem.with_suffix(".json")]
    written[0].write_text(json.dumps(data, indent=2) + "\n")
    print(f"trial {point.number}: {schedule.text}  ({cfg.quality} {point.quality:.4f}, cost {point.cost_ratio:.1%} of all-full)")
    if which == "knee":
        noise = view.noise()
        if not noise.measured:
            print(f"note: the knee's neighbours may be as good ({cfg.unmeasured_noise})")
        elif noise.knee_share is not None and noise.knee_share < 0.9:
            print(f"note: the knee is this schedule in only {noise.knee_share:.0%} of resamples of {noise.basis.resampled}: it is "
                  "not clearly separated from its neighbours on the front (see spanmix show)")
    if fragment is None:
        print(f"no Hugging Face fragment: {refusal}")
    else:
        hf = stem.with_name(f"{stem.name}.hf-{name}.json")
        hf.write_text(json.dumps(fragment, indent=2) + "\n")
        written.append(hf)
    print("build it: " + cfg.subject.python_line(schedule))
    return written
