r"""Local sensitivities by automatic differentiation, and the tornado plot.

The normalised (relative) sensitivity of a scalar summary $y$ of a simulated output to
a parameter $p$ is the elasticity

$$S_p = \frac{\partial \log y}{\partial \log p} = \frac{p}{y}\frac{\partial y}{\partial p},$$

the % change of $y$ per % change of $p$ (dimensionless, so parameters in different
units compare). It is computed as $\frac{1}{y}\,\partial y(p_0 e^{u}) / \partial u$ at
$u = 0$ with `jax.grad` through `qsp.simulate` (reverse mode), which also holds for
negative $p$ or $y$.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ._plot_common import new_axes, title

_REDUCERS = ("auc", "cmax", "last")


def _reducer(reduce):
    from . import endpoints

    if callable(reduce):
        return reduce
    if reduce == "auc":
        return lambda ts, y: endpoints.auc(ts, y)
    if reduce == "cmax":
        return lambda ts, y: endpoints.cmax(y)
    if reduce == "last":
        return lambda ts, y: y[-1]
    raise ValueError(f"reduce={reduce!r} is not known; use one of {_REDUCERS} or a callable f(ts, y) -> scalar.")


def local_sensitivities(model, regimen, ts, output, reduce="auc", *, params=None, **simulate_kwargs) -> dict:
    """Normalised local sensitivities $\\partial \\log y / \\partial \\log p$ (see the
    module docstring) of `y = reduce(ts, outputs[output])` for one patient.

    **Arguments:**

    - `model`, `regimen`, `ts`: as for `qsp.simulate` (one patient, not a population).
    - `output`: name of the model output.
    - `reduce`: `"auc"` (trapezoid over `ts`), `"cmax"`, `"last"` (value at `ts[-1]`), or
      a callable `f(ts, y) -> scalar` written with `jax.numpy`.
    - `params`: parameter names (default: every scalar parameter whose value is not 0;
      the elasticity is 0 at p = 0).
    - `simulate_kwargs`: passed on to `qsp.simulate` (e.g. `rtol`, `atol`).

    Returns a dict `name -> float`, in the order of `params`.
    """
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from ._simulate import simulate

    red = _reducer(reduce)
    values = model.parameters()
    if output not in model.outputs(0.0, model.initial()):
        raise ValueError(f"output={output!r} is not an output of {type(model).__name__}.")
    batched = [n for n, info in type(model).parameter_info().items()
               if n in values and np.ndim(values[n]) > len(info.shape)]
    if batched:
        raise ValueError(f"local_sensitivities needs one patient; parameter {batched[0]!r} has a population "
                         f"axis (shape {np.shape(values[batched[0]])}). Pass one member's model.")
    if params is None:
        names = [n for n, v in values.items() if np.ndim(v) == 0 and float(v) != 0.0]
    else:
        names = list(params)
        for n in names:
            if n not in values:
                raise ValueError(f"params: {type(model).__name__} has no parameter {n!r}; known: {', '.join(values)}.")
            if np.ndim(values[n]) != 0:
                raise ValueError(f"params: {n!r} has shape {np.shape(values[n])}; only scalar parameters "
                                 "of one patient (not a population) are supported.")
            if float(values[n]) == 0.0:
                raise ValueError(f"params: {n}=0, where d log y / d log p is 0 by definition; "
                                 "drop it or use a non-zero value.")
    if not names:
        raise ValueError(f"{type(model).__name__} has no non-zero scalar parameter to differentiate.")
    p0 = jnp.array([float(values[n]) for n in names])
    ts = jnp.asarray(ts, dtype=float)

    def summary(u):
        m = model.replace(**{n: p0[i] * jnp.exp(u[i]) for i, n in enumerate(names)})
        sol = simulate(m, regimen, ts, **simulate_kwargs)
        return red(ts, sol.outputs[output]), sol.status

    (y, status), dy = eqx.filter_jit(jax.value_and_grad(summary, has_aux=True))(jnp.zeros(len(names)))
    if int(status) != 0:
        from ._solution import Status

        raise RuntimeError(f"local_sensitivities: the simulation failed: {Status.message(int(status))}.")
    if not float(y) != 0.0:
        raise ValueError(f"local_sensitivities: the summary y = {float(y)!r} of {output!r}; d log y is undefined.")
    return {n: float(dy[i] / y) for i, n in enumerate(names)}


def tornado(sensitivities: Mapping, *, top=None, baseline=0.0,
            xlabel="normalised sensitivity d log y / d log p", title_text=None, ax=None):
    """Tornado plot: one horizontal bar per parameter, the largest effect on top.

    `sensitivities`: mapping `name -> value` (bars from `baseline`, e.g. the output of
    `local_sensitivities`), or `name -> (low, high)` (the output with the parameter at
    its low and high value: two bars from `baseline`, the output at nominal values).
    `top`: keep only the `top` largest. Non-finite entries are dropped and counted in
    the title."""
    if not isinstance(sensitivities, Mapping) or not sensitivities:
        raise ValueError("sensitivities must be a non-empty mapping name -> value or name -> (low, high).")
    rows = {}
    for k, v in sensitivities.items():
        a = np.asarray(v, dtype=float).reshape(-1)
        if a.size not in (1, 2):
            raise ValueError(f"sensitivities[{k!r}] = {v!r}: expected one number or a (low, high) pair.")
        rows[k] = a
    sizes = {a.size for a in rows.values()}
    if len(sizes) > 1:
        raise ValueError("sensitivities: mix of single values and (low, high) pairs; use one kind.")
    finite = {k: a for k, a in rows.items() if np.all(np.isfinite(a))}
    n_bad = len(rows) - len(finite)
    if not finite:
        raise ValueError("sensitivities: no finite value to plot.")
    order = sorted(finite, key=lambda k: np.max(np.abs(finite[k] - baseline)), reverse=True)[:top]
    order = order[::-1]  # barh draws the first row at the bottom
    fig, ax = new_axes(ax, figsize=(5.0, 0.8 + 0.32 * len(order)))
    y = np.arange(len(order))
    if sizes == {1}:
        w = np.array([finite[k][0] for k in order]) - baseline
        ax.barh(y, w, left=baseline, color=np.where(w >= 0, "C3", "C0"), height=0.7)
    else:
        lo = np.array([finite[k][0] for k in order]) - baseline
        hi = np.array([finite[k][1] for k in order]) - baseline
        ax.barh(y, lo, left=baseline, color="C0", height=0.7, label="low value")
        ax.barh(y, hi, left=baseline, color="C3", height=0.7, label="high value")
        ax.legend(fontsize=7)
    ax.axvline(baseline, color="k", lw=0.8)
    ax.set_yticks(y, [str(k) for k in order])
    ax.set_xlabel(xlabel)
    title(ax, title_text, f"{n_bad} of {len(rows)} parameters dropped (non-finite)" if n_bad else "")
    return fig
