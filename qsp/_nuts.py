r"""NUTS for `qsp.sample_posterior(..., method="nuts")`, through blackjax.

The No-U-Turn sampler (Hoffman & Gelman 2014, JMLR 15:1593) in blackjax's iterative
form with multinomial proposals (Betancourt 2017, arXiv:1701.02434), as in Stan.
Warm-up is Stan's window adaptation (Stan Reference Manual, "HMC algorithm
parameters"; blackjax's schedule `build_schedule`, Welford `mass_matrix_adaptation`
and `dual_averaging_adaptation`): an initial fast window adapting only the step size
to `target_accept`, slow windows of doubling length (25, 50, ... draws) after each of
which the (dense) inverse mass matrix is re-estimated from that window's draws, and a
final fast window; sampling then uses the averaged step size and the last metric.
The first window's metric is the fit's Laplace covariance on the unconstrained scale
when the Hessian is usable, so the first trajectories are already near-isotropic.

Warm-up and sampling run as **one** `lax.scan` over one NUTS kernel whose step size
and metric are carried values (blackjax's `window_adaptation` would trace a second
copy of the kernel, and with an ODE inside every copy costs tens of seconds of
compilation). Each chain adapts on its own; chains run under `jax.vmap` in one
compiled call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def run_chains(logdensity, U0, *, draws, warmup, seed, target_accept, max_tree_depth,
               inverse_mass=None, dense=True, initial_step_size=1.0):
    """`(positions (chains, draws, p), stats dict of (chains, draws) arrays)`."""
    import blackjax
    from blackjax.adaptation.mass_matrix import mass_matrix_adaptation
    from blackjax.adaptation.staged_adaptation import build_schedule
    from blackjax.adaptation.step_size import dual_averaging_adaptation

    mm_init, mm_update, mm_final = mass_matrix_adaptation(not dense)
    da_init, da_update, da_final = dual_averaging_adaptation(target_accept)
    kernel = blackjax.nuts.build_kernel()
    n = warmup + draws
    sched = np.zeros((n, 2), int)  # (stage: 0 fast / 1 slow, end of a slow window)
    sched[:warmup] = np.asarray(build_schedule(warmup))
    in_warmup = np.arange(n) < warmup

    def adapt(a, stage, end, position, acc):
        ss, mm, imm = a
        ss = da_update(ss, acc)
        mm = jax.lax.cond(stage == 1, lambda m: mm_update(m, position), lambda m: m, mm)

        def window_end(c):  # new metric from the window; step size restarts near the average
            ss, mm, imm = c
            mm = mm_final(mm)
            return da_init(da_final(ss)), mm, mm.inverse_mass_matrix

        return jax.lax.cond(end, window_end, lambda c: c, (ss, mm, imm))

    def chain(key, u0):
        p = u0.shape[0]
        mm = mm_init(p, inverse_mass)
        a0 = (da_init(initial_step_size), mm, mm.inverse_mass_matrix)
        s0 = blackjax.nuts.init(u0, logdensity)

        def one(carry, x):
            state, a = carry
            k, stage, end, warm = x
            ss, _, imm = a
            eps = jnp.where(warm, jnp.exp(ss.log_step_size), jnp.exp(ss.log_step_size_avg))
            state, info = kernel(k, state, logdensity, eps, imm, max_tree_depth)
            a_new = adapt(a, stage, end, state.position, info.acceptance_rate)
            a = jax.tree.map(lambda new, old: jnp.where(warm, new, old), a_new, a)
            return (state, a), (state.position, info.is_divergent, info.acceptance_rate,
                                info.num_integration_steps, info.num_trajectory_expansions,
                                info.energy, eps)

        xs = (jax.random.split(key, n), jnp.asarray(sched[:, 0]), jnp.asarray(sched[:, 1], bool),
              jnp.asarray(in_warmup))
        _, out = jax.lax.scan(one, (s0, a0), xs)
        out = jax.tree.map(lambda v: v[warmup:], out)
        pos, div, acc, nsteps, depth, energy, eps = out
        return pos, dict(diverging=div, acceptance_rate=acc, n_steps=nsteps, tree_depth=depth,
                         energy=energy, step_size=eps)

    keys = jax.random.split(jax.random.PRNGKey(seed), U0.shape[0])
    return jax.jit(jax.vmap(chain))(keys, U0)
