"""spanmix.space: attention schedules and the space of candidates a study searches.

Pure Python: no torch, no Optuna. A schedule is one attention kind per layer (full, sliding window
or MASFormer block-sparse).
"""

from space.schedule import KINDS, LOCAL_KINDS, PLACEMENTS, Layer, Schedule, ScheduleError, build, place_full
from space.space import FREE, SearchSpace, TrialLike

__all__ = [
    "FREE",
    "KINDS",
    "LOCAL_KINDS",
    "PLACEMENTS",
    "Layer",
    "Schedule",
    "ScheduleError",
    "SearchSpace",
    "TrialLike",
    "build",
    "place_full",
]
