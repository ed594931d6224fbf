"""The layerwise strategy: which of a model's layers can go local, found layer by layer.

For ``placements = ["free"]`` (each layer full or local on its own), where a pretrained model's
layers are not interchangeable and its 2^L schedules cannot be listed. PostNAS (Jet-Nemotron,
arXiv 2508.15884) searches such a space with a beam over layer choices; this is the training-free
form of it, every schedule scored by the study's standalone measurement (a checkpoint zero-shot or
healed, a proxy trained, as the model under search is measured):

1. **Sensitivity**: the all-full schedule, then each layer made local alone, once per local layer
   the space allows (kind, window, sinks): ``L x V`` schedules. A layer's sensitivity is how much
   the study's quality worsens when it alone goes local.
2. **Beam**: from one local layer up to all of them, the ``beam`` best sets of local layers of each
   size are kept for each local kind, and each grows by each of its ``expand`` least sensitive
   remaining layers; every new candidate is scored. At most ``1 + L*V + (L-1)*V*beam*expand``
   scored schedules trace the front over cost, instead of 2^L. One local kind per schedule, as the
   space's own schedules; a beam per kind, so that a kind that harms more at first (a window
   without sinks) cannot crowd out one that wins with more local layers.

Candidates of one size rank by the study's quality, then (for an accuracy) by the probes' answer
loss, so that near-ties at accuracy 0 or 1 still rank; then by cost. Every scored schedule is a
trial of the study: the front, its noise, the dashboard and export read them as any other.

On a checkpoint that heals (``base.heal_steps > 0``) the beam ranks by zero-shot scores
(measurement ``zero-shot``: the checkpoint as it is, prefix reuse included) and heals only the
all-full schedule and each step's survivors, as halving heals only what its rungs promote: at most
``1 + L*V*beam`` healings instead of one per scored schedule. The front is the healed survivors. The
decisions follow from the stored scores alone, so a resumed run replays them and measures only
what is missing; ``study.n_trials`` caps the schedules scored. Each step's schedules are scored in
the order of their layers, so that a checkpoint scored zero-shot runs each one only from its first
layer unlike the one before (``[base] reuse``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Sequence

import optuna

from spanmix.search.config import StudyConfig
from spanmix.search.front import maximized
from spanmix.search.layers import sensitivities
from spanmix.search.measures import STANDALONE, StandaloneMeasure
from spanmix.search.objective import Objective
from spanmix.search.queue import finished, measure_schedules
from spanmix.search.record import ZERO_SHOT, Point
from spanmix.search.strategies.base import RunOptions
from spanmix.search.strategies.standalone import Standalone
from spanmix.search.view import StudyView
from spanmix.space import (
    FREE,
    ConfigError,
    Layer,
    Schedule,
    from_section,
    require_whole,
)

log = logging.getLogger("spanmix.layerwise")
SHOWN = 5  # layers named at each end of the sensitivity line of a deep model

Rank = tuple[float, float, float, str]  # what orders the candidates of one size, best first
Measure = Callable[[list[Schedule]], dict[Schedule, Rank]]


@dataclass(frozen=True)
class LayerwiseConfig:
    """How wide the layer-by-layer beam search is.

    Attributes:
        beam: sets of local layers kept at each size, for each local kind.
        expand: how many of its least sensitive remaining layers each kept set grows by.
    """

    beam: int = 3
    expand: int = 2

    def __post_init__(self) -> None:
        require_whole(self, "layerwise", ("beam", "expand"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerwiseConfig:
        return from_section(cls, data, "layerwise")


def with_local(n_layers: int, local: frozenset[int], kind: Layer) -> Schedule:
    """The schedule with ``kind`` at the layers of ``local`` and full attention elsewhere."""
    return Schedule(tuple(kind if i in local else Layer("full") for i in range(n_layers)))


def beam_search(n_layers: int, kinds: Sequence[Layer], beam: int, expand: int, measure: Measure,
                survivors: Callable[[list[Schedule]], None] = lambda kept: None) -> int:
    """Run the two phases (see the module); ``measure`` scores the schedules it can (within the
    budget, without failing) and returns their ranks; ``survivors`` is given the all-full schedule,
    then the sets each step keeps. Returns the size of the last scored step."""
    everything = frozenset(range(n_layers))
    singles = {(kind, frozenset({i})): with_local(n_layers, frozenset({i}), kind) for kind in kinds for i in everything}
    full = with_local(n_layers, frozenset(), kinds[0])
    ranks = measure([full, *singles.values()])
    sensitivity = {key: ranks[s] for key, s in singles.items() if s in ranks}
    kept = _best(sensitivity, sensitivity.__getitem__, beam)
    survivors([full, *(singles[key] for key in kept)] if full in ranks else [singles[key] for key in kept])
    size = 1
    while kept and size < n_layers:
        size += 1
        candidates: dict[tuple[Layer, frozenset[int]], Schedule] = {}
        for kind, local in kept:
            rest = sorted(everything - local, key=lambda i: (sensitivity.get((kind, frozenset({i})), _WORST), i))
            for i in rest[:expand]:
                candidates.setdefault((kind, local | {i}), with_local(n_layers, local | {i}, kind))
        ranks = measure(list(candidates.values()))
        scored = [key for key, s in candidates.items() if s in ranks]
        log.info("layerwise: %d local layers: %d of %d candidates scored%s", size, len(scored), len(candidates),
                 f", best {candidates[min(scored, key=lambda k: ranks[candidates[k]])].text}" if scored else "")
        if not scored:
            return size - 1
        kept = _best(scored, lambda k: ranks[candidates[k]], beam)
        survivors([candidates[key] for key in kept])
    return size


def _best(keys: Iterable[tuple[Layer, frozenset[int]]], rank: Callable[[tuple[Layer, frozenset[int]]], Rank],
          beam: int) -> list[tuple[Layer, frozenset[int]]]:
    """The ``beam`` best sets of each local kind."""
    ordered = sorted(keys, key=rank)
    return [key for kind in dict.fromkeys(k for k, _ in ordered) for key in [o for o in ordered if o[0] == kind][:beam]]


_WORST: Rank = (float("inf"), float("inf"), float("inf"), "")


def planned(cfg: StudyConfig) -> int:
    """The most schedules the search scores (fewer where candidates coincide)."""
    L, section = cfg.space.n_layers, settings(cfg)
    V = len(cfg.space.local_layers())
    return min(cfg.space.size(), 1 + L * V + (L - 1) * V * section.beam * section.expand)


def settings(cfg: StudyConfig) -> LayerwiseConfig:
    """The study's ``[layerwise]`` section."""
    return cfg.section("layerwise")


class Layerwise(Standalone):
    """Score each layer made local alone, then grow the local set by beam search."""

    name = "layerwise"
    measurement = STANDALONE
    section = LayerwiseConfig
    max_workers = 1
    single_process = "decides each step from the scores of the step before"

    def check(self, cfg: StudyConfig, workers: int) -> None:
        super().check(cfg, workers)
        if cfg.space.placements != (FREE,):
            raise ConfigError(f"study.strategy {self.name!r} chooses which layers go local, one at a time: set "
                              f"[space] placements = [\"{FREE}\"] (got {list(cfg.space.placements)})")

    def target(self, cfg: StudyConfig, n_trials: int) -> int:
        return min(n_trials, planned(cfg))

    def summary(self, view: StudyView) -> list[str]:
        ranked = ranking(view.config)
        table = sensitivities(view.points(ranked), view.config.quality, view.maximize)
        lines = []
        for token, rows in table.items():
            order = [f"{s.layer} ({s.change:+.4f})" for s in sorted(rows, key=lambda s: (s.change, s.layer))]
            shown = (", ".join(order) if len(order) <= 2 * SHOWN else
                     f"{', '.join(order[:SHOWN])} ... {', '.join(order[-SHOWN:])}")
            within = [s for s in rows if s.interval is not None and s.interval[0] <= 0 <= s.interval[1]]
            tied = (f"; {len(within)} of them within noise of all-full (95% interval holds 0)"
                    if any(s.interval is not None for s in rows) else "")
            lines.append(f"layerwise: {view.config.quality} change when one layer alone is {token} ({len(rows)} layers "
                         f"scanned), least sensitive first: {shown}{tied}")
        if lines:
            noise = view.noise()
            trust = (f"changes within the study's noise unit ({noise.unit:.4f}) are ties" if noise.unit
                     else "noise unmeasured: read small changes as ties")
            healed = (f" zero-shot, {view.finished(STANDALONE)} survivors healed"
                      if ranked != STANDALONE else "")
            lines.append(f"layerwise: {view.finished(ranked)} schedules scored{healed} of {view.config.space.size():,} "
                         f"in the space (beam {settings(view.config).beam}, expand {settings(view.config).expand}); {trust}")
        return lines

    def search(self, study: optuna.Study, cfg: StudyConfig, target: int, options: RunOptions, precision: str | None,
               seed: int) -> None:
        ranked = ranking(cfg)
        measures = [StandaloneMeasure(cfg, precision=precision)]
        if ranked != STANDALONE:
            measures.append(StandaloneMeasure(cfg.zero_shot, name=ZERO_SHOT))
        objective = Objective(cfg, *measures, retry_failed=options.retry_failed)
        deadline = time.monotonic() + options.timeout if options.timeout else None
        context = cfg.space.context

        def run(schedules: list[Schedule], measurement: str, cap: int | None) -> dict[str, Point]:
            """Measure at ``measurement`` those of ``schedules`` not yet measured (at most ``cap``
            more of that measurement's trials), in the order of their layers, so that each shares
            the longest prefix with the one before (zero-shot scoring reuses those layers' outputs,
            base.reuse); every point measured at it, by schedule."""
            texts = [s.canonical(context).text for s in schedules]
            known = {p.schedule for p in StudyView(study, cfg).points(measurement)}
            left = len(texts) if cap is None else max(0, cap - finished(study, measurement))
            todo = sorted([t for t in dict.fromkeys(texts) if t not in known][:left], key=str.split)
            timeout = None if deadline is None else deadline - time.monotonic()
            if todo and (timeout is None or timeout > 0):
                measure_schedules(study, objective, todo, measurement, timeout, options.callbacks())
            return {p.schedule: p for p in StudyView(study, cfg).points(measurement)}

        maximize = maximized(cfg.quality)

        def measure(schedules: list[Schedule]) -> dict[Schedule, Rank]:
            scored = run(schedules, ranked, target)
            return {s: _rank(scored[t], maximize) for s in schedules if (t := s.canonical(context).text) in scored}

        def heal(kept: list[Schedule]) -> None:
            if ranked != STANDALONE:
                run(kept, STANDALONE, None)

        kinds = cfg.space.local_layers()
        log.info("layerwise: %d layers x %d local kinds (%s) one at a time, then a beam of %d growing each set by "
                 "%d layers: at most %d schedules", cfg.space.n_layers, len(kinds), ", ".join(k.token for k in kinds),
                 settings(cfg).beam, settings(cfg).expand, planned(cfg))
        if ranked != STANDALONE:
            log.info("layerwise: ranking zero-shot, healing (%d steps) only the all-full schedule and each step's "
                     "survivors", cfg.base.heal_steps)
        reached = beam_search(cfg.space.n_layers, kinds, settings(cfg).beam, settings(cfg).expand, measure, heal)
        log.info("layerwise: the search reached %d of %d local layers", reached, cfg.space.n_layers)


def ranking(cfg: StudyConfig) -> str:
    """The measurement the beam ranks by: zero-shot where the checkpoint heals (healing only the
    survivors), else the study's own."""
    return ZERO_SHOT if cfg.subject.pretrained and cfg.trains else STANDALONE


def _rank(point: Point, maximize: bool) -> Rank:
    loss = point.scores.get("loss", 0.0) if maximize else 0.0
    return (-point.quality if maximize else point.quality, loss, point.cost, point.schedule)
