"""Training and scoring a proxy with Lightning: the measurement that tells span mixes apart.

:func:`train_and_score` is the one call the search makes:
``(schedule, proxy config, data config, train config, seed) -> ProxyResult``.
"""

from __future__ import annotations

import functools
import math
import os
import time
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from proxies.cost import count, measure_latency
from proxies.data import IGNORE, DataConfig, ProxyDataModule, TaskData
from proxies.model import ProxyConfig, ProxyGPT, build_model
from space import ConfigError, Schedule, from_section, require_positive, require_whole

PRECISIONS = {"bf16": "bf16-mixed", "fp32": "32-true"}


@functools.cache
def bf16_speedup(proxy: ProxyConfig, seq_len: int) -> float:
    """How much faster a training step of this proxy runs in bf16 than in fp32 here, measured.

    A bare matmul does not answer it. CPUs with AVX-512 BF16 or AMX run bf16 matmuls 2-3x faster,
    AVX2-only CPUs emulate them about 100x slower, and on the AMX machine the fused attention
    kernels run slower in bf16 at small head sizes: a d=64, T=1024 proxy with local layers trained
    at 8.2k tokens/s in bf16 against 13.7k in fp32 while its matmuls ran 2x faster. So this times a
    forward and backward of the proxy itself, with one full and one sliding layer so both kernels
    count.
    """
    if torch.cuda.is_available():
        return float("inf")
    schedule = Schedule.parse(f"F S{max(2, seq_len // 8)}") if seq_len > 2 else Schedule.parse("F F")
    fp32, bf16 = (measure_latency(proxy, schedule, seq_len, reps=2, dtype=d) for d in (torch.float32, torch.bfloat16))
    return fp32 / bf16


def resolve_precision(precision: str, proxy: ProxyConfig, seq_len: int) -> str:
    """``auto`` becomes ``bf16`` where this proxy trains at least 1.2x faster in bf16, else ``fp32``."""
    if precision != "auto":
        return precision
    return "bf16" if bf16_speedup(proxy, seq_len) >= 1.2 else "fp32"


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
        precision: ``auto`` (bf16 where this proxy trains faster in it on this machine, measured
            once per proxy shape; see :func:`bf16_speedup`), ``bf16`` (autocast) or ``fp32``.
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
        require_positive(self, "train", ("lr", "grad_clip"))
        require_positive(self, "train", ("weight_decay",), zero=True)
        if self.precision not in ("auto", *PRECISIONS):
            raise ConfigError(f"train.precision {self.precision!r} is unknown; allowed: auto, {', '.join(PRECISIONS)}")
        if self.max_seconds is not None:
            require_positive(self, "train", ("max_seconds",))

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
                by = positions if self.data.is_text(task) else dist
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
            if not self.data.is_text(task):
                out[f"{task}/acc{suffix}"] = correct / n
        tasks = self.data.tasks
        out["loss"] = sum(out[f"{t}/loss"] for t in tasks) / len(tasks)
        out["ppl"] = math.exp(min(out["loss"], 50.0))
        last = bucket_names(self.data.seq_len)[-1]
        long = [out.get(f"{t}/loss@{last}", out[f"{t}/loss"]) if self.data.is_text(t) else out[f"{t}/loss"] for t in tasks]
        out["long_loss"] = sum(long) / len(long)
        recall = [out[f"{t}/acc"] for t in tasks if not self.data.is_text(t)]
        if recall:
            out["recall"] = sum(recall) / len(recall)
        return out


class ProxyLM(L.LightningModule):
    """Next-token training of a proxy.

    ``draw`` (optional) maps the global step to the schedule that step trains, so one set of
    weights can learn every schedule of a space (a supernet); without it every step runs
    ``schedule``.
    """

    def __init__(
        self,
        proxy: ProxyConfig,
        schedule: Schedule,
        data: DataConfig,
        train: TrainConfig,
        draw: Callable[[int], Schedule] | None = None,
    ) -> None:
        super().__init__()
        self.proxy_cfg, self.data_cfg, self.train_cfg, self.draw = proxy, data, train, draw
        self.model = build_model(proxy, schedule)

    def forward(self, idx: Tensor, schedule: Schedule | None = None) -> Tensor:
        return self.model(idx, schedule)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        schedule = self.draw(self.global_step) if self.draw else None
        logits = self(batch["x"], schedule)
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch["y"].flatten(), ignore_index=IGNORE)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss is {loss.item()} at step {self.global_step}")
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

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
    check_vocab(proxy, data)
    return schedule.canonical(data.seq_len)


def check_vocab(proxy: ProxyConfig, data: DataConfig) -> None:
    """The embedding must hold every token id the data can produce."""
    need = data.vocab_needed()
    if proxy.vocab_size < need:
        what = "byte tokens" if data.tokenizer is None else f"the tokens of data.tokenizer {data.tokenizer!r}"
        raise ConfigError(f"proxy.vocab_size={proxy.vocab_size} is too small for {what}; needs >= {need}")


def physical_memory() -> int:
    """Bytes of RAM on this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def step_memory(proxy: ProxyConfig, n_layers: int, seq_len: int, batch_size: int) -> int:
    """About the bytes one fp32 training step keeps for its backward pass: per token and layer the
    block's saved activations (~(16 + 2 * mlp_ratio) * d_model values), plus three copies of the
    logits (logits, softmax and their gradient). An estimate to refuse impossible sizes early, not a
    measurement."""
    per_token = n_layers * (16 + 2 * proxy.mlp_ratio) * proxy.d_model + 3 * proxy.vocab_size
    return 4 * batch_size * seq_len * per_token


def check_fits(proxy: ProxyConfig, data: DataConfig, train: TrainConfig, n_layers: int, processes: int = 1) -> None:
    """Refuse, before any trial, what would make every trial fail: tokens the vocabulary cannot
    hold, or a training step that cannot fit in this machine's memory."""
    check_vocab(proxy, data)
    need, have = processes * step_memory(proxy, n_layers, data.seq_len, train.batch_size), physical_memory()
    if need > have:
        each = " each" if processes > 1 else ""
        raise ConfigError(
            f"train.batch_size={train.batch_size} x data.seq_len={data.seq_len} x {n_layers} layers of d_model="
            f"{proxy.d_model} needs about {need / 2**30:.1f} GiB for one training step ({processes} process(es){each}), "
            f"more than this machine's {have / 2**30:.1f} GiB; lower train.batch_size"
        )


def val_batches(data: DataConfig, batch_size: int) -> list[dict[str, Tensor]]:
    """The validation set as batches: ``val_samples`` per task, the same for every schedule scored."""
    loader = torch.utils.data.DataLoader(TaskData(data, "val", data.val_samples * len(data.tasks)), batch_size=batch_size)
    return list(loader)


@torch.no_grad()
def evaluate(model: ProxyGPT, schedule: Schedule, data: DataConfig, batches: list[dict[str, Tensor]], precision: str) -> dict[str, float]:
    """Score ``model``'s weights run under ``schedule`` on ``batches`` (see :meth:`Scorer.scores`)."""
    was_training = model.training
    model.eval()
    scorer = Scorer(data)
    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            scorer.update(model(batch["x"], schedule).cpu(), {k: v.cpu() for k, v in batch.items()})
    model.train(was_training)
    scores = scorer.scores()
    if not all(math.isfinite(v) for v in scores.values()):
        raise TrainingDiverged(f"validation produced non-finite scores {scores}")
    return scores


@dataclass(frozen=True)
class Fitted:
    """What :func:`fit` did: the step reached, the step it started from (0, or where a checkpoint
    had stopped), and the seconds this call trained."""

    steps: int
    start_step: int
    seconds: float

    def tokens_per_second(self, batch_size: int, seq_len: int) -> float:
        return (self.steps - self.start_step) * batch_size * seq_len / self.seconds if self.seconds else 0.0


class _StartStep(L.Callback):
    start = 0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.start = trainer.global_step


def fit(
    module: ProxyLM,
    train: TrainConfig,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 50,
    name: str = "proxy",
) -> Fitted:
    """Train ``module`` until step ``train.steps`` with Lightning.

    With ``checkpoint_dir`` the trainer saves ``last.ckpt`` there every ``checkpoint_every`` steps
    (written atomically) and a later call resumes from it: data, optimizer, learning-rate schedule
    and step all continue where the killed run stopped, so the weights match an uninterrupted run.
    """
    data = module.data_cfg
    datamodule = ProxyDataModule(data, train.batch_size, train.steps * train.batch_size)
    logger: Any = False
    if train.log_dir:
        logger = L.pytorch.loggers.CSVLogger(train.log_dir, name=name)
    started = _StartStep()
    callbacks: list[Any] = [started]
    resume = None
    if checkpoint_dir is not None:
        callbacks.append(L.pytorch.callbacks.ModelCheckpoint(
            dirpath=checkpoint_dir, filename="last", every_n_train_steps=checkpoint_every,
            save_top_k=1, enable_version_counter=False,
        ))
        last = Path(checkpoint_dir, "last.ckpt")
        resume = str(last) if last.exists() else None
    trainer = L.Trainer(
        max_steps=train.steps,
        max_epochs=1,
        max_time={"seconds": train.max_seconds} if train.max_seconds else None,
        precision=PRECISIONS[train.precision],  # type: ignore[arg-type]
        gradient_clip_val=train.grad_clip,
        accelerator="auto",
        devices=1,
        logger=logger,
        callbacks=callbacks,
        log_every_n_steps=max(1, min(50, train.steps // 10)),
        enable_checkpointing=checkpoint_dir is not None,
        enable_model_summary=False,
        enable_progress_bar=train.progress,
        # CPU runs are bit-for-bit repeatable; CUDA kernels (FlexAttention's backward) may not be
        deterministic=True if not torch.cuda.is_available() else "warn",
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning 2.6 on torch 2.13
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")  # resuming there is the point
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
        seconds = time.perf_counter() - start
    if not trainer.interrupted and trainer.global_step == 0:
        raise TrainingDiverged("training made no step")
    return Fitted(trainer.global_step, started.start, seconds)


def train_and_score(
    schedule: Schedule | str,
    proxy: ProxyConfig,
    data: DataConfig,
    train: TrainConfig,
    seed: int | None = None,
    init: dict[str, Tensor] | None = None,
) -> ProxyResult:
    """Train a proxy with ``schedule`` for ``train.steps`` steps and score it on validation data.

    ``init`` starts from given weights (a supernet's, to fine-tune) instead of a fresh
    initialisation. Deterministic on the CPU: the same arguments give the same numbers.
    """
    if isinstance(schedule, str):
        schedule = Schedule.parse(schedule)
    if seed is not None:
        train = replace(train, seed=seed)
    schedule = check(schedule, proxy, data)
    train = replace(train, precision=resolve_precision(train.precision, proxy, data.seq_len))
    L.seed_everything(train.seed, workers=True, verbose=False)
    module = ProxyLM(proxy, schedule, data, train)
    if init is not None:
        module.model.load_state_dict(init)
    fitted = fit(module, train, name=schedule.hash)
    scores = evaluate(module.model, schedule, data, val_batches(data, train.batch_size), train.precision)
    return ProxyResult(
        schedule=schedule.text,
        scores=scores,
        cost=count(proxy, schedule, data.seq_len).to_dict(),
        tokens_seen=fitted.steps * train.batch_size * data.seq_len,
        steps=fitted.steps,
        train_seconds=fitted.seconds,
        tokens_per_second=fitted.tokens_per_second(train.batch_size, data.seq_len),
        seed=train.seed,
        config={"proxy": proxy.to_dict(), "data": data.to_dict(), "train": train.to_dict()},
    )
