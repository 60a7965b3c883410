"""Parameter recovery with below-LLOQ data: M3 censoring vs dropping (issue 3, item 2).

Data (ours): pk2cmt (CL 2 L/h, V1 10 L, Q 3 L/h, V2 30 L) after a 100 mg IV bolus,
12 times from 0.25 to 96 h, 32 replicate observations per time with 20% log-normal
noise (sigma 0.2 on the log scale), seed 0; LLOQ 0.8 mg/L puts 46% of the observations
below it (all of the terminal phase beyond ~12 h at the median).

Claims, with their references:

- M3 recovers the truth: the true parameter vector lies inside the fit's joint 95%
  Wald confidence region, (theta_hat - theta)' Cov^-1 (theta_hat - theta) <
  chi2_{5, 0.95} = 11.0705, and every parameter lies inside its own 99% interval
  (for this seed, 4 of 5 are inside their 95% intervals; Q sits at z = 1.97).
- Dropping the censored values instead biases the terminal phase: the late values
  that remain are the ones whose noise happened to be high, so elimination looks
  slower: CL lower and V2 larger than with M3, and the truth lies outside the
  dropped fit's joint 95% region.
"""

from __future__ import annotations

import diffrax as dfx
import numpy as np
import pandas as pd
import pytest

import qsp
from qsp.models import pk2cmt

TRUE = dict(CL=2.0, V1=10.0, Q=3.0, V2=30.0, sigma_CP=0.2)
LLOQ = 0.8
CHI2_5_95 = 11.070497693516351  # chi-square 0.95 quantile, 5 degrees of freedom
Z99 = 2.5758293035489004


def dataset(seed=0, reps=32):
    rng = np.random.default_rng(seed)
    ts = np.array([0.25, 0.5, 1, 2, 4, 8, 12, 24, 36, 48, 72, 96])
    reg = qsp.Regimen.bolus(100.0, 0.0, "CENT")
    model = pk2cmt(**{k: v for k, v in TRUE.items() if k != "sigma_CP"})
    cp = np.asarray(qsp.simulate(model, reg, ts, rtol=1e-10, atol=1e-12).outputs["CP"])
    rows = [dict(observableId="CP", simulationConditionId="iv", time=t, measurement=v, lloq=LLOQ)
            for _ in range(reps) for t, v in zip(ts, cp * np.exp(rng.normal(0, 0.2, ts.size)))]
    return pd.DataFrame(rows), {"iv": reg}


def mahalanobis(res):
    d = np.array([res.estimates[p] - TRUE[p] for p in res.free])
    return float(d @ np.linalg.solve(res.cov, d))


@pytest.mark.slow
def test_m3_recovers_and_dropping_biases():
    meas, regs = dataset()
    assert 0.3 < (meas["measurement"] < LLOQ).mean() < 0.6
    kw = dict(regimens=regs, free=["CL", "V1", "Q", "V2"], error="lognormal",
              simulate_kwargs=dict(solver=dfx.Tsit5(), rtol=1e-8, atol=1e-10))
    start = pk2cmt(CL=1.0, V1=20.0, Q=1.5, V2=15.0)
    m3 = qsp.fit(start, meas, **kw)
    assert m3.optimizer == "bfgs" and m3.converged and m3.hessian_ok
    assert mahalanobis(m3) < CHI2_5_95
    for p, truth in TRUE.items():
        assert abs(m3.estimates[p] - truth) < Z99 * m3.se[p], (p, m3.estimates[p], m3.se[p])

    dropped = meas[meas["measurement"] >= LLOQ].drop(columns="lloq")
    drop = qsp.fit(start, dropped, **kw)
    assert drop.optimizer == "lm" and drop.converged
    assert drop.estimates["CL"] < m3.estimates["CL"] and drop.estimates["V2"] > m3.estimates["V2"]
    assert mahalanobis(drop) > CHI2_5_95
