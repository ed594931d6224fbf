"""spanmix.search: Optuna studies over the schedule space (filled in by the search issue)."""
