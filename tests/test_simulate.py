"""Core engine: stiff accuracy, gradients, populations with failures, record order.

References: scipy's Radau at rtol 1e-12 (Robertson), closed forms (decay with boluses),
central finite differences (gradients), single-patient runs (population members)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import qsp
from qsp.models import pk2cmt


class Robertson(qsp.ODEModel):
    """Robertson's stiff chemical kinetics (Hairer & Wanner, Solving ODEs II, sec. IV.1)."""

    k1: float = 0.04
    k2: float = 3e7
    k3: float = 1e4
    states = ("y1", "y2", "y3")

    def initial(self):
        return jnp.array([1.0, 0.0, 0.0])

    def rhs(self, t, y):
        r1, r2, r3 = self.k1 * y[0], self.k2 * y[1] ** 2, self.k3 * y[1] * y[2]
        return jnp.stack([-r1 + r3, r1 - r2 - r3, r2])


class Decay(qsp.ODEModel):
    k: float = 0.1
    states = ("A",)

    def initial(self):
        return jnp.array([1.0])

    def rhs(self, t, y):
        return -self.k * y

    def outputs(self, t, y):
        return {"A": y[0]}


def test_robertson_matches_radau_to_4e5():
    ts = np.concatenate([[0.0], np.logspace(-5, np.log10(4e5), 40)[:-1], [4e5]])
    m = Robertson()
    k1, k2, k3 = m.k1, m.k2, m.k3

    # The reference right-hand side and its analytic Jacobian are written out in NumPy
    # (Hairer & Wanner, sec. IV.1): independent of the JAX model, and no eager JAX
    # dispatch in scipy's thousands of callbacks at rtol 1e-12 (that cost ~100 s).
    def f(t, y):
        r1, r2, r3 = k1 * y[0], k2 * y[1] ** 2, k3 * y[1] * y[2]
        return np.array([-r1 + r3, r1 - r2 - r3, r2])

    def jac(t, y):
        return np.array([[-k1, k3 * y[2], k3 * y[1]],
                         [k1, -2 * k2 * y[1] - k3 * y[2], -k3 * y[1]],
                         [0.0, 2 * k2 * y[1], 0.0]])

    ref = solve_ivp(f, (0.0, 4e5), [1.0, 0.0, 0.0], method="Radau", t_eval=ts, rtol=1e-12, atol=1e-20, jac=jac)
    assert ref.success
    sol = qsp.simulate(m, ts=jnp.asarray(ts), rtol=1e-10, atol=1e-16, max_steps=100_000)
    assert int(sol.status) == qsp.Status.SUCCESS
    got, want = np.asarray(sol.states)[1:], ref.y.T[1:]
    rel = np.abs(got - want) / np.abs(want)
    assert rel.max() < 1e-6, f"max relative error {rel.max():.2e} (component {np.unravel_index(rel.argmax(), rel.shape)})"
    # Mass balance: y1 + y2 + y3 = 1 is an invariant of the Robertson system.
    np.testing.assert_allclose(np.asarray(sol.states).sum(axis=1), 1.0, rtol=0, atol=1e-9)


def test_bolus_jumps_and_record_order():
    """Decay with boluses at t=2 and t=5: y = sum of exp(-k (t - t_d)) for t >= t_d."""
    reg = qsp.Regimen.bolus(amount=1.0, time=[2.0, 5.0], cmt="A")
    ts = jnp.array([0.0, 2.0, 2.0, 3.5, 5.0, 5.0, 10.0])
    after = jnp.array([False, False, True, False, False, True, False])
    sol = qsp.simulate(Decay(), reg, ts, obs_after_dose=after, rtol=1e-11, atol=1e-13)
    t = np.asarray(ts)

    def exact(t, include_dose_at_t):
        total = np.exp(-0.1 * t)
        for td in (2.0, 5.0):
            if t > td or (t == td and include_dose_at_t):
                total += np.exp(-0.1 * (t - td))
        return total

    want = [exact(ti, bool(a)) for ti, a in zip(t, np.asarray(after))]
    np.testing.assert_allclose(np.asarray(sol.outputs["A"]), want, rtol=1e-8)
    # Dose exactly at the last save time, observed after it.
    sol = qsp.simulate(Decay(), qsp.Regimen.bolus(amount=1.0, time=4.0, cmt=1), jnp.array([0.0, 4.0]),
                       obs_after_dose=True, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(np.asarray(sol.outputs["A"]), [1.0, 1.0 + np.exp(-0.4)], rtol=1e-8)


def test_infusion_bioavailability_semantics():
    """NONMEM: F scales the rate of a duration-given infusion and the duration of a
    rate-given one. Amount into CENT of pk1cmt with CL -> 0 is then F * dose either way,
    but the end of infusion differs."""
    from qsp.models import pk1cmt

    model = pk1cmt(CL=1e-12, F1=0.5, KA=1e-12)
    ts = jnp.array([0.0, 2.0, 4.0, 6.0])
    by_dur = qsp.simulate(model, qsp.Regimen.infusion(amount=8.0, cmt="DEPOT", duration=4.0), ts,
                          rtol=1e-10, atol=1e-12)
    by_rate = qsp.simulate(model, qsp.Regimen.infusion(amount=8.0, cmt="DEPOT", rate=2.0), ts,
                           rtol=1e-10, atol=1e-12)
    # duration 4 h fixed, rate F*8/4 = 1/h; rate 2/h fixed, duration F*8/2 = 2 h.
    np.testing.assert_allclose(np.asarray(by_dur.outputs["DEPOT"]), [0, 2, 4, 4], atol=1e-8)
    np.testing.assert_allclose(np.asarray(by_rate.outputs["DEPOT"]), [0, 4, 4, 4], atol=1e-8)


REG = qsp.Regimen.bolus(amount=100.0, time=0.0, cmt="DEPOT", ii=12.0, addl=3) + qsp.Regimen.infusion(
    amount=50.0, time=6.0, cmt="CENT", duration=3.0
)
TS = jnp.linspace(0.0, 48.0, 9)


def _cp(params, dose):
    reg = qsp.Regimen.bolus(amount=dose, time=0.0, cmt="DEPOT", ii=12.0, addl=3) + qsp.Regimen.infusion(
        amount=50.0, time=6.0, cmt="CENT", duration=3.0
    )
    model = pk2cmt(CL=params[0], V1=params[1], KA=params[2], ALAG1=params[3])
    return qsp.simulate(model, reg, TS, rtol=1e-12, atol=1e-12).outputs["CP"]


def test_gradients_match_central_differences():
    p0 = jnp.array([1.3, 9.0, 0.8, 0.5])
    dose = 100.0
    loss = lambda p, d: jnp.sum(_cp(p, d) ** 2)
    g_p, g_d = jax.grad(loss, argnums=(0, 1))(p0, dose)
    for i in range(4):
        h = 1e-5 * float(p0[i])
        e = jnp.zeros(4).at[i].set(h)
        fd = (loss(p0 + e, dose) - loss(p0 - e, dose)) / (2 * h)
        np.testing.assert_allclose(float(g_p[i]), float(fd), rtol=1e-5, err_msg=f"parameter {i}")
    fd = (loss(p0, dose + 1e-3) - loss(p0, dose - 1e-3)) / 2e-3
    np.testing.assert_allclose(float(g_d), float(fd), rtol=1e-5, err_msg="dose amount")


def test_jacfwd_with_forward_adjoint():
    def cp(cl):
        return qsp.simulate(pk2cmt(CL=cl), REG, TS, rtol=1e-12, atol=1e-12, adjoint="forward").outputs["CP"]

    jac = jax.jacfwd(cp)(1.5)
    fd = (cp(1.5 + 1e-5) - cp(1.5 - 1e-5)) / 2e-5
    np.testing.assert_allclose(np.asarray(jac), np.asarray(fd), rtol=1e-5, atol=1e-9)


@pytest.mark.slow
def test_population_of_10000_with_one_failure():
    n = 10_000
    z = jax.random.normal(jax.random.key(0), (5, n))
    ka = jnp.exp(0.3 * z[4]).at[17].set(1e300)  # absurd absorption: exhausts max_steps
    pop = pk2cmt(CL=jnp.exp(0.3 * z[0]), V1=10 * jnp.exp(0.3 * z[1]), Q=2 * jnp.exp(0.3 * z[2]),
                 V2=20 * jnp.exp(0.3 * z[3]), KA=ka)
    sol = qsp.simulate(pop, REG, TS, max_steps=128)
    assert sol.states.shape == (n, TS.shape[0], 3)
    assert sol.failed.tolist() == [17]
    assert int(sol.status[17]) == qsp.Status.MAX_STEPS_REACHED
    assert np.isnan(np.asarray(sol.outputs["CP"][17])).all()
    assert np.isfinite(np.asarray(sol.outputs["CP"][np.asarray(sol.ok)])).all()
    for i in (0, 16, 18, 9_999):
        one = qsp.simulate(jax.tree.map(lambda x: x[i] if eqx_is_batched(x) else x, pop), REG, TS, max_steps=128)
        np.testing.assert_allclose(np.asarray(sol.outputs["CP"][i]), np.asarray(one.outputs["CP"]), rtol=1e-9)


def eqx_is_batched(x):
    return hasattr(x, "ndim") and x.ndim == 1


def test_batched_regimens_and_nan_parameter_flagged():
    regs = qsp.Regimen.stack([qsp.Regimen.bolus(amount=a, time=0.0, cmt="CENT") for a in (10.0, 20.0, 30.0)])
    pop = pk2cmt(CL=jnp.array([1.0, jnp.nan, 1.0]))
    sol = qsp.simulate(pop, regs, TS)
    assert sol.status.tolist() == [0, qsp.Status.INVALID_PARAMETERS, 0]
    np.testing.assert_allclose(np.asarray(sol.outputs["CP"][2]), 3 * np.asarray(sol.outputs["CP"][0]), rtol=1e-6)
    with pytest.raises(RuntimeError, match="trajectory 1: a parameter is NaN"):
        sol.raise_if_failed()


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: qsp.Regimen.bolus(amount=1.0, time=[5.0, 1.0], cmt=1), r"sorted.*time\[1\]=1 after time\[0\]=5"),
        (lambda: qsp.Regimen.bolus(amount=1.0, time=-2.0, cmt=1), r"time\[0\]=-2 is negative"),
        (lambda: qsp.Regimen.bolus(amount=-1.0, time=0.0, cmt=1), r"amount\[0\]=-1 is negative"),
        (lambda: qsp.Regimen.bolus(amount=1.0, time=0.0, cmt=0), r"cmt=0 must be .* 1-based"),
        (lambda: qsp.Regimen.infusion(amount=1.0, cmt=1), r"exactly one of duration=... or rate="),
        (lambda: qsp.Regimen.bolus(amount=1.0, addl=3, cmt=1), r"addl\[0\]=3 needs a positive interdose interval"),
    ],
)
def test_regimen_bad_input(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_simulate_bad_input():
    with pytest.raises(ValueError, match=r"unknown compartment cmt='GUT'.*expected a state name in \('DEPOT', 'CENT', 'PERIPH'\)"):
        qsp.simulate(pk2cmt(), qsp.Regimen.bolus(amount=1.0, cmt="GUT"), TS)
    with pytest.raises(ValueError, match=r"unknown compartment cmt=4 .* 3 states"):
        qsp.simulate(pk2cmt(), qsp.Regimen.bolus(amount=1.0, cmt=4), TS)
    with pytest.raises(ValueError, match=r"parameter CL=NaN of pk2cmt is invalid"):
        qsp.simulate(pk2cmt(CL=float("nan")), REG, TS)
    with pytest.raises(ValueError, match=r"parameter V1=-3 of pk2cmt is invalid; expected a number within bounds \[0, inf\]"):
        qsp.simulate(pk2cmt(V1=-3.0), REG, TS)
    with pytest.raises(ValueError, match=r"ts must be sorted"):
        qsp.simulate(pk2cmt(), REG, jnp.array([0.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match=r"population axes disagree"):
        qsp.simulate(pk2cmt(CL=jnp.ones(3), V1=jnp.ones(4)), REG, TS)
    with pytest.raises(ValueError, match=r"has no parameter 'CLEARANCE'; known parameters: CL, V1"):
        pk2cmt().replace(CLEARANCE=1.0)


# -- closed-form PK through the Python API (issue 2, shown item 1) -----------------------

import pk_closed_form as cf  # noqa: E402

CF_TS = np.linspace(0.0, 60.0, 31)
P1 = dict(CL=1.7, V=12.0, KA=0.9)
P2 = dict(CL=1.7, V1=12.0, Q=3.1, V2=25.0, KA=0.9)
# (regimen, closed-form CP of pk1cmt, closed-form CP of pk2cmt); ours, built for the test.
CF_CASES = {
    "iv bolus q12h x4 (ADDL)": (
        qsp.Regimen.bolus(amount=100.0, time=0.0, cmt="CENT", ii=12.0, addl=3),
        lambda t: cf.one_cmt_bolus(t, 100.0, cf.dose_times(0, 12, 3), P1["CL"], P1["V"], after_dose=False),
        lambda t: cf.two_cmt_bolus(t, 100.0, cf.dose_times(0, 12, 3), P2["CL"], P2["V1"], P2["Q"], P2["V2"], after_dose=False),
    ),
    "30 h infusion spanning two later 2 h infusions": (
        qsp.Regimen.infusion(amount=300.0, time=0.0, cmt=2, duration=30.0)
        + qsp.Regimen.infusion(amount=40.0, time=6.0, cmt=2, duration=2.0, ii=10.0, addl=1),
        lambda t: cf.one_cmt_infusion(t, [300.0, 40.0, 40.0], [0.0, 6.0, 16.0], [30.0, 2.0, 2.0], P1["CL"], P1["V"]),
        lambda t: cf.two_cmt_infusion(t, [300.0, 40.0, 40.0], [0.0, 6.0, 16.0], [30.0, 2.0, 2.0], P2["CL"], P2["V1"], P2["Q"], P2["V2"]),
    ),
    "oral, F1=0.6, lag 0.75 h, q24h x3": (
        qsp.Regimen.bolus(amount=200.0, time=1.0, cmt="DEPOT", ii=24.0, addl=2),
        lambda t: cf.one_cmt_oral(t, 200.0, cf.dose_times(1, 24, 2), P1["CL"], P1["V"], P1["KA"], F=0.6, lag=0.75),
        lambda t: cf.two_cmt_oral(t, 200.0, cf.dose_times(1, 24, 2), P2["CL"], P2["V1"], P2["Q"], P2["V2"], P2["KA"], F=0.6, lag=0.75),
    ),
}


@pytest.mark.parametrize("which", ["pk1cmt", "pk2cmt"])
def test_closed_form_pk_through_python_api(which):
    """All cases in one batched call (one compile): relative error < 1e-6 everywhere."""
    from qsp.models import pk1cmt

    names = list(CF_CASES)
    regs = qsp.Regimen.stack([CF_CASES[n][0] for n in names])
    k = len(names)
    if which == "pk1cmt":
        model = pk1cmt(**{p: jnp.full(k, v) for p, v in P1.items()}, F1=jnp.full(k, 0.6), ALAG1=jnp.full(k, 0.75))
        col = 1
    else:
        model = pk2cmt(**{p: jnp.full(k, v) for p, v in P2.items()}, F1=jnp.full(k, 0.6), ALAG1=jnp.full(k, 0.75))
        col = 2
    sol = qsp.simulate(model, regs, jnp.asarray(CF_TS), rtol=1e-10, atol=1e-12)
    assert sol.ok.all()
    for i, name in enumerate(names):
        want = CF_CASES[name][col](CF_TS)
        got = np.asarray(sol.outputs["CP"][i])
        nz = np.abs(want) > 1e-12
        rel = np.abs(got[nz] - want[nz]) / np.abs(want[nz])
        assert rel.max() < 1e-6, f"{which}, {name}: max relative error {rel.max():.2e}"
        np.testing.assert_allclose(got[~nz], 0.0, atol=1e-12, err_msg=f"{which}, {name} before first dose")


def test_chunked_population_equals_one_batch():
    """batch_size splits a population into fixed-size chunks (last one padded); each
    member's result must not depend on it (vmap lanes are independent; 1e-12 allows
    for vectorised arithmetic differing in the last bits). Three members, chunks of 2:
    the one-batch run has the shapes of test_batched_regimens_and_nan_parameter_flagged
    and shares its compile."""
    regs = qsp.Regimen.stack([qsp.Regimen.bolus(amount=10.0 * (i + 1), time=0.0, cmt="CENT") for i in range(3)])
    pop = pk2cmt(CL=jnp.array([0.5, 1.5, 2.5]))
    one = qsp.simulate(pop, regs, TS, batch_size=None)
    chunked = qsp.simulate(pop, regs, TS, batch_size=2)
    assert chunked.states.shape == one.states.shape == (3, TS.shape[0], 3)
    np.testing.assert_allclose(np.asarray(chunked.states), np.asarray(one.states), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(chunked.num_steps), np.asarray(one.num_steps))
