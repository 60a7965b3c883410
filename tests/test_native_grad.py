"""Gradients through `backend="native"` (the discrete adjoint in C, `qsp/_native_grad.py`).

References: central finite differences of the native loss itself (step 1e-5 in log
parameters at rtol 1e-10, so truncation ~1e-10 and the solver's own noise ~1e-9
relative; tolerance 1e-6 relative to the largest component), and the JAX backend's
reverse mode through `qsp.Rodas4` (a different step sequence: agreement to the step
tolerance, 1e-5 relative)."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qsp
from qsp.models import pk2cmt

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")

N = 4
RNG = np.random.default_rng(7)
CL = jnp.asarray(np.exp(0.3 * RNG.standard_normal(N)))
V1 = jnp.asarray(10.0 * np.exp(0.3 * RNG.standard_normal(N)))
TS = jnp.linspace(0.0, 60.0, 21)
# Oral doses with a lag, an IV bolus and an infusion given by rate: every way a
# parameter reaches the C solver (vector field, bolus amount via F1, segment
# boundaries via ALAG1, the initial state).
REG = (qsp.Regimen.bolus(amount=100.0, time=0.0, cmt="DEPOT", ii=12.0, addl=3)
       + qsp.Regimen.bolus(amount=20.0, time=30.0, cmt="CENT")
       + qsp.Regimen.infusion(amount=50.0, time=40.0, cmt="CENT", rate=25.0))
THETA = jnp.array([0.1, -0.2, 0.05, np.log(0.7), np.log(0.5)])


def _model(theta):
    return pk2cmt().replace(CL=CL * jnp.exp(theta[0]), V1=V1 * jnp.exp(theta[1]), Q=2.0 * jnp.exp(theta[2]),
                            F1=jnp.exp(theta[3]) * jnp.ones(N), ALAG1=jnp.exp(theta[4]) * jnp.ones(N))


def _loss(theta, backend, rtol=1e-10):
    sol = qsp.simulate(_model(theta), REG, TS, backend=backend, rtol=rtol, atol=1e-12,
                       solver=qsp.Rodas4() if backend == "jax" else None)
    return jnp.sum(jnp.log1p(sol.outputs["CP"][:, 1:]) ** 2)


@pytest.fixture(scope="module")
def native_grad():
    return jax.jit(jax.value_and_grad(lambda th: _loss(th, "native")))


def test_native_gradient_matches_finite_differences(native_grad):
    val, g = native_grad(THETA)
    h = 1e-5
    fd = np.array([(_loss(THETA.at[k].add(h), "native") - _loss(THETA.at[k].add(-h), "native")) / (2 * h)
                   for k in range(THETA.shape[0])])
    assert np.isclose(float(val), float(_loss(THETA, "native")), rtol=1e-12)
    assert np.max(np.abs(np.asarray(g) - fd)) < 1e-6 * np.max(np.abs(fd)), (g, fd)


@pytest.mark.slow  # the JAX backend's reverse-mode compile (~40 s); the mechanism is tested below
def test_native_gradient_matches_jax_backend(native_grad):
    """Includes ALAG1, a segment boundary: before `qsp._controller.StepController` the
    JAX backend's derivative there was 7.94 at rtol 1e-9 and 8.34 at 1e-10 against
    7.931 by central differences (benchmarks/NOTES.md section 17)."""
    _, g = native_grad(THETA)
    g_jax = np.asarray(jax.jit(jax.grad(lambda th: _loss(th, "jax", rtol=1e-9)))(THETA))
    assert np.all(np.isfinite(g_jax))
    assert np.max(np.abs(np.asarray(g) - g_jax)) < 1e-5 * np.max(np.abs(g_jax))


def test_step_controller_derivative_wrt_start_time():
    """diffrax's PID controller under `ClipStepSizeController(step_ts=...)` gave
    d/da sum y(t_j) = -4e13 for y' = -0.3 y from t = a (diffrax 0.7.2); with
    `StepController` it matches central differences (truncation ~1e-9 at h = 1e-6).
    Closed form: y(t) = exp(-0.3 (t - a)), so the derivative is 0.3 sum_j y(t_j)."""
    import diffrax as dfx

    from qsp._controller import StepController

    ts = jnp.linspace(0.0, 60.0, 21)

    def total(a):
        ctrl = dfx.ClipStepSizeController(StepController(rtol=1e-10, atol=1e-12), step_ts=ts)
        s = dfx.diffeqsolve(dfx.ODETerm(lambda t, y, _: -0.3 * y), dfx.Tsit5(), a, 60.0, None, jnp.asarray(1.0),
                            saveat=dfx.SaveAt(ts=ts[1:]), stepsize_controller=ctrl, max_steps=10000)
        return jnp.sum(s.ys)

    exact = 0.3 * float(np.sum(np.exp(-0.3 * (np.asarray(ts[1:]) - 0.5))))
    assert abs(float(jax.grad(total)(0.5)) - exact) < 1e-7 * exact


def test_native_gradient_without_the_tape_cache(native_grad, monkeypatch):
    """An evicted tape is recorded again in the backward pass: same gradient, bit for bit."""
    _, g = native_grad(THETA)
    monkeypatch.setenv("QSP_NATIVE_TAPE_MB", "0")
    _, g0 = jax.jit(jax.value_and_grad(lambda th: _loss(th, "native") * 1.0))(THETA)
    np.testing.assert_array_equal(np.asarray(g0), np.asarray(g))


def test_native_gradient_with_part_of_the_tapes(native_grad, monkeypatch):
    """A tape budget that holds only the first block: the forward records one patient
    and solves the others without a tape, the backward records those again in chunks
    (qsp/_native_grad.py): same gradient, bit for bit."""
    import qsp._native_grad as ng

    _, g = native_grad(THETA)
    monkeypatch.setattr(ng, "_TAPE_BLOCK", 1)
    monkeypatch.setenv("QSP_NATIVE_TAPE_MB", "1e-6")
    seen = []
    real = ng.solve_tape
    monkeypatch.setattr(ng, "solve_tape", lambda *a, **k: seen.append(len(a[2])) or real(*a, **k))
    _, g1 = jax.jit(jax.value_and_grad(lambda th: _loss(th, "native") * 1.0))(THETA)
    np.testing.assert_array_equal(np.asarray(g1), np.asarray(g))
    assert seen[0] == N and sum(seen[1:]) == N - 1, seen  # forward (1 taped), then the other 3


def test_native_under_jit_matches_eager():
    m = _model(THETA)
    eager = qsp.simulate(m, REG, TS, backend="native")
    jitted = jax.jit(lambda mm: qsp.simulate(mm, REG, TS, backend="native"))(m)
    np.testing.assert_array_equal(np.asarray(jitted.states), np.asarray(eager.states))
    np.testing.assert_array_equal(np.asarray(jitted.status), np.asarray(eager.status))
    one = jax.jit(lambda cl: qsp.simulate(pk2cmt().replace(CL=cl), REG, TS, backend="native").outputs["CP"])(1.3)
    ref = qsp.simulate(pk2cmt().replace(CL=1.3), REG, TS, backend="native").outputs["CP"]
    assert one.shape == TS.shape
    np.testing.assert_array_equal(np.asarray(one), np.asarray(ref))


def test_failed_patient_is_flagged_and_adds_no_gradient():
    """max_steps (100) too small for the patient with the fastest kinetics only (~180 steps; the others ~64): that one
    fails; its outputs are NaN and its cotangent zero, so a loss that masks it by status
    has the gradient of the others."""
    cl = jnp.array([1.0, 1.1, 1.2, 2000.0])

    def solve(s, max_steps):
        return qsp.simulate(pk2cmt().replace(CL=cl * s), qsp.Regimen.bolus(100.0, cmt="CENT"), TS,
                            backend="native", max_steps=max_steps)

    def loss(s, max_steps):
        sol = solve(s, max_steps)
        ok = sol.status == qsp.Status.SUCCESS
        return jnp.sum(jnp.where(ok[:, None], sol.outputs["CP"], 0.0)), sol.status

    (v, status), g = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)(1.0, 100)
    assert list(np.asarray(status)) == [0, 0, 0, int(qsp.Status.MAX_STEPS_REACHED)]
    three = lambda s: jnp.sum(qsp.simulate(pk2cmt().replace(CL=cl[:3] * s), qsp.Regimen.bolus(100.0, cmt="CENT"),
                                           TS, backend="native").outputs["CP"])
    g3 = jax.grad(three)(1.0)
    assert np.isfinite(float(g)) and np.isclose(float(g), float(g3), rtol=1e-12)


def test_native_forward_mode_is_refused():
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda th: _loss(th, "native"), (THETA,), (jnp.ones_like(THETA),))


def test_batched_reverse_through_rodas4_is_finite():
    """Regression: patients that finish first took zero-length, masked steps whose 1/h
    made every reverse-mode gradient NaN. Reference: forward mode (tangents do not
    meet the masked infinities)."""

    def loss(s, adjoint):
        m = pk2cmt().replace(CL=s * jnp.array([1.0, 1.5]))
        sol = qsp.simulate(m, qsp.Regimen.bolus(100.0, cmt="CENT", ii=12.0, addl=2), TS, solver=qsp.Rodas4(),
                           rtol=1e-8, atol=1e-10, adjoint=adjoint)
        return jnp.sum(jnp.log(sol.outputs["CP"][:, 1:]) ** 2)

    g = jax.grad(loss)(1.2, "reverse")
    g_fwd = jax.jacfwd(lambda s: loss(s, "forward"))(1.2)
    assert np.isfinite(float(g)) and np.isclose(float(g), float(g_fwd), rtol=1e-9)
