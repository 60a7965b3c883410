r"""Clinical tier: re-derive prevalence weights so the calibration arms hit their targets.

Kirouac 2017 weighted its 1000 plausible patients (Table S10 PW) so that the virtual
trials of three phase-1 combinations matched the clinic. The targets implied by the
published weights (`shared/references/mapk.md` §3.1, reproduced to 4 decimals by
`tests/test_mapk_trial.py`) are

| arm | ORR | PD |
|---|---|---|
| cetuximab + vemurafenib | 0.23 | 0.15 |
| vemurafenib + cobimetinib | 0.14 | 0.155 |
| cetuximab + vemurafenib + cobimetinib | 0.37 | 0.15 |

Our re-derivation (not the paper's algorithm, which we could not read): weights
$w = \mathrm{softmax}(z)$ over the patients, fitted by L-BFGS to

$$L(z) = \sum_{a,k} \big(\textstyle\sum_i w_i\, \sigma((s_k - x_{ai})/\epsilon) - y_{ak}\big)^2
 + \lambda\, \mathrm{KL}(w \,\|\, u),$$

where $x_{ai}$ is patient $i$'s day-56 size on arm $a$, $\sigma$ a logistic step of
width $\epsilon$ smoothing the PR ($x < 0.7$) and PD ($x > 1.2$) indicators, and the
KL term to the uniform weights $u$ keeps as many patients as possible in play (Allen
et al. 2016 select by prevalence; this is its smooth, differentiable cousin).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._vpop import PD_ABOVE, PR_BELOW

#: Calibration arms and their (ORR, PD) targets (see the module docstring).
TARGETS = {
    "cetuximab+vemurafenib": (0.23, 0.15),
    "vemurafenib+cobimetinib": (0.14, 0.155),
    "cetuximab+vemurafenib+cobimetinib": (0.37, 0.15),
}


def smooth_rates(w, size, eps):
    """Weighted smooth ORR and PD of sizes `(n_arms, n)` under weights `(n,)`."""
    orr = jax.nn.sigmoid((PR_BELOW - size) / eps) @ w
    pd = jax.nn.sigmoid((size - PD_ABOVE) / eps) @ w
    return orr, pd


def derive_weights(size, targets, *, eps: float = 0.002, lam: float = 1e-4, steps: int = 1000):
    """Prevalence weights (sum 1) such that the weighted ORR and PD of `size`
    (`(n_arms, n_patients)` day-56 sizes of the calibration arms) hit `targets`
    (`(n_arms, 2)`: ORR, PD). Deterministic (starts from uniform weights). With the
    defaults, on the Table S10 patients (table init), the hard-threshold rates land
    within 0.002 of the targets, with an effective sample size 1/sum(w^2) of ~125
    (published PW: ~103)."""
    size = jnp.asarray(size, float)
    y = jnp.asarray(targets, float)
    if size.ndim != 2 or y.shape != (size.shape[0], 2):
        raise ValueError(f"derive_weights: size {size.shape} and targets {y.shape} must be (arms, patients) "
                         "and (arms, 2).")
    ok = jnp.isfinite(size).all(axis=0)
    size = jnp.where(ok, size, 1.0)
    n = size.shape[1]

    def loss(z):
        z = jnp.where(ok, z, -jnp.inf)
        w = jax.nn.softmax(z)
        orr, pd = smooth_rates(w, size, eps)
        fit = jnp.sum((orr - y[:, 0]) ** 2 + (pd - y[:, 1]) ** 2)
        kl = jnp.sum(jnp.where(w > 0, w * jnp.log(jnp.where(w > 0, w * ok.sum(), 1.0)), 0.0))
        return fit + lam * kl

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry, _):
        z, state = carry
        v, g = value_and_grad(z, state=state)
        updates, state = opt.update(g, state, z, value=v, grad=g, value_fn=loss)
        return (optax.apply_updates(z, updates), state), v

    z0 = jnp.zeros(n)
    (z, _), _ = jax.jit(lambda z0: jax.lax.scan(step, (z0, opt.init(z0)), None, length=steps))(z0)
    w = jax.nn.softmax(jnp.where(ok, z, -jnp.inf))
    return np.asarray(w)
