r"""Digital twins: one calibration per real patient, with the population as the prior.

For patient $i$ with observations $y_{ij}$ of one model output $f$ at times $t_{ij}$
under the patient's own doses, the twin is the maximum a posteriori (MAP) estimate of
its random effects $\eta_i$ (`Population`: $\theta = \mathrm{TV}\,e^{\eta}$ or
$\mathrm{TV} + \eta$, $\eta \sim N(0, \Omega)$):

$$\hat\eta_i = \arg\min_\eta\ \tfrac12 \lVert r_i(\eta) \rVert^2 + \tfrac12 \eta^\top \Omega^{-1} \eta,$$

with residuals $r_{ij} = (y_{ij} - f_{ij})/\sigma$ (`error="additive"`) or
$(\ln y_{ij} - \ln f_{ij})/\sigma$ (`"lognormal"`, i.e. exponential error), $\sigma$
known. Both are exact negative log posteriors up to a constant. The minimisation is
Levenberg-Marquardt on the stacked residual vector $[r_i;\ L^{-1}\eta]$
($LL^\top = \Omega$), with forward-mode Jacobians through `qsp.simulate`; a fixed
number of iterations runs inside one compiled call that is `vmap`ped across patients
(ragged observation times and dose lists are padded and masked).

**Laplace uncertainty.** The posterior of $\eta_i$ is approximated by
$N(\hat\eta_i, (J^\top J)^{-1})$ with $J$ the Jacobian of the stacked residuals at the
MAP: the Gauss-Newton form of the Hessian of the objective (exact for a linear model;
the FOCE-style approximation otherwise). Intervals on the parameters follow from the
transform ($\mathrm{TV}\,e^{\hat\eta \pm z\,se}$ for log-normal parameters).
"""

from __future__ import annotations

import dataclasses
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from qsp import nonmem
from qsp._dosing import Regimen
from qsp._simulate import simulate

from ._sampling import Population

_ERRORS = ("additive", "lognormal")


@dataclasses.dataclass
class Twins:
    """Per-patient MAP estimates with Laplace uncertainty."""

    population: Population
    ids: np.ndarray
    eta: np.ndarray  # (n, d)
    cov: np.ndarray  # (n, d, d) Laplace covariance of eta
    objective: np.ndarray  # (n,) at the MAP
    converged: np.ndarray  # (n,) relative objective change below tolerance and finite
    n_obs: np.ndarray
    covariates: dict | None
    seconds: float

    @property
    def se(self) -> np.ndarray:
        """Standard errors of eta, (n, d)."""
        return np.sqrt(np.diagonal(self.cov, axis1=1, axis2=2))

    @property
    def model(self):
        """The twins as a batched model (a population for `qsp.simulate` / trials)."""
        return self.population.build(jnp.asarray(self.eta), self.covariates)

    def interval(self, level: float = 0.95):
        """(lower, upper) parameter values, each (n, d), from eta +- z se."""
        from statistics import NormalDist

        z = NormalDist().inv_cdf(0.5 + level / 2)
        lo = np.asarray(self.population.values(self.eta - z * self.se, self.covariates))
        hi = np.asarray(self.population.values(self.eta + z * self.se, self.covariates))
        return np.minimum(lo, hi), np.maximum(lo, hi)

    def to_frame(self, level: float = 0.95):
        """Tidy table: one row per (ID, parameter) with estimate, se (of eta), lower, upper."""
        import pandas as pd

        est = np.asarray(self.population.values(self.eta, self.covariates))
        lo, hi = self.interval(level)
        rows = []
        for i, pid in enumerate(self.ids):
            for j, name in enumerate(self.population.names):
                rows.append({"ID": pid, "parameter": name, "estimate": est[i, j], "eta": self.eta[i, j],
                             "se_eta": self.se[i, j], "lower": lo[i, j], "upper": hi[i, j],
                             "converged": bool(self.converged[i])})
        return pd.DataFrame(rows)


@eqx.filter_jit
def _fit_all(model, tv, Linv, is_log, names, reg, ts, after, dv, mask, error, sigma, n_iter, sim_kw):
    is_log = jnp.asarray(is_log)

    def one(tv_i, reg_i, ts_i, after_i, dv_i, m_i):
        def resid(eta):
            vals = jnp.where(is_log, tv_i * jnp.exp(eta), tv_i + eta)
            mdl = model.replace(**{k: vals[j] for j, k in enumerate(names)})
            sol = simulate(mdl, reg_i, ts_i, obs_after_dose=after_i, adjoint="forward", **dict(sim_kw))
            f = sol.outputs[error[1]]
            if error[0] == "lognormal":
                r = (jnp.log(jnp.where(m_i, dv_i, 1.0)) - jnp.log(jnp.maximum(f, 1e-300))) / sigma
            else:
                r = (dv_i - f) / sigma
            r = jnp.where(m_i, r, 0.0)
            return jnp.concatenate([r, Linv @ eta])

        def cost(eta):
            r = resid(eta)
            c = 0.5 * jnp.sum(r * r)
            return jnp.where(jnp.isfinite(c), c, jnp.inf)

        d = Linv.shape[0]

        def step(_, carry):
            eta, mu, c, dc = carry
            r = resid(eta)
            J = jax.jacfwd(resid)(eta)
            J = jnp.where(jnp.isfinite(J), J, 0.0)
            H, g = J.T @ J, J.T @ r
            delta = -jnp.linalg.solve(H + mu * (jnp.diag(jnp.diag(H)) + 1e-9 * jnp.eye(d)), g)
            c_new = cost(eta + delta)
            better = c_new < c
            return (jnp.where(better, eta + delta, eta), jnp.where(better, mu / 3.0, mu * 4.0),
                    jnp.where(better, c_new, c), jnp.where(better, c - c_new, 0.0))

        eta0 = jnp.zeros(d)
        eta, _, c, dc = jax.lax.fori_loop(0, n_iter, step, (eta0, jnp.asarray(1e-3), cost(eta0), jnp.asarray(jnp.inf)))
        J = jax.jacfwd(resid)(eta)
        cov = jnp.linalg.inv(J.T @ J)
        return eta, cov, c, dc

    return jax.vmap(one)(tv, reg, ts, after, dv, mask)


def fit_twins(pop: Population, data, *, output: str, sigma: float, error: str = "additive",
              n_iter: int = 30, tol: float = 1e-8, **simulate_kwargs) -> Twins:
    """One digital twin per ID of a NONMEM-style dataset, fitted in one batched call.

    **Arguments:**

    - `pop`: the `Population` whose distribution is the prior (typical values, Omega,
      covariate model).
    - `data`: a NONMEM-style dataset (CSV path or DataFrame; see `qsp.nonmem`). Dose
      records (EVID 1) give each patient's regimen; observation records (EVID 0,
      MDV 0) give the DV of `output`. Numeric columns other than the NONMEM items are
      covariates (first value per ID), passed to the population's covariate model.
    - `output`: the model output observed in DV.
    - `sigma`: residual error SD (in DV units for `"additive"`, on the log scale for
      `"lognormal"`).
    - `n_iter`: Levenberg-Marquardt iterations (fixed: one compiled loop).
    - `tol`: a twin is `converged` when its last iteration changed the objective by less
      than `tol` times (1 + objective).
    """
    if not isinstance(pop, Population):
        raise TypeError(f"fit_twins expects a qsp.vpop.Population; got {type(pop).__name__}.")
    if error not in _ERRORS:
        raise ValueError(f"fit_twins error={error!r} is not known; expected one of {_ERRORS}.")
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"fit_twins sigma={sigma!r} must be a positive number.")
    known = pop.model.outputs(0.0, jnp.asarray(pop.model.initial(), dtype=float))
    if output not in known:
        raise ValueError(f"fit_twins output={output!r} is not an output of {type(pop.model).__name__}; "
                         f"outputs are {sorted(known)}.")
    t_start = time.perf_counter()
    df = nonmem.read_nonmem(data)
    inds = nonmem.regimens_from_nonmem(df, pop.model)
    dv_all, mdv_all = df["DV"].to_numpy(float), df["MDV"].to_numpy()
    n = len(inds)
    n_obs = np.array([int(np.sum((mdv_all[ind.rows] == 0) & np.isfinite(dv_all[ind.rows]))) for ind in inds])
    if np.any(n_obs == 0):
        raise ValueError(f"fit_twins: ID {inds[int(np.argmin(n_obs))].id} has no observation (EVID 0, MDV 0).")
    if error == "lognormal":
        pos = np.concatenate([dv_all[ind.rows][mdv_all[ind.rows] == 0] for ind in inds])
        if np.any(pos <= 0):
            raise ValueError("fit_twins error='lognormal' needs DV > 0 on every observation; "
                             f"got DV={pos[pos <= 0][0]:g}.")
    m = max(len(ind.ts) for ind in inds)
    ts = np.zeros((n, m))
    dv = np.ones((n, m))
    mask = np.zeros((n, m), bool)
    after = np.zeros((n, m), bool)
    for i, ind in enumerate(inds):
        k = len(ind.ts)
        ts[i, :k], ts[i, k:] = ind.ts, ind.ts[-1]  # pad with the last time (sorted)
        after[i, :k] = ind.obs_after_dose
        v, miss = dv_all[ind.rows], mdv_all[ind.rows] != 0
        mask[i, :k] = ~miss & np.isfinite(v)
        dv[i, :k] = np.where(mask[i, :k], v, 1.0)
    # Covariates: numeric non-NONMEM columns, first value per ID.
    covariates = None
    if pop.covariate_model is not None:
        cols = [c for c in df.columns if c not in nonmem.COLUMNS and np.issubdtype(df[c].dtype, np.number)]
        first = [ind.rows[0] if len(ind.rows) else 0 for ind in inds]
        covariates = {c: df[c].to_numpy(float)[first] for c in cols}
    tv = np.asarray(pop.typical(covariates, n=n))
    reg = Regimen.stack([ind.regimen for ind in inds])
    Linv = np.linalg.inv(pop.chol())
    eta, cov, c, dc = _fit_all(
        pop.model, jnp.asarray(tv), jnp.asarray(Linv), tuple(bool(b) for b in pop.is_log), pop.names, reg,
        jnp.asarray(ts), jnp.asarray(after), jnp.asarray(dv), jnp.asarray(mask), (error, output),
        float(sigma), int(n_iter), tuple(sorted(simulate_kwargs.items())),
    )
    c = np.asarray(c)
    conv = np.isfinite(c) & (np.asarray(dc) <= tol * (1 + np.abs(c)))
    return Twins(population=pop, ids=np.array([ind.id for ind in inds]), eta=np.asarray(eta), cov=np.asarray(cov),
                 objective=c, converged=conv, n_obs=n_obs, covariates=covariates,
                 seconds=time.perf_counter() - t_start)
