"""The supernet strategy: train one set of weights once, score every schedule on it, confirm.

Full, sliding and block layers share every parameter; they differ only in which query-key pairs
attend. So one proxy whose training steps run schedules drawn from the space learns weights that
work under each of them (weight sharing, as in once-for-all and BigNAS), and a schedule is then
scored in seconds by validating the shared weights under it (``ProxyGPT.forward(idx, schedule)``).

The sandwich rule decides what each step trains. Steps cycle through the dearest schedule of the
space (most attended pairs), the cheapest, then ``random_draws`` schedules drawn as a random
sampler would draw them, one schedule per step, seeded by (seed, step) so a resumed run draws
what the uninterrupted one would. Training both extremes every cycle keeps the weights good at
the ends of the front, where a uniform draw visits rarely.

Shared weights rank schedules coarsely, not exactly, so the strategy ends by training the
supernet's front, plus control schedules from the fronts just behind it, standalone (the trusted,
dearer measurement). The final front and knee use those numbers, and the agreement between the two
rankings is reported (:mod:`spanmix.search.fidelity`).

Stages, and where each keeps its state:

1. train: Lightning checkpoints in ``WORKDIR/supernet-<key>/last.ckpt``; a killed run resumes
   there. The finished weights are ``supernet.pt``, reused by any study in a sibling folder of
   ``WORKDIR`` whose key (space, proxy, data, train, supernet steps and draws) is the same.
2. score: one trial per schedule at measurement ``supernet``; every schedule when the space holds at
   most ``exhaustive_limit``, else ``n_trials`` drawn by the study's sampler.
3. confirm: the front and ``controls`` near-front schedules, trained standalone.

On a pretrained checkpoint (``[base] model`` with ``heal_steps``) this is shared healing, as
PostNAS heals Jet-Nemotron's Qwen2.5: the checkpoint is fine-tuned once with the sandwich's
schedules, every schedule is scored on those weights and also as the checkpoint is (zero-shot,
measurement ``zero-shot``), and the front is confirmed by healing each of its schedules alone
(``standalone``). Rank fidelity is reported between the three.
"""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import lightning as L
import optuna
import torch

from spanmix.proxies.scoring import score_batches, val_batches
from spanmix.proxies.train import ProxyResult, TrainConfig, fit
from spanmix.search import record
from spanmix.search.config import StudyConfig
from spanmix.search.fidelity import confirm_set
from spanmix.search.front import fronts
from spanmix.search.measures import STANDALONE, StandaloneMeasure, digest
from spanmix.search.noise import basis_of, resolved
from spanmix.search.objective import Objective
from spanmix.search.queue import enqueue_space, measure_schedules, work
from spanmix.search.record import ZERO_SHOT, Point
from spanmix.search.strategies.base import RunOptions, Strategy
from spanmix.search.study import open_study
from spanmix.search.view import StudyView
from spanmix.space import (
    ConfigError,
    Schedule,
    SearchSpace,
    from_section,
    require_whole,
)
from spanmix.space.validation import MAX_LAYERS

log = logging.getLogger("spanmix.supernet")
SUPERNET = "supernet"  # the measurement: a schedule scored on the shared weights


class Sandwich:
    """The schedule a supernet step trains: dearest, cheapest, then ``random_draws`` random ones."""

    def __init__(self, space: SearchSpace, random_draws: int, seed: int) -> None:
        self.space, self.random_draws, self.seed = space, random_draws, seed
        self.cheapest, self.dearest = (s.canonical(space.context) for s in space.extremes())

    @property
    def cycle(self) -> int:
        return 2 + self.random_draws

    def __call__(self, step: int) -> Schedule:
        phase = step % self.cycle
        if phase == 0:
            return self.dearest
        if phase == 1:
            return self.cheapest
        return self.space.sample(random.Random(f"{self.seed}/{step}")).canonical(self.space.context)


CONFIRM = ("front", "resolved")  # what the supernet strategy trains standalone


@dataclass(frozen=True)
class SupernetConfig:
    """How the supernet strategy trains its shared weights and confirms what they found.

    Attributes:
        steps: training steps of the shared weights (None: 8x ``train.steps``); batch size,
            learning rate and the rest come from ``[train]``.
        random_draws: random schedules per sandwich cycle. The sandwich rule (BigNAS,
            once-for-all) cycles the dearest schedule of the space, the cheapest, then this many
            uniform draws, one schedule per step.
        finetune_steps: steps a copy of the shared weights is fine-tuned under a schedule before
            it is scored (0: score the shared weights as they are).
        controls: schedules off the supernet's front, drawn with the study seed from the next two
            fronts, that are trained standalone next to the front to measure rank fidelity.
        exhaustive_limit: spaces of at most this many schedules are scored whole (the front is
            then exact for the supernet); larger spaces are searched by the study's sampler for
            ``n_trials`` schedules.
        checkpoint_every: steps between checkpoints of the shared weights.
        bands: full-layer counts at which a new set of shared weights starts (few-shot supernets,
            Zhao et al. 2021): ``[1]`` trains one supernet on the schedules without a full layer
            and one on those with, each for ``steps``, and scores a schedule on its band's weights.
            Empty: one supernet for the whole space.
        distill: in-place distillation (BigNAS): the steps that draw any schedule but the dearest
            learn the dearest schedule's predictions under the same weights instead of the labels
            (one extra forward each).
        confirm: which of the supernet's front is trained standalone: ``front``, all of it;
            ``resolved``, only the points its scores show better than every cheaper front point
            (the others are tied with one of those on the supernet's own noise, so training them
            would measure noise: see :func:`spanmix.search.noise.resolved`).
    """

    steps: int | None = None
    random_draws: int = 2
    finetune_steps: int = 0
    controls: int = 4
    exhaustive_limit: int = 512
    checkpoint_every: int = 50
    bands: tuple[int, ...] = ()
    distill: bool = False
    confirm: str = "front"

    def __post_init__(self) -> None:
        if self.confirm not in CONFIRM:
            raise ConfigError(f"supernet.confirm={self.confirm!r}: allowed: {', '.join(map(repr, CONFIRM))}")
        if self.steps is not None:
            require_whole(self, "supernet", ("steps",))
        require_whole(self, "supernet", ("exhaustive_limit", "checkpoint_every"))
        require_whole(self, "supernet", ("random_draws", "finetune_steps", "controls"), minimum=0)
        bands = list(self.bands)
        if any(not 1 <= b <= MAX_LAYERS for b in bands) or bands != sorted(set(bands)):
            raise ConfigError(f"supernet.bands={bands}: allowed: increasing full-layer counts from 1 to {MAX_LAYERS}, "
                              "each the first of a band")

    def total_steps(self, train: TrainConfig) -> int:
        return self.steps if self.steps is not None else 8 * train.steps

    def band_ranges(self, n_full: tuple[int, int]) -> list[tuple[int, int]]:
        """The space's range of full-layer counts cut at :attr:`bands` (increasing, checked on
        creation), as inclusive ranges; refuses a cut that leaves a band empty."""
        lo, hi = n_full
        cuts = list(self.bands)
        if any(not lo < c <= hi for c in cuts):
            raise ConfigError(f"supernet.bands={cuts}: allowed: increasing full-layer counts above "
                              f"the space's lowest n_full and up to its highest ({lo} < band <= {hi})")
        return [(a, b - 1) for a, b in zip([lo, *cuts], [*cuts, hi + 1])]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SupernetConfig:
        return from_section(cls, data, "supernet")


def settings(cfg: StudyConfig) -> SupernetConfig:
    """The study's ``[supernet]`` section."""
    return cfg.section("supernet")


def shared_key(cfg: StudyConfig, precision: str) -> dict[str, Any]:
    """What makes two supernets interchangeable: the space they learn, how they train and the
    precision they trained in (``train.precision = "auto"`` resolves per machine)."""
    sn = settings(cfg)
    return {**cfg.measurement_key(), "space": cfg.space.to_dict(), "precision": precision,
            # bands and distill are named only when set, so weights trained before they existed are still found
            "supernet": {"steps": sn.total_steps(cfg.train), "random_draws": sn.random_draws,
                         **({"bands": list(sn.bands)} if sn.bands else {}), **({"distill": True} if sn.distill else {})}}


def band_configs(cfg: StudyConfig) -> list[tuple[tuple[int, int], StudyConfig]]:
    """Each band of full-layer counts with the config of its own supernet: the study's, on the
    band's part of the space. A band's supernet is a plain supernet of that smaller space, so its
    weights are shared with any study of that space."""
    ranges = settings(cfg).band_ranges(cfg.space.n_full)
    if len(ranges) == 1:
        return [(ranges[0], cfg)]
    plain = replace(settings(cfg), bands=())
    return [(r, replace(cfg, space=replace(cfg.space, n_full=r)).with_section("supernet", plain)) for r in ranges]


def supernet_key(cfg: StudyConfig, precision: str) -> str:
    return digest(shared_key(cfg, precision))


@dataclass(frozen=True)
class SupernetWeights:
    """Trained shared weights and how they were made."""

    state: dict[str, torch.Tensor]
    path: Path
    steps: int
    seconds: float
    tokens_per_second: float
    reused: bool


def _finished_weights(cfg: StudyConfig, workdir: Path, precision: str) -> Path | None:
    name = f"supernet-{supernet_key(cfg, precision)}"
    mine = workdir / name / "supernet.pt"
    if mine.exists():
        return mine
    return next(iter(sorted(workdir.parent.glob(f"*/{name}/supernet.pt"))), None)


def _pinned(cfg: StudyConfig, precision: str | None) -> str:
    """The study's pinned precision, or where none is given, this machine's."""
    return precision or cfg.subject.precision(cfg.train.precision, cfg.data, cfg.train.batch_size, cfg.space.local)


def _precision(cfg: StudyConfig, precision: str | None) -> str:
    """The ``train.precision`` the shared weights train and are scored with (a checkpoint's: its
    weights' own dtype, without autocast)."""
    return cfg.subject.autocast(_pinned(cfg, precision))


def train_supernet(cfg: StudyConfig, workdir: Path, progress: bool = False, precision: str | None = None) -> SupernetWeights:
    """The study's shared weights: found finished, resumed from a checkpoint, or trained in
    ``precision`` (the study's pinned one; None: resolve ``train.precision`` here)."""
    precision = _precision(cfg, precision)
    done = _finished_weights(cfg, workdir, precision)
    if done is not None:
        saved = torch.load(done, weights_only=True)
        log.info("supernet: reusing %s (%d steps, trained in %.0f s)", done, saved["steps"], saved["seconds"])
        return SupernetWeights(saved["state"], done, saved["steps"], saved["seconds"], saved["tokens_per_second"], True)
    folder = workdir / f"supernet-{supernet_key(cfg, precision)}"
    steps = settings(cfg).total_steps(cfg.train)
    train = replace(cfg.train, steps=steps, precision=precision, progress=progress)
    sandwich = Sandwich(cfg.space, settings(cfg).random_draws, cfg.train.seed)
    resuming = (folder / "last.ckpt").exists()
    log.info("supernet: %s %d steps of %d sequences x %d tokens (sandwich: %s, %s, %d random%s), checkpoints in %s",
             "resuming" if resuming else "training", steps, train.batch_size, cfg.data.seq_len,
             sandwich.dearest, sandwich.cheapest, settings(cfg).random_draws,
             "; in-place distillation from the first" if settings(cfg).distill else "", folder)
    L.seed_everything(train.seed, workers=True, verbose=False)
    teacher = sandwich.dearest if settings(cfg).distill else None
    module = cfg.subject.shared_module(sandwich.dearest, cfg.data, train, sandwich, teacher)
    fitted = fit(module, train, checkpoint_dir=folder, checkpoint_every=settings(cfg).checkpoint_every, name="supernet")
    tokens_per_second = fitted.tokens_per_second(train.batch_size, cfg.data.seq_len)
    saved = {"state": module.model.state_dict(), "steps": fitted.steps, "seconds": fitted.seconds,
             "tokens_per_second": tokens_per_second, "key": shared_key(cfg, precision)}
    path = folder / "supernet.pt"
    folder.mkdir(parents=True, exist_ok=True)  # a training shorter than checkpoint_every wrote no checkpoint there
    tmp = path.with_suffix(".tmp")
    torch.save(saved, tmp)
    os.replace(tmp, path)  # a kill while writing leaves no half-written weights behind
    log.info("supernet: trained to step %d (from step %d) in %.0f s, %.0f tokens/s",
             fitted.steps, fitted.start_step, fitted.seconds, tokens_per_second)
    return SupernetWeights(saved["state"], path, fitted.steps, fitted.seconds, tokens_per_second, False)


def train_supernets(cfg: StudyConfig, workdir: Path, progress: bool = False,
                    precision: str | None = None) -> list[tuple[tuple[int, int], SupernetWeights]]:
    """The shared weights of each band of full-layer counts (one band without ``supernet.bands``)."""
    trained = []
    for (lo, hi), band in band_configs(cfg):
        if band is not cfg:
            log.info("supernet: band of %d-%d full layers (%d schedules)", lo, hi, band.space.size())
        trained.append(((lo, hi), train_supernet(band, workdir, progress, precision)))
    return trained


class SupernetScore:
    """Score a schedule on the shared weights of its band, after ``finetune_steps`` of fine-tuning a copy."""

    name = SUPERNET
    replicates = 1  # the shared weights are scored as they are: no seed to vary
    training = None  # nothing of it is a seed of a standalone training

    def __init__(self, cfg: StudyConfig, bands: list[tuple[tuple[int, int], SupernetWeights]],
                 precision: str | None = None) -> None:
        self.cfg, self.bands = cfg, bands
        self.precision, self.recorded = _precision(cfg, precision), _pinned(cfg, precision)
        self.key = {**shared_key(cfg, self.precision), "finetune_steps": settings(cfg).finetune_steps}
        self.model = cfg.subject.scoring_model(cfg.space.extremes()[1])
        self.loaded: SupernetWeights | None = None
        self.batches = val_batches(cfg.data, cfg.train.batch_size)
        # fine-tuning continues from where the shared weights' schedule ended (10% of the peak rate)
        ft = settings(cfg).finetune_steps
        self.finetune = replace(cfg.train, steps=max(ft, 1), warmup=0, lr=cfg.train.lr * 0.1, precision=self.precision)

    def weights(self, schedule: Schedule) -> SupernetWeights:
        """The shared weights of the band that holds ``schedule``."""
        n = schedule.n_full
        return next(w for (lo, hi), w in self.bands if lo <= n <= hi)

    def __call__(self, schedule: Schedule, replicate: int = 0) -> ProxyResult:
        cfg, weights = self.cfg, self.weights(schedule)
        if settings(cfg).finetune_steps:
            return cfg.subject.measure(schedule, cfg.data, self.finetune, self.finetune.seed, init=weights.state)
        start = time.perf_counter()
        if self.loaded is not weights:
            self.model.load_state_dict(weights.state)
            self.loaded = weights
        scorer = score_batches(self.model, schedule, cfg.data, self.batches, self.precision)
        return ProxyResult(
            schedule=schedule.text, scores=scorer.scores(), cost=cfg.count(schedule).to_dict(),
            tokens_seen=0, steps=0, train_seconds=time.perf_counter() - start, tokens_per_second=0.0,
            seed=cfg.train.seed,
            precision=self.recorded,
            # the shared weights are fixed: which validation sequences scored them is the noise left
            resamples=scorer.resamples(),
        )


def keep_resolved(score: str, maximize: bool) -> Callable[[list[Point]], list[Point]]:
    """What ``confirm = "resolved"`` keeps of the supernet's front: the points its scores show
    better than every cheaper one, on the noise they were measured with (all of the front where
    that noise is unmeasured: nothing can be called tied then)."""
    def keep(front: list[Point]) -> list[Point]:
        basis = basis_of(front, score, maximize)
        return front if basis is None else resolved(front, score, maximize, basis)
    return keep


def _stage(study: optuna.Study, name: str, seconds: float) -> None:
    stages = dict(study.user_attrs.get(record.STAGES, {}))
    stages[name] = stages.get(name, 0.0) + seconds
    study.set_user_attr(record.STAGES, stages)


class Supernet(Strategy):
    """Train (or resume, or reuse) the supernet, score the space on it, confirm its front standalone."""

    name = "supernet"
    measurement = SUPERNET
    section = SupernetConfig
    max_workers = 1
    single_process = "trains its shared weights in one process"
    heals = "is shared healing, confirmed by healing each front schedule alone"

    def check(self, cfg: StudyConfig, workers: int) -> None:
        super().check(cfg, workers)
        settings(cfg).band_ranges(cfg.space.n_full)
        if cfg.subject.pretrained and settings(cfg).finetune_steps:
            raise ConfigError(f"supernet.finetune_steps={settings(cfg).finetune_steps} on a checkpoint: allowed 0 "
                              "(confirmation heals each front schedule alone instead)")

    def target(self, cfg: StudyConfig, n_trials: int) -> int:
        """A space of at most ``exhaustive_limit`` schedules is scored whole."""
        size = cfg.space.size()
        return size if size <= settings(cfg).exhaustive_limit else min(n_trials, size)

    def run(self, cfg: StudyConfig, storage_url: str, target: int, options: RunOptions) -> optuna.Study:
        if options.workdir is None:
            raise ConfigError("the supernet strategy needs a folder for its checkpoints (workdir)")
        study = options.study or open_study(cfg, storage_url)
        study.set_user_attr(record.SEARCHED, self.measurement)
        start = time.perf_counter()
        precision = record.pinned_precision(study.user_attrs)
        weights = train_supernets(cfg, Path(options.workdir), progress=options.on_progress is not None, precision=precision)
        fresh = [w for _, w in weights if not w.reused]
        if fresh:
            _stage(study, "train", time.perf_counter() - start)
            seconds = sum(w.seconds for w in fresh)
            study.set_user_attr(record.WEIGHTS, {
                "path": "; ".join(str(w.path) for _, w in weights), "steps": sum(w.steps for _, w in weights),
                "tokens_per_second": sum(w.seconds * w.tokens_per_second for w in fresh) / seconds if seconds else 0.0})
        callbacks = options.callbacks()
        measures = [SupernetScore(cfg, weights, precision), StandaloneMeasure(cfg, precision=precision)]
        if cfg.subject.pretrained:  # shared healing is read against the weights as they are
            measures.append(StandaloneMeasure(cfg.zero_shot, name=ZERO_SHOT))
        objective = Objective(cfg, *measures)

        start = time.perf_counter()
        size, target = cfg.space.size(), self.target(cfg, target)
        if target == size:
            enqueue_space(study, cfg.space, SUPERNET)
        log.info("supernet: scoring %d schedules on the shared weights%s", target,
                 "" if target == size else f" of {size} (sampler: {cfg.sampler})")
        work(study, objective, target, options.timeout, callbacks, cfg.seed)
        _stage(study, "score", time.perf_counter() - start)
        if cfg.subject.pretrained:
            start = time.perf_counter()
            scored = sorted({p.schedule for p in StudyView(study, cfg).points(SUPERNET)})
            log.info("zero-shot: scoring the %d schedules on the checkpoint as it is, for rank fidelity", len(scored))
            measure_schedules(study, objective, scored, ZERO_SHOT, options.timeout, callbacks)
            _stage(study, "zero-shot", time.perf_counter() - start)

        start = time.perf_counter()
        view = StudyView(study, cfg)
        pts = view.points(SUPERNET)
        front = fronts(pts, view.maximize)[0]
        keep = keep_resolved(cfg.quality, view.maximize) if settings(cfg).confirm == "resolved" else None
        chosen = confirm_set(pts, view.maximize, settings(cfg).controls, cfg.seed, keep)
        kept = len({p.schedule for p in front} & {p.schedule for p in chosen})  # controls come from off the front
        log.info("confirm: training %s and %d controls standalone (%d schedules)",
                 f"the supernet's front ({kept} points)" if keep is None else
                 f"the {kept} of the supernet's {len(front)} front points its scores resolve (the others are tied with them)",
                 len(chosen) - kept, len(chosen))
        measure_schedules(study, objective, [p.schedule for p in chosen], STANDALONE, options.timeout, callbacks)
        _stage(study, "confirm", time.perf_counter() - start)
        return study
