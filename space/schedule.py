"""Attention schedules: one attention kind per layer.

A schedule is an immutable value. Its canonical text form (``"F S256 S256 F B512"``) is what it
hashes, compares and serialises by, so two ways of writing the same mix are one candidate.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Sequence

from spanmix.space.validation import MAX_LAYERS, ConfigError

Kind = Literal["full", "sliding", "block"]
KINDS: tuple[Kind, ...] = ("full", "sliding", "block")
LOCAL_KINDS: tuple[Kind, ...] = ("sliding", "block")
_LETTER: dict[Kind, str] = {"full": "F", "sliding": "S", "block": "B"}
_KIND_OF_LETTER = {letter: kind for kind, letter in _LETTER.items()}


class ScheduleError(ConfigError):
    """A schedule or search space that cannot be built; the message names the field and value."""


@dataclass(frozen=True)
class Layer:
    """One layer's attention.

    ``full``: causal attention over the whole prefix. ``sliding``: each token sees itself and the
    ``window - 1`` tokens before it, and with ``sinks`` (StreamingLLM's attention sinks, written
    ``S<window>+<sinks>``) the first ``sinks`` tokens of the sequence as well. ``block`` (MASFormer's
    block-sparse attention): the sequence is cut into blocks of ``window`` tokens and each token
    sees the earlier tokens of its own block.
    """

    kind: Kind
    window: int | None = None
    sinks: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ScheduleError(f"layer kind {self.kind!r} is unknown; allowed: {', '.join(KINDS)}")
        if self.kind == "full":
            if self.window is not None:
                raise ScheduleError(f"a full layer takes no window (got window={self.window!r})")
        elif not isinstance(self.window, int) or isinstance(self.window, bool) or self.window < 1:
            raise ScheduleError(f"a {self.kind} layer needs an integer window >= 1 (got window={self.window!r})")
        if not isinstance(self.sinks, int) or isinstance(self.sinks, bool) or self.sinks < 0:
            raise ScheduleError(f"sinks must be a whole number >= 0 (got sinks={self.sinks!r})")
        if self.sinks and self.kind != "sliding":
            raise ScheduleError(f"only a sliding layer keeps sink tokens; a {self.kind} layer takes none (got sinks={self.sinks})")

    @property
    def is_full(self) -> bool:
        return self.kind == "full"

    @property
    def span(self) -> int | None:
        """The most keys a token of a long sequence sees (``window + sinks``; None when full). A
        sliding layer with sinks allows as many pairs, and keeps as many keys, as a plain sliding
        layer of this window: only which keys differs."""
        return None if self.window is None else self.window + self.sinks

    @property
    def token(self) -> str:
        if self.window is None:
            return "F"
        return f"{_LETTER[self.kind]}{self.window}" + (f"+{self.sinks}" if self.sinks else "")

    @classmethod
    def parse(cls, token: str) -> Layer:
        token = token.strip()
        kind = _KIND_OF_LETTER.get(token[:1].upper()) if token else None
        if kind is None:
            raise ScheduleError(f"layer token {token!r} is not F, S<window>, S<window>+<sinks> or B<window>")
        if kind == "full":
            if token.upper() != "F":
                raise ScheduleError(f"layer token {token!r}: a full layer is written 'F'")
            return cls("full")
        digits, plus, sinks = token[1:].partition("+")
        if not _whole(digits):
            raise ScheduleError(f"layer token {token!r}: the window after {token[0]!r} must be a whole number")
        if plus and not _whole(sinks):
            raise ScheduleError(f"layer token {token!r}: the sink count after '+' must be a whole number")
        try:
            return cls(kind, int(digits), int(sinks) if plus else 0)
        except ScheduleError as err:
            raise ScheduleError(f"layer token {token!r}: {err}") from None

    def canonical(self, context: int) -> Layer:
        """A local window (with its sinks) that covers the whole context is full attention; a
        window of one token is the same (the token itself) in both local flavours, written ``S1``."""
        if self.window is None:
            return self
        if self.span >= context:  # type: ignore[operator]
            return Layer("full")
        if self.sinks:
            return self
        if self.window == 1:
            return Layer("sliding", 1)
        return self

    def attended_pairs(self, seq_len: int) -> int:
        """Query-key pairs this pattern allows over a causal sequence of ``seq_len`` tokens.

        This is the attention cost MASFormer counts: full causal attention has T(T+1)/2 entries.
        """
        t = seq_len
        if self.span is None or self.span >= t:
            return t * (t + 1) // 2
        w = self.span
        if self.kind == "sliding":
            # the first w tokens see their whole prefix, the rest see exactly w (sinks included)
            return w * (w + 1) // 2 + (t - w) * w
        full_blocks, tail = divmod(t, w)
        return full_blocks * (w * (w + 1) // 2) + tail * (tail + 1) // 2

    def kv_tokens(self, context: int) -> int:
        """The most keys and values a decoder must hold for this layer over a context of
        ``context`` tokens: all of them for a full layer, ``window`` for a sliding layer, and
        ``window`` for a block layer too (its cache empties at each block boundary, but it peaks at
        a full block), and ``window + sinks`` for a sliding layer with sinks."""
        return context if self.span is None else min(self.span, context)

    def decode_keys(self, position: int) -> int:
        """Keys the token at (1-based) ``position`` attends to, itself included: what generating it
        costs this layer. Full: ``position``; sliding: at most ``window``; block: its place in its
        block. Equal to ``attended_pairs(position) - attended_pairs(position - 1)``."""
        if self.span is None or self.span >= position:
            return position
        return self.span if self.kind == "sliding" else (position - 1) % self.window + 1  # type: ignore[operator]


def _whole(digits: str) -> bool:
    return digits.isascii() and digits.isdigit()  # not '²' or Arabic-Indic digits


@dataclass(frozen=True)
class Schedule:
    """One attention :class:`Layer` per transformer layer, bottom (input side) first."""

    layers: tuple[Layer, ...]

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        if not layers:
            raise ScheduleError("a schedule needs at least one layer (got layers=())")
        if len(layers) > MAX_LAYERS:
            raise ScheduleError(f"a schedule of {len(layers)} layers is too deep; allowed: 1 to {MAX_LAYERS}")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise ScheduleError(f"layers[{i}] is {layer!r}, not a Layer")
        object.__setattr__(self, "layers", layers)

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> Schedule:
        """Read the text form, e.g. ``"F S256 S256 F"``; tokens may be separated by spaces or commas."""
        tokens = text.replace(",", " ").split()
        if not tokens:
            raise ScheduleError(f"schedule text {text!r} holds no layer")
        layers = []
        for i, token in enumerate(tokens):
            try:
                layers.append(Layer.parse(token))
            except ScheduleError as err:
                raise ScheduleError(f"layer {i}: {err}") from None
        return cls(tuple(layers))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schedule:
        if not isinstance(data, dict) or "layers" not in data:
            raise ScheduleError(f"a schedule dict needs a 'layers' list (got {data!r:.80})")
        layers = data["layers"]
        if isinstance(layers, str):
            return cls.parse(layers)
        return cls.parse(" ".join(str(token) for token in layers))

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        return cls.from_dict(json.loads(text))

    # --- views ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __str__(self) -> str:
        return self.text

    @property
    def text(self) -> str:
        return " ".join(layer.token for layer in self.layers)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def full_indices(self) -> tuple[int, ...]:
        return tuple(i for i, layer in enumerate(self.layers) if layer.is_full)

    @property
    def n_full(self) -> int:
        return len(self.full_indices)

    @property
    def windows(self) -> tuple[int, ...]:
        """The distinct local windows, ascending."""
        return tuple(sorted({layer.window for layer in self.layers if layer.window is not None}))

    @property
    def hash(self) -> str:
        """A stable 16-hex-digit digest of the text form (the same on every machine and run)."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [layer.token for layer in self.layers], "text": self.text, "hash": self.hash}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    # --- checks and normal form -----------------------------------------------------------------
    def validate(self, context: int) -> Schedule:
        """Check every window fits ``context`` tokens; returns self so calls chain."""
        if not isinstance(context, int) or context < 1:
            raise ScheduleError(f"context must be a whole number >= 1 (got {context!r})")
        for i, layer in enumerate(self.layers):
            if layer.window is not None and layer.window > context:
                raise ScheduleError(
                    f"layer {i}: window {layer.window} is longer than the context {context}; "
                    f"allowed: 1..{context}"
                )
            if layer.sinks >= context:
                raise ScheduleError(f"layer {i}: {layer.sinks} sink tokens is not below the context {context}; "
                                    f"allowed: 0..{context - 1}")
        return self

    def canonical(self, context: int) -> Schedule:
        """The normal form at ``context``: what two schedules must share to compute the same thing."""
        self.validate(context)
        return Schedule(tuple(layer.canonical(context) for layer in self.layers))

    def attended_pairs(self, seq_len: int) -> tuple[int, ...]:
        return tuple(layer.attended_pairs(seq_len) for layer in self.layers)

    def attention_ratio(self, seq_len: int) -> float:
        """Attention entries relative to the all-full schedule of the same depth."""
        full = len(self.layers) * seq_len * (seq_len + 1) // 2
        return sum(self.attended_pairs(seq_len)) / full

    def kv_tokens(self, context: int) -> tuple[int, ...]:
        return tuple(layer.kv_tokens(context) for layer in self.layers)

    def decode_keys(self, position: int) -> tuple[int, ...]:
        return tuple(layer.decode_keys(position) for layer in self.layers)


# --- builders -------------------------------------------------------------------------------------
PLACEMENTS = ("bottom", "top", "middle", "even")


def place_full(n_layers: int, n_full: int, placement: str | Sequence[int]) -> tuple[int, ...]:
    """Indices of the full layers for a named placement or an explicit list.

    ``bottom``: the first layers (input side); ``top``: the last; ``middle``: a centred run;
    ``even``: spread evenly with a full layer closing each group, as Gemma-style interleaving
    (6 layers, 1 full -> layer 5; 8 layers, 2 full -> layers 3 and 7).
    """
    if not isinstance(n_layers, int) or n_layers < 1:
        raise ScheduleError(f"n_layers must be a whole number >= 1 (got {n_layers!r})")
    if not isinstance(placement, str):
        indices = tuple(sorted(set(int(i) for i in placement)))
        bad = [i for i in indices if not 0 <= i < n_layers]
        if bad:
            raise ScheduleError(f"full-layer indices {bad} are outside 0..{n_layers - 1}")
        if len(indices) != n_full:
            raise ScheduleError(f"n_full={n_full} but {len(indices)} explicit indices were given: {list(indices)}")
        return indices
    if not isinstance(n_full, int) or not 0 <= n_full <= n_layers:
        raise ScheduleError(f"n_full must be a whole number in 0..{n_layers} (got {n_full!r})")
    if placement == "bottom":
        return tuple(range(n_full))
    if placement == "top":
        return tuple(range(n_layers - n_full, n_layers))
    if placement == "middle":
        start = (n_layers - n_full) // 2
        return tuple(range(start, start + n_full))
    if placement == "even":
        return tuple((i + 1) * n_layers // n_full - 1 for i in range(n_full))
    raise ScheduleError(f"placement {placement!r} is unknown; allowed: {', '.join(PLACEMENTS)} or a list of indices")


def placement_of(schedule: Schedule) -> str:
    """The named placement of a schedule's full layers (the first that fits, in ``PLACEMENTS``
    order), ``"none"`` or ``"all"`` when there is nothing to place, else ``"other"``."""
    n, full = schedule.n_layers, schedule.full_indices
    if len(full) in (0, n):
        return "none" if not full else "all"
    return next((p for p in PLACEMENTS if place_full(n, len(full), p) == full), "other")


def build(
    n_layers: int,
    n_full: int,
    placement: str | Sequence[int] = "even",
    window: int | Sequence[int] = 256,
    local: Kind = "sliding",
    sinks: int = 0,
) -> Schedule:
    """A schedule with ``n_full`` full layers at ``placement`` and ``local`` attention elsewhere.

    ``window`` is one window for every local layer, or a list with one window per local layer
    (bottom first); ``sinks`` the sink tokens every (sliding) local layer keeps.
    """
    if local not in LOCAL_KINDS:
        raise ScheduleError(f"local flavour {local!r} is unknown; allowed: {', '.join(LOCAL_KINDS)}")
    full = set(place_full(n_layers, n_full, placement))
    n_local = n_layers - len(full)
    windows: list[int]
    if isinstance(window, int):
        windows = [window] * n_local
    else:
        windows = list(window)
        if len(windows) != n_local:
            raise ScheduleError(f"window: {len(windows)} windows given for {n_local} local layers")
    it: Iterable[int] = iter(windows)
    return Schedule(tuple(Layer("full") if i in full else Layer(local, next(it), sinks) for i in range(n_layers)))
