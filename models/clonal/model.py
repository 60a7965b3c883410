r"""The four-clone expected-value model of Poels et al. 2021 (Nat Commun 12:3697).

Clones (order `CLONES`): EGFR ex19del sensitive $n_0$, T790M $n_1$, NRAS $n_2$,
C797S $n_3$. With birth rates $b_k(t) = b_k(C_{daco}(t), C_{osi}(t))$ from a drug-effect
surface, constant death rates $d_k$, and per-division mutation probabilities $\mu_k$
from the sensitive clone (no mutation between resistant types, no competition):

$$\dot n_0 = \big[b_0 (1 - \textstyle\sum_k \mu_k) - d_0\big] n_0,\qquad
\dot n_k = (b_k - d_k)\, n_k + \mu_k b_0 n_0 \quad (k = 1, 2, 3).$$

These are the expected cell numbers of the linear birth-death-mutation branching
process (`stochastic.py` simulates the process itself). Time in hours.

Three ways to compute them:

- `ClonalModel`: the ODE coupled with the PK of `pk.py`, integrated by
  `qsp.simulate` (doses in mg into `OSI_GUT`, `DACO_GUT`).
- `counts_trapezoid`: the authors' closed form (`pred_all` in their
  `predictCount_ubiquity.R`) with cumulative trapezoid integrals on a concentration
  grid: $n_0(T) = n_0(0) e^{\int_0^T b_0(1-\sum\mu) - d_0}$,
  $n_k(T) = \big[n_k(0) + \mu_k \int_0^T n_0 b_0 e^{-\int_0^s (b_k - d_k)} ds\big]
  e^{\int_0^T (b_k - d_k)}$, negative or NaN results set to 0.
- `invitro`: constant concentrations (a well), exact by a matrix exponential.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from qsp import Rodas4, param

from .pk import AbstractOsiDacoPK
from .surfaces import CLONES, AbstractSurface, published_surface, surface as _surface

_CELLS = dict(bounds=(0.0, float("inf")), transform="identity")


def clone_matrix(birth, death, mu):
    """The 4 x 4 matrix M of dn/dt = M n for birth rates `birth (4,)`, death `(4,)` and
    mutation probabilities `mu (3,)` (rows: d n_k/dt)."""
    birth, death, mu = jnp.asarray(birth), jnp.asarray(death), jnp.asarray(mu)
    diag = birth - death
    diag = diag.at[0].add(-birth[0] * jnp.sum(mu))
    M = jnp.diag(diag)
    return M.at[1:, 0].set(mu * birth[0])


class ClonalModel(AbstractOsiDacoPK):
    """Four-clone expected-value model driven by osimertinib and dacomitinib PK
    (Poels et al. 2021). States: the 6 PK states of `OsiDacoPK`, then the cell counts
    `sensitive`, `T790M`, `NRAS`, `C797S`."""

    n_init: jax.Array = param((1e9, 0.0, 0.0, 0.0), units="cells", shape=(4,), **_CELLS,
                              description="initial cells per clone (sensitive, T790M, NRAS, C797S)")
    mu: jax.Array = param((1e-7, 1.67e-10, 1e-9), units="1/division", shape=(3,), bounds=(0.0, 1.0),
                          transform="identity",
                          description="mutation probability per division of a sensitive cell to T790M, "
                          "NRAS, C797S (medians of the paper's virtual patients)",
                          source="Poels 2021 (authors' run_group*.R)")
    surface: AbstractSurface = eqx.field(default_factory=published_surface)

    states = ("OSI_GUT", "OSI", "AZ5104", "DACO_GUT", "DACO", "DACO_P", *CLONES)
    time_unit = "h"

    @staticmethod
    def default_solver(rtol, atol):
        """`qsp.simulate`'s solver for this model when none is passed: `qsp.Rodas4`
        (Rosenbrock, one Jacobian + LU per step, no Newton loop) rather than qsp's
        generic Kvaerno5 + Chord. In the population suite (benchmarks/NOTES.md section
        14, one year of daily osimertinib + dacomitinib, rtol 1e-6 / atol 1e-9, chunks
        of 64) it ran 2.9 patients/s against 1.5 at N = 100 (2.0-2.1x): 2.3x the steps,
        each less than half the cost, and agreed with scipy LSODA at rtol 1e-10 to
        2.8e-6 (Kvaerno5: 1.0e-5). The step tolerances go to the step-size controller;
        Rodas4 has no inner solve to tune. Pass `solver=qsp.default_solver(rtol, atol)`
        for the Kvaerno5 path."""
        return Rodas4()

    def initial(self):
        return jnp.concatenate([jnp.zeros(6), jnp.asarray(self.n_init, dtype=float)])

    def rhs(self, t, y):
        daco, osi = self.effect_concentrations(y[:6])
        M = clone_matrix(self.surface.birth(daco, osi), self.surface.death, jnp.asarray(self.mu))
        return jnp.concatenate([self.pk_rhs(y[:6]), M @ y[6:]])

    def outputs(self, t, y):
        out = self.pk_outputs(y[:6])
        out.update({name: y[6 + k] for k, name in enumerate(CLONES)})
        out["total"] = jnp.sum(y[6:])
        out["resistant_fraction"] = jnp.sum(y[7:]) / jnp.maximum(out["total"], 1e-300)
        return out


def _cumtrapz(t, f):
    """Cumulative trapezoid integral along the last axis of `f` (starting at 0)."""
    inc = 0.5 * jnp.diff(t) * (f[..., 1:] + f[..., :-1])
    return jnp.concatenate([jnp.zeros(f.shape[:-1] + (1,)), jnp.cumsum(inc, axis=-1)], axis=-1)


def counts_trapezoid(ts, daco, osi, n_init, mu, surface: AbstractSurface | None = None, *, path=False):
    """The authors' closed form with trapezoid integrals (module docstring).

    **Arguments:** `ts (n,)` grid (h), `daco`, `osi` (n,) effect concentrations (nM) on
    it, `n_init (4,)` counts at `ts[0]`, `mu (3,)`, `surface` (default: published).
    **Returns:** counts `(4,)` at `ts[-1]`, or `(n, 4)` at every grid time with
    `path=True`. Negative or NaN counts are set to 0 as in the authors' code."""
    surface = published_surface() if surface is None else surface
    ts = jnp.asarray(ts, dtype=float)
    n_init, mu = jnp.asarray(n_init, dtype=float), jnp.asarray(mu, dtype=float)
    b = surface.birth(daco, osi).T  # (4, n)
    g = b - surface.death[:, None]
    I0 = _cumtrapz(ts, b[0] * (1.0 - jnp.sum(mu)) - surface.death[0])
    n0 = n_init[0] * jnp.exp(I0)
    Ik = _cumtrapz(ts, g[1:])  # (3, n)
    feed = _cumtrapz(ts, n0 * b[0] * jnp.exp(-Ik))
    nk = (n_init[1:, None] + mu[:, None] * feed) * jnp.exp(Ik)
    out = jnp.concatenate([n0[None], nk], axis=0).T
    out = jnp.where(jnp.isnan(out) | (out < 0), 0.0, out)
    return out if path else out[-1]


def invitro(counts, daco_nM, osi_nM, days, surface="published", *, mu=(0.0, 0.0, 0.0)):
    """Expected total cell count of a well under constant drug concentrations.

    **Arguments:**

    - `counts`: cells seeded per clone, a dict by clone name (`"sensitive"`,
      `"T790M"`, `"NRAS"`, `"C797S"`; missing clones are 0).
    - `daco_nM`, `osi_nM`: constant concentrations in the medium (nM).
    - `days`: times (days) at which to report the count.
    - `surface`: `"published"` (bounded logistic), `"monotone"` (ours) or a surface.
    - `mu`: mutation probabilities per division to T790M, NRAS, C797S (default 0: a
      3-day assay of one line).

    **Returns:** the expected total count at each of `days`, exact
    ($n(t) = e^{Mt} n(0)$, `clone_matrix`), shape of `days`.
    """
    unknown = set(counts) - set(CLONES)
    if unknown:
        raise ValueError(f"invitro counts: unknown clone {sorted(unknown)[0]!r}; expected names in {CLONES}.")
    surf = _surface(surface) if isinstance(surface, str) else surface
    if not isinstance(surf, AbstractSurface):
        raise TypeError(f"invitro surface={surface!r}; expected 'published', 'monotone' or a surface module.")
    n0 = jnp.stack([jnp.asarray(counts.get(c, 0.0), dtype=float) for c in CLONES])
    days_arr = jnp.asarray(days, dtype=float)
    if not isinstance(days_arr, jax.core.Tracer) and np.any(np.asarray(days_arr) < 0):
        raise ValueError(f"invitro days={days!r} must be >= 0.")
    M = clone_matrix(surf.birth(daco_nM, osi_nM), surf.death, jnp.asarray(mu, dtype=float))
    hours = 24.0 * days_arr.reshape(-1)
    n = jax.vmap(lambda h: jax.scipy.linalg.expm(M * h) @ n0)(hours)
    return jnp.sum(n, axis=-1).reshape(days_arr.shape)
