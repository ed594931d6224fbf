"""A study's full description: what to search, how to measure, and how to search."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from spanmix.proxies.checkpoint import BaseConfig
from spanmix.proxies.cost import CostReport
from spanmix.proxies.data import PROBES, DataConfig
from spanmix.proxies.model import ProxyConfig
from spanmix.proxies.subject import Subject, subject_of
from spanmix.proxies.train import TrainConfig
from spanmix.search import strategies
from spanmix.search.front import maximized
from spanmix.space import (
    ConfigError,
    Schedule,
    ScheduleError,
    SearchSpace,
    check_types,
    from_section,
    require_name,
    require_positive,
    require_whole,
)
from spanmix.space.validation import MAX_LAYERS

SAMPLERS = ("nsga2", "tpe", "random", "grid")
MAX_RUNGS = 8
COSTS = {
    "flops": "multiply-adds of a forward pass over the context (fvcore)",
    "prefill_flops": "the same count under its inference name: a forward over the context",
    "decode_flops": "multiply-adds to generate one token at the end of the context (fvcore)",
    "attention_flops": "multiply-adds of attention alone",
    "kv_cache": "KV-cache bytes to decode at the context",
    "latency": "measured forward+backward milliseconds",
}
QUALITIES = ("loss", "long_loss", "ppl", "recall")
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


@dataclass(frozen=True)
class HalvingConfig:
    """How the halving strategy spreads the training budget over rungs (successive halving).

    Attributes:
        eta: at each rung the best ``1/eta`` of the schedules that finished it (by non-dominated
            sorting) train on to the next rung.
        rungs: how many budgets, the last being the study's full ``train.steps``.
        first_steps: the first rung's steps; the rungs between are spaced geometrically up to the
            full budget (None: ``train.steps / eta**(rungs - 1)``, so each rung is ``eta`` times
            the one before). Set it where calibration says a short training starts to rank
            schedules: a first rung below that ranks them by seed noise.
        early_seeds: training seeds of every rung below the last (None: the study's ``seeds``).
            The last rung is the standalone measurement and always has the study's seeds; a seed
            the rung below did not train starts there from scratch. One seed below the last rung
            spends a ``1/seeds`` share on the schedules that go no further.
    """

    eta: int = 3
    rungs: int = 3
    first_steps: int | None = None
    early_seeds: int | None = None

    def __post_init__(self) -> None:
        require_whole(self, "halving", ("eta", "rungs"), minimum=2)
        require_whole(self, "halving", ("rungs",), minimum=2, maximum=MAX_RUNGS)
        require_whole(self, "halving", tuple(n for n in ("first_steps", "early_seeds") if getattr(self, n) is not None))

    def steps(self, total: int) -> tuple[int, ...]:
        """The step each rung trains to, for a full budget of ``total`` steps; refuses a budget too
        short to give every rung a step of its own."""
        last = self.rungs - 1
        if self.first_steps is None:
            steps = tuple(round(total / self.eta ** (last - i)) for i in range(self.rungs))
            if total < self.eta ** last or len(set(steps)) < len(steps):
                raise ConfigError(f"halving: train.steps={total} is too few for {self.rungs} rungs of eta={self.eta} "
                                  f"(rungs at {list(steps)} steps); allowed: train.steps >= {self.eta ** last}, "
                                  "or fewer rungs")
            return steps
        if self.first_steps >= total:
            raise ConfigError(f"halving.first_steps={self.first_steps} must be below train.steps={total}: the last "
                              "rung is the full budget")
        steps = tuple(round(self.first_steps * (total / self.first_steps) ** (i / last)) for i in range(self.rungs))
        if len(set(steps)) < len(steps):
            raise ConfigError(f"halving: {self.rungs} rungs from first_steps={self.first_steps} to train.steps={total} "
                              f"do not each get a step of their own (rungs at {list(steps)} steps); allowed: fewer "
                              "rungs, or a smaller first_steps")
        return steps

    def seeds(self, study_seeds: int) -> int:
        """The training seeds of a rung below the last."""
        return self.early_seeds if self.early_seeds is not None else study_seeds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HalvingConfig:
        return from_section(cls, data, "halving")


@dataclass(frozen=True)
class StudyConfig:
    """Everything a study needs; two launches with equal configs measure the same thing.

    Attributes:
        name: the Optuna study name (relaunching it resumes).
        space, proxy, data, train: the candidates and how each is measured.
        base: a pretrained checkpoint whose layers are searched instead of proxies trained from
            scratch (see :class:`~spanmix.proxies.checkpoint.BaseConfig`): ``proxy`` is then unused,
            ``space.n_layers`` defaults to the checkpoint's, and ``train`` sets its healing (its
            ``steps`` become ``base.heal_steps``).
        quality: the score to optimise: ``loss``, ``long_loss``, ``ppl``, ``recall``, or any
            per-task score such as ``code/loss@1024-2048`` or ``mqar/acc``.
        cost: ``flops``, ``attention_flops``, ``kv_cache`` or ``latency``.
        sampler: ``nsga2`` (default), ``tpe``, ``random``, or ``grid`` (every schedule once).
        budget: if set, a trial is feasible only when its cost is at most this fraction of the
            all-full schedule's (an Optuna constraint).
        n_trials: distinct schedules the study aims to measure (repeated draws reuse a result and
            do not count; capped at the size of the space).
        seed: sampler seed (each proxy trains with ``train.seed``).
        seeds: trainings per schedule that differ only in their training seed (``train.seed``,
            ``train.seed + 1``, ...: initialisation and batches); the schedule's value is their
            mean, and their spread is its noise. 1 leaves the noise unmeasured.
        calibrate: ``launch`` first trains the space's dearest and cheapest schedules and stops
            (exit 2, unless ``--force``) when the budget does not separate them (see
            :mod:`spanmix.search.calibration`). ``false`` skips that stage; it does not change
            what the study measures, so it may differ between launches of one study.
        heartbeat_seconds: a trial whose worker stops beating for 3x this is failed and retried.
        strategy: ``standalone`` trains every schedule it measures from scratch (exact, slow);
            ``supernet`` trains one set of shared weights, scores schedules on it, then confirms
            its front standalone (see :class:`SupernetConfig`); ``halving`` trains every schedule
            to a first rung of the budget and only the best on to the full budget, continuing
            each from its checkpoint (see :class:`HalvingConfig`).
        supernet: the supernet strategy's settings (the ``[supernet]`` section).
        halving: the halving strategy's settings (the ``[halving]`` section).
    """

    name: str
    space: SearchSpace
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    quality: str = "loss"
    cost: str = "flops"
    sampler: str = "nsga2"
    budget: float | None = None
    n_trials: int = 20
    seed: int = 0
    seeds: int = 1
    calibrate: bool = True
    heartbeat_seconds: int = 10
    strategy: str = "standalone"
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    halving: HalvingConfig = field(default_factory=HalvingConfig)
    base: BaseConfig = field(default_factory=BaseConfig)

    def __post_init__(self) -> None:
        if self.base.healed:  # healing is the training a measurement makes: its budget is train.steps everywhere
            object.__setattr__(self, "train", replace(self.train, steps=self.base.heal_steps))
        strategies.check(self.strategy)
        require_name(self.name, "study.name")
        if self.cost not in COSTS:
            raise ConfigError(f"study.cost {self.cost!r} is unknown; allowed: {', '.join(COSTS)}")
        if self.quality not in QUALITIES and "/" not in self.quality:
            raise ConfigError(
                f"study.quality {self.quality!r} is unknown; allowed: {', '.join(QUALITIES)} or a per-task score like 'code/loss'"
            )
        if self.quality.split("/")[0] not in (*QUALITIES, *self.data.tasks):
            raise ConfigError(f"study.quality {self.quality!r} names a task not in data.tasks {list(self.data.tasks)}")
        if self.quality == "recall" and all(self.data.is_text(t) for t in self.data.tasks):
            raise ConfigError(f"study.quality 'recall' needs a probe task in data.tasks ({', '.join(PROBES)})")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"study.sampler {self.sampler!r} is unknown; allowed: {', '.join(SAMPLERS)}")
        if self.budget is not None:
            require_positive(self, "study", ("budget",))
        if self.budget is not None and not 0 < self.budget <= 1:
            raise ConfigError(f"study.budget must be a fraction in (0, 1] of the all-full cost (got {self.budget!r})")
        require_whole(self, "study", ("n_trials", "heartbeat_seconds", "seeds"))
        require_whole(self, "study", ("seed",), minimum=0)
        if self.space.context != self.data.seq_len:
            raise ConfigError(f"space.context={self.space.context} must equal data.seq_len={self.data.seq_len}")
        self.subject.check_study(self.seeds, self.cost, self.data.seq_len)

    @property
    def subject(self) -> Subject:
        """The model under search: the checkpoint ``[base]`` names, or the proxy ``[proxy]`` describes."""
        return subject_of(self.proxy, self.base)

    def check_files(self) -> None:
        """What only the user's files can tell (the checkpoint, the tokenizer), refused before any
        work; building a configuration reads none of them, so a study's results stay readable
        where they are gone."""
        self.data.check_lengths()
        self.subject.check(self.space.n_layers, self.data)

    def count(self, schedule: Schedule) -> CostReport:
        """The schedule's counted cost at the study's context, on the model under search."""
        return self.subject.count(schedule, self.data.seq_len)

    @property
    def zero_shot(self) -> StudyConfig:
        """This checkpoint study scoring its checkpoint as it is (one seed, no healing): the
        measurement shared healing is compared with."""
        return replace(self, base=replace(self.base, heal_steps=0), seeds=1)

    @property
    def trains(self) -> bool:
        """Whether measuring a schedule trains anything (a proxy, or a checkpoint's healing): a
        zero-shot checkpoint study has no training budget and no seed."""
        return self.subject.trains

    @property
    def unmeasured_noise(self) -> str:
        """Why a one-seed study's differences cannot be read against its noise, and what would help."""
        if not self.trains:
            return ("noise: unmeasured: zero-shot scores are deterministic, and this score has no resamples of the "
                    "validation sequences (scores by bucket, '@', keep none, nor trials of studies made before spanmix "
                    "kept them); read small differences as ties")
        return ("noise: unmeasured (study.seeds = 1): a difference between these schedules may be seed noise; "
                "set [study] seeds = 2 or more to measure it")

    @property
    def directions(self) -> list[str]:
        return ["maximize" if maximized(self.quality) else "minimize", "minimize"]

    def measurement_key(self) -> dict[str, Any]:
        """What makes two standalone trials of one schedule interchangeable (the dedup key, with the schedule)."""
        return {**self.subject.key(self.data, self.train), "cost": self.cost}

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _SECTIONS},
            "space": self.space.to_dict(),
            "proxy": self.proxy.to_dict(),
            "data": self.data.to_dict(),
            "train": self.train.to_dict(),
            "supernet": self.supernet.to_dict(),
            "halving": self.halving.to_dict(),
            "base": self.base.to_dict(),
        }

    @classmethod
    def from_user(cls, data: dict[str, Any]) -> StudyConfig:
        """Build from a user's configuration, with the defaults the model under search takes from
        the user's files (a checkpoint's depth and tokenizer, a tokenizer's vocabulary): see
        :meth:`~spanmix.proxies.subject.Subject.defaults`. A stored study has them written out,
        and :meth:`from_dict` reads it without any file."""
        proxy, base = data.get("proxy", {}), data.get("base", {})
        subject = subject_of(ProxyConfig.from_dict(proxy), BaseConfig.from_dict(base))
        return cls.from_dict(subject.defaults(data))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyConfig:
        """Build from ``{"study": {...}, "space": {...}, "proxy": ..., "data": ..., "train": ...}``,
        naming the section and key of anything unknown, of the wrong type or out of range. Reads no
        file: :meth:`check_files` is the preflight that does."""
        sections = {"study", *_SECTIONS}
        unknown = sorted(set(data) - sections)
        if unknown:
            raise ConfigError(f"unknown section(s) {unknown}; allowed: {sorted(sections)}")
        study = check_types(cls, data.get("study", {}), "study", skip=_SECTIONS)
        if "name" not in study:
            raise ConfigError("study.name is missing")
        base = BaseConfig.from_dict(data.get("base", {}))
        try:
            space = SearchSpace.from_dict(data.get("space", {}))
        except ScheduleError as err:
            raise ConfigError(f"space: {err}") from None
        return cls(
            space=space,
            proxy=ProxyConfig.from_dict(data.get("proxy", {})),
            data=DataConfig.from_dict(data.get("data", {})),
            train=TrainConfig.from_dict(data.get("train", {})),
            supernet=SupernetConfig.from_dict(data.get("supernet", {})),
            halving=HalvingConfig.from_dict(data.get("halving", {})),
            base=base,
            **study,
        )


_SECTIONS = ("space", "proxy", "data", "train", "supernet", "halving", "base")
