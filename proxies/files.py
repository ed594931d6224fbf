"""A user's own text as a training task: files in, one memory-mapped token file per split out.

The pattern is nanoGPT's ``prepare.py``: tokenize once into a flat array on disk, then slice windows
out of it at training time, so a corpus of hundreds of MB never lives in Python objects and every
worker shares the same pages. Windows may cross document boundaries, as in pretraining; with a
tokenizer that has an end-of-text token, one separates the documents.

* Documents: a plain text file is one document; a JSONL, CSV or Parquet file holds one per row (its
  ``text_column``, read through pandas; Parquet in record batches through pyarrow).
* Split: a document is validation when the hash of its content falls in ``val_fraction``. Renaming,
  reordering or adding files never moves a document between the splits.
* Tokens: bytes (vocabulary 256) unless a Hugging Face ``tokenizers`` file is given.
* Cache: ``$SPANMIX_CACHE/tokens/<key>/`` (default ``~/.cache/spanmix``), where the key hashes the
  content of every file, the column, the tokenizer file and the split, so the same data under
  another path is found, and edited data is tokenized again.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import json
import logging
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from spanmix.proxies.model import MAX_WIDTH
from spanmix.space import ConfigError

log = logging.getLogger("spanmix.data")

TABULAR = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
FORMAT_VERSION = 1  # bump when the token files' layout or the split rule changes
EOS_NAMES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "<|eot_id|>")
_CHUNK = 1 << 20
_ROWS = 4096


def cache_root() -> Path:
    """Where token files are kept: ``$SPANMIX_CACHE``, else ``$XDG_CACHE_HOME/spanmix``, else
    ``~/.cache/spanmix``."""
    if os.environ.get("SPANMIX_CACHE"):
        return Path(os.environ["SPANMIX_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "spanmix"


def expand(patterns: tuple[str, ...]) -> list[Path]:
    """The files ``patterns`` name, in order, each once; globs (``**`` included) are sorted. A
    missing path, a glob matching no file, or a folder is refused, naming it."""
    paths: list[Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            found = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True) if Path(p).is_file())
            if not found:
                raise ConfigError(f"data.files: {pattern!r} matches no file")
        else:
            path = Path(pattern).expanduser()
            if not path.exists():
                raise ConfigError(f"data.files: {pattern!r} does not exist")
            if path.is_dir():
                raise ConfigError(f"data.files: {pattern!r} is a folder; name its files with a glob such as '{pattern.rstrip('/')}/**/*.txt'")
            if not path.is_file():  # a device never ends and a FIFO blocks: not a byte is read from either
                raise ConfigError(f"data.files: {pattern!r} is {_kind(path)}, not a regular file; name text, JSONL, "
                                  "CSV or Parquet files")
            found = [path]
        paths += [p for p in found if p not in paths]
    return paths


def _kind(path: Path) -> str:
    """What a path that is neither a regular file nor a folder is, in words."""
    mode = path.stat().st_mode
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _vocab(tokenizer: Any) -> int:
    return 256 if tokenizer is None else int(tokenizer.get_vocab_size(with_added_tokens=True))


@lru_cache(maxsize=16)
def load_tokenizer(path: str | None) -> Any:
    """The Hugging Face ``tokenizers`` object in ``path`` (a ``tokenizer.json``), or None for bytes;
    loaded once per process and only read afterwards."""
    if path is None:
        return None
    from tokenizers import Tokenizer

    if not Path(path).expanduser().is_file():
        raise ConfigError(f"data.tokenizer: {path!r} does not exist")
    try:
        tokenizer = Tokenizer.from_file(str(Path(path).expanduser()))
    except Exception as err:  # the Rust loader raises bare Exceptions on malformed files
        raise ConfigError(f"data.tokenizer: {path!r} is not a Hugging Face tokenizers file (tokenizer.json): {err}") from None
    if _vocab(tokenizer) > MAX_WIDTH:
        raise ConfigError(
            f"data.tokenizer: {path!r} has {_vocab(tokenizer)} tokens, more than the proxy can take (proxy.vocab_size "
            f"at most {MAX_WIDTH})"
        )
    return tokenizer


def vocab_size(tokenizer: str | None) -> int:
    """Token ids a tokenizer file can produce (256 for bytes)."""
    return _vocab(load_tokenizer(tokenizer))


@dataclass(frozen=True)
class TokenCorpus:
    """Prepared token files: ``tokens[split]`` ids from ``documents[split]`` documents, in ``folder``."""

    folder: Path
    vocab: int
    dtype: str
    tokens: dict[str, int]
    documents: dict[str, int]
    skipped: tuple[str, ...] = ()

    def array(self, split: str) -> np.ndarray:
        return _open(self.folder / f"{split}.bin", self.dtype, self.tokens[split])

    def window(self, split: str, seq_len: int, rng: np.random.Generator) -> np.ndarray:
        """``seq_len + 1`` consecutive tokens of a split from a random offset."""
        tokens = self.array(split)
        at = int(rng.integers(0, len(tokens) - seq_len))
        return np.asarray(tokens[at : at + seq_len + 1], dtype=np.int64)

    def check(self, seq_len: int, val_samples: int, val_fraction: float) -> None:
        """Refuse splits too short for one training window and ``val_samples`` distinct validation windows."""
        need = {"train": seq_len + 1, "val": seq_len + val_samples}
        for split, what in (("train", f"data.seq_len={seq_len} needs"), ("val", f"data.seq_len={seq_len} and data.val_samples={val_samples} need")):
            if self.tokens[split] < need[split]:
                raise ConfigError(
                    f"data.files: the {'training' if split == 'train' else 'validation'} split holds {self.tokens[split]} tokens "
                    f"in {self.documents[split]} documents; {what} at least {need[split]}. The split is by document "
                    f"(data.val_fraction={val_fraction} of them by content hash): add documents, change "
                    "data.val_fraction or lower data.seq_len"
                )


@lru_cache(maxsize=8)
def _open(path: Path, dtype: str, n: int) -> np.ndarray:
    return np.memmap(path, dtype=dtype, mode="r", shape=(n,))


_memo: dict[tuple[Any, ...], TokenCorpus] = {}


Check = Callable[[TokenCorpus], None]


def prepare(patterns: tuple[str, ...], text_column: str, tokenizer: str | None, val_fraction: float, progress: bool = True,
            check: Check | None = None) -> TokenCorpus:
    """The token files for these files, tokenized now or found in the cache. Files that cannot be
    read or are not UTF-8 are skipped with a warning that counts them; if none is left, or a table
    lacks ``text_column``, the error names the file. ``check`` refuses a corpus that cannot serve
    (too few tokens) before anything is written to the cache; nothing of a refused or failed
    tokenization stays behind."""
    paths = expand(patterns)
    # (path, size, mtime) only keys this process's memo: the cache on disk is keyed by content
    key = (tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths), text_column, tokenizer, val_fraction)
    if key not in _memo:
        _memo[key] = _prepare(paths, text_column, tokenizer, val_fraction, progress, check)
    corpus = _memo[key]
    if check is not None:
        check(corpus)
    return corpus


def _prepare(paths: list[Path], text_column: str, tokenizer: str | None, val_fraction: float, progress: bool,
             check: Check | None) -> TokenCorpus:
    loaded = load_tokenizer(tokenizer)
    digests, skipped = _digests(paths, text_column, progress)
    if skipped:
        shown = "; ".join(skipped[:3]) + ("; ..." if len(skipped) > 3 else "")
        if not digests:
            raise ConfigError(f"data.files: none of the {len(paths)} files can be read as UTF-8 text: {shown}")
        log.warning("data.files: skipped %d of %d files: %s", len(skipped), len(paths), shown)
    key = hashlib.blake2b(json.dumps({
        "version": FORMAT_VERSION, "column": text_column, "val_fraction": val_fraction,
        "tokenizer": file_digest(Path(tokenizer).expanduser()) if tokenizer else None, "files": [d.hex() for _, d in digests],
    }).encode(), digest_size=12).hexdigest()
    folder = cache_root() / "tokens" / key
    if not (folder / "meta.json").exists():
        _write(folder, digests, text_column, loaded, val_fraction, progress, check)
    corpus = _read(folder, tuple(skipped))
    if progress:
        log.info("data.files: %d documents, %d train + %d val tokens (%s), in %s", sum(corpus.documents.values()),
                 corpus.tokens["train"], corpus.tokens["val"], tokenizer or "bytes", folder)
    return corpus


def _read(folder: Path, skipped: tuple[str, ...] = ()) -> TokenCorpus:
    meta = json.loads((folder / "meta.json").read_text())
    return TokenCorpus(folder, meta["vocab"], meta["dtype"], meta["tokens"], meta["documents"], skipped)


def outermost_missing(path: Path) -> Path | None:
    """The outermost of ``path`` and the folders above it that does not exist yet (None when
    ``path`` exists): what removing undoes everything that creating ``path`` made."""
    path = path.absolute()
    top = None
    while not path.exists():
        top, path = path, path.parent
    return top


def file_digest(path: Path) -> str:
    """The file's content hash (blake2b, hex): what keys spanmix's caches on disk."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "blake2b").hexdigest()


def _in_val(digest: bytes, val_fraction: float) -> bool:
    """A document is validation when its content hash, read as a fraction of 2**64, is below ``val_fraction``."""
    return int.from_bytes(digest[:8], "little") < val_fraction * 2**64


def _digests(paths: list[Path], text_column: str, progress: bool) -> tuple[list[tuple[Path, bytes]], list[str]]:
    """Each readable file's content hash, checking on the way that text files decode as UTF-8 and
    that tables hold ``text_column``; the skipped files as ``path (why)``."""
    kept, skipped = [], []
    sizes = [p.stat().st_size for p in paths]
    with tqdm(total=sum(sizes), unit="B", unit_scale=True, desc="hashing data.files", disable=not progress, leave=False) as bar:
        for path, size in zip(paths, sizes):
            digest, decoder, at = hashlib.blake2b(), codecs.getincrementaldecoder("utf-8")("strict"), 0
            try:
                with open(path, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        digest.update(chunk)
                        if TABULAR.get(path.suffix.lower()) != "parquet":
                            decoder.decode(chunk)
                        at += len(chunk)
                        bar.update(len(chunk))
                    if TABULAR.get(path.suffix.lower()) != "parquet":
                        decoder.decode(b"", final=True)
            except UnicodeDecodeError as err:
                skipped.append(f"{path} (not UTF-8 near byte {at + err.start})")
            except OSError as err:
                skipped.append(f"{path} ({err.strerror})")
            else:
                _check_column(path, text_column)
                kept.append((path, digest.digest()))
            bar.update(size - at)
    return kept, skipped


def _check_column(path: Path, column: str) -> None:
    kind = TABULAR.get(path.suffix.lower())
    if kind is None:
        return
    first = next(_tables(path, kind, None), None)
    columns = [] if first is None else list(first.columns)
    if column not in columns:
        raise ConfigError(f"data.files: {path} has no column {column!r} (data.text_column); its columns: {columns}")


def _tables(path: Path, kind: str, column: str | None) -> Iterator[Any]:
    """A table file as pandas DataFrames of a few thousand rows (only ``column`` where given); a
    file the reader cannot parse is a ConfigError naming it. The caller's own errors, raised
    between frames, do not pass through here."""
    import pandas as pd

    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=_ROWS, columns=None if column is None else [column]):
                yield batch.to_pandas()
        elif kind == "csv":
            yield from pd.read_csv(path, chunksize=_ROWS, usecols=None if column is None else [column])
        else:
            yield from pd.read_json(path, lines=True, chunksize=_ROWS, dtype=False)
    except ValueError as err:  # pandas' and pyarrow's parse errors, UnicodeDecodeError included
        raise ConfigError(f"data.files: {path} cannot be read as {kind}: {err}") from None


def _documents(path: Path, column: str) -> Iterator[tuple[str, bool]]:
    """``(text, ends_document)`` pieces of a file: a text file in line-aligned chunks of about 1 MB,
    a table one row (one document) at a time."""
    kind = TABULAR.get(path.suffix.lower())
    if kind is None:
        with open(path, encoding="utf-8", newline="") as f:
            rest = ""
            while chunk := f.read(_CHUNK):
                text = rest + chunk
                cut = text.rfind("\n") + 1
                if cut == 0 and len(text) < 4 * _CHUNK:  # no line end yet: read on, up to 4 MB
                    rest = text
                    continue
                cut = cut or len(text)
                yield text[:cut], False
                rest = text[cut:]
            yield rest, True
        return
    for frame in _tables(path, kind, column):
        texts = frame[column].dropna()
        if len(texts) and not all(isinstance(t, str) for t in texts):
            raise ConfigError(f"data.files: column {column!r} of {path} holds {texts.dtype} values, not text (data.text_column)")
        for text in texts:
            yield text, True


def _encode(tokenizer: Any, text: str, eos: int | None) -> np.ndarray:
    """Token ids of ``text`` (bytes without a tokenizer), then ``eos`` if given. Lines are encoded
    as one batch: the Rust tokenizer spreads a batch over the cores (2.3x on 2 cores against one
    string), and no pre-tokenizer merges across a line end."""
    if tokenizer is None:
        return np.frombuffer(text.encode(), dtype=np.uint8)
    ids = [i for encoding in tokenizer.encode_batch_fast(text.splitlines(keepends=True), add_special_tokens=False)
           for i in encoding.ids]
    return np.asarray(ids + ([] if eos is None else [eos]), dtype=np.int64)


def _write(folder: Path, digests: list[tuple[Path, bytes]], column: str, tokenizer: Any, val_fraction: float,
           progress: bool, check: Check | None) -> None:
    """Tokenize every document into ``train.bin`` and ``val.bin`` in a private folder, ``check``
    the result, then move it into place, so a concurrent worker, a kill or a refusal never leaves
    half a cache, and a refused corpus leaves none (nor the folders made for it)."""
    tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    made = outermost_missing(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        _tokenize(tmp, digests, column, tokenizer, val_fraction, progress)
        if check is not None:
            check(_read(tmp))
    except BaseException:
        shutil.rmtree(made or tmp, ignore_errors=True)
        raise
    try:
        os.replace(tmp, folder)
    except OSError:  # another worker finished the same files first; its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)


def _tokenize(tmp: Path, digests: list[tuple[Path, bytes]], column: str, tokenizer: Any, val_fraction: float,
              progress: bool) -> None:
    vocab = _vocab(tokenizer)
    dtype = "uint8" if vocab <= 2**8 else "uint16" if vocab <= 2**16 else "uint32"
    eos = next((i for i in (tokenizer.token_to_id(n) for n in EOS_NAMES) if i is not None), None) if tokenizer else None
    tokens, documents = {"train": 0, "val": 0}, {"train": 0, "val": 0}
    total = sum(p.stat().st_size for p, _ in digests)
    with (open(tmp / "train.bin", "wb") as train, open(tmp / "val.bin", "wb") as val,
          tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing data.files", disable=not progress) as bar):
        out = {"train": train, "val": val}
        for path, digest in digests:
            size, shown, whole_file = path.stat().st_size, 0, TABULAR.get(path.suffix.lower()) is None
            for text, ends in _documents(path, column):
                if whole_file:
                    split = "val" if _in_val(digest, val_fraction) else "train"
                else:
                    split = "val" if _in_val(hashlib.blake2b(text.encode(), digest_size=8).digest(), val_fraction) else "train"
                ids = _encode(tokenizer, text, eos if ends else None)
                ids.astype(dtype).tofile(out[split])
                tokens[split] += len(ids)
                documents[split] += int(ends)
                step = min(len(text), size - shown)  # characters, close to bytes for most text
                bar.update(step)
                shown += step
            bar.update(size - shown)
    (tmp / "meta.json").write_text(json.dumps({
        "version": FORMAT_VERSION, "vocab": vocab, "dtype": dtype, "tokens": tokens, "documents": documents,
        "files": [str(p) for p, _ in digests], "text_column": column,
    }, indent=1))
