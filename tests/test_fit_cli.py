"""`qsp fit` end to end, and preequilibration conditions.

References: data simulated from known parameters with 5% proportional noise (seed
0; the truth must lie in the reported 95% intervals); the closed form of a turnover model washing out from
its steady state, R(t) = (k_in / k_out) e^{-k_out t}.
"""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import qsp
from qsp.cli import main
from qsp.models import pk1cmt


def test_cli_bad_model(capsys):
    assert main(["fit", "nosuchmodel", "--data", "x.csv", "--free", "CL"]) == 2
    assert "unknown model 'nosuchmodel'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_fit_nonmem(tmp_path):
    truth = pk1cmt(CL=2.0, V=20.0, KA=1.5)
    rows, rng = [], np.random.default_rng(0)
    for i, dose in enumerate((100.0, 300.0)):
        reg = qsp.Regimen.bolus(dose, 0.0, "DEPOT")
        ts = np.array([0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0])
        cp = np.asarray(qsp.simulate(truth, reg, ts, rtol=1e-10, atol=1e-12).outputs["CP"])
        rows.append(dict(ID=i + 1, TIME=0.0, AMT=dose, CMT=1, EVID=1, DV=".", MDV=1))
        for t, c in zip(ts, cp * (1 + rng.normal(0, 0.05, ts.size))):  # 5% proportional noise
            rows.append(dict(ID=i + 1, TIME=t, AMT=0, CMT=2, EVID=0, DV=c, MDV=0))
    data = tmp_path / "pk.csv"
    pd.DataFrame(rows).to_csv(data, index=False)
    out = tmp_path / "fit"
    code = main(["fit", "pk1cmt", "--data", str(data), "--free", "CL,V,KA", "--observable", "CP",
                 "--error", "proportional", "--param", "CL=1", "V=10", "KA=1", "--out", str(out)])
    assert code == 0
    rec = json.loads((out / "estimates.json").read_text())
    for p, v in (("CL", 2.0), ("V", 20.0), ("KA", 1.5), ("cv_CP", 0.05)):
        row = rec["parameters"][p]
        assert row["ci_lower"] < v < row["ci_upper"], (p, row)
    est = pd.read_csv(out / "estimates.csv")
    assert list(est["parameter"]) == ["CL", "V", "KA", "cv_CP"]
    for f in ("predictions.csv", "starts.csv", "obs_vs_pred.png", "residuals.png", "vpc.png"):
        assert (out / f).stat().st_size > 0


class Turnover(qsp.ODEModel):
    kin: float = qsp.param(1.0, bounds=(0.0, float("inf")))
    kout: float = qsp.param(0.2, bounds=(0.0, float("inf")))
    states = ("R",)

    def initial(self):
        return jnp.zeros(1)

    def rhs(self, t, y):
        return jnp.stack([self.kin - self.kout * y[0]])


@pytest.mark.slow
def test_preequilibration_starts_from_steady_state():
    kout = 0.5
    t = np.array([0.0, 0.5, 1.0, 2.0, 4.0, 8.0])
    y = (2.0 / kout) * np.exp(-kout * t)  # closed form: washout from R_ss = kin/kout, kin = 2
    meas = pd.DataFrame(dict(observableId="R", simulationConditionId="wash", time=t, measurement=y,
                             preequilibrationConditionId="pre", noiseParameters=0.01))
    cond = pd.DataFrame(dict(conditionId=["pre", "wash"], kin=[2.0, 0.0]))
    res = qsp.fit(Turnover(), meas, cond, free=["kout"], simulate_kwargs=dict(rtol=1e-10, atol=1e-12))
    np.testing.assert_allclose(res.estimates["kout"], kout, rtol=1e-6)
