"""The model under search: what a study's schedules run on, behind one interface.

A study searches the layers of either a proxy it trains from scratch (:class:`Proxy`) or a
pretrained checkpoint it scores as it is or heals (:class:`Checkpoint`). Everything that differs
between the two is a method here: what a schedule costs, whether it fits this machine, which
precision it runs in, how it is measured, the module shared weights train, and what is exported.
The search and the studies ask the subject and never which kind it is; another kind (a checkpoint
scored on another engine, say) is one more class with these methods.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import Tensor

from spanmix.proxies import checkpoint, gguf
from spanmix.proxies.checkpoint import BaseConfig
from spanmix.proxies.cost import CostReport, measure_latency
from spanmix.proxies.cost import count as count_proxy
from spanmix.proxies.data import DataConfig
from spanmix.proxies.files import vocab_size
from spanmix.proxies.model import ProxyConfig, build_model
from spanmix.proxies.resources import (
    check_fits,
    check_vocab,
    resolve_precision,
    why_precision,
)
from spanmix.proxies.retrofit import Retrofitted
from spanmix.proxies.train import (
    ProxyLM,
    ProxyResult,
    ScheduleLM,
    TrainConfig,
    train_and_score,
)
from spanmix.space import ConfigError, Schedule


class Subject(Protocol):
    """The model whose layers a study searches.

    Attributes:
        pretrained: whether it has weights worth scoring as they are (a zero-shot measurement).
        trains: whether measuring a schedule trains anything (and so has seeds to vary).
        header: what the schedules run on, for report headers (empty for proxies).
        budget_help: what a larger measurement budget means for it, for calibration's advice.
    """

    pretrained: bool
    trains: bool
    header: str
    budget_help: str

    def defaults(self, sections: dict[str, Any]) -> dict[str, Any]:
        """``sections`` (a configuration's TOML tables) with the defaults it takes from the user's
        files filled in; a stored study has them written out and is read without the files."""

    def check_study(self, seeds: int, cost: str, seq_len: int) -> None:
        """Refuse study settings this subject cannot measure (from the configuration alone)."""

    def check(self, n_layers: int, data: DataConfig) -> None:
        """Refuse, reading the user's files, what would make every measurement fail: a depth or
        data the model cannot take."""

    def check_fits(self, data: DataConfig, train: TrainConfig, n_layers: int, processes: int = 1) -> None:
        """Refuse a measurement that would not fit in this machine's available memory."""

    def key(self, data: DataConfig, train: TrainConfig) -> dict[str, Any]:
        """What makes two measurements of one schedule on it interchangeable."""

    def count(self, schedule: Schedule, seq_len: int) -> CostReport:
        """The schedule's counted cost at ``seq_len``."""

    def latency(self, schedule: Schedule, seq_len: int) -> float:
        """Measured forward+backward milliseconds of the schedule here."""

    def precision(self, setting: str, data: DataConfig, batch_size: int, local: tuple[str, ...]) -> str:
        """The precision a study of it is pinned to (``train.precision`` is ``setting``)."""

    def why_precision(self, setting: str, resolved: str) -> str:
        """Why the study runs in ``resolved``, in a few words for the log."""

    def autocast(self, pinned: str) -> str:
        """The ``train.precision`` a training under the pinned precision runs with."""

    def measure(self, schedule: Schedule, data: DataConfig, train: TrainConfig, seed: int, stream: int = 0,
                curve_at: tuple[int, ...] = (), until: int | None = None, checkpoint_dir: str | Path | None = None,
                start_from: str | Path | None = None, init: dict[str, Tensor] | None = None) -> ProxyResult:
        """Train (or heal, or not) and score ``schedule`` with ``seed`` on batch stream ``stream``;
        ``until``, ``checkpoint_dir`` and ``start_from`` stop it at a step, save it there and
        continue it; ``init`` starts from shared weights. Deterministic on the CPU."""

    def shared_module(self, schedule: Schedule, data: DataConfig, train: TrainConfig,
                      draw: Callable[[int], Schedule], teacher: Schedule | None) -> ScheduleLM:
        """The module shared weights train under the schedule ``draw`` gives each step."""

    def scoring_model(self, schedule: Schedule) -> torch.nn.Module:
        """A model to load shared weights into and score under any schedule of the space, called
        ``model(ids, schedule, keep)``: the logits at the positions ``keep`` (None: every one)."""

    def python_line(self, schedule: Schedule) -> str:
        """The line that builds the schedule's module."""

    @property
    def model_type(self) -> str | None:
        """The Hugging Face ``model_type`` its exported config keeps (None: any family)."""

    def save(self, schedule: Schedule, data: DataConfig, train: TrainConfig, fragment: dict[str, Any],
             out: Path) -> Path:
        """Write the model under ``schedule`` as a ``from_pretrained`` folder whose config carries
        ``fragment``; returns its config file."""


class Proxy:
    """A small decoder trained from scratch under each schedule (:mod:`spanmix.proxies.model`)."""

    pretrained = False
    trains = True
    header = ""
    budget_help = "more steps (train.steps), a larger proxy (proxy.d_model)"
    model_type = None

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config

    def defaults(self, sections: dict[str, Any]) -> dict[str, Any]:
        """The proxy's vocabulary follows the user's tokenizer."""
        data, proxy = sections.get("data"), sections.get("proxy", {})
        if not isinstance(data, dict) or not isinstance(data.get("tokenizer"), str) or not isinstance(proxy, dict):
            return sections  # no tokenizer, or a section of the wrong shape that validation reports
        vocab = max(ProxyConfig.from_dict(proxy).vocab_size, vocab_size(data["tokenizer"]))
        return {**sections, "proxy": {**proxy, "vocab_size": vocab}}

    def check_study(self, seeds: int, cost: str, seq_len: int) -> None:
        if seq_len > self.config.context:
            raise ConfigError(f"data.seq_len={seq_len} is longer than proxy.context={self.config.context}")

    def check(self, n_layers: int, data: DataConfig) -> None:
        check_vocab(self.config, data)

    def check_fits(self, data: DataConfig, train: TrainConfig, n_layers: int, processes: int = 1) -> None:
        check_fits(self.config, data, train, n_layers, processes)

    def key(self, data: DataConfig, train: TrainConfig) -> dict[str, Any]:
        return {"proxy": self.config.to_dict(), "data": data.to_dict(), "train": train.to_dict()}

    def count(self, schedule: Schedule, seq_len: int) -> CostReport:
        return count_proxy(self.config, schedule, seq_len)

    def latency(self, schedule: Schedule, seq_len: int) -> float:
        return measure_latency(self.config, schedule, seq_len)

    def precision(self, setting: str, data: DataConfig, batch_size: int, local: tuple[str, ...]) -> str:
        return resolve_precision(setting, self.config, data.seq_len, batch_size, local)

    def why_precision(self, setting: str, resolved: str) -> str:
        return f"trains in {resolved} ({why_precision(setting, resolved)})"

    def autocast(self, pinned: str) -> str:
        return pinned

    def measure(self, schedule: Schedule, data: DataConfig, train: TrainConfig, seed: int, stream: int = 0,
                curve_at: tuple[int, ...] = (), until: int | None = None, checkpoint_dir: str | Path | None = None,
                start_from: str | Path | None = None, init: dict[str, Tensor] | None = None) -> ProxyResult:
        return train_and_score(schedule, self.config, data, train, seed=seed, init=init, stream=stream,
                               curve_at=curve_at, until=until, checkpoint_dir=checkpoint_dir, start_from=start_from)

    def shared_module(self, schedule: Schedule, data: DataConfig, train: TrainConfig,
                      draw: Callable[[int], Schedule], teacher: Schedule | None) -> ScheduleLM:
        return ProxyLM(self.config, schedule, data, train, draw=draw, teacher=teacher)

    def scoring_model(self, schedule: Schedule) -> torch.nn.Module:
        return build_model(self.config, schedule)

    def python_line(self, schedule: Schedule) -> str:
        return ("from spanmix.proxies import ProxyConfig, build_model; "
                f"model = build_model(ProxyConfig(**{json.dumps(self.config.to_dict())}), {schedule.text!r})")

    def save(self, schedule: Schedule, data: DataConfig, train: TrainConfig, fragment: dict[str, Any],
             out: Path) -> Path:
        raise ConfigError("--checkpoint exports a checkpoint study ([base] model); this study trained proxies, "
                          "whose weights are not kept")


class Checkpoint:
    """A pretrained Hugging Face checkpoint, scored zero-shot or healed under each schedule
    (:mod:`spanmix.proxies.checkpoint`). It runs in its weights' own dtype, without autocast."""

    pretrained = True
    budget_help = "more healing steps (base.heal_steps)"

    def __init__(self, base: BaseConfig) -> None:
        self.base = base

    @property
    def trains(self) -> bool:
        return self.base.healed

    @property
    def header(self) -> str:
        how = f"healed {self.base.heal_steps} steps ({self.base.heal} weights)" if self.base.healed else "zero-shot"
        return f" on checkpoint {self.base.model}, {how}"

    def defaults(self, sections: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint's depth, and its own tokenizer (every task is then written in its tokens)."""
        checkpoint.require_file(self.base.model)
        space, data = sections.get("space", {}), sections.get("data", {})
        if isinstance(space, dict) and "n_layers" not in space:
            sections = {**sections, "space": {**space, "n_layers": checkpoint.n_layers(self.base.model)}}
        own = checkpoint.local(self.base.model) / "tokenizer.json"
        if isinstance(data, dict) and data.get("tokenizer") is None and own.is_file():
            sections = {**sections, "data": {**data, "tokenizer": str(own)}}
        return sections

    def check_study(self, seeds: int, cost: str, seq_len: int) -> None:
        if seeds > 1 and not self.base.healed:
            raise ConfigError(f"study.seeds={seeds} with base.heal_steps=0: zero-shot scoring has no seed to vary "
                              "(every seed gives the same numbers); use seeds = 1, or heal_steps > 0")
        if cost == "latency":
            raise ConfigError("study.cost 'latency' is measured on proxies only; allowed with base.model: flops, "
                              "prefill_flops, decode_flops, attention_flops, kv_cache")

    def check(self, n_layers: int, data: DataConfig) -> None:
        checkpoint.require_file(self.base.model)
        layers = checkpoint.n_layers(self.base.model)
        if n_layers != layers:
            raise ConfigError(f"space.n_layers={n_layers} but base.model {self.base.model!r} has {layers} layers "
                              "(num_hidden_layers); leave space.n_layers out to take them")
        checkpoint.check_data(self.base, data)
        checkpoint.healing_data(self.base, data)  # refuses heal_tasks the data cannot take; its length and tokens are data's

    def check_fits(self, data: DataConfig, train: TrainConfig, n_layers: int, processes: int = 1) -> None:
        checkpoint.check_fits(self.base, train.batch_size, data, processes)

    def key(self, data: DataConfig, train: TrainConfig) -> dict[str, Any]:
        healing = {"train": train.to_dict()} if self.base.healed else {}
        return {"base": checkpoint.identity(self.base), "data": data.to_dict(), **healing}

    def count(self, schedule: Schedule, seq_len: int) -> CostReport:
        return checkpoint.count(self.base, schedule, seq_len)

    def latency(self, schedule: Schedule, seq_len: int) -> float:
        raise ConfigError("study.cost 'latency' is measured on proxies only")

    def precision(self, setting: str, data: DataConfig, batch_size: int, local: tuple[str, ...]) -> str:
        return checkpoint.scores_in(self.base, setting, data.seq_len)

    def why_precision(self, setting: str, resolved: str) -> str:
        if not checkpoint.autocasts(self.base):
            why = "healing runs" if self.base.healed else "scoring runs"
            return f"scores {self.base.model} in {resolved} ({why} in the weights' own dtype, base.dtype={self.base.dtype})"
        return f"scores {self.base.model} in {resolved} ({why_precision(setting, resolved, 'a forward')})"

    def autocast(self, pinned: str) -> str:
        return "fp32"  # the weights' own dtype, with no autocast over it

    def measure(self, schedule: Schedule, data: DataConfig, train: TrainConfig, seed: int, stream: int = 0,
                curve_at: tuple[int, ...] = (), until: int | None = None, checkpoint_dir: str | Path | None = None,
                start_from: str | Path | None = None, init: dict[str, Tensor] | None = None) -> ProxyResult:
        if init is not None:  # supernet.finetune_steps is refused on checkpoints before any work
            raise ConfigError("a checkpoint heals from its own weights; shared weights are scored as they are")
        return checkpoint.score(self.base, schedule, data, train, seed=seed, stream=stream, curve_at=curve_at,
                                until=until, checkpoint_dir=checkpoint_dir, start_from=start_from)

    def shared_module(self, schedule: Schedule, data: DataConfig, train: TrainConfig,
                      draw: Callable[[int], Schedule], teacher: Schedule | None) -> ScheduleLM:
        return checkpoint.HealLM(self.base, schedule, data, train, draw=draw, teacher=teacher)

    def scoring_model(self, schedule: Schedule) -> torch.nn.Module:
        return Retrofitted(checkpoint.load(self.base))

    def python_line(self, schedule: Schedule) -> str:
        path = Path(self.base.model)
        # transformers reads a GGUF file by its folder and name (and dequantizes it)
        source = f"{str(path.parent)!r}, gguf_file={path.name!r}" if gguf.is_gguf(self.base.model) else repr(self.base.model)
        return ("from transformers import AutoModelForCausalLM; from spanmix.proxies.retrofit import apply_schedule; "
                f"model = apply_schedule(AutoModelForCausalLM.from_pretrained({source}), {schedule.text!r})")

    @property
    def model_type(self) -> str | None:
        return checkpoint.hf_config(self.base.model).model_type

    def save(self, schedule: Schedule, data: DataConfig, train: TrainConfig, fragment: dict[str, Any],
             out: Path) -> Path:
        """The checkpoint's config with ``fragment``'s keys, and every other file of it linked, not
        copied; when the study healed, the weights healed under the schedule (seed
        ``train.seed``, recomputed: healing is deterministic on the CPU) saved instead. A
        ``fragment`` of another family (Qwen2 for a Llama) converts the weights to it (see
        :func:`~spanmix.proxies.checkpoint.convert`)."""
        source = checkpoint.local(self.base.model).resolve()
        own = json.loads((source / "config.json").read_text())
        converted = fragment["model_type"] != own.get("model_type")
        if converted:
            checkpoint.check_convertible(own, fragment["model_type"])
        out.mkdir(parents=True, exist_ok=True)
        if self.base.healed or converted:
            model = checkpoint.heal(self.base, schedule, data, train, train.seed)[0].model.model if self.base.healed \
                else checkpoint.load(self.base)
            if converted:
                model = checkpoint.convert(model, fragment)
            model.save_pretrained(out)
        written = {p.name for p in out.iterdir()}
        for path in sorted(source.iterdir()):
            weights = path.name.endswith((".safetensors", ".safetensors.index.json")) and bool(written)
            if path.is_file() and path.name != "config.json" and path.name not in written and not weights:
                (out / path.name).symlink_to(path)
        if not converted:  # a converted model's config is the new family's, written with its weights
            (out / "config.json").write_text(json.dumps(own | {k: v for k, v in fragment.items() if k != "model_type"},
                                                        indent=2) + "\n")
        return out / "config.json"


def subject_of(proxy: ProxyConfig, base: BaseConfig) -> Subject:
    """The checkpoint ``[base] model`` names, or else the proxy ``[proxy]`` describes."""
    return Checkpoint(base) if base.model is not None else Proxy(proxy)
