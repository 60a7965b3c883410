r"""Profile likelihood: likelihood-based confidence intervals for chosen parameters.

The profile of parameter $\theta_k$ is
$\mathrm{PL}(c) = \min_{\theta:\ \theta_k = c} \mathrm{NLL}(\theta)$, and its
$1-\alpha$ interval is $\{c : 2(\mathrm{PL}(c) - \mathrm{NLL}(\hat\theta)) \le
\chi^2_{1,1-\alpha}\}$ (Venzon & Moolgavkar 1988; Raue et al. 2009, Bioinformatics
25:1923). Unlike the Hessian (Wald) interval it follows the likelihood's shape:
asymmetric for a skewed likelihood, open (infinite on one side) for a practically
non-identifiable parameter.

All grid points of one parameter are re-optimised in **one vmapped call**, each
starting from the estimate. The interval ends are found by interpolating a parabola
through the three grid points nearest each crossing (exact for a quadratic profile).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._fit import FitResult, _make_solver

CHI2_1 = {0.95: 3.841458820694124, 0.99: 6.634896601021214, 0.9: 2.705543454095404}


class _Restricted:
    """The problem with free parameter `k` held at unconstrained value `uk`."""

    def __init__(self, pb, k, uk):
        self.pb, self.k, self.uk = pb, k, uk
        keep = np.arange(pb.n_free) != k
        self.keep = keep
        self.model, self.data = pb.model, pb.data
        self.lo, self.hi, self.code = pb.lo[keep], pb.hi[keep], pb.code[keep]
        ps = pb.profiled_sigma
        self.profiled_sigma = None if ps is None or ps == k else ps - int(ps > k)

    def full(self, u):
        return jnp.concatenate([u[: self.k], jnp.reshape(self.uk, (1,)), u[self.k:]])

    def residuals(self, u, adjoint="forward"):
        return self.pb.residuals(self.full(u), adjoint)

    def nll(self, u, adjoint="forward"):
        return self.pb.nll(self.full(u), adjoint)

    def natural(self, u):
        return self.pb.natural(self.full(u))[self.keep]


@dataclasses.dataclass
class Profile:
    """A profile: `grid` (value, nll, delta = 2 (nll - nll_min)), the interval `ci`
    (`-inf`/`inf` where the profile never crosses the threshold: open) and `wald`."""

    name: str
    grid: pd.DataFrame
    ci: tuple
    wald: tuple
    threshold: float

    @property
    def open(self) -> tuple[bool, bool]:
        return (bool(np.isinf(self.ci[0])), bool(np.isinf(self.ci[1])))


def _crossing(x, d, thr, i, j):
    """Where the profile crosses `thr` between grid points i and j (j = i +/- 1)."""
    lo_, hi_ = sorted((x[i], x[j]))
    idx = sorted({i, j, j + (j - i)} if 0 <= j + (j - i) < len(x) else {i, j, i - (j - i)})
    if len(idx) == 3:
        c = np.polyfit(x[idx], d[idx] - thr, 2)
        roots = np.roots(c)
        roots = roots[np.isreal(roots)].real
        roots = roots[(roots >= lo_ - 1e-12 * abs(lo_)) & (roots <= hi_ + 1e-12 * abs(hi_))]
        if len(roots):
            return float(roots[0])
    return float(x[i] + (thr - d[i]) * (x[j] - x[i]) / (d[j] - d[i]))


def profile(result: FitResult, names=None, *, n_points: int = 21, span=None, level: float = 0.95,
            max_steps: int = 1000, rtol=None, atol=None) -> dict[str, Profile]:
    """Profile likelihoods of `names` (default: all free parameters) of a fit.

    **Arguments:**

    - `n_points`: grid points per parameter (odd: the estimate is the centre one).
    - `span`: half-width of the grid on the parameter's estimation scale (log scale
      for positive parameters); default 4 standard errors there, clipped to
      [0.05, 8] (so at most a factor e^8 either side).
    - `level`: 0.9, 0.95 or 0.99.

    **Returns:** `{name: Profile}`.
    """
    pb = result.problem
    names = list(result.free if names is None else ([names] if isinstance(names, str) else names))
    for n in names:
        if n not in result.free:
            raise ValueError(f"cannot profile {n!r}: not a free parameter of the fit ({result.free}).")
    if level not in CHI2_1:
        raise ValueError(f"level={level}; expected one of {sorted(CHI2_1)}.")
    if n_points < 5 or n_points % 2 == 0:
        raise ValueError(f"n_points={n_points}; expected an odd number >= 5.")
    thr = CHI2_1[level]
    ode = len(getattr(pb.model, "states", ())) > 0
    rtol = rtol if rtol is not None else (1e-7 if ode else 1e-10)
    atol = atol if atol is not None else (1e-7 if ode else 1e-10)
    u_hat = jnp.asarray(result.u)
    D = np.asarray(jnp.diag(jax.jacfwd(pb.natural)(u_hat)))
    out = {}
    for name in names:
        k = result.free.index(name)
        se_u = result.se[name] / abs(D[k]) if D[k] != 0 else np.nan
        half = float(span) if span is not None else float(np.clip(4 * se_u, 0.05, 8.0) if np.isfinite(se_u) else 8.0)
        grid_u = np.asarray(u_hat[k]) + np.linspace(-half, half, n_points)
        u_rest = jnp.delete(u_hat, k)

        def solve(uk, k=k):
            restricted = _Restricted(pb, k, uk)
            solve_one = _make_solver(restricted, result.optimizer, rtol, atol, max_steps, 1e-2)
            u, f, ok, steps = solve_one(u_rest)
            return f, ok

        F, OK = jax.jit(jax.vmap(solve))(jnp.asarray(grid_u))
        F = np.asarray(F)
        values = np.array([float(pb.natural(u_hat.at[k].set(g))[k]) for g in grid_u])
        nll_min = min(result.nll, float(np.nanmin(F)))
        delta = 2 * (F - nll_min)
        c = n_points // 2
        lo = hi = None
        for i in range(c - 1, -1, -1):
            if delta[i] > thr:
                lo = _crossing(values, delta, thr, i, i + 1)
                break
        for j in range(c + 1, n_points):
            if delta[j] > thr:
                hi = _crossing(values, delta, thr, j, j - 1)
                break
        est, se = result.estimates[name], result.se[name]
        z = float(np.sqrt(thr))
        out[name] = Profile(
            name=name,
            grid=pd.DataFrame(dict(value=values, nll=F, delta=delta, converged=np.asarray(OK, bool))),
            ci=(-np.inf if lo is None else lo, np.inf if hi is None else hi),
            wald=(est - z * se, est + z * se),
            threshold=thr,
        )
    return out
