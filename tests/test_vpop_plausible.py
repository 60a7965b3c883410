"""Plausible-patient generation (sample, then move with gradients of the score)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# The whole module is in the slow tier (CI time): a ~40 s acceptance-sampling fixture; test_vpop_sampling.py covers population sampling by default.
pytestmark = pytest.mark.slow

import qsp
from qsp.models import pk1cmt
from qsp.vpop import Population, plausibility_score, plausible_patients

POP = Population(pk1cmt(CL=1.0, V=10.0), [0.09, 0.09], ("CL", "V"))
TS = jnp.array([2.0, 8.0])
RANGES = {"CP": ([5.0, 1.5], [6.0, 2.5])}  # narrow window: ~0.5% of the prior is plausible
DOSE = qsp.Regimen.bolus(100.0, 0.0, "CENT")


def closed_form(cl, v, t):
    """IV bolus, one compartment: C(t) = D/V exp(-CL/V t)."""
    return 100.0 / v[:, None] * np.exp(-cl[:, None] / v[:, None] * np.asarray(t))


@pytest.fixture(scope="module")
def result():
    return plausible_patients(POP, jax.random.key(0), 100, ts=TS, ranges=RANGES, regimen=DOSE, batch=64)


def test_score_hand_example():
    # range [0, 2]: m = 1, h = 1; y = 3 -> z = 2 -> 3; y = 1.5 -> 0; y = -1 -> z = -2 -> 3
    s = plausibility_score({"y": jnp.array([[3.0, 1.5, -1.0]])}, {"y": (0.0, 2.0)})
    assert float(s[0]) == pytest.approx(6.0)
    assert float(plausibility_score({"y": jnp.array([[jnp.nan]])}, {"y": (0.0, 2.0)})[0]) == np.inf


def test_every_accepted_patient_is_plausible(result):
    assert result.n == 100 and result.eta.shape == (100, 2)
    m = result.model
    cl, v = np.asarray(m.CL), np.asarray(m.V)
    c = closed_form(cl, v, TS)  # independent of the solver
    lo, hi = np.asarray(RANGES["CP"][0]), np.asarray(RANGES["CP"][1])
    assert np.all((c >= lo - 1e-5) & (c <= hi + 1e-5))
    np.testing.assert_allclose(result.outputs["CP"], c, rtol=1e-5)
    assert np.all((result.outputs["CP"] >= lo) & (result.outputs["CP"] <= hi))  # strict: score exactly 0


def test_moving_costs_far_fewer_simulations_than_rejection(result):
    """Rejection sampling from the prior needs 1/p simulations per plausible patient, with
    p estimated from 10^6 closed-form draws; moving must be at least 10x cheaper."""
    rng = np.random.default_rng(0)
    eta = rng.normal(0, 0.3, size=(10**6, 2))
    c = closed_form(np.exp(eta[:, 0]), 10 * np.exp(eta[:, 1]), TS)
    lo, hi = np.asarray(RANGES["CP"][0]), np.asarray(RANGES["CP"][1])
    p = np.mean(np.all((c >= lo) & (c <= hi), axis=1))
    assert 0.002 < p < 0.01
    assert result.simulations_per_accepted < 0.1 / p
    assert result.n_simulations == result.n_rounds * 64
    assert np.any(result.moves > 0)


def test_reproducible_and_cached(result):
    again = plausible_patients(POP, jax.random.key(0), 100, ts=TS, ranges=RANGES, regimen=DOSE, batch=64)
    np.testing.assert_array_equal(again.eta, result.eta)


def test_bad_input():
    with pytest.raises(ValueError, match=r"ranges\['CP'\]: lower=.* must be below upper"):
        plausible_patients(POP, jax.random.key(0), 10, ts=TS, ranges={"CP": (2.0, 1.0)}, regimen=DOSE)
    with pytest.raises(ValueError, match=r"ranges\['CP'\]=3.0; expected a pair"):
        plausible_patients(POP, jax.random.key(0), 10, ts=TS, ranges={"CP": 3.0}, regimen=DOSE)
    with pytest.raises(ValueError, match="n=0 must be a positive integer"):
        plausible_patients(POP, jax.random.key(0), 0, ts=TS, ranges=RANGES, regimen=DOSE)
