"""A study written by spanmix 0.1.0 still opens, shows, exports and draws.

``data/study-v0.1.0.db`` was written by the 0.1.0 release (a grid study of the tiny config with a
``spanmix fidelity --budget 2`` retraining, and a supernet study), before the per-trial
"fidelity" attribute was renamed "measurement". Everything here is checked against what the file
itself stores, read with plain Optuna.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pandas as pd
import pytest

from spanmix.search import StudyView
from spanmix.studies.cli import main

LEGACY = Path(__file__).parent / "data" / "study-v0.1.0.db"


@pytest.fixture
def storage(tmp_path):
    db = tmp_path / "legacy.db"
    shutil.copy(LEGACY, db)
    return f"sqlite:///{db}"


def _stored(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage).get_trials(states=(optuna.trial.TrialState.COMPLETE,))


@pytest.mark.parametrize("name", ["legacy", "legacy-supernet"])
def test_a_study_of_the_previous_release_opens_shows_and_exports(storage, tmp_path, capsys, name):
    stored = _stored(storage, name)
    assert all("fidelity" in t.user_attrs and "measurement" not in t.user_attrs for t in stored)  # the old key
    view = StudyView(optuna.load_study(study_name=name, storage=storage))
    assert {p.number: p.measurement for p in view.points()} == {t.number: t.user_attrs["fidelity"] for t in stored}

    csv = tmp_path / "trials.csv"
    assert main(["show", "--study", name, "--storage", storage, "--csv", str(csv)]) == 0
    printed = capsys.readouterr().out
    front = view.front()
    assert front and all(f"{p.schedule:<40} {p.quality:>12.4f}" in printed for p in front)
    frame = pd.read_csv(csv)
    assert dict(zip(frame["number"], frame["measurement"])) == {t.number: t.user_attrs["fidelity"] for t in stored}
    for cheap, dear, _ in view.comparisons:  # the old studies' rank fidelity is still found and printed
        assert f"rank fidelity of {cheap} against {dear}" in printed

    out = tmp_path / "export"
    assert main(["export", "--study", name, "--storage", storage, "--out", str(out), "knee"]) == 0
    knee = view.knee()
    written = json.loads((out / f"knee-{knee.number}.json").read_text())
    assert written["trial"] == knee.number and " ".join(written["layers"]) == knee.schedule
    assert main(["dashboard", "--study", name, "--storage", storage, "--html", str(tmp_path / "d.html")]) == 0
    assert 'id="front"' in (tmp_path / "d.html").read_text()


def test_the_previous_release_measurements_are_compared_as_before(storage):
    measured = {t.user_attrs["fidelity"] for t in _stored(storage, "legacy")}
    assert measured == {"standalone", "standalone-2x"}
    view = StudyView(optuna.load_study(study_name="legacy", storage=storage))
    assert [(cheap, dear) for cheap, dear, _ in view.comparisons] == [("standalone", "standalone-2x")]
    supernet = StudyView(optuna.load_study(study_name="legacy-supernet", storage=storage))
    # no recorded search measurement in 0.1.0: the one most trials hold (every schedule scored)
    assert supernet.searched == "supernet" and supernet.final == "standalone"
    assert [(cheap, dear) for cheap, dear, _ in supernet.comparisons] == [("supernet", "standalone")]


def test_a_study_of_the_previous_release_resumes_without_training_again(storage, monkeypatch):
    import spanmix.proxies.subject as subject
    from spanmix.search import Objective, config_of, finished, run_study
    from spanmix.search.measures import StandaloneMeasure

    def no_training(*args, **kwargs):
        raise AssertionError("a schedule the old study measured was trained again")

    monkeypatch.setattr(subject, "train_and_score", no_training)
    cfg = config_of(optuna.load_study(study_name="legacy", storage=storage))
    study = run_study(cfg, storage)  # resumes: the stored config, keys added since read as their defaults
    assert finished(study) == 7  # the whole space, all measured by 0.1.0
    # a new draw of a schedule 0.1.0 measured finds it under the same measurement key and reuses it
    old = next(t for t in study.trials if t.user_attrs.get("fidelity") == "standalone")
    study.enqueue_trial(old.params)
    study.optimize(Objective(cfg, StandaloneMeasure(cfg)), n_trials=1)
    new = study.trials[-1]
    assert new.state.name == "COMPLETE" and new.user_attrs["reused_from"] == old.number
    assert new.values == old.values and new.user_attrs["measurement"] == "standalone"
