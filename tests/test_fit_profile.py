"""Profile likelihood vs Hessian (Wald) intervals (issue 3, item 6).

Reference: for a model linear in its parameters with known Gaussian noise the NLL is
exactly quadratic, so the profile interval equals the Wald interval
theta_hat +/- 1.96 SE (both exact, up to optimizer tolerance). For a practically
non-identifiable parameter the profile stays below the threshold on one side (open
interval), while the Wald interval is finite and symmetric by construction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import qsp
from qsp._profile import profile


class Line(qsp.AlgebraicModel):
    a: float = qsp.param(0.5)
    b: float = qsp.param(1.0)

    def outputs(self, t):
        return {"y": self.a + self.b * t}


def test_linear_profile_equals_wald():
    rng = np.random.default_rng(3)
    t = np.linspace(0, 5, 12)
    y = 1.0 + 0.7 * t + rng.normal(0, 0.3, t.size)
    meas = pd.DataFrame(dict(observableId="y", simulationConditionId="c", time=t, measurement=y,
                             noiseParameters=0.3))
    res = qsp.fit(Line(), meas, free=["a", "b"])
    # Closed form: OLS with known sigma.
    X = np.c_[np.ones_like(t), t]
    beta = np.linalg.solve(X.T @ X, X.T @ y)
    se = 0.3 * np.sqrt(np.diag(np.linalg.inv(X.T @ X)))
    np.testing.assert_allclose([res.estimates["a"], res.estimates["b"]], beta, rtol=1e-8)
    np.testing.assert_allclose([res.se["a"], res.se["b"]], se, rtol=1e-6)
    prof = profile(res, n_points=11)
    for name, b, s in zip(["a", "b"], beta, se):
        lo, hi = prof[name].ci
        np.testing.assert_allclose([lo, hi], [b - 1.959963984540054 * s, b + 1.959963984540054 * s], rtol=1e-6)
        np.testing.assert_allclose(prof[name].ci, prof[name].wald, rtol=1e-6)


def test_nonidentifiable_profile_is_open():
    """Emax data only far below EC50: the curve is linear there (slope Emax/EC50), so EC50
    is identified only from below: its profile is flat towards large EC50."""
    rng = np.random.default_rng(5)
    C = np.repeat([0.01, 0.02, 0.05, 0.1, 0.2], 3)
    E = 1.0 * C / (5.0 + C)
    y = E + rng.normal(0, 0.002, C.size)
    ids = [f"w{i}" for i in range(C.size)]
    meas = pd.DataFrame(dict(observableId="E", simulationConditionId=ids, time=0.0, measurement=y))
    cond = pd.DataFrame(dict(conditionId=ids, C=C))
    from qsp._algebraic import Emax

    res = qsp.fit(Emax(E0=0.0, Emax=1.0, EC50=5.0, h=1.0), meas, cond, free=["Emax", "EC50"],
                  fixed={"sigma_E": 0.002}, bounds={"Emax": (0.0, 1e6)})
    prof = profile(res, ["EC50"], n_points=15, span=6.0)["EC50"]
    lo, hi = prof.ci
    assert np.isinf(hi) and np.isfinite(lo), prof.grid
    # Wald is finite and symmetric, so it cannot express this.
    w_lo, w_hi = prof.wald
    assert np.isfinite(w_hi) and np.isclose(res.estimates["EC50"] - w_lo, w_hi - res.estimates["EC50"])
