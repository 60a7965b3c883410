"""Public entry points of SBML import, importing libsbml and sympy only when used
(so `import qsp` stays fast). See `qsp._sbml` for the semantics."""

from __future__ import annotations


def load_sbml(source, name=None):
    """An `ODEModel` instance from an SBML file path (or an SBML string): fields named
    by SBML id, states the SBML ids of what varies; see `qsp._sbml`."""
    from ._sbml import load_sbml as _load

    return _load(source, name)


def simulate_sbml(model, ts, regimen=None, *, t0: float = 0.0, **kwargs):
    """`qsp.simulate` for an SBML model, applying its time-triggered events; see
    `qsp._sbml.simulate_sbml`."""
    from ._sbml import simulate_sbml as _sim

    return _sim(model, ts, regimen, t0=t0, **kwargs)
