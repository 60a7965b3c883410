"""Joint fit across three data types for one built-in model (issue 3, item 3).

`qsp.models.tgi.SimeoniTGI` (Simeoni 2004 tumour growth inhibition) is fitted at once
to (ours, simulated from known parameters with noise; seed fixed):

- in vitro: cell counts relative to seeding in wells at constant concentration
  (`C_ext` per well, undosed PK, exponential growth `lambda0_vitro`);
- xenograft arms: vehicle and two dose levels, tumour volume (mm^3), mouse PK;
- clinical: three patients with their own regimens (weekly infusions), tumour
  diameters (mm), human PK and growth `lambda0_clin`, `lambda1_clin`.

Shared across all three: the potency `k2` and damage transit `k1`. Experiment-specific:
growth rates (named in the condition table) and the error parameters (`noiseParameters`
names per data type). Fixed: species PK (numbers in the condition table).
Reference: the estimates' 95% Wald intervals contain the true values, and the fit's
NLL is at most the NLL at the true values (the optimum is a minimum).
"""

from __future__ import annotations

import diffrax as dfx
import numpy as np
import pandas as pd
import pytest

import qsp
from qsp.models.tgi import SimeoniTGI

TRUE = dict(k1=0.8, k2=0.05, lambda0=0.25, lambda1=120.0,
            lambda0_vitro=0.6, lambda0_clin=0.02, lambda1_clin=300.0)
SIM = dict(solver=dfx.Tsit5(), rtol=1e-8, atol=1e-8)


def _dataset(seed=0):
    rng = np.random.default_rng(seed)
    cond, rows, regs = [], [], {}
    model = SimeoniTGI(**{k: v for k, v in TRUE.items() if k in SimeoniTGI.parameter_info()})

    def add(cid, overrides, reg, obs, times, noise, err, true_over):
        cond.append(dict(conditionId=cid, **overrides))
        m = model.replace(**true_over)
        if reg is not None:
            regs[cid] = reg
        sol = qsp.simulate(m, reg, times, rtol=1e-10, atol=1e-10)
        f = np.asarray(sol.outputs[obs])
        y = f * np.exp(rng.normal(0, err, f.size))
        for t, v in zip(times, y):
            rows.append(dict(observableId=obs, simulationConditionId=cid, time=t, measurement=v, noiseParameters=noise))

    vitro = dict(lambda0="lambda0_vitro", lambda1=1e6, W0=1.0, V=1.0, CL=1.0)
    for c in (0.0, 1.0, 3.0, 10.0):
        add(f"vitro_{c:g}", dict(vitro, C_ext=c), None, "size", np.array([0.0, 1, 2, 3, 4]),
            "sigma_vitro", 0.1, dict(lambda0=TRUE["lambda0_vitro"], lambda1=1e6, W0=1.0, C_ext=c, V=1.0, CL=1.0))
    mouse = dict(lambda0=np.nan, lambda1=np.nan, W0=150.0, V=0.02, CL=0.1, KA=4.0)
    for dose in (0.0, 0.1, 0.4):
        reg = qsp.Regimen.bolus(dose, 0.0, "DEPOT", ii=1.0, addl=13) if dose else None
        add(f"xeno_{dose:g}", mouse, reg, "size", np.arange(0.0, 29.0, 4.0), "sigma_xeno", 0.15,
            dict(W0=150.0, V=0.02, CL=0.1, KA=4.0))
    for i, (dose, w0) in enumerate([(20.0, 30000.0), (40.0, 50000.0), (80.0, 20000.0)]):
        reg = qsp.Regimen.infusion(dose, 0.0, "CENT", duration=0.05, ii=7.0, addl=11)
        add(f"pt{i}", dict(lambda0="lambda0_clin", lambda1="lambda1_clin", W0=w0, V=50.0, CL=10.0),
            reg, "diameter", np.array([0.0, 21, 42, 63, 84, 105, 126]), "sigma_clin", 0.08,
            dict(lambda0=TRUE["lambda0_clin"], lambda1=TRUE["lambda1_clin"], W0=w0, V=50.0, CL=10.0))
    return pd.DataFrame(rows), pd.DataFrame(cond), regs


@pytest.mark.slow
def test_joint_fit_three_data_types():
    meas, cond, regs = _dataset()
    start = SimeoniTGI(k1=0.5, k2=0.02, lambda0=0.4, lambda1=80.0)
    res = qsp.fit(start, meas, cond, regimens=regs, free=["k1", "k2", "lambda0", "lambda1"],
                  error="lognormal", initial=dict(lambda0_vitro=0.4, lambda0_clin=0.05, lambda1_clin=150.0),
                  simulate_kwargs=SIM)
    assert res.converged and res.hessian_ok
    assert set(res.free) == {"k1", "k2", "lambda0", "lambda1", "lambda0_vitro", "lambda0_clin",
                             "lambda1_clin", "sigma_vitro", "sigma_xeno", "sigma_clin"}
    for name, truth in TRUE.items():
        lo, hi = res.ci[name]
        assert lo < truth < hi, (name, truth, res.estimates[name], res.se[name])
    # The optimum is at least as good as the truth.
    pb = res.problem
    theta_true = np.array([TRUE.get(n, res.estimates[n]) for n in pb.free])
    assert res.nll <= float(pb.nll_theta(theta_true)) + 1e-6
