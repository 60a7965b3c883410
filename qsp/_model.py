"""`ODEModel`: the base class of every mechanistic model.

A model is an `equinox.Module` whose fields are its parameters. It declares

- `states`: the state names, in the order of the state vector `y`;
- `initial(self)`: the state at the start of the simulation;
- `rhs(self, t, y)`: the vector field dy/dt (without doses: `qsp.simulate` adds them);
- `outputs(self, t, y)`: a dict of named observables (default: every state).

Dosing compartments are addressed by state name or by 1-based NONMEM CMT number
(`states[CMT - 1]`). Bioavailability and absorption lag per compartment come from
`bioavailability()` and `lag()`, which PK models override (NONMEM's F1, ALAG1).

A virtual population is the same model whose parameter leaves carry a leading batch
axis, e.g. `pk2cmt(CL=jnp.array([...]))`: `qsp.simulate` vmaps over it.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from ._params import parameter_fields, parameter_info


class ParameterizedModule(eqx.Module):
    """What every qsp model shares: its parameters are its fields."""

    def parameters(self) -> dict:
        """Current parameter values by name."""
        return {f.name: getattr(self, f.name) for f in parameter_fields(self)}

    @classmethod
    def parameter_info(cls):
        """Units, bounds, transform and description of every parameter, by name."""
        return parameter_info(cls)

    def replace(self, **values) -> "ParameterizedModule":
        """A copy with some parameters replaced, e.g. `model.replace(CL=2.0)`."""
        names = [f.name for f in dataclasses.fields(self)]
        unknown = [k for k in values if k not in names]
        if unknown:
            raise ValueError(
                f"{type(self).__name__} has no parameter {unknown[0]!r}; "
                f"known parameters: {', '.join(names)}."
            )
        return dataclasses.replace(self, **values)


class ODEModel(ParameterizedModule):
    """Base class of ODE models. Subclass it, give parameters as typed fields with
    defaults (optionally `qsp.param(...)` for units, bounds and description), and
    define `states`, `initial`, `rhs` and (optionally) `outputs`.

    !!! example
        ```python
        class Decay(qsp.ODEModel):
            k: float = 0.1
            states = ("A",)
            def initial(self): return jnp.array([1.0])
            def rhs(self, t, y): return -self.k * y
        ```
    """

    states: ClassVar[tuple[str, ...]] = ()
    #: Unit of the model's time axis (documentation; dose and observation times use it).
    time_unit: ClassVar[str] = "h"

    @abc.abstractmethod
    def initial(self) -> Any:
        """The state vector at the start time, ordered as `states`."""

    @abc.abstractmethod
    def rhs(self, t, y) -> Any:
        """dy/dt at time `t` and state `y` (ordered as `states`), without doses."""

    def outputs(self, t, y) -> dict:
        """Named observables at time `t` and state `y`. Default: every state by name."""
        return {name: y[i] for i, name in enumerate(self.states)}

    def bioavailability(self):
        """Fraction of each dose that reaches each compartment (shape `(n_states,)`)."""
        return jnp.ones(len(self.states))

    def lag(self):
        """Absorption lag time of doses into each compartment (shape `(n_states,)`)."""
        return jnp.zeros(len(self.states))

    # -- helpers -----------------------------------------------------------------

    @property
    def n_states(self) -> int:
        return len(self.states)

    def state_index(self, cmt) -> int:
        """0-based index of a compartment given by state name or 1-based CMT number."""
        return resolve_cmt(type(self), cmt)

    def named(self, y) -> dict:
        """`y` as a dict by state name (for readable `rhs` code)."""
        return {name: y[..., i] for i, name in enumerate(self.states)}



def resolve_cmt(model_cls, cmt) -> int:
    """Map a compartment given as a state name or a 1-based CMT number to a 0-based
    state index, with an error naming the valid choices."""
    states = tuple(model_cls.states)
    if isinstance(cmt, str):
        if cmt in states:
            return states.index(cmt)
        raise ValueError(
            f"unknown compartment cmt={cmt!r} for {model_cls.__name__}; "
            f"expected a state name in {states} or a CMT number 1..{len(states)}."
        )
    if isinstance(cmt, (bool, np.bool_)) or not isinstance(cmt, (int, np.integer)):
        raise TypeError(
            f"cmt={cmt!r} must be a state name (str) or a 1-based CMT number (int)."
        )
    if 1 <= int(cmt) <= len(states):
        return int(cmt) - 1
    raise ValueError(
        f"unknown compartment cmt={cmt} for {model_cls.__name__}: CMT numbers are 1-based "
        f"and this model has {len(states)} states {states}."
    )
