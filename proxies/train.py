"""Training and scoring a proxy with Lightning: the measurement that tells span mixes apart.

:func:`train_and_score` is the one call the search makes:
``(schedule, proxy config, data config, train config, seed) -> ProxyResult``.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from proxies.cost import count
from proxies.data import CORPORA, IGNORE, DataConfig, ProxyDataModule
from proxies.model import ConfigError, ProxyConfig, build_model, from_section, require_whole
from space import Schedule

PRECISIONS = {"bf16": "bf16-mixed", "fp32": "32-true"}


@functools.cache
def bf16_speedup() -> float:
    """How much faster a bf16 matmul of proxy-like shape runs than fp32 on this CPU, measured.

    CPUs with AVX-512 BF16 or AMX run it several times faster; AVX2-only CPUs emulate it and
    run it tens of times slower, so ``precision="auto"`` asks the machine rather than guessing.
    """
    if torch.cuda.is_available():
        return float("inf")
    timings = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(512, 256, dtype=dtype), torch.randn(256, 256, dtype=dtype)
        a @ b
        start = time.perf_counter()
        for _ in range(3):
            a @ b
        timings[dtype] = time.perf_counter() - start
    return timings[torch.float32] / timings[torch.bfloat16]


def resolve_precision(precision: str) -> str:
    """``auto`` becomes ``bf16`` where bf16 matmuls measure at least 1.2x faster, else ``fp32``."""
    if precision != "auto":
        return precision
    return "bf16" if bf16_speedup() >= 1.2 else "fp32"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the schedule's result is a failure, not a number."""


@dataclass(frozen=True)
class TrainConfig:
    """How long and how a proxy trains.

    Attributes:
        steps: optimizer steps (the budget; tokens = steps * batch_size * seq_len).
        batch_size: sequences per step.
        lr: peak AdamW learning rate, reached after ``warmup`` steps, then cosine decay to 10%.
        warmup: linear warm-up steps.
        weight_decay: AdamW decay on matrices (not on norms).
        grad_clip: gradient-norm clip.
        precision: ``auto`` (bf16 where this machine runs it faster, measured once), ``bf16``
            (autocast) or ``fp32``.
        max_seconds: wall-clock limit for training (None: none); a run cut short reports the
            tokens it saw.
        seed: model initialisation and data-order seed.
        progress: show Lightning's progress bar.
        log_dir: write Lightning CSV logs under this folder (None: no logs).
    """

    steps: int = 300
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 30
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    precision: str = "auto"
    max_seconds: float | None = None
    seed: int = 0
    progress: bool = False
    log_dir: str | None = None

    def __post_init__(self) -> None:
        require_whole(self, "train", ("steps", "batch_size"))
        require_whole(self, "train", ("warmup", "seed"), minimum=0)
        for name in ("lr", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"train.{name} must be > 0 (got {getattr(self, name)!r})")
        if not self.weight_decay >= 0:
            raise ConfigError(f"train.weight_decay must be >= 0 (got {self.weight_decay!r})")
        if self.precision not in ("auto", *PRECISIONS):
            raise ConfigError(f"train.precision {self.precision!r} is unknown; allowed: auto, {', '.join(PRECISIONS)}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ConfigError(f"train.max_seconds must be > 0 or None (got {self.max_seconds!r})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return from_section(cls, data, "train")


def bucket_edges(seq_len: int) -> list[int]:
    """Position / distance buckets: [0, T/8), [T/8, T/4), [T/4, T/2), [T/2, T]."""
    return [0, seq_len // 8, seq_len // 4, seq_len // 2, seq_len + 1]


def bucket_names(seq_len: int) -> list[str]:
    edges = bucket_edges(seq_len)
    return [f"{lo}-{hi - 1}" for lo, hi in zip(edges, edges[1:])]


class Scorer:
    """Accumulates validation loss and accuracy per task and bucket, then reduces to scores.

    Text tasks are bucketed by position (later positions have more context than a local window
    gives); recall tasks by the distance back to the fact, or the number of hops for ``multihop``.
    """

    def __init__(self, data: DataConfig) -> None:
        self.data = data
        self.sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])

    def update(self, logits: Tensor, batch: dict[str, Tensor]) -> None:
        y, dist = batch["y"], batch["dist"]
        scored = y != IGNORE
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="none")
        loss = loss.view_as(y)
        correct = (logits.argmax(-1) == y) & scored
        edges = torch.tensor(bucket_edges(self.data.seq_len))
        names = bucket_names(self.data.seq_len)
        positions = torch.arange(y.shape[1]).expand_as(y)
        for task_id, task in enumerate(self.data.tasks):
            rows = batch["task"] == task_id
            mask = scored & rows[:, None]
            if not mask.any():
                continue
            self._add(task, "all", loss[mask], correct[mask])
            if task == "multihop":
                keys = [f"{int(h)}hop" for h in dist[mask]]
            else:
                by = positions if task in CORPORA else dist
                keys = [names[i] for i in (torch.bucketize(by[mask], edges, right=True) - 1).tolist()]
            for key in sorted(set(keys)):
                sel = torch.tensor([k == key for k in keys])
                self._add(task, key, loss[mask][sel], correct[mask][sel])

    def _add(self, task: str, key: str, loss: Tensor, correct: Tensor) -> None:
        s = self.sums[(task, key)]
        s[0] += float(loss.sum())
        s[1] += float(correct.sum())
        s[2] += loss.numel()

    def scores(self) -> dict[str, float]:
        """``loss`` (mean of the tasks' losses), ``ppl``, ``long_loss`` (text: positions past T/2;
        recall tasks: the answers, all long-range), ``recall`` (mean answer accuracy over the recall
        tasks), and per task ``<task>/loss``, ``<task>/acc``, ``<task>/loss@<bucket>``, ``<task>/acc@<bucket>``."""
        out: dict[str, float] = {}
        for (task, key), (loss, correct, n) in sorted(self.sums.items()):
            suffix = "" if key == "all" else f"@{key}"
            out[f"{task}/loss{suffix}"] = loss / n
            if task not in CORPORA:
                out[f"{task}/acc{suffix}"] = correct / n
        tasks = self.data.tasks
        out["loss"] = sum(out[f"{t}/loss"] for t in tasks) / len(tasks)
        out["ppl"] = math.exp(min(out["loss"], 50.0))
        last = bucket_names(self.data.seq_len)[-1]
        long = [out.get(f"{t}/loss@{last}", out[f"{t}/loss"]) if t in CORPORA else out[f"{t}/loss"] for t in tasks]
        out["long_loss"] = sum(long) / len(long)
        recall = [out[f"{t}/acc"] for t in tasks if t not in CORPORA]
        if recall:
            out["recall"] = sum(recall) / len(recall)
        return out


class ProxyLM(L.LightningModule):
    """Next-token training of a proxy; validation fills a :class:`Scorer`."""

    def __init__(self, proxy: ProxyConfig, schedule: Schedule, data: DataConfig, train: TrainConfig) -> None:
        super().__init__()
        self.proxy_cfg, self.data_cfg, self.train_cfg = proxy, data, train
        self.model = build_model(proxy, schedule)
        self.scorer = Scorer(data)
        self.scores: dict[str, float] = {}

    def forward(self, idx: Tensor) -> Tensor:
        return self.model(idx)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits = self(batch["x"])
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch["y"].flatten(), ignore_index=IGNORE)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss is {loss.item()} at step {self.global_step}")
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.scorer = Scorer(self.data_cfg)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.scorer.update(self(batch["x"]), batch)

    def on_validation_epoch_end(self) -> None:
        self.scores = self.scorer.scores()
        for name in ("loss", "long_loss", "recall"):
            if name in self.scores:
                self.log(f"val_{name}", self.scores[name])

    def configure_optimizers(self) -> Any:
        cfg = self.train_cfg
        decay = [p for p in self.parameters() if p.dim() >= 2]
        other = [p for p in self.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}],
            lr=cfg.lr,
            betas=(0.9, 0.95),
        )

        def schedule(step: int) -> float:
            if step < cfg.warmup:
                return (step + 1) / (cfg.warmup + 1)
            progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


@dataclass
class ProxyResult:
    """What one proxy run measured."""

    schedule: str
    scores: dict[str, float]
    cost: dict[str, Any]
    tokens_seen: int
    steps: int
    train_seconds: float
    tokens_per_second: float
    seed: int
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check(schedule: Schedule, proxy: ProxyConfig, data: DataConfig) -> Schedule:
    """Every check that can fail, done before any work; returns the schedule in canonical form."""
    if data.seq_len > proxy.context:
        raise ConfigError(f"data.seq_len={data.seq_len} is longer than proxy.context={proxy.context}")
    for i, layer in enumerate(schedule.layers):
        if layer.window is not None and layer.window > data.seq_len:
            raise ConfigError(
                f"schedule layer {i}: window {layer.window} is longer than data.seq_len={data.seq_len}; "
                f"allowed: 1..{data.seq_len}"
            )
    if proxy.vocab_size < 256:
        raise ConfigError(f"proxy.vocab_size={proxy.vocab_size} is too small for byte tokens; needs >= 256")
    return schedule.canonical(data.seq_len)


def train_and_score(
    schedule: Schedule | str,
    proxy: ProxyConfig,
    data: DataConfig,
    train: TrainConfig,
    seed: int | None = None,
) -> ProxyResult:
    """Train a proxy with ``schedule`` for ``train.steps`` steps and score it on validation data.

    Deterministic on the CPU: the same arguments give the same numbers.
    """
    if isinstance(schedule, str):
        schedule = Schedule.parse(schedule)
    if seed is not None:
        train = replace(train, seed=seed)
    schedule = check(schedule, proxy, data)
    train = replace(train, precision=resolve_precision(train.precision))
    L.seed_everything(train.seed, workers=True, verbose=False)
    module = ProxyLM(proxy, schedule, data, train)
    datamodule = ProxyDataModule(data, train.batch_size, train.steps * train.batch_size)
    logger: Any = False
    if train.log_dir:
        logger = L.pytorch.loggers.CSVLogger(train.log_dir, name=schedule.hash)
    trainer = L.Trainer(
        max_steps=train.steps,
        max_epochs=1,
        max_time={"seconds": train.max_seconds} if train.max_seconds else None,
        precision=PRECISIONS[train.precision],  # type: ignore[arg-type]
        gradient_clip_val=train.grad_clip,
        accelerator="auto",
        devices=1,
        logger=logger,
        log_every_n_steps=max(1, min(50, train.steps // 10)),
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=train.progress,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        # CPU runs are bit-for-bit repeatable; CUDA kernels (FlexAttention's backward) may not be
        deterministic=True if not torch.cuda.is_available() else "warn",
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning 2.6 on torch 2.13
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        seconds = time.perf_counter() - start
        if not trainer.interrupted and trainer.global_step == 0:
            raise TrainingDiverged("training made no step")
        val = L.Trainer(
            accelerator="auto", devices=1, precision=PRECISIONS[train.precision],  # type: ignore[arg-type]
            logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        )
        val.validate(module, datamodule=datamodule, verbose=False)
    if not all(math.isfinite(v) for v in module.scores.values()):
        raise TrainingDiverged(f"validation produced non-finite scores {module.scores}")
    tokens = trainer.global_step * train.batch_size * data.seq_len
    return ProxyResult(
        schedule=schedule.text,
        scores=module.scores,
        cost=count(proxy, schedule, data.seq_len).to_dict(),
        tokens_seen=tokens,
        steps=trainer.global_step,
        train_seconds=seconds,
        tokens_per_second=tokens / seconds,
        seed=train.seed,
        config={"proxy": proxy.to_dict(), "data": data.to_dict(), "train": train.to_dict()},
    )
