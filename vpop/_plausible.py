r"""Plausible patients: parameter sets whose simulated outputs lie inside given ranges.

**Score.** For outputs $y_j$ (each output at each save time) with ranges $[L_j, U_j]$,
midpoint $m_j$ and half-width $h_j$,

$$s(\eta) = \sum_j \max\!\big(0,\ z_j^2 - 1\big), \qquad z_j = \frac{y_j(\eta) - m_j}{h_j},$$

zero exactly when every output is in range (a scale-free form of Allen et al. 2016's
score, `shared/references/vpop-methods.md` §A). A patient is plausible iff $s = 0$
(strict: no tolerance).

**Generation: sample, then move** (batched, one compile). A fixed pool of `batch`
candidates is kept. Each round makes one batched simulation with its gradient
(`jax.value_and_grad` through `qsp.simulate`) and then

- harvests candidates with $s = 0$ and refills their slots with fresh draws from the
  population ($\eta \sim N(0, \Omega)$);
- moves every other candidate towards the plausible region by a Polyak (Newton for a
  root of $s$) step in whitened coordinates $\eta = L u$ ($L L^\top = \Omega$):
  $u \leftarrow u - \gamma\, s\, \nabla_u s / \lVert\nabla_u s\rVert^2$, with
  $\gamma = 1.5$ so the step lands inside rather than on the boundary, capped at
  `max_step` prior standard deviations;
- gives up on candidates that moved `max_moves` times, or whose simulation failed,
  and refills them.

Every round costs `batch` simulations with their adjoint, whatever the outcome, so
`simulations_per_accepted = rounds * batch / accepted` is the honest cost.

Moving candidates distorts the prior: accepted patients are plausible, not a sample
of the prior restricted to the plausible region. Match observed distributions
afterwards with `allen_selection` or `maxent_weights`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from qsp._simulate import simulate

from ._sampling import Population


def plausibility_score(outputs: Mapping, ranges: Mapping):
    """The score s (see the module docstring), summed over outputs and times; shape
    `outputs[...]` without the last (time) axis. NaN outputs give +inf."""
    total = 0.0
    for name, (lo, hi) in ranges.items():
        y = outputs[name]
        lo, hi = jnp.asarray(lo, dtype=float), jnp.asarray(hi, dtype=float)
        m, h = 0.5 * (lo + hi), 0.5 * (hi - lo)
        z = (y - m) / h
        s = jnp.sum(jnp.maximum(z * z - 1.0, 0.0), axis=-1)
        total = total + jnp.where(jnp.all(jnp.isfinite(y), axis=-1), s, jnp.inf)
    return total


@dataclasses.dataclass
class PlausibleResult:
    """Plausible patients and what they cost."""

    population: Population
    eta: np.ndarray  # (n, d) random effects of the accepted patients
    outputs: dict  # name -> (n, n_ts), the constrained outputs at ts
    moves: np.ndarray  # (n,) moves each accepted patient needed (0: drawn plausible)
    n_simulations: int  # trajectories integrated (each with its adjoint)
    n_rounds: int
    n_drawn: int  # candidates drawn from the population
    cpu_seconds: float

    @property
    def n(self) -> int:
        return len(self.eta)

    @property
    def simulations_per_accepted(self) -> float:
        return self.n_simulations / max(self.n, 1)

    @property
    def model(self):
        """The accepted patients as a batched model (a population for `qsp.simulate`)."""
        return self.population.build(jnp.asarray(self.eta))


def _check_ranges(ranges):
    if not ranges:
        raise ValueError("plausible_patients needs ranges={output: (lower, upper), ...}.")
    out = {}
    for name, r in ranges.items():
        try:
            lo, hi = r
        except (TypeError, ValueError):
            raise ValueError(f"ranges[{name!r}]={r!r}; expected a pair (lower, upper).") from None
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        if np.any(~(lo < hi)):
            raise ValueError(f"ranges[{name!r}]: lower={lo} must be below upper={hi}.")
        out[name] = (lo, hi)
    return out


def plausible_patients(pop: Population, key, n: int, *, ts, ranges: Mapping, regimen=None,
                       batch: int = 128, max_moves: int = 10, max_step: float = 1.0,
                       max_simulations: int | None = None, gamma: float = 1.5,
                       progress: bool = False, **simulate_kwargs) -> PlausibleResult:
    """Generate `n` strictly plausible patients from `pop` (sample, then move).

    **Arguments:**

    - `pop`: a `qsp.vpop.Population` (the prior and the search space).
    - `key`: a `jax.random` key; the run is reproducible from it.
    - `ts`: save times at which `ranges` apply.
    - `ranges`: `{output: (lower, upper)}`; bounds are scalars or arrays over `ts`.
    - `regimen`: dosing (same for every patient), or `None`.
    - `batch`: candidates simulated per round (the one compiled shape).
    - `max_moves`: gradient moves before a candidate is given up.
    - `max_simulations`: stop after this many simulations (default `1000 * n`).
    - `simulate_kwargs`: passed to `qsp.simulate` (e.g. `rtol`, `solver`).

    Candidates are drawn around the population's typical values; its covariate model
    is not used here (generate per covariate stratum if plausibility depends on them).

    **Returns:** `PlausibleResult` (`eta`, `model`, `outputs`, `n_simulations`,
    `simulations_per_accepted`, `moves`).
    """
    if not isinstance(pop, Population):
        raise TypeError(f"plausible_patients expects a qsp.vpop.Population; got {type(pop).__name__}.")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n={n!r} must be a positive integer number of patients.")
    if not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch={batch!r} must be a positive integer.")
    ranges = _check_ranges(ranges)
    ts = jnp.asarray(ts, dtype=float)
    max_simulations = 1000 * n if max_simulations is None else int(max_simulations)
    L = jnp.asarray(pop.chol())
    names = list(ranges)

    rng_arrays = {k: (jnp.asarray(lo), jnp.asarray(hi)) for k, (lo, hi) in ranges.items()}
    static = (pop.names, tuple(bool(b) for b in pop.is_log), float(gamma), float(max_step),
              tuple(sorted(simulate_kwargs.items())))
    tv = jnp.asarray(pop.typical())

    def round_(u):
        return _round(pop.model, tv, L, u, regimen, ts, rng_arrays, static)

    t_cpu = time.process_time()
    key, sub = jax.random.split(key)
    u = jax.random.normal(sub, (batch, pop.d), dtype=float)
    moves = np.zeros(batch, dtype=int)
    drawn, sims, rounds = batch, 0, 0
    acc_u, acc_out, acc_moves = [], {k: [] for k in names}, []
    n_acc = 0
    while n_acc < n and sims + batch <= max_simulations:
        s, outs, step, stuck = round_(u)
        sims, rounds = sims + batch, rounds + 1
        s, step, stuck = np.asarray(s), np.asarray(step), np.asarray(stuck)
        ok = s == 0.0
        if ok.any():
            idx = np.flatnonzero(ok)[: n - n_acc]
            acc_u.append(np.asarray(u)[idx])
            acc_moves.append(moves[idx])
            for k in names:
                acc_out[k].append(np.asarray(outs[k])[idx])
            n_acc += len(idx)
        refill = ok | stuck | (moves >= max_moves)
        u_np = np.asarray(u) + np.where(refill[:, None], 0.0, step)
        moves = np.where(refill, 0, moves + 1)
        if refill.any():
            key, sub = jax.random.split(key)
            fresh = np.asarray(jax.random.normal(sub, (batch, pop.d), dtype=float))
            u_np = np.where(refill[:, None], fresh, u_np)
            drawn += int(refill.sum())
        u = jnp.asarray(u_np)
        if progress:
            _progress(f"plausible patients {n_acc}/{n}, {sims} simulations")
    if progress:
        _progress("", end=True)
    if n_acc == 0:
        raise RuntimeError(
            f"plausible_patients found no plausible patient in {sims} simulations; widen the ranges, "
            "raise max_simulations, or check that the ranges are reachable by the population."
        )
    uu = np.concatenate(acc_u)
    return PlausibleResult(
        population=pop,
        eta=uu @ np.asarray(L).T,
        outputs={k: np.concatenate(v) for k, v in acc_out.items()},
        moves=np.concatenate(acc_moves),
        n_simulations=sims,
        n_rounds=rounds,
        n_drawn=drawn,
        cpu_seconds=time.process_time() - t_cpu,
    )


@eqx.filter_jit
def _round(model, tv, L, u, regimen, ts, ranges, static):
    """One batched simulation of the candidate pool with the score's gradient, and the
    Polyak move of every candidate (a module-level function, so repeated calls with the
    same shapes reuse one compile)."""
    names, is_log, gamma, max_step, sim_kw = static
    is_log = jnp.asarray(is_log)

    def total(u):
        eta = u @ L.T
        vals = jnp.where(is_log, tv * jnp.exp(eta), tv + eta)
        sol = simulate(model.replace(**{k: vals[:, j] for j, k in enumerate(names)}), regimen, ts, **dict(sim_kw))
        missing = [k for k in ranges if k not in sol.outputs]
        if missing:
            raise ValueError(f"ranges name output {missing[0]!r}; the model's outputs are {sorted(sol.outputs)}.")
        outs = {k: sol.outputs[k] for k in ranges}
        s = plausibility_score(outs, ranges)
        return jnp.sum(jnp.where(jnp.isfinite(s), s, 0.0)), (s, outs)

    (_, (s, outs)), g = jax.value_and_grad(total, has_aux=True)(u)
    g = jnp.where(jnp.isfinite(g), g, 0.0)
    gn2 = jnp.sum(g * g, axis=1, keepdims=True)
    step = -gamma * s[:, None] * g / jnp.maximum(gn2, 1e-300)
    norm = jnp.sqrt(jnp.sum(step * step, axis=1, keepdims=True))
    step = step * jnp.minimum(1.0, max_step / jnp.maximum(norm, 1e-300))
    stuck = ~jnp.isfinite(s) | (gn2[:, 0] == 0.0) & (s > 0)
    return s, outs, step, stuck


def _progress(msg, end=False):
    import sys

    sys.stderr.write("\r" + msg if not end else "\n")
    sys.stderr.flush()
