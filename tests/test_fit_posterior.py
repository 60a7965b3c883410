"""Posterior sampling by plain HMC (`method="hmc"`; NUTS: tests/test_fit_nuts.py).

Model: y = A exp(-k t) with known Gaussian noise (sigma 0.05), flat priors on A, k > 0.
Reference: the posterior mean and SD by 2-D quadrature on a 401 x 401 grid spanning
+/-7 Laplace SDs (an independent computation, not a long run of the same sampler).
Tolerances: Monte Carlo error of 4 chains x 1500 draws (ESS > 1000 asserted) is about
SD / sqrt(1000) ~ 0.03 SD, so means within 0.1 SD and SDs within 8% relative; R-hat
(rank-normalised, arviz) below 1.01.
"""

from __future__ import annotations

import pytest
import arviz as az
import jax.numpy as jnp
import numpy as np
import pandas as pd

import qsp
from qsp._posterior import sample


class Decay(qsp.AlgebraicModel):
    A: float = qsp.param(1.0, bounds=(0.0, float("inf")))
    k: float = qsp.param(0.5, bounds=(0.0, float("inf")))

    def outputs(self, t):
        return {"y": self.A * jnp.exp(-self.k * t)}


# Slow tier (CI time): ~31 s of HMC compile and sampling.
@pytest.mark.slow
def test_hmc_posterior_matches_quadrature():
    rng = np.random.default_rng(4)
    t = np.array([0.5, 1.0, 2.0, 3.0, 5.0, 8.0])
    sigma = 0.05
    y = 1.3 * np.exp(-0.4 * t) + rng.normal(0, sigma, t.size)
    meas = pd.DataFrame(dict(observableId="y", simulationConditionId="c", time=t, measurement=y,
                             noiseParameters=sigma))
    res = qsp.fit(Decay(), meas, free=["A", "k"])
    idata = sample(res, method="hmc", draws=1500, warmup=500, chains=4, seed=0)

    # Quadrature reference on the natural scale (flat prior).
    a0, k0, sa, sk = res.estimates["A"], res.estimates["k"], res.se["A"], res.se["k"]
    A = np.linspace(max(a0 - 7 * sa, 1e-9), a0 + 7 * sa, 401)
    K = np.linspace(max(k0 - 7 * sk, 1e-9), k0 + 7 * sk, 401)
    AA, KK = np.meshgrid(A, K, indexing="ij")
    pred = AA[..., None] * np.exp(-KK[..., None] * t)
    logp = -0.5 * np.sum(((y - pred) / sigma) ** 2, axis=-1)
    w = np.exp(logp - logp.max())
    w /= w.sum()
    ref = {"A": AA, "k": KK}
    summary = az.summary(idata, kind="all")
    for name in ("A", "k"):
        m = float(np.sum(w * ref[name]))
        sd = float(np.sqrt(np.sum(w * (ref[name] - m) ** 2)))
        draws = idata.posterior[name].values.ravel()
        assert abs(draws.mean() - m) < 0.1 * sd, (name, draws.mean(), m, sd)
        assert abs(draws.std() - sd) < 0.08 * sd, (name, draws.std(), sd)
        assert summary.loc[name, "r_hat"] < 1.01
        assert summary.loc[name, "ess_bulk"] > 1000
    assert float(idata.sample_stats["diverging"].sum()) == 0
