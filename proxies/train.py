"""Training a proxy with Lightning: the measurement that tells span mixes apart.

:func:`train_and_score` is the one call the search makes:
``(schedule, proxy config, data config, train config, seed) -> ProxyResult``. What it is scored on
is :mod:`spanmix.proxies.scoring`; the precision it trains in and whether it fits,
:mod:`spanmix.proxies.resources`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from spanmix.proxies.cost import count
from spanmix.proxies.data import IGNORE, DataConfig, ProxyDataModule
from spanmix.proxies.model import ProxyConfig, build_model
from spanmix.proxies.resources import check_vocab, resolve_precision
from spanmix.proxies.scoring import TrainingDiverged, evaluate, val_batches
from spanmix.space import (
    ConfigError,
    Schedule,
    from_section,
    require_positive,
    require_whole,
)

PRECISIONS = {"bf16": "bf16-mixed", "fp32": "32-true"}


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
        precision: ``auto`` (fp32 on a CPU without native bf16; elsewhere bf16 where a training
            step is measured 1.5x faster in it, once per shape: see
            :func:`spanmix.proxies.resources.resolve_precision`), ``bf16`` (autocast) or ``fp32``.
        max_seconds: wall-clock limit for training (None: none); a run cut short reports the
            tokens it saw.
        seed: model initialisation seed (the batches follow ``data.seed``; a study's further training
            seeds also read another stream of batches).
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


class ScheduleLM(L.LightningModule):
    """Next-token training of ``self.model``, an ``(ids, schedule) -> logits`` module that a subclass
    sets: a proxy, or a pretrained checkpoint under a schedule. Only parameters that require a
    gradient are optimised.

    ``draw`` (optional) maps the global step to the schedule that step trains, so one set of
    weights can learn every schedule of a space (a supernet); without it every step runs the
    model's own schedule. With a ``teacher`` schedule too, a step that draws any other schedule
    learns the teacher's predictions on the same batch instead of the labels (in-place
    distillation, as BigNAS and once-for-all train their smaller children): the same weights
    under the teacher's schedule, without a gradient, one extra forward per such step.
    """

    model: torch.nn.Module

    def __init__(self, data: DataConfig, train: TrainConfig, draw: Callable[[int], Schedule] | None = None,
                 teacher: Schedule | None = None) -> None:
        super().__init__()
        self.data_cfg, self.train_cfg, self.draw, self.teacher = data, train, draw, teacher

    def forward(self, idx: Tensor, schedule: Schedule | None = None) -> Tensor:
        return self.model(idx, schedule)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        schedule = self.draw(self.global_step) if self.draw else None
        logits = self(batch["x"], schedule)
        if self.teacher is not None and schedule != self.teacher:
            loss = self._distilled(logits, batch)
        else:
            loss = F.cross_entropy(logits.float().flatten(0, 1), batch["y"].flatten(), ignore_index=IGNORE)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss is {loss.item()} at step {self.global_step}")
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def _distilled(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """KL divergence from the teacher's next-token distribution, over the positions the labels score."""
        with torch.no_grad():
            target = F.log_softmax(self(batch["x"], self.teacher).float(), dim=-1)
        scored = batch["y"] != IGNORE
        return F.kl_div(F.log_softmax(logits.float(), dim=-1)[scored], target[scored], log_target=True,
                        reduction="batchmean")

    def configure_optimizers(self) -> Any:
        cfg = self.train_cfg
        trained = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in trained if p.dim() >= 2]
        other = [p for p in trained if p.dim() < 2]
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


class ProxyLM(ScheduleLM):
    """Next-token training of a proxy built from ``schedule`` (see :class:`ScheduleLM`)."""

    def __init__(
        self,
        proxy: ProxyConfig,
        schedule: Schedule,
        data: DataConfig,
        train: TrainConfig,
        draw: Callable[[int], Schedule] | None = None,
        teacher: Schedule | None = None,
    ) -> None:
        super().__init__(data, train, draw, teacher)
        self.model = build_model(proxy, schedule)


@dataclass
class ProxyResult:
    """What one proxy run measured: ``steps`` is the step the model reached, ``start_step`` the
    one this run continued from (0 for a fresh training), ``tokens_seen`` what this run trained,
    ``resamples`` the scores on bootstrap resamples of the validation sequences where they are
    the score's only noise (a checkpoint scored as it is; see :meth:`Scorer.resamples`)."""

    schedule: str
    scores: dict[str, float]
    cost: dict[str, Any]
    tokens_seen: int
    steps: int
    train_seconds: float
    tokens_per_second: float
    seed: int
    precision: str = "fp32"
    start_step: int = 0
    curve: dict[int, dict[str, float]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    resamples: dict[str, list[float]] = field(default_factory=dict)

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


@dataclass(frozen=True)
class Fitted:
    """What :func:`fit` did: the step reached, the step it started from (0, or where a checkpoint
    had stopped), and the seconds this call trained."""

    steps: int
    start_step: int
    seconds: float

    def tokens_per_second(self, batch_size: int, seq_len: int) -> float:
        return (self.steps - self.start_step) * batch_size * seq_len / self.seconds if self.seconds else 0.0


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's device banners, tips and "stopped" lines off, for a notebook as for the command
    line; its warnings and errors still show."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logging.WARNING, logger.level))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class Curve(L.Callback):
    """Scores at given steps of one training (a learning curve). Scoring runs without gradients
    and draws no random numbers, so the training goes on exactly as it would without it."""

    def __init__(self, steps: tuple[int, ...], schedule: Schedule, data: DataConfig, batch_size: int, precision: str) -> None:
        self.steps, self.schedule, self.data, self.precision = set(steps), schedule, data, precision
        self.batches = val_batches(data, batch_size)
        self.scores: dict[int, dict[str, float]] = {}

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step in self.steps and step not in self.scores:
            self.scores[step] = evaluate(module.model, self.schedule, self.data, self.batches, self.precision)


class _StartStep(L.Callback):
    start = 0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.start = trainer.global_step


def fit(
    module: ScheduleLM,
    train: TrainConfig,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 50,
    name: str = "proxy",
    stream: int = 0,
    extra: tuple[L.Callback, ...] = (),
    until: int | None = None,
    start_from: str | Path | None = None,
) -> Fitted:
    """Train ``module`` until step ``until`` (default ``train.steps``) with Lightning.

    With ``checkpoint_dir`` the trainer saves ``last.ckpt`` there every ``checkpoint_every`` steps
    (written atomically) and a later call resumes from it: data, optimizer, learning-rate schedule
    and step all continue where the killed run stopped, so the weights match an uninterrupted run.
    ``start_from`` names a checkpoint to continue from when ``checkpoint_dir`` holds none yet.
    The learning-rate schedule and the data are always those of the whole ``train.steps``, so a
    training stopped at ``until`` and continued later is the uninterrupted training, step for step.
    """
    data = module.data_cfg
    datamodule = ProxyDataModule(data, train.batch_size, train.steps * train.batch_size, stream)
    logger: Any = False
    if train.log_dir:
        logger = L.pytorch.loggers.CSVLogger(train.log_dir, name=name)
    started = _StartStep()
    callbacks: list[Any] = [started, *extra]
    resume = None
    if checkpoint_dir is not None:
        callbacks.append(L.pytorch.callbacks.ModelCheckpoint(
            dirpath=checkpoint_dir, filename="last", every_n_train_steps=checkpoint_every,
            save_top_k=1, enable_version_counter=False,
        ))
        last = Path(checkpoint_dir, "last.ckpt")
        resume = str(last) if last.exists() else None
    if resume is None and start_from is not None:
        resume = str(start_from)
    # Lightning's banners and tips come from the constructor, its "stopped" line from fit
    with _quiet_lightning():
        trainer = L.Trainer(
            max_steps=until or train.steps,
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
            # a continued training saves at its own step: the checkpoint callback differs by design
            warnings.filterwarnings("ignore", message=".*callbacks used to create the checkpoint.*")
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
    stream: int = 0,
    curve_at: tuple[int, ...] = (),
    until: int | None = None,
    checkpoint_dir: str | Path | None = None,
    start_from: str | Path | None = None,
) -> ProxyResult:
    """Train a proxy with ``schedule`` for ``train.steps`` steps and score it on validation data.

    ``init`` starts from given weights (a supernet's, to fine-tune) instead of a fresh
    initialisation; ``stream`` trains on another sequence of batches (see
    :class:`~spanmix.proxies.data.ProxyDataModule`); ``curve_at`` names steps at which the
    training is also scored on the way (the result's ``curve``), without changing it.

    ``until`` stops (and scores) the training at that step, keeping the learning-rate schedule of
    all ``train.steps``; with ``checkpoint_dir`` its state is saved there at ``until``, and a call
    whose ``start_from`` names that checkpoint continues it (see :func:`fit`): training to step
    ``a``, then on from there to ``b``, gives bit for bit what one training to ``b`` gives.
    Deterministic on the CPU: the same arguments give the same numbers.
    """
    if isinstance(schedule, str):
        schedule = Schedule.parse(schedule)
    if seed is not None:
        train = replace(train, seed=seed)
    schedule = check(schedule, proxy, data)
    local = tuple(sorted({layer.kind for layer in schedule.layers if not layer.is_full})) or ("sliding",)
    train = replace(train, precision=resolve_precision(train.precision, proxy, data.seq_len, train.batch_size, local))
    L.seed_everything(train.seed, workers=True, verbose=False)
    module = ProxyLM(proxy, schedule, data, train)
    if init is not None:
        module.model.load_state_dict(init)
    stop = until or train.steps
    if not 0 < stop <= train.steps:
        raise ConfigError(f"until={stop} must be a step in 1..train.steps={train.steps}")
    curve = Curve(tuple(s for s in curve_at if 0 < s < stop), schedule, data, train.batch_size, train.precision)
    fitted = fit(module, train, checkpoint_dir, checkpoint_every=stop, name=schedule.hash, stream=stream,
                 extra=(curve,) if curve.steps else (), until=stop, start_from=start_from)
    scores = evaluate(module.model, schedule, data, val_batches(data, train.batch_size), train.precision)
    return ProxyResult(
        schedule=schedule.text,
        scores=scores,
        cost=count(proxy, schedule, data.seq_len).to_dict(),
        tokens_seen=(fitted.steps - fitted.start_step) * train.batch_size * data.seq_len,
        steps=fitted.steps,
        start_step=fitted.start_step,
        train_seconds=fitted.seconds,
        tokens_per_second=fitted.tokens_per_second(train.batch_size, data.seq_len),
        seed=train.seed,
        precision=train.precision,
        curve=curve.scores,
        config={"proxy": proxy.to_dict(), "data": data.to_dict(), "train": train.to_dict()},
    )
