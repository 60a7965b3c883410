"""`simulate(..., backend="native")`: C generated from the jaxpr, checked against closed
forms, the JAX backend and JAX itself (issue 8)."""

import os
import re
import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qsp
from qsp._codegen import NativeUnsupported
from qsp.models import pk1cmt, pk2cmt

sys.path.insert(0, str(Path(__file__).parent))
import pk_closed_form as cf  # noqa: E402
from test_simulate import CF_CASES, CF_TS, P1, P2  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("QSP_NATIVE_CACHE", str(tmp_path_factory.getbasetemp() / "native_cache"))


# -- the generator against JAX itself -------------------------------------------------------


def _kitchen_sink(x, p):
    """Most primitives the generator handles, in one function (ours, for the test)."""
    a = jnp.maximum(x[0], p[0]) * jax.nn.sigmoid(x[1]) + jnp.minimum(x[2], 0.3) ** 3
    b = jnp.where(x[3] > p[1], jnp.log1p(x[3] ** 2), jnp.exp(-x[3])) / (1.0 + x[0] ** 2)
    m = p[2:11].reshape(3, 3)
    v = m @ x[:3] + jnp.sum(x) * jnp.tanh(x[4])
    g = x[jnp.array([4, 0, 2])] * jnp.sqrt(1.0 + x[1] ** 2)
    s = jnp.zeros(3).at[jnp.array([0, 2, 0])].add(x[2:5])
    c = jax.lax.cond(p[11] > 0, lambda: x[0] * 2.0, lambda: x[1] - 1.0)
    return jnp.concatenate([jnp.stack([a, b, c]), v, g, s, jnp.cumsum(x[:3])])


def test_generated_c_equals_jax_on_many_primitives():
    """Value and jacfwd of a function using the supported primitives, at 20 random
    points: the compiled C equals JAX's result to 1e-13 relative (the same operations,
    up to libm's last bits and the order of sums)."""
    from qsp._native import native_function

    avals = (jax.ShapeDtypeStruct((5,), float), jax.ShapeDtypeStruct((12,), float))
    f = native_function(_kitchen_sink, avals)
    jac = native_function(jax.jacfwd(_kitchen_sink), avals)
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, p = rng.normal(size=5), rng.normal(size=12)
        for got, want in ((f(x, p)[0], _kitchen_sink(x, p)), (jac(x, p)[0], jax.jacfwd(_kitchen_sink)(x, p))):
            want = np.asarray(want)
            np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13 * np.abs(want).max())


def _hill_terms(c, p):
    """Hill terms in log space, as the QSP models write them: a log per concentration,
    then an exp per term (logistic), some feeding further logs."""
    lc = jnp.log(c)
    h = jax.nn.sigmoid(p[:6] * (lc[:, None] - p[6:9]).ravel()[:6])
    return jnp.concatenate([h, jnp.exp(-lc), jnp.log(h + c[:6] ** 2), jnp.exp(jnp.log(c[:1]) * p[9:10])])


def test_grouped_libm_calls_equal_scalar_ones():
    """`_batch_libm` moves independent exp/log calls together and calls them four lanes
    at a time (glibc's vector libm where it links): the compiled values equal the
    scalar-call version to 1e-13 relative (glibc documents <= 4 ulp for the vector
    functions), every statement is kept, and the calls are grouped."""
    import qsp._codegen as CG
    from qsp._native import native_function

    avals = (jax.ShapeDtypeStruct((8,), float), jax.ShapeDtypeStruct((10,), float))
    src, _, _ = CG.c_function(_hill_terms, avals, "f")
    scalar_src, _, _ = CG.c_function(_hill_terms, avals, "f", vector_libm=False)
    assert src.count("QSP_V4(") >= 4 and "QSP_V4(" not in scalar_src
    # Same statements, reordered: every name is defined once in both.
    defs = lambda t: sorted(re.findall(r"const double (v\d+) =", t))
    assert defs(src) == defs(scalar_src)
    f = native_function(_hill_terms, avals)
    rng = np.random.default_rng(1)
    for _ in range(20):
        c, p = rng.uniform(0.05, 20.0, size=8), rng.uniform(0.3, 3.0, size=10)
        want = np.asarray(_hill_terms(c, p))
        np.testing.assert_allclose(f(c, p)[0], want, rtol=1e-13)


def test_unsupported_primitive_is_named():
    from qsp._native import native_function

    def looped(x):
        return jax.lax.while_loop(lambda y: y[0] < 10.0, lambda y: y * 2.0, x)

    with pytest.raises(NativeUnsupported, match="while"):
        native_function(looped, (jax.ShapeDtypeStruct((2,), float),))


# -- the straight-line sparse LU --------------------------------------------------------------


def _lu_solver(pattern):
    """qsp_sfactor + qsp_ssolve for `pattern`, callable on (J, g, b)."""
    import ctypes

    from qsp._native import _HEAD, _load
    from qsp._sparse_lu import c_sparse_lu

    n = len(pattern)
    src, nnz, _ = c_sparse_lu(pattern)
    lib = _load(_HEAD + src + f"""
int t_solve(const double* J, double g, double* b) {{
  double a[{nnz}], d[{n}];
  if (!qsp_sfactor(J, g, a, d)) return 0;
  qsp_ssolve(a, d, b);
  return 1;
}}\n""")
    f = lib.t_solve
    f.restype, f.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_double, ctypes.c_void_p]

    def solve(J, g, b):
        J = np.ascontiguousarray(J, dtype=float)
        x = np.array(b, dtype=float)
        return bool(f(J.ctypes.data, g, x.ctypes.data)), x

    return solve


def test_sparse_lu_solves_and_refuses_bad_pivots():
    """(gI - J) x = b for a random sparse pattern (arrow + band + random entries, ours)
    against numpy.linalg.solve, 1e-12 relative; a structurally present but numerically
    zero pivot is refused (the solver then uses dense pivoted LU)."""
    n = 12
    rng = np.random.default_rng(1)
    pattern = (rng.random((n, n)) < 0.15) | np.eye(n, dtype=bool) | np.eye(n, k=1, dtype=bool)
    pattern[:, 0] = pattern[0, :] = True
    solve = _lu_solver(pattern)
    for g in (1e3, 10.0, 0.5):
        J = np.where(pattern, rng.normal(size=(n, n)), 0.0)
        b = rng.normal(size=n)
        ok, x = solve(J, g, b)
        want = np.linalg.solve(g * np.eye(n) - J, b)
        assert ok
        np.testing.assert_allclose(x, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    # W = gI - J with a zero (0,0) entry whose elimination order puts it first.
    p2 = np.array([[1, 1], [1, 1]], dtype=bool)
    ok, _ = _lu_solver(p2)(np.array([[1.0, 2.0], [3.0, 0.0]]), 1.0, [1.0, 1.0])
    assert not ok


# -- the solver against closed forms and the JAX backend --------------------------------------


@pytest.mark.parametrize("solver", [None, "bdf"])
@pytest.mark.parametrize("which", ["pk1cmt", "pk2cmt"])
def test_native_closed_form_pk(which, solver):
    """The closed-form cases of test_simulate (boluses with ADDL, overlapping infusions,
    oral doses with F and lag), one batched native call, by Rodas4 and by BDF (whose
    saves are interpolated): relative error < 1e-6."""
    names = list(CF_CASES)
    regs = qsp.Regimen.stack([CF_CASES[n][0] for n in names])
    k = len(names)
    if which == "pk1cmt":
        model = pk1cmt(**{p: jnp.full(k, v) for p, v in P1.items()}, F1=jnp.full(k, 0.6), ALAG1=jnp.full(k, 0.75))
        col = 1
    else:
        model = pk2cmt(**{p: jnp.full(k, v) for p, v in P2.items()}, F1=jnp.full(k, 0.6), ALAG1=jnp.full(k, 0.75))
        col = 2
    sol = qsp.simulate(model, regs, jnp.asarray(CF_TS), rtol=1e-10, atol=1e-12, backend="native", solver=solver)
    assert sol.ok.all()
    for i, name in enumerate(names):
        want = CF_CASES[name][col](CF_TS)
        got = np.asarray(sol.outputs["CP"][i])
        nz = np.abs(want) > 1e-12
        rel = np.abs(got[nz] - want[nz]) / np.abs(want[nz])
        assert rel.max() < 1e-6, f"{which}, {solver}, {name}: max relative error {rel.max():.2e}"
        np.testing.assert_allclose(got[~nz], 0.0, atol=1e-12)


def test_single_patient_shapes_and_trough_order():
    """One patient: shapes as the JAX backend's; an observation at a dose time is the
    trough (before the dose) unless obs_after_dose (closed form, after_dose flag)."""
    reg = qsp.Regimen.bolus(amount=100.0, time=0.0, cmt="CENT", ii=12.0, addl=3)
    ts = jnp.array([0.0, 6.0, 12.0, 24.0, 30.0])
    m = pk2cmt(CL=P2["CL"], V1=P2["V1"], Q=P2["Q"], V2=P2["V2"])
    for after in (False, True):
        sol = qsp.simulate(m, reg, ts, rtol=1e-10, atol=1e-12, backend="native", obs_after_dose=after)
        assert sol.states.shape == (5, 3) and sol.outputs["CP"].shape == (5,) and int(sol.status) == 0
        want = cf.two_cmt_bolus(np.asarray(ts), 100.0, cf.dose_times(0, 12, 3), P2["CL"], P2["V1"], P2["Q"],
                                P2["V2"], after_dose=after)
        np.testing.assert_allclose(np.asarray(sol.outputs["CP"]), want, rtol=1e-7, atol=1e-12)


def test_interpolated_saves():
    """exact_save=False: saves from the cubic Hermite dense output, the steps free of
    the save grid: fewer steps on a dense grid (391 against 513 when measured), the
    closed form within 1e-6 of its peak (3.3e-7 measured; 7.2e-8 with exact saves)."""
    reg = qsp.Regimen.bolus(amount=200.0, time=1.0, cmt="DEPOT", ii=24.0, addl=2)
    ts = jnp.linspace(0.0, 72.0, 289)
    m = pk2cmt(**P2, F1=0.6, ALAG1=0.75)
    kw = dict(rtol=1e-6, atol=1e-9, backend="native")
    interp = qsp.simulate(m, reg, ts, exact_save=False, **kw)
    exact = qsp.simulate(m, reg, ts, **kw)
    want = cf.two_cmt_oral(np.asarray(ts), 200.0, cf.dose_times(1, 24, 2), P2["CL"], P2["V1"], P2["Q"], P2["V2"],
                           P2["KA"], F=0.6, lag=0.75)
    assert int(interp.num_steps) < int(exact.num_steps)
    assert np.abs(np.asarray(interp.outputs["CP"]) - want).max() < 1e-6 * want.max()


@pytest.mark.parametrize("solver", [None, "bdf"])
def test_failures_are_flagged_per_patient(solver):
    """An out-of-bounds parameter gives INVALID_PARAMETERS, too few steps
    MAX_STEPS_REACHED, a right-hand side that turns NaN MAX_STEPS_REACHED or
    DT_MIN_REACHED; the other patients are solved as alone."""
    reg = qsp.Regimen.bolus(amount=100.0, time=0.0, cmt="CENT")
    ts = jnp.linspace(0.0, 48.0, 9)
    kw = dict(backend="native", solver=solver)
    pop = pk2cmt(CL=jnp.array([1.0, -1.0, 2.0]))
    sol = qsp.simulate(pop, reg, ts, **kw)
    assert np.asarray(sol.status).tolist() == [qsp.Status.SUCCESS, qsp.Status.INVALID_PARAMETERS, qsp.Status.SUCCESS]
    assert np.isnan(np.asarray(sol.states[1])).all() and np.isfinite(np.asarray(sol.states)[[0, 2]]).all()
    alone = qsp.simulate(pk2cmt(CL=2.0), reg, ts, **kw)
    np.testing.assert_array_equal(np.asarray(sol.states[2]), np.asarray(alone.states))
    short = qsp.simulate(pk2cmt(CL=jnp.array([1.0, 2.0])), reg, ts, max_steps=2, **kw)
    assert (np.asarray(short.status) == qsp.Status.MAX_STEPS_REACHED).all()
    nan = qsp.simulate(pk2cmt(CL=jnp.array([1.0, jnp.inf])), reg, ts, **kw)
    st = np.asarray(nan.status)
    assert st[0] == qsp.Status.SUCCESS and st[1] != qsp.Status.SUCCESS, st
    assert np.isnan(np.asarray(nan.states[1])).all()


def test_threads_and_chunks_do_not_change_results():
    """workers threads and batch_size chunks split patients, never a patient's solve:
    bit-identical results."""
    reg = qsp.Regimen.infusion(amount=50.0, time=1.0, cmt="CENT", duration=2.0, ii=8.0, addl=2)
    ts = jnp.linspace(0.0, 30.0, 16)
    pop = pk2cmt(CL=jnp.linspace(0.5, 3.0, 7), V1=jnp.linspace(5.0, 20.0, 7))
    one = qsp.simulate(pop, reg, ts, backend="native")
    split = qsp.simulate(pop, reg, ts, backend="native", workers=2, batch_size=3)
    np.testing.assert_array_equal(np.asarray(split.states), np.asarray(one.states))
    np.testing.assert_array_equal(np.asarray(split.num_steps), np.asarray(one.num_steps))
    one, split = (qsp.simulate(pop, reg, ts, backend="native", solver="bdf", **kw)
                  for kw in ({}, dict(workers=2, batch_size=3)))
    np.testing.assert_array_equal(np.asarray(split.states), np.asarray(one.states))


def test_native_bad_arguments():
    m = pk2cmt()
    reg = qsp.Regimen.bolus(amount=1.0, time=0.0, cmt="CENT")
    ts = jnp.linspace(0.0, 4.0, 3)
    with pytest.raises(ValueError, match="backend='fast'"):
        qsp.simulate(m, reg, ts, backend="fast")
    with pytest.raises(ValueError, match="solves by Rodas4 or BDF; got solver=Kvaerno5"):
        qsp.simulate(m, reg, ts, backend="native", solver=qsp.default_solver(1e-6, 1e-9))
    with pytest.raises(ValueError, match="solver='lsoda': a name selects a method of backend='native'"):
        qsp.simulate(m, reg, ts, backend="native", solver="lsoda")
    with pytest.raises(ValueError, match="with backend='jax' pass a diffrax solver"):
        qsp.simulate(m, reg, ts, solver="bdf")
    with pytest.raises(ValueError, match="solver='bdf' has no adjoint"):
        jax.grad(lambda cl: qsp.simulate(m.replace(CL=cl), reg, ts, backend="native",
                                         solver="bdf").outputs["CP"][-1])(1.0)
    with pytest.raises(ValueError, match="dt0"):
        qsp.simulate(m, reg, ts, backend="native", dt0=0.1)
    with pytest.raises(ValueError, match="exact_save=True"):
        jax.grad(lambda cl: qsp.simulate(m.replace(CL=cl), reg, ts, backend="native",
                                         exact_save=False).outputs["CP"][-1])(1.0)


def test_missing_compiler_is_explained(monkeypatch):
    from qsp._native import native_function

    monkeypatch.setenv("CC", "no-such-compiler-qsp")
    with pytest.raises(RuntimeError, match="needs a C compiler"):
        # a function no earlier test compiled, so the cache cannot answer
        native_function(lambda x: x * 3.25 + 0.125, (jax.ShapeDtypeStruct((4,), float),))


@pytest.mark.slow
@pytest.mark.parametrize("workload", ["crs", "mapk", "clonal"])
def test_flagship_models_native_against_lsoda(workload):
    """The three flagship workloads of benchmarks/population_suite.py (CRS step-up
    infusions, MAPK four-drug arm, clonal one year of daily doses), 3 patients: the
    native solve at rtol 1e-8, by Rodas4 and by BDF, against scipy's LSODA at rtol 1e-10 /
    atol 1e-12 (an independent solver): every reported output within 1e-5 of its
    largest value."""
    from benchmarks import population_suite as ps

    case = ps.CASES[workload](rtol=1e-8, atol=1e-11)
    p = case.params(3)
    ref, _ = ps.scipy_method(case, "LSODA", rtol=1e-10, atol=1e-12)(p)
    want = case.reported(p, ref)
    for solver in (None, "bdf"):
        sol = qsp.simulate(case.batched(p), case.regimen, case.ts, rtol=1e-8, atol=1e-11, max_steps=65536,
                           backend="native", solver=solver)
        assert sol.ok.all(), np.asarray(sol.status)
        got = case.reported(p, np.asarray(sol.states))
        for j, k in enumerate(case.outputs):
            err = np.abs(got[..., j] - want[..., j]).max() / np.abs(want[..., j]).max()
            assert err <= 1e-5, f"{workload} {solver} {k}: {err:.2e}"
