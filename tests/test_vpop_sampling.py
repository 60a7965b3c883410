"""Sampling virtual patients: moments against Omega, covariates, reproducibility, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qsp
from qsp.models import pk1cmt, pk2cmt
from qsp.vpop import Population, resample_covariates, sample

OMEGA = np.array([[0.09, 0.036, -0.02], [0.036, 0.04, 0.0], [-0.02, 0.0, 0.16]])
N = 20_000


def test_lognormal_moments_match_omega():
    """log(theta) has mean log(TV) and covariance Omega, within Monte-Carlo error.

    Tolerances are 4 standard errors: mean sqrt(w_jj/N); variance sqrt(2/N) w_jj;
    covariance sqrt((w_ii w_jj + w_ij^2)/N) (Gaussian sampling theory)."""
    typical = pk2cmt(CL=2.0, V1=15.0, KA=0.7)
    pop = sample(typical, jax.random.key(1), N, omega=OMEGA, names=("CL", "V1", "KA"))
    assert pop.CL.shape == (N,) and np.ndim(pop.Q) == 0
    logs = np.log(np.stack([np.asarray(pop.CL), np.asarray(pop.V1), np.asarray(pop.KA)], axis=1))
    mu = np.log([2.0, 15.0, 0.7])
    se_mean = np.sqrt(np.diag(OMEGA) / N)
    np.testing.assert_array_less(np.abs(logs.mean(0) - mu), 4 * se_mean)
    cov = np.cov(logs, rowvar=False)
    w = np.diag(OMEGA)
    se_cov = np.sqrt((np.outer(w, w) + OMEGA**2) / N)
    np.testing.assert_array_less(np.abs(cov - OMEGA), 4 * se_cov)


def test_normal_distribution_and_mixed():
    typical = pk1cmt(CL=2.0, V=10.0)
    pop = sample(typical, jax.random.key(2), N, omega=[0.25, 0.01], names=("CL", "V"),
                 dist={"CL": "normal"})
    cl, v = np.asarray(pop.CL), np.asarray(pop.V)
    assert abs(cl.mean() - 2.0) < 4 * np.sqrt(0.25 / N)
    assert abs(cl.var() - 0.25) < 4 * np.sqrt(2 / N) * 0.25
    assert abs(np.log(v).mean() - np.log(10.0)) < 4 * np.sqrt(0.01 / N)


def test_reproducible_from_key():
    typical = pk1cmt()
    a = sample(typical, jax.random.key(7), 50, omega=[0.1, 0.1], names=("CL", "V"))
    b = sample(typical, jax.random.key(7), 50, omega=[0.1, 0.1], names=("CL", "V"))
    c = sample(typical, jax.random.key(8), 50, omega=[0.1, 0.1], names=("CL", "V"))
    np.testing.assert_array_equal(np.asarray(a.CL), np.asarray(b.CL))
    assert not np.allclose(np.asarray(a.CL), np.asarray(c.CL))


def test_covariate_model_recovers_allometric_exponent():
    """TV_CL = CL (WT/70)^0.75: regressing log CL on log(WT/70) gives slope 0.75 within
    4 standard errors (ordinary least-squares SE)."""
    n = 5000
    wt = np.exp(np.random.default_rng(0).normal(np.log(70), 0.25, n))
    cov = resample_covariates({"WT": wt}, jax.random.key(3), n)
    pop = Population(pk1cmt(CL=3.0), [0.04, 0.04], ("CL", "V"),
                     covariate_model=lambda tv, c: {"CL": tv["CL"] * (c["WT"] / 70.0) ** 0.75})
    m = pop.sample(jax.random.key(4), n, covariates=cov)
    x, y = np.log(cov["WT"] / 70.0), np.log(np.asarray(m.CL))
    slope, icpt = np.polyfit(x, y, 1)
    se = np.sqrt(0.04 / (n * x.var()))
    assert abs(slope - 0.75) < 4 * se
    assert abs(icpt - np.log(3.0)) < 4 * np.sqrt(0.04 / n) * 1.5
    # values and eta_of are inverse maps
    eta = pop.eta_of(jnp.stack([m.CL, m.V], 1), cov)
    np.testing.assert_allclose(np.asarray(pop.values(eta, cov)), np.stack([m.CL, m.V], 1), rtol=1e-12)


def test_sampled_population_simulates_against_closed_form():
    """IV bolus into CENT of pk1cmt: C(t) = D/V exp(-CL/V t) for every patient (rtol 1e-5)."""
    pop = sample(pk1cmt(), jax.random.key(5), 8, omega=[0.1, 0.1], names=("CL", "V"))
    ts = jnp.linspace(1.0, 12.0, 7)  # t=0 reports the pre-dose state
    sol = qsp.simulate(pop, qsp.Regimen.bolus(100.0, 0.0, "CENT"), ts, rtol=1e-9, atol=1e-12)
    cl, v = np.asarray(pop.CL)[:, None], np.asarray(pop.V)[:, None]
    np.testing.assert_allclose(np.asarray(sol.outputs["CP"]), 100.0 / v * np.exp(-cl / v * np.asarray(ts)), rtol=1e-5)


def test_log_prior_matches_mvn_density():
    from scipy.stats import multivariate_normal

    pop = Population(pk2cmt(), OMEGA, ("CL", "V1", "KA"))
    eta = np.random.default_rng(1).normal(size=(5, 3)) * 0.3
    ref = multivariate_normal(np.zeros(3), OMEGA).logpdf(eta)
    diff = np.asarray(pop.log_prior(eta)) - ref
    np.testing.assert_allclose(diff, diff[0], atol=1e-10)  # equal up to the normalising constant


def test_bad_input_messages():
    with pytest.raises(ValueError, match="has no parameter 'CLX'"):
        Population(pk1cmt(), [0.1], ("CLX",))
    with pytest.raises(ValueError, match=r"omega has shape \(3,\); expected \(2, 2\)"):
        Population(pk1cmt(), [0.1, 0.1, 0.1], ("CL", "V"))
    with pytest.raises(ValueError, match="not positive semi-definite"):
        Population(pk1cmt(), [[0.1, 0.2], [0.2, 0.1]], ("CL", "V"))
    with pytest.raises(ValueError, match="not symmetric"):
        Population(pk1cmt(), [[0.1, 0.0], [0.05, 0.1]], ("CL", "V"))
    with pytest.raises(ValueError, match=r"dist\['CL'\]='gamma' is not known"):
        Population(pk1cmt(), [0.1], ("CL",), dist="gamma")
    with pytest.raises(ValueError, match="n=0 must be a positive integer"):
        sample(pk1cmt(), jax.random.key(0), 0, omega=[0.1], names=("CL",))
    with pytest.raises(ValueError, match=r"covariate 'WT' has shape \(3,\); expected \(4,\)"):
        Population(pk1cmt(), [0.1], ("CL",), covariate_model=lambda tv, c: tv).sample(
            jax.random.key(0), 4, covariates={"WT": np.ones(3)})


@pytest.mark.slow
def test_population_from_a_fit():
    """Population.from_fit: omega is the delta-method log-scale covariance of qsp.fit's
    estimates, and the 2.5/97.5% quantiles of 20,000 sampled CL agree with the fit's
    Wald interval (they differ only by the log-normal skew: within 1% when RSE ~ 2%)."""
    import pandas as pd

    rng = np.random.default_rng(0)
    ts = np.array([0.5, 1, 2, 4, 6, 8, 12, 24])
    cl, v, ka = 2.0, 20.0, 1.0
    conc = 100 * ka / (v * (ka - cl / v)) * (np.exp(-cl / v * ts) - np.exp(-ka * ts))
    rows = [dict(ID=1, TIME=0.0, AMT=100.0, CMT=1, EVID=1, DV=np.nan)]
    rows += [dict(ID=1, TIME=t, AMT=0.0, CMT=2, EVID=0, DV=y * np.exp(0.1 * rng.normal())) for t, y in zip(ts, conc)]
    fit = qsp.fit(pk1cmt(), pd.DataFrame(rows), free=["CL", "V", "KA"], error="lognormal", observable="CP")
    pop = Population.from_fit(fit)
    assert pop.names == ("CL", "V", "KA")
    est = np.array([fit.estimates[k] for k in pop.names])
    np.testing.assert_allclose(pop.omega, np.asarray(fit.cov)[:3, :3] / np.outer(est, est), rtol=1e-12)
    draws = np.asarray(pop.sample(jax.random.key(0), 20_000).CL)
    lo, hi = np.quantile(draws, [0.025, 0.975])
    np.testing.assert_allclose([lo, hi], fit.ci["CL"], rtol=0.01)
    with pytest.raises(ValueError, match="'Q' was not estimated"):
        Population.from_fit(fit, names=("Q",))
