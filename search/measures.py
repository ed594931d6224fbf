"""How a trial turns a schedule into scores: the :class:`Measure` interface, and the standalone
measurement every other is checked against (the schedule's own model, trained, healed or scored
from scratch, once per training seed)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from spanmix.proxies.train import ProxyResult
from spanmix.search import record
from spanmix.search.config import StudyConfig
from spanmix.space import Schedule

STANDALONE = record.STANDALONE
# the fractions of its steps at which a standalone training is also scored (its learning curve)
CURVE = (0.25, 0.5)


class Measure(Protocol):
    """How a trial turns a schedule into scores. ``name`` labels the measurement in each trial
    (``standalone``, ``standalone-4x``, ``supernet``); ``key`` is everything that makes two
    measurements of one schedule interchangeable; ``replicates`` is how many runs that differ only
    in their seed make one measurement (1 where the measurement has no seed to vary); ``training``
    names one seed's training, so a seed trained for another measurement with the same training
    (a calibration's, a larger seed count's) is taken instead of trained again (None: never)."""

    name: str
    key: dict[str, Any]
    replicates: int
    training: str | None

    def __call__(self, schedule: Schedule, replicate: int = 0) -> ProxyResult: ...


class StandaloneMeasure:
    """Train the schedule's own proxy from scratch for ``budget`` times ``train.steps`` steps, in
    ``precision`` (the study's pinned one; None: resolve ``train.precision`` here), once per
    training seed of the study (``study.seeds``)."""

    def __init__(self, cfg: StudyConfig, budget: int = 1, precision: str | None = None, seeds: int | None = None,
                 name: str | None = None) -> None:
        self.cfg, self.train = cfg, replace(cfg.train, steps=cfg.train.steps * budget)
        self.name = name or (STANDALONE if budget == 1 else f"{STANDALONE}-{budget}x")
        self.replicates = seeds or cfg.seeds
        # the learning curve comes with every training: scoring on the way does not change it
        self.curve_at = tuple(round(f * self.train.steps) for f in CURVE)
        # one seed keeps the key it always had, so studies made before seeds keep their results
        self.key = {**cfg.measurement_key(), "train": self.train.to_dict(),
                    **({"seeds": self.replicates} if self.replicates > 1 else {})}
        if precision is not None:  # after the key: a pinned precision does not change what is measured
            self.train = replace(self.train, precision=precision)
        self.training: str | None = digest({**cfg.measurement_key(), "train": self.train.to_dict()})

    def __call__(self, schedule: Schedule, replicate: int = 0) -> ProxyResult:
        return self.measure(schedule, replicate)

    def measure(self, schedule: Schedule, replicate: int, until: int | None = None,
                checkpoint_dir: Path | None = None, start_from: Path | None = None) -> ProxyResult:
        """Replicate ``r`` trains with seed ``train.seed + r`` on its own stream of batches (on a
        checkpoint: heals with them, or scores it as it is); ``until``, ``checkpoint_dir`` and
        ``start_from`` stop it at a step, save it there and continue it."""
        return self.cfg.subject.measure(schedule, self.cfg.data, self.train, self.train.seed + replicate, replicate,
                                        self.curve_at, until, checkpoint_dir, start_from)


def digest(key: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able key."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
