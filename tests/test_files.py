"""The user's own files as a task: formats, the split by document, the token cache, the tokenizer,
and an error for every way the files can be wrong, before any training."""

import json
import logging
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from spanmix.proxies import files as user_files
from spanmix.proxies.data import DataConfig, TaskData
from spanmix.proxies.model import ProxyConfig
from spanmix.proxies.scoring import bucket_names
from spanmix.proxies.train import TrainConfig, check, train_and_score
from spanmix.search import StudyConfig
from spanmix.space import ConfigError, Schedule

README = Path(__file__).parent.parent / "README.md"
WORDS = "the of and to in a is that for it as was with be by on not he this are or his from at which but have".split()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPANMIX_CACHE", str(tmp_path / "cache"))
    user_files._memo.clear()
    return tmp_path / "cache"


def text(rng: np.random.Generator, words: int) -> str:
    return " ".join(rng.choice(WORDS, size=words)) + "\n"


def write_corpus(folder: Path, seed: int = 0) -> dict[str, list[str]]:
    """Text files, a JSONL, a CSV and a Parquet file; returns the documents of each."""
    rng = np.random.default_rng(seed)
    docs: dict[str, list[str]] = {}
    (folder / "docs" / "sub").mkdir(parents=True, exist_ok=True)
    for i in range(12):
        path = folder / "docs" / ("sub" if i % 3 else "") / f"d{i}.txt"
        path.write_text(doc := text(rng, 200) + "café ünïcode ✓\n", encoding="utf-8")
        docs[str(path)] = [doc]
    rows = [text(rng, 40) for _ in range(60)]
    (folder / "notes.jsonl").write_text("".join(json.dumps({"id": i, "text": r}) + "\n" for i, r in enumerate(rows)))
    docs["notes.jsonl"] = rows
    rows = [text(rng, 30) for _ in range(40)]
    pd.DataFrame({"body": rows, "n": range(40)}).to_csv(folder / "table.csv", index=False)
    docs["table.csv"] = rows
    rows = [text(rng, 30) for _ in range(40)]
    pd.DataFrame({"text": rows}).to_parquet(folder / "table.parquet")
    docs["table.parquet"] = rows
    return docs


def write_tokenizer(folder: Path, vocab: int = 400) -> Path:
    """A byte-level BPE trained here on the corpus (no download), with an end-of-text token."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    rng = np.random.default_rng(1)  # made-up words beside the corpus give the trainer enough merges
    extra = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=rng.integers(3, 9))) for _ in range(5000)]
    tok.train_from_iterator([p.read_text() for p in sorted(folder.rglob("*.txt"))] + [" ".join(extra)], trainer)
    tok.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


def data_config(folder: Path, **kw) -> DataConfig:
    base = dict(tasks=("mine",), files_task="mine", files=(str(folder / "docs/**/*.txt"),), seq_len=64, val_samples=4)
    return DataConfig(**{**base, **kw})


def decoded(corpus: user_files.TokenCorpus, split: str) -> str:
    return bytes(corpus.array(split).astype(np.uint8)).decode()


def test_every_format_becomes_bytes_split_by_document(tmp_path):
    docs = write_corpus(tmp_path)
    files = (str(tmp_path / "docs/**/*.txt"), str(tmp_path / "notes.jsonl"), str(tmp_path / "table.csv"), str(tmp_path / "table.parquet"))
    # the CSV has no "text" column (its text is "body"; see the next test)
    with pytest.raises(ConfigError, match=r"table.csv has no column 'text' \(data.text_column\); its columns: \['body', 'n'\]"):
        user_files.prepare(files, "text", None, 0.25, progress=False)
    corpus = user_files.prepare(files[:2] + files[3:], "text", None, 0.25, progress=False)
    assert corpus.vocab == 256 and corpus.dtype == "uint8"
    everything = [d for name, ds in docs.items() if name != "table.csv" for d in ds]
    train, val = decoded(corpus, "train"), decoded(corpus, "val")
    assert corpus.tokens["train"] + corpus.tokens["val"] == sum(len(d.encode()) for d in everything)
    assert corpus.documents["train"] + corpus.documents["val"] == len(everything)
    assert 0 < corpus.documents["val"] < len(everything) // 2
    for doc in everything:  # each document whole in exactly one split
        assert (doc in train) != (doc in val)


def test_csv_column_and_split_stable_under_renaming_and_new_files(tmp_path):
    docs = write_corpus(tmp_path)
    first = user_files.prepare((str(tmp_path / "table.csv"), str(tmp_path / "docs/**/*.txt")), "body", None, 0.3, progress=False)
    val_docs = {d for ds in docs.values() for d in ds if d in decoded(first, "val")}
    # rename and reorder the files and add a new one: no document changes split
    (tmp_path / "docs" / "d0.txt").rename(tmp_path / "docs" / "zz-renamed.txt")
    (tmp_path / "docs" / "new.txt").write_text("a brand new document\n" * 50)
    second = user_files.prepare((str(tmp_path / "docs/**/*.txt"), str(tmp_path / "table.csv")), "body", None, 0.3, progress=False)
    assert second.folder != first.folder
    assert {d for d in val_docs if d in decoded(second, "val")} == val_docs
    assert all(d in decoded(second, "train") for ds in docs.values() for d in ds if d not in val_docs and d in decoded(first, "train"))


def test_token_cache_is_keyed_by_content(tmp_path, cache):
    write_corpus(tmp_path)
    files = (str(tmp_path / "docs/**/*.txt"),)
    first = user_files.prepare(files, "text", None, 0.1, progress=False)
    written = (first.folder / "train.bin").stat().st_mtime_ns
    user_files._memo.clear()  # a new process: the disk cache answers
    again = user_files.prepare(files, "text", None, 0.1, progress=False)
    assert again.folder == first.folder and (again.folder / "train.bin").stat().st_mtime_ns == written
    # the same content elsewhere is found in the cache
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    for p in sorted((tmp_path / "docs").rglob("*.txt")):
        (copy / p.relative_to(tmp_path / "docs").as_posix().replace("/", "_")).write_bytes(p.read_bytes())
    assert user_files.prepare((str(copy / "*.txt"),), "text", None, 0.1, progress=False).tokens == first.tokens
    # edited content is tokenized again
    target = tmp_path / "docs" / "d0.txt"
    target.write_text(target.read_text() + "one more line\n")
    edited = user_files.prepare(files, "text", None, 0.1, progress=False)
    assert edited.folder != first.folder
    assert edited.tokens["train"] + edited.tokens["val"] == first.tokens["train"] + first.tokens["val"] + len("one more line\n")
    assert sorted(p.name for p in (cache / "tokens").iterdir() if p.name.endswith(".tmp")) == []


def test_tokenizer_ids_and_vocab_follow_it(tmp_path):
    docs = write_corpus(tmp_path)
    tokenizer = write_tokenizer(tmp_path, vocab=400)
    tok = Tokenizer.from_file(str(tokenizer))
    assert tok.get_vocab_size() == 400
    data = data_config(tmp_path, tokenizer=str(tokenizer))
    corpus = data.user_corpus()
    assert corpus.vocab == 400
    eos = tok.token_to_id("<|endoftext|>")
    texts = [d for name, ds in docs.items() if name.endswith(".txt") for d in ds]
    ids = np.concatenate([corpus.array("train"), corpus.array("val")])
    assert len(ids) == sum(len(tok.encode(t, add_special_tokens=False).ids) + 1 for t in texts)
    assert (ids == eos).sum() == len(texts) and ids.max() < 400
    every = {tuple(tok.encode(t, add_special_tokens=False).ids + [eos]) for t in texts}
    boundaries = np.flatnonzero(corpus.array("train") == eos)
    assert tuple(corpus.array("train")[: boundaries[0] + 1].tolist()) in every
    # the proxy's vocabulary follows the tokenizer (a default the user's files give)
    study = StudyConfig.from_user({"study": {"name": "own", "cost": "flops", "quality": "mine/loss"},
                                   "space": {"n_layers": 2, "context": 64, "windows": [8]}, "proxy": {"context": 64},
                                   "data": data.to_dict()})
    assert study.proxy.vocab_size == 400
    with pytest.raises(ConfigError, match=r"proxy.vocab_size=256 is too small for the tokens of data.tokenizer .* needs >= 400"):
        check(Schedule.parse("F F"), ProxyConfig(context=64), data)
    # windows of the user's task are tokens of the corpus, all scored
    sample = TaskData(data, "train", 2)[1]
    assert sample["x"].max() < 400 and (sample["y"] >= 0).all() and (sample["dist"] == -1).all()


def test_training_on_own_files_is_deterministic_and_scored_as_text(tmp_path):
    write_corpus(tmp_path)
    data = data_config(tmp_path, tasks=("mine", "recall"), n_pairs=4, n_queries=4, files=(str(tmp_path / "notes.jsonl"),))
    train = TrainConfig(steps=4, batch_size=4, precision="fp32", progress=False)
    proxy = ProxyConfig(d_model=32, n_heads=2, context=64)
    a = train_and_score("F S8", proxy, data, train)
    b = train_and_score("F S8", proxy, data, train)
    assert a.scores == b.scores
    assert f"mine/loss@{bucket_names(64)[-1]}" in a.scores and "mine/acc" not in a.scores and "recall/acc" in a.scores
    assert a.scores["recall"] == a.scores["recall/acc"]  # the user's text is not a recall task


def test_large_text_file_is_never_held_whole(tmp_path):
    big = tmp_path / "big.txt"
    line = (" ".join(WORDS) + "\n").encode()
    with open(big, "wb") as f:
        for _ in range(24 * 2**20 // len(line)):
            f.write(line)
    tracemalloc.start()
    corpus = user_files.prepare((str(big),), "text", None, 0.5, progress=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert corpus.tokens["train"] + corpus.tokens["val"] == big.stat().st_size
    assert peak < 24 * 2**20 / 2, f"peak {peak / 2**20:.1f} MiB of Python objects for a 24 MiB file"


def test_non_utf8_and_unreadable_files_are_skipped_and_counted(tmp_path, caplog):
    write_corpus(tmp_path)
    (tmp_path / "docs" / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1") * 20)
    (tmp_path / "docs" / "sub" / "binary.txt").write_bytes(bytes(range(256)))
    logger = logging.getLogger("spanmix.data")  # the CLI's handler stops propagation: listen here
    logger.addHandler(caplog.handler)
    try:
        corpus = data_config(tmp_path).user_corpus()
    finally:
        logger.removeHandler(caplog.handler)
    assert re.search(r"data.files: skipped 2 of 14 files: .*latin1.txt \(not UTF-8 near byte 3\); .*binary.txt \(not UTF-8 near byte 128\)",
                     caplog.text), caplog.text
    assert corpus.skipped and corpus.documents["train"] + corpus.documents["val"] == 12
    # unreadable: even root gets an I/O error reading its own memory file from offset 0
    if Path("/proc/self/mem").exists():
        corpus = data_config(tmp_path, files=(str(tmp_path / "docs/**/*.txt"), "/proc/self/mem")).user_corpus()
        assert "/proc/self/mem (Input/output error)" in corpus.skipped
    only_bad = data_config(tmp_path, files=(str(tmp_path / "docs/latin1.txt"),))
    with pytest.raises(ConfigError, match=r"data.files: none of the 1 files can be read as UTF-8 text: .*latin1.txt \(not UTF-8 near byte 3\)"):
        only_bad.user_corpus()


@pytest.mark.parametrize("files, column, message", [
    (("missing.txt",), "text", r"data.files: '.*missing.txt' does not exist"),
    (("nothing/*.md",), "text", r"data.files: '.*nothing/\*.md' matches no file"),
    (("docs",), "text", r"data.files: '.*docs' is a folder; name its files with a glob such as '.*docs/\*\*/\*.txt'"),
    (("notes.jsonl",), "body", r"data.files: .*notes.jsonl has no column 'body' \(data.text_column\); its columns: \['id', 'text'\]"),
    (("table.parquet",), "body", r"data.files: .*table.parquet has no column 'body' .*its columns: \['text'\]"),
    (("table.csv",), "n", r"^data.files: column 'n' of .*table.csv holds int64 values, not text \(data.text_column\)"),
    (("broken.jsonl",), "text", r"data.files: .*broken.jsonl cannot be read as jsonl"),
])
def test_bad_files_named_before_training(tmp_path, files, column, message):
    write_corpus(tmp_path)
    (tmp_path / "broken.jsonl").write_text('{"text": "fine"}\n{"text": \n')
    data = data_config(tmp_path, files=tuple(str(tmp_path / f) for f in files), text_column=column)
    with pytest.raises(ConfigError, match=message):
        data.user_corpus()


def test_too_few_tokens_and_bad_tokenizers(tmp_path, monkeypatch):
    write_corpus(tmp_path)
    one = data_config(tmp_path, files=(str(tmp_path / "docs/d0.txt"),), seq_len=64)
    with pytest.raises(ConfigError, match=r"the (training|validation) split holds \d+ tokens in 0 documents; .*The split is by document"):
        one.user_corpus()
    long = data_config(tmp_path, seq_len=2048, val_samples=64)
    with pytest.raises(ConfigError, match=r"the validation split holds \d+ tokens in 1 documents; data.seq_len=2048 and "
                                          r"data.val_samples=64 need at least 2112"):
        long.user_corpus()
    with pytest.raises(ConfigError, match=r"data.tokenizer: '.*nope.json' does not exist"):
        data_config(tmp_path, tokenizer=str(tmp_path / "nope.json")).vocab_needed()
    (tmp_path / "bad.json").write_text('{"model": 3}')
    with pytest.raises(ConfigError, match=r"data.tokenizer: '.*bad.json' is not a Hugging Face tokenizers file"):
        data_config(tmp_path, tokenizer=str(tmp_path / "bad.json")).vocab_needed()
    monkeypatch.setattr(user_files, "MAX_WIDTH", 300)  # a 400-token vocabulary stands in for one past 2**20
    tokenizer = write_tokenizer(tmp_path, vocab=400)
    with pytest.raises(ConfigError, match=r"data.tokenizer: '.*tokenizer.json' has 400 tokens, more than the proxy can take "
                                          r"\(proxy.vocab_size at most 300\)"):
        user_files.load_tokenizer(str(tokenizer))


@pytest.mark.parametrize("changes, message", [
    ({"files": "docs/*.txt"}, r"data.files must be a list"),
    ({"tasks": ("recall",)}, r"data.files is set but data.tasks \['recall'\] leaves out its task; add 'mine'"),
    ({"files": ()}, r"data.tasks: unknown data set 'mine'; allowed: .* \(set data.files"),
    ({"files_task": "prose", "tasks": ("prose",)}, r"data.files_task 'prose' is a built-in task"),
    ({"files_task": "my/data", "tasks": ("my/data",)}, r"data.files_task 'my/data' is not a name"),
    ({"files": (), "tasks": ("recall",), "tokenizer": "t.json"}, r"data.tokenizer: 't.json' does not exist"),
    ({"val_fraction": 1.0}, r"data.val_fraction must be between 0 and 1"),
])
def test_data_config_shape_errors(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):  # the tokenizer's file is read by the preflight's check
        data_config(tmp_path, **changes).check_lengths()


def _readme_block(after: str, lang: str) -> str:
    body = README.read_text()
    start = body.index(after)
    return re.search(rf"```{lang}\n(.*?)```", body[start:], re.S).group(1)


def test_readme_own_data_study_and_export(tmp_path):
    """The README's own-data example as a user runs it: their files and tokenizer beside the config,
    the exact commands it shows, from that folder."""
    from spanmix.search import config_of
    from spanmix.search.storage import open_storage

    write_corpus(tmp_path)
    write_tokenizer(tmp_path, vocab=400)
    (tmp_path / "mydata.toml").write_text(_readme_block("## Your own data", "toml"))
    commands = _readme_block("## Your own data", "bash").strip().splitlines()
    assert [c.split()[:2] for c in commands] == [["spanmix", "launch"], ["spanmix", "export"]]
    env = {**os.environ, "SPANMIX_CACHE": str(tmp_path / "cache")}
    said = []
    for command in commands:
        done = subprocess.run([sys.executable, "-m", "spanmix.studies.cli", *command.split()[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
        said.append(done)
    assert re.search(r"data.files: \d+ documents, \d+ train \+ \d+ val tokens \(.*tokenizer.json\)", said[0].stderr)
    out = tmp_path / "runs" / "mydata"
    assert (out / "dashboard.html").exists()
    fragment = json.loads(next(out.glob("knee-*.hf-llama4.json")).read_text())
    assert fragment["model_type"] == "llama4_text" and fragment["num_hidden_layers"] == 4
    import optuna

    study = optuna.load_study(study_name="mydata", storage=open_storage(f"sqlite:///{out / 'study.db'}", create=False))
    cfg = config_of(study)
    assert cfg.proxy.vocab_size == 400 and cfg.data.files[0] == str(tmp_path / "docs/**/*.txt")
    assert any(k.startswith("mine/loss@") for k in study.best_trials[0].user_attrs["scores"])


def test_files_without_tasks_train_on_the_files(tmp_path):
    (tmp_path / "a.txt").write_text("some text")
    cfg = DataConfig.from_dict({"files": [str(tmp_path / "a.txt")], "files_task": "mine"})
    assert cfg.tasks == ("mine",)
    assert DataConfig.from_dict({"files": [str(tmp_path / "a.txt")], "tasks": ["mine", "recall"],
                                 "files_task": "mine"}).tasks == ("mine", "recall")  # named tasks stand
