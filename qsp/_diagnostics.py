"""Goodness-of-fit figures for a `FitResult`: observed vs predicted, residuals over
time, a visual predictive check (VPC) and likelihood profiles (matplotlib).

Residuals are weighted: $(y - f)/s$ (on the log scale for log-normal observables),
so under the fitted error model they are standard normal; censored (below-LLOQ) rows
are drawn at their LLOQ with open markers and excluded from residual plots.

The VPC simulates `n_sim` replicate datasets from the fitted model and error model at
the observed design (same conditions and times; the model has no between-subject
variability, so the spread is the residual error), censors simulated values below
each row's LLOQ like the data, and compares, per observable and time bin, the 5th,
50th and 95th percentiles of the observations with the 90% interval of the same
percentiles over the replicates (Bergstrand et al. 2011, AAPS J 13:143).
"""

from __future__ import annotations

import warnings

import numpy as np


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _lognormal_obs(result) -> set:
    return {result.problem.data.observables[result.problem.data.row_obs[r[0]]]
            for kind, cens, r, a, b in result.problem.groups if kind == "lognormal"}


def plot_obs_vs_pred(result):
    """Observed against predicted, one panel per observable, with the identity line."""
    plt = _plt()
    df = result.predictions()
    obs = list(dict.fromkeys(df["observableId"]))
    logs = _lognormal_obs(result)
    fig, axes = plt.subplots(1, len(obs), figsize=(4 * len(obs), 3.8), squeeze=False)
    for ax, o in zip(axes[0], obs):
        d = df[df["observableId"] == o]
        cen = d["censored"].to_numpy(bool)
        y = np.where(cen, np.nan, d["measurement"].to_numpy(float))
        ax.scatter(d["prediction"][~cen], y[~cen], s=14, alpha=0.7, label="observed")
        if cen.any():
            lloq = result.problem.data.y[d.index.to_numpy()][cen]
            ax.scatter(d["prediction"][cen], lloq, s=14, facecolors="none", edgecolors="C3", label="< LLOQ (at LLOQ)")
        vals = np.r_[d["prediction"].to_numpy(float), result.problem.data.y[d.index.to_numpy()]]
        vals = vals[np.isfinite(vals) & ((vals > 0) if o in logs else True)]
        lo, hi = vals.min(), vals.max()
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        if o in logs:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel(f"predicted {o}")
        ax.set_ylabel(f"observed {o}")
        ax.legend(fontsize=7)
    fig.suptitle("Observed vs predicted")
    fig.tight_layout()
    return fig


def plot_residuals(result):
    """Weighted residuals against time and against prediction, with +/-1.96 lines."""
    plt = _plt()
    df = result.predictions()
    d = df[~df["censored"].to_numpy(bool)]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for o in dict.fromkeys(d["observableId"]):
        s = d[d["observableId"] == o]
        axes[0].scatter(s["time"], s["weighted_residual"], s=12, alpha=0.7, label=o)
        axes[1].scatter(s["prediction"], s["weighted_residual"], s=12, alpha=0.7, label=o)
    for ax, xl in zip(axes, ("time", "prediction")):
        ax.axhline(0, color="k", lw=1)
        for z in (-1.96, 1.96):
            ax.axhline(z, color="k", lw=0.8, ls="--")
        ax.set_xlabel(xl)
        ax.set_ylabel("weighted residual")
    axes[0].legend(fontsize=7)
    fig.suptitle("Residuals")
    fig.tight_layout()
    return fig


def simulate_replicates(result, n_sim: int = 200, seed: int = 0):
    """`(n_sim, n_rows)` replicate observations from the fitted model and error model,
    censored at each row's LLOQ (NaN where censored)."""
    import jax.numpy as jnp

    from ._fit import row_sd

    pb = result.problem
    theta = jnp.asarray(pb.natural(jnp.asarray(result.u)))
    pred = np.asarray(pb.predictions(theta))
    sd = np.asarray(row_sd(pb, theta, jnp.asarray(pred)))
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n_sim, pred.size))
    logs = np.zeros(pred.size, bool)
    for kind, cens, rows, a, b in pb.groups:
        logs[rows] = kind == "lognormal"
    sims = np.where(logs, np.exp(np.log(np.maximum(pred, 1e-300)) + sd * z), pred + sd * z)
    lloq = np.where(pb.data.censored, pb.data.y, -np.inf)
    if "lloq" in pb.data.frame.columns:
        lloq = np.fmax(lloq, np.nan_to_num(pb.data.frame["lloq"].to_numpy(float), nan=-np.inf))
    return np.where(sims < lloq, np.nan, sims)


def plot_vpc(result, n_sim: int = 200, bins: int = 8, seed: int = 0, percentiles=(5, 50, 95)):
    """Visual predictive check per observable (see the module docstring)."""
    plt = _plt()
    pb = result.problem
    df = pb.data.frame
    sims = simulate_replicates(result, n_sim, seed)
    y = np.where(pb.data.censored, np.nan, pb.data.y)
    obs_names = pb.data.observables
    logs = _lognormal_obs(result)
    fig, axes = plt.subplots(1, len(obs_names), figsize=(4.5 * len(obs_names), 3.8), squeeze=False)
    t_all = df["time"].to_numpy(float)
    for ax, k in zip(axes[0], range(len(obs_names))):
        rows = np.flatnonzero(pb.data.row_obs == k)
        t = t_all[rows]
        edges = np.unique(np.quantile(t, np.linspace(0, 1, bins + 1)))
        which = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, max(len(edges) - 2, 0))
        centres, o_pct, s_lo, s_mid, s_hi = [], [], [], [], []
        for b in np.unique(which):
            sel = rows[which == b]
            centres.append(np.median(t_all[sel]))
            with warnings.catch_warnings():  # all-censored bins give all-NaN slices
                warnings.simplefilter("ignore", RuntimeWarning)
                o_pct.append(np.nanpercentile(y[sel], percentiles) if np.isfinite(y[sel]).any()
                             else np.full(len(percentiles), np.nan))
                sp = np.array([np.nanpercentile(s, percentiles) if np.isfinite(s).any()
                               else np.full(len(percentiles), np.nan) for s in sims[:, sel]])
                s_lo.append(np.nanpercentile(sp, 5, axis=0))
                s_mid.append(np.nanpercentile(sp, 50, axis=0))
                s_hi.append(np.nanpercentile(sp, 95, axis=0))
        centres, o_pct = np.array(centres), np.array(o_pct)
        s_lo, s_mid, s_hi = map(np.array, (s_lo, s_mid, s_hi))
        for j, p in enumerate(percentiles):
            colour = "C1" if p == 50 else "C0"
            ax.fill_between(centres, s_lo[:, j], s_hi[:, j], color=colour, alpha=0.2, lw=0)
            ax.plot(centres, s_mid[:, j], color=colour, lw=1, ls="--")
            ax.plot(centres, o_pct[:, j], color=colour, lw=1.5, marker="o", ms=3,
                    label=f"observed P{p}")
        ax.scatter(t, y[rows], s=6, color="grey", alpha=0.4)
        if obs_names[k] in logs:
            ax.set_yscale("log")
        ax.set_xlabel("time")
        ax.set_ylabel(obs_names[k])
        ax.legend(fontsize=7)
    fig.suptitle(f"VPC: 90% bands of simulated percentiles ({n_sim} replicates)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_profiles(profiles: dict):
    """Likelihood profiles (2 delta NLL) with the threshold and the Wald parabola."""
    plt = _plt()
    names = list(profiles)
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.2), squeeze=False)
    for ax, n in zip(axes[0], names):
        p = profiles[n]
        g = p.grid
        ax.plot(g["value"], g["delta"], "o-", ms=3, label="profile")
        est = 0.5 * (p.wald[0] + p.wald[1])
        half = 0.5 * (p.wald[1] - p.wald[0])
        if np.isfinite(half) and half > 0:
            x = np.linspace(g["value"].min(), g["value"].max(), 200)
            ax.plot(x, p.threshold * ((x - est) / half) ** 2, "k:", lw=1, label="Wald")
        ax.axhline(p.threshold, color="C3", lw=1, ls="--")
        ax.set_ylim(0, max(2.5 * p.threshold, 1.0))
        ax.set_xlabel(n)
        ax.set_ylabel("2 ΔNLL")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
