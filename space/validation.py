"""Checks every config section shares: one error type, and messages that name the key, the value
and what is allowed, raised before any work starts.

Lives on the lowest floor (``space``) because the search space is the first section validated;
``proxies``, ``search`` and ``studies`` import it from here.
"""

from __future__ import annotations

import math
import re
import types
import typing
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")

# larger whole numbers are typos, not settings, and some consumers (NumPy seeds) take 32 bits only
MAX_WHOLE = 2**31 - 1
# the deepest released decoders have ~130 layers and the longest contexts ~1M tokens; beyond that a
# value is a typo, and counting its cost would take minutes and gigabytes before saying so
MAX_LAYERS = 256
MAX_CONTEXT = 2**20
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class ConfigError(ValueError):
    """A configuration value that cannot work; raised before any model is built or trained."""


def _describe(kind: Any) -> str:
    if kind is bool:
        return "true or false"
    if kind is int:
        return "a whole number"
    if kind is float:
        return "a finite number"
    if kind is str:
        return "a string"
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        # TOML has no null: an optional key is given or left out
        return " or ".join("left out" if a is type(None) else _describe(a) for a in args)
    if origin is tuple and args[-1] is Ellipsis:
        return f"a list of {_describe(args[0]).removeprefix('a ')}s"
    if origin is tuple:
        return f"a list of {len(args)} {_describe(args[0]).removeprefix('a ')}s"
    return getattr(kind, "__name__", str(kind))


def _fits(value: Any, kind: Any) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind is str:
        return isinstance(value, str)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        return any(value is None if a is type(None) else _fits(value, a) for a in args)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if args[-1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
    return True  # nested sections are checked by their own from_dict


def check_types(cls: type, data: Any, section: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """``data`` as keyword arguments for the dataclass ``cls``, after checking that it is a table,
    that every key is a field and that every value has the field's type (from its annotation).
    A single string stands for a one-item list."""
    if not isinstance(data, dict):
        raise ConfigError(f"[{section}] must be a table of keys (got {data!r})")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls) if f.name not in skip]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown {section} key(s) {unknown}; allowed: {sorted(known)}")
    out = {}
    for name, value in data.items():
        kind = hints[name]
        if typing.get_origin(kind) is tuple and isinstance(value, str):
            value = [value]
        if not _fits(value, kind):
            raise ConfigError(f"{section}.{name} must be {_describe(kind)} (got {value!r})")
        out[name] = tuple(value) if isinstance(value, list) else value
    return out


def from_section(cls: type[T], data: Any, section: str) -> T:
    """Build the dataclass ``cls`` from one config section (see :func:`check_types`)."""
    return cls(**check_types(cls, data, section))


def require_whole(obj: Any, section: str, names: tuple[str, ...], minimum: int = 1, maximum: int = MAX_WHOLE) -> None:
    """Each named field of ``obj`` must be an int (not a bool) in ``[minimum, maximum]``."""
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
            raise ConfigError(f"{section}.{name} must be a whole number from {minimum} to {maximum} (got {value!r})")


def require_positive(obj: Any, section: str, names: tuple[str, ...], zero: bool = False) -> None:
    """Each named field of ``obj`` must be a finite number > 0 (>= 0 with ``zero``)."""
    for name in names:
        value = getattr(obj, name)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < 0 or (value == 0 and not zero):
            raise ConfigError(f"{section}.{name} must be a finite number {'>=' if zero else '>'} 0 (got {value!r})")


def require_name(value: Any, what: str) -> str:
    """A study name is a name, not a path: letters, digits, ``.``, ``_`` and ``-``, at most 100."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ConfigError(
            f"{what} {value!r} is not a name; allowed: letters, digits, '.', '_' and '-', starting with a "
            "letter or digit, at most 100 characters"
        )
    return value
