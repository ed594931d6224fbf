"""spanmix.space: attention schedules and the space of candidates a study searches.

Pure Python: no torch, no Optuna. A schedule is one attention kind per layer (full, sliding window
or MASFormer block-sparse).
"""

from spanmix.space.schedule import (
    KINDS,
    LOCAL_KINDS,
    PLACEMENTS,
    Layer,
    Schedule,
    ScheduleError,
    build,
    place_full,
    placement_of,
)
from spanmix.space.space import FREE, SearchSpace, TrialLike
from spanmix.space.validation import (
    ConfigError,
    check_types,
    from_section,
    require_name,
    require_positive,
    require_whole,
)

__all__ = [
    "ConfigError",
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
    "check_types",
    "from_section",
    "place_full",
    "placement_of",
    "require_name",
    "require_positive",
    "require_whole",
]
