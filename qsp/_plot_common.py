"""Shared helpers of `qsp.plot`: figure creation on the Agg canvas, input validation,
dropping failed patients, axis labels with units.

Figures are built as `matplotlib.figure.Figure` on a `FigureCanvasAgg`, without
`pyplot`: nothing is shown or kept in pyplot's global figure list, so a loop making
hundreds of figures does not leak them (Jupyter still displays a returned figure).
"""

from __future__ import annotations

import numpy as np


def new_axes(ax=None, figsize=(5.0, 3.6)):
    """`(fig, ax)`: the given axes and its figure, or a new Agg figure with one axes."""
    if ax is not None:
        return ax.figure, ax
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def label(name: str, units: str | None) -> str:
    """An axis label `name (units)`, or `name` when there are no units."""
    return f"{name} ({units})" if units else name


def as_float(x, what: str, ndim: int | tuple | None = None) -> np.ndarray:
    """`x` as a float array, with a clear error naming `what` if it is not numeric or
    has the wrong number of dimensions."""
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be numeric; got {type(x).__name__} ({e}).") from None
    if ndim is not None:
        ok = (a.ndim in ndim) if isinstance(ndim, tuple) else a.ndim == ndim
        if not ok:
            raise ValueError(f"{what} must be {ndim}-dimensional; got shape {a.shape}.")
    return a


def check_same_length(**arrays) -> int:
    """The common length of 1-D-or-more arrays (first axis); error naming both otherwise."""
    items = [(k, len(v)) for k, v in arrays.items() if v is not None]
    for k, n in items[1:]:
        if n != items[0][1]:
            raise ValueError(
                f"{items[0][0]} has {items[0][1]} entries but {k} has {n}; they must match."
            )
    return items[0][1] if items else 0


def check_percentiles(percentiles) -> np.ndarray:
    p = np.asarray(percentiles, dtype=float).reshape(-1)
    if p.size == 0 or np.any((p < 0) | (p > 100)) or np.any(np.diff(p) <= 0):
        raise ValueError(
            f"percentiles={tuple(percentiles)!r} must be strictly increasing values in [0, 100]."
        )
    return p


def population(data, output=None, ts=None, what="data"):
    """`(ts, y, kept)` from a `qsp.Solution` (output `output`, leading axes
    flattened to patients) or an array `(n_patients, n_ts)` with `ts`.

    Patients whose `Solution.status` is not success, or with any non-finite value, are
    dropped; `kept` is the boolean mask of the patients kept (over all of them)."""
    from ._solution import Solution

    if isinstance(data, Solution):
        if output is None:
            raise ValueError(f"{what} is a Solution: pass output= (one of {sorted(data.outputs)}).")
        if output not in data.outputs:
            raise ValueError(f"output={output!r} is not an output of {what}; outputs are {sorted(data.outputs)}.")
        y = np.asarray(data.outputs[output], dtype=float)
        t = np.asarray(data.ts, dtype=float)
        if t.ndim > 1:
            if not np.all(t == t.reshape(-1, t.shape[-1])[0]):
                raise ValueError(f"{what} has per-patient save times; percentile bands need one common time grid.")
            t = t.reshape(-1, t.shape[-1])[0]
        y = y.reshape(-1, y.shape[-1])
        status = np.asarray(data.status).reshape(-1)
        ok = status == 0
    else:
        if ts is None:
            raise ValueError(f"{what} is an array: pass ts= (the time of each column).")
        t = as_float(ts, "ts", ndim=1)
        y = as_float(data, what, ndim=(1, 2))
        y = y.reshape(1, -1) if y.ndim == 1 else y
        if y.shape[1] != len(t):
            raise ValueError(f"{what} has {y.shape[1]} time columns but ts has {len(t)} times; they must match.")
        ok = np.ones(len(y), bool)
    ok = ok & np.all(np.isfinite(y), axis=1)
    return t, y[ok], ok


def dropped_note(n_dropped: int, n_total: int, unit="patients", why="failed or non-finite") -> str:
    """`""` or e.g. `"3 of 50 patients dropped (failed or non-finite)"`."""
    return f"{n_dropped} of {n_total} {unit} dropped ({why})" if n_dropped else ""


def title(ax, text: str | None, note: str = ""):
    """Set the axes title, with a drop note on a second line when there is one."""
    parts = [s for s in (text, note) if s]
    if parts:
        ax.set_title("\n".join(parts), fontsize=9)
