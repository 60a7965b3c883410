r"""Stochastic simulation of the clonal branching process by tau-leaping.

The expected-value ODE of `model.py` is the mean of a four-type, time-inhomogeneous
linear birth-death-mutation branching process: each cell of clone $k$ divides at rate
$b_k(t)$ and dies at rate $d_k$; a division of a sensitive cell yields a mutant of
type $k$ (and one sensitive cell) with probability $\mu_k$. With few cells (early
resistant clones, a small well) extinction and stochastic emergence matter, and the
mean hides them.

**Leap.** On each step $[t_i, t_{i+1}]$ of the concentration grid the rates are frozen
at their step average (trapezoid of the endpoint rates) and event counts are Poisson:

- sensitive: births $B_0 \sim \mathrm{Pois}(b_0 n_0 \phi_0)$, deaths $D_0 \sim \mathrm{Pois}(d_0 n_0 \phi_0)$,
  mutants $M_k \sim \mathrm{Pois}(\mu_k B_0)$; $n_0 \leftarrow n_0 + B_0 - D_0 - \sum_k M_k$;
- clone $k \ge 1$: $n_k \leftarrow n_k + M_k + \mathrm{Pois}(b_k n_k \phi_k) - \mathrm{Pois}(d_k n_k \phi_k)$,

where $\phi_k = (e^{g_k h} - 1)/g_k$ ($g_0 = b_0(1 - \sum\mu) - d_0$, $g_k = b_k - d_k$,
$h$ the step) replaces $h$ so that each clone's own expected growth over the step is
exact, $E[n_k(t+h)] = e^{g_k h} n_k(t)$, rather than Euler's $1 + g_k h$. The mean then
differs from the ODE only through the mutation inflow within a step ($O(\mu h^2)$) and
the clamping of rare overshoots below 0 (counts are set to 0 there; with steps where
$(b + d) h \ll 1$ such overshoots need many events in one step and are rare).
Poisson counts above `NORMAL_ABOVE` are drawn from the matching normal approximation
(relative error of that approximation ~ $\lambda^{-1/2}$, far below the sampling noise).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .surfaces import AbstractSurface, published_surface

#: Poisson means above this are sampled as rounded normals.
NORMAL_ABOVE = 1e5


def _poisson(key, lam):
    lam = jnp.maximum(lam, 0.0)
    k1, k2 = jax.random.split(key)
    small = jax.random.poisson(k1, jnp.minimum(lam, NORMAL_ABOVE), shape=lam.shape).astype(float)
    big = jnp.maximum(jnp.round(lam + jnp.sqrt(lam) * jax.random.normal(k2, lam.shape)), 0.0)
    return jnp.where(lam > NORMAL_ABOVE, big, small)


def _phi(g, h):
    """(e^{g h} - 1) / g, finite as g -> 0."""
    x = g * h
    safe = jnp.where(jnp.abs(x) > 1e-8, x, 1.0)
    return jnp.where(jnp.abs(x) > 1e-8, jnp.expm1(safe) / safe, 1.0 + 0.5 * x) * h


def tau_leap(key, ts, daco, osi, n_init, mu, surface: AbstractSurface | None = None, *, path=False):
    """One stochastic realisation of the clone counts.

    **Arguments:** `key` (a `jax.random` key), `ts (n,)` the step grid (h), `daco`,
    `osi` `(n,)` effect concentrations (nM) on it, `n_init (4,)` integer counts at
    `ts[0]`, `mu (3,)`, `surface` (default: published). `jax.vmap` over keys for
    replicates.

    **Returns:** counts `(4,)` at `ts[-1]` (or `(n, 4)` on the grid with `path=True`),
    as floats holding whole numbers."""
    surface = published_surface() if surface is None else surface
    ts = jnp.asarray(ts, dtype=float)
    mu = jnp.asarray(mu, dtype=float)
    b = surface.birth(daco, osi)  # (n, 4)
    b_mid = 0.5 * (b[1:] + b[:-1])
    h = jnp.diff(ts)
    d = surface.death
    keys = jax.random.split(key, h.shape[0])

    def step(n, inp):
        k, bb, hh = inp
        ks = jax.random.split(k, 4)
        g = bb - d
        g = g.at[0].add(-bb[0] * jnp.sum(mu))
        phi = _phi(g, hh)
        births = _poisson(ks[0], bb * n * phi)
        deaths = _poisson(ks[1], d * n * phi)
        mutants = _poisson(ks[2], mu * births[0])
        new = n + births - deaths
        new = new.at[0].add(-jnp.sum(mutants)).at[1:].add(mutants)
        new = jnp.maximum(new, 0.0)
        return new, new

    n0 = jnp.round(jnp.asarray(n_init, dtype=float))
    last, traj = jax.lax.scan(step, n0, (keys, b_mid, h))
    if path:
        return jnp.concatenate([n0[None], traj], axis=0)
    return last
