"""spanmix.search: Optuna multi-objective studies over the schedule space.

The modules, one job each: :mod:`.config` (what a study is), :mod:`.record` (what it stores),
:mod:`.objective` (one trial), :mod:`.queue` (meeting a target), :mod:`.study` (opening one),
:mod:`.strategies` (how a study spends its budget), :mod:`.workers` (processes and the machine),
:mod:`.run` (the calls the command line and a notebook make: :func:`launch` is the whole pipeline), :mod:`.front` and :mod:`.fidelity` (what the
measurements say), :mod:`.view` (one read of a study for every report), :mod:`.storage` and
:mod:`.logs`.
"""

from spanmix.search.config import (
    COSTS,
    QUALITIES,
    SAMPLERS,
    StudyConfig,
)
from spanmix.search.fidelity import Fidelity, rank_fidelity
from spanmix.search.front import knee, maximized, rescored
from spanmix.search.measures import STANDALONE
from spanmix.search.objective import Objective
from spanmix.search.queue import finished
from spanmix.search.record import Point, TrialRecord
from spanmix.search.run import (
    Launched,
    NotSeparated,
    calibrate_study,
    join_study,
    launch,
    run_fidelity,
    run_study,
)
from spanmix.search.storage import check_storage_url, open_storage
from spanmix.search.strategies import NAMES as STRATEGIES
from spanmix.search.study import config_of, open_study
from spanmix.search.view import StudyView, pareto_front, points
from spanmix.search.workers import preflight

__all__ = [
    "COSTS",
    "QUALITIES",
    "SAMPLERS",
    "STANDALONE",
    "STRATEGIES",
    "Fidelity",
    "Launched",
    "NotSeparated",
    "Objective",
    "Point",
    "StudyConfig",
    "StudyView",
    "TrialRecord",
    "calibrate_study",
    "check_storage_url",
    "config_of",
    "finished",
    "join_study",
    "knee",
    "launch",
    "maximized",
    "open_storage",
    "open_study",
    "pareto_front",
    "points",
    "preflight",
    "rank_fidelity",
    "rescored",
    "run_fidelity",
    "run_study",
]
