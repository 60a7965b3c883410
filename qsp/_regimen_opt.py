r"""Regimen optimisation: gradient search over a family of dosing regimens.

A **regimen family** (`RegimenFamily`) maps a dict of free, bounded quantities (dose
amounts, step-up sizes and days, dosing interval, infusion duration, combination
doses) to a `qsp.Regimen`. Amounts and times are JAX leaves of `Regimen` and dose
times enter `simulate`'s segment boundaries through a sort, so
$\partial(\text{endpoint})/\partial(\text{dose, day, interval})$ exists and `jax.grad`
computes it. Each free quantity $x \in [a, b]$ is searched through an unconstrained
$u$:

$$x = a + (b - a)\,\sigma(u) \quad\text{or, on a log scale,}\quad
\log x = \log a + (\log b - \log a)\,\sigma(u),$$

so every iterate is a valid regimen.

**Problem.** With endpoints $e(x)$ returned by a user function
`evaluate(regimen, values, temperature) -> dict` (efficacy and toxicity summaries over
a virtual population, a trough, ...), `optimize` solves

$$\min_x\ s\,e_0(x) \quad\text{s.t.}\quad \ell_j \le e_j(x) \le h_j,$$

($s = \pm 1$ for minimise/maximise; $\ell_j = h_j$ is an equality) by the augmented
Lagrangian method (Powell-Hestenes-Rockafellar; Nocedal & Wright, *Numerical
Optimization*, 2nd ed., section 17.4, eq. 17.65 for inequalities): each outer
iteration minimises, with BFGS (optimistix),

$$L_\rho(u; \lambda, \mu) = \frac{s\,e_0}{f_s}
+ \sum_j \frac{1}{2\rho}\big[\max(0, \lambda_j + \rho g_j)^2 - \lambda_j^2\big]
+ \sum_i \big(\mu_i h_i + \tfrac{\rho}{2} h_i^2\big),$$

with constraints scaled to relative violations ($g = (e - h)/|h|$, etc.), then
updates $\lambda \leftarrow \max(0, \lambda + \rho g)$, $\mu \leftarrow \mu + \rho h$,
and multiplies $\rho$ by 10 (up to $10^9$) when the violation did not fall by 4x. Starts (a Latin
hypercube in $\sigma(u)$) and, for `pareto`, constraint levels are one batch: a single
`jax.vmap`ped solve, one compile.

**Discrete endpoints** (response categories, toxicity grades, "P(CRS >= 2)") have
zero gradient almost everywhere. `evaluate` receives a `temperature`: a number
during the search, under which it should use smooth relaxations (`exceeds`,
`fraction_exceeding`: a logistic of the threshold crossing), and `None` at the
solution, under which the same helpers return the exact indicators. Results report
both, and feasibility is judged on the exact endpoints.

**Pareto fronts** (`pareto`) by the epsilon-constraint method: minimise the objective
subject to the trade-off endpoint at each of a sweep of levels (Haimes et al., IEEE
Trans Syst Man Cybern 1971;1:296).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._dosing import Regimen

# -- smooth relaxations ----------------------------------------------------------------------


def exceeds(x, threshold, temperature=None):
    r"""Indicator $1[x \ge c]$; with a `temperature` $T$ its logistic relaxation
    $\sigma((x - c)/T)$ (same units as `x`), which tends to the indicator as $T \to 0$."""
    x = jnp.asarray(x)
    if temperature is None:
        return (x >= threshold).astype(float)
    return jax.nn.sigmoid((x - threshold) / temperature)


def fraction_exceeding(x, threshold, temperature=None, axis=-1, failed_exceeds: bool = True):
    """Fraction of the population (`axis`) with `x >= threshold`, exact or relaxed
    (`exceeds`). NaN members (failed simulations) count as exceeding by default, so a
    failed patient cannot make a regimen look safer on a toxicity endpoint; pass
    `failed_exceeds=False` for an efficacy endpoint."""
    x = jnp.asarray(x)
    ind = exceeds(jnp.where(jnp.isnan(x), jnp.inf if failed_exceeds else -jnp.inf, x), threshold, temperature)
    return jnp.mean(ind, axis=axis)


def soft_max(y, temperature=None, axis=-1):
    r"""`max(y)`; with a temperature $T$ the smooth $T \log \sum e^{y/T}$ (an upper bound
    within $T \log n$)."""
    y = jnp.asarray(y)
    if temperature is None:
        return jnp.max(y, axis=axis)
    return temperature * jax.scipy.special.logsumexp(y / temperature, axis=axis)


# -- the family --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Free:
    """A free, bounded quantity: `lower <= x <= upper` (searched on a log scale when
    `log=True`, which needs `lower > 0`); `init` is the first start (default: the
    middle of the range on the search scale)."""

    lower: float
    upper: float
    init: float | None = None
    log: bool = False

    def check(self, name: str):
        lo, hi = float(self.lower), float(self.upper)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(f"Free {name!r}: bounds ({lo:g}, {hi:g}) must be finite with lower < upper.")
        if self.log and lo <= 0:
            raise ValueError(f"Free {name!r}: log=True needs lower > 0; got lower={lo:g}.")
        if self.init is not None and not (lo < float(self.init) < hi):
            raise ValueError(
                f"Free {name!r}: init={float(self.init):g} must lie strictly inside ({lo:g}, {hi:g})."
            )


class RegimenFamily:
    """Regimens parameterised by free, bounded quantities.

    **Arguments:** `build(values) -> qsp.Regimen`, where `values` maps each name of
    `free` (and `fixed`) to a scalar (a JAX tracer during the search: build with
    `Regimen.bolus/infusion/step_up`, which keep amounts and times differentiable;
    `addl` and the number of doses must stay fixed; give step-up days as gaps so
    their order cannot change); `free`: `{name: Free(...)}`;
    `fixed`: further constant values passed to `build`.

    !!! example
        `RegimenFamily(lambda v: Regimen.bolus(v["dose"], 0.0, "CENT", ii=v["tau"], addl=11),
        {"dose": Free(1, 200, log=True), "tau": Free(2, 48)})`
    """

    def __init__(self, build: Callable[[dict], Regimen], free: Mapping[str, Free],
                 fixed: Mapping[str, Any] | None = None):
        if not callable(build):
            raise TypeError(f"RegimenFamily build must be callable; got {type(build).__name__}.")
        if not free:
            raise ValueError("RegimenFamily free={} is empty; give at least one free quantity.")
        for name, f in free.items():
            if not isinstance(f, Free):
                raise TypeError(f"RegimenFamily free[{name!r}] must be a qsp.Free; got {type(f).__name__}.")
            f.check(name)
        self.build = build
        self.free = dict(free)
        self.fixed = dict(fixed or {})
        clash = set(self.free) & set(self.fixed)
        if clash:
            raise ValueError(f"RegimenFamily: {sorted(clash)} are both free and fixed.")
        self.names = tuple(self.free)
        self._lo = np.array([f.lower for f in self.free.values()], float)
        self._hi = np.array([f.upper for f in self.free.values()], float)
        self._log = np.array([f.log for f in self.free.values()], bool)

    def _scale(self):
        lo = np.where(self._log, np.log(self._lo), self._lo)
        hi = np.where(self._log, np.log(self._hi), self._hi)
        return lo, hi

    def from_unit(self, s):
        """Values (dict) from positions `s` in [0, 1] along each range (search scale)."""
        lo, hi = self._scale()
        z = lo + (hi - lo) * s
        # exp only of the log-scale entries: exp of a large linear-scale value would
        # overflow and poison the gradient through jnp.where.
        x = jnp.where(self._log, jnp.exp(jnp.where(self._log, z, 0.0)), z)
        return {n: x[..., i] for i, n in enumerate(self.names)}

    def to_unit(self, values: Mapping[str, Any]) -> np.ndarray:
        lo, hi = self._scale()
        x = np.stack([np.asarray(values[n], float) for n in self.names], axis=-1)
        for i, n in enumerate(self.names):
            if np.any((x[..., i] <= self._lo[i]) | (x[..., i] >= self._hi[i])):
                raise ValueError(
                    f"{n}={x[..., i]} is outside the open range ({self._lo[i]:g}, {self._hi[i]:g})."
                )
        z = np.where(self._log, np.log(x), x)
        return (z - lo) / (hi - lo)

    def values(self, u) -> dict:
        """Values (dict, free and fixed) from unconstrained `u` (last axis = free names)."""
        return {**self.from_unit(jax.nn.sigmoid(u)), **self.fixed}

    def unconstrained(self, values: Mapping[str, Any]) -> np.ndarray:
        s = self.to_unit(values)
        return np.log(s) - np.log1p(-s)

    def regimen(self, values: Mapping[str, Any]) -> Regimen:
        return self.build({**self.fixed, **values})

    def init_unit(self) -> np.ndarray:
        """Position of each `init` in [0, 1] (0.5 where no init was given)."""
        lo, hi = self._scale()
        out = np.full(len(self.names), 0.5)
        for i, f in enumerate(self.free.values()):
            if f.init is not None:
                z = np.log(f.init) if f.log else float(f.init)
                out[i] = (z - lo[i]) / (hi[i] - lo[i])
        return out

    def starts(self, n: int, seed: int = 0) -> np.ndarray:
        """`n` unconstrained starts: the initial values, then a Latin hypercube over the
        central 96% of each range (search scale)."""
        rng = np.random.default_rng(seed)
        p = len(self.names)
        s = np.tile(self.init_unit(), (n, 1))
        if n > 1:
            m = n - 1
            cells = (np.argsort(rng.random((p, m)), axis=1).T + rng.random((m, p))) / m
            s[1:] = 0.02 + 0.96 * cells
        return np.log(s) - np.log1p(-s)

    def grid(self, n: int | Mapping[str, int]) -> dict:
        """Full factorial grid, `n` points per axis (or per name), evenly spaced on the
        search scale between the bounds (inclusive). Returns flat arrays by name."""
        counts = [n[k] if isinstance(n, Mapping) else n for k in self.names]
        axes = [np.linspace(0.0, 1.0, c) for c in counts]
        mesh = np.meshgrid(*axes, indexing="ij")
        s = np.stack([m.reshape(-1) for m in mesh], axis=-1)
        return {k: np.asarray(v) for k, v in self.from_unit(jnp.asarray(s)).items()}

