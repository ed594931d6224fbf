"""One schedule's seeds shared between workers: a worker that draws a schedule another is measuring
trains one of its seeds instead of waiting, nothing is trained twice, and a resumed study trains
only the missing seeds."""

from __future__ import annotations

import threading
import time
import tomllib

import optuna
import pytest
from optuna.trial import TrialState

from spanmix.proxies.train import ProxyResult
from spanmix.search import StudyConfig, open_study
from spanmix.search.measures import StandaloneMeasure
from spanmix.search.objective import Objective
from spanmix.search.queue import enqueue
from spanmix.space import Schedule
from spanmix.studies.cli import main


class Slow(StandaloneMeasure):
    """The standalone measurement's name and key, with a training that takes ``seconds`` and
    scores each seed by its number; every call is logged as (thread, seed)."""

    def __init__(self, cfg: StudyConfig, calls: list[tuple[str, int]], seconds: float) -> None:
        super().__init__(cfg, precision="fp32")
        self.calls, self.seconds = calls, seconds

    def __call__(self, schedule: Schedule, replicate: int = 0) -> ProxyResult:
        self.calls.append((threading.current_thread().name, replicate))
        time.sleep(self.seconds)
        return ProxyResult(schedule.text, {"loss": 1.0 + replicate}, {}, 10, 1, self.seconds, 0.0,
                           replicate, "fp32", curve={1: {"loss": 2.0 + replicate}})


def _config(tiny_config, seeds: int) -> StudyConfig:
    text = tiny_config(n_trials=1).read_text().replace("[study]\n", f"[study]\nseeds = {seeds}\n", 1)
    return StudyConfig.from_dict(tomllib.loads(text))


def test_a_worker_that_draws_a_schedule_being_measured_trains_one_of_its_seeds(tiny_config, tmp_path):
    cfg = _config(tiny_config, seeds=3)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(cfg, url)
    params = {"n_full": 2, "placement": "bottom"}
    enqueue(study, [(params, "F F"), (params, "F F")], "standalone")
    calls: list[tuple[str, int]] = []

    def worker() -> None:
        mine = optuna.load_study(study_name=cfg.name, storage=url)
        mine.optimize(Objective(cfg, Slow(cfg, calls, 1.5), wait_seconds=0.1), n_trials=1)

    first = threading.Thread(target=worker, name="first")
    second = threading.Thread(target=worker, name="second")
    first.start()
    while not calls:  # the first is training seed 0 when the second draws the same schedule
        time.sleep(0.01)
    second.start()
    first.join()
    second.join()
    assert sorted(seed for _, seed in calls) == [0, 1, 2]  # every seed once
    trainer = {seed: name for name, seed in calls}
    assert trainer == {0: "first", 1: "first", 2: "second"}  # by both workers: the helper took the last seed
    owner, other = sorted(study.get_trials(), key=lambda t: t.number)
    assert owner.state == other.state == TrialState.COMPLETE and other.user_attrs["reused_from"] == owner.number
    assert owner.user_attrs["seed_scores"] == {"0": {"loss": 1.0}, "1": {"loss": 2.0}, "2": {"loss": 3.0}}
    assert owner.values[0] == 2.0 and sorted(owner.user_attrs["seed_curves"]) == ["0", "1", "2"]
    assert other.user_attrs["helped"]["seed"] == 2


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the dead owner's helper is made by hand
def test_a_retried_trial_takes_the_seeds_helpers_finished_and_trains_only_the_rest(tiny_config, tmp_path):
    cfg = _config(tiny_config, seeds=3)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(cfg, url)
    helper = study.ask()  # a helper that finished seed 2 for an owner that then died
    key = f"{Schedule.parse('F F').hash}-{Objective(cfg, Slow(cfg, [], 0)).config_hashes['standalone']}"
    helper.set_user_attr("helped", {"key": key, "seed": 2, "scores": {"loss": 3.0}, "curve": {}, "tokens_seen": 10,
                                    "train_seconds": 1.0, "precision": "fp32"})
    study.tell(helper, state=TrialState.PRUNED)
    enqueue(study, [({"n_full": 2, "placement": "bottom"}, "F F")], "standalone")
    calls: list[tuple[str, int]] = []
    study.optimize(Objective(cfg, Slow(cfg, calls, 0.0)), n_trials=1)
    assert sorted(seed for _, seed in calls) == [0, 1]
    assert study.trials[-1].user_attrs["seed_scores"]["2"] == {"loss": 3.0}


def test_two_workers_of_the_command_share_the_seeds_of_the_one_schedule(tmp_path, tiny_config):
    config = tiny_config(n_trials=1, steps=300, sampler="random", extra="")
    text = config.read_text().replace("[study]\n", "[study]\nseeds = 2\n", 1).replace("n_full = [0, 2]", "n_full = [2, 2]")
    config.write_text(text)
    out = tmp_path / "run"
    assert main(["launch", "--config", str(config), "--out", str(out), "--workers", "2", "--no-progress", "--no-report"]) == 0
    trials = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}").get_trials()
    owner = next(t for t in trials if t.state == TrialState.COMPLETE and "reused_from" not in t.user_attrs)
    helpers = [t for t in trials if "helped" in t.user_attrs]
    assert sorted(owner.user_attrs["seed_scores"]) == ["0", "1"] and len(helpers) == 1
    assert helpers[0].user_attrs["worker"] != owner.user_attrs["worker"]  # the other worker trained seed 1
    assert helpers[0].user_attrs["helped"]["scores"] == owner.user_attrs["seed_scores"]["1"]
    assert owner.user_attrs["seeds_started"][0] == 0 and owner.user_attrs["tokens_seen"] == 2 * 300 * 4 * 32
