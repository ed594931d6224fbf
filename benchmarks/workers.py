"""Do workers share the work? Distinct schedules measured per hour with 1, 2 and 4 workers at equal
total cores (run_study splits the cores between local workers), on SQLite and on PostgreSQL, and
the share of its time each worker spent idle rather than in a trial.

Each run is a fresh study of the ``quick`` space with the default sampler (NSGA-II), stopped
``--seconds`` after it starts (trials running then finish). Targets: 2 workers measure at least
1.5x the schedules per hour of 1 worker; no worker is idle more than 20% of the time.

    python benchmarks/workers.py                 # about 15 minutes on 2 cores
    python benchmarks/workers.py --seconds 240 --workers 1 2 --no-postgres
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from optuna.trial import TrialState  # noqa: E402

from benchmarks import postgres  # noqa: E402
from benchmarks.machine import describe  # noqa: E402
from spanmix.search import open_storage, run_study  # noqa: E402
from spanmix.search.logs import quiet_libraries  # noqa: E402
from spanmix.studies.config import load_config  # noqa: E402


def measure(storage: str, workers: int, seconds: float, name: str) -> tuple[int, float, list[tuple[float, int]]]:
    """(schedules trained, wall seconds, (idle share, schedules trained) of each worker) for one study."""
    cfg = replace(load_config(preset="quick"), name=name, n_trials=10_000)  # the clock stops it, not the target
    start = time.perf_counter()
    study = run_study(cfg, storage, workers=workers, timeout=seconds)
    wall = time.perf_counter() - start
    trained = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if "reused_from" not in t.user_attrs]
    busy: dict[str, list[float]] = {}  # time in trials that trained; waiting, skipping and reusing are idle
    for t in trained:
        busy.setdefault(t.user_attrs["worker"], []).append(t.duration.total_seconds())
    each = [(max(0.0, 1 - sum(b) / wall), len(b)) for b in busy.values()] + [(1.0, 0)] * (workers - len(busy))
    return len(trained), wall, sorted(each)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=75, help="how long each study starts trials (default 75)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="worker counts (default 1 2 4)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()
    quiet_libraries()
    print(describe())
    print(f"quick space, NSGA-II, each study starts trials for {args.seconds:.0f} s")
    with tempfile.TemporaryDirectory() as tmp, _server(args.no_postgres) as pg:
        print(f"\n{'storage':<11}{'workers':>8}{'schedules':>10}{'wall s':>8}{'per hour':>9}{'vs 1':>7}  "
              "per worker: idle share (schedules trained)")
        storages = {"sqlite": lambda n: f"sqlite:///{tmp}/{n}.db"}
        if pg:
            storages["postgresql"] = lambda n: pg
        for kind, url in storages.items():
            base = None
            for n in args.workers:
                name = f"bench-{kind}-{n}"
                open_storage(url(name))  # create the database before the clock starts
                done, wall, each = measure(url(name), n, args.seconds, name)
                rate = 3600 * done / wall
                base = base or rate
                print(f"{kind:<11}{n:>8}{done:>10}{wall:>8.0f}{rate:>9.0f}{rate / base:>6.2f}x  "
                      + "  ".join(f"{idle:.0%} ({k})" for idle, k in each), flush=True)


def _server(skip: bool):  # type: ignore[no-untyped-def]
    import contextlib

    why = "--no-postgres" if skip else postgres.available()
    if why:
        print(f"PostgreSQL skipped: {why}")
        return contextlib.nullcontext(None)
    return postgres.temporary_server()


if __name__ == "__main__":
    main()
