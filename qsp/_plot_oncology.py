r"""Oncology response and survival figures: waterfall, spider plot, Kaplan-Meier.

RECIST 1.1 thresholds (Eisenhauer et al., Eur J Cancer 2009;45:228, section 4.3.1):
partial response at a decrease of at least 30% of the sum of target-lesion diameters
from baseline, progressive disease at an increase of at least 20% (from the nadir; the
waterfall's best change from baseline is the usual approximation). The Kaplan-Meier
estimate and its Greenwood standard error come from `qsp.endpoints.kaplan_meier`.
"""

from __future__ import annotations

import numpy as np

from ._plot_common import as_float, check_same_length, dropped_note, label, new_axes, population, title

#: Default colours of RECIST categories (codes and names of `qsp.endpoints.RECIST`).
RECIST_COLOURS = {"CR": "#1a9850", "PR": "#91cf60", "SD": "#fee08b", "PD": "#d73027", "NE": "#bdbdbd"}


def percent_change(y, baseline=None):
    """`100 (y / baseline - 1)`; `baseline` defaults to the first column of `y`
    (time last)."""
    y = np.asarray(y, dtype=float)
    b = y[..., :1] if baseline is None else np.asarray(baseline, dtype=float)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return 100.0 * (y / b - 1.0)


def best_percent_change(y, baseline=None):
    """Best (smallest) post-baseline % change per patient (the waterfall's bar height).
    With `baseline=None` the first column is the baseline and is excluded."""
    pc = percent_change(y, baseline)
    return np.min(pc[..., 1:] if baseline is None else pc, axis=-1)


def _categories(category, change, pr, pd):
    if category is None:
        return np.where(change <= pr, "PR", np.where(change >= pd, "PD", "SD")).astype(object)
    from .endpoints import RECIST

    c = np.asarray(category, dtype=object)
    return np.array([RECIST.NAMES.get(int(v), str(v)) if isinstance(v, (int, np.integer)) else str(v)
                     for v in c], dtype=object)


def waterfall(change, *, category=None, pr=-30.0, pd=20.0, colours=None, ylabel="best change from baseline",
              title_text=None, ax=None):
    """Waterfall plot: one bar per patient, sorted from the largest increase to the
    deepest decrease, with dashed RECIST lines at `pr` (-30%) and `pd` (+20%).

    **Arguments:**

    - `change`: best % change from baseline per patient (see `best_percent_change`).
    - `category`: per-patient label for the colour (strings, or RECIST codes from
      `qsp.endpoints.best_overall_response`); default: classified by the thresholds
      (PR at <= `pr`, PD at >= `pd`, else SD).
    - `colours`: mapping category -> colour (default `RECIST_COLOURS`, then C0, C1, ...).

    Non-finite changes (failed patients) are dropped and counted in the title.
    """
    c = as_float(change, "change", ndim=1)
    check_same_length(change=c, category=None if category is None else list(category))
    if not pr < 0 < pd:
        raise ValueError(f"thresholds pr={pr!r} and pd={pd!r} must satisfy pr < 0 < pd (RECIST: -30, +20).")
    cat = _categories(category, c, pr, pd)
    keep = np.isfinite(c)
    if not keep.any():
        raise ValueError(f"change: all {len(c)} values are non-finite; nothing to plot.")
    order = np.argsort(-c[keep], kind="stable")
    c, cat = c[keep][order], cat[keep][order]
    pal = dict(RECIST_COLOURS, **(colours or {}))
    extra = [k for k in dict.fromkeys(cat) if k not in pal]
    pal.update({k: f"C{i}" for i, k in enumerate(extra)})
    fig, ax = new_axes(ax, figsize=(6.0, 3.6))
    x = np.arange(len(c))
    for k in dict.fromkeys(cat):
        sel = cat == k
        ax.bar(x[sel], c[sel], width=0.85, color=pal[k], edgecolor="none", label=f"{k} (n={int(sel.sum())})")
    ax.axhline(pr, color="k", ls="--", lw=0.9)
    ax.axhline(pd, color="k", ls="--", lw=0.9)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks([])
    ax.set_xlabel(f"patients (n={len(c)})")
    ax.set_ylabel(label(ylabel, "%"))
    ax.legend(fontsize=7)
    title(ax, title_text, dropped_note(int((~keep).sum()), len(keep)))
    return fig


def spider(data, ts=None, *, output=None, category=None, baseline=None, pr=-30.0, pd=20.0, time_unit=None,
           ylabel="change from baseline", title_text=None, ax=None):
    """Spider plot: % change from baseline over time, one line per patient.

    `data`: a `qsp.Solution` (with `output=`, e.g. the tumour size) or an array
    `(n_patients, n_ts)` with `ts=`, converted by `percent_change(y, baseline)`
    (baseline: the first time point unless given). Coloured by `category` (as in
    `waterfall`) or by the best change against the RECIST lines. Failed patients are
    dropped and counted in the title."""
    t, y, ok = population(data, output, ts)
    nd, n = int((~ok).sum()), len(ok)
    if category is not None:
        category = np.asarray(list(category), dtype=object)
        if len(category) != n:
            raise ValueError(f"category has {len(category)} entries but data has {n} patients; they must match.")
        category = category[ok]
    if baseline is not None:
        baseline = as_float(baseline, "baseline", ndim=1)
        if len(baseline) != n:
            raise ValueError(f"baseline has {len(baseline)} entries but data has {n} patients; they must match.")
        baseline = baseline[ok]
    pc = percent_change(y, baseline)
    best = np.min(pc[:, 1:] if baseline is None and pc.shape[1] > 1 else pc, axis=1)
    cat = _categories(category, best, pr, pd)
    pal = dict(RECIST_COLOURS)
    pal.update({k: f"C{i}" for i, k in enumerate(k for k in dict.fromkeys(cat) if k not in pal)})
    fig, ax = new_axes(ax)
    seen = set()
    for row, k in zip(pc, cat):
        ax.plot(t, row, color=pal[k], lw=1, marker="o", ms=2, label=None if k in seen else k)
        seen.add(k)
    for h in (pr, pd):
        ax.axhline(h, color="k", ls="--", lw=0.9)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel(label("time", time_unit))
    ax.set_ylabel(label(ylabel, "%"))
    ax.legend(fontsize=7)
    title(ax, title_text, dropped_note(nd, n))
    return fig


def kaplan_meier(time, event, *, groups=None, ci=False, level=0.95, censor_ticks=True, time_unit=None,
                 ylabel="survival probability", title_text=None, ax=None):
    """Kaplan-Meier curves (step functions from `qsp.endpoints.kaplan_meier`) with `+`
    ticks at censoring times and, with `ci=True`, pointwise `level` Greenwood bands
    $\\hat S \\pm z\\,\\mathrm{SE}$ clipped to [0, 1].

    `time`, `event` (1 = event, 0 = censored): one per patient; `groups`: optional label
    per patient (one curve each). Patients with NaN time (not evaluable) are dropped and
    counted in the title."""
    from statistics import NormalDist

    from . import endpoints

    t, e = as_float(time, "time", ndim=1), np.asarray(event)
    check_same_length(time=t, event=e, groups=None if groups is None else list(groups))
    if not np.all(np.isin(e, (0, 1))):
        raise ValueError(f"event must be 0 (censored) or 1 (event); got values {sorted(set(e.tolist()))[:5]}.")
    if not 0 < level < 1:
        raise ValueError(f"level={level!r} must be in (0, 1), e.g. 0.95.")
    e = e.astype(bool)
    keep = np.isfinite(t)
    if np.any(t[keep] < 0):
        raise ValueError("time must be >= 0 (time from start of treatment).")
    g = np.asarray(["" for _ in t] if groups is None else list(groups), dtype=object)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    fig, ax = new_axes(ax)
    for j, lab in enumerate(dict.fromkeys(g[keep])):
        sel = keep & (g == lab)
        km = endpoints.kaplan_meier(t[sel], e[sel])
        colour = f"C{j}"
        tt = np.r_[0.0, km.time, t[sel].max()]
        ss = np.r_[1.0, km.survival, km.survival[-1] if len(km.survival) else 1.0]
        name = f"{lab} (n={int(sel.sum())})" if lab else f"n={int(sel.sum())}"
        ax.step(tt, ss, where="post", color=colour, lw=1.6, label=name)
        if ci and len(km.time):
            lo = np.clip(km.survival - z * km.se, 0, 1)
            hi = np.clip(km.survival + z * km.se, 0, 1)
            ax.fill_between(np.r_[0.0, km.time, tt[-1]], np.r_[1.0, lo, lo[-1]], np.r_[1.0, hi, hi[-1]],
                            step="post", color=colour, alpha=0.2, lw=0)
        if censor_ticks:
            tc = t[sel & ~e]
            if len(tc):
                ax.plot(tc, km(tc), ls="none", marker="+", ms=7, color=colour)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(label("time", time_unit))
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    title(ax, title_text, dropped_note(int((~keep).sum()), len(keep), why="no evaluable time"))
    return fig
