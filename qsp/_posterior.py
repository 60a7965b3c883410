r"""Bayesian posterior of a fit by NUTS or plain HMC (the default, kept for existing
callers), returned as ArviZ data.

The target is the posterior on the unconstrained scale $u$ ($\theta = T(u)$):

$$\log p(u \mid y) = -\mathrm{NLL}(T(u)) - \text{(negative log prior)} + \sum_j \log\lvert T_j'(u_j)\rvert + c,$$

with the fit's priors (flat on $\theta$ within bounds where none is given).

- `method="nuts"`: the No-U-Turn sampler with Stan's window adaptation, through
  blackjax (see `qsp._nuts`).
- `method="hmc"`: HMC (Duane et al. 1987; Neal 2011, "MCMC using Hamiltonian
  dynamics") with a dense metric from the fit's Hessian (the Laplace covariance on
  $u$), so the posterior is near-isotropic; the step size is tuned during warm-up by
  Nesterov dual averaging to a target acceptance rate (Hoffman & Gelman 2014, section
  3.2); the number of leapfrog steps is drawn uniformly in [L/2, 3L/2] with
  L = ceil(1.6 / step) (a trajectory of about pi/2 in whitened units, jittered so it
  never locks onto a period). It needs a positive definite Hessian at the fit.

Chains run vmapped in one compiled call, from over-dispersed starts (the estimate
plus twice the Laplace spread; for NUTS with each SD capped at 2, or 0.5 when the
Hessian is not usable).
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


METHODS = ("nuts", "hmc")


def sample(result, *, method: str = "hmc", draws: int = 1000, warmup: int = 500, chains: int = 4,
           seed: int = 0, target_accept: float = 0.8, max_tree_depth: int = 10, max_leapfrog: int = 64):
    """Draw from the posterior of `result`'s free parameters (see the module docstring).

    **Arguments:** `method` (`"nuts"`, or `"hmc"`, the default so far), `draws` and `warmup` per chain,
    `chains` (run vmapped), `seed`, `target_accept` (step-size adaptation target),
    `max_tree_depth` (NUTS: at most 2^depth - 1 leapfrog steps per draw),
    `max_leapfrog` (HMC: cap on the jittered trajectory length).

    **Returns:** an `arviz.InferenceData` with `posterior` (natural scale, one variable
    per free parameter, dims chain x draw) and `sample_stats` (`acceptance_rate`,
    `step_size`, `n_steps`, `diverging`; NUTS adds `tree_depth` and `energy`). R-hat
    and ESS: `arviz.summary(idata)` (also `arviz.rhat`, `arviz.ess`).
    """
    import arviz as az

    if method not in METHODS:
        raise ValueError(f"method={method!r} is not known; expected one of {METHODS}.")
    for name, v, lo in (("draws", draws, 1), ("warmup", warmup, 0 if method == "hmc" else 1),
                        ("chains", chains, 1)):
        if not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name}={v!r}; expected an integer >= {lo}.")
    if result.problem.n_free == 0:
        raise ValueError("the fit has no free parameters to sample.")
    pb = result.problem
    u_hat = jnp.asarray(result.u)
    U = _logp_fn(pb)  # potential energy
    cov_u = None
    if result.hessian_ok:
        D = np.asarray(jnp.diag(jax.jacfwd(pb.natural)(u_hat)))
        cov_u = np.asarray(result.cov) / np.outer(D, D)
        cov_u = 0.5 * (cov_u + cov_u.T)
        if not np.all(np.linalg.eigvalsh(cov_u) > 0):
            cov_u = None
    key = jax.random.PRNGKey(seed)
    k_init, k_chains = jax.random.split(key)
    z = jax.random.normal(k_init, (chains, u_hat.size))
    if method == "nuts":
        from ._nuts import run_chains

        # Starts and first metric from the Laplace covariance with each SD capped at 2
        # on the unconstrained scale: at a mode on a flat ridge (e.g. a Michaelis-Menten
        # K_m far below the data) the Laplace SD can be ~70 log units, meaningless as a
        # spread; 2 is Stan's uniform(-2, 2) initialisation width. Starts: the estimate
        # plus twice that spread (over-dispersed, as R-hat assumes).
        seed_cov = None
        if cov_u is not None:
            sd = np.sqrt(np.diag(cov_u))
            cap = np.minimum(sd, 2.0)
            seed_cov = cov_u / np.outer(sd, sd) * np.outer(cap, cap)
        spread = np.linalg.cholesky(seed_cov) if seed_cov is not None else 0.5 * np.eye(u_hat.size)
        U0 = u_hat + 2.0 * (z @ spread.T)
        us, stats = run_chains(lambda u: -U(u), U0, draws=int(draws), warmup=int(warmup), seed=seed + 1,
                               target_accept=target_accept, max_tree_depth=int(max_tree_depth),
                               inverse_mass=None if seed_cov is None else jnp.asarray(seed_cov))
        stats = {k: np.asarray(v) for k, v in stats.items()}
        return _idata(az, pb, us, stats)
    if cov_u is None:
        raise ValueError("the fit's Hessian is not positive definite; the HMC metric needs it "
                         "(use method='nuts', fix non-identifiable parameters or add priors).")
    L_inv = jnp.asarray(np.linalg.cholesky(cov_u))  # M^-1 = cov_u = L L^T; momentum p = L^-T z
    U0 = u_hat + 2.0 * (z @ L_inv.T)  # over-dispersed starts: twice the Laplace spread
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

    us, acc, ns, div, eps = jax.jit(jax.vmap(chain))(jax.random.split(k_chains, chains), U0)
    stats = dict(acceptance_rate=np.asarray(acc), n_steps=np.asarray(ns), diverging=np.asarray(div),
                 step_size=np.repeat(np.asarray(eps)[:, None], draws, axis=1))
    return _idata(az, pb, us, stats)


def _idata(az, pb, us, stats):
    theta = np.asarray(jax.vmap(jax.vmap(pb.natural))(us))
    posterior = {name: theta[:, :, j] for j, name in enumerate(pb.free)}
    return az.from_dict(posterior=posterior, sample_stats=stats)
