"""A ``.gguf`` file as ``[base] model``: converted once into a cached folder keyed by its content,
searched as that folder, and refused in one line (exit 2, nothing left in the cache) when it is
not GGUF or not a family transformers reads. The files are tiny random Llamas written here with
the ``gguf`` package: no download."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from spanmix.studies.cli import main

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

CONFIG = """
[study]
name = "{name}"
sampler = "grid"
cost = "kv_cache"
calibrate = false

[base]
model = "{model}"

[space]
context = 256
windows = [32]
local = ["sliding"]
n_full = [2, 4]
placements = ["bottom"]

[data]
tasks = ["recall"]
seq_len = 256
n_pairs = 4
n_queries = 4
min_distance = 48
val_samples = 4
"""


def write_gguf(path: Path, architecture: str = "llama", layers: int = 4, d: int = 32, heads: int = 4, kv: int = 2,
               ffn: int = 64) -> Path:
    """A random Llama in llama.cpp's tensor names, float32, with a byte-level BPE tokenizer (256
    bytes, two merges, an end-of-text token), as llama.cpp's converter writes one."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    rng = np.random.default_rng(0)
    tokens = [*bytes_to_unicode().values(), "he", "ll", "<|endoftext|>"]
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(layers)
    writer.add_context_length(512)
    writer.add_embedding_length(d)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_rope_dimension_count(d // heads)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * (len(tokens) - 1) + [3])
    writer.add_token_merges(["h e", "l l"])
    writer.add_eos_token_id(len(tokens) - 1)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    writer.add_tensor("token_embd.weight", weight(len(tokens), d))
    writer.add_tensor("output_norm.weight", np.ones(d, np.float32))
    for i in range(layers):
        for name, shape in [("attn_q", (d, d)), ("attn_k", (kv * d // heads, d)), ("attn_v", (kv * d // heads, d)),
                            ("attn_output", (d, d)), ("ffn_gate", (ffn, d)), ("ffn_up", (ffn, d)), ("ffn_down", (d, ffn))]:
            writer.add_tensor(f"blk.{i}.{name}.weight", weight(*shape))
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(d, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(d, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def spanmix(args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spanmix.studies.cli", *args.split()], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "SPANMIX_CACHE": str(cwd / "cache")})


def test_a_gguf_file_is_converted_once_and_searched_as_its_folder(tmp_path, monkeypatch, capsys):
    write_gguf(tmp_path / "tiny.gguf")
    (tmp_path / "a.toml").write_text(CONFIG.format(name="a", model="tiny.gguf"))
    first = spanmix("launch --config a.toml", tmp_path)
    assert first.returncode == 0 and "Traceback" not in first.stderr, first.stdout + first.stderr
    assert "converting tiny.gguf" in first.stderr and "on checkpoint" in first.stdout
    (folder,) = (tmp_path / "cache" / "checkpoints").iterdir()
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}

    # the folder computes what transformers computes reading the GGUF file itself
    direct = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf").eval()
    converted = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    assert "quantization_config" not in converted.config.to_dict()
    idx = torch.randint(0, 259, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(direct(idx).logits, converted(idx).logits)

    # keyed by content: the same file under another name is not converted again
    shutil.copy(tmp_path / "tiny.gguf", tmp_path / "renamed.gguf")
    (tmp_path / "b.toml").write_text(CONFIG.format(name="b", model="renamed.gguf"))
    second = spanmix("launch --config b.toml", tmp_path)
    assert second.returncode == 0 and "converting" not in second.stderr, second.stdout + second.stderr
    assert list((tmp_path / "cache" / "checkpoints").iterdir()) == [folder]
    # and scores what the first study scored, in the checkpoint's own tokens
    values = [{t.user_attrs["schedule"]: t.values for t in optuna.load_study(
        study_name=name, storage=f"sqlite:///{tmp_path / 'runs' / name / 'study.db'}").get_trials(states=[TrialState.COMPLETE])}
        for name in "ab"]
    assert len(values[0]) == 3 and values[0] == values[1]
    monkeypatch.chdir(tmp_path)
    assert main(["export", "knee", "--study", "b"]) == 0
    assert "gguf_file='renamed.gguf'" in capsys.readouterr().out


@pytest.mark.parametrize("make, message", [
    (lambda path: None, r"base.model: '.*/m.gguf' is not a file; allowed: a checkpoint folder or a .gguf file"),
    (lambda path: path.write_bytes(b"\x00" * 64), r"base.model: '.*/m.gguf' is not a GGUF file"),
    (lambda path: write_gguf(path, architecture="bert"), r"base.model: '.*/m.gguf' holds a 'bert' model, which "
                                                          r"transformers does not read from GGUF; allowed: .*llama"),
])
def test_a_gguf_that_cannot_be_read_is_refused_in_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys, make,
                                                                              message):
    make(tmp_path / "m.gguf")
    (tmp_path / "m.toml").write_text(CONFIG.format(name="m", model="m.gguf"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPANMIX_CACHE", str(tmp_path / "cache"))
    code = main(["launch", "--config", "m.toml", "--no-progress"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in lines[0], lines
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "cache").exists() and not (tmp_path / "runs").exists()
