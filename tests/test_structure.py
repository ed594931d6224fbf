"""The house's rules, read from the source: imports run one way and never in a circle, no module
outside ``search/strategies/`` asks which strategy is running, every stored attribute is named in
``search/record.py`` alone, and the benchmarks use only public names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from spanmix.search.strategies import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("space", "proxies", "search", "studies")  # the order data flows in
RECORD = ROOT / "search" / "record.py"
STRATEGIES = ROOT / "search" / "strategies"


def _modules() -> dict[str, Path]:
    """``spanmix.<package>.<module>`` -> file, for every module of the four packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(("spanmix", *parts[:-1])) if parts[-1] == "__init__" else ".".join(("spanmix", *parts))
            found[name] = path
    return found


def _runtime_imports(tree: ast.Module) -> list[str]:
    """Modules imported anywhere in the file, except under ``if TYPE_CHECKING:``; ``from package
    import module`` imports the module (its package's ``__init__`` runs first for any import)."""
    modules = _modules()
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    names = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module != "__future__":
            names += [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                      for a in node.names]
    return names


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        imported = _runtime_imports(ast.parse(path.read_text()))
        graph[name] = {m for m in imported if m in modules and m != name}
    return graph


def test_the_import_graph_has_no_circle():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_imports_run_only_leftward_and_the_floors_stay_free_of_the_libraries_above():
    banned = {"space": ("torch", "lightning", "optuna"), "proxies": ("optuna",), "search": (), "studies": ()}
    bad = []
    for name, path in _modules().items():
        package = name.split(".")[1]
        allowed = PACKAGES[: PACKAGES.index(package) + 1]
        for imported in _runtime_imports(ast.parse(path.read_text())):
            parts = imported.split(".")
            if parts[0] == "spanmix" and len(parts) > 1 and parts[1] in PACKAGES and parts[1] not in allowed:
                bad.append(f"{name} imports {imported}")
            if parts[0] in banned[package]:
                bad.append(f"{name} imports {imported}")
    assert not bad, "\n".join(bad)


def test_no_module_outside_the_strategies_asks_which_strategy_is_running():
    bad = []
    for name, path in _modules().items():
        if path.is_relative_to(STRATEGIES):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(isinstance(s, ast.Attribute) and s.attr == "strategy" for s in sides):
                    bad.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
            # a strategy's name in the code (its measurement may share the name: standalone); its
            # config section lives in its own file too
            if isinstance(node, ast.Constant) and node.value in REGISTRY and node.value != "standalone":
                bad.append(f"{name}:{node.lineno}: {node.value!r}")
    assert not bad, "\n".join(bad)


def test_nothing_above_the_proxies_asks_which_model_is_under_search():
    """Proxy or checkpoint is asked of the subject (proxies/subject.py), never decided by looking
    at ``base.model``, nor by calling the checkpoint's or the proxy's own functions, in search and
    studies (``spanmix cost --checkpoint`` counts a folder the user names, outside any study)."""
    direct = {"checkpoint", "train_and_score", "resolve_precision", "check_fits", "measure_latency", "ProxyLM", "HealLM"}
    bad = []
    for name, path in _modules().items():
        if path.parent.name in ("proxies", "space") or path == ROOT / "studies" / "commands" / "cost.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "model" and ast.unparse(node.value).endswith("base"):
                bad.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("spanmix.proxies"):
                used = {a.name for a in node.names} & direct
                bad += [f"{name}:{node.lineno}: imports {u}" for u in sorted(used)]
    assert not bad, "\n".join(bad)


def _attribute_keys(tree: ast.Module) -> list[tuple[int, str]]:
    """String literals used as a stored attribute's key: ``set_user_attr("k", ...)``,
    ``set_trial_user_attr(id, "k", ...)``, ``x.user_attrs["k"]``, ``x.user_attrs.get("k")``,
    ``"k" in x.user_attrs`` and ``enqueue_trial(..., user_attrs={"k": ...})``."""
    found = []

    def is_attrs(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr in ("user_attrs", "system_attrs")

    for node in ast.walk(tree):
        keys: list[ast.AST] = []
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "set_user_attr" and node.args:
                keys.append(node.args[0])
            elif node.func.attr == "set_trial_user_attr" and len(node.args) > 1:
                keys.append(node.args[1])
            elif node.func.attr == "get" and is_attrs(node.func.value) and node.args:
                keys.append(node.args[0])
            for kw in node.keywords:
                if kw.arg == "user_attrs" and isinstance(kw.value, ast.Dict):
                    keys += [k for k in kw.value.keys if k is not None]
        elif isinstance(node, ast.Subscript) and is_attrs(node.value):
            keys.append(node.slice)
        elif isinstance(node, ast.Compare) and any(is_attrs(c) for c in node.comparators):
            keys.append(node.left)
        found += [(k.lineno, k.value) for k in keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
    return found


def test_stored_attribute_keys_are_spelled_in_the_record_module_alone():
    # Optuna's own system attribute that marks a queued trial is read in the record module too
    spelled = [(name, line, key) for name, path in _modules().items() if path != RECORD
               for line, key in _attribute_keys(ast.parse(path.read_text()))]
    assert not spelled, "\n".join(f"{name}:{line}: {key!r}" for name, line, key in spelled)
    assert {key for _, key in _attribute_keys(ast.parse(RECORD.read_text()))} >= {"fixed_params"}  # the scan sees keys


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_import_no_private_name(path):
    tree = ast.parse(path.read_text())
    private = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module != "__future__":
            private += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
            private += [node.module] if any(p.startswith("_") for p in node.module.split(".")) else []
        elif isinstance(node, ast.Import):
            private += [a.name for a in node.names if any(p.startswith("_") for p in a.name.split("."))]
    assert not private, private


def _toy_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str) -> None:
    """A module of the user's, outside spanmix, importable by name."""
    (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))


def test_a_toy_task_is_one_registry_entry_and_a_missing_worded_form_is_refused_by_name(tmp_path, monkeypatch):
    """CONTRIBUTING.md's task recipe, as written there, from a module of the user's."""
    import importlib
    import re

    from spanmix.proxies.data import TASKS, DataConfig, TaskData
    from spanmix.space import ConfigError

    recipe = re.search(r"## A task.*?```python\n(.*?)```", (ROOT / "CONTRIBUTING.md").read_text(), re.S).group(1)
    monkeypatch.setattr("spanmix.proxies.data.TASKS", dict(TASKS))  # the registry as it was, after the test
    _toy_module(tmp_path, monkeypatch, "toy_task", recipe)
    importlib.import_module("toy_task")
    data = DataConfig(tasks=("echo",), seq_len=32, val_samples=2)
    sample = TaskData(data, "val", 2)[0]
    assert int((sample["y"] >= 0).sum()) == 1 and data.task("echo").chance(data) == 1 / 256
    with pytest.raises(ConfigError, match=r"task 'echo' has no form in a tokenizer's tokens"):
        DataConfig(tasks=("echo",), seq_len=32, tokenizer="tokenizer.json").task("echo")


def test_a_toy_strategy_is_one_registry_line(tiny_config, tmp_path, monkeypatch):
    """A strategy from a module of the user's: a Strategy subclass and one REGISTRY line."""
    from spanmix.search import StudyConfig, run_study
    from spanmix.search.strategies import REGISTRY as registry
    from spanmix.studies.config import load_config

    _toy_module(tmp_path, monkeypatch, "toy_strategy", '''
from dataclasses import asdict, dataclass

from spanmix.search.strategies.standalone import Standalone
from spanmix.space import from_section


@dataclass(frozen=True)
class Times:
    """The [times] section."""

    factor: int = 2

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        return from_section(cls, data, "times")


class ManyTimes(Standalone):
    """Standalone, asked for ``factor`` times the schedules."""

    name = "times"
    section = Times

    def target(self, cfg, n_trials):
        return min(cfg.section("times").factor * n_trials, cfg.space.size())
''')
    monkeypatch.setitem(registry, "times", "toy_strategy:ManyTimes")
    base = load_config(path=tiny_config(n_trials=2, sampler="grid")).to_dict()
    cfg = StudyConfig.from_dict({**base, "study": {**base["study"], "strategy": "times"}, "times": {"factor": 3}})
    from spanmix.search import strategies
    from spanmix.space import ConfigError

    assert cfg.section("times").factor == 3 and cfg.to_dict()["times"] == {"factor": 3}
    assert strategies.get("times").target(cfg, 2) == 6
    with pytest.raises(ConfigError, match="times.factor"):
        StudyConfig.from_dict({**base, "times": {"factor": "x"}})
    run_study(cfg, f"sqlite:///{tmp_path / 's.db'}")


def test_a_toy_family_is_one_row(monkeypatch):
    """A Hugging Face family is one row of FAMILIES: exported, and named by --hf-family."""
    from spanmix.space import Schedule
    from spanmix.studies.export import FAMILIES, HFFamily, check_family, hf_fragment

    monkeypatch.setitem(FAMILIES, "toy", HFFamily("toy_text", "ToyConfig", "ToyForCausalLM", "sliding"))
    assert check_family("toy") == "toy"
    assert hf_fragment(Schedule.parse("F S8 F"), "toy") == {
        "model_type": "toy_text", "num_hidden_layers": 3, "sliding_window": 8,
        "layer_types": ["full_attention", "sliding_attention", "full_attention"]}
