r"""Compartmental PK models in NONMEM TRANS conventions (ADVAN2/TRANS2, ADVAN4/TRANS4).

`pk1cmt` (states DEPOT=1, CENT=2):

$$\dot A_d = -k_a A_d, \qquad \dot A_c = k_a A_d - \frac{CL}{V} A_c, \qquad C_P = A_c / V.$$

`pk2cmt` (states DEPOT=1, CENT=2, PERIPH=3):

$$\dot A_d = -k_a A_d,\quad
\dot A_c = k_a A_d - \frac{CL}{V_1}A_c - Q\Big(\frac{A_c}{V_1} - \frac{A_p}{V_2}\Big),\quad
\dot A_p = Q\Big(\frac{A_c}{V_1} - \frac{A_p}{V_2}\Big),\quad C_P = A_c/V_1.$$

Doses into DEPOT (CMT 1) are oral: scaled by bioavailability `F1` and delayed by
`ALAG1`; doses into CENT (CMT 2) are IV. Units: time h, amounts mg, volumes L,
clearances L/h, so `CP` is in mg/L. The default values are illustrative (ours),
not a particular drug.
"""

from __future__ import annotations

import jax.numpy as jnp

from qsp import ODEModel, param

from .blocks import distribution, first_order_absorption, linear_elimination

_POS = dict(bounds=(0.0, float("inf")))


class pk1cmt(ODEModel):
    """One-compartment PK with first-order absorption (NONMEM ADVAN2 TRANS2)."""

    CL: float = param(1.0, units="L/h", description="clearance", **_POS)
    V: float = param(10.0, units="L", description="volume of distribution", **_POS)
    KA: float = param(1.0, units="1/h", description="first-order absorption rate constant", **_POS)
    F1: float = param(1.0, units="1", bounds=(0.0, 1.0), description="bioavailability of DEPOT doses")
    ALAG1: float = param(0.0, units="h", bounds=(0.0, float("inf")), transform="identity",
                         description="absorption lag time of DEPOT doses")

    states = ("DEPOT", "CENT")

    def initial(self):
        return jnp.zeros(2)

    def rhs(self, t, y):
        depot, cent = y[0], y[1]
        absorbed = first_order_absorption(self.KA, depot)
        return jnp.stack([-absorbed, absorbed - linear_elimination(self.CL, self.V, cent)])

    def outputs(self, t, y):
        return {"CP": y[1] / self.V, "DEPOT": y[0], "CENT": y[1]}

    def bioavailability(self):
        return jnp.stack([jnp.asarray(self.F1, dtype=float), jnp.ones(())])

    def lag(self):
        return jnp.stack([jnp.asarray(self.ALAG1, dtype=float), jnp.zeros(())])


class pk2cmt(ODEModel):
    """Two-compartment PK with first-order absorption (NONMEM ADVAN4 TRANS4)."""

    CL: float = param(1.0, units="L/h", description="clearance", **_POS)
    V1: float = param(10.0, units="L", description="central volume", **_POS)
    Q: float = param(2.0, units="L/h", description="intercompartmental clearance", **_POS)
    V2: float = param(20.0, units="L", description="peripheral volume", **_POS)
    KA: float = param(1.0, units="1/h", description="first-order absorption rate constant", **_POS)
    F1: float = param(1.0, units="1", bounds=(0.0, 1.0), description="bioavailability of DEPOT doses")
    ALAG1: float = param(0.0, units="h", bounds=(0.0, float("inf")), transform="identity",
                         description="absorption lag time of DEPOT doses")

    states = ("DEPOT", "CENT", "PERIPH")

    def initial(self):
        return jnp.zeros(3)

    def rhs(self, t, y):
        depot, cent, periph = y[0], y[1], y[2]
        absorbed = first_order_absorption(self.KA, depot)
        to_periph = distribution(self.Q, self.V1, cent, self.V2, periph)
        return jnp.stack([
            -absorbed,
            absorbed - linear_elimination(self.CL, self.V1, cent) - to_periph,
            to_periph,
        ])

    def outputs(self, t, y):
        return {"CP": y[1] / self.V1, "DEPOT": y[0], "CENT": y[1], "PERIPH": y[2]}

    def bioavailability(self):
        return jnp.stack([jnp.asarray(self.F1, dtype=float), jnp.ones(()), jnp.ones(())])

    def lag(self):
        return jnp.stack([jnp.asarray(self.ALAG1, dtype=float), jnp.zeros(()), jnp.zeros(())])
