"""The built-in tasks in a tokenizer's own tokens, for ``data.tokenizer``.

A pretrained checkpoint reads text. Byte ids 0-255, which the built-in tasks are otherwise made of,
are arbitrary tokens of its vocabulary, so a zero-shot probe in bytes asks it a question it cannot
read. With a tokenizer every built-in task is written as text and tokenized with it:

* ``passkey``: filler sentences, "The pass key is 71432. Remember it. 71432 is the pass key." at a
  random depth, and "What is the pass key? The pass key is 71432" closing the sample.
* ``recall`` and ``mqar``: facts "The code of amber is 5." and the same sentences asked at the end;
  recall spreads ``fact_copies`` copies of 16 keys with 8 values over the context, mqar writes its
  ``n_pairs`` facts once, in one run, from ``n_symbols`` names and numbers.
* ``multihop``: RULER's variable tracking, "VAR amber = 12." then "VAR birch = VAR amber.", beside a
  decoy chain, and "VAR birch =" asked at the end.
* ``copy``: random words, the last quarter repeating an earlier quarter.
* ``code`` and ``prose``: windows of their documents' tokens.

Every piece of text (a word, a number, a sentence's fixed part) is tokenized on its own and the
pieces are joined in token space. Whatever the tokenizer merges, positions and distances are then
exact, a probe's lines fit slots of a known token length, and the shortest ``seq_len`` that holds a
sample is known before any sample is made. An answer is scored on its tokens after those every
candidate answer shares (a space before a digit, say), which the question already gives away.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from spanmix.proxies import files as user_files
from spanmix.proxies.tasks import (
    FILLER_TEXT,
    IGNORE,
    Sample,
    Task,
    close_with_copy,
    corpus,
    probe_task,
    text_task,
)
from spanmix.space import ConfigError

if TYPE_CHECKING:
    from spanmix.proxies.data import DataConfig

# 64 names for keys and variables: one ordinary word each, so that any tokenizer reads them
NAMES = (
    "amber", "birch", "cedar", "delta", "eagle", "flint", "grape", "harbor", "ivory", "jade", "kettle", "lemon",
    "maple", "north", "olive", "pearl", "quartz", "raven", "silver", "tiger", "umber", "violet", "willow", "yarrow",
    "zinc", "anchor", "basil", "coral", "dune", "ember", "fern", "garnet", "hazel", "iris", "juniper", "kelp",
    "lotus", "meadow", "nutmeg", "onyx", "pine", "quill", "river", "sage", "thyme", "urchin", "vapor", "walnut",
    "acorn", "bronze", "clover", "daisy", "elm", "frost", "gravel", "heron", "indigo", "jasper", "koala", "lilac",
    "marble", "nickel", "orchid", "pepper",
)
SENTENCES = tuple(" " + s.strip() + "." for s in FILLER_TEXT.decode().split(".") if s.strip())
# passkey lines; the digits go between the pieces
NEEDLE, REMEMBER, NEEDLE_END = " The pass key is", ". Remember it.", " is the pass key."
QUESTION = " What is the pass key? The pass key is"
FACT, IS = " The code of", " is"
VAR, EQUALS = " VAR", " ="


@lru_cache(maxsize=4096)
def _encode(tokenizer: str, text: str) -> tuple[int, ...]:
    ids = tuple(user_files.load_tokenizer(tokenizer).encode(text, add_special_tokens=False).ids)
    if not ids:
        raise ConfigError(f"data.tokenizer {tokenizer!r} turns {text!r} into no tokens; it cannot write the built-in tasks")
    return ids


def _ids(cfg: DataConfig, text: str) -> tuple[int, ...]:
    return _encode(cfg.tokenizer, text)  # type: ignore[arg-type]


def _longest(cfg: DataConfig, texts: tuple[str, ...] | list[str]) -> int:
    return max(len(_ids(cfg, t)) for t in texts)


def _shared(cfg: DataConfig, texts: tuple[str, ...] | list[str]) -> int:
    """How many leading ids every one of ``texts`` has in common: given away before the answer."""
    seqs = [_ids(cfg, t) for t in texts]
    n = 0
    while all(len(s) > n and s[n] == seqs[0][n] for s in seqs):
        n += 1
    return n


class Line:
    """One line of pieces in token space: its ids, and where each piece starts."""

    def __init__(self, cfg: DataConfig, *pieces: str) -> None:
        self.ids: list[int] = []
        self.starts: list[int] = []
        for piece in pieces:
            self.starts.append(len(self.ids))
            self.ids += _ids(cfg, piece)

    def __len__(self) -> int:
        return len(self.ids)

    def span(self, cfg: DataConfig, piece: int, options: tuple[str, ...] | list[str]) -> range:
        """The positions (in the line) scored when piece ``piece``, one of ``options``, is an answer."""
        end = self.starts[piece + 1] if piece + 1 < len(self.starts) else len(self.ids)
        return range(self.starts[piece] + _shared(cfg, options), end)


def _filler(cfg: DataConfig, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` tokens of filler sentences in a random order, starting inside the first."""
    out: list[int] = []
    while len(out) < n + len(SENTENCES[0]):
        out += _ids(cfg, SENTENCES[int(rng.integers(len(SENTENCES)))])
    shift = int(rng.integers(0, len(_ids(cfg, SENTENCES[0]))))
    return np.asarray(out[shift : shift + n], dtype=np.int64)


def _numbers(n: int) -> tuple[str, ...]:
    return tuple(f" {v}" for v in range(n))


def _names(n: int) -> tuple[str, ...]:
    return tuple(f" {w}" for w in NAMES[:n])


def _unscored(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Targets and distances of a sample before any answer is written: nothing scored."""
    return np.full(cfg.seq_len + 1, IGNORE), np.full(cfg.seq_len + 1, -1)


def _ask(tokens: np.ndarray, targets: np.ndarray, dist: np.ndarray, at: int, line: Line, span: range,
         distance: int) -> None:
    """Write ``line`` at ``at`` and score its ``span``, recording ``distance`` at the inputs that
    predict it (back to the fact, or the hops)."""
    tokens[at : at + len(line)] = line.ids
    for i in span:
        targets[at + i] = tokens[at + i]
        dist[at + i - 1] = distance


# --- passkey ---------------------------------------------------------------------------------------
def _digit_options(j: int) -> tuple[str, ...]:
    return tuple((" " if j == 0 else "") + str(d) for d in range(10))


def _key_pieces(digits: list[int]) -> list[str]:
    return [_digit_options(j)[d] for j, d in enumerate(digits)]


def _passkey_lengths(cfg: DataConfig) -> tuple[int, int]:
    key = sum(_longest(cfg, _digit_options(j)) for j in range(cfg.passkey_digits))
    fixed = len(Line(cfg, NEEDLE, REMEMBER, NEEDLE_END))
    return fixed + 2 * key, len(_ids(cfg, QUESTION)) + key


def passkey(cfg: DataConfig, rng: np.random.Generator) -> Sample:
    t = cfg.seq_len + 1
    key = _key_pieces([int(d) for d in rng.integers(0, 10, size=cfg.passkey_digits)])
    needle = Line(cfg, NEEDLE, *key, REMEMBER, *key, NEEDLE_END)
    question = Line(cfg, QUESTION, *key)
    targets, dist = _unscored(cfg)
    tokens = _filler(cfg, rng, t)
    q0 = t - len(question)
    at = int(rng.integers(0, q0 - len(needle) - cfg.min_distance + 1))
    tokens[at : at + len(needle)] = needle.ids
    for j in range(len(key)):  # each digit, back to the same digit in the needle
        _ask(tokens, targets, dist, q0, question, question.span(cfg, 1 + j, _digit_options(j)),
             q0 + question.starts[1 + j] - at - needle.starts[1 + j])
    return tokens, targets, dist


# --- recall and mqar -------------------------------------------------------------------------------
def _fact_options(keys: int, values: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return _names(keys), _numbers(values)


def _fact_length(cfg: DataConfig, keys: int, values: int) -> int:
    names, numbers = _fact_options(keys, values)
    return len(Line(cfg, FACT, IS, ".")) + _longest(cfg, names) + _longest(cfg, numbers)


def _recall_shape(cfg: DataConfig) -> tuple[int, int, int]:
    """Keys, values and queries of a recall sample (the byte task's: 16 keys, 8 values)."""
    return min(cfg.n_pairs, 16), 8, min(cfg.n_queries, cfg.n_pairs, 16)


def _facts(cfg: DataConfig, rng: np.random.Generator, n_keys: int, n_values: int, n: int, m: int, copies: int,
           spread: bool) -> Sample:
    """``n`` facts of ``n_keys`` names and ``n_values`` numbers, ``copies`` each, in slots of the
    longest fact's length: spread over the context (recall) or in one run (mqar); ``m`` of them
    asked in slots at the end, every copy at least ``min_distance`` back."""
    t = cfg.seq_len + 1
    names, numbers = _fact_options(n_keys, n_values)
    slot = _fact_length(cfg, n_keys, n_values)
    targets, dist = _unscored(cfg)
    tokens = _filler(cfg, rng, t)
    keys = rng.choice(n_keys, size=n, replace=False)
    values = rng.integers(0, n_values, size=n)
    lines = [Line(cfg, FACT, names[k], IS, numbers[v], ".") for k, v in zip(keys, values)]
    q0 = t - m * slot
    room = (q0 - cfg.min_distance) // slot
    if spread:
        slots = np.sort(rng.choice(room, size=n * copies, replace=False))
        fact_of = rng.permutation(np.repeat(np.arange(n), copies))
    else:
        slots = int(rng.integers(0, room - n + 1)) + np.arange(n)
        fact_of = np.arange(n)
    for s, f in zip(slots, fact_of):
        tokens[s * slot : s * slot + len(lines[f])] = lines[f].ids
    for j, f in enumerate(rng.choice(n, size=m, replace=False)):
        at = q0 + j * slot  # the nearest copy of the fact is the distance back
        _ask(tokens, targets, dist, at, lines[f], lines[f].span(cfg, 3, numbers), (at - slots[fact_of == f].max() * slot))
    return tokens, targets, dist


def recall(cfg: DataConfig, rng: np.random.Generator) -> Sample:
    keys, values, m = _recall_shape(cfg)
    return _facts(cfg, rng, 16, values, keys, m, cfg.fact_copies, spread=True)


def mqar(cfg: DataConfig, rng: np.random.Generator) -> Sample:
    return _facts(cfg, rng, cfg.n_symbols, cfg.n_symbols, cfg.n_pairs, cfg.n_queries, 1, spread=False)


def _recall_length(cfg: DataConfig) -> int:
    keys, values, m = _recall_shape(cfg)
    return (keys * cfg.fact_copies + m) * _fact_length(cfg, 16, values) + cfg.min_distance + 1


def _mqar_length(cfg: DataConfig) -> int:
    return (cfg.n_pairs + cfg.n_queries) * _fact_length(cfg, cfg.n_symbols, cfg.n_symbols) + cfg.min_distance + 1


# --- multihop --------------------------------------------------------------------------------------
def _sources(cfg: DataConfig) -> tuple[str, ...]:
    return _numbers(cfg.n_symbols) + tuple(VAR + name for name in _names(cfg.n_symbols))


def _assignment_length(cfg: DataConfig) -> int:
    return len(Line(cfg, VAR, EQUALS, ".")) + _longest(cfg, _names(cfg.n_symbols)) + _longest(cfg, _sources(cfg))


def _multihop_length(cfg: DataConfig) -> int:
    query = len(Line(cfg, VAR, EQUALS)) + _longest(cfg, _names(cfg.n_symbols)) + _longest(cfg, _numbers(cfg.n_symbols))
    return 2 * (cfg.hops[1] + 1) * _assignment_length(cfg) + cfg.min_distance + query + 1


def multihop(cfg: DataConfig, rng: np.random.Generator) -> Sample:
    t = cfg.seq_len + 1
    names, numbers = _names(cfg.n_symbols), _numbers(cfg.n_symbols)
    hops = int(rng.integers(cfg.hops[0], cfg.hops[1] + 1))
    picked = rng.choice(cfg.n_symbols, size=2 * hops + 2, replace=False)
    value, decoy_value = rng.integers(0, cfg.n_symbols, size=2)
    targets, dist = _unscored(cfg)
    tokens = _filler(cfg, rng, t)
    # a decoy chain of the same length keeps "copy the last number seen" from scoring
    chains = []
    for vars_, val in ((picked[: hops + 1], value), (picked[hops + 1 :], decoy_value)):
        chains.append([Line(cfg, VAR, names[vars_[0]], EQUALS, numbers[val], ".")]
                      + [Line(cfg, VAR, names[vars_[i]], EQUALS, VAR + names[vars_[i - 1]], ".") for i in range(1, hops + 1)])
    query = Line(cfg, VAR, names[picked[hops]], EQUALS, numbers[value])
    slot = _assignment_length(cfg)
    q0 = t - len(query)
    slots = np.sort(rng.choice((q0 - cfg.min_distance) // slot, size=2 * (hops + 1), replace=False))
    order = rng.permutation(np.repeat([0, 1], hops + 1))  # interleave the two chains, each in order
    cursor = [0, 0]
    for s, which in zip(slots, order):
        line = chains[which][cursor[which]]
        cursor[which] += 1
        tokens[s * slot : s * slot + len(line)] = line.ids
    _ask(tokens, targets, dist, q0, query, query.span(cfg, 3, numbers), hops)
    return tokens, targets, dist


# --- copy and the corpora --------------------------------------------------------------------------
def copy(cfg: DataConfig, rng: np.random.Generator) -> Sample:
    """Random words; a quarter of the sample repeated to close it, at least ``min_distance`` after
    the original (the byte task's layout, in tokens)."""
    t = cfg.seq_len + 1
    words: list[int] = []
    names = _names(len(NAMES))
    while len(words) < t:
        words += _ids(cfg, names[int(rng.integers(len(names)))])
    return close_with_copy(np.asarray(words[:t], dtype=np.int64), cfg.min_distance, rng)


WINDOW_TRIES = 64


def text_window(name: str, split: str, cfg: DataConfig, rng: np.random.Generator) -> Sample:
    """``seq_len + 1`` tokens from one document: bytes from a random offset, tokenized, the first
    token dropped (the offset may cut a word). Documents too short in tokens are drawn again."""
    t = cfg.seq_len + 1
    docs = corpus(name, split, t)
    for _ in range(WINDOW_TRIES):
        doc = docs[int(rng.integers(len(docs)))]
        at = int(rng.integers(0, len(doc) - t + 1))
        ids = _encode_text(cfg.tokenizer, doc[at : at + 8 * (t + 1)].decode(errors="ignore"))  # type: ignore[arg-type]
        if len(ids) > t:
            tokens = np.asarray(ids[1 : t + 1], dtype=np.int64)
            return tokens, tokens.copy(), np.full(t, -1)
    raise ConfigError(f"data.seq_len={cfg.seq_len}: {WINDOW_TRIES} windows of corpus {name!r} ({split}) held fewer "
                      f"tokens of data.tokenizer; use a shorter seq_len")


def _encode_text(tokenizer: str, text: str) -> list[int]:
    return user_files.load_tokenizer(tokenizer).encode(text, add_special_tokens=False).ids


# each the worded form of the byte task of its name in the registry (spanmix.proxies.data.TASKS)
FORMS: tuple[Task, ...] = (
    probe_task("recall", recall, _recall_length, lambda c: 1 / 8),
    probe_task("mqar", mqar, _mqar_length, lambda c: 1 / c.n_symbols),
    probe_task("passkey", passkey, lambda c: sum(_passkey_lengths(c)) + c.min_distance + 1, lambda c: 1 / 10),
    probe_task("multihop", multihop, _multihop_length, lambda c: 1 / c.n_symbols, bucket="hops"),
    # a word's first token is one of 64; the tokens after it follow from it
    probe_task("copy", copy, lambda c: max(8, -(-4 * c.min_distance // 3)), lambda c: 1 / 64),
    text_task("code", text_window),
    text_task("prose", text_window),
)
