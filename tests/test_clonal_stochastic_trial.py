"""Clonal model: stochastic branching option, virtual patients, schedules, relative
improvement and time to progression.

References: the exact mean (matrix exponential) of the linear birth-death-mutation
process, closed-form variance and extinction probability of a linear birth-death
process (Bailey 1964, The Elements of Stochastic Processes, ch. 8), the sampling
distributions of shared/references/clonal-resistance.md section 5, the authors' demo
counts (relative improvement facts of section 7a), hand-computed progression times."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import qsp.models.clonal as clonal
from qsp.models.clonal import pk as cpk
from qsp.models.clonal import trial
from qsp.models.clonal.stochastic import tau_leap

DATA = os.path.join(os.path.dirname(__file__), "data", "clonal")
N_REP = 2000


@pytest.fixture(scope="module")
def leap():
    """Vmapped, jitted tau-leaping over keys on a fixed 72-step grid (one compile)."""
    ts = jnp.linspace(0.0, 72.0, 73)

    @jax.jit
    def run(key, daco, osi, n_init, mu):
        D, O = jnp.full(73, daco), jnp.full(73, osi)
        return jax.vmap(lambda k: tau_leap(k, ts, D, O, n_init, mu))(jax.random.split(key, N_REP))

    return ts, run


def test_stochastic_mean_matches_expected_value_ode(leap):
    # Mean of 2000 replicates vs the exact mean e^{M t} n0: within 4 standard errors for
    # every clone (mutation rates raised so the resistant clones are fed in 3 days).
    ts, run = leap
    n_init = jnp.array([1000.0, 50.0, 0.0, 0.0])
    mu = jnp.array([1e-3, 5e-4, 2e-4])
    N = np.asarray(run(jax.random.key(0), 0.3, 3.0, n_init, mu))
    s = clonal.published_surface()
    exact = np.asarray(jax.scipy.linalg.expm(clonal.clone_matrix(s.birth(0.3, 3.0), s.death, mu) * 72.0) @ n_init)
    se = N.std(axis=0, ddof=1) / np.sqrt(N_REP)
    assert np.all(np.abs(N.mean(axis=0) - exact) < 4 * se), (N.mean(axis=0), exact, se)
    assert np.all(N == np.round(N)) and np.all(N >= 0)
    np.testing.assert_allclose(clonal.invitro(dict(zip(clonal.CLONES, n_init)), 0.3, 3.0, 3.0, mu=mu),
                               exact.sum(), rtol=1e-12)


def test_stochastic_variance_and_extinction_closed_forms(leap):
    ts, run = leap
    s = clonal.published_surface()
    zero = jnp.zeros(3)
    # Variance of a linear birth-death process from n0 cells:
    # n0 (b + d)/(b - d) e^{gt} (e^{gt} - 1); sample variance within 15% (its relative
    # SE with 2000 replicates is ~ 4-5%).
    N = np.asarray(run(jax.random.key(1), 0.3, 3.0, jnp.array([1000.0, 0, 0, 0]), zero))[:, 0]
    b, d = float(s.birth(0.3, 3.0)[0]), float(s.death[0])
    eg = np.exp((b - d) * 72.0)
    np.testing.assert_allclose(N.var(ddof=1), 1000 * (b + d) / (b - d) * eg * (eg - 1), rtol=0.15)
    # Extinction by t of a lineage: d (e^{gt} - 1) / (b e^{gt} - d); 2 cells under
    # dacomitinib 10 nM (net growth < 0). Within 4 binomial standard errors.
    N = np.asarray(run(jax.random.key(2), 10.0, 0.0, jnp.array([2.0, 0, 0, 0]), zero))[:, 0]
    b, d = float(s.birth(10.0, 0.0)[0]), float(s.death[0])
    eg = np.exp((b - d) * 72.0)
    p = (d * (eg - 1) / (b * eg - d)) ** 2
    assert abs(np.mean(N == 0) - p) < 4 * np.sqrt(p * (1 - p) / N_REP)
    assert 0.05 < p < 0.95  # the test discriminates


def test_virtual_patients_follow_the_authors_distributions():
    p = trial.sample_patients(jax.random.key(548331), 4000)
    total = p.n_init.sum(axis=1)
    np.testing.assert_allclose(total, 4 / 3 * np.pi * (p.bsld / 2) ** 3 * 1e7, rtol=1e-12)
    assert p.bsld.min() >= 1.0
    # T790M pre-existing in 80% (binomial SE 0.6%), at ~5e-4 of the cells; NRAS in 5%
    # at most (negative draws become 0); no C797S.
    has = p.n_init[:, 1] > 0
    assert abs(has.mean() - 0.8) < 0.03
    np.testing.assert_allclose(np.median(p.n_init[has, 1] / total[has]), 4.95e-4, rtol=0.03)
    assert (p.n_init[:, 2] > 0).mean() < 0.06 and np.all(p.n_init[:, 3] == 0)
    # Mutation rates: log-normal with medians 1e-7, (10/6^(1/7))^-11 = 1.67e-10, 1e-9.
    np.testing.assert_allclose(np.median(p.mu, axis=0), [1e-7, (10 / 6 ** (1 / 7)) ** -11, 1e-9], rtol=0.1)
    # PK: log-normal IIV around the typical values with the authors' correlations.
    eta = np.log(np.stack([p.pk[k] for k in cpk.PK_NAMES], axis=1)
                 / np.array([float(v) for v in cpk.typical_pk().values()]))
    np.testing.assert_allclose(np.cov(eta.T), cpk.omega(), atol=0.08)
    corr = np.corrcoef(eta.T)
    i = cpk.PK_NAMES.index
    assert abs(corr[i("CL1o"), i("CL2o")] - 0.90) < 0.03 and abs(corr[i("V1o"), i("V2d")] - 0.85) < 0.03
    q = trial.sample_patients(jax.random.key(0), 50, pre_resistance=False)
    assert np.all(q.n_init[:, 1:] == 0)
    # The figure-script scheme: bsld - 1 ~ Exp(mean 6/ln2 = 8.66 cm), total = bsld x 1e8.
    f = trial.sample_patients(jax.random.key(1), 4000, scheme="figure")
    np.testing.assert_allclose(f.n_init.sum(axis=1), f.bsld * 1e8, rtol=1e-12)
    assert abs(np.mean(f.bsld - 1) - 6 / np.log(2)) < 4 * 6 / np.log(2) / np.sqrt(4000)
    with pytest.raises(ValueError, match="scheme='paper' is not known"):
        trial.sample_patients(jax.random.key(0), 5, scheme="paper")
    with pytest.raises(ValueError, match="n=0 must be a positive integer"):
        trial.sample_patients(jax.random.key(0), 0)


def test_schedules():
    assert len(trial.MAIN) == 7 and len(trial.GRID) == 12 and trial.REFERENCE in trial.MAIN
    ts = np.arange(0.0, 169.0)
    osi, daco = trial.schedule_doses("daco15TID+osi40BID", ts)
    assert daco.sum() == 15 * 3 * 7 and osi.sum() == 40 * 2 * 7
    assert np.all(daco[np.flatnonzero(daco)] == 15) and np.flatnonzero(osi)[:3].tolist() == [0, 12, 24]
    with pytest.raises(ValueError, match=r"schedule 'daco30\+osi40QD' is not understood"):
        trial.schedule_doses("daco30+osi40QD", ts)
    with pytest.raises(ValueError, match="not all on the time grid"):
        trial.schedule_doses("daco15TID+osi40QD", np.arange(0.0, 169.0, 5.0))


def test_relative_improvement_on_authors_demo():
    # Reference section 7a: RI(combination vs osi alone) over the 10 demo patients
    # ranges -5.7% ... +25.9%, median +8.0%, 3/10 worse with dacomitinib.
    ex = pd.read_csv(os.path.join(DATA, "demo_expected_counts_168h.csv"), comment="#")
    tot = {s: g.sort_values("patient").iloc[:, 2:].sum(axis=1).to_numpy() for s, g in ex.groupby("schedule")}
    ri = trial.relative_improvement(tot["osi80QD_alone"], tot["osi80QD_daco30QD"])
    np.testing.assert_allclose([ri.min(), np.median(ri), ri.max()], [-0.057, 0.080, 0.259], atol=5e-4)
    assert (ri < 0).sum() == 3


def test_time_to_progression_hand_computed():
    # Ours (RECIST-like on SLD = bsld (N/N0)^(1/3), weekly assessments, nadir = the
    # smallest assessed SLD). Patient 1: N shrinks as e^{-0.01 t} (t in h) for 10 days,
    # then grows as e^{+0.01 t}. Assessed ln N: day 7 -1.68 (nadir), day 14 -1.44
    # (SLD +8.3%: no PD), day 21 +0.24 (SLD x e^{0.64} = +90%, +50 mm): PD at day 21.
    # Patient 2 keeps shrinking: censored at the last assessment (day 28).
    t = np.arange(0.0, 28 * 24 + 1.0, 1.0)
    shrink = np.exp(-0.01 * np.minimum(t, 240.0) + 0.01 * np.maximum(t - 240.0, 0.0))
    total = np.stack([1e9 * shrink, 1e9 * np.exp(-0.01 * t)])
    time, event = trial.time_to_progression(t, total, np.array([10.0, 10.0]))
    np.testing.assert_array_equal(event, [1, 0])
    np.testing.assert_allclose(time, [21.0, 28.0])
    # The +5 mm rule is applied in mm: growing 30% in diameter by day 14, a 1 cm tumour
    # (+3 mm) has not progressed, a 2 cm one (+6 mm) has.
    t2 = np.arange(0.0, 14 * 24 + 1.0, 1.0)
    grow = 1e6 * np.exp(np.log(1.3**3) * t2 / t2[-1])
    time, event = trial.time_to_progression(t2, np.stack([grow, grow]), np.array([1.0, 2.0]))
    np.testing.assert_array_equal(event, [0, 1])
    np.testing.assert_allclose(time, [14.0, 14.0])


def test_trial_job_writes_summary_and_waterfall(tmp_path):
    # `qsp trial clonal` (models/clonal/cli.py) on 3 patients, 1 week, 2 schedules: the
    # reference has RI = 0 against itself, each patient's start is its sampled tumour.
    import argparse

    from qsp.cli import UserError
    from qsp.models.clonal import cli

    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["clonal", "--n", "3", "--weeks", "1", "--schedules", "daco15QD+osi40QD",
                              "--out", str(tmp_path)])
    assert args.func(args) == 0
    summary = pd.read_csv(tmp_path / "summary.csv")
    patients = pd.read_csv(tmp_path / "patients.csv")
    assert list(summary["schedule"]) == ["daco15QD+osi40QD", trial.REFERENCE]
    ref = patients[patients["schedule"] == trial.REFERENCE]
    assert np.all(ref["RI"] == 0) and (tmp_path / "waterfall.png").stat().st_size > 0
    p = trial.sample_patients(jax.random.key(0), 3)
    np.testing.assert_allclose(ref["total_start"], p.n_init.sum(axis=1), rtol=1e-12)
    bad = parser.parse_args(["clonal", "--schedules", "daco30QD+osi40QW", "--out", str(tmp_path)])
    with pytest.raises(UserError, match="schedule 'daco30QD\\+osi40QW' is not understood"):
        bad.func(bad)


# Slow tier (CI time): ~21 s; test_stochastic_mean_matches_expected_value_ode covers the mean by default.
@pytest.mark.slow
def test_stochastic_patients_follow_the_mean_for_large_clones():
    # One tau-leaping realisation per patient on the hourly PK grid: the sensitive clone
    # (~1e9 cells, relative SD ~ 1e-4) follows the expected-value path to 1e-3 (the
    # rest is the trapezoid's and the leap's O(h) discretisation); rare clones are
    # whole numbers, and most patients have no NRAS cell at all although its mean is
    # positive (stochastic emergence).
    p = trial.sample_patients(jax.random.key(5), 8)
    _, det = trial.simulate_schedules(p, (trial.REFERENCE,), weeks=1.0)
    _, sto = trial.simulate_schedules(p, (trial.REFERENCE,), weeks=1.0, key=jax.random.key(6))
    np.testing.assert_allclose(sto[0, :, -1, 0], det[0, :, -1, 0], rtol=1e-3)  # measured max 2e-4
    assert np.all(sto == np.round(sto))
    assert np.all(det[0, :, -1, 2] > 0) and np.mean(sto[0, :, -1, 2] == 0) >= 0.5
