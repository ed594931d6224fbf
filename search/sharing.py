"""One schedule's training seeds shared between workers.

A study with ``seeds = k`` measures a schedule by ``k`` trainings. When a worker draws a schedule
another worker is measuring, it helps instead of waiting or drawing again: it claims a seed the
measuring trial (the owner) has not begun, trains it, and stores the result in its own trial; the
owner takes it from there. Nothing is trained twice, without locks: each side writes what it
takes on, then reads what the other wrote, and backs off when the other has written the same seed
(the owner defers to the claim, the helper lets go of a seed the owner began). When both back off,
the claim is let go and the owner trains the seed itself; when a helper dies mid-way, its claim
dies with its trial (a heartbeat fails it) and the owner trains the seed itself. A retried owner
takes what helpers finished for the attempt it retries, so a resumed study trains only the
missing seeds.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from spanmix.search import record


def claims(trials: list[FrozenTrial], key: str, me: int) -> dict[int, int]:
    """Seeds of ``key`` that live helpers other than trial ``me`` are training: seed -> trial."""
    out = {}
    for t in trials:
        held = record.claim_of(t) if t.number != me else None
        if held is not None and held[0] == key:
            out[held[1]] = t.number
    return out


def finished(trials: list[FrozenTrial], key: str) -> dict[int, dict[str, Any]]:
    """What helpers finished for ``key``, by seed (from any trial, whatever its state now)."""
    out = {}
    for t in trials:
        result = record.help_of(t)
        if result is not None and result["key"] == key:
            out.setdefault(result["seed"], result)
    return out


def free_seed(trials: list[FrozenTrial], owner: FrozenTrial, key: str, replicates: int) -> int | None:
    """The seed a helper may claim: the highest the owner has neither finished nor begun and no
    one claimed or finished. Seed 0 is always the owner's (it begins it at once, and with one seed
    there is nothing to share); above it the owner works upward, so the two rarely meet."""
    taken = (set(record.seed_scores_of(owner.user_attrs)) | record.started_of(owner.user_attrs)
             | set(claims(trials, key, -1)) | set(finished(trials, key)))
    free = [r for r in range(1, replicates) if r not in taken]
    return free[-1] if free else None


def still_mine(study: optuna.Study, trial: optuna.Trial, owner: int, key: str, seed: int) -> bool:
    """After claiming ``seed``: whether the claim holds (the owner is still measuring and has
    not begun the seed, and no other helper claimed it); otherwise let go of it."""
    trials = study.get_trials(deepcopy=False)
    holds = (trials[owner].state == TrialState.RUNNING and seed not in record.started_of(trials[owner].user_attrs)
             and seed not in claims(trials, key, trial.number))
    if not holds:
        record.claim(trial, key, None)
    return holds
