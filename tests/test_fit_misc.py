"""Optimizers agree, diagnostics and replicate simulation, NONMEM datasets as fit input.

References: the Levenberg-Marquardt optimum of a sum of squares (BFGS and L-BFGS must
reach the same NLL); the VPC replicates' sample mean and SD (law of large numbers,
tolerance 5 standard errors); NONMEM records checked by hand.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

import qsp
from qsp._algebraic import Emax
from qsp._diagnostics import plot_obs_vs_pred, plot_profiles, plot_residuals, plot_vpc, simulate_replicates
from qsp._nonmem_fit import tables_from_nonmem
from qsp.models import pk1cmt


@pytest.fixture(scope="module")
def emax_data():
    rng = np.random.default_rng(0)
    C = np.repeat([0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0], 3)
    ids = [f"w{i}" for i in range(C.size)]
    E = 1.0 - 0.8 * C**1.5 / (2.0**1.5 + C**1.5)
    meas = pd.DataFrame(dict(observableId="E", simulationConditionId=ids, time=0.0,
                             measurement=E + rng.normal(0, 0.03, C.size)))
    return meas, pd.DataFrame(dict(conditionId=ids, C=C))


@pytest.fixture(scope="module")
def lm_fit(emax_data):
    meas, cond = emax_data
    return qsp.fit(Emax(E0=0.5, Emax=-0.5, EC50=1.0, h=1.0), meas, cond, free=["E0", "Emax", "EC50", "h"])


@pytest.mark.parametrize("optimizer,kw", [
    ("bfgs", {}), ("lbfgs", {}),
    ("adam", dict(max_steps=5000, learning_rate=0.02, rtol=1e-12, atol=1e-12)),
])
def test_optimizers_reach_the_lm_optimum(emax_data, lm_fit, optimizer, kw):
    meas, cond = emax_data
    kw = dict(dict(max_steps=3000), **kw)
    res = qsp.fit(Emax(E0=0.5, Emax=-0.5, EC50=1.0, h=1.0), meas, cond, free=["E0", "Emax", "EC50", "h"],
                  optimizer=optimizer, **kw)
    assert lm_fit.optimizer == "lm" and res.optimizer == optimizer
    np.testing.assert_allclose(res.nll, lm_fit.nll, rtol=1e-8)
    for p in ("E0", "Emax", "EC50", "h", "sigma_E"):
        np.testing.assert_allclose(res.estimates[p], lm_fit.estimates[p], rtol=1e-4)


def test_diagnostics_and_replicates(lm_fit):
    pred = lm_fit.predictions()
    sigma = lm_fit.estimates["sigma_E"]
    np.testing.assert_allclose(pred["weighted_residual"], (pred["measurement"] - pred["prediction"]) / sigma, rtol=1e-12)
    sims = simulate_replicates(lm_fit, n_sim=4000, seed=1)
    assert sims.shape == (4000, len(pred))
    np.testing.assert_allclose(sims.mean(axis=0), pred["prediction"], atol=5 * sigma / np.sqrt(4000))
    np.testing.assert_allclose(sims.std(axis=0), sigma, rtol=5 / np.sqrt(2 * 4000))
    from qsp._profile import profile

    figs = [plot_obs_vs_pred(lm_fit), plot_residuals(lm_fit), plot_vpc(lm_fit, n_sim=50),
            plot_profiles(profile(lm_fit, ["EC50"], n_points=7))]
    assert [len(f.axes) for f in figs] == [1, 2, 1, 1]


def test_nonmem_tables():
    rows = []
    for i, (cl, dose) in enumerate([(1.0, 100.0), (2.0, 200.0)]):
        rows.append(dict(ID=i + 1, TIME=0.0, AMT=dose, CMT=1, EVID=1, DV=".", MDV=1, CL=cl, BLQ=0, II=12, ADDL=1))
        for t in (1.0, 2.0, 24.0):
            rows.append(dict(ID=i + 1, TIME=t, AMT=0, CMT=2, EVID=0, DV=0.1 if t == 24 else 3.0 - t / 10,
                             MDV=0, CL=cl, BLQ=int(t == 24), II=0, ADDL=0))
    meas, cond, regs = tables_from_nonmem(pd.DataFrame(rows), pk1cmt(), "CP")
    assert list(meas["simulationConditionId"]) == ["ID1"] * 3 + ["ID2"] * 3
    assert list(meas["censored"]) == [0, 0, 1] * 2
    assert list(cond["CL"]) == [1.0, 2.0]
    np.testing.assert_allclose(np.asarray(regs["ID2"].time), [0.0, 12.0])  # ADDL expanded
    np.testing.assert_allclose(np.asarray(regs["ID2"].amount), [200.0, 200.0])
    with pytest.raises(ValueError, match=r"pass observable=\.\.\. \(one of \['CENT', 'CP', 'DEPOT'\]\)"):
        tables_from_nonmem(pd.DataFrame(rows), pk1cmt())
    with pytest.raises(ValueError, match=r"observable= applies to NONMEM datasets"):
        qsp.fit(pk1cmt(), meas, free=["CL"], observable="CP")
