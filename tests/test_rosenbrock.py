"""`qsp.Rodas4` (Rosenbrock, Hairer & Wanner's RODAS) against closed forms, scipy's
Radau at tight tolerance, and central finite differences."""

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import qsp
from qsp.models import pk2cmt

import pk_closed_form as cf


def _nonautonomous(t, y, args):
    # y' = -(1 + t) y, y(0) = 1: y = exp(-(t + t^2/2)). Depends on t, so the f_t term counts.
    return -(1.0 + t) * y


def _fixed_step_error(n):
    sol = dfx.diffeqsolve(dfx.ODETerm(_nonautonomous), qsp.Rodas4(), 0.0, 2.0, 2.0 / n, jnp.array([1.0]),
                          stepsize_controller=dfx.ConstantStepSize())
    return abs(float(sol.ys[-1, 0]) - np.exp(-4.0))


def test_order_four_on_a_nonautonomous_problem():
    """Global error at t = 2 with 10, 20, 40, 80 equal steps against the closed form: the
    observed order log2(e_h / e_{h/2}) is 4 (within 0.4) once h is small, and the error
    at 80 steps is below 1e-8."""
    errs = [_fixed_step_error(n) for n in (10, 20, 40, 80)]
    orders = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(np.abs(orders[1:] - 4.0) < 0.4), orders
    assert errs[-1] < 1e-8, errs


def _robertson(t, y, args):
    return jnp.array([-0.04 * y[0] + 1e4 * y[1] * y[2],
                      0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                      3e7 * y[1] ** 2])


def test_robertson_matches_radau_and_conserves_mass():
    """Robertson's stiff kinetics (stiffness ratio ~1e11) to t = 1e5 at rtol 1e-9 /
    atol 1e-13 with dense output: within 1e-5 (relative) of scipy Radau at rtol 1e-12,
    and y1 + y2 + y3 = 1 (a linear invariant, kept by any Rosenbrock method up to
    round-off and the linear solves) to 1e-12."""
    ts = np.array([0.4, 4.0, 40.0, 400.0, 4e3, 4e4, 1e5])
    sol = dfx.diffeqsolve(dfx.ODETerm(_robertson), qsp.Rodas4(), 0.0, 1e5, 1e-6, jnp.array([1.0, 0.0, 0.0]),
                          saveat=dfx.SaveAt(ts=jnp.asarray(ts)), max_steps=20000,
                          stepsize_controller=dfx.PIDController(rtol=1e-9, atol=1e-13))

    # The reference right-hand side and its analytic Jacobian in NumPy (Hairer & Wanner,
    # Solving ODEs II, sec. IV.1): independent of the JAX code under test, and no eager
    # JAX dispatch in scipy's callbacks at rtol 1e-12.
    def f(t, y):
        return np.array([-0.04 * y[0] + 1e4 * y[1] * y[2], 0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                         3e7 * y[1] ** 2])

    def jac(t, y):
        return np.array([[-0.04, 1e4 * y[2], 1e4 * y[1]],
                         [0.04, -1e4 * y[2] - 6e7 * y[1], -1e4 * y[1]],
                         [0.0, 6e7 * y[1], 0.0]])

    ref = solve_ivp(f, (0.0, 1e5), [1.0, 0.0, 0.0], method="Radau", rtol=1e-12, atol=1e-18, t_eval=ts, jac=jac)
    got = np.asarray(sol.ys).T
    np.testing.assert_allclose(got, ref.y, rtol=1e-5, atol=1e-14)
    np.testing.assert_allclose(got.sum(0), 1.0, atol=1e-12)


# Slow tier (its own ~25 s reverse-mode compile). Default tier still covers it:
# Rodas4 in qsp.simulate with regimens against closed forms in
# test_mapk.py::test_pk_matches_closed_forms (Rodas4 is that model's default solver),
# reverse mode through it in test_native_grad.py::test_batched_reverse_through_rodas4_is_finite.
@pytest.mark.slow
def test_pk2cmt_regimen_matches_closed_form_and_gradient_matches_fd():
    """Through `qsp.simulate`: 2-compartment PK, oral q12h x4 plus a 3 h infusion, against
    the superposition closed form (relative error < 1e-7 at rtol 1e-10); d(sum CP^2)/dCL
    by reverse mode against central differences (step 1e-5 relative) to 1e-6."""
    ts = np.linspace(0.0, 48.0, 25)
    reg = qsp.Regimen.bolus(amount=100.0, time=0.0, cmt="DEPOT", ii=12.0, addl=3) + qsp.Regimen.infusion(
        amount=50.0, time=6.0, cmt="CENT", duration=3.0)
    p = dict(CL=1.3, V1=9.0, Q=2.0, V2=20.0, KA=0.8)

    def cp(cl):
        model = pk2cmt(**{**p, "CL": cl})
        return qsp.simulate(model, reg, jnp.asarray(ts), solver=qsp.Rodas4(), rtol=1e-10, atol=1e-12).outputs["CP"]

    want = cf.two_cmt_oral(ts, 100.0, cf.dose_times(0, 12, 3), p["CL"], p["V1"], p["Q"], p["V2"], p["KA"]) + \
        cf.two_cmt_infusion(ts, [50.0], [6.0], [3.0], p["CL"], p["V1"], p["Q"], p["V2"])
    got = np.asarray(cp(p["CL"]))
    nz = want > 1e-12
    assert np.max(np.abs(got[nz] / want[nz] - 1.0)) < 1e-7
    loss = jax.jit(lambda cl: jnp.sum(cp(cl) ** 2))
    g = float(jax.grad(loss)(p["CL"]))
    h = 1e-5 * p["CL"]
    fd = (float(loss(p["CL"] + h)) - float(loss(p["CL"] - h))) / (2 * h)
    assert g == pytest.approx(fd, rel=1e-6)
