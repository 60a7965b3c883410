"""Optimizers for `qsp.fit`: one start's solve, the starts themselves.

`_make_solver(problem, method, ...)` returns `solve_one(u0) -> (u, nll, converged,
steps)`, written for `jax.vmap` over starts: Levenberg-Marquardt (optimistix) on the
residuals, BFGS (optimistix; with a dogleg trust region for ODE models), Adam or
L-BFGS (optax) in a `lax.while_loop`. `latin_hypercube` draws the starts.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx

from ._experiment import states_allowed
from ._likelihood import Problem


class TrustBFGS(optx.AbstractBFGS):
    """BFGS with a trust region (dogleg) instead of a line search: the first steps are
    bounded by the trust radius rather than by the raw gradient, so a start far from
    the optimum cannot jump to parameters where the model overflows."""

    rtol: float
    atol: float
    norm: Any = optx.max_norm
    use_inverse: bool = False
    search: Any = optx.ClassicalTrustRegion()
    descent: Any = optx.DoglegDescent(linear_solver=lx.Cholesky())
    verbose: Any = staticmethod(lambda **kwargs: None)


def _fwd_grad(f):
    """`f` whose reverse-mode gradient is computed by forward mode (p JVPs): ODE solves
    run with diffrax's ForwardMode, which cannot be transposed, and with few
    parameters forward sensitivities are also the cheaper ones."""

    @jax.custom_vjp
    def g(u):
        return f(u)

    def fwd(u):
        val, lin = jax.linearize(f, u)
        grad = jax.vmap(lin)(jnp.eye(u.shape[0], dtype=u.dtype))
        return val, grad

    def bwd(grad, ct):
        return (ct * grad,)

    g.defvjp(fwd, bwd)
    return g


def _make_solver(pb: Problem, method: str, rtol, atol, max_steps, learning_rate):
    nll = (lambda u: pb.nll(u)) if not states_allowed(pb.model) else _fwd_grad(lambda u: pb.nll(u))
    n = pb.data.n

    def finish(u):
        if method == "lm" and pb.profiled_sigma is not None:
            # NLS: the additive sigma has its closed-form ML value sqrt(RSS / n).
            r = pb.residuals(u)
            sigma = jnp.sqrt(jnp.sum(r[:n] ** 2) / n)
            theta = pb.natural(u).at[pb.profiled_sigma].set(sigma)
            u = _unconstrained_jax(pb, theta)
        return u

    def solve_one(u0):
        if method == "lm":
            sol = optx.least_squares(lambda u, _: pb.residuals(u), optx.LevenbergMarquardt(rtol, atol),
                                     u0, max_steps=max_steps, throw=False)
            u, ok, steps = sol.value, sol.result == optx.RESULTS.successful, sol.stats["num_steps"]
        elif method == "bfgs":
            # ODE models: trust-region BFGS, so early steps cannot throw the solver into
            # overflowing parameters; closed-form models: the line-search BFGS, which
            # crosses flat regions (e.g. EC50 -> inf) better from a single start.
            bfgs = TrustBFGS(rtol, atol) if states_allowed(pb.model) else optx.BFGS(rtol, atol)
            sol = optx.minimise(lambda u, _: nll(u), bfgs, u0, max_steps=max_steps, throw=False)
            u, ok, steps = sol.value, sol.result == optx.RESULTS.successful, sol.stats["num_steps"]
        else:
            u, ok, steps = _optax_run(nll, u0, method, max_steps, learning_rate, rtol, atol)
        u = finish(u)
        return u, pb.nll(u), ok, steps

    return solve_one


def _unconstrained_jax(pb, theta):
    lo = jnp.where(np.isfinite(pb.lo), pb.lo, 0.0)
    hi = jnp.where(np.isfinite(pb.hi), pb.hi, 0.0)
    return jnp.select(
        [pb.code == 1, pb.code == 2, pb.code == 3],
        [jnp.log(theta - lo), jnp.log(hi - theta), jnp.log((theta - lo) / (hi - theta))],
        theta,
    )


def _optax_run(nll, u0, method, max_steps, learning_rate, rtol, atol):
    import optax

    if method == "adam":
        opt = optax.adam(learning_rate)
        vg = jax.value_and_grad(nll)

        def step(carry):
            u, state, k, f_old, _ = carry
            f, g = vg(u)
            upd, state = opt.update(g, state, u)
            u = optax.apply_updates(u, upd)
            done = jnp.abs(f - f_old) < atol + rtol * jnp.abs(f)
            return u, state, k + 1, f, done
    else:
        opt = optax.lbfgs()
        vg = optax.value_and_grad_from_state(nll)

        def step(carry):
            u, state, k, f_old, _ = carry
            f, g = vg(u, state=state)
            upd, state = opt.update(g, state, u, value=f, grad=g, value_fn=nll)
            u = optax.apply_updates(u, upd)
            done = jnp.max(jnp.abs(g)) < atol + rtol * jnp.abs(f)
            return u, state, k + 1, f, done

    carry = (u0, opt.init(u0), jnp.asarray(0), jnp.asarray(jnp.inf, u0.dtype), jnp.asarray(False))
    u, _, k, _, done = jax.lax.while_loop(lambda c: (~c[4]) & (c[2] < max_steps), step, carry)
    return u, done, k


def latin_hypercube(pb: Problem, n: int, seed: int = 0, start_bounds=None, spread: float = 10.0) -> np.ndarray:
    """`n` natural-scale starts: the initial values first, then a Latin hypercube.

    Sampling box per parameter: `start_bounds[name]` if given; else the bounds when
    both are finite (uniform), else a factor `spread` either side of the initial value
    (log-uniform) for positive parameters, else initial +/- spread max(|initial|, 1)."""
    rng = np.random.default_rng(seed)
    p = pb.n_free
    out = np.tile(pb.init, (n, 1))
    if n == 1:
        return out
    m = n - 1
    cells = (np.argsort(rng.random((p, m)), axis=1).T + rng.random((m, p))) / m  # (m, p) in [0, 1)
    for j, name in enumerate(pb.free):
        x0, lo, hi = pb.init[j], pb.lo[j], pb.hi[j]
        box = (start_bounds or {}).get(name)
        if box is not None:
            a, b = map(float, box)
            out[1:, j] = a + (b - a) * cells[:, j]
            continue
        if np.isfinite(lo) and np.isfinite(hi):
            out[1:, j] = lo + (hi - lo) * (0.005 + 0.99 * cells[:, j])
        elif np.isfinite(lo) and x0 - lo > 0:
            out[1:, j] = lo + (x0 - lo) * spread ** (2 * cells[:, j] - 1)
        else:
            w = spread * max(abs(x0), 1.0)
            out[1:, j] = x0 - w + 2 * w * cells[:, j]
        out[1:, j] = np.clip(out[1:, j], np.nextafter(lo, np.inf), np.nextafter(hi, -np.inf))
    return out


