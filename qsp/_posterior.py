r"""Bayesian posterior of a fit by Hamiltonian Monte Carlo, returned as ArviZ data.

The target is the posterior on the unconstrained scale $u$ ($\theta = T(u)$):

$$\log p(u \mid y) = -\mathrm{NLL}(T(u)) - \text{(negative log prior)} + \sum_j \log\lvert T_j'(u_j)\rvert + c,$$

with the fit's priors (flat on $\theta$ within bounds where none is given). Sampler:
HMC (Duane et al. 1987; Neal 2011, "MCMC using Hamiltonian dynamics") with a dense
metric from the fit's Hessian (the Laplace covariance on $u$), so the posterior is
near-isotropic; the step size is tuned during warm-up by Nesterov dual averaging to
a target acceptance rate (Hoffman & Gelman 2014, section 3.2); the number of
leapfrog steps is drawn uniformly in [L/2, 3L/2] with L = ceil(1.6 / step) (a
trajectory of about pi/2 in whitened units, jittered so it never locks onto a
period). Chains run vmapped in one compiled call.

**Not NUTS**: the No-U-Turn sampler the issue asks for (numpyro/blackjax) is not
installed here; this fixed-length HMC is what is implemented.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ._experiment import states_allowed


def _logp_fn(pb):
    from ._fit import _fwd_grad

    def logp(u):
        # Elementwise transform: its Jacobian is diagonal, the JVP with ones gives it.
        dtheta = jax.jvp(pb.natural, (u,), (jnp.ones_like(u),))[1]
        jac = jnp.sum(jnp.log(jnp.abs(dtheta)))
        return -pb.nll(u) + jac

    return _fwd_grad(lambda u: -logp(u)) if states_allowed(pb.model) else (lambda u: -logp(u))


def sample(result, *, draws: int = 1000, warmup: int = 500, chains: int = 4, seed: int = 0,
           target_accept: float = 0.8, max_leapfrog: int = 64):
    """Draw from the posterior of `result`'s free parameters (see the module docstring).

    **Returns:** an `arviz.InferenceData` with `posterior` (natural scale, one variable
    per free parameter, dims chain x draw) and `sample_stats` (`acceptance_rate`,
    `step_size`, `n_steps`, `diverging`). Use `arviz.summary(idata)` for R-hat and ESS.
    """
    import arviz as az

    if result.problem.n_free == 0:
        raise ValueError("the fit has no free parameters to sample.")
    if not result.hessian_ok:
        raise ValueError("the fit's Hessian is not positive definite; the HMC metric needs it "
                         "(fix non-identifiable parameters or add priors).")
    pb = result.problem
    u_hat = jnp.asarray(result.u)
    D = np.asarray(jnp.diag(jax.jacfwd(pb.natural)(u_hat)))
    cov_u = np.asarray(result.cov) / np.outer(D, D)
    cov_u = 0.5 * (cov_u + cov_u.T)
    L_inv = np.linalg.cholesky(cov_u)  # M^-1 = cov_u = L L^T; momentum p = L^-T z
    L_inv = jnp.asarray(L_inv)
    U = _logp_fn(pb)  # potential energy
    grad_U = jax.grad(U)

    def kinetic(p):
        v = L_inv.T @ p
        return 0.5 * v @ v

    def leapfrog(u, p, eps, n):
        def body(i, c):
            u, p, g = c
            live = i < n
            p_half = p - 0.5 * eps * g
            u_new = u + eps * (L_inv @ (L_inv.T @ p_half))
            g_new = grad_U(u_new)
            p_new = p_half - 0.5 * eps * g_new
            return (jnp.where(live, u_new, u), jnp.where(live, p_new, p), jnp.where(live, g_new, g))

        return jax.lax.fori_loop(0, max_leapfrog, body, (u, p, grad_U(u)))[:2]

    def transition(u, key, eps):
        k1, k2, k3 = jax.random.split(key, 3)
        z = jax.random.normal(k1, u.shape)
        p = jax.scipy.linalg.solve_triangular(L_inv.T, z, lower=False)
        n_nom = jnp.ceil(1.6 / eps)
        n = jnp.clip(jnp.floor(n_nom * jax.random.uniform(k2, minval=0.5, maxval=1.5)), 1, max_leapfrog)
        u_new, p_new = leapfrog(u, p, eps, n)
        h0 = U(u) + kinetic(p)
        h1 = U(u_new) + kinetic(p_new)
        log_a = jnp.where(jnp.isfinite(h1), jnp.minimum(0.0, h0 - h1), -jnp.inf)
        accept = jnp.log(jax.random.uniform(k3)) < log_a
        return jnp.where(accept, u_new, u), jnp.exp(log_a), n, ~jnp.isfinite(h1) | (h1 - h0 > 1000)

    def chain(key, u0):
        # Warm-up: dual averaging of log step size (Hoffman & Gelman 2014, eqs. 6 and the
        # defaults gamma 0.05, t0 10, kappa 0.75, mu = log(10 eps0)).
        eps0 = 1.0 / math.sqrt(u0.size)
        mu = jnp.log(10 * eps0)

        def warm(c, k):
            u, log_eps, log_eps_bar, h_bar, m = c
            u, a, _, _ = transition(u, k, jnp.exp(log_eps))
            m = m + 1
            h_bar = (1 - 1 / (m + 10)) * h_bar + (target_accept - a) / (m + 10)
            log_eps = mu - jnp.sqrt(m) / 0.05 * h_bar
            w = m ** -0.75
            log_eps_bar = w * log_eps + (1 - w) * log_eps_bar
            return (u, log_eps, log_eps_bar, h_bar, m), None

        kw, ks = jax.random.split(key)
        init = (u0, jnp.log(eps0), jnp.log(eps0), 0.0, 0.0)
        (u, _, log_eps_bar, _, _), _ = jax.lax.scan(warm, init, jax.random.split(kw, warmup))
        eps = jnp.exp(log_eps_bar)

        def draw(u, k):
            u, a, n, div = transition(u, k, eps)
            return u, (u, a, n, div)

        _, (us, acc, ns, div) = jax.lax.scan(draw, u, jax.random.split(ks, draws))
        return us, acc, ns, div, eps

    key = jax.random.PRNGKey(seed)
    k_init, k_chains = jax.random.split(key)
    # Over-dispersed starts: the estimate plus twice the Laplace spread.
    z = jax.random.normal(k_init, (chains, u_hat.size))
    U0 = u_hat + 2.0 * (z @ L_inv.T)
    us, acc, ns, div, eps = jax.jit(jax.vmap(chain))(jax.random.split(k_chains, chains), U0)
    theta = np.asarray(jax.vmap(jax.vmap(pb.natural))(us))
    posterior = {name: theta[:, :, j] for j, name in enumerate(pb.free)}
    stats = dict(acceptance_rate=np.asarray(acc), n_steps=np.asarray(ns), diverging=np.asarray(div),
                 step_size=np.repeat(np.asarray(eps)[:, None], draws, axis=1))
    return az.from_dict(posterior=posterior, sample_stats=stats)
