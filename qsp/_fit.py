r"""`qsp.fit`: gradient-based maximum likelihood with multi-start and Hessian uncertainty.

The objective is the negative log-likelihood of `qsp._likelihood` over the free
parameters on their unconstrained scale $u$ ($\theta = T(u)$ within bounds). Every
start is optimised inside **one compiled, vmapped call** (`jax.vmap` over starts):
Levenberg-Marquardt when the likelihood is a sum of squares, else BFGS (both
optimistix; BFGS with a dogleg trust region for ODE models); Adam and L-BFGS (optax)
on request.

Standard errors:

- Additive error with one unknown variance (nonlinear least squares): the NLS
  convention of R's `nls` and NIST StRD, $\mathrm{Cov}(\hat\theta) = s^2 (J^\top W J)^{-1}$,
  $s^2 = \mathrm{RSS}/(n - p)$, with $J = \partial f/\partial\theta$ at the estimate.
- Otherwise: the inverse observed Fisher information (Hessian of the NLL) on the
  unconstrained scale, mapped to $\theta$ by the delta method,
  $\mathrm{Cov}(\hat\theta) = D H_u^{-1} D$, $D = \mathrm{diag}(\partial\theta/\partial u)$.

Wald 95% intervals are $\hat\theta \pm 1.96\,\mathrm{SE}$; `qsp.profile` gives
likelihood-based ones.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time as _time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._experiment import compile_dataset, states_allowed
from ._likelihood import Problem
from ._optimize import TrustBFGS as TrustBFGS, _fwd_grad as _fwd_grad, _make_solver, latin_hypercube
from ._problem import build_problem

OPTIMIZERS = ("auto", "lm", "bfgs", "adam", "lbfgs")
Z95 = 1.959963984540054  # standard normal 97.5% quantile


@dataclasses.dataclass
class FitResult:
    """What `qsp.fit` returns.

    - `estimates`, `se`: dicts by parameter name (model, experiment-specific and error
      parameters); `ci`: Wald 95% intervals `(lower, upper)`.
    - `nll`: the minimised negative log-likelihood (plus negative log prior, if any).
    - `model`: the model with its free parameters set to the estimates.
    - `converged`: whether the best start met the optimizer's tolerances;
      `n_at_best`: how many starts reached the best optimum (NLL within `1e-6`
      relative + `1e-6` absolute); `starts`: one row per start.
    - `cov`, `corr`: covariance and correlation of the free parameters (ordered as
      `free`), NaN where the Hessian is not positive definite (`hessian_ok`).
    - `problem`: the compiled estimation problem (for `qsp.profile`, diagnostics).
    """

    estimates: dict
    se: dict
    ci: dict
    nll: float
    model: Any
    converged: bool
    n_at_best: int
    starts: pd.DataFrame = dataclasses.field(repr=False)
    cov: np.ndarray = dataclasses.field(repr=False)
    corr: np.ndarray = dataclasses.field(repr=False)
    free: list
    hessian_ok: bool
    optimizer: str
    problem: Problem = dataclasses.field(repr=False)
    u: np.ndarray = dataclasses.field(repr=False)
    seconds: float

    @property
    def n_obs(self) -> int:
        return self.problem.data.n

    @property
    def aic(self) -> float:
        return 2 * self.nll + 2 * len(self.free)

    @property
    def bic(self) -> float:
        return 2 * self.nll + math.log(self.n_obs) * len(self.free)

    def summary(self) -> pd.DataFrame:
        """Estimates with SE, relative SE and Wald 95% CI, one row per free parameter."""
        rows = []
        for p in self.free:
            est, se = self.estimates[p], self.se[p]
            rows.append(dict(parameter=p, estimate=est, se=se,
                             rse_percent=100 * se / abs(est) if est else np.nan,
                             ci_lower=self.ci[p][0], ci_upper=self.ci[p][1]))
        return pd.DataFrame(rows)

    def predictions(self) -> pd.DataFrame:
        """The measurement table with `prediction`, `sd`, residual and weighted residual."""
        pb = self.problem
        theta = jnp.asarray(pb.natural(self.u))
        pred = np.asarray(pb.predictions(theta))
        sd = np.asarray(row_sd(pb, theta, pred))
        out = pb.data.frame.drop(columns=["_cond", "_tidx", "_censored"]).copy()
        out["censored"] = pb.data.censored
        out["prediction"] = pred
        out["sd"] = sd
        lognormal = np.zeros(pb.data.n, bool)
        for kind, cens, rows, a, b in pb.groups:
            lognormal[rows] = kind == "lognormal"
        y = pb.data.y
        res = np.where(lognormal, np.log(y) - np.log(np.maximum(pred, 1e-300)), y - pred)
        out["residual"] = y - pred
        out["weighted_residual"] = res / sd
        return out


def row_sd(pb: Problem, theta, pred):
    """SD of each row at `theta` (on the log scale for log-normal rows)."""
    V = pb.values(theta)
    sd = jnp.zeros(pb.data.n)
    for kind, cens, rows, a, b in pb.groups:
        fa, fb, f = V[a], V[b], pred[rows]
        s = {"additive": fa, "lognormal": fa, "proportional": fb * jnp.abs(f),
             "combined": jnp.sqrt(fa**2 + (fb * f) ** 2)}[kind]
        sd = sd.at[rows].set(s / np.sqrt(pb.data.weight[rows]))
    return sd


# -- uncertainty -----------------------------------------------------------------------------


def covariance(pb: Problem, u, method: str):
    """(cov, ok) of the free parameters on the natural scale at `u`."""
    theta = pb.natural(jnp.asarray(u))
    p = pb.n_free
    if method == "lm" and pb.profiled_sigma is not None:
        k = pb.profiled_sigma
        keep = [j for j in range(p) if j != k]
        n = pb.data.n

        def f_struct(ts):
            return pb.residuals_theta(theta.at[np.array(keep)].set(ts))[:n]

        J = -np.asarray(jax.jacfwd(f_struct)(theta[np.array(keep)]))  # residual = sqrt(w)(y - f)
        r = np.asarray(pb.residuals_theta(theta))[:n]
        s2 = float(r @ r) / (n - len(keep))
        cov = np.full((p, p), 0.0)
        try:
            cov_s = s2 * np.linalg.inv(J.T @ J)
            ok = bool(np.all(np.linalg.eigvalsh(J.T @ J) > 0))
        except np.linalg.LinAlgError:
            cov_s, ok = np.full((len(keep), len(keep)), np.nan), False
        cov[np.ix_(keep, keep)] = cov_s
        cov[k, k] = float(theta[k]) ** 2 / (2 * n)  # Fisher information of sigma: 2n / sigma^2
        return cov, ok
    f = lambda uu: pb.nll(uu, adjoint="forward")
    H = np.asarray(jax.jacfwd(jax.jacfwd(f))(jnp.asarray(u)))
    H = 0.5 * (H + H.T)
    D = np.asarray(jnp.diag(jax.jacfwd(pb.natural)(jnp.asarray(u))))
    try:
        ok = bool(np.all(np.isfinite(H))) and bool(np.all(np.linalg.eigvalsh(H) > 0))
        cov_u = np.linalg.inv(H) if ok else np.full((p, p), np.nan)
    except np.linalg.LinAlgError:
        cov_u, ok = np.full((p, p), np.nan), False
    return D[:, None] * cov_u * D[None, :], ok


# -- the entry point -----------------------------------------------------------------------


def _header(path) -> pd.DataFrame:
    """An empty frame with the column names of a CSV/TSV file (comment lines skipped)."""
    with open(path) as fh:
        for line in fh:
            if line.strip() and not line.lstrip().startswith("#"):
                sep = "," if "," in line else ("\t" if "\t" in line else None)
                return pd.DataFrame(columns=[c.strip() for c in line.split(sep)])
    return pd.DataFrame()


def prepare(model, measurements, conditions=None, *, free, error="additive", starts=1, regimens=None,
            fixed=None, initial=None, bounds=None, priors=None, optimizer="auto", seed=0,
            start_bounds=None, start_spread=10.0, rtol=None, atol=None, max_steps=1000,
            learning_rate=1e-2, simulate_kwargs=None, preequilibration_time=1e3, observable=None):
    """Validate and compile a fit without running it: `(problem, method, solve_one, U0)`,
    where `solve_one(u0) -> (u, nll, converged, steps)` optimises one start and `U0`
    holds the starts (unconstrained). `fit` runs `jax.jit(jax.vmap(solve_one))(U0)`;
    benchmarks time the same function sequentially."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r} is not known; expected one of {OPTIMIZERS}.")
    if not isinstance(starts, (int, np.integer)) or starts < 1:
        raise ValueError(f"starts={starts!r}; expected an integer >= 1.")
    from ._algebraic import AlgebraicModel
    from ._model import ODEModel

    if not isinstance(model, (ODEModel, AlgebraicModel)):
        raise TypeError(f"fit expects a qsp.ODEModel or qsp.AlgebraicModel; got {type(model).__name__}.")
    from ._experiment import _frame
    from ._nonmem_fit import is_nonmem, tables_from_nonmem

    if isinstance(measurements, (str, os.PathLike)) and is_nonmem(_header(measurements)):
        frame = measurements  # read_nonmem reads the file itself (comments, '.' entries)
    else:
        frame = _frame(measurements, "measurements")
    if not isinstance(frame, pd.DataFrame) or is_nonmem(frame):
        if conditions is not None or regimens is not None:
            raise ValueError("a NONMEM dataset carries its own regimens and covariates; "
                             "do not pass conditions= or regimens= with it.")
        frame, conditions, regimens = tables_from_nonmem(frame, model, observable)
    elif observable is not None:
        raise ValueError("observable= applies to NONMEM datasets; a measurement table names "
                         "observables in its observableId column.")
    data = compile_dataset(model, frame, conditions, regimens)
    pb = build_problem(model, data, free, error, fixed=fixed, initial=initial, bounds=bounds,
                       priors=priors, sim_kwargs=simulate_kwargs, preeq_time=preequilibration_time)
    method = optimizer
    why = pb.least_squares_ok()
    if method == "auto":
        method = "lm" if why is None else "bfgs"
    elif method == "lm" and why is not None:
        raise ValueError(f"optimizer='lm' cannot be used: {why}; use optimizer='bfgs'.")
    ode = states_allowed(model)
    rtol = rtol if rtol is not None else (1e-7 if ode else 1e-10)
    atol = atol if atol is not None else (1e-7 if ode else 1e-10)

    theta0 = latin_hypercube(pb, int(starts), seed, start_bounds, start_spread)
    U0 = jnp.asarray(np.stack([pb.unconstrained(t) for t in theta0]))
    solve_one = _make_solver(pb, method, rtol, atol, int(max_steps), learning_rate)
    return pb, method, solve_one, U0


def fit(model, measurements, conditions=None, *, free, error="additive", starts=1, regimens=None,
        fixed=None, initial=None, bounds=None, priors=None, optimizer="auto", seed=0,
        start_bounds=None, start_spread=10.0, rtol=None, atol=None, max_steps=1000, learning_rate=1e-2,
        simulate_kwargs=None, preequilibration_time=1e3, observable=None) -> FitResult:
    """Fit `model` (an `ODEModel` or `AlgebraicModel`) to a PEtab-style dataset.

    **Arguments:**

    - `measurements`, `conditions`: the measurement and (optional) condition tables
      (DataFrames or CSV paths; see `qsp._experiment`), or a NONMEM-style dataset
      (columns ID, TIME, DV, AMT, ...; one condition and regimen per ID, see
      `qsp._nonmem_fit`) with `observable=` naming the model output DV measures.
    - `free`: names of the model parameters to estimate. Experiment-specific
      parameters named in the condition table and error-model parameters are added
      (estimated) unless given in `fixed`.
    - `error`: `"additive"`, `"proportional"`, `"combined"` or `"lognormal"`, or a dict
      by observable.
    - `starts`: number of starts (the initial values, then a Latin hypercube within
      `start_bounds`, or the bounds, or a factor `start_spread` either side of the
      initial values; see `latin_hypercube`), optimised together in one vmapped call;
      `seed` fixes the hypercube.
    - `regimens`: `{conditionId: qsp.Regimen}` doses per condition (ODE models).
    - `fixed`: `{name: value}` for parameters held fixed (e.g. a known error SD).
    - `initial`, `bounds`: initial values and `(lower, upper)` bounds overriding the
      model's values and its `qsp.param` bounds.
    - `priors`: `{name: ("normal" | "lognormal", mean, sd)}`.
    - `optimizer`: `"auto"` (Levenberg-Marquardt for sums of squares, else BFGS),
      `"lm"`, `"bfgs"`, `"adam"`, `"lbfgs"`.
    - `rtol`, `atol`: optimizer tolerances (default 1e-10 algebraic, 1e-7 ODE);
      `max_steps`: optimizer iterations per start.
    - `simulate_kwargs`: passed to `qsp.simulate` (e.g. `rtol`, `atol`, `solver`).
    - `preequilibration_time`: how long a preequilibration condition is simulated.

    **Returns:** a `FitResult`.
    """
    t_start = _time.perf_counter()
    pb, method, solve_one, U0 = prepare(
        model, measurements, conditions, free=free, error=error, starts=starts, regimens=regimens,
        fixed=fixed, initial=initial, bounds=bounds, priors=priors, optimizer=optimizer, seed=seed,
        start_bounds=start_bounds, start_spread=start_spread, rtol=rtol, atol=atol, max_steps=max_steps,
        learning_rate=learning_rate, simulate_kwargs=simulate_kwargs,
        preequilibration_time=preequilibration_time, observable=observable)
    U, F, OK, STEPS = jax.jit(jax.vmap(solve_one))(U0)
    U, F, OK, STEPS = map(np.asarray, (U, F, OK, STEPS))
    return _result(pb, method, U, F, OK, STEPS, _time.perf_counter() - t_start)


def _result(pb, method, U, F, OK, STEPS, seconds) -> FitResult:
    F = np.where(np.isfinite(F), F, np.inf)
    best = int(np.argmin(F))
    fbest = F[best]
    at_best = np.abs(F - fbest) <= 1e-6 * abs(fbest) + 1e-6
    u = U[best]
    theta = np.asarray(pb.natural(jnp.asarray(u)))
    cov, ok = covariance(pb, u, method)
    se = np.sqrt(np.where(np.diag(cov) >= 0, np.diag(cov), np.nan))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(se, se)
    names = pb.free
    est = {n: float(v) for n, v in zip(names, theta)}
    # The fitted model: free estimates and values held fixed (`fixed=`) alike.
    model_est = {n: float(v) for n, v in zip(pb.names[pb.n_free:], pb.v_const)
                 if n in pb.model_params and isinstance(n, str)}
    model_est.update({n: v for n, v in est.items() if n in pb.model_params})
    fitted = pb.model.replace(**model_est) if model_est else pb.model
    starts = pd.DataFrame(np.asarray([pb.natural(jnp.asarray(x)) for x in U]), columns=names)
    starts.insert(0, "nll", F)
    starts.insert(1, "converged", OK.astype(bool))
    starts.insert(2, "steps", STEPS)
    return FitResult(
        estimates=est, se={n: float(s) for n, s in zip(names, se)},
        ci={n: (float(t - Z95 * s), float(t + Z95 * s)) for n, t, s in zip(names, theta, se)},
        nll=float(fbest), model=fitted, converged=bool(OK[best]), n_at_best=int(at_best.sum()),
        starts=starts, cov=cov, corr=corr, free=list(names), hessian_ok=ok, optimizer=method,
        problem=pb, u=np.asarray(u), seconds=seconds,
    )
