"""Parameters as typed model fields carrying units, bounds, transform and description.

A model parameter is an ordinary `equinox.Module` field whose metadata says what it
means. `param` builds such a field; `parameter_info` reads the metadata back, so the
CLI, the fitting engine and the documentation all see the same table.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import equinox as eqx

Transform = Literal["log", "logit", "identity"]

_META_KEY = "qsp"


@dataclasses.dataclass(frozen=True)
class ParamInfo:
    """What a parameter means: the metadata stored on its field."""

    name: str
    default: Any
    units: str = ""
    bounds: tuple[float, float] = (-math.inf, math.inf)
    transform: Transform = "identity"
    description: str = ""
    source: str = ""
    shape: tuple[int, ...] = ()


def param(
    default: Any,
    *,
    units: str = "",
    bounds: tuple[float, float] | None = None,
    transform: Transform | None = None,
    description: str = "",
    source: str = "",
    shape: tuple[int, ...] = (),
):
    """A model parameter field.

    **Arguments:**

    - `default`: the nominal value.
    - `units`: e.g. `"L/h"`; shown by `qsp models` and in fits.
    - `bounds`: `(lower, upper)`; defaults to `(0, inf)` for a `"log"` transform and
      `(-inf, inf)` otherwise. Fitting keeps estimates inside them.
    - `transform`: the scale on which the parameter is estimated: `"log"` (positive
      quantities, the default when the lower bound is 0), `"logit"` (fractions within
      finite bounds) or `"identity"`.
    - `description`, `source`: what it is and where its value comes from.
    - `shape`: the shape of one patient's value (`()` for a scalar). A leading axis
      beyond this shape is read as a population axis by `qsp.simulate`.
    """
    if transform is None:
        if bounds is not None and bounds[0] == 0 and math.isinf(bounds[1]):
            transform = "log"
        elif bounds is not None and all(map(math.isfinite, bounds)):
            transform = "logit"
        else:
            transform = "identity"
    if bounds is None:
        bounds = (0.0, math.inf) if transform == "log" else (-math.inf, math.inf)
    if transform not in ("log", "logit", "identity"):
        raise ValueError(
            f"param transform={transform!r} is not known; use 'log', 'logit' or 'identity'."
        )
    lo, hi = float(bounds[0]), float(bounds[1])
    if not lo <= hi:
        raise ValueError(f"param bounds={bounds!r}: lower bound must not exceed upper bound.")
    meta = dict(
        units=units,
        bounds=(lo, hi),
        transform=transform,
        description=description,
        source=source,
        shape=tuple(shape),
    )
    return eqx.field(default=default, metadata={_META_KEY: meta})


def _field_meta(field: dataclasses.Field) -> dict:
    return dict(field.metadata.get(_META_KEY, {}))


def parameter_fields(model) -> list[dataclasses.Field]:
    """The dataclass fields of `model` that hold numeric parameters (not sub-modules,
    not static configuration)."""
    out = []
    for f in dataclasses.fields(model):
        if f.metadata.get("static", False):
            continue
        value = getattr(model, f.name, None)
        if isinstance(value, eqx.Module) or callable(value):
            continue
        out.append(f)
    return out


def parameter_info(model) -> dict[str, ParamInfo]:
    """Metadata of every parameter of `model` (an instance or a class), by name."""
    if isinstance(model, type):
        def numeric_default(f):
            d = f.default
            if d is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
                d = f.default_factory()
            return not (d is dataclasses.MISSING or isinstance(d, eqx.Module) or callable(d))

        fields = [
            f for f in dataclasses.fields(model)
            if not f.metadata.get("static", False) and numeric_default(f)
        ]
        values = {
            f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in fields
        }
    else:
        fields = parameter_fields(model)
        values = {f.name: getattr(model, f.name) for f in fields}
    out = {}
    for f in fields:
        meta = _field_meta(f)
        out[f.name] = ParamInfo(name=f.name, default=values[f.name], **meta)
    return out
