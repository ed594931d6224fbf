"""spanmix.search: Optuna multi-objective studies over the schedule space."""

from search.config import COSTS, QUALITIES, SAMPLERS, STRATEGIES, StudyConfig, SupernetConfig, maximized
from search.fidelity import Fidelity, rank_fidelity, run_fidelity, study_fidelity
from search.study import (
    STANDALONE,
    SUPERNET,
    Objective,
    Point,
    check_storage_url,
    config_of,
    final_fidelity,
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
    "STANDALONE",
    "STRATEGIES",
    "SUPERNET",
    "Fidelity",
    "Objective",
    "Point",
    "StudyConfig",
    "SupernetConfig",
    "check_storage_url",
    "config_of",
    "final_fidelity",
    "finished",
    "knee",
    "maximized",
    "open_storage",
    "open_study",
    "pareto_front",
    "points",
    "rank_fidelity",
    "run_fidelity",
    "run_study",
    "study_fidelity",
]
