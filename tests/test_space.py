import random

import pytest

from spanmix.space import ConfigError, Schedule, ScheduleError, SearchSpace


class FakeTrial:
    """Records suggestions like an Optuna trial, answering at random."""

    def __init__(self, seed: int):
        self.rng, self.params = random.Random(seed), {}

    def suggest_int(self, name, low, high):
        self.params[name] = self.rng.randint(low, high)
        return self.params[name]

    def suggest_categorical(self, name, choices):
        self.params[name] = self.rng.choice(list(choices))
        return self.params[name]


SPACES = [
    SearchSpace(n_layers=6, context=1024),
    SearchSpace(n_layers=4, context=512, n_full=(1, 2), windows=(64, 128), local=("sliding", "block")),
    SearchSpace(n_layers=4, context=512, placements=("free",), windows=(64,)),
    SearchSpace(n_layers=3, context=256, n_full=(0, 1), windows=(16, 32), per_layer_windows=True),
    SearchSpace(n_layers=3, context=256, windows=(16, 32), local=("sliding", "block"), sinks=(0, 4)),
]


@pytest.mark.parametrize("space", SPACES)
def test_size_matches_exhaustive_enumeration(space):
    schedules = list(space.enumerate())
    assert len(schedules) == space.size()
    assert len({s.hash for s in schedules}) == len(schedules)  # each once
    assert all(space.contains(s) for s in schedules)
    assert all(s.canonical(space.context) == s for s in schedules)


@pytest.mark.parametrize("space", SPACES)
def test_suggest_draws_members_with_interpretable_params(space):
    seen = set()
    for seed in range(200):
        trial = FakeTrial(seed)
        s = space.suggest(trial)
        assert isinstance(s, Schedule) and space.contains(s)
        seen.add(s.hash)
        if "n_full" in trial.params:
            assert s.n_full == trial.params["n_full"]
    assert len(seen) > 1


def test_suggest_skips_placement_when_it_cannot_matter():
    space = SearchSpace(n_layers=4, context=512, n_full=(4, 4), windows=(64,))
    trial = FakeTrial(0)
    assert space.suggest(trial).text == "F F F F"
    assert trial.params == {}


def test_known_sizes():
    # 0 or 6 full layers: one set each; 1..5: bottom/top/middle/even give distinct sets except overlaps
    space = SearchSpace(n_layers=4, context=512, n_full=(0, 4), windows=(64,), placements=("bottom", "top"))
    # sets: {}, {0},{3}, {0,1},{2,3}, {0,1,2},{1,2,3}, {0,1,2,3}
    assert space.size() == 8
    assert SearchSpace(n_layers=4, context=512, placements=("free",), windows=(64, 128)).size() == sum(
        __import__("math").comb(4, k) * (2 if k < 4 else 1) for k in range(5)
    )
    # sinks multiply the sliding schedules only: per full set, 2 windows x (2 sink counts + 1 block)
    sinks = SearchSpace(n_layers=4, context=512, placements=("free",), windows=(64, 128), local=("sliding", "block"), sinks=(0, 4))
    assert sinks.size() == sum(__import__("math").comb(4, k) * (6 if k < 4 else 1) for k in range(5))
    # a space without sinks is written as before sinks existed
    assert "sinks" not in SPACES[0].to_dict() and SPACES[-1].to_dict()["sinks"] == [0, 4]


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(windows=(1024,)), r"window 1024 is outside the allowed range 2..1023"),
        (dict(windows=(1,)), r"window 1 is outside"),
        (dict(n_full=(3, 9)), r"n_full range \(3, 9\)"),
        (dict(placements=("left",)), r"placement 'left' is unknown"),
        (dict(local=("dilated",)), r"local flavour 'dilated'"),
        (dict(placements=("free", "top")), r"use it alone"),
        (dict(windows=()), r"windows is empty"),
        (dict(sinks=(-1,)), r"sinks -1 is outside the allowed range 0..1023"),
        (dict(sinks=(4,), local=("block",)), r"only sliding layers keep sink tokens"),
        (dict(windows=(1000,), sinks=(0, 24)), r"window 1000 with 24 sinks covers the whole context 1024"),
        (dict(sinks=()), r"sinks \[\] must be a non-empty list"),
    ],
)
def test_invalid_spaces_are_rejected(kwargs, fragment):
    with pytest.raises(ScheduleError, match=fragment):
        SearchSpace(n_layers=6, context=1024, **kwargs)


def test_all_full_space_needs_no_window():
    space = SearchSpace(n_layers=3, context=64, n_full=(3, 3), windows=())
    assert [s.text for s in space.enumerate()] == ["F F F"]


def test_dict_round_trip_and_unknown_key():
    space = SPACES[1]
    assert SearchSpace.from_dict(space.to_dict()) == space
    with pytest.raises(ConfigError, match=r"unknown space key\(s\) \['widows'\]"):
        SearchSpace.from_dict({"n_layers": 4, "context": 512, "widows": [64]})


@pytest.mark.parametrize("space", SPACES)
def test_all_params_replays_to_each_schedule_once(space):
    pairs = list(space.all_params())
    assert sorted(s.text for _, s in pairs) == sorted(s.text for s in space.enumerate())

    class Fixed:
        def __init__(self, params):
            self.params = params

        def suggest_int(self, name, low, high):
            return self.params[name]

        def suggest_categorical(self, name, choices):
            assert self.params[name] in choices
            return self.params[name]

    for params, schedule in pairs:
        assert space.suggest(Fixed(params)) == schedule
