"""Search strategies, one file each: how a study spends its budget (see :class:`Strategy`).

* ``standalone`` (:mod:`.standalone`): every schedule its sampler draws trains its own proxy from
  scratch; several workers share the draws.
* ``supernet`` (:mod:`.supernet`): one set of shared weights trained once, every schedule scored
  on it, the front confirmed standalone.
* ``halving`` (:mod:`.halving`): successive halving across budgets (asynchronous, as ASHA): every
  proposal trains to a first rung, the best ``1/eta`` of each rung continue from their checkpoint.
* ``layerwise`` (:mod:`.layerwise`): for free placements (which layers go local): each layer made
  local alone, then the set of local layers grown by beam search from the least sensitive.

A strategy is loaded by name, when a study asks for it or a configuration reads its section
(``[supernet]``, ``[halving]``: each defined in its strategy's file). A new strategy is a file with a
:class:`Strategy` subclass and one line in ``REGISTRY`` (CONTRIBUTING.md).
"""

from __future__ import annotations

import importlib

from spanmix.search.strategies.base import RunOptions, Strategy
from spanmix.space import ConfigError

# name -> "module:Class" (a bare "Class": the module of this package named as the strategy)
REGISTRY = {"standalone": "Standalone", "supernet": "Supernet", "halving": "Halving", "layerwise": "Layerwise"}
NAMES = tuple(REGISTRY)


def check(name: str) -> str:
    """``name``, if a strategy is called so."""
    if name not in REGISTRY:
        raise ConfigError(f"study.strategy {name!r} is unknown; allowed: {', '.join(REGISTRY)}")
    return name


def get(name: str) -> Strategy:
    """The strategy called ``name``."""
    return _class(check(name))()


def _class(name: str) -> type[Strategy]:
    module, _, cls = REGISTRY[name].rpartition(":")
    return getattr(importlib.import_module(module or f"{__name__}.{name}"), cls)


def sections() -> dict[str, type]:
    """The config section of each strategy that has one, by the strategy's name (its table in a
    config file): each is defined in its strategy's own file."""
    return {name: cls.section for name in REGISTRY if (cls := _class(name)).section is not None}


__all__ = ["NAMES", "REGISTRY", "RunOptions", "Strategy", "check", "get", "sections"]
