"""The study's seed noise, pooled and paired: the moderated variance against a hand computation,
intervals that stay in the score's domain, a paired test that sees what an unpaired one cannot,
coverage at 2 seeds on simulated studies, and ``spanmix show --compare``."""

from __future__ import annotations

import math
import re
import shlex
import statistics
from pathlib import Path

import numpy as np
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from scipy import optimize, special, stats

from spanmix.search.moderation import ANGULAR, LOG, fit_prior, trigamma_inverse
from spanmix.search.noise import Seeds, interval, noise_of
from spanmix.search.record import Point
from spanmix.search.study import open_study
from spanmix.studies.cli import main
from spanmix.studies.config import load_config

# seed scores of five schedules (3 seeds each); the fourth has no spread at all
TABLE = [[2.10, 2.14, 2.07], [1.20, 1.25, 1.18], [0.80, 0.74, 0.83], [1.50, 1.50, 1.50], [0.95, 1.02, 0.97]]


def _pt(n: int, seeds: list[float], cost: float = 1.0, ids: tuple[int, ...] = ()) -> Point:
    return Point(n, f"S{n + 2}", statistics.fmean(seeds), cost, cost, True, None, {},
                 seed_scores=tuple({"loss": v} for v in seeds), seed_ids=ids)


def test_trigamma_inverse_inverts_trigamma():
    for x in (0.05, 0.5, 1.0, 3.7, 40.0, 2e3):
        assert trigamma_inverse(float(special.polygamma(1, x))) == pytest.approx(x, rel=1e-6)


def test_the_moderated_variance_equals_smyths_formulas_computed_by_hand():
    logs = [np.log(row) for row in TABLE]
    s2 = np.array([np.var(y, ddof=1) for y in logs])
    d = 2.0
    assert s2[3] == 0.0  # zero spread: offset to 1e-5 of the median before logs, as limma does
    e = np.log(np.maximum(s2, 1e-5 * np.median(s2))) - special.digamma(d / 2) + math.log(d / 2)
    excess = np.var(e, ddof=1) - special.polygamma(1, d / 2)
    d0 = 2 * optimize.brentq(lambda x: special.polygamma(1, x) - excess, 1e-8, 1e8)
    s0 = math.exp(np.mean(e) + special.digamma(d0 / 2) - math.log(d0 / 2))

    prior = fit_prior(list(s2), [d] * 5, [float(np.mean(y)) for y in logs])
    assert prior is not None and not prior.trend  # 5 schedules: no trend in the level
    assert prior.d0 == pytest.approx(d0, rel=1e-6) and prior.variance(0.0) == pytest.approx(s0, rel=1e-6)
    for row, v in zip(logs, s2):
        moderated, df = prior.moderate(float(v), d, float(np.mean(row)))
        assert moderated == pytest.approx((d0 * s0 + d * v) / (d0 + d), rel=1e-6) and df == pytest.approx(d0 + d)
    # the zero-spread schedule borrows the study's variance: its interval is not a point
    basis = Seeds([_pt(i, row) for i, row in enumerate(TABLE)], "loss", maximize=False)
    lo, hi = basis.interval(_pt(3, TABLE[3]))
    t = stats.t.ppf(0.975, d0 + d)
    half = t * math.sqrt(d0 * s0 / (d0 + d) / 3)
    assert (lo, hi) == pytest.approx((1.5 * math.exp(-half), 1.5 * math.exp(half)), rel=1e-6) and lo < 1.5 < hi
    assert interval(TABLE[3]) == (1.5, 1.5)  # what the schedule's own seeds say


def test_variances_no_more_scattered_than_sampling_allows_all_take_the_prior():
    rng = np.random.default_rng(0)
    values = [list(1.0 + 0.05 * rng.standard_normal(2)) for _ in range(200)]
    prior = fit_prior([float(np.var(v, ddof=1)) for v in values], [1] * 200, [1.0] * 200)
    assert prior is not None and math.isinf(prior.d0) and prior.variance(1.0) == pytest.approx(0.05**2, rel=0.25)
    assert prior.moderate(1e-9, 1, 1.0) == (prior.variance(1.0), 200)  # df capped at the study's total
    assert fit_prior([0.1, 0.2], [1, 1], [1.0, 1.0]) is None  # too few schedules to fit a prior


def test_the_prior_follows_the_level_where_variance_differs_between_groups():
    """Schedules that never learn the probe sit near loss 2 with a tenth of the log spread of those
    that learn it: from 8 schedules on, the prior is a line in the level, so each group is
    shrunk toward its own group's variance, not toward their average."""
    for seed in range(5):
        rng = np.random.default_rng(seed)
        stuck = [list(2.0 * np.exp(0.01 * rng.standard_normal(2))) for _ in range(12)]
        learning = [list(0.3 * np.exp(0.1 * rng.standard_normal(2))) for _ in range(12)]
        logs = [np.log(v) for v in stuck + learning]
        prior = fit_prior([float(np.var(y, ddof=1)) for y in logs], [1] * 24, [float(np.mean(y)) for y in logs])
        # the groups' true variances are 100x apart; a prior without the trend would give both one value
        assert prior is not None and prior.trend and prior.variance(math.log(0.3)) / prior.variance(math.log(2.0)) > 30


def test_intervals_stay_in_the_scores_domain_where_the_plain_t_interval_leaves_it():
    losses = [[0.01, 0.06], [0.02, 0.05], [0.30, 0.20], [0.50, 0.60], [0.04, 0.02]]
    basis = Seeds([_pt(i, v) for i, v in enumerate(losses)], "loss", maximize=False)
    assert basis.scale is LOG and interval(losses[0])[0] < 0  # the plain interval goes below zero
    assert all(basis.interval(_pt(i, v))[0] > 0 for i, v in enumerate(losses))
    accuracies = [[1.0, 0.9], [1.0, 1.0], [0.5, 0.7], [0.0, 0.1], [0.95, 1.0]]
    points = [Point(i, f"S{i + 2}", statistics.fmean(v), 1.0, 1.0, True, None, {}, seed_scores=tuple({"acc": a} for a in v))
              for i, v in enumerate(accuracies)]
    basis = Seeds(points, "acc", maximize=True)
    assert basis.scale is ANGULAR and interval(accuracies[0])[1] > 1 and interval(accuracies[3])[0] < 0
    for p in points:
        lo, hi = basis.interval(p)
        assert 0.0 <= lo <= p.quality <= hi <= 1.0
    lo, hi = basis.interval(points[1])  # all seeds at 1.0: the study's noise still gives it a width
    assert lo < 1.0 == hi


def test_a_paired_test_sees_a_constant_shift_that_the_unpaired_test_misses():
    """Seed k moves every schedule alike (its initial weights and batches are shared); schedule B
    is schedule A minus 0.02 on every seed. Welch's unpaired test sees only the seed spread."""
    effects = [0.00, 0.30, -0.20, 0.45]
    rng = np.random.default_rng(2)
    others = [_pt(n, [1.0 + 0.1 * n + e + 0.005 * rng.standard_normal() for e in effects]) for n in range(2, 8)]
    a = _pt(0, [1.00 + e for e in effects])
    b = _pt(1, [0.98 + e + 0.003 * rng.standard_normal() for e in effects])
    assert stats.ttest_ind(b.samples("loss"), a.samples("loss"), equal_var=False, alternative="less").pvalue > 0.3
    basis = Seeds([a, b, *others], "loss", maximize=False)
    d = basis.difference(b, a)
    assert d.pairs == 4 and d.estimate == pytest.approx(-0.02, abs=0.005) and d.interval[1] < 0
    assert d.better(maximize=False) and basis.better_than([b, a], a, maximize=False) == [True, False]
    # only the seeds the two share are paired
    assert basis.difference(_pt(0, [1.0, 1.1], ids=(0, 5)), _pt(1, [1.0, 1.1], ids=(1, 5))) is None


def test_two_seed_intervals_cover_the_true_mean_at_the_nominal_rate_on_simulated_studies():
    """Studies of 25 schedules, 2 seeds each, log-normal seed noise whose spread differs 3-fold
    between schedules: the moderated intervals cover each schedule's true mean in >= 90% of
    cases at the nominal 95%, and are several times narrower than each schedule's own t-interval."""
    rng = np.random.default_rng(3)
    covered, widths, plain = [], [], []
    for _ in range(40):
        means = rng.uniform(0.2, 2.5, 25)
        sds = rng.uniform(0.02, 0.06, 25)
        pts = [_pt(i, list(m * np.exp(s * rng.standard_normal(2)))) for i, (m, s) in enumerate(zip(means, sds))]
        basis = Seeds(pts, "loss", maximize=False)
        for p, m, s in zip(pts, means, sds):
            lo, hi = basis.interval(p)
            covered.append(lo <= m * math.exp(s * s / 2) <= hi)  # the log-normal's mean
            widths.append(hi - lo)
            tlo, thi = interval(p.samples("loss"))
            plain.append(thi - tlo)
    assert statistics.fmean(covered) >= 0.90
    assert statistics.median(plain) / statistics.median(widths) > 3


def _study(tmp_path, trials: list[tuple[str, str, list[float]]]) -> str:
    """A quick-preset study on disk holding ``trials`` (schedule, measurement, seed losses)."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(load_config("quick"), url)
    for schedule, measurement, losses in trials:
        study.add_trial(create_trial(
            state=TrialState.COMPLETE, values=[statistics.fmean(losses), 1.0], params={"x": 0.0},
            distributions={"x": FloatDistribution(0.0, 1.0)},
            user_attrs={"schedule": schedule, "measurement": measurement, "cost_ratio": 0.5, "constraint": [0.0],
                        "scores": {"loss": statistics.fmean(losses)},
                        "seed_scores": {str(k): {"loss": v} for k, v in enumerate(losses)}}))
    return url


def test_show_compare_prints_the_paired_difference_and_a_verdict(tmp_path, capsys):
    effects = [0.0, 0.3, -0.2]
    schedules = ["F F F", "B8 B8 B8", "F F B16", "S16 S16 S16", "F S8 S8", "F S8 F", "F F B8", "F B8 F", "F F S8",
                 "B16 B16 B16", "F B8 B8"]
    # seed k moves every schedule alike; trial 10 (F B8 B8) is trial 4 (F S8 S8) less 0.05 on every
    # seed; trial 0 (F F F) moves otherwise
    losses = {"F S8 S8": [1.00 + e for e in effects], "F B8 B8": [0.95 + e + d for e, d in zip(effects, (0.002, -0.001, 0.0))],
              "F F F": [0.96 + e for e in (0.01, 0.29, -0.21)]}
    url = _study(tmp_path, [(s, "standalone", losses.get(s, [2.0 + 0.1 * n + e + 0.01 * n * e for e in effects]))
                            for n, s in enumerate(schedules)])
    capsys.readouterr()
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    command = re.search(r"`(spanmix show --study quick --compare 10 4)`", readme).group(1)
    assert main([*shlex.split(command)[1:], "--storage", url]) == 0
    out = capsys.readouterr().out
    assert "trial 10 (F B8 B8) - trial 4 (F S8 S8), loss measured standalone:" in out
    assert "difference -0.0497" in out and "paired over 3 shared seeds" in out and "trial 10 is better" in out
    assert main(["show", "--study", "quick", "--storage", url, "--compare", "10", "F S8 S8"]) == 0
    assert capsys.readouterr().out == out  # a schedule's text names its trial
    assert main(["show", "--study", "quick", "--storage", url, "--compare", "0", "10"]) == 0
    assert "tie: neither is shown better" in capsys.readouterr().out


@pytest.mark.parametrize("refs, message", [
    (["0", "99"], "--compare '99': study 'quick' has no finished trial 99"),
    (["0", "F F S16"], "--compare 'F F S16': schedule 'F F S16' is not in study 'quick'"),
    (["0", "X9"], "--compare 'X9' is neither a trial number nor a schedule"),
    (["0", "4"], "a difference needs one measurement"),
])
def test_show_compare_refuses_what_it_cannot_compare_in_one_line(tmp_path, capsys, refs, message):
    url = _study(tmp_path, [(s, "standalone", [1.0 + n, 1.1 + n, 0.9 + n])
                            for n, s in enumerate(("F S8 S8", "F B8 B8", "S8 S8 S8", "F F F"))]
                 + [("F S16 S16", "standalone-4x", [0.9, 0.91, 0.93])])
    capsys.readouterr()  # what opening the study logged
    assert main(["show", "--study", "quick", "--storage", url, "--compare", *refs]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and len(captured.err.strip().splitlines()) == 1 and captured.out == ""


def test_a_lone_schedule_with_seeds_has_an_interval_and_a_stable_knee():
    """One schedule: no other to pool with or to take a seed effect from; its own seeds still count."""
    lone = [_pt(0, [1.0, 1.2])]
    noise = noise_of(lone, lone, "loss", maximize=False)
    half = stats.t.ppf(0.975, 1) * np.std(np.log([1.0, 1.2]), ddof=1) / math.sqrt(2)  # its own t, on the log scale
    assert noise.intervals[0] == pytest.approx((1.1 * math.exp(-half), 1.1 * math.exp(half))) and noise.knee_share == 1.0


def test_schedules_whose_seeds_move_them_alike_lend_no_extra_degrees_of_freedom():
    """Seed k moves all 25 schedules alike (a shared effect 7x their own noise): their 25 seed
    variances are one estimate, not 25, so the interval keeps the t of one degree of freedom; where
    the seeds move the schedules independently, the pooled degrees of freedom stand."""
    rng = np.random.default_rng(4)
    means = rng.uniform(0.2, 2.5, 25)

    def widths(shared: np.ndarray, own: float) -> list[tuple[float, float]]:
        pts = [_pt(i, list(m * np.exp(shared + own * rng.standard_normal(2)))) for i, m in enumerate(means)]
        pooled, independent = Seeds(pts, "loss", maximize=False), Seeds(pts, "loss", maximize=False, design_effect=False)
        return [(np.subtract(*pooled.interval(p)[::-1]), np.subtract(*independent.interval(p)[::-1])) for p in pts]

    alike = widths(np.array([0.2, -0.2]), 0.03)
    # t(0.975, 1) / t(0.975, 25) = 12.7 / 2.06: the interval is ~6x the one pooling as if independent
    assert all(w > 4 * naive for w, naive in alike)
    apart = widths(np.zeros(2), 0.05)
    assert statistics.median(w / naive for w, naive in apart) < 1.5
