r"""Time-course and goodness-of-fit figures: concentration-time with percentile bands,
visual predictive check (VPC), observed vs predicted, dose-response.

The VPC follows Bergstrand et al. (2011, AAPS J 13:143): observations are binned in
time; in each bin the observed percentiles (default 5th, 50th, 95th) are drawn over the
`ci` interval (default 90%) of the same percentiles computed on each simulated
replicate of the study.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ._plot_common import (
    as_float, check_percentiles, check_same_length, dropped_note, label, new_axes, population, title,
)


def _bands(ax, t, y, p, colour, name, alpha=0.18):
    """Nested bands between percentile pairs (p[i], p[-1-i]) and a line for an odd middle."""
    q = np.percentile(y, p, axis=0)
    k = len(p)
    for i in range(k // 2):
        ax.fill_between(t, q[i], q[k - 1 - i], color=colour, alpha=alpha * (i + 1), lw=0,
                        label=f"{name}P{p[i]:g}-P{p[k - 1 - i]:g}".strip())
    if k % 2:
        ax.plot(t, q[k // 2], color=colour, lw=1.6, label=f"{name}P{p[k // 2]:g}".strip())
    return q


def concentration_time(data, ts=None, *, output=None, percentiles=(5, 50, 95), individuals=0,
                       log=False, units=None, time_unit=None, ylabel=None, title_text=None, ax=None):
    """Concentration (or any output) against time with percentile bands of a population.

    **Arguments:**

    - `data`: a population `qsp.Solution` (with `output=`), an array `(n_patients, n_ts)`
      (with `ts=`), or a mapping `label -> either` to overlay several populations (e.g.
      one per regimen) in different colours.
    - `percentiles`: increasing; pairs from the outside in become nested bands, an odd
      middle one (the median by default) a line.
    - `individuals`: also draw the first `n` patients as thin lines.
    - `log`: log y axis. `units`, `time_unit`: shown in the axis labels.

    Failed patients (`Solution.status != 0`) and patients with non-finite values are
    dropped; the title says how many. Returns the `Figure`.
    """
    p = check_percentiles(percentiles)
    groups = data if isinstance(data, Mapping) else {"": data}
    fig, ax = new_axes(ax)
    notes = []
    for j, (name, d) in enumerate(groups.items()):
        t, y, kept = population(d, output, ts, what=f"data[{name!r}]" if name else "data")
        nd, n = int((~kept).sum()), len(kept)
        if len(y) == 0:
            where = f"data[{name!r}]" if name else "data"
            raise ValueError(f"{where}: all {n} patients failed or are non-finite; nothing to plot.")
        colour = f"C{j}"
        for row in y[:individuals]:
            ax.plot(t, row, color=colour, lw=0.5, alpha=0.5)
        _bands(ax, t, y, p, colour, f"{name} " if name else "")
        if nd:
            notes.append((f"{name}: " if name else "") + dropped_note(nd, n))
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(label("time", time_unit))
    ax.set_ylabel(label(ylabel or output or "concentration", units))
    ax.legend(fontsize=7)
    title(ax, title_text, "; ".join(notes))
    return fig


def vpc(t_obs, y_obs, sim, sim_ts=None, *, output=None, bins=8, percentiles=(5, 50, 95), ci=0.90,
        log=False, units=None, time_unit=None, ylabel=None, title_text=None, ax=None):
    """Visual predictive check: observed points and percentiles over the `ci` interval
    of the simulated percentiles (see the module docstring).

    **Arguments:**

    - `t_obs`, `y_obs`: observation times and values (1-D, same length; NaN values,
      e.g. censored, are skipped and counted in the title).
    - `sim`: simulated replicates `(n_rep, ..., n_t)` at times `sim_ts` (`n_t`); with
      `sim_ts=None` they are replicates of the observed design `(n_rep, n_obs)` at
      `t_obs`. A `qsp.Solution` with a leading replicate axis (and `output=`) works too;
      its failed members are skipped.
    - `bins`: number of time bins (quantiles of `t_obs`) or an increasing array of edges.
    - `ci`: level of the interval of each simulated percentile across replicates.
    """
    from ._solution import Solution

    p = check_percentiles(percentiles)
    if not 0 < ci < 1:
        raise ValueError(f"ci={ci!r} must be a level in (0, 1), e.g. 0.90.")
    t_obs, y_obs = as_float(t_obs, "t_obs", ndim=1), as_float(y_obs, "y_obs", ndim=1)
    check_same_length(t_obs=t_obs, y_obs=y_obs)
    n_fail = n_sim = 0
    if isinstance(sim, Solution):
        if output not in sim.outputs:
            raise ValueError(f"output={output!r} is not an output of sim; outputs are {sorted(sim.outputs)}.")
        s = np.array(sim.outputs[output], dtype=float)
        bad = np.asarray(sim.status) != 0
        n_fail, n_sim = int(bad.sum()), int(bad.size)
        s[bad] = np.nan
        st = np.asarray(sim.ts, dtype=float)
        st = np.broadcast_to(st, s.shape)
    else:
        s = as_float(sim, "sim")
        if s.ndim < 2:
            raise ValueError(f"sim must have a leading replicate axis, shape (n_rep, ..., n_t); got {s.shape}.")
        st = t_obs if sim_ts is None else as_float(sim_ts, "sim_ts", ndim=1)
        if s.shape[-1] != len(st):
            what = "t_obs (sim_ts=None: replicates of the observed design)" if sim_ts is None else "sim_ts"
            raise ValueError(f"sim has {s.shape[-1]} time columns but {what} has {len(st)}; they must match.")
        st = np.broadcast_to(st, s.shape)
    if np.isscalar(bins):
        edges = np.unique(np.quantile(t_obs, np.linspace(0, 1, int(bins) + 1)))
    else:
        edges = as_float(bins, "bins", ndim=1)
        if np.any(np.diff(edges) <= 0):
            raise ValueError(f"bins={bins!r} must be strictly increasing bin edges.")
    nb = len(edges) - 1
    if nb < 1:
        raise ValueError(f"bins: the observations span one time ({edges[0]:g}); pass bin edges, e.g. bins=[t0, t1].")

    def which(t):
        return np.clip(np.searchsorted(edges, t, side="right") - 1, 0, nb - 1)

    keep = np.isfinite(y_obs) & np.isfinite(t_obs)
    bo = which(t_obs)
    bs = which(st).reshape(len(s), -1)
    sf = s.reshape(len(s), -1)
    a = 100 * (1 - ci) / 2
    centre, obs_q, sim_lo, sim_mid, sim_hi = [], [], [], [], []
    for b in range(nb):
        sel = keep & (bo == b)
        if not sel.any():
            continue
        centre.append(np.median(t_obs[sel]))
        obs_q.append(np.percentile(y_obs[sel], p))
        reps = np.array([np.nanpercentile(np.where(bs[r] == b, sf[r], np.nan), p) for r in range(len(sf))
                         if np.isfinite(sf[r][bs[r] == b]).any()])
        if len(reps) == 0:
            raise ValueError(f"no simulated values fall in time bin [{edges[b]:g}, {edges[b + 1]:g}].")
        lo, mid, hi = np.percentile(reps, [a, 50, 100 - a], axis=0)
        sim_lo.append(lo), sim_mid.append(mid), sim_hi.append(hi)
    centre = np.asarray(centre)
    obs_q, sim_lo, sim_mid, sim_hi = map(np.asarray, (obs_q, sim_lo, sim_mid, sim_hi))
    fig, ax = new_axes(ax)
    pts = ax.scatter(t_obs[keep], y_obs[keep], s=8, color="0.45", alpha=0.6, label="observed", zorder=3)
    mid = len(p) // 2 if len(p) % 2 else -1
    handles = {"observed": pts}
    for j, q in enumerate(p):
        colour = "C3" if j == mid else "C0"
        band = ax.fill_between(centre, sim_lo[:, j], sim_hi[:, j], color=colour, alpha=0.2, lw=0,
                               label=f"simulated P{q:g} ({100 * ci:g}% CI)")
        (line,) = ax.plot(centre, obs_q[:, j], color=colour, lw=1.6, marker="o", ms=3, label=f"observed P{q:g}")
        # one legend entry per kind (median vs outer percentiles), not one per percentile
        kind = f"P{q:g}" if j == mid else "P" + "/".join(f"{v:g}" for k, v in enumerate(p) if k != mid)
        handles.setdefault(f"observed {kind}", line)
        handles.setdefault(f"simulated {kind}, {100 * ci:g}% CI", band)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(label("time", time_unit))
    ax.set_ylabel(label(ylabel or output or "observation", units))
    ax.legend(list(handles.values()), list(handles), fontsize=6)
    notes = [dropped_note(int((~keep).sum()), len(keep), "observations", "non-finite"),
             dropped_note(n_fail, n_sim, "simulated patients", "failed")]
    title(ax, title_text or f"VPC ({len(s)} replicates)", "; ".join(n for n in notes if n))
    return fig


def observed_vs_predicted(observed, predicted, *, log=False, groups=None, units=None, name="concentration",
                          title_text=None, ax=None):
    """Observed against predicted with the identity line. Pairs with a non-finite value
    (and, with `log=True`, a non-positive one) are skipped and counted in the title.
    `groups`: optional label per point (coloured by group)."""
    obs, pred = as_float(observed, "observed", ndim=1), as_float(predicted, "predicted", ndim=1)
    check_same_length(observed=obs, predicted=pred, groups=None if groups is None else list(groups))
    keep = np.isfinite(obs) & np.isfinite(pred)
    if log:
        keep &= (obs > 0) & (pred > 0)
    if not keep.any():
        raise ValueError("observed_vs_predicted: no pair of finite (and, for log=True, positive) values to plot.")
    fig, ax = new_axes(ax, figsize=(4.2, 4.0))
    g = np.asarray(["" for _ in obs] if groups is None else list(groups), dtype=object)
    for j, lab in enumerate(dict.fromkeys(g[keep])):
        sel = keep & (g == lab)
        ax.scatter(pred[sel], obs[sel], s=14, alpha=0.75, color=f"C{j}", label=str(lab) or None)
    vals = np.r_[obs[keep], pred[keep]]
    lo, hi = vals.min(), vals.max()
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="identity")
    if log:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # minor labels crowd a narrow log range
            axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(label(f"predicted {name}", units))
    ax.set_ylabel(label(f"observed {name}", units))
    ax.legend(fontsize=7)
    why = "non-finite or non-positive on log axes" if log else "non-finite"
    title(ax, title_text, dropped_note(int((~keep).sum()), len(keep), "points", why))
    return fig


def hill(dose, e0, emax, ec50, n):
    r"""The sigmoid Emax (Hill) curve $E = E_0 + E_{max} d^n / (EC_{50}^n + d^n)$."""
    d = np.asarray(dose, dtype=float)
    return e0 + emax * d ** n / (ec50 ** n + d ** n)


def fit_hill(dose, response):
    """Least-squares fit of `hill` (E0, Emax, EC50 > 0, n > 0) by Levenberg-Marquardt
    (optimistix) on log EC50 and log n; returns a dict of the four estimates."""
    import jax.numpy as jnp
    import optimistix as optx

    d, r = jnp.asarray(dose, dtype=float), jnp.asarray(response, dtype=float)
    pos = d[d > 0]
    lo_i, hi_i = jnp.argmin(d), jnp.argmax(d)

    def resid(u, _):
        e0, emax, lec50, ln = u
        dn = jnp.where(d > 0, jnp.exp(jnp.exp(ln) * jnp.log(jnp.where(d > 0, d, 1.0)) - jnp.exp(ln) * lec50), 0.0)
        return e0 + emax * dn / (1 + dn) - r

    u0 = jnp.array([r[lo_i], r[hi_i] - r[lo_i], jnp.mean(jnp.log(pos)), 0.0])
    sol = optx.least_squares(resid, optx.LevenbergMarquardt(rtol=1e-12, atol=1e-12), u0, max_steps=2000, throw=False)
    e0, emax, lec50, ln = (float(v) for v in sol.value)
    return {"E0": e0, "Emax": emax, "EC50": float(np.exp(lec50)), "n": float(np.exp(ln))}


def dose_response(dose, response, *, fit="hill", curve=None, groups=None, log_dose=True, dose_units=None,
                  units=None, name="response", title_text=None, ax=None):
    """Dose-response points with a fitted curve.

    - `fit="hill"`: fit the sigmoid Emax model (`fit_hill`, per group) and draw it; the
      estimates are in the legend. `fit=None`: points only.
    - `curve`: instead of fitting, a callable `f(dose) -> response` (e.g. a model
      prediction) drawn over the dose range.
    - `log_dose`: log x axis; doses <= 0 (controls) cannot be drawn there and are counted
      in the title (they still enter the fit).
    Non-finite points are skipped. Returns the `Figure`.
    """
    d, r = as_float(dose, "dose", ndim=1), as_float(response, "response", ndim=1)
    check_same_length(dose=d, response=r, groups=None if groups is None else list(groups))
    if fit not in ("hill", None):
        raise ValueError(f"fit={fit!r} is not known; use 'hill' or None (or pass curve=).")
    keep = np.isfinite(d) & np.isfinite(r)
    g = np.asarray(["" for _ in d] if groups is None else list(groups), dtype=object)
    fig, ax = new_axes(ax)
    shown = keep & ((d > 0) if log_dose else True)
    if not shown.any():
        raise ValueError("dose_response: no finite (and, for log_dose=True, positive-dose) points to plot.")
    grid = (np.geomspace(d[shown].min(), d[shown].max(), 200) if log_dose
            else np.linspace(d[keep].min(), d[keep].max(), 200))
    for j, lab in enumerate(dict.fromkeys(g[keep])):
        sel = keep & (g == lab)
        colour = f"C{j}"
        ax.scatter(d[sel & shown], r[sel & shown], s=16, color=colour, label=str(lab) or "data", zorder=3)
        if curve is not None:
            ax.plot(grid, np.asarray(curve(grid), dtype=float), color=colour, lw=1.5, label="model")
        elif fit == "hill":
            est = fit_hill(d[sel], r[sel])
            ax.plot(grid, hill(grid, est["E0"], est["Emax"], est["EC50"], est["n"]), color=colour, lw=1.5,
                    label=f"Hill fit: EC50={est['EC50']:.3g}, n={est['n']:.2g}")
    if log_dose:
        ax.set_xscale("log")
    ax.set_xlabel(label("dose", dose_units))
    ax.set_ylabel(label(name, units))
    ax.legend(fontsize=7)
    nz = int((keep & ~shown).sum())
    notes = [dropped_note(int((~keep).sum()), len(keep), "points", "non-finite"),
             f"{nz} points at dose <= 0 not shown on the log axis" if nz else ""]
    title(ax, title_text, "; ".join(n for n in notes if n))
    return fig
