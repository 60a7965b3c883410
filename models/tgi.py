r"""Tumour growth inhibition: the Simeoni model driven by one-compartment PK.

Simeoni et al. 2004, Cancer Res 64:1094 ("Predictive pharmacokinetic-pharmacodynamic
modeling of tumor growth kinetics in xenograft models after administration of
anticancer agents"). Proliferating cells $x_1$ grow exponentially (rate $\lambda_0$)
then linearly (rate $\lambda_1$); the drug moves them at rate $k_2 C$ into a chain of
damaged compartments that die with transit rate $k_1$:

$$\dot x_1 = \frac{\lambda_0 x_1}{\big[1 + (\lambda_0 w / \lambda_1)^{\psi}\big]^{1/\psi}} - k_2 C x_1,\quad
\dot x_2 = k_2 C x_1 - k_1 x_2,\quad \dot x_3 = k_1 (x_2 - x_3),\quad \dot x_4 = k_1 (x_3 - x_4),$$

with $w = x_1 + x_2 + x_3 + x_4$ the tumour size and $\psi = 20$ (Simeoni's fixed
value, making the switch sharp). The drug concentration is
$C = A_c / V + C_{ext}$: one-compartment PK with first-order absorption (doses into
`DEPOT`, CMT 1, or IV into `CENT`, CMT 2) plus a constant external concentration
`C_ext` for in vitro wells (there the PK is undosed and `C_ext` is the well's
concentration). One parameter set therefore describes in vitro growth curves,
xenograft arms and clinical tumour sizes; what differs between them (growth rates,
species PK) is set per experiment in a condition table.

Outputs: `size` ($w$; mm^3 in vivo, relative counts in vitro), `diameter` (mm, of a
sphere of volume $w$ mm^3, for clinical sums of diameters) and `C` (mg/L).
Time in days. Default values are illustrative (ours), of the order Simeoni reports
for xenografts, not a particular drug.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from qsp import ODEModel, param

from .blocks import first_order_absorption, linear_elimination

_POS = dict(bounds=(0.0, float("inf")))
PSI = 20.0


class SimeoniTGI(ODEModel):
    """Simeoni tumour growth inhibition with one-compartment oral/IV PK (Simeoni 2004)."""

    KA: float = param(1.0, units="1/day", description="absorption rate constant", **_POS)
    CL: float = param(10.0, units="L/day", description="clearance", **_POS)
    V: float = param(50.0, units="L", description="volume of distribution", **_POS)
    C_ext: float = param(0.0, units="mg/L", description="constant external concentration (in vitro well)", **_POS)
    lambda0: float = param(0.3, units="1/day", description="exponential growth rate", **_POS)
    lambda1: float = param(100.0, units="mm^3/day", description="linear growth rate", **_POS)
    k1: float = param(1.0, units="1/day", description="transit rate of damaged cells", **_POS)
    k2: float = param(0.05, units="L/(mg day)", description="drug potency (kill rate per concentration)", **_POS)
    W0: float = param(100.0, units="mm^3", description="initial tumour size", **_POS)

    states = ("DEPOT", "CENT", "X1", "X2", "X3", "X4")
    time_unit = "day"

    def initial(self):
        return jnp.stack([jnp.zeros(()), jnp.zeros(()), jnp.asarray(self.W0, float),
                          jnp.zeros(()), jnp.zeros(()), jnp.zeros(())])

    def concentration(self, y):
        return jnp.maximum(y[1], 0.0) / self.V + self.C_ext

    def rhs(self, t, y):
        depot, cent, x1, x2, x3, x4 = (y[i] for i in range(6))
        w = jnp.maximum(x1 + x2 + x3 + x4, 0.0)
        c = self.concentration(y)
        absorbed = first_order_absorption(self.KA, depot)
        # [1 + (l0 w / l1)^psi]^(1/psi) in log space: no overflow of the 20th power.
        log_switch = jnp.logaddexp(0.0, PSI * jnp.log(jnp.maximum(self.lambda0 * w / self.lambda1, 1e-300))) / PSI
        growth = self.lambda0 * x1 * jnp.exp(-log_switch)
        kill = self.k2 * c * x1
        return jnp.stack([
            -absorbed,
            absorbed - linear_elimination(self.CL, self.V, cent),
            growth - kill,
            kill - self.k1 * x2,
            self.k1 * (x2 - x3),
            self.k1 * (x3 - x4),
        ])

    def outputs(self, t, y):
        w = y[2] + y[3] + y[4] + y[5]
        return {
            "size": w,
            "diameter": (6.0 * jnp.maximum(w, 0.0) / math.pi) ** (1.0 / 3.0),
            "C": self.concentration(y),
        }
