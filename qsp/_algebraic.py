r"""`AlgebraicModel`: a model whose outputs are closed-form functions of time and parameters.

In vitro concentration-response data need no ODE: the response is a formula of the
concentration (held constant in each well) and the parameters. An `AlgebraicModel`
has parameter fields like an `ODEModel` (typed, with `qsp.param` metadata) and one
method, `outputs(self, t) -> dict`, vectorised over the array of times `t`.
Per-condition inputs (a concentration, a dose level) are parameters that the
condition table overrides, so `qsp.fit` treats both kinds of model alike.

Three standard curves are provided ready to use:

- `Emax` (Hill / sigmoid Emax), with $C$ the concentration:
  $E = E_0 + E_{max} C^h / (EC_{50}^h + C^h)$.
- `LogLogistic4` (the 4-parameter log-logistic of the R package drc, `LL.4`):
  $y = c + (d - c) / (1 + \exp(b(\log x - \log e)))$.
- `Richards` (generalised logistic growth in time):
  $y(t) = K / (1 + ((K/y_0)^\nu - 1) e^{-r \nu t})^{1/\nu}$.
"""

from __future__ import annotations

import abc

import jax.numpy as jnp

from ._model import ParameterizedModule
from ._params import param


class AlgebraicModel(ParameterizedModule):
    """Base class of closed-form models. Subclass it, give parameters as fields, and
    define `outputs(self, t) -> dict` of arrays shaped like `t`.

    !!! example
        ```python
        class Line(qsp.AlgebraicModel):
            a: float = 0.0
            b: float = 1.0
            def outputs(self, t):
                return {"y": self.a + self.b * t}
        ```
    """

    #: No state vector: kept so generic code can ask any model for its states.
    states = ()
    time_unit = "h"

    @abc.abstractmethod
    def outputs(self, t) -> dict:
        """Named outputs at the times `t` (an array; return arrays of the same shape)."""


_POS = dict(bounds=(0.0, float("inf")))


class Emax(AlgebraicModel):
    """Sigmoid Emax (Hill) concentration-response; output `E` at concentration `C`.

    The response does not depend on time: `C` is set per condition (well)."""

    E0: float = param(0.0, description="response without drug")
    Emax: float = param(1.0, description="maximal drug effect (signed)")
    EC50: float = param(1.0, units="concentration", description="half-maximal concentration", **_POS)
    h: float = param(1.0, units="1", description="Hill coefficient", **_POS)
    C: float = param(0.0, units="concentration", description="drug concentration (condition input)", **_POS)

    def outputs(self, t):
        C = jnp.asarray(self.C, dtype=float)
        # C^h/(EC50^h + C^h) written as a logistic in log C so the gradient is finite at C = 0.
        logc = jnp.log(jnp.where(C > 0, C, 1.0))
        frac = jnp.where(C > 0, 1.0 / (1.0 + jnp.exp(-self.h * (logc - jnp.log(self.EC50)))), 0.0)
        return {"E": jnp.broadcast_to(self.E0 + self.Emax * frac, jnp.shape(t))}


class LogLogistic4(AlgebraicModel):
    """Four-parameter log-logistic dose-response (drc `LL.4`: b, c, d, e) at dose `x`."""

    b: float = param(1.0, description="slope (positive: decreasing response)")
    c: float = param(0.0, description="lower asymptote")
    d: float = param(1.0, description="upper asymptote")
    e: float = param(1.0, units="concentration", description="inflection point (ED50)", **_POS)
    x: float = param(0.0, units="concentration", description="dose (condition input)", **_POS)

    def outputs(self, t):
        x = jnp.asarray(self.x, dtype=float)
        logx = jnp.log(jnp.where(x > 0, x, 1.0))
        # At x = 0 the curve is at d for b > 0 (and c for b < 0).
        y = jnp.where(
            x > 0,
            self.c + (self.d - self.c) / (1.0 + jnp.exp(self.b * (logx - jnp.log(self.e)))),
            jnp.where(self.b > 0, self.d, self.c),
        )
        return {"y": jnp.broadcast_to(y, jnp.shape(t))}


class Richards(AlgebraicModel):
    """Richards (generalised logistic) growth curve `y(t)`; `nu = 1` is the logistic."""

    y0: float = param(1.0, description="value at t = 0", **_POS)
    K: float = param(10.0, description="carrying capacity", **_POS)
    r: float = param(1.0, units="1/time", description="growth rate", **_POS)
    nu: float = param(1.0, units="1", description="shape", **_POS)

    def outputs(self, t):
        t = jnp.asarray(t, dtype=float)
        q = (self.K / self.y0) ** self.nu - 1.0
        return {"y": self.K / (1.0 + q * jnp.exp(-self.r * self.nu * t)) ** (1.0 / self.nu)}
