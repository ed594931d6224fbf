"""The README's "Python API" as a notebook user runs it: the pipeline in one call, then the pieces."""

import re
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def _blocks() -> list[str]:
    body = README.read_text()
    return re.findall(r"```python\n(.*?)```", body[body.index("## Python API"):], re.S)[:2]


def test_readme_launch_from_python_measures_and_reads_its_front(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # the preset's 5 minutes are the README's main command; here the same lines on the tests' tiny space
    code = _blocks()[0].replace('preset="quick"', f"path={str(tiny_config(n_trials=3)).__repr__()}")
    ns: dict = {}
    exec(code, ns)
    done, view = ns["done"], ns["view"]
    assert done.skipped == "study.calibrate = false" and done.calibration is None
    assert view.knee() is not None and view.knee().schedule in {p.schedule for p in view.front()}
    assert (tmp_path / "runs/quick/study.db").is_file()


def test_readme_pieces_build_count_and_train_a_schedule():
    ns: dict = {}
    exec(_blocks()[1], ns)
    assert ns["s"].text == "F S8 S8 S8" and 0 <= ns["r"].scores["recall"] <= 1 and ns["r"].tokens_per_second > 0
