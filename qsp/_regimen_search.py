"""`optimize` and `pareto`: augmented-Lagrangian BFGS over a `RegimenFamily`.

The method and the relaxation contract are described in `qsp._regimen_opt`. Here:
the batched inner solve (starts x constraint levels, one `jax.vmap`, one compile), the
outer multiplier updates, the exact re-check at the solutions and the result types.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from ._regimen_opt import RegimenFamily

_SENSES = ("minimize", "maximize")


@dataclasses.dataclass
class OptimizeResult:
    """The best regimen found (by the exact endpoints) and what it took.

    `values`: the free quantities; `regimen`: the `qsp.Regimen`; `endpoints`: exact
    endpoints there (temperature None); `relaxed`: the relaxed endpoints the search
    saw; `feasible`: every constraint holds exactly within `tol` (relative);
    `violation`: largest relative constraint violation (exact); `starts`: per start,
    the values, exact objective and feasibility; `n_evaluations`: evaluations of
    `evaluate` with its gradient during the search (all starts); `n_exact`:
    evaluations without gradient for the re-check."""

    values: dict
    regimen: Any
    objective: float
    endpoints: dict
    relaxed: dict
    feasible: bool
    violation: float
    starts: dict
    n_evaluations: int
    n_exact: int
    outer_iterations: int

    def __repr__(self):
        v = ", ".join(f"{k}={val:.6g}" for k, val in self.values.items())
        return (f"OptimizeResult({v}; objective={self.objective:.6g}, feasible={self.feasible}, "
                f"violation={self.violation:.2g}, n_evaluations={self.n_evaluations})")


@dataclasses.dataclass
class ParetoFront:
    """One optimum per level of the trade-off endpoint (epsilon-constraint sweep).
    `values` and `endpoints` are dicts of arrays over `levels`; `feasible` is judged
    on the exact endpoints; `results` holds the per-level `OptimizeResult`s (their
    `n_evaluations` is 0: the levels are solved as one batch, whose total is
    `n_evaluations` here)."""

    levels: np.ndarray
    values: dict
    endpoints: dict
    feasible: np.ndarray
    results: list
    n_evaluations: int


def _parse_constraints(constraints):
    names, lo, hi = [], [], []
    for name, bounds in (constraints or {}).items():
        if not (isinstance(bounds, (tuple, list)) and len(bounds) == 2):
            raise ValueError(
                f"constraints[{name!r}]={bounds!r}; expected (lower, upper) with None for no bound."
            )
        a = -np.inf if bounds[0] is None else float(bounds[0])
        b = np.inf if bounds[1] is None else float(bounds[1])
        if np.isnan(a) or np.isnan(b) or a > b or (np.isinf(a) and np.isinf(b)):
            raise ValueError(
                f"constraints[{name!r}]=({bounds[0]}, {bounds[1]}) must have lower <= upper, one finite."
            )
        names.append(name)
        lo.append(a)
        hi.append(b)
    return tuple(names), np.array(lo, float), np.array(hi, float)


def _violations(e, lo, hi):
    """Relative violations: g (inequalities, <= 0 feasible; -inf where absent) and
    h (equalities, 0 feasible; 0 where absent)."""
    eq = lo == hi
    s_lo = jnp.where(jnp.isfinite(lo) & (lo != 0), jnp.abs(lo), 1.0)
    s_hi = jnp.where(jnp.isfinite(hi) & (hi != 0), jnp.abs(hi), 1.0)
    lo_f = jnp.where(jnp.isfinite(lo), lo, 0.0)
    hi_f = jnp.where(jnp.isfinite(hi), hi, 0.0)
    g_lo = jnp.where(jnp.isfinite(lo) & ~eq, (lo_f - e) / s_lo, -jnp.inf)
    g_hi = jnp.where(jnp.isfinite(hi) & ~eq, (e - hi_f) / s_hi, -jnp.inf)
    h = jnp.where(eq, (e - hi_f) / s_hi, 0.0)
    return jnp.concatenate([g_lo, g_hi], axis=-1), h


class _Search(eqx.Module):
    """The batched augmented-Lagrangian pieces for one problem (static callables)."""

    family: Any = eqx.field(static=True)
    evaluate: Callable = eqx.field(static=True)
    objective: str = eqx.field(static=True)
    names: tuple = eqx.field(static=True)
    sign: float = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)

    def endpoints(self, u, temperature):
        v = self.family.values(u)
        out = self.evaluate(self.family.regimen(v), v, temperature)
        missing = [k for k in (self.objective, *self.names) if k not in out]
        if missing:
            raise KeyError(f"evaluate returned {sorted(out)}; it must also return {missing}.")
        return {k: jnp.asarray(val, dtype=float) for k, val in out.items()}

    def _lagrangian(self, u, args):
        lam, mu, rho, lo, hi, f_scale, temperature = args
        e = self.endpoints(u, temperature)
        c = jnp.stack([e[k] for k in self.names]) if self.names else jnp.zeros((0,))
        g, h = _violations(c, lo, hi)
        on = jnp.isfinite(g)  # absent sides are -inf: masked out (and kept out of the gradient)
        shifted = jnp.maximum(0.0, lam + rho * jnp.where(on, g, 0.0))
        pen_g = jnp.sum(jnp.where(on, shifted**2 - lam**2, 0.0)) / (2 * rho)
        pen_h = jnp.sum(mu * h + 0.5 * rho * h**2)
        return self.sign * e[self.objective] / f_scale + pen_g + pen_h

    @eqx.filter_jit
    def inner(self, u0, lam, mu, rho, lo, hi, f_scale, temperature):
        """One outer iteration for every batch member: BFGS on L_rho, then the
        constraint values there. Returns (u, g, h, n_evaluations, endpoints)."""

        def one(u0, lam, mu, lo, hi):
            sol = optx.minimise(
                self._lagrangian, optx.BFGS(rtol=self.rtol, atol=self.atol), u0,
                args=(lam, mu, rho, lo, hi, f_scale, temperature),
                max_steps=self.max_steps, throw=False,
            )
            e = self.endpoints(sol.value, temperature)
            c = jnp.stack([e[k] for k in self.names]) if self.names else jnp.zeros((0,))
            g, h = _violations(c, lo, hi)
            return sol.value, g, h, sol.stats["num_steps"] + 1, e

        return jax.vmap(one)(u0, lam, mu, lo, hi)

    @eqx.filter_jit
    def exact(self, u):
        return jax.vmap(lambda x: self.endpoints(x, None))(u)


def _run(search: _Search, u0, lo, hi, *, temperature, rho0, outer, feas_tol, f_scale):
    """Outer loop over a batch (B members): multiplier and penalty updates."""
    B = u0.shape[0]
    m = lo.shape[1]
    temperature = None if temperature is None else jnp.asarray(temperature, dtype=float)
    lam = np.zeros((B, 2 * m))
    mu = np.zeros((B, m))
    rho = float(rho0)
    prev = np.full(B, np.inf)
    u = np.asarray(u0, float)
    u_prev = u
    relaxed = {}
    n_eval = 0
    it = 0
    for it in range(1, outer + 1):
        u_new, g, h, steps, e = search.inner(
            jnp.asarray(u), jnp.asarray(lam), jnp.asarray(mu), jnp.asarray(rho), jnp.asarray(lo),
            jnp.asarray(hi), jnp.asarray(f_scale), temperature,
        )
        n_eval += int(np.sum(steps))
        g, h = np.asarray(g), np.asarray(h)
        # A member whose solve or endpoints failed (NaN) keeps its previous point.
        ok = np.all(np.isfinite(np.asarray(u_new)), axis=1) & ~np.isnan(g).any(axis=1) & ~np.isnan(h).any(axis=1)
        u = np.where(ok[:, None], np.asarray(u_new), u)
        relaxed = {k: np.where(ok, np.asarray(v), relaxed.get(k, np.nan)) for k, v in e.items()}
        gf = np.where(np.isfinite(g), g, -np.inf)
        lam_new = np.maximum(0.0, lam + rho * np.where(np.isfinite(g), g, 0.0))
        lam = np.where(ok[:, None] & np.isfinite(g), lam_new, lam)
        mu = np.where(ok[:, None], mu + rho * h, mu)
        viol = np.max(np.concatenate([np.maximum(gf, 0.0), np.abs(h), np.zeros((B, 1))], axis=1), axis=1)
        step = np.max(np.abs(np.asarray(u_new) - u_prev), axis=1)
        u_prev = u
        # A member is done when feasible and no longer moving; one that stopped moving
        # while infeasible (stuck at a bound, sigma saturated) will not recover.
        done = ((viol <= feas_tol) & (step < 1e-7)) | (step < 1e-10) | ~ok
        if it >= 2 and np.all(done):
            break
        if np.any(viol > 0.25 * prev):
            rho = min(rho * 10.0, 1e9)  # beyond this BFGS only fights the conditioning
        prev = viol
    return u, relaxed, n_eval, it


def _exact_summary(search, u, lo, hi, sign, tol):
    e = {k: np.asarray(v) for k, v in search.exact(jnp.asarray(u)).items()}
    c = np.stack([e[k] for k in search.names], axis=-1) if search.names else np.zeros((u.shape[0], 0))
    g, h = _violations(jnp.asarray(c), jnp.asarray(lo), jnp.asarray(hi))
    g, h = np.asarray(g), np.asarray(h)
    viol = np.max(np.concatenate([np.maximum(np.where(np.isfinite(g), g, 0.0), 0.0), np.abs(h),
                                  np.zeros((u.shape[0], 1))], axis=1), axis=1)
    obj = e[search.objective]
    feasible = (viol <= tol) & np.isfinite(obj)
    return e, viol, feasible


def _pick(obj, viol, feasible, sign):
    """Best feasible member by the objective; if none is feasible, least violation."""
    if feasible.any():
        score = np.where(feasible, sign * obj, np.inf)
        return int(np.argmin(score))
    return int(np.nanargmin(viol))


def _result(search, family, u, e, relaxed, viol, feasible, idx, n_eval, n_exact, outer_it) -> OptimizeResult:
    vals = {k: float(v) for k, v in family.values(jnp.asarray(u[idx])).items() if k in family.names}
    all_vals = family.values(jnp.asarray(u))
    return OptimizeResult(
        values=vals,
        regimen=family.regimen({k: jnp.asarray(v) for k, v in vals.items()}),
        objective=float(e[search.objective][idx]),
        endpoints={k: float(v[idx]) for k, v in e.items()},
        relaxed={k: float(v[idx]) for k, v in relaxed.items()},
        feasible=bool(feasible[idx]),
        violation=float(viol[idx]),
        starts={**{k: np.asarray(all_vals[k]) for k in family.names},
                "objective": e[search.objective], "feasible": feasible, "violation": viol},
        n_evaluations=int(n_eval),
        n_exact=int(n_exact),
        outer_iterations=int(outer_it),
    )


def _make(family, evaluate, objective, sense, names, rtol, atol, max_steps):
    if not isinstance(family, RegimenFamily):
        raise TypeError(f"family must be a qsp.RegimenFamily; got {type(family).__name__}.")
    if sense not in _SENSES:
        raise ValueError(f"sense={sense!r}; expected one of {_SENSES}.")
    return _Search(family, evaluate, objective, names, 1.0 if sense == "minimize" else -1.0,
                   float(rtol), float(atol), int(max_steps))


def _f_scale(search, u0, objective_scale):
    if objective_scale is not None:
        if not objective_scale > 0:
            raise ValueError(f"objective_scale={objective_scale!r}; expected a positive number.")
        return float(objective_scale)
    # The whole batch (not u0[:1]): the same shape as the final re-check, one compile.
    f0 = float(search.exact(jnp.asarray(u0))[search.objective][0])
    return max(abs(f0), 1.0) if np.isfinite(f0) else 1.0


def optimize(
    family: RegimenFamily,
    evaluate: Callable,
    objective: str,
    *,
    sense: str = "minimize",
    constraints: Mapping[str, tuple] | None = None,
    temperature: float | None = None,
    starts: int | np.ndarray = 4,
    seed: int = 0,
    outer: int = 12,
    rho0: float = 10.0,
    rtol: float = 1e-9,
    atol: float = 1e-9,
    max_steps: int = 200,
    tol: float = 1e-6,
    objective_scale: float | None = None,
) -> OptimizeResult:
    """Best regimen of `family` under constraints, by gradient search.

    **Arguments:**

    - `family`: a `RegimenFamily` (free, bounded quantities -> `Regimen`).
    - `evaluate(regimen, values, temperature) -> dict`: endpoints (scalars) of a
      regimen, e.g. over a virtual population. Use `exceeds` / `fraction_exceeding` /
      `soft_max` with the given `temperature` for discrete endpoints: a number during
      the search, `None` for the exact re-check.
    - `objective`: the endpoint to optimise; `sense`: `"minimize"` or `"maximize"`.
    - `constraints`: `{endpoint: (lower, upper)}`, `None` for a missing side; equal
      sides make an equality. Violations are relative to the bound (absolute for 0).
    - `temperature`: passed to `evaluate` during the search.
    - `starts`: number of starts (the family's initial values, then a Latin
      hypercube; all solved in one `vmap`) or an array of unconstrained starts.
    - `outer`, `rho0`: augmented-Lagrangian iterations and initial penalty.
    - `rtol`, `atol`, `max_steps`: BFGS tolerances and steps per outer iteration.
    - `tol`: relative constraint violation accepted as feasible at the exact re-check.
    - `objective_scale`: divides the objective in the Lagrangian (default
      `max(|objective at the first start|, 1)`).

    **Returns:** an `OptimizeResult`.
    """
    names, lo, hi = _parse_constraints(constraints)
    search = _make(family, evaluate, objective, sense, names, rtol, atol, max_steps)
    u0 = family.starts(int(starts), seed) if np.ndim(starts) == 0 else np.asarray(starts, float)
    B = u0.shape[0]
    lo_b, hi_b = np.tile(lo, (B, 1)), np.tile(hi, (B, 1))
    fs = _f_scale(search, u0, objective_scale)
    u, relaxed, n_eval, it = _run(search, u0, lo_b, hi_b, temperature=temperature, rho0=rho0, outer=outer,
                                  feas_tol=min(tol, 1e-8), f_scale=fs)
    e, viol, feas = _exact_summary(search, u, lo_b, hi_b, search.sign, tol)
    idx = _pick(e[objective], viol, feas, search.sign)
    return _result(search, family, u, e, relaxed, viol, feas, idx, n_eval, B, it)


def pareto(
    family: RegimenFamily,
    evaluate: Callable,
    objective: str,
    trade_off: str,
    levels: Sequence[float],
    *,
    sense: str = "minimize",
    trade_off_sense: str = "upper",
    constraints: Mapping[str, tuple] | None = None,
    temperature: float | None = None,
    starts: int = 4,
    seed: int = 0,
    outer: int = 12,
    rho0: float = 10.0,
    rtol: float = 1e-9,
    atol: float = 1e-9,
    max_steps: int = 200,
    tol: float = 1e-6,
    objective_scale: float | None = None,
) -> ParetoFront:
    """Benefit/risk Pareto front by the epsilon-constraint method: for each level
    $\\epsilon$ in `levels`, optimise `objective` subject to `trade_off <= epsilon`
    (`trade_off_sense="upper"`, e.g. P(CRS >= 2)) or `>= epsilon` (`"lower"`, e.g. a
    response rate), plus `constraints`. All levels x `starts` are one vmapped batch.
    Other arguments as in `optimize`."""
    if trade_off_sense not in ("upper", "lower"):
        raise ValueError(f"trade_off_sense={trade_off_sense!r}; expected 'upper' or 'lower'.")
    levels = np.asarray(levels, float).reshape(-1)
    if levels.size == 0 or not np.all(np.isfinite(levels)):
        raise ValueError(f"levels={levels!r}; expected a non-empty sequence of finite numbers.")
    cons = dict(constraints or {})
    if trade_off in cons:
        raise ValueError(f"trade_off {trade_off!r} is also in constraints; give it only as trade_off.")
    cons[trade_off] = (None, 0.0) if trade_off_sense == "upper" else (0.0, None)
    names, lo, hi = _parse_constraints(cons)
    j = names.index(trade_off)
    search = _make(family, evaluate, objective, sense, names, rtol, atol, max_steps)
    u_s = family.starts(int(starts), seed)
    L, S = levels.size, u_s.shape[0]
    u0 = np.tile(u_s, (L, 1))
    lo_b, hi_b = np.tile(lo, (L * S, 1)), np.tile(hi, (L * S, 1))
    lvl = np.repeat(levels, S)
    (hi_b if trade_off_sense == "upper" else lo_b)[:, j] = lvl
    fs = _f_scale(search, u0, objective_scale)
    u, relaxed, n_eval, it = _run(search, u0, lo_b, hi_b, temperature=temperature, rho0=rho0, outer=outer,
                                  feas_tol=min(tol, 1e-8), f_scale=fs)
    e, viol, feas = _exact_summary(search, u, lo_b, hi_b, search.sign, tol)
    results = []
    for i in range(L):
        sl = slice(i * S, (i + 1) * S)
        idx = _pick(e[objective][sl], viol[sl], feas[sl], search.sign)
        sub = {k: v[sl] for k, v in e.items()}
        rel = {k: v[sl] for k, v in relaxed.items()}
        results.append(_result(search, family, u[sl], sub, rel, viol[sl], feas[sl], idx, 0, S, it))
    return ParetoFront(
        levels=levels,
        values={k: np.array([r.values[k] for r in results]) for k in family.names},
        endpoints={k: np.array([r.endpoints[k] for r in results]) for k in results[0].endpoints},
        feasible=np.array([r.feasible for r in results]),
        results=results,
        n_evaluations=int(n_eval),
    )
