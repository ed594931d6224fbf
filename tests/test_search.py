"""The search layer on its own: objective, failures, budget constraint, front and knee."""

import concurrent.futures
import time

import optuna
import pytest
from optuna.trial import TrialState

import spanmix.proxies.subject as subject
import spanmix.search.objective as trial_objective
import spanmix.search.queue as queue
from spanmix.proxies.scoring import TrainingDiverged
from spanmix.search import (
    Point,
    StudyConfig,
    finished,
    knee,
    open_study,
    pareto_front,
    points,
    run_study,
)
from spanmix.search.measures import StandaloneMeasure
from spanmix.search.reuse import measured_before
from spanmix.space import Schedule
from spanmix.studies.config import load_config


@pytest.fixture
def cfg(tiny_config):
    return load_config(path=tiny_config(n_trials=7, sampler="grid"))


def test_failed_trial_is_recorded_and_the_study_goes_on(cfg, tmp_path, monkeypatch):
    real = subject.train_and_score

    def flaky(schedule, *args, **kwargs):
        if schedule.text == "F F":
            raise TrainingDiverged("loss is nan at step 2")
        return real(schedule, *args, **kwargs)

    monkeypatch.setattr(subject, "train_and_score", flaky)
    study = run_study(cfg, f"sqlite:///{tmp_path / 's.db'}")  # the grid's 7 schedules
    failed = study.get_trials(states=(TrialState.FAIL,))
    trained = [t for t in failed if t.user_attrs["failed_by"] == "error"]
    assert len(trained) == 1 and trained[0].user_attrs["failure"] == "TrainingDiverged: loss is nan at step 2"
    # later draws of the same schedule are not trained again, and say which trial failed
    assert all(t.user_attrs["failed_by"] == "remembered" and f"trial {trained[0].number} failed" in t.user_attrs["failure"]
               for t in failed if t is not trained[0])
    assert {t.user_attrs["schedule"] for t in failed} == {"F F"}
    assert finished(study) == 6  # every other schedule measured
    assert len(study.trials) <= 5 * 7  # a schedule that cannot be measured does not loop forever


def test_budget_is_an_optuna_constraint(tiny_config, tmp_path):
    cfg = load_config(path=tiny_config(n_trials=6, sampler="grid", cost="attention_flops"))
    cfg = StudyConfig.from_dict({**cfg.to_dict(), "study": {**cfg.to_dict()["study"], "budget": 0.6}})
    study = run_study(cfg, f"sqlite:///{tmp_path / 's.db'}")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    over = [t for t in complete if t.user_attrs["cost_ratio"] > 0.6]
    assert over, "the grid includes schedules over budget"
    # recorded, not dropped; marked infeasible by Optuna's convention (constraint > 0)
    assert all(t.user_attrs["constraint"][0] > 0 for t in over)
    assert all(t.constraints == {"budget": pytest.approx(t.user_attrs["cost_ratio"] - 0.6)} for t in complete)
    assert all(p.cost_ratio <= 0.6 for p in pareto_front(study))


@pytest.mark.filterwarnings("error::FutureWarning")
@pytest.mark.parametrize("sampler", ["nsga2", "tpe"])
def test_a_budgeted_study_uses_no_deprecated_optuna_api(tiny_config, tmp_path, sampler):
    """Optuna 5 deprecates the samplers' constraints_func (removal in 7): the budget is set on each
    trial, and the samplers steer by it (a repeated draw reuses the result and its constraint)."""
    cfg = load_config(path=tiny_config(n_trials=5, sampler=sampler, steps=2, cost="attention_flops"))
    cfg = StudyConfig.from_dict({**cfg.to_dict(), "study": {**cfg.to_dict()["study"], "budget": 0.6}})
    study = run_study(cfg, f"sqlite:///{tmp_path / 's.db'}")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert complete and all(set(t.constraints) == {"budget"} for t in complete)


def test_front_is_non_dominated_and_from_the_study(cfg, tmp_path):
    study = run_study(cfg, f"sqlite:///{tmp_path / 's.db'}")
    front = pareto_front(study)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    for p in front:
        assert not any(t.values[0] < p.quality and t.values[1] < p.cost for t in complete)
    for t in complete:  # every trial off the front is dominated or equal to a front point
        if t.number not in {p.number for p in front}:
            assert any(p.quality <= t.values[0] and p.cost <= t.values[1] for p in front)
    assert front == sorted(front, key=lambda p: p.cost)


def test_grid_enqueues_the_whole_space_once(cfg, tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = open_study(cfg, storage)
    open_study(cfg, storage)  # resuming enqueues nothing more
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == cfg.space.size() == 7


def _point(n, quality, cost):
    return Point(n, "F", quality, cost, cost, True, None, {})


def test_knee_is_best_quality_per_cost():
    front = [_point(0, 3.0, 1.0), _point(1, 1.2, 2.0), _point(2, 1.0, 10.0)]
    assert knee(front, maximize=False).number == 1
    assert knee([_point(0, 0.1, 1.0), _point(1, 0.9, 2.0), _point(2, 1.0, 10.0)], maximize=True).number == 1
    # both ends exactly 1 from the corner: the better quality wins, not the cheap end at chance
    assert knee([_point(0, 0.1, 1.0), _point(1, 0.11, 4.0), _point(2, 1.0, 10.0)], maximize=True).number == 2
    assert knee([_point(0, 2.1, 1.0), _point(1, 0.2, 10.0)], maximize=False).number == 1


@pytest.mark.parametrize("sampler", ["random", "tpe", "nsga2"])
def test_a_target_of_the_whole_space_measures_every_schedule(tiny_config, tmp_path, sampler):
    # 7 schedules: the samplers keep drawing measured ones long before they reach the last
    cfg = load_config(path=tiny_config(n_trials=7, sampler=sampler))
    study = run_study(cfg, f"sqlite:///{tmp_path / 's.db'}")
    assert finished(study) == 7
    assert {p.schedule for p in points(study)} == {s.text for s in cfg.space.enumerate()}


def test_a_sampled_draw_of_a_schedule_in_training_is_skipped_and_a_queued_one_waits(tiny_config, tmp_path):
    cfg = load_config(path=tiny_config(sampler="random"))
    study = open_study(cfg, optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}"))  # no heartbeat thread
    args = (StandaloneMeasure(cfg), Schedule.parse("F F"), 0.05)  # one seed: nothing to help with
    running = study.ask()  # measuring "key" in another worker
    running.set_user_attr("key", "key")
    sampled = study.ask()
    assert "fixed_params" not in study.trials[sampled.number].system_attrs
    with pytest.raises(optuna.TrialPruned, match=f"being measured in trial {running.number}"):
        measured_before(sampled, "key", *args)
    study.enqueue_trial({"n_full": 2})
    queued = study.ask()
    study.ask()  # another worker's trial, created but not drawn yet: it holds no schedule to leave out
    assert [text for _, text in queue.unmeasured(study, cfg.space, "standalone")] == [
        s.text for s in cfg.space.enumerate() if s.text != "F F"]
    assert "fixed_params" in study.trials[queued.number].system_attrs
    waited = concurrent.futures.ThreadPoolExecutor(1).submit(measured_before, queued, "key", *args)
    time.sleep(0.3)
    assert not waited.done()  # waits instead of training the schedule a second time
    study.tell(running, [3.0, 1.0])
    assert waited.result(timeout=10).number == running.number


def test_an_error_outside_training_is_recorded_and_the_schedule_measured_later(cfg, tmp_path, monkeypatch):
    real, calls = trial_objective.cost_of, []

    def once(cfg, schedule):
        calls.append(schedule.text)
        if calls.count("F F") == 1 and schedule.text == "F F":
            raise OSError("database is locked")
        return real(cfg, schedule)

    monkeypatch.setattr(trial_objective, "cost_of", once)
    study = run_study(cfg, f"sqlite:///{tmp_path / 's.db'}")
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert [(t.user_attrs["schedule"], t.user_attrs["failed_by"], t.user_attrs["failure"]) for t in failed] == [
        ("F F", "spanmix", "OSError: database is locked")]
    assert finished(study) == 7  # not the schedule's fault: it is measured by a later trial


def test_a_timeout_stops_the_study_after_the_trial_in_progress_and_queues_nothing(tiny_config, tmp_path):
    cfg = load_config(path=tiny_config(n_trials=7, steps=300, sampler="random"))
    study = run_study(cfg, f"sqlite:///{tmp_path / 's.db'}", timeout=0.5)
    assert finished(study) == 1  # the first trial outlives the timeout; none starts after it
    assert not study.get_trials(states=(TrialState.WAITING,))


def test_a_notebook_launch_is_the_commands_pipeline_preflight_once_calibration_then_search(tiny_config, tmp_path,
                                                                                            monkeypatch):
    """``spanmix.search.launch`` is what ``spanmix launch`` runs: one preflight, the calibration
    stage (a budget that separates nothing stops it, its trainings kept, unless forced), the search."""
    import spanmix.search.run as pipeline
    from spanmix.search import NotSeparated, launch

    cfg = load_config(path=tiny_config(n_trials=3, sampler="random"))
    cfg = StudyConfig.from_dict({**cfg.to_dict(), "study": {**cfg.to_dict()["study"], "calibrate": True, "seeds": 2}})
    import spanmix.search.strategies.standalone as standalone

    real, preflights, opens = pipeline.preflight, [], []
    monkeypatch.setattr(pipeline, "preflight", lambda *a, **k: preflights.append(a) or real(*a, **k))
    for module in (pipeline, standalone):
        monkeypatch.setattr(module, "open_study", lambda *a, real=module.open_study, **k: opens.append(a) or real(*a, **k))
    storage, seen = f"sqlite:///{tmp_path / 's.db'}", []
    with pytest.raises(NotSeparated) as refused:
        launch(cfg, storage, on_calibration=lambda result, advice: seen.append(result))
    assert seen == [refused.value.calibration] and "does not separate" in str(refused.value)
    assert len(preflights) == 1 and finished(optuna.load_study(study_name="tiny", storage=storage)) == 2
    stages = []
    launched = launch(cfg, storage, force=True, stage=lambda name, total, measurement: stages.append((name, total)))
    assert stages == [("calibration", 2), ("search", 3)] and len(preflights) == 2 and len(opens) == 2  # once a launch
    assert launched.calibration is not None and not launched.calibration.separated and launched.skipped == ""
    assert finished(launched.study) == 3  # the two calibrated schedules are reused, not trained again


@pytest.mark.parametrize("cost, field", [("flops", "total"), ("decode_flops", "decode"),
                                         ("attention_flops", "attention"), ("kv_cache", "kv_cache_bytes")])
def test_a_trials_cost_is_the_counted_one_and_its_ratio_to_all_full(tiny_config, cost, field):
    from spanmix.search.costs import cost_of

    cfg = load_config(path=tiny_config(cost=cost))
    schedule, full = Schedule.parse("F S4"), Schedule.parse("F F")
    value, ratio, report = cost_of(cfg, schedule)
    assert value == report[field] == getattr(cfg.count(schedule), field)
    assert ratio == pytest.approx(value / cost_of(cfg, full)[0]) and 0 < ratio < 1
