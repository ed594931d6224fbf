"""A ``.gguf`` file as ``[base] model``: converted once into a checkpoint folder, cached.

Small models mostly ship as GGUF (llama.cpp's format, often quantized). transformers reads one
(with the ``gguf`` package) and dequantizes it, but the model it returns cannot be saved as it is
loaded: its config keeps a ``quantization_config`` entry that ``save_pretrained`` refuses. So the
model is rebuilt from its config without that entry, its dequantized weights loaded into it, and
it is saved with its tokenizer (``tokenizer.json``) into
``$SPANMIX_CACHE/checkpoints/<key>/``, where the key hashes the file's content (as the token cache
does), so a renamed or moved file is not converted again and an edited one is. Every other part
of spanmix then reads that folder as it reads any checkpoint folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from functools import lru_cache
from pathlib import Path

from spanmix.proxies.files import cache_root, file_digest, outermost_missing
from spanmix.space import ConfigError

log = logging.getLogger("spanmix.data")

SUFFIX = ".gguf"
MAGIC = b"GGUF"
FORMAT_VERSION = 1  # bump when the converted folder's layout changes


def is_gguf(model: str) -> bool:
    return model.lower().endswith(SUFFIX)


def require(model: str) -> Path:
    """The GGUF file ``model`` names, refused (naming it) when it is missing, not a file, not
    GGUF, or when transformers cannot read GGUF on this machine."""
    path = Path(model).expanduser()
    if not path.is_file():
        raise ConfigError(f"base.model: {model!r} is not a file; allowed: a checkpoint folder or a .gguf file")
    with path.open("rb") as f:
        if f.read(4) != MAGIC:
            raise ConfigError(f"base.model: {model!r} is not a GGUF file (it does not begin with {MAGIC!r})")
    try:
        import accelerate  # noqa: F401  (transformers loads GGUF through it)
        from gguf import GGUFReader
    except ImportError:
        raise ConfigError("base.model: a .gguf file needs the gguf and accelerate packages: "
                          "pip install 'spanmix[retrofit]'") from None
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    field = GGUFReader(path).fields.get("general.architecture")
    architecture = field.contents() if field is not None else None
    readable = [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer")]
    if architecture not in readable:
        raise ConfigError(f"base.model: {model!r} holds a {architecture!r} model, which transformers does not read from "
                          f"GGUF; allowed: {', '.join(readable)} (or a checkpoint folder)")
    return path


def folder(model: str) -> str:
    """The checkpoint folder ``model`` is: itself, or for a ``.gguf`` file its converted folder
    (converted now, or found in the cache)."""
    if not is_gguf(model):
        return model
    path = Path(model).expanduser().resolve()
    stat = path.stat() if path.is_file() else None
    return str(_converted(str(path), stat and stat.st_size, stat and stat.st_mtime_ns))


@lru_cache(maxsize=8)
def _converted(path: str, size: int | None, mtime_ns: int | None) -> Path:
    """The file checked, hashed and converted once per process: (size, mtime) only key this
    memo (reading a GGUF header alone takes 2.4 s for SmolLM2's 49,152 tokens); the cache on
    disk is keyed by content. A refusal raises, and is not memoised."""
    import transformers

    require(path)
    key = hashlib.blake2b(json.dumps({"version": FORMAT_VERSION, "file": file_digest(Path(path)),
                                      "transformers": transformers.__version__.split(".")[0]}).encode(),
                          digest_size=12).hexdigest()
    out = cache_root() / "checkpoints" / key
    if not (out / "config.json").is_file():
        log.info("base.model: converting %s (%.0f MB) into a checkpoint folder, once: %s", Path(path).name,
                 (size or 0) / 1e6, out)
        start = time.perf_counter()
        _convert(Path(path), out)
        log.info("base.model: converted in %.0f s", time.perf_counter() - start)
    return out


def _convert(path: Path, out: Path) -> None:
    """Write ``path`` as a float32 checkpoint folder at ``out``; a failed conversion leaves no
    folder behind (it is written beside and renamed into place when whole)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    made = outermost_missing(out.parent)
    work = out.with_name(f"{out.name}.{os.getpid()}.partial")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # spanmix's two lines say what happens and how long it took
    try:
        try:
            loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
        except (ValueError, KeyError, OSError) as err:  # a file its reader cannot map after all
            raise ConfigError(f"base.model: {str(path)!r}: transformers cannot read this GGUF file "
                              f"({str(err).splitlines()[0]}); convert it to a checkpoint folder yourself") from None
        settings = {k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"}
        config = AutoConfig.for_model(settings.pop("model_type"), **settings)
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(loaded.state_dict())
        model.save_pretrained(work)
        AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True).save_pretrained(work)
        try:
            work.rename(out)
        except OSError:  # another process converted the same file first
            if not (out / "config.json").is_file():
                raise
            shutil.rmtree(work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise
