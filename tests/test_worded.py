"""The built-in tasks in a tokenizer's own tokens (``data.tokenizer``, a checkpoint's
``tokenizer.json``): readable text, answers that are the fact the recorded distance points back to,
and a ``seq_len`` minimum that is exact."""

from __future__ import annotations

import numpy as np
import pytest
from test_files import write_tokenizer
from tokenizers import Tokenizer, models

from spanmix.proxies.data import IGNORE, PROBES, TASKS, DataConfig, TaskData
from spanmix.space import ConfigError


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tok")
    (folder / "a.txt").write_text("The pass key is 12345. The code of amber is 5. VAR birch = VAR amber. " * 20)
    return str(write_tokenizer(folder, vocab=400))


def _config(tokenizer: str, task: str, **kw) -> DataConfig:
    return DataConfig(tasks=(task,), tokenizer=tokenizer, **{"seq_len": 400, "min_distance": 48, **kw})


@pytest.mark.parametrize("task", ["recall", "mqar", "passkey", "copy"])
def test_every_answer_is_the_token_the_recorded_distance_points_back_to(tokenizer, task):
    cfg = _config(tokenizer, task, n_pairs=6, n_queries=4, n_symbols=24, fact_copies=2)
    for i in range(20):
        tokens, targets, dist = cfg.task(task).sample(cfg, "val", np.random.default_rng(i))
        scored = np.flatnonzero(targets != IGNORE)
        assert len(tokens) == cfg.seq_len + 1 and len(scored)
        for p in scored:  # the target at p is predicted from input p - 1, which holds its distance
            d = dist[p - 1]
            assert d >= cfg.min_distance and tokens[p - d] == tokens[p] == targets[p]


def test_the_probes_read_as_text_and_ask_what_they_wrote(tokenizer):
    tok = Tokenizer.from_file(tokenizer)
    cfg = _config(tokenizer, "passkey")
    tokens, targets, _ = cfg.task("passkey").sample(cfg, "val", np.random.default_rng(0))
    text = tok.decode(tokens.tolist())
    key = text.rsplit("The pass key is", 1)[1].strip()
    assert len(key) == 5 and key.isdigit() and f"The pass key is {key}. Remember it. {key} is the pass key." in text
    assert tok.decode(targets[targets != IGNORE].tolist()).strip() == key
    cfg = _config(tokenizer, "multihop", hops=(2, 2), n_symbols=24)
    tokens, targets, dist = cfg.task("multihop").sample(cfg, "val", np.random.default_rng(1))
    text = tok.decode(tokens.tolist())
    asked = text.rsplit(" VAR ", 1)[1].split(" =")[0]
    value = tok.decode(targets[targets != IGNORE].tolist()).strip()
    # two hops back from the variable asked: VAR asked = VAR b, VAR b = VAR a, VAR a = value
    b = text.split(f"VAR {asked} = VAR ", 1)[1].split(".")[0]
    a = text.split(f"VAR {b} = VAR ", 1)[1].split(".")[0]
    assert f"VAR {a} = {value}." in text and set(dist[dist >= 0]) == {2}


@pytest.mark.parametrize("task", PROBES)
def test_the_shortest_seq_len_holds_every_sample_and_one_less_is_refused(tokenizer, task):
    kw = dict(min_distance=40, n_pairs=6, n_queries=4, n_symbols=24)
    need = _config(tokenizer, task, **kw).min_length(task)
    cfg = _config(tokenizer, task, **{**kw, "seq_len": need})
    data = TaskData(cfg, "train", 30)
    assert all(len(data[i]["x"]) == need for i in range(30))
    with pytest.raises(ConfigError, match=rf"data.seq_len={need - 1} is too short for task '{task}': needs >= {need}"):
        _config(tokenizer, task, **{**kw, "seq_len": need - 1}).check_lengths()


def test_corpora_are_windows_of_their_documents_in_the_tokenizers_tokens(tokenizer):
    tok = Tokenizer.from_file(tokenizer)
    cfg = DataConfig(tasks=("prose", "code"), tokenizer=tokenizer, seq_len=200, val_samples=2)
    assert cfg.vocab_needed() == 400
    for i in range(2):
        sample = TaskData(cfg, "val", 2)[i]
        assert int(sample["x"].max()) < 400 and (sample["y"][:-1] == sample["x"][1:]).all()
        # what it says re-tokenizes to almost the same ids: real text, not ids out of context
        again = tok.encode(tok.decode(sample["x"].tolist()), add_special_tokens=False).ids
        assert abs(len(again) - 200) <= 4


def test_a_tokenizer_that_writes_nothing_is_refused_in_one_line(tmp_path):
    path = tmp_path / "tokenizer.json"
    Tokenizer(models.BPE(vocab={"a": 0}, merges=[])).save(str(path))  # no unknown token: other text vanishes
    with pytest.raises(ConfigError, match=r"data.tokenizer '.*tokenizer.json' turns ' The code of' into no tokens"):
        DataConfig(tasks=("recall",), tokenizer=str(path), seq_len=400).check_lengths()


def test_without_a_tokenizer_the_tasks_are_bytes_as_before():
    cfg = DataConfig(tasks=("recall",), seq_len=128, min_distance=40)
    assert cfg.task("recall") is not TASKS["recall"].worded and cfg.vocab_needed() == 256
