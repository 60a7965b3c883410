"""Digital twins: per-patient MAP with the population prior, batched, from a NONMEM dataset."""

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from qsp.models import pk1cmt
from qsp.vpop import Population, fit_twins

OMEGA = np.array([[0.09, 0.03, 0.0], [0.03, 0.09, 0.0], [0.0, 0.0, 0.16]])
POP = Population(pk1cmt(CL=2.0, V=20.0, KA=1.0), OMEGA, ("CL", "V", "KA"),
                 covariate_model=lambda tv, c: {"CL": tv["CL"] * (c["WT"] / 70.0) ** 0.75})
SIGMA, DOSE, N = 0.1, 100.0, 50
GRID = np.array([0.5, 1, 2, 4, 8, 12, 24])


def conc(cl, v, ka, t):
    """Oral one-compartment closed form (F = 1, no lag)."""
    k = cl / v
    return DOSE * ka / (v * (ka - k)) * (np.exp(-k * t) - np.exp(-ka * t))


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    wt = np.exp(rng.normal(np.log(70), 0.2, N))
    eta = rng.multivariate_normal(np.zeros(3), OMEGA, N)
    true = np.asarray(POP.values(eta, {"WT": wt}))
    rows = []
    for i in range(N):
        rows.append(dict(ID=i + 1, TIME=0.0, AMT=DOSE, CMT=1, EVID=1, DV=np.nan, WT=wt[i]))
        for t in np.sort(rng.choice(GRID, size=rng.integers(3, 6), replace=False)):  # 3-5 samples, sparse
            rows.append(dict(ID=i + 1, TIME=t, AMT=0.0, CMT=2, EVID=0, WT=wt[i],
                             DV=conc(*true[i], t) * np.exp(SIGMA * rng.normal())))
    return pd.DataFrame(rows), true, eta, wt


@pytest.fixture(scope="module")
def fitted():
    df, true, eta, wt = make_data()
    return df, true, eta, wt, fit_twins(POP, df, output="CP", sigma=SIGMA, error="lognormal")


def test_twins_recover_simulated_truth(fitted):
    """50 patients with 3-5 samples each, fitted in one batched call. The true parameters
    were drawn from the prior, so the 95% Laplace intervals should cover them ~95% of
    the time: we require >= 85% over the 150 parameters (5 binomial SDs below 95%) and
    that every twin converged; CL and V estimates correlate with the truth (r > 0.8)."""
    df, true, eta, wt, tw = fitted
    assert tw.eta.shape == (N, 3) and tw.converged.all()
    np.testing.assert_array_equal(tw.ids, np.arange(1, N + 1))
    lo, hi = tw.interval(0.95)
    cover = np.mean((true >= lo) & (true <= hi))
    assert cover >= 0.85
    for j in (0, 1):
        assert np.corrcoef(tw.eta[:, j], eta[:, j])[0, 1] > 0.8
    np.testing.assert_allclose(tw.covariates["WT"], wt)
    np.testing.assert_allclose(np.asarray(tw.model.CL), tw.to_frame().query("parameter == 'CL'")["estimate"])


def test_map_and_laplace_match_an_independent_optimiser(fitted):
    """For three patients: the MAP equals scipy's minimiser of the closed-form objective
    (|d eta| < 1e-4) and the Laplace covariance equals (J^T J)^-1 with J by central
    finite differences of the closed-form residuals (rtol 1e-3)."""
    from scipy.optimize import minimize

    df, true, eta, wt, tw = fitted
    Linv = np.linalg.inv(np.linalg.cholesky(OMEGA))
    for i in (0, 17, 42):
        d = df[(df.ID == i + 1) & (df.EVID == 0)]
        tv = np.array([2.0 * (wt[i] / 70) ** 0.75, 20.0, 1.0])

        def resid(e):
            p = tv * np.exp(e)
            return np.concatenate([(np.log(d.DV.to_numpy()) - np.log(conc(*p, d.TIME.to_numpy()))) / SIGMA, Linv @ e])

        ref = minimize(lambda e: 0.5 * np.sum(resid(e) ** 2), np.zeros(3), method="BFGS", options={"gtol": 1e-10})
        np.testing.assert_allclose(tw.eta[i], ref.x, atol=1e-4)
        h = 1e-6
        J = np.stack([(resid(ref.x + h * np.eye(3)[k]) - resid(ref.x - h * np.eye(3)[k])) / (2 * h) for k in range(3)], 1)
        np.testing.assert_allclose(tw.cov[i], np.linalg.inv(J.T @ J), rtol=1e-3, atol=1e-8)


def test_bad_input(fitted):
    df = fitted[0]
    with pytest.raises(ValueError, match="output='CX' is not an output of pk1cmt"):
        fit_twins(POP, df, output="CX", sigma=0.1)
    with pytest.raises(ValueError, match="sigma=0.0 must be a positive number"):
        fit_twins(POP, df, output="CP", sigma=0.0)
    with pytest.raises(ValueError, match="error='combined' is not known"):
        fit_twins(POP, df, output="CP", sigma=0.1, error="combined")
    neg = df.copy()
    neg.loc[1, "DV"] = -1.0
    with pytest.raises(ValueError, match="needs DV > 0 on every observation; got DV=-1"):
        fit_twins(POP, neg, output="CP", sigma=0.1, error="lognormal")
