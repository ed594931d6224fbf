"""Bad input, the way users make it: every mistake is one clear line, exit 2, and nothing written.

The config mutations are generated from the config dataclasses' own type annotations, so a field
added later is mutated too.
"""

import json
import math
import os
import re
import socket
import tomllib
import typing
from dataclasses import fields
from pathlib import Path

import pytest

import spanmix.search.run as pipeline
from spanmix.proxies.checkpoint import BaseConfig
from spanmix.proxies.data import DataConfig
from spanmix.proxies.model import ProxyConfig
from spanmix.proxies.train import TrainConfig
from spanmix.search.config import StudyConfig
from spanmix.search.strategies.halving import HalvingConfig
from spanmix.search.strategies.supernet import SupernetConfig
from spanmix.space import SearchSpace
from spanmix.studies.cli import main

SECTIONS = {"study": StudyConfig, "space": SearchSpace, "proxy": ProxyConfig, "data": DataConfig,
            "train": TrainConfig, "supernet": SupernetConfig, "halving": HalvingConfig, "base": BaseConfig}
# string fields that take one of a few names: a made-up name must be refused too
CHOICES = {("study", "quality"), ("study", "cost"), ("study", "sampler"), ("study", "strategy"), ("train", "precision"),
           ("base", "model"), ("base", "dtype"), ("base", "heal"), ("supernet", "confirm")}


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return "[" + ", ".join(_toml_value(x) for x in v) + "]"


def to_toml(data: dict) -> str:
    lines = [f"{key} = {_toml_value(value)}" for key, value in data.items() if not isinstance(value, (dict, list))]
    for name, section in data.items():
        if isinstance(section, dict):
            lines += [f"[{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in section.items()]
        elif isinstance(section, list):  # an array of tables, [[name]]
            for table in section:
                lines += [f"[[{name}]]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _bad_values(section: str, name: str, kind) -> list:
    """Values of the wrong type or out of every field's range, for a field annotated ``kind``."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) in (typing.Union, type(int | None)) and len(args) == 1:
        kind = args[0]
    origin = typing.get_origin(kind)
    if kind is bool:
        return ["yes", 1, [True]]
    if kind is int:
        return ["abc", True, 1.5, [1], {"a": 1}, -1, 2**40]
    if kind is float:
        return ["abc", True, math.inf, math.nan, [1.0], -1.0]
    if kind is str:
        return [5, True, ["x"]] + (["no-such-value"] if (section, name) in CHOICES else [])
    if origin is tuple:
        items = [["no-such-value"], [True]] if typing.get_args(kind)[0] is str else [["a"], [-5, -1]]
        return [5, {"a": 1}, [[1]], *items]
    raise AssertionError(f"no mutations for {section}.{name}: {kind}")


def mutations(base: dict):
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if f.name in SECTIONS:
                continue
            for value in _bad_values(section, f.name, hints[f.name]):
                yield f"{section}.{f.name} = {value!r}", {**base, section: {**base.get(section, {}), f.name: value}}
        yield f"unknown key in [{section}]", {**base, section: {**base.get(section, {}), "colour": "blue"}}
        for shape in (5, "x", [{}]):
            yield f"[{section}] = {shape!r}", {**base, section: shape}
    yield "unknown section", {**base, "extra": {"x": 1}}
    yield "name is a path", {**base, "study": {**base["study"], "name": "../../escaped"}}
    yield "name with a slash", {**base, "study": {**base["study"], "name": "a/b"}}
    yield "seed = -1", {**base, "study": {**base["study"], "seed": -1}}
    yield "batch of a billion", {**base, "train": {**base["train"], "batch_size": 1_000_000_000}}
    yield "vocabulary too small for bytes", {**base, "proxy": {**base["proxy"], "vocab_size": 100}}
    yield "lr = true", {**base, "train": {**base["train"], "lr": True}}
    yield "10,000 layers", {**base, "space": {**base["space"], "n_layers": 10_000}}


def file_mutations(base: dict, folder: Path):
    """``[data] files`` that name what is not a document: a device, a FIFO (opening it would block
    forever), an empty file, and a JSONL file whose text column holds numbers."""
    fifo, empty, numbers = folder / "pipe", folder / "empty.txt", folder / "numbers.jsonl"
    os.mkfifo(fifo)
    empty.write_text("")
    numbers.write_text("".join(f'{{"text": {i}}}\n' for i in range(100)))
    data = {k: v for k, v in base["data"].items() if k not in ("tasks", "n_pairs", "n_queries", "min_distance")}
    for what, path in (("a character device", "/dev/zero"), ("a FIFO", fifo), ("an empty file", empty),
                       ("a column of numbers", numbers)):
        yield f"data.files = {what}", {**base, "data": {**data, "files": [str(path)]}}


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_every_config_mutation_is_refused_cleanly(tiny_config, tmp_path, monkeypatch, capsys):
    """For every mutation of a valid config: exit 2, one line naming the key, no traceback, and no
    file or folder written. Nothing may get as far as opening the study."""
    base = tomllib.loads(tiny_config(n_trials=1).read_text())
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("SPANMIX_CACHE", str(work / "cache"))  # a refused corpus leaves no token cache either
    inputs = tmp_path / "inputs"
    inputs.mkdir()

    def reached(*args, **kwargs):
        raise AssertionError("accepted: the study would have been opened")

    monkeypatch.setattr(pipeline, "open_study", reached)
    tried, bad = 0, []
    for what, data in [*mutations(base), *file_mutations(base, inputs)]:
        path = tmp_path / "mutated.toml"
        path.write_text(to_toml(data))
        before = _files(work)
        code = main(["launch", "--config", str(path), "--no-progress"])
        err = capsys.readouterr().err
        tried += 1
        lines = [line for line in err.splitlines() if line.strip()]
        if code != 2 or "Traceback" in err or len(lines) != 1 or _files(work) != before:
            bad.append(f"{what}: exit {code}, {err.strip()[:200]!r}, new files {_files(work) - before}")
    assert tried >= 250
    assert not bad, f"{len(bad)} of {tried} mutations were not refused cleanly:\n" + "\n".join(bad)


def test_base_config_of_the_mutations_is_valid(tiny_config):
    # the mutation test means something only if its starting point passes
    base = tomllib.loads(tiny_config(n_trials=1).read_text())
    assert StudyConfig.from_dict(tomllib.loads(to_toml(base))).name == "tiny"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli_cases(tmp_path: Path, config: Path) -> list[tuple[list[str], str]]:
    not_db = tmp_path / "notes.txt"
    not_db.write_text("not a database\n")
    a_file = tmp_path / "plain"
    a_file.write_text("x")
    port = _free_port()  # nothing listens there
    return [
        (["show", "--study", "nope"], r"there is no database at runs/nope/study.db"),
        (["export", "--study", "nope", "knee"], r"there is no database"),
        (["export", "--study", "nope", "knee", "--hf-family", "phi3"], r"--hf-family 'phi3' is unknown; allowed: auto, qwen2"),
        (["dashboard", "--study", "nope"], r"there is no database"),
        (["fidelity", "--study", "nope"], r"there is no database"),
        (["worker", "--study", "nope", "--threads", "0"], r"--threads must be a whole number >= 1"),
        (["worker", "--study", "nope"], r"there is no database"),
        (["show", "--study", "../x"], r"--study '../x' is not a name"),
        (["show", "--study", "x", "--storage", f"sqlite:///{not_db}"], r"cannot be used: .*not a database"),
        (["launch", "--config", str(config), "--workers", "0"], r"--workers must be a whole number >= 1 \(got 0\)"),
        (["launch", "--config", str(config), "--timeout", "-1"], r"--timeout must be a number of seconds > 0"),
        (["launch", "--config", str(config), "--name", "../../escaped"], r"study.name '../../escaped' is not a name"),
        (["launch", "--config", str(config), "--storage", f"postgresql://me@127.0.0.1:{port}/spanmix"],
         r"cannot be used: connection failed.*refused"),
        (["launch", "--config", str(config), "--storage", f"sqlite:///{a_file}/study.db"], r"cannot create folder"),
        (["launch", "--config", str(config), "--storage", "mongodb://x/y"], r"backend 'mongodb' is not supported"),
        # a read-only place even for root (a read-only folder is not one for root; see the test below)
        (["launch", "--config", str(config), "--storage", "sqlite:////proc/spanmix/study.db"],
         r"cannot create folder /proc/spanmix"),
        (["launch", "--config", str(tmp_path / "missing.toml")], r"missing.toml: No such file"),
        (["cost", "-s", "F S²"], r"layer 1: layer token 'S²': the window after 'S' must be a whole number"),
        (["cost", "-s", "S٨"], r"the window after 'S' must be a whole number"),
        (["cost", "--context", "1000000000"], r"proxy.context must be a whole number from 1 to 1048576"),
        (["cost", "-s", " ".join(["F"] * 10_000)], r"a schedule of 10000 layers is too deep; allowed: 1 to 256"),
        (["cost", "--d-model", "0"], r"proxy.d_model must be a whole number from 1"),
        (["dashboard", "--study", "nope", "--port", "99999"], r"--port must be from 0 to 65535 \(got 99999\)"),
        (["show", "--study", "nope", "--csv", "nodir/x.csv"], r"--csv 'nodir/x.csv': folder 'nodir' does not exist"),
        (["dashboard", "--study", "nope", "--html", "nodir/x.html"], r"folder 'nodir' does not exist"),
    ]


def test_cli_mistakes_are_one_line_exit_2_and_write_nothing(tiny_config, tmp_path, monkeypatch, capsys):
    config = tiny_config(n_trials=1)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    bad = []
    for argv, fragment in _cli_cases(tmp_path, config):
        before = _files(tmp_path)
        code = main(argv)
        err = capsys.readouterr().err
        if code != 2 or "Traceback" in err or not re.search(fragment, err) or _files(tmp_path) != before:
            bad.append(f"{argv}: exit {code}, {err.strip()[:300]!r}, new files {_files(tmp_path) - before}")
    assert not bad, "\n".join(bad)


def test_looking_at_a_missing_study_in_an_existing_database_creates_nothing(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["launch", "--config", str(tiny_config(n_trials=1)), "--out", str(out), "--no-progress", "--no-report"]) == 0
    capsys.readouterr()
    before = _files(tmp_path)
    assert main(["show", "--study", "other", "--storage", f"sqlite:///{out / 'study.db'}"]) == 2
    assert "--study 'other' is not in" in capsys.readouterr().err
    assert _files(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_a_clean_error(tiny_config, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    code = main(["launch", "--config", str(tiny_config(n_trials=1)), "--storage", f"sqlite:///{locked}/db/study.db"])
    assert code == 2 and "Traceback" not in capsys.readouterr().err
