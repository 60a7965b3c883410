r"""Population distributions of model parameters, and sampling virtual patients from them.

A `Population` describes how parameters vary between patients, in the NONMEM way: each
varied parameter $\theta_j$ has a typical value $\mathrm{TV}_j$ (optionally a function of
covariates, e.g. $\mathrm{TV}_{CL} = CL\,(WT/70)^{0.75}$) and a random effect $\eta_j$,

$$\theta_j = \mathrm{TV}_j\, e^{\eta_j} \ \text{(log-normal)} \qquad\text{or}\qquad
\theta_j = \mathrm{TV}_j + \eta_j \ \text{(normal)}, \qquad \eta \sim N(0, \Omega).$$

$\Omega$ carries the between-patient variances and correlations (on the log scale for
log-normal parameters). The same object is the prior of a digital twin
(`qsp.vpop.fit_twins`) and the search space of plausible-patient generation
(`qsp.vpop.plausible_patients`), so all three work on $\eta$.

A population of `n` patients is returned as the model with parameter leaves of shape
`(n,)`: exactly what `qsp.simulate` takes as a population.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from qsp._model import ODEModel
from qsp._params import parameter_info

_DISTS = ("lognormal", "normal")


@dataclasses.dataclass(frozen=True, eq=False)
class Population:
    """Between-patient variability of some parameters of `model`.

    **Arguments:**

    - `model`: the typical patient (an unbatched `qsp.ODEModel`); its current values of
      the varied parameters are the typical values (e.g. a fit's estimates).
    - `omega`: covariance matrix of the random effects $\\eta$, shape `(d, d)`, or a
      length-`d` vector of variances (no correlation). For a log-normal parameter
      $\\omega^2$ is the variance of $\\log\\theta$ (CV $\\approx \\omega$ when small).
    - `names`: the `d` varied parameters, in the order of `omega`'s rows.
    - `dist`: `"lognormal"` (default) or `"normal"`, for all, or a dict by name.
    - `covariate_model`: optional `f(typical, covariates) -> dict` returning individual
      typical values; `typical` is a dict of the model's typical values of `names`,
      `covariates` a dict of arrays of shape `(n,)`. Example:
      `lambda tv, c: {"CL": tv["CL"] * (c["WT"] / 70.0) ** 0.75}`. Parameters it does
      not return keep their typical value.
    """

    model: ODEModel
    omega: Any
    names: tuple
    dist: Any = "lognormal"
    covariate_model: Callable | None = None

    def __post_init__(self):
        if not isinstance(self.model, ODEModel):
            raise TypeError(f"Population model must be a qsp.ODEModel; got {type(self.model).__name__}.")
        names = tuple(self.names)
        if not names:
            raise ValueError("Population names=() is empty; give the parameters that vary.")
        info = parameter_info(self.model)
        for n in names:
            if n not in info:
                raise ValueError(
                    f"Population names: {type(self.model).__name__} has no parameter {n!r}; "
                    f"known parameters: {', '.join(info)}."
                )
            if np.ndim(getattr(self.model, n)) != 0:
                raise ValueError(
                    f"Population names: parameter {n!r} has shape {np.shape(getattr(self.model, n))}; "
                    "expected the unbatched typical patient (scalar parameter values)."
                )
        if len(set(names)) != len(names):
            raise ValueError(f"Population names={names} has duplicates.")
        d = len(names)
        om = np.asarray(self.omega, dtype=float)
        if om.ndim == 1:
            om = np.diag(om)
        if om.shape != (d, d):
            raise ValueError(
                f"Population omega has shape {np.shape(self.omega)}; expected ({d}, {d}) "
                f"(or ({d},) variances) for names={names}."
            )
        if not np.all(np.isfinite(om)):
            raise ValueError("Population omega contains NaN or infinite entries; expected finite numbers.")
        if not np.allclose(om, om.T, rtol=1e-10, atol=1e-12):
            raise ValueError("Population omega is not symmetric; expected a covariance matrix.")
        eig = np.linalg.eigvalsh(om)
        if eig.min() < -1e-10 * max(1.0, eig.max()):
            raise ValueError(
                f"Population omega is not positive semi-definite (smallest eigenvalue {eig.min():.3g}); "
                "expected a covariance matrix."
            )
        dist = self.dist
        if isinstance(dist, str):
            dist = {n: dist for n in names}
        dist = dict(dist)
        for n in names:
            dist.setdefault(n, "lognormal")
        for n, k in dist.items():
            if n not in names:
                raise ValueError(f"Population dist names {n!r}, which is not in names={names}.")
            if k not in _DISTS:
                raise ValueError(f"Population dist[{n!r}]={k!r} is not known; expected one of {_DISTS}.")
            if k == "lognormal" and not float(getattr(self.model, n)) > 0:
                raise ValueError(
                    f"Population: log-normal parameter {n!r} has typical value "
                    f"{float(getattr(self.model, n)):g}; expected a positive number."
                )
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "omega", om)
        object.__setattr__(self, "dist", dist)

    @classmethod
    def from_fit(cls, fit, names: Sequence[str] | None = None, dist="lognormal") -> "Population":
        r"""The estimation uncertainty of a `qsp.fit` result as a population: typical
        values = the estimates (`fit.model`), omega = their covariance (`fit.cov`, from
        the Hessian). For log-normal parameters the covariance of $\log\theta$ is taken
        by the delta method, $\Omega_{ij} = C_{ij} / (\hat\theta_i \hat\theta_j)$.
        `names` defaults to the fit's free model parameters (error parameters such as
        `sigma_CP` are left out)."""
        free = list(fit.free)
        model = fit.model
        known = set(model.parameters())
        names = tuple(n for n in free if n in known) if names is None else tuple(names)
        missing = [n for n in names if n not in free]
        if missing:
            raise ValueError(f"Population.from_fit: {missing[0]!r} was not estimated; free parameters: {free}.")
        if not getattr(fit, "hessian_ok", True):
            raise ValueError("Population.from_fit: the fit's Hessian is not positive definite, so it has no "
                             "covariance to sample from.")
        idx = [free.index(n) for n in names]
        C = np.asarray(fit.cov, dtype=float)[np.ix_(idx, idx)]
        dists = {n: dist for n in names} if isinstance(dist, str) else dict(dist)
        scale = np.array([float(getattr(model, n)) if dists.get(n, "lognormal") == "lognormal" else 1.0
                          for n in names])
        return cls(model, C / np.outer(scale, scale), names, dist)

    # -- the map eta -> parameters --------------------------------------------------------

    @property
    def d(self) -> int:
        return len(self.names)

    @property
    def is_log(self) -> np.ndarray:
        """Boolean per varied parameter: log-normal?"""
        return np.asarray([self.dist[n] == "lognormal" for n in self.names])

    def chol(self) -> np.ndarray:
        """Lower Cholesky factor L of omega (L L^T = omega; tiny jitter if singular)."""
        jitter = 0.0 if np.linalg.eigvalsh(self.omega).min() > 0 else 1e-12 * max(1.0, np.trace(self.omega))
        return np.linalg.cholesky(self.omega + jitter * np.eye(self.d))

    def typical(self, covariates: Mapping[str, Any] | None = None, n: int | None = None):
        """Individual typical values, shape `(n, d)` (or `(d,)` without covariates and n)."""
        tv = {k: jnp.asarray(getattr(self.model, k), dtype=float) for k in self.names}
        if covariates is not None:
            if self.covariate_model is None:
                raise ValueError("covariates were given but the Population has no covariate_model.")
            cov = {k: jnp.asarray(v, dtype=float) for k, v in dict(covariates).items()}
            new = dict(self.covariate_model(dict(tv), cov))
            unknown = [k for k in new if k not in self.names]
            if unknown:
                raise ValueError(
                    f"covariate_model returned {unknown[0]!r}, which is not a varied parameter "
                    f"(names={self.names})."
                )
            tv.update(new)
        out = jnp.stack(jnp.broadcast_arrays(*[tv[k] for k in self.names]), axis=-1)
        if n is not None and out.ndim == 1:
            out = jnp.broadcast_to(out, (n, self.d))
        return out

    def values(self, eta, covariates=None):
        """Parameter values `(n, d)` (or `(d,)`) for random effects `eta`."""
        eta = jnp.asarray(eta, dtype=float)
        tv = self.typical(covariates)
        return jnp.where(jnp.asarray(self.is_log), tv * jnp.exp(eta), tv + eta)

    def eta_of(self, values, covariates=None):
        """Inverse of `values`: the random effects that give parameter `values`."""
        values = jnp.asarray(values, dtype=float)
        tv = self.typical(covariates)
        safe = jnp.where(jnp.asarray(self.is_log), values / tv, 1.0)
        return jnp.where(jnp.asarray(self.is_log), jnp.log(safe), values - tv)

    def build(self, eta, covariates=None) -> ODEModel:
        """The model with the varied parameters set from `eta` (batched if `eta` is)."""
        vals = self.values(eta, covariates)
        return self.model.replace(**{k: vals[..., j] for j, k in enumerate(self.names)})

    def log_prior(self, eta):
        """log N(eta; 0, omega) up to a constant (sum over the last axis)."""
        L = jnp.asarray(self.chol())
        z = jax.scipy.linalg.solve_triangular(L, jnp.asarray(eta, dtype=float).T, lower=True).T
        return -0.5 * jnp.sum(z * z, axis=-1)

    # -- sampling ---------------------------------------------------------------------------

    def sample_eta(self, key, n: int):
        """`n` draws of eta ~ N(0, omega), shape `(n, d)`."""
        n = _check_n(n)
        z = jax.random.normal(key, (n, self.d), dtype=float)
        return z @ jnp.asarray(self.chol()).T

    def sample(self, key, n: int, covariates=None) -> ODEModel:
        """`n` virtual patients: the model with parameter leaves of shape `(n,)`."""
        return self.build(self.sample_eta(key, n), _check_cov(covariates, n))


def sample(model: ODEModel, key, n: int, *, omega, names: Sequence[str], dist="lognormal",
           covariates=None, covariate_model=None) -> ODEModel:
    """`n` virtual patients drawn around `model` (see `Population` for the arguments).

    !!! example
        ```python
        pop = qsp.vpop.sample(pk1cmt(CL=2.0, V=20.0), jax.random.key(0), 1000,
                              omega=[[0.09, 0.03], [0.03, 0.04]], names=("CL", "V"))
        sol = qsp.simulate(pop, regimen, ts)     # 1000 trajectories
        ```
    """
    pop = Population(model, omega, tuple(names), dist, covariate_model)
    return pop.sample(key, n, covariates)


def resample_covariates(table, key, n: int) -> dict:
    """Bootstrap `n` rows of an observed covariate table (a pandas DataFrame or a dict of
    equal-length arrays), keeping each patient's covariates together (their correlation
    is preserved). Returns a dict of arrays of shape `(n,)`."""
    cols = {k: np.asarray(v) for k, v in (table.items() if hasattr(table, "items") else table)}
    lengths = {len(v) for v in cols.values()}
    if len(lengths) != 1:
        raise ValueError(f"resample_covariates: columns have different lengths {sorted(lengths)}.")
    m = lengths.pop()
    if m == 0:
        raise ValueError("resample_covariates: the covariate table is empty.")
    idx = np.asarray(jax.random.randint(key, (_check_n(n),), 0, m))
    return {k: v[idx] for k, v in cols.items()}


def _check_n(n) -> int:
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n={n!r} must be a positive integer number of patients.")
    return int(n)


def _check_cov(covariates, n):
    if covariates is None:
        return None
    cov = dict(covariates)
    for k, v in cov.items():
        if np.shape(v) != (n,):
            raise ValueError(f"covariate {k!r} has shape {np.shape(v)}; expected ({n},), one value per patient.")
    return cov
