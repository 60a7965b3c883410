r"""Reusable pieces of mechanistic models: PK transfer terms and concentration-effect laws.

Every flagship model composes these rather than re-deriving them, so one test of a
block covers every model that uses it.

PK fluxes follow NONMEM's TRANS conventions (clearances and volumes, amounts in
compartments):

- first-order absorption from a depot: $k_a A_{depot}$
- linear elimination from a compartment of volume $V$: $(CL/V) A$
- intercompartmental distribution: $Q (A_1/V_1 - A_2/V_2)$ (positive from 1 to 2)

Concentration-effect laws:

- Hill/Emax stimulation: $E = E_{max} C^n / (EC_{50}^n + C^n)$
- Hill inhibition: $I = 1 - I_{max} C^n / (IC_{50}^n + C^n)$

Fractional Hill powers $C^n$ have an infinite derivative at $C = 0$ when $n < 1$ and
produce NaN gradients through `jnp.power(0, n)`; `hill_fraction` evaluates
$1 / (1 + (EC_{50}/C)^n)$ on a guarded branch so value and gradient are finite
everywhere, including at zero concentration.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def first_order_absorption(ka, depot):
    """Absorption flux out of a depot, $k_a A_{depot}$ (amount/time)."""
    return ka * depot


def linear_elimination(cl, v, amount):
    """Elimination flux $(CL/V) A$ (amount/time)."""
    return cl / v * amount


def distribution(q, v1, a1, v2, a2):
    """Net flux from compartment 1 to 2, $Q (A_1/V_1 - A_2/V_2)$ (amount/time)."""
    return q * (a1 / v1 - a2 / v2)


def hill_fraction(c, c50, n):
    r"""Occupied fraction $C^n / (C_{50}^n + C^n)$, in [0, 1], with finite gradients
    at $C = 0$ for any $n > 0$. Negative concentrations (solver round-off) count as 0,
    and so do concentrations below 1e-200 (their fraction is below 1e-20 for any
    n >= 0.1), so the forward-mode tangent 1/C never overflows to inf * 0 = NaN."""
    c = jnp.asarray(c)
    pos = c > 1e-200
    safe_c = jnp.where(pos, c, 1.0)
    # (c50/c)^n computed in log space: no 0**n, no overflow for tiny c; the logistic
    # form keeps value and tangent finite for any log ratio (a clip gave NaN tangents
    # in forward mode once the ratio passed the clip, e.g. C = 1e-131).
    log_ratio = n * (jnp.log(c50) - jnp.log(safe_c))
    frac = jax.nn.sigmoid(-log_ratio)
    return jnp.where(pos, frac, 0.0)


def emax(c, emax_, ec50, n=1.0):
    r"""Hill/Emax stimulation $E_{max} C^n/(EC_{50}^n + C^n)$."""
    return emax_ * hill_fraction(c, ec50, n)


def inhibition(c, ic50, n=1.0, imax=1.0):
    r"""Hill inhibition factor $1 - I_{max} C^n/(IC_{50}^n + C^n)$, 1 without drug."""
    return 1.0 - imax * hill_fraction(c, ic50, n)
