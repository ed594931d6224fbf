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

from spanmix.search.strategies.base import RunOptions, Strategy
from spanmix.space import ConfigError

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


__all__ = ["NAMES", "REGISTRY", "RunOptions", "Strategy", "check", "get"]
