"""Search strategies, one file each: how a study spends its budget (see :class:`Strategy`).

* ``standalone`` (:mod:`.standalone`): every schedule its sampler draws trains its own proxy from
  scratch; several workers share the draws.
* ``supernet`` (:mod:`.supernet`): one set of shared weights trained once, every schedule scored
  on it, the front confirmed standalone.
* ``halving`` (:mod:`.halving`): successive halving across budgets (asynchronous, as ASHA): every
  proposal trains to a first rung, the best ``1/eta`` of each rung continue from their checkpoint.

A strategy is loaded by name when a study asks for it, so the configuration can list and check the
names without importing any strategy's dependencies. A new strategy is a file here with a
:class:`Strategy` subclass and one line in ``REGISTRY``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from spanmix.search.strategies.base import RunOptions, Strategy
from spanmix.space import ConfigError

if TYPE_CHECKING:  # the configuration lists strategies by name: it imports this package
    from spanmix.search.config import StudyConfig

# name -> class, in the module of the same name
REGISTRY = {"standalone": "Standalone", "supernet": "Supernet", "halving": "Halving"}
NAMES = tuple(REGISTRY)


def check(name: str) -> str:
    """``name``, if a strategy is called so."""
    if name not in REGISTRY:
        raise ConfigError(f"study.strategy {name!r} is unknown; allowed: {', '.join(NAMES)}")
    return name


def get(name: str) -> Strategy:
    """The strategy called ``name``."""
    module = importlib.import_module(f"{__name__}.{check(name)}")
    return getattr(module, REGISTRY[name])()


def checked(cfg: StudyConfig, workers: int) -> Strategy:
    """The study's strategy, once it is known to take the study (its checkpoint, if any) with
    ``workers`` processes: refused before any work otherwise."""
    strategy = get(cfg.strategy)
    if cfg.base.model is not None and not strategy.takes_checkpoint:
        takes = [name for name in NAMES if get(name).takes_checkpoint]
        raise ConfigError(f"study.strategy {strategy.name!r} does not take a [base] checkpoint yet; allowed with "
                          f"base.model: {', '.join(takes)}")
    strategy.check(cfg, workers)
    return strategy


__all__ = ["NAMES", "REGISTRY", "RunOptions", "Strategy", "check", "checked", "get"]
