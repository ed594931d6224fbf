"""The search space: which schedules a study may try, and how a trial draws one."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Protocol, Sequence

from spanmix.space.schedule import (
    LOCAL_KINDS,
    PLACEMENTS,
    Layer,
    Schedule,
    ScheduleError,
    place_full,
)
from spanmix.space.validation import MAX_CONTEXT, MAX_LAYERS, check_types

FREE = "free"


class TrialLike(Protocol):
    """What :meth:`SearchSpace.suggest` needs; an ``optuna.Trial`` is one, without space importing Optuna."""

    def suggest_int(self, name: str, low: int, high: int) -> int: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class SearchSpace:
    """Candidate schedules for a model of ``n_layers`` layers at ``context`` tokens.

    Attributes:
        n_layers: depth of the model.
        context: the sequence length schedules are judged at; every window must be shorter.
        n_full: inclusive range of the number of full-attention layers.
        placements: named placements (``bottom``, ``top``, ``middle``, ``even``), or ``("free",)``
            to let every layer choose full or local on its own (any subset of layers).
        windows: the local windows to choose from.
        local: the local flavours to choose from (``sliding``, ``block``); one per schedule.
        per_layer_windows: each local layer picks its own window instead of one shared window.
        sinks: the sink counts a sliding schedule chooses from (``S<w>+<s>``; 0: none), one per
            schedule; block layers take none.
    """

    n_layers: int
    context: int
    n_full: tuple[int, int] = (0, -1)
    placements: tuple[str, ...] = PLACEMENTS
    windows: tuple[int, ...] = (128, 256, 512)
    local: tuple[str, ...] = ("sliding",)
    per_layer_windows: bool = False
    sinks: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        for name in ("n_full", "placements", "windows", "local", "sinks"):
            if not isinstance(getattr(self, name), (list, tuple)):
                raise ScheduleError(f"{name} must be a list (got {getattr(self, name)!r})")
        n_full = tuple(self.n_full)
        if len(n_full) != 2:
            raise ScheduleError(f"n_full must be a (low, high) pair (got {self.n_full!r})")
        if n_full[1] == -1 and isinstance(self.n_layers, int):
            n_full = (n_full[0], self.n_layers)  # -1 reads as "up to every layer"
        object.__setattr__(self, "n_full", n_full)
        for name in ("placements", "windows", "local", "sinks"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self._validate()

    def _validate(self) -> None:
        L, T = self.n_layers, self.context
        if not isinstance(L, int) or isinstance(L, bool) or not 1 <= L <= MAX_LAYERS:
            raise ScheduleError(f"n_layers must be a whole number from 1 to {MAX_LAYERS} (got {L!r})")
        if not isinstance(T, int) or isinstance(T, bool) or not 2 <= T <= MAX_CONTEXT:
            raise ScheduleError(f"context must be a whole number from 2 to {MAX_CONTEXT} (got {T!r})")
        lo, hi = self.n_full
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi <= L):
            raise ScheduleError(f"n_full range {self.n_full!r} is not within 0 <= low <= high <= n_layers={L}")
        if not self.placements:
            raise ScheduleError("placements is empty; allowed: " + ", ".join(PLACEMENTS + (FREE,)))
        for p in self.placements:
            if p not in PLACEMENTS + (FREE,):
                raise ScheduleError(f"placement {p!r} is unknown; allowed: {', '.join(PLACEMENTS + (FREE,))}")
        if FREE in self.placements and len(self.placements) > 1:
            raise ScheduleError(f"placement 'free' already covers every subset; use it alone (got {list(self.placements)})")
        if FREE in self.placements and self.n_full != (0, L):
            raise ScheduleError(
                f"with free placement each layer chooses on its own, so n_full cannot be bounded; "
                f"leave n_full at (0, {L}) (got {self.n_full!r})"
            )
        if not self.local:
            raise ScheduleError("local is empty; allowed: " + ", ".join(LOCAL_KINDS))
        for kind in self.local:
            if kind not in LOCAL_KINDS:
                raise ScheduleError(f"local flavour {kind!r} is unknown; allowed: {', '.join(LOCAL_KINDS)}")
        if len(set(self.local)) != len(self.local) or len(set(self.windows)) != len(self.windows):
            raise ScheduleError(f"windows {list(self.windows)} and local {list(self.local)} must not repeat values")
        needs_local = lo < L
        if needs_local and not self.windows:
            raise ScheduleError(f"windows is empty but n_full range {self.n_full} allows local layers")
        for w in self.windows:
            # w=1 is the same pattern in both flavours and w>=context is full attention:
            # either would make two points of the space one schedule.
            if not isinstance(w, int) or isinstance(w, bool) or not 2 <= w < T:
                raise ScheduleError(f"window {w!r} is outside the allowed range 2..{T - 1} (context={T})")
        self._validate_sinks()

    def _validate_sinks(self) -> None:
        T = self.context
        if not self.sinks or len(set(self.sinks)) != len(self.sinks):
            raise ScheduleError(f"sinks {list(self.sinks)} must be a non-empty list without repeats (0: no sinks)")
        for s in self.sinks:
            if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < T:
                raise ScheduleError(f"sinks {s!r} is outside the allowed range 0..{T - 1} (context={T})")
        if self.sinks != (0,) and "sliding" not in self.local:
            raise ScheduleError(f"sinks {list(self.sinks)}: only sliding layers keep sink tokens, and local "
                                f"{list(self.local)} has none; add 'sliding' or leave sinks at [0]")
        if self.windows and max(self.windows) + max(self.sinks) >= T:
            # such a layer sees every token: it is full attention, the same point as n_full + 1
            raise ScheduleError(f"window {max(self.windows)} with {max(self.sinks)} sinks covers the whole context {T}; "
                                f"allowed: window + sinks < {T}")

    def _sink_choices(self, kind: str) -> tuple[int, ...]:
        return self.sinks if kind == "sliding" else (0,)

    def local_layers(self) -> list[Layer]:
        """Every local layer a schedule of the space may use (kind, window and sinks)."""
        return [Layer(kind, w, s) for kind in self.local for w in self.windows  # type: ignore[arg-type]
                for s in self._sink_choices(kind)]

    # --- the candidates ------------------------------------------------------------------------
    def full_sets(self) -> list[tuple[int, ...]]:
        """Every distinct set of full-layer indices the space allows, in a stable order."""
        L = self.n_layers
        if self.placements == (FREE,):
            return [c for k in range(L + 1) for c in itertools.combinations(range(L), k)]
        seen: dict[tuple[int, ...], None] = {}
        for k in range(self.n_full[0], self.n_full[1] + 1):
            for p in self.placements:
                seen.setdefault(place_full(L, k, p))
        return list(seen)

    def _local_choices(self, n_local: int) -> int:
        if n_local == 0:
            return 1
        per_schedule = len(self.windows) ** n_local if self.per_layer_windows else len(self.windows)
        return sum(len(self._sink_choices(kind)) for kind in self.local) * per_schedule

    def size(self) -> int:
        """The number of distinct schedules (exact; no enumeration, so it is cheap for large spaces)."""
        L = self.n_layers
        if self.placements == (FREE,):  # 2^L sets: counted by size, not listed
            return sum(math.comb(L, k) * self._local_choices(L - k) for k in range(L + 1))
        return sum(self._local_choices(L - len(s)) for s in self.full_sets())

    def enumerate(self, limit: int = 100_000) -> Iterator[Schedule]:
        """Every schedule of the space once; refuses spaces larger than ``limit``."""
        size = self.size()
        if size > limit:
            raise ScheduleError(f"the space holds {size} schedules, more than limit={limit} to enumerate")
        for full in self.full_sets():
            n_local = self.n_layers - len(full)
            if n_local == 0:
                yield self._schedule(full, "sliding", ())
                continue
            window_sets = (
                itertools.product(self.windows, repeat=n_local)
                if self.per_layer_windows
                else ((w,) * n_local for w in self.windows)
            )
            window_sets = list(window_sets)
            for kind in self.local:
                for sinks, windows in itertools.product(self._sink_choices(kind), window_sets):
                    yield self._schedule(full, kind, windows, sinks)

    def _schedule(self, full: Sequence[int], kind: str, windows: Sequence[int], sinks: int = 0) -> Schedule:
        it = iter(windows)
        return Schedule(
            tuple(Layer("full") if i in full else Layer(kind, next(it), sinks) for i in range(self.n_layers))  # type: ignore[arg-type]
        )

    def suggest(self, trial: TrialLike) -> Schedule:
        """Draw a schedule with interpretable parameters: ``n_full``, ``placement``, ``local``,
        ``window`` (or ``window_<layer>`` per local layer, or ``full_<layer>`` with free placement),
        ``sinks`` (sliding schedules).

        Parameters that do not matter for the draw (a placement when every layer is full) are not
        suggested, so samplers never learn from noise.
        """
        L = self.n_layers
        if self.placements == (FREE,):
            full = tuple(i for i in range(L) if trial.suggest_categorical(f"full_{i}", [False, True]))
        else:
            lo, hi = self.n_full
            k = trial.suggest_int("n_full", lo, hi) if hi > lo else lo
            if 0 < k < L and len(self.placements) > 1:
                placement = trial.suggest_categorical("placement", list(self.placements))
            else:
                placement = self.placements[0]
            full = place_full(L, k, placement)
        n_local = L - len(full)
        if n_local == 0:
            return self._schedule(full, "sliding", ())
        kind = trial.suggest_categorical("local", list(self.local)) if len(self.local) > 1 else self.local[0]
        if self.per_layer_windows:
            local_layers = [i for i in range(L) if i not in full]
            windows = [trial.suggest_categorical(f"window_{i}", list(self.windows)) for i in local_layers]
        else:
            w = trial.suggest_categorical("window", list(self.windows)) if len(self.windows) > 1 else self.windows[0]
            windows = [w] * n_local
        choices = self._sink_choices(kind)
        sinks = trial.suggest_categorical("sinks", list(choices)) if len(choices) > 1 else choices[0]
        return self._schedule(full, kind, windows, sinks)

    def sample(self, rng: random.Random) -> Schedule:
        """One schedule drawn as a random sampler would draw it: each parameter of :meth:`suggest`
        uniform over its choices (so ``n_full`` is uniform, not weighted by how many schedules
        each count has)."""
        return self.suggest(_RandomTrial(rng))

    def extremes(self) -> tuple[Schedule, Schedule]:
        """(cheapest, dearest): the schedules with the fewest and the most attended query-key pairs
        at ``context``. Pairs grow with the number of full layers and the window and do not depend
        on where the full layers sit, so both are built directly, for spaces of any size."""
        def pairs(layer: Layer) -> int:
            return layer.attended_pairs(self.context)

        lo, hi = self.n_full
        placement = self.placements[0] if self.placements != (FREE,) else "bottom"
        narrow, wide = min(self.windows, default=2), max(self.windows, default=2)
        cheapest = min(((k, min(self._sink_choices(k))) for k in self.local), key=lambda c: pairs(Layer(c[0], narrow, c[1])))  # type: ignore[arg-type]
        dearest = max(((k, max(self._sink_choices(k))) for k in self.local), key=lambda c: pairs(Layer(c[0], wide, c[1])))  # type: ignore[arg-type]
        cheap = self._schedule(place_full(self.n_layers, lo, placement), cheapest[0], [narrow] * (self.n_layers - lo), cheapest[1])
        dear = self._schedule(place_full(self.n_layers, hi, placement), dearest[0], [wide] * (self.n_layers - hi), dearest[1])
        return cheap, dear

    def params_of(self, schedule: Schedule) -> dict[str, Any]:
        """The parameters :meth:`suggest` draws ``schedule`` from (without listing the space, so
        it serves spaces of any size); refuses a schedule the space does not hold."""
        trial = _Matching(schedule)
        if not self.contains(schedule) or self.suggest(trial) != schedule:
            raise ScheduleError(f"schedule {schedule.text!r} is not in the search space")
        return trial.params

    def all_params(self) -> Iterator[tuple[dict[str, Any], Schedule]]:
        """Every distinct schedule with the parameters :meth:`suggest` would give it, so a grid of
        the space can be enqueued into a study in the sampler's own terms."""
        seen: set[Schedule] = set()
        path: list[int] | None = []
        while path is not None:
            replay = _Replay(path)
            schedule = self.suggest(replay)
            if schedule not in seen:
                seen.add(schedule)
                yield dict(replay.params), schedule
            path = replay.next_path()

    def contains(self, schedule: Schedule) -> bool:
        """Whether ``schedule`` is one of this space's candidates."""
        if schedule.n_layers != self.n_layers:
            return False
        if self.placements != (FREE,) and schedule.full_indices not in set(self.full_sets()):
            return False
        local = [layer for layer in schedule.layers if not layer.is_full]
        if not local:
            return True
        kinds = {layer.kind for layer in local}
        windows = [layer.window for layer in local]
        sinks = {layer.sinks for layer in local}
        return (
            len(kinds) == 1
            and kinds <= set(self.local)
            and set(windows) <= set(self.windows)
            and (self.per_layer_windows or len(set(windows)) == 1)
            and len(sinks) == 1
            and sinks <= set(self._sink_choices(local[0].kind))
        )

    def to_dict(self) -> dict[str, Any]:
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if self.sinks == (0,):  # a space without sinks reads as it did before they existed, so stored studies compare equal
            del data["sinks"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        return cls(**check_types(cls, data, "space"))


class _RandomTrial:
    """A trial that answers each suggestion uniformly at random from ``rng``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def suggest_int(self, name: str, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self.rng.choice(list(choices))


class _Matching:
    """A trial that answers each suggestion with the value that draws one given schedule."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule, self.params = schedule, {}  # type: ignore[var-annotated]
        local = [layer for layer in schedule.layers if not layer.is_full]
        first = local[0] if local else Layer("sliding", 1)
        full = schedule.full_indices
        n = schedule.n_layers
        self.answers: dict[str, Any] = {"n_full": len(full), "local": first.kind, "window": first.window,
                                        "sinks": first.sinks}
        self.answers |= {f"full_{i}": layer.is_full for i, layer in enumerate(schedule.layers)}
        self.answers |= {f"window_{i}": layer.window for i, layer in enumerate(schedule.layers)}
        self.placement = next((p for p in PLACEMENTS if place_full(n, len(full), p) == full), None)

    def _answer(self, name: str, choices: Sequence[Any]) -> Any:
        value = self.placement if name == "placement" else self.answers[name]
        self.params[name] = value if value in choices else choices[0]  # not drawable: suggest's result differs
        return self.params[name]

    def suggest_int(self, name: str, low: int, high: int) -> int:
        return self._answer(name, range(low, high + 1))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._answer(name, list(choices))


class _Replay:
    """A trial that answers each suggestion with the option a path of indices names (0 past its
    end), recording how many options each decision had; successive paths walk every branch."""

    def __init__(self, path: list[int]) -> None:
        self.path, self.sizes, self.params = list(path), [], {}  # type: ignore[var-annotated]

    def _pick(self, name: str, options: Sequence[Any]) -> Any:
        i = len(self.sizes)
        if i == len(self.path):
            self.path.append(0)
        self.sizes.append(len(options))
        self.params[name] = options[self.path[i]]
        return self.params[name]

    def suggest_int(self, name: str, low: int, high: int) -> int:
        return self._pick(name, range(low, high + 1))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._pick(name, list(choices))

    def next_path(self) -> list[int] | None:
        for j in reversed(range(len(self.sizes))):
            if self.path[j] + 1 < self.sizes[j]:
                return self.path[:j] + [self.path[j] + 1]
        return None
