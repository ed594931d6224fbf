"""A study's full description: what to search, how to measure, and how to search."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
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
    require_name,
    require_positive,
    require_whole,
)

SAMPLERS = ("nsga2", "tpe", "random", "grid")
GRID_LIMIT = 100_000  # schedules a grid queues as trials up front (about 1 ms each in SQLite)
COSTS = {
    "flops": "multiply-adds of a forward pass over the context (fvcore)",
    "prefill_flops": "the same count under its inference name: a forward over the context",
    "decode_flops": "multiply-adds to generate one token at the end of the context (fvcore)",
    "attention_flops": "multiply-adds of attention alone",
    "kv_cache": "KV-cache bytes to decode at the context",
    "latency": "measured forward+backward milliseconds",
}
QUALITIES = ("loss", "long_loss", "ppl", "recall")


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
        strategy: how the study spends its budget, one of :data:`spanmix.search.strategies.REGISTRY`
            (``standalone``, ``supernet``, ``halving``).
        sections: each strategy's own settings, ``(name, section)`` for every strategy that has
            a config section (``[supernet]``, ``[halving]``), defined in the strategy's file;
            read with :meth:`section`.
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
    sections: tuple[tuple[str, Any], ...] = field(default_factory=lambda: _sections({}))
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
        if self.sampler == "grid" and self.space.size() > GRID_LIMIT:
            raise ConfigError(f"study.sampler 'grid' queues every schedule, and the space holds {self.space.size():,}; "
                              f"allowed: spaces of up to {GRID_LIMIT:,} schedules (use another sampler or strategy)")
        if self.budget is not None:
            require_positive(self, "study", ("budget",))
        if self.budget is not None and not 0 < self.budget <= 1:
            raise ConfigError(f"study.budget must be a fraction in (0, 1] of the all-full cost (got {self.budget!r})")
        require_whole(self, "study", ("n_trials", "heartbeat_seconds", "seeds"))
        require_whole(self, "study", ("seed",), minimum=0)
        if self.space.context != self.data.seq_len:
            raise ConfigError(f"space.context={self.space.context} must equal data.seq_len={self.data.seq_len}")
        self.subject.check_study(self.seeds, self.cost, self.data.seq_len)

    def section(self, strategy: str) -> Any:
        """The ``[strategy]`` section's settings (each strategy defines its own)."""
        return dict(self.sections)[strategy]

    def with_section(self, strategy: str, section: Any) -> StudyConfig:
        """This configuration with ``section`` as the ``[strategy]`` section."""
        return replace(self, sections=tuple((n, section if n == strategy else s) for n, s in self.sections))

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
            "study": {f.name: getattr(self, f.name) for f in fields(self) if f.name not in (*_SECTIONS, "sections")},
            "space": self.space.to_dict(),
            "proxy": self.proxy.to_dict(),
            "data": self.data.to_dict(),
            "train": self.train.to_dict(),
            **{name: section.to_dict() for name, section in self.sections},
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
        sections = {"study", *_SECTIONS, *strategies.sections()}
        unknown = sorted(set(data) - sections)
        if unknown:
            raise ConfigError(f"unknown section(s) {unknown}; allowed: {sorted(sections)}")
        study = check_types(cls, data.get("study", {}), "study", skip=(*_SECTIONS, "sections"))
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
            sections=_sections(data),
            base=base,
            **study,
        )


_SECTIONS = ("space", "proxy", "data", "train", "base")


def _sections(data: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Each strategy's section, from ``data``'s table of its name (its defaults where absent)."""
    return tuple((name, section.from_dict(data.get(name, {}))) for name, section in strategies.sections().items())
