"""A pretrained Hugging Face checkpoint as the model under search (the ``[base]`` section).

A study with ``[base] model`` searches the schedules of a local checkpoint's own layers instead of
training proxies: each schedule is applied to the checkpoint (:mod:`spanmix.proxies.retrofit`),
optionally healed by a short fine-tuning under it, and scored on the study's data, as a proxy is.
Everything that can be refused is refused before any weight is read: a missing folder, a family
that is not a decoder spanmix can retrofit, weights that would not fit in this machine's memory.
Nothing is downloaded: transformers runs with ``local_files_only``.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import struct
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch

from spanmix.proxies import gguf
from spanmix.proxies.cost import (
    UNCOUNTED_OPS,
    CostReport,
    Shape,
    fvcore_by_module,
    report,
)
from spanmix.proxies.data import DataConfig
from spanmix.proxies.resources import auto_precision, available_memory, best_ratio
from spanmix.proxies.retrofit import (
    PrefixCache,
    Retrofitted,
    apply_schedule,
    decoder_layers,
)
from spanmix.proxies.scoring import score_batches, val_batches
from spanmix.proxies.train import (
    Curve,
    Fitted,
    ProxyResult,
    ScheduleLM,
    TrainConfig,
    fit,
)
from spanmix.space import ConfigError, Layer, Schedule, from_section, require_whole

HEALS = ("all", "attention")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# what the checkpoint's element-wise work adds to the proxies' uncounted operators (cost convention)
UNCOUNTED = UNCOUNTED_OPS | {"aten::pow", "aten::mean", "aten::rsqrt", "aten::repeat_interleave", "aten::silu",
                             "aten::tanh", "aten::div", "aten::sigmoid"}


@dataclass(frozen=True)
class BaseConfig:
    """The pretrained checkpoint whose layers a study searches (``[base]``; no ``model``: proxies).

    Attributes:
        model: a local folder with ``config.json`` and ``*.safetensors`` weights (a
            ``save_pretrained`` folder), or a ``.gguf`` file (converted once into a cached folder,
            :mod:`spanmix.proxies.gguf`); a study config's relative path is relative to its folder.
        dtype: the dtype the weights are loaded, healed and scored in: ``auto`` (the checkpoint's
            own ``dtype``, float32 when it names none), ``float32``, ``bfloat16`` or ``float16``.
        heal_steps: fine-tuning steps under the schedule before it is scored (0: zero-shot, the
            weights as they are). Batch size, learning rate and warm-up come from ``[train]``.
        heal: which weights healing trains: ``all``, or ``attention`` (the attention projections
            only, the rest frozen).
        heal_tasks: the tasks healing trains on (default: ``data.tasks``, the scored ones). Healing
            on the probes teaches them; ``["prose"]`` (or your files' task) heals on text and
            leaves the probes to measure what healing kept.
        reuse: zero-shot scoring keeps every layer's output on the validation sequences, so that
            the next schedule runs only from its first layer that differs (a layer-wise search
            changes one layer a step); the same scores, at the memory of L layers' hidden states
            over the validation set. Unset: where that takes at most a quarter of the memory left
            after the weights; ``true``: refused where it takes more than half; ``false``: never.
    """

    model: str | None = None
    dtype: str = "auto"
    heal_steps: int = 0
    heal: str = "all"
    reuse: bool | None = None
    heal_tasks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", *DTYPES):
            raise ConfigError(f"base.dtype {self.dtype!r} is unknown; allowed: auto, {', '.join(DTYPES)}")
        if self.heal not in HEALS:
            raise ConfigError(f"base.heal {self.heal!r} is unknown; allowed: {', '.join(HEALS)}")
        require_whole(self, "base", ("heal_steps",), minimum=0)
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise ConfigError(f"base.model must be the path of a checkpoint folder or .gguf file (got {self.model!r})")
        if self.reuse is not None and not isinstance(self.reuse, bool):
            raise ConfigError(f"base.reuse must be true or false (got {self.reuse!r})")
        if isinstance(self.heal_tasks, str) or not all(isinstance(t, str) for t in self.heal_tasks):
            raise ConfigError(f"base.heal_tasks must be a list of task names (got {self.heal_tasks!r})")
        object.__setattr__(self, "heal_tasks", tuple(self.heal_tasks))
        if self.heal_tasks and not self.healed:
            raise ConfigError(f"base.heal_tasks {list(self.heal_tasks)} with base.heal_steps=0: nothing heals; "
                              "set heal_steps > 0, or leave heal_tasks out")

    @property
    def healed(self) -> bool:
        return self.heal_steps > 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # unset reads as before the setting existed, so stored studies compare equal
        if self.reuse is None:
            del data["reuse"]
        if not self.heal_tasks:
            del data["heal_tasks"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BaseConfig:
        return from_section(cls, data, "base")


def require_file(folder: str) -> None:
    """Refuse a checkpoint folder without a readable config and safetensors weights, or a machine
    without transformers; a ``.gguf`` file is converted here (once: the folder is cached)."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ConfigError("base.model needs transformers: pip install 'spanmix[retrofit]'") from None
    if not gguf.is_gguf(folder) and not Path(folder).expanduser().is_dir():
        raise ConfigError(f"base.model: {folder!r} is not a folder; allowed: a local checkpoint folder "
                          "(config.json and *.safetensors, as save_pretrained writes it) or a .gguf file")
    path = local(folder)
    if not (path / "config.json").is_file():
        raise ConfigError(f"base.model: {folder!r} has no config.json")
    if not _weights(path):
        raise ConfigError(f"base.model: {folder!r} has no *.safetensors weights (other formats are not read)")


def _weights(path: Path) -> list[Path]:
    return sorted(path.glob("*.safetensors"))


def local(model: str) -> Path:
    """The checkpoint folder ``base.model`` reads as: itself, or a ``.gguf`` file's converted folder."""
    return Path(gguf.folder(model)).expanduser()


@functools.lru_cache(maxsize=8)
def hf_config(folder: str) -> Any:
    """The checkpoint's transformers config, read offline; refuses a family spanmix cannot retrofit
    (not a causal decoder with ``model.layers`` of ``self_attn``), found by building it on the meta
    device (no memory, no weights)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(local(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"base.model: {folder!r}: config.json is not a transformers config: {err}") from None
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except ValueError as err:
        raise ConfigError(f"base.model: {folder!r}: model_type {config.model_type!r} is not a causal decoder "
                          f"transformers can build ({str(err).splitlines()[0]})") from None
    layers = decoder_layers(model)
    if not all(hasattr(block, "self_attn") for block in layers):
        raise ConfigError(f"base.model: {folder!r}: {type(model).__name__}'s layers have no self_attn")
    return config


def n_layers(folder: str) -> int:
    return int(hf_config(folder).num_hidden_layers)


def context(folder: str) -> int:
    """The longest sequence the checkpoint was configured for."""
    return int(getattr(hf_config(folder), "max_position_embeddings", 0) or 0)


def vocab_size(folder: str) -> int:
    return int(hf_config(folder).vocab_size)


def torch_dtype(base: BaseConfig) -> torch.dtype:
    if base.dtype != "auto":
        return DTYPES[base.dtype]
    named = getattr(hf_config(base.model), "dtype", None)
    named = str(named).removeprefix("torch.") if named is not None else "float32"
    return DTYPES.get(named, torch.float32)


def precision(base: BaseConfig) -> str:
    """The precision of the checkpoint's weights, under spanmix's names (``fp32`` or ``bf16``;
    float16 is recorded as ``fp16``)."""
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[torch_dtype(base)]


def autocasts(base: BaseConfig) -> bool:
    """Whether scoring follows ``train.precision`` (zero-shot float32 weights, which bf16 can be
    autocast over); healing, and weights stored in a lower dtype, run in the weights' own dtype."""
    return not base.healed and torch_dtype(base) == torch.float32


def scores_in(base: BaseConfig, setting: str, seq_len: int) -> str:
    """The precision a study scores the checkpoint in, from ``train.precision`` (``setting``).

    Zero-shot scoring of float32 weights follows it as a proxy's training does: ``bf16`` is autocast
    over the float32 weights, and ``auto`` is bf16 where a forward of two ``seq_len`` sequences is
    measured :data:`~spanmix.proxies.resources.BF16_MARGIN` times faster in it here. Healing, and
    weights stored in a lower dtype, run in the weights' own dtype (:func:`precision`)."""
    if not autocasts(base) or setting == "fp32":
        return precision(base)
    return "bf16" if setting == "bf16" else auto_precision(lambda: forward_speedup(base, seq_len))


@functools.lru_cache(maxsize=4)
def forward_speedup(base: BaseConfig, seq_len: int) -> float:
    """How much faster the checkpoint's all-full forward over two ``seq_len`` sequences runs under
    bf16 autocast than in float32 here: best times of 3 alternating rounds (a forward of a real
    checkpoint is long enough that a few rounds settle it), measured once per process. Two, not
    one: autocast casts every weight again each forward, which one sequence does not amortise
    (SmolLM2-135M at T=1024 on an AMX machine: 1.7-1.8x at one sequence, 2.42x at two and 2.44x
    at four, the scoring batch's speed)."""
    model = _zero_shot(base, False, "fp32")
    schedule = Schedule.parse(" ".join(["F"] * n_layers(base.model)))
    idx = torch.randint(vocab_size(base.model), (2, seq_len), generator=torch.Generator().manual_seed(0))

    def seconds(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(idx, schedule)
        return time.perf_counter() - start

    return best_ratio(seconds, rounds=3)


def n_parameters(folder: str) -> int:
    """Numbers stored in the checkpoint's weights, read from the safetensors headers alone."""
    total = 0
    for path in _weights(local(folder)):
        with path.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        total += sum(_product(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return total


def _product(shape: list[int]) -> int:
    out = 1
    for n in shape:
        out *= n
    return out


def activation_bytes(base: BaseConfig, batch_size: int, seq_len: int) -> int:
    """About the fp32 activations one healing step keeps for its backward pass (per token and
    layer ~10 residual-width and 2 MLP-width values, plus three copies of the logits): an
    estimate, as for proxies."""
    c = hf_config(base.model)
    per_token = c.num_hidden_layers * (10 * c.hidden_size + 2 * c.intermediate_size) + 3 * c.vocab_size
    return 4 * batch_size * seq_len * per_token


def memory_needed(base: BaseConfig, batch_size: int, seq_len: int) -> int:
    """About the bytes scoring (or healing) holds: the weights in their dtype, and for healing their
    gradients, AdamW's two fp32 moments and the activations (those of one layer at a time where
    they would fill a quarter of the memory: see :func:`checkpointing`)."""
    params = n_parameters(base.model)
    weights = params * torch.tensor([], dtype=torch_dtype(base)).element_size()
    if not base.healed:
        return weights
    activations = activation_bytes(base, batch_size, seq_len)
    if checkpointing(base, batch_size, seq_len):
        activations //= hf_config(base.model).num_hidden_layers
    return 2 * weights + 8 * params + activations


def checkpointing(base: BaseConfig, batch_size: int, seq_len: int) -> bool:
    """Whether healing recomputes each layer's activations in the backward pass (gradient
    checkpointing) instead of keeping them: where they would take a quarter of the available
    memory, it trades about a third more compute for holding one layer's instead of all."""
    return activation_bytes(base, batch_size, seq_len) > available_memory() // 4


def check_fits(base: BaseConfig, batch_size: int, data: DataConfig, processes: int = 1) -> None:
    need, have = processes * memory_needed(base, batch_size, data.seq_len), available_memory()
    if need > have:
        what = f"healing at train.batch_size={batch_size}" if base.healed else "scoring"
        raise ConfigError(f"base.model {base.model!r}: {what} needs about {need / 2**30:.1f} GiB ({processes} "
                          f"process(es)), more than the {have / 2**30:.1f} GiB available; use base.dtype = 'bfloat16', "
                          "fewer workers, a smaller batch or a smaller checkpoint")
    left = (have - need) // processes
    if base.reuse and not base.healed and (cache := reuse_bytes(base, data)) > left // 2:
        raise ConfigError(f"base.reuse = true keeps every layer's hidden states on the validation sequences: about "
                          f"{cache / 2**30:.1f} GiB, more than half of the {left / 2**30:.1f} GiB left "
                          "after the weights; set base.reuse = false, or fewer data.val_samples or a shorter data.seq_len")


def reuse_bytes(base: BaseConfig, data: DataConfig) -> int:
    """The memory of :class:`~spanmix.proxies.retrofit.PrefixCache` over ``data``'s validation
    sequences: ``SLOTS`` hidden states of every layer for every validation token, in the weights' dtype."""
    c = hf_config(base.model)
    tokens = data.val_samples * len(data.tasks) * data.seq_len
    itemsize = torch.tensor([], dtype=torch_dtype(base)).element_size()
    return PrefixCache.SLOTS * tokens * c.hidden_size * c.num_hidden_layers * itemsize


@functools.lru_cache(maxsize=8)
def reuses(base: BaseConfig, data: DataConfig) -> bool:
    """Whether zero-shot scoring keeps each layer's output (see ``BaseConfig.reuse``): decided
    once per process, so that the memory the cache itself takes does not turn it off midway."""
    if base.healed or base.reuse is False:
        return False
    left = available_memory() - memory_needed(base, 1, data.seq_len)
    return bool(base.reuse) or reuse_bytes(base, data) <= left // 4


@functools.lru_cache(maxsize=8)
def fingerprint(folder: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    """A content hash of the checkpoint's config and weights (``stamp``: names, sizes and
    modification times, so an edited checkpoint is hashed again)."""
    path = Path(folder).expanduser()
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for name, _, _ in stamp:
        with (path / name).open("rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def identity(base: BaseConfig) -> dict[str, Any]:
    """What makes two measurements on a checkpoint interchangeable: the settings and the weights."""
    path = local(base.model).resolve()
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in _weights(path))
    settings = {k: v for k, v in base.to_dict().items() if k != "reuse"}  # reuse gives the same scores
    return {**settings, "model": str(Path(base.model).expanduser().resolve()), "weights": fingerprint(str(path), stamp)}


def shape(base: BaseConfig) -> Shape:
    """The sizes of the checkpoint's cost formulas, from its config: grouped-query heads, gated
    MLPs, and for a mixture of experts its router and the experts each token is sent to."""
    c = hf_config(base.model)
    d, heads = c.hidden_size, c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or d // heads
    experts = getattr(c, "num_local_experts", None) or getattr(c, "num_experts", None) or 0
    moe = set(getattr(c, "moe_layers", None) or range(c.num_hidden_layers)) if experts else set()
    dense = 3 * d * getattr(c, "intermediate_size_mlp", c.intermediate_size)  # gate, up and down projections
    routed = d * experts + (getattr(c, "num_experts_per_tok", 1) + getattr(c, "n_shared_experts", 0)) * 3 * d * c.intermediate_size
    mlp = tuple(routed if i in moe else dense for i in range(c.num_hidden_layers))
    return Shape(d, heads, getattr(c, "num_key_value_heads", None) or heads, head_dim, mlp, c.vocab_size,
                 torch.tensor([], dtype=torch_dtype(base)).element_size())


def is_dense(base: BaseConfig) -> bool:
    c = hf_config(base.model)
    return not (getattr(c, "num_local_experts", None) or getattr(c, "num_experts", None))


@functools.lru_cache(maxsize=64)
def _meta_count(folder: str, schedule: Schedule, seq_len: int) -> dict[str, Any]:
    """fvcore's count by module under ``schedule``, assembled layer by layer: a decoder layer's
    operators depend on its own kind alone, so the model is traced once per kind with that kind
    in every layer (cached), and each layer's modules are taken from its kind's trace; the modules
    that hold the layers are summed again. A layer-wise search of a 30-layer model then costs a
    trace per kind instead of one per schedule (tested equal to tracing the schedule itself)."""
    traced = {layer: _meta_uniform(folder, layer, schedule.n_layers, seq_len) for layer in set(schedule.layers)}
    first = traced[schedule.layers[0]]
    mine = {name: counts for name, counts in first.items() if _layer_of(name) is None}
    for i, layer in enumerate(schedule.layers):
        mine.update({name: counts for name, counts in traced[layer].items() if _layer_of(name) == i})
    for name in [n for n in mine if LAYERS.startswith(n + ".") or n in ("", LAYERS)]:  # what holds every layer
        held = collections.Counter(first[name])
        for i, layer in enumerate(schedule.layers):
            held.update(traced[layer][f"{LAYERS}.{i}"])
            held.subtract(first[f"{LAYERS}.{i}"])
        mine[name] = collections.Counter({op: n for op, n in held.items() if n})
    return mine


LAYERS = "model.model.layers"  # the decoder layers' module, as the retrofitted model names it


def _layer_of(name: str) -> int | None:
    """The decoder layer a module name is in (None: outside every layer)."""
    head, dot, tail = name.partition(LAYERS + ".")
    index = tail.split(".")[0]
    return int(index) if dot and not head and index.isdigit() else None


@functools.lru_cache(maxsize=16)
def _meta_uniform(folder: str, layer: Layer, n_layers: int, seq_len: int) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config(folder)).eval()
        idx = torch.zeros(1, seq_len, dtype=torch.long)
    apply_schedule(model, Schedule((layer,) * n_layers))
    return fvcore_by_module(Retrofitted(model), idx, UNCOUNTED)


def count(base: BaseConfig, schedule: Schedule, seq_len: int) -> CostReport:
    """The checkpoint's cost under ``schedule``: prefill and decode multiply-adds and KV-cache
    bytes (its key-value heads, its dtype). Dense families are counted by fvcore on the meta
    device and carry the closed form beside it; a mixture of experts (whose routing the meta
    device cannot trace) by the closed form alone."""
    analyse = (lambda t: _meta_count(base.model, schedule, t)) if is_dense(base) else None
    return report(shape(base), schedule, seq_len, 1, analyse,
                  ("model.model.layers.{}.self_attn", "model.model.layers.{}.mlp"))


def load(base: BaseConfig) -> torch.nn.Module:
    """The checkpoint's model in ``base.dtype``, offline, in evaluation mode."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the load report lists every tied or unused key; scores say what matters
    hf_logging.disable_progress_bar()  # a bar per schedule scored, inside the study's own bar
    model = AutoModelForCausalLM.from_pretrained(local(base.model), local_files_only=True,
                                                 dtype=torch_dtype(base))
    return model.eval()


@functools.lru_cache(maxsize=1)
def _loaded(base: BaseConfig) -> torch.nn.Module:
    """One copy per process for zero-shot scoring: applying a schedule only sets attributes, and
    scoring changes no weight."""
    return load(base)


@functools.lru_cache(maxsize=4)
def _zero_shot(base: BaseConfig, reuse: bool, autocast: str) -> Retrofitted:
    """The loaded checkpoint as scoring calls it, keeping each layer's output where ``reuse`` (one
    cache per precision: a layer's output under bf16 autocast is not its float32 output)."""
    return Retrofitted(_loaded(base), reuse=reuse)


class HealLM(ScheduleLM):
    """Fine-tuning a checkpoint under one schedule, or under the schedule ``draw`` gives each step
    (shared healing, as a supernet trains): all its weights, or its attention projections."""

    def __init__(self, base: BaseConfig, schedule: Schedule, data: DataConfig, train: TrainConfig,
                 draw: Callable[[int], Schedule] | None = None, teacher: Schedule | None = None) -> None:
        super().__init__(healing_data(base, data), train, draw, teacher)
        model = load(base)
        self.model = Retrofitted(apply_schedule(model, schedule))
        if checkpointing(base, train.batch_size, data.seq_len):
            model.gradient_checkpointing_enable()
        if base.heal == "attention":
            for name, p in self.model.named_parameters():
                p.requires_grad_(".self_attn." in name)
        self.model.model.train()


# config keys of a Llama-like family that the family it converts to reads otherwise or not at all
_NOT_CARRIED = ("model_type", "architectures", "attention_bias", "mlp_bias", "pretraining_tp", "transformers_version")
# what the converted model adds to the source's weights, set to zero: it then computes the same function
_ADDED = ("q_proj.bias", "k_proj.bias", "v_proj.bias")


def check_convertible(config: dict[str, Any], model_type: str) -> None:
    """Refuse, before anything is written, a checkpoint whose weights ``model_type`` cannot carry:
    biases on the output projection or the MLP, which a Qwen2 model has no place for."""
    carried = [k for k in ("attention_bias", "mlp_bias") if config.get(k)]
    if carried:
        raise ConfigError(f"--checkpoint: the checkpoint sets {', '.join(carried)}, which a {model_type} model cannot "
                          "carry; run it under spanmix instead (the apply_schedule line)")


def convert(model: torch.nn.Module, fragment: dict[str, Any]) -> torch.nn.Module:
    """``model`` (a Llama or Mistral) as the family ``fragment`` names (Qwen2), with the
    fragment's config keys: the same weights, and zero biases where the new family has biases the
    old one lacks, so it computes the same function (tested: equal logits)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    keys = {k: v for k, v in model.config.to_dict().items() if k not in _NOT_CARRIED}
    config = AutoConfig.for_model(fragment["model_type"], **(keys | {k: v for k, v in fragment.items() if k != "model_type"}))
    target = AutoModelForCausalLM.from_config(config).to(next(model.parameters()).dtype)
    missing, unexpected = target.load_state_dict(model.state_dict(), strict=False)
    added = [name for name in missing if name.endswith(_ADDED)]
    if unexpected or len(added) < len(missing):
        raise ConfigError(f"--checkpoint: {type(model).__name__}'s weights do not map onto {type(target).__name__} "
                          f"(unexpected {unexpected[:3]}, missing {sorted(set(missing) - set(added))[:3]})")
    with torch.no_grad():
        for name in added:
            target.get_parameter(name).zero_()
    return target.eval()


def check_layers(base: BaseConfig, schedule: Schedule) -> None:
    if schedule.n_layers != n_layers(base.model):
        raise ConfigError(f"the schedule {schedule.text!r} has {schedule.n_layers} layers and the checkpoint "
                          f"{n_layers(base.model)} (num_hidden_layers); they must match")


def check_data(base: BaseConfig, data: DataConfig) -> None:
    """Sequences the checkpoint cannot take: longer than its context, or with ids beyond its vocabulary."""
    limit = context(base.model)
    if limit and data.seq_len > limit:
        raise ConfigError(f"data.seq_len={data.seq_len} is longer than base.model's max_position_embeddings={limit}")
    if data.vocab_needed() > vocab_size(base.model):
        raise ConfigError(f"data: token ids up to {data.vocab_needed() - 1} do not fit base.model's vocabulary of "
                          f"{vocab_size(base.model)}; give data.tokenizer the checkpoint's own tokenizer.json")


def healing_data(base: BaseConfig, data: DataConfig) -> DataConfig:
    """The data healing trains on: ``data`` with ``base.heal_tasks`` in place of its tasks (and
    without the user's files where their task is not among them), else ``data`` itself."""
    if not base.heal_tasks:
        return data
    try:
        return replace(data, tasks=base.heal_tasks, files=data.files if data.files_task in base.heal_tasks else ())
    except ConfigError as e:
        raise ConfigError(f"base.heal_tasks {list(base.heal_tasks)}: {e}") from None


def check(base: BaseConfig, schedule: Schedule, data: DataConfig) -> Schedule:
    """What would fail on the checkpoint, refused before any weight is read."""
    check_layers(base, schedule)
    check_data(base, data)
    return schedule.canonical(data.seq_len)


def heal(base: BaseConfig, schedule: Schedule, data: DataConfig, train: TrainConfig, seed: int = 0, stream: int = 0,
         extra: tuple[L.Callback, ...] = (), until: int | None = None, checkpoint_dir: str | Path | None = None,
         start_from: str | Path | None = None) -> tuple[HealLM, Fitted]:
    """The checkpoint fine-tuned under ``schedule`` for ``base.heal_steps`` steps, with seed
    ``seed`` and batch stream ``stream`` (``train`` gives batch size, learning rate and warm-up).
    ``until``, ``checkpoint_dir`` and ``start_from`` stop it at a step, save it there and continue
    it, as :func:`spanmix.proxies.train.fit` does: healing to ``a`` and on to ``b`` is healing to ``b``.
    Deterministic on the CPU: the same arguments give the same weights."""
    train = replace(train, steps=base.heal_steps, seed=seed, precision="fp32")  # the weights' own dtype, no autocast
    L.seed_everything(seed, workers=True, verbose=False)
    module = HealLM(base, schedule, data, train)
    stop = until or train.steps
    return module, fit(module, train, checkpoint_dir, checkpoint_every=stop, name=schedule.hash, stream=stream,
                       extra=extra, until=stop, start_from=start_from)


def score(base: BaseConfig, schedule: Schedule, data: DataConfig, train: TrainConfig, seed: int = 0, stream: int = 0,
          curve_at: tuple[int, ...] = (), until: int | None = None, checkpoint_dir: str | Path | None = None,
          start_from: str | Path | None = None) -> ProxyResult:
    """The checkpoint under ``schedule``, healed for ``base.heal_steps`` (seed ``seed``: batch
    order on stream ``stream``; ``until`` and the checkpoints as :func:`heal` takes them) or as it
    is, scored on ``data``'s validation sequences as a proxy is. Deterministic on the CPU."""
    schedule = check(base, schedule, data)
    steps, seconds, curve, tokens, start = 0, 0.0, {}, 0, 0
    # train.precision as the study pinned it (scores_in); unresolved, the weights' own
    autocast = "bf16" if train.precision == "bf16" and autocasts(base) else "fp32"
    batches = val_batches(data, train.batch_size)
    if base.healed:
        stop = until or base.heal_steps
        curves = Curve(tuple(s for s in curve_at if 0 < s < stop), schedule, data, train.batch_size, "fp32")
        module, fitted = heal(base, schedule, data, train, seed, stream, (curves,) if curves.steps else (), stop,
                              checkpoint_dir, start_from)
        model, steps, seconds, curve, start = module.model, fitted.steps, fitted.seconds, curves.scores, fitted.start_step
        tokens = (steps - start) * train.batch_size * data.seq_len
    else:
        model = _zero_shot(base, reuses(base, data), autocast)
    start = time.perf_counter()
    scorer = score_batches(model, schedule, data, batches, autocast)
    scores = scorer.scores()
    scored = time.perf_counter() - start
    return ProxyResult(
        schedule=schedule.text, scores=scores, cost=count(base, schedule, data.seq_len).to_dict(), tokens_seen=tokens,
        steps=steps, train_seconds=seconds if base.healed else scored,
        tokens_per_second=(tokens / seconds if seconds else sum(b["x"].numel() for b in batches) / scored),
        seed=seed, precision=autocast if autocast == "bf16" else precision(base), curve=curve, start_step=start,
        config={"base": base.to_dict(), "data": data.to_dict(), "train": train.to_dict()},
        # healed weights carry training noise too, which resampling the sequences would not show
        resamples={} if base.healed else scorer.resamples(),
    )
