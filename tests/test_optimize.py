r"""`qsp.optimize` / `qsp.pareto` on a PK problem with a closed-form optimum.

**Problem** (ours, for the test): pk1cmt, IV bolus `D` into CENT every `tau` hours,
N doses; $k = CL/V$, $r = e^{-k\tau}$. After dose N the peak (just after the last
dose) and the trough (one interval later) are

$$C_{peak} = \frac{D}{V}\frac{1 - r^N}{1 - r}, \qquad C_{trough} = r\,C_{peak}$$

(superposition of N boluses). Maximise the interval `tau` (fewest doses) subject to
$C_{trough} \ge C_t$ (efficacy) and $C_{peak} \le C_{max}$ (toxicity). Since
$C_{peak}/C_{trough} = e^{k\tau}$ exactly, $\tau \le \ln(C_{max}/C_t)/k$ with equality
only when $C_{trough} = C_t$ and $C_{peak} = C_{max}$, so the optimum is unique:

$$\tau^* = \frac{\ln(C_{max}/C_t)}{k}, \qquad
D^* = \frac{V (C_{max} - C_t)}{1 - (C_t/C_{max})^N}.$$

That is: the trough hits its target and the peak/trough ratio sits at the edge of its
window. `pareto` sweeps $C_{max}$ (epsilon-constraint), each level with its own closed
form. Both calls share one batch shape (6 members), hence one compile.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qsp
from benchmarks.optimize_grid_vs_gradient import CMAX, CT, FAMILY, K, N, V, evaluate, grid_run

# The problem (family, evaluate: pk1cmt with CL = 1 L/h, V = 10 L, so k = 0.1 /h; N = 8
# doses; rtol 1e-10) is the benchmark's, so the test and the recorded counts agree.


def tau_star(cmax, ct=CT):
    return np.log(cmax / ct) / K


def dose_star(cmax, ct=CT):
    return V * (cmax - ct) / (1.0 - (ct / cmax) ** N)


@pytest.fixture(scope="module")
def best():
    return qsp.optimize(FAMILY, evaluate, "tau", sense="maximize",
                        constraints={"trough": (CT, None), "peak": (None, CMAX)}, starts=6)


@pytest.fixture(scope="module")
def front():
    return qsp.pareto(FAMILY, evaluate, "tau", "peak", [3.0, 6.0, 10.0], sense="maximize",
                      constraints={"trough": (CT, None)}, starts=2)


def test_closed_form_optimum(best):
    # Tolerance 1e-4 relative (the issue's); the ODE is solved at rtol 1e-10.
    assert best.feasible
    assert best.values["tau"] == pytest.approx(tau_star(CMAX), rel=1e-4)
    assert best.values["dose"] == pytest.approx(dose_star(CMAX), rel=1e-4)
    # Both constraints active at the optimum (exact endpoints).
    assert best.endpoints["trough"] == pytest.approx(CT, rel=1e-4)
    assert best.endpoints["peak"] == pytest.approx(CMAX, rel=1e-4)
    assert best.regimen.n_events == N
    assert best.n_evaluations > 0 and best.n_exact == 6


def test_equality_constraint_same_optimum():
    # "Trough equals its target" as an equality: the same optimum; same batch shape and
    # constraint names as `best`, so the compiled solve is reused.
    r = qsp.optimize(FAMILY, evaluate, "tau", sense="maximize",
                     constraints={"trough": (CT, CT), "peak": (None, CMAX)}, starts=6)
    assert r.feasible
    assert r.values["tau"] == pytest.approx(tau_star(CMAX), rel=1e-4)
    assert r.values["dose"] == pytest.approx(dose_star(CMAX), rel=1e-4)


def test_no_start_beats_the_optimum(best):
    # Invariant: no feasible start may report a larger interval than tau*.
    s = best.starts
    assert np.all(s["objective"][s["feasible"]] <= tau_star(CMAX) * (1 + 1e-6))
    assert s["feasible"].sum() >= 2


def test_grid_search_agrees_with_far_more_simulations(best):
    # 81 x 81 grid over the same family (dose log-spaced, tau linear). Bound on the grid's
    # optimum (ours): at tau the feasible doses span ln(Dmax/Dmin) = ln(CMAX/CT) - k tau in
    # log dose, so a grid dose is feasible wherever that span exceeds the log-dose
    # spacing h_D, i.e. for tau <= tau* - h_D/k; one tau spacing h_t more gives
    # tau* - h_D/k - h_t <= tau_grid <= tau*. The gradient optimum may not be worse.
    n = 81
    grid = grid_run(n)
    h_d, h_t = np.log(200.0) / (n - 1), 46.0 / (n - 1)
    assert tau_star(CMAX) - h_d / K - h_t <= grid["tau"] <= best.values["tau"] * (1 + 1e-9)
    sims = best.n_evaluations + 2 * 6  # with gradient, + objective scale and exact re-check
    assert sims < grid["simulations"] / 4
    assert grid["simulations"] == n * n


def test_pareto_front_closed_form(front):
    assert front.feasible.all()
    np.testing.assert_allclose(front.values["tau"], tau_star(front.levels), rtol=1e-4)
    np.testing.assert_allclose(front.values["dose"], dose_star(front.levels), rtol=1e-4)
    # The front is monotone: a looser toxicity limit allows a longer interval.
    assert np.all(np.diff(front.endpoints["tau"]) > 0)


# -- relaxations ----------------------------------------------------------------------------


def test_relaxations_tend_to_exact_and_have_gradients():
    x = jnp.array([0.5, 0.9, 1.1, 3.0, jnp.nan])
    exact = qsp.fraction_exceeding(x, 1.0)
    assert float(exact) == pytest.approx(3 / 5)  # 1.1, 3.0 and the failed (NaN) member
    assert float(qsp.fraction_exceeding(x, 1.0, failed_exceeds=False)) == pytest.approx(2 / 5)
    # sigma((x - c)/T) -> indicator as T -> 0: at T = 1e-3 every member is >= 100 T from the threshold.
    assert float(qsp.fraction_exceeding(x, 1.0, 1e-3)) == pytest.approx(3 / 5, abs=1e-12)
    # Gradient of the relaxed fraction equals the closed form mean(sigma'(z))/T.
    T = 0.2
    g = jax.grad(lambda c: qsp.fraction_exceeding(x[:4], c, T))(1.0)
    z = (x[:4] - 1.0) / T
    s = jax.nn.sigmoid(z)
    assert float(g) == pytest.approx(float(-jnp.mean(s * (1 - s)) / T), rel=1e-12)
    # soft_max is an upper bound within T log n.
    y = jnp.array([1.0, 2.0, 3.0])
    sm = float(qsp.soft_max(y, 0.1))
    assert 3.0 <= sm <= 3.0 + 0.1 * np.log(3)
    assert float(qsp.soft_max(y)) == 3.0


def test_family_transform_round_trip_and_grid():
    vals = {"dose": 30.0, "tau": 13.0}
    u = FAMILY.unconstrained(vals)
    back = FAMILY.values(jnp.asarray(u))
    assert float(back["dose"]) == pytest.approx(30.0, rel=1e-12)
    assert float(back["tau"]) == pytest.approx(13.0, rel=1e-12)
    g = FAMILY.grid(3)
    np.testing.assert_allclose(np.unique(g["dose"]), [1.0, np.sqrt(200.0), 200.0], rtol=1e-12)
    np.testing.assert_allclose(np.unique(g["tau"]), [2.0, 25.0, 48.0], rtol=1e-12)
    starts = FAMILY.values(jnp.asarray(FAMILY.starts(5, seed=1)))
    assert np.all((starts["tau"] > 2.0) & (starts["tau"] < 48.0))


# -- bad input ------------------------------------------------------------------------------


def test_bad_input_messages():
    with pytest.raises(ValueError, match="Free 'dose': log=True needs lower > 0; got lower=0"):
        qsp.RegimenFamily(FAMILY.build, {"dose": qsp.Free(0.0, 10.0, log=True)})
    with pytest.raises(ValueError, match=r"Free 'tau': bounds \(5, 2\) must be finite with lower < upper"):
        qsp.RegimenFamily(FAMILY.build, {"tau": qsp.Free(5.0, 2.0)})
    with pytest.raises(ValueError, match=r"Free 'tau': init=50 must lie strictly inside \(2, 48\)"):
        qsp.RegimenFamily(FAMILY.build, {"tau": qsp.Free(2.0, 48.0, init=50.0)})
    with pytest.raises(ValueError, match=r"constraints\['peak'\]=4.0; expected \(lower, upper\)"):
        qsp.optimize(FAMILY, evaluate, "tau", constraints={"peak": 4.0})
    with pytest.raises(ValueError, match="sense='max'; expected one of"):
        qsp.optimize(FAMILY, evaluate, "tau", sense="max")
    with pytest.raises(ValueError, match="trade_off_sense='below'"):
        qsp.pareto(FAMILY, evaluate, "tau", "peak", [3.0], trade_off_sense="below")
    with pytest.raises(TypeError, match="family must be a qsp.RegimenFamily"):
        qsp.optimize(lambda v: None, evaluate, "tau")
