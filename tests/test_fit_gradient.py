"""Gradients of the full objective match central finite differences (issue 3, item 4).

The objective is the complete one `qsp.fit` minimises: several conditions, combined
and log-normal error models with estimated error parameters, M3-censored rows,
precision weights, an experiment-specific parameter and a prior, on the unconstrained
(log/logit) scale. Reference: central differences, step h = 1e-5 (truncation error
O(h^2) ~ 1e-10 relative; ODE solved at rtol 1e-12 so round-off / h stays ~1e-7).
"""

from __future__ import annotations

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import qsp
from qsp._algebraic import Emax
from qsp._experiment import compile_dataset
from qsp._fit import _fwd_grad
from qsp._problem import build_problem
from qsp.models import pk2cmt


def central_fd(f, u, h=1e-5):
    g = np.zeros(u.size)
    for i in range(u.size):
        e = np.zeros(u.size)
        e[i] = h
        g[i] = (float(f(u + e)) - float(f(u - e))) / (2 * h)
    return g


def test_gradient_algebraic_full_objective():
    rng = np.random.default_rng(0)
    C = np.array([0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0])
    ids = [f"w{i}" for i in range(C.size)]
    E = 1.0 - 0.8 * C**1.5 / (2.0**1.5 + C**1.5)
    meas = pd.DataFrame(dict(observableId="E", simulationConditionId=ids, time=0.0,
                             measurement=E + rng.normal(0, 0.03, C.size), weight=rng.uniform(0.5, 2, C.size),
                             lloq=0.3))
    cond = pd.DataFrame(dict(conditionId=ids, C=C, EC50=["EC50"] * 4 + ["EC50_b"] * 3))
    model = Emax(E0=0.9, Emax=-0.7, EC50=1.5, h=1.2)
    data = compile_dataset(model, meas, cond)
    assert data.censored.sum() >= 1
    pb = build_problem(model, data, ["E0", "Emax", "EC50", "h"], "combined",
                       priors={"h": ("lognormal", 0.0, 1.0)})
    assert "EC50_b" in pb.free and "cv_E" in pb.free
    u = jnp.asarray(pb.unconstrained(pb.init)) + 0.1
    g = np.asarray(jax.grad(pb.nll)(u))
    f = jax.jit(pb.nll)
    np.testing.assert_allclose(g, central_fd(f, np.asarray(u)), rtol=1e-5, atol=1e-8)


@pytest.mark.slow
def test_gradient_ode_full_objective():
    true = pk2cmt(CL=2.0, V1=10.0, Q=3.0, V2=30.0, KA=1.2)
    ts = np.array([0.5, 1.0, 2.0, 6.0, 12.0, 24.0, 48.0])
    rows, regs = [], {}
    rng = np.random.default_rng(1)
    for i, dose in enumerate([30.0, 300.0]):
        reg = qsp.Regimen.bolus(dose, 0.0, "DEPOT") + qsp.Regimen.infusion(dose / 2, 24.0, "CENT", duration=2.0)
        regs[f"d{i}"] = reg
        cp = np.asarray(qsp.simulate(true, reg, ts, rtol=1e-10, atol=1e-12).outputs["CP"])
        for t, v in zip(ts, cp * np.exp(rng.normal(0, 0.2, ts.size))):
            rows.append(dict(observableId="CP", simulationConditionId=f"d{i}", time=t, measurement=v, lloq=0.4))
    meas = pd.DataFrame(rows)
    model = pk2cmt(CL=1.5, V1=12.0, Q=2.0, V2=25.0, KA=1.0)
    data = compile_dataset(model, meas, None, regs)
    assert 1 <= data.censored.sum() < data.n
    pb = build_problem(model, data, ["CL", "V1", "Q", "V2", "KA"], "lognormal",
                       sim_kwargs=dict(solver=dfx.Tsit5(), rtol=1e-12, atol=1e-12, max_steps=20000))
    u = jnp.asarray(pb.unconstrained(pb.init))
    f = jax.jit(pb.nll)
    fd = central_fd(f, np.asarray(u))
    # Forward-mode gradient (what the optimizers use for ODE models) ...
    g_fwd = np.asarray(jax.jit(jax.grad(_fwd_grad(pb.nll)))(u))
    np.testing.assert_allclose(g_fwd, fd, rtol=1e-5)
    # ... and reverse mode through qsp.simulate's default adjoint.
    g_rev = np.asarray(jax.jit(jax.grad(lambda x: pb.nll(x, adjoint="reverse")))(u))
    np.testing.assert_allclose(g_rev, fd, rtol=1e-5)
