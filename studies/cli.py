"""The ``spanmix`` command line: launch a study, look at it, export what it found."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Iterator, Sequence

from proxies import ProxyConfig, count, measure_latency
from space import ConfigError, Schedule, require_name

log = logging.getLogger("spanmix")

EXAMPLES = (
    "F F F F F F F F",
    "S256 S256 S256 F S256 S256 S256 F",
    "F S256 S256 S256 S256 S256 S256 S256",
    "B256 B256 B256 F B256 B256 B256 F",
    "S256 S256 S256 S256 S256 S256 S256 S256",
)


def _default_storage(out: Path) -> str:
    return f"sqlite:///{out / 'study.db'}"


@contextlib.contextmanager
def _undone_on_error(*paths: Path) -> Iterator[None]:
    """A command that fails leaves nothing behind: remove each path (with the folders above it
    that it created) that did not exist before the block and exists after it failed."""
    created = []
    for path in paths:
        top = path.absolute()
        while not top.parent.exists():
            top = top.parent
        if not top.exists():
            created.append(top)
    try:
        yield
    except BaseException:
        for top in created:
            if top.is_dir():
                shutil.rmtree(top, ignore_errors=True)
            elif top.exists():
                top.unlink()
        raise


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and not 0 < timeout < float("inf"):
        raise ConfigError(f"--timeout must be a number of seconds > 0 (got {timeout})")


# --- cost ------------------------------------------------------------------------------------------------
def _cost(args: argparse.Namespace) -> int:
    cfg = ProxyConfig(d_model=args.d_model, n_heads=args.n_heads, context=args.context)
    schedules = [Schedule.parse(text).validate(cfg.context) for text in (args.schedule or EXAMPLES)]
    reports = [count(cfg, s) for s in schedules]
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
        return 0
    exact = all(r.total == r.closed_form_total and r.decode == r.closed_form_decode for r in reports)
    print(f"proxy d_model={cfg.d_model} heads={cfg.n_heads} T={cfg.context}; multiply-adds counted by fvcore "
          f"(equal to the closed form: {exact}). prefill: a forward over the T tokens; decode: generating "
          f"token T; KV: the peak cache")
    header = (f"{'schedule':<40} {'prefill G':>9} {'vs full':>8} {'attn vs full':>12} {'decode M':>9} {'vs full':>8} "
              f"{'KV MiB':>8}")
    print(header + (f" {'fwd+bwd ms':>11}" if args.latency else ""))
    for s, r in zip(schedules, reports):
        line = (f"{s.text:<40} {r.total / 1e9:>9.3f} {r.ratio:>8.1%} {r.attention_ratio:>12.1%} "
                f"{r.decode / 1e6:>9.3f} {r.decode_ratio:>8.1%} {r.kv_cache_bytes / 2**20:>8.2f}")
        print(line + (f" {measure_latency(cfg, s):>11.0f}" if args.latency else ""))
    if args.layers:
        for r in reports:
            print(f"\n{r.schedule}\n{r.table()}")
    return 0


# --- launch ------------------------------------------------------------------------------------------
def _launch(args: argparse.Namespace) -> int:
    from search import check_storage_url, open_study, preflight, run_study
    from search.logs import quiet_libraries
    from search.storage import sqlite_file
    from studies.config import load_config

    # every check before anything is written: a refused launch leaves no folder or database
    if args.workers < 1:
        raise ConfigError(f"--workers must be a whole number >= 1 (got {args.workers})")
    _check_timeout(args.timeout)
    cfg = load_config(args.preset, args.config, {"name": args.name, "n_trials": args.n_trials})
    preflight(cfg, args.workers, progress=not args.no_progress)
    out = Path(args.out or f"runs/{cfg.name}")
    storage = check_storage_url(args.storage or _default_storage(out))
    quiet_libraries()
    with _undone_on_error(out, *filter(None, [sqlite_file(storage)])):
        open_study(cfg, storage)  # connects, and refuses a resume under another configuration
    log.info("study %r: %d schedules in the space, target %d measured, storage %s",
             cfg.name, cfg.space.size(), min(cfg.n_trials, cfg.space.size()), storage)
    size = cfg.space.size()
    exhaustive = cfg.strategy == "supernet" and size <= cfg.supernet.exhaustive_limit
    with _progress(cfg, size if exhaustive else min(cfg.n_trials, size), args.no_progress) as progress:
        study = run_study(cfg, storage, timeout=args.timeout, workers=args.workers, on_progress=progress,
                          workdir=out, retry_failed=args.retry_failed)
    return _finish(study, cfg, out, report=not args.no_report)


@contextlib.contextmanager
def _progress(cfg, total: int, disabled: bool):  # type: ignore[no-untyped-def]
    """A progress bar of distinct schedules measured; yields the callback that updates it."""
    from tqdm import tqdm

    from search import finished, pareto_front

    bar = tqdm(total=total, unit="schedule", desc=cfg.name, disable=disabled, dynamic_ncols=True)

    def update(study) -> None:  # type: ignore[no-untyped-def]
        bar.update(finished(study) - bar.n)
        bar.set_postfix(front=len(pareto_front(study)), trials=len(study.trials))

    try:
        yield None if disabled else update
    finally:
        bar.close()


def _finish(study, cfg, out: Path, report: bool) -> int:  # type: ignore[no-untyped-def]
    """The summary, the dashboard and the knee's export; exit 1 when no trial finished and some
    failed (a study that produced nothing is not a success)."""
    from optuna.trial import TrialState

    _summary(study, cfg)
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    if failed and not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        first = next((t.user_attrs["failure"] for t in failed if "failure" in t.user_attrs), "no reason recorded")
        print(f"spanmix: every trial failed ({len(failed)}); the first: {first}", file=sys.stderr)
        return 1
    if report:
        _report(study, cfg, out)
    return 0


def _summary(study, cfg, score: str | None = None) -> None:  # type: ignore[no-untyped-def]
    from search import final_fidelity, knee, maximized, pareto_front
    from search.fidelity import comparisons

    front = pareto_front(study, score=score)
    fidelity = final_fidelity(study)
    states: dict[str, int] = {}
    for t in study.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    print(f"\nstudy {study.study_name!r}: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())))
    if not front:
        print("no finished feasible trial yet")
        return
    quality = score or cfg.quality
    chosen = knee(front, maximized(quality))
    print(f"Pareto front ({quality} vs {cfg.cost}, measured {fidelity}):")
    print(f"  {'trial':>5}  {'schedule':<40} {quality:>12} {'cost ratio':>10}")
    for p in front:
        mark = "  <- knee" if p is chosen else ""
        print(f"  {p.number:>5}  {p.schedule:<40} {p.quality:>12.4f} {p.cost_ratio:>10.1%}{mark}")
    stages = study.user_attrs.get("spanmix_stage_seconds")
    if stages:
        print("wall time by stage: " + ", ".join(f"{k} {v:.0f} s" for k, v in stages.items()))
    found = comparisons(study)
    for cheap, dear, report in found:
        print(f"rank fidelity of {cheap} against {dear} (95% bootstrap intervals):")
        for f in report:
            print("  " + f.line())
    if not found:
        print("rank fidelity: not measured yet; `spanmix fidelity` retrains schedules at a larger budget to measure it")


def _report(study, cfg, out: Path) -> None:  # type: ignore[no-untyped-def]
    from studies.dashboard import render

    out.mkdir(parents=True, exist_ok=True)
    page = out / "dashboard.html"
    page.write_text(render(study, cfg))
    print(f"\nwrote {page}")
    try:
        for path in _export(study, cfg, "knee", out):
            print(f"wrote {path}")
    except ConfigError as err:
        print(f"no export: {err}")


# --- export ------------------------------------------------------------------------------------------
def _export(study, cfg, which: str, out: Path, family: str = "auto") -> list[Path]:  # type: ignore[no-untyped-def]
    """Write a trial's schedule as JSON and, where ``family`` (``auto``: the first that can) reads
    it, as a Hugging Face fragment. A family named explicitly that cannot is an error, before
    anything is written."""
    from search import knee, maximized, pareto_front, points
    from studies.export import DEFAULT_FAMILY, family_for, hf_fragment, python_line

    if which == "knee":
        point = knee(pareto_front(study), maximized(cfg.quality))
    else:
        try:
            number = int(which)
        except ValueError:
            raise ConfigError(f"trial {which!r}: give a trial number or 'knee'") from None
        found = [p for p in points(study) if p.number == number]
        if not found:
            raise ConfigError(f"trial {number} is not a finished trial of study {study.study_name!r}")
        point = found[0]
    schedule = Schedule.parse(point.schedule)
    name = family_for(schedule, family)  # auto resolved once, for the fragment and its file name
    try:
        fragment, refusal = hf_fragment(schedule, name), None
    except ConfigError as err:
        if family != DEFAULT_FAMILY:
            raise
        fragment, refusal = None, err
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{'knee' if which == 'knee' else 'trial'}-{point.number}"
    data = schedule.to_dict() | {"trial": point.number, "quality": {cfg.quality: point.quality},
                                 "cost_ratio": point.cost_ratio, "context": cfg.data.seq_len}
    written = [stem.with_suffix(".json")]
    written[0].write_text(json.dumps(data, indent=2) + "\n")
    print(f"trial {point.number}: {schedule.text}  ({cfg.quality} {point.quality:.4f}, cost {point.cost_ratio:.1%} of all-full)")
    if fragment is None:
        print(f"no Hugging Face fragment: {refusal}")
    else:
        hf = stem.with_name(f"{stem.name}.hf-{name}.json")
        hf.write_text(json.dumps(fragment, indent=2) + "\n")
        written.append(hf)
    print("build it: " + python_line(cfg.proxy, schedule))
    return written


def _open(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The study ``--study`` names, which must exist: looking at a study never creates one."""
    import optuna

    from search import config_of, open_storage
    from search.logs import quiet_libraries

    quiet_libraries()
    name = require_name(args.study, "--study")
    out = Path(args.out or f"runs/{name}")
    url = args.storage or _default_storage(out)
    storage = open_storage(url, create=False)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise ConfigError(f"--study {name!r} is not in {url}; it holds: {names or 'no study'}") from None
    return study, config_of(study), out


def _export_cmd(args: argparse.Namespace) -> int:
    from studies.export import check_family

    check_family(args.hf_family)
    study, cfg, out = _open(args)
    for path in _export(study, cfg, args.trial, out, args.hf_family):
        print(f"wrote {path}")
    return 0


# --- worker -------------------------------------------------------------------------------------------
def _worker(args: argparse.Namespace) -> int:
    import secrets

    from search import join_study, preflight

    if args.n_trials is not None and args.n_trials < 1:
        raise ConfigError(f"--n-trials must be a whole number >= 1 (got {args.n_trials})")
    _check_timeout(args.timeout)
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be a whole number >= 1 (got {args.threads})")
    study, cfg, out = _open(args)
    preflight(cfg, progress=not args.no_progress)
    target = args.n_trials or cfg.n_trials
    total = min(target, cfg.space.size())
    with _progress(cfg, total, args.no_progress) as progress:
        # a random stream: workers on other machines cannot agree on numbers without talking
        study = join_study(cfg, args.storage or _default_storage(out), target, args.timeout, stream=secrets.randbits(32),
                           threads=args.threads, retry_failed=args.retry_failed,
                           callbacks=[lambda s, t: progress(s)] if progress else None)
    return _finish(study, cfg, out, report=False)


# --- show ----------------------------------------------------------------------------------------------
def trials_frame(study):  # type: ignore[no-untyped-def]
    """Every trial as a flat pandas table: Optuna's columns plus schedule, cost and scores."""
    import pandas as pd

    frame = study.trials_dataframe(attrs=("number", "state", "values", "params", "duration"))
    names = study.metric_names or [0, 1]  # Optuna names the columns values_<metric name> once they are set
    frame = frame.rename(columns={f"values_{names[0]}": "quality", f"values_{names[1]}": "cost"})
    extra = []
    for t in study.trials:
        row = {"number": t.number}
        for key in ("schedule", "fidelity", "cost_ratio", "reused_from", "failure", "tokens_seen", "train_seconds"):
            row[key] = t.user_attrs.get(key)
        row["n_full"] = Schedule.parse(t.user_attrs["schedule"]).n_full if "schedule" in t.user_attrs else None
        for name, value in (t.user_attrs.get("scores") or {}).items():
            row[f"score:{name}"] = value
        extra.append(row)
    return frame.merge(pd.DataFrame(extra), on="number", how="left")


def fidelity_frame(study):  # type: ignore[no-untyped-def]
    """Every rank-fidelity figure the study holds, one row per comparison and subset."""
    import pandas as pd

    from search.fidelity import comparisons

    return pd.DataFrame([{"cheap": cheap, "dear": dear, **f.to_dict()} for cheap, dear, report in comparisons(study) for f in report])


def _writable(path: Path, what: str) -> Path:
    """Refuse, before any work, to write where the folder is missing or a folder is in the way."""
    if not path.parent.is_dir():
        raise ConfigError(f"{what} {str(path)!r}: folder {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a folder; give a file name")
    return path


def _show(args: argparse.Namespace) -> int:
    if args.csv:
        _writable(Path(args.csv), "--csv")
    from search import scores_of

    study, cfg, _ = _open(args)
    if args.quality is not None and args.quality not in scores_of(study):
        raise ConfigError(f"--quality {args.quality!r} is not a score of study {study.study_name!r}; "
                          f"its scores: {', '.join(scores_of(study)) or 'none yet'}")
    _summary(study, cfg, args.quality)
    if args.csv:
        csv = Path(args.csv)
        trials_frame(study).to_csv(csv, index=False)
        print(f"wrote {csv}")
        fidelity = fidelity_frame(study)
        if len(fidelity):
            path = csv.with_name(csv.stem + "-fidelity.csv")
            fidelity.to_csv(path, index=False)
            print(f"wrote {path}")
    return 0


# --- fidelity -----------------------------------------------------------------------------------------
def _fidelity(args: argparse.Namespace) -> int:
    from search import run_fidelity
    study, cfg, _ = _open(args)
    report = run_fidelity(cfg, study, args.budget, args.schedules)
    print(f"rank fidelity of the study's {cfg.train.steps}-step numbers against {args.budget * cfg.train.steps} steps "
          "(95% bootstrap intervals):")
    for f in report:
        print("  " + f.line())
    if not report:
        print("  too few schedules were measured both ways (a failed training leaves its schedule out)")
    return 0


# --- dashboard ----------------------------------------------------------------------------------------
def _dashboard(args: argparse.Namespace) -> int:
    from studies.dashboard import make_server, render

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be from 0 to 65535 (got {args.port}); 0 picks a free one")
    if args.refresh < 1:
        raise ConfigError(f"--refresh must be a whole number of seconds >= 1 (got {args.refresh})")
    if args.html:
        _writable(Path(args.html), "--html")
    study, cfg, out = _open(args)
    if args.serve:
        try:
            server = make_server(lambda src: render(study, cfg, refresh_seconds=args.refresh, plotly_src=src), args.port)
        except OSError as err:
            raise ConfigError(f"--port {args.port}: cannot listen on 127.0.0.1: {err.strerror}") from None
        print(f"serving http://127.0.0.1:{server.server_address[1]}/ (refreshes every {args.refresh} s; Ctrl-C stops)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            server.server_close()
        return 0
    path = Path(args.html or out / "dashboard.html")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(study, cfg))
    print(f"wrote {path}")
    return 0


# --- the parser ---------------------------------------------------------------------------------------
def _study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", required=True, help="the study name (a preset's name unless --name changed it)")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///runs/STUDY/study.db)")
    p.add_argument("--out", help="folder for written files (default: runs/STUDY)")


def build_parser() -> argparse.ArgumentParser:
    from studies.config import preset_names

    parser = argparse.ArgumentParser(
        prog="spanmix",
        description="Find, by measurement, which layers of a long-context transformer need full attention "
        "and which can use a local window. Typical use: spanmix launch --preset quick; then "
        "spanmix show / dashboard / export --study quick.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every trial")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    launch = sub.add_parser(
        "launch", help="run (or resume) a study from a preset or a TOML config",
        description="Run a multi-objective study (quality vs cost) over attention schedules. Relaunching "
        "the same study name on the same storage resumes it: finished trials are kept, a trial "
        "killed mid-way is retried, and a schedule already measured is never trained again. At the end it "
        "writes the dashboard and the knee schedule under --out.",
        epilog="examples:\n  spanmix launch --preset quick\n  spanmix launch --config my.toml --n-trials 40 --workers 2\n"
        "  spanmix launch --preset masformer --storage postgresql://me@127.0.0.1/spanmix",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = launch.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help=f"a built-in study: {', '.join(preset_names())}")
    source.add_argument("--config", help="a TOML file with [study], [space], [proxy], [data], [train] sections")
    launch.add_argument("--name", help="study name (default: the config's study.name)")
    launch.add_argument("--storage", help="Optuna storage URL (default: sqlite:///OUT/study.db)")
    launch.add_argument("--out", help="folder for the database, dashboard and export (default: runs/NAME)")
    launch.add_argument("--n-trials", type=int, help="distinct schedules to have measured, counting earlier runs (default: the config's)")
    launch.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    launch.add_argument("--workers", type=int, default=1, help="processes sharing the storage (default 1)")
    launch.add_argument("--no-progress", action="store_true", help="no progress bar")
    launch.add_argument("--no-report", action="store_true", help="do not write the dashboard and export at the end")
    launch.add_argument("--retry-failed", action="store_true",
                        help="train again schedules whose training failed (by default a failure is remembered)")
    launch.set_defaults(run=_launch)

    worker = sub.add_parser(
        "worker", help="join a running study as one more worker (on this machine or another)",
        description="Join an existing standalone study and measure schedules for it until it holds its "
        "n_trials. The configuration is read from the study itself, so a worker on another machine needs only "
        "the storage URL and the study name. Each worker draws from its own seed stream, skips schedules "
        "another worker is measuring, and never trains a schedule already measured. Ctrl-C or a kill loses "
        "no finished trial; the trial it was running is failed by the heartbeat and retried.",
        epilog="example, on every machine:\n  spanmix worker --study masformer --storage "
        "postgresql://me@db-host:5432/spanmix",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _study_args(worker)
    worker.add_argument("--n-trials", type=int, help="distinct schedules the study should hold (default: the study's)")
    worker.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    worker.add_argument("--threads", type=int, help="CPU threads for training (default: all this machine's cores)")
    worker.add_argument("--no-progress", action="store_true", help="no progress bar")
    worker.add_argument("--retry-failed", action="store_true", help="train again schedules whose training failed")
    worker.set_defaults(run=_worker)

    dash = sub.add_parser("dashboard", help="write the study's dashboard as one HTML file, or serve it live",
                          description="One self-contained HTML page (plotly inlined; opens offline): the Pareto "
                          "front with each point's schedule on hover, every trial's schedule as a strip of layers, "
                          "a sortable trial table and the optimisation history.")
    _study_args(dash)
    dash.add_argument("--html", help="output file (default: OUT/dashboard.html)")
    dash.add_argument("--serve", action="store_true", help="serve it on 127.0.0.1 instead, refreshed as trials finish")
    dash.add_argument("--port", type=int, default=8050, help="port for --serve (default 8050)")
    dash.add_argument("--refresh", type=int, default=10, help="page refresh seconds for --serve (default 10)")
    dash.set_defaults(run=_dashboard)

    export = sub.add_parser("export", help="export a trial's schedule: JSON, Hugging Face fragment, PyTorch line",
                            description="Write TRIAL's schedule as JSON (OUT/knee-N.json or trial-N.json), as the "
                            "config keys a Hugging Face model family reads (OUT/...hf-FAMILY.json: layer_types plus "
                            "sliding_window, or attention_chunk_size for block layers), and print the Python line that "
                            "builds the proxy module. Hugging Face families take one local size for all layers: a "
                            "schedule with several windows, or sliding and block layers together, has no Hugging Face "
                            "form and is exported as JSON and module only.",
                            epilog="families: qwen2, gemma3, gpt_oss (sliding layers), llama4 (block layers: "
                            "chunked_attention), llama (full attention only); auto picks the first that reads the "
                            "schedule.\n\nexamples:\n  spanmix export --study quick knee\n"
                            "  spanmix export --study quick 2 --hf-family gemma3",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    _study_args(export)
    export.add_argument("trial", help="a trial number, or 'knee' for the front's best quality per cost")
    export.add_argument("--hf-family", default="auto", metavar="FAMILY",
                        help="auto (default), qwen2, gemma3, gpt_oss, llama4 or llama")
    export.set_defaults(run=_export_cmd)

    show = sub.add_parser("show", help="the study's Pareto front in the terminal; --csv for every trial",
                          description="Print the study's state, its Pareto front and the rank fidelity it measured; "
                          "with --csv write every trial as a flat table (Optuna's columns plus schedule, fidelity, cost "
                          "ratio, n_full and every score) and, beside it, FILE-fidelity.csv with the fidelity figures.")
    _study_args(show)
    show.add_argument("--csv", help="write every trial to this CSV file")
    show.add_argument("--quality", metavar="SCORE",
                      help="the front on another score the trials hold (e.g. recall, code/loss); default: the study's")
    show.set_defaults(run=_show)

    fid = sub.add_parser(
        "fidelity", help="retrain a finished study's schedules at a larger budget: is its ranking to be trusted?",
        description="Retrain K schedules that the study trained standalone (its front first, then near-front "
        "controls) at BUDGET times the study's steps, and report Kendall tau, Spearman rho (with 95%% bootstrap "
        "intervals) and top-3 overlap between the study's numbers and the longer training's. High agreement "
        "says the study's budget was enough to rank schedules; low agreement says train longer. The retrained "
        "trials are stored in the study (fidelity standalone-BUDGETx), so an interrupted run resumes.",
        epilog="example: spanmix fidelity --study quick --budget 4 --schedules 6",
    )
    _study_args(fid)
    fid.add_argument("--budget", type=int, default=4, help="multiple of the study's training steps (default 4)")
    fid.add_argument("--schedules", type=int, default=6, help="how many schedules to retrain (default 6)")
    fid.set_defaults(run=_fidelity)

    cost = sub.add_parser(
        "cost", help="count what schedules cost (fvcore, closed form, KV cache, latency)",
        description="Count each schedule's multiply-adds with fvcore on the real proxy model, next to "
        "the all-full schedule of the same depth. A schedule is one token per layer: F (full), "
        "S<w> (sliding window w) or B<w> (MASFormer block of w).",
        epilog='example: spanmix cost -s "F S256 S256 F" -s "F F F F" --layers',
    )
    cost.add_argument("-s", "--schedule", action="append", help="a schedule in text form; repeat for more")
    cost.add_argument("--d-model", type=int, default=256, help="proxy width (default 256)")
    cost.add_argument("--n-heads", type=int, default=4, help="attention heads (default 4)")
    cost.add_argument("--context", type=int, default=2048, help="sequence length counted (default 2048)")
    cost.add_argument("--layers", action="store_true", help="also print each schedule's per-layer breakdown")
    cost.add_argument("--latency", action="store_true", help="also measure fwd+bwd time on this machine")
    cost.add_argument("--json", action="store_true", help="print the full reports as JSON")
    cost.set_defaults(run=_cost)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from search.logs import log_to_stderr

    args = build_parser().parse_args(argv)
    log_to_stderr(logging.INFO if args.verbose else logging.WARNING)
    try:
        return args.run(args)
    except ConfigError as err:
        if args.debug:
            raise
        print(f"spanmix {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # a bug, not the user's mistake: one line, the traceback on request
        if args.debug:
            raise
        print(f"spanmix {args.command}: internal error: {type(err).__name__}: {err} (rerun with --debug for the "
              "traceback, and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
