"""`qsp.simulate(..., workers=k)`: chunks in worker processes give the same numbers as
in this process, and bad input is refused clearly."""

import jax.numpy as jnp
import numpy as np
import pytest

# The whole module is in the slow tier (CI time): ~30 s of worker-process start-up and compiles; the in-process batch path is the same code by default.
pytestmark = pytest.mark.slow

import qsp
from qsp.models import pk2cmt


def _population(n=10):
    rng = np.random.default_rng(3)
    return pk2cmt().replace(CL=jnp.asarray(2.0 * np.exp(0.3 * rng.standard_normal(n))),
                            V1=jnp.asarray(20.0 * np.exp(0.2 * rng.standard_normal(n))))


def test_workers_give_bit_identical_results():
    """10 patients in chunks of 4 (3 chunks, the last padded) in 2 worker processes:
    states, status and step counts equal those of the in-process run bit for bit."""
    pop = _population()
    reg = qsp.Regimen.bolus(100.0, time=[0.0, 12.0, 24.0], cmt="DEPOT")
    ts = jnp.linspace(0.0, 48.0, 25)
    one = qsp.simulate(pop, reg, ts, batch_size=4)
    two = qsp.simulate(pop, reg, ts, batch_size=4, workers=2)
    np.testing.assert_array_equal(np.asarray(two.states), np.asarray(one.states))
    np.testing.assert_array_equal(np.asarray(two.status), np.asarray(one.status))
    np.testing.assert_array_equal(np.asarray(two.num_steps), np.asarray(one.num_steps))
    assert np.asarray(one.states).shape == (10, 25, 3)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_bad_workers_are_refused(bad):
    with pytest.raises(ValueError, match="workers="):
        qsp.simulate(_population(), None, jnp.linspace(0.0, 1.0, 3), workers=bad)


def test_a_model_a_worker_cannot_import_is_refused_with_advice():
    """A model class defined inside a function cannot be sent to another process: the
    error says so and how to fix it, instead of a bare pickling traceback."""
    class Local(qsp.ODEModel):
        k: float = 1.0

        def initial(self):
            return jnp.array([1.0])

        def rhs(self, t, y):
            return -self.k * y

    pop = Local(k=jnp.linspace(0.5, 1.5, 6))
    with pytest.raises(TypeError, match="importable module"):
        qsp.simulate(pop, None, jnp.linspace(0.0, 1.0, 3), batch_size=2, workers=2)


@pytest.mark.slow
def test_crs_trial_in_two_workers_matches_one_process():
    """The CRS trial's chunk loop (`models.tce.trial.simulate_population`, last chunk
    padded with patient 0) and its workers path (one `qsp.simulate(..., batch_size=chunk,
    workers=2)`, padded with the last patient) give the same trajectories bit for bit:
    a patient's solve does not depend on the other patients of its chunk."""
    from qsp.models.tce import population, regimens as R, trial

    pop, _ = population.sample(12, seed=4)
    ts = trial.time_grid(1)
    reg = R.parse("label", 1)
    one, s1 = trial.simulate_population(pop, reg, ts, chunk=5)
    two, s2 = trial.simulate_population(pop, reg, ts, chunk=5, workers=2)
    np.testing.assert_array_equal(s1, s2)
    for k in one:
        np.testing.assert_array_equal(one[k], two[k])
