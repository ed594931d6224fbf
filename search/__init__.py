"""spanmix.search: Optuna multi-objective studies over the schedule space."""

from search.config import COSTS, QUALITIES, SAMPLERS, StudyConfig, maximized
from search.study import (
    Objective,
    Point,
    check_storage_url,
    config_of,
    finished,
    knee,
    open_storage,
    open_study,
    pareto_front,
    points,
    run_study,
)

__all__ = [
    "COSTS",
    "QUALITIES",
    "SAMPLERS",
    "Objective",
    "Point",
    "StudyConfig",
    "check_storage_url",
    "config_of",
    "finished",
    "knee",
    "maximized",
    "open_storage",
    "open_study",
    "pareto_front",
    "points",
    "run_study",
]
