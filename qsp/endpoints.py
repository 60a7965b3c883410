r"""Clinical endpoints computed from simulated outputs (model-agnostic).

Arrays are `(..., n_ts)` with time last (as in `Solution.outputs`); leading axes are
patients. Exposure metrics are differentiable JAX functions (dose optimisation takes
gradients through them); response, progression and survival summaries are
post-processing.

- Exposure: `cmax`, `tmax`, `auc` (linear trapezoid on the save grid), `ctrough`
  (linear interpolation at given times).
- RECIST 1.1 (Eisenhauer et al., Eur J Cancer 2009;45:228, section 4.3.1) on the sum of
  target-lesion diameters (SLD): complete response (CR) when SLD falls to `cr_below`
  (0: disappearance), partial response (PR) at a decrease of at least 30% from
  baseline, progressive disease (PD) at an increase of at least 20% *and* at least 5 mm
  over the nadir (the smallest SLD on study so far, baseline included), stable disease
  (SD) otherwise. `best_overall_response` is the best response recorded up to the first
  PD; unconfirmed (no 4-week confirmation and no minimum SD duration).
- `time_to_progression`, `kaplan_meier` (product-limit estimate with Greenwood SE).
- Toxicity: `grade` = number of grade thresholds an output reaches (e.g. CTCAE-style
  cut-offs on a cytokine), `incidence`.
- `bootstrap_ci`: percentile bootstrap intervals of any statistic.
"""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np

# -- exposure ------------------------------------------------------------------------------


def cmax(y):
    """Maximum over the save times (last axis)."""
    return jnp.max(jnp.asarray(y), axis=-1)


def tmax(ts, y):
    """Time of the maximum (first one if tied)."""
    y = jnp.asarray(y)
    ts = jnp.broadcast_to(jnp.asarray(ts, dtype=float), y.shape)
    return jnp.take_along_axis(ts, jnp.argmax(y, axis=-1)[..., None], axis=-1)[..., 0]


def auc(ts, y, t0=None, t1=None):
    r"""Area under `y` by the linear trapezoidal rule on the save grid,
    $\sum_k \tfrac12 (t_{k+1}-t_k)(y_k + y_{k+1})$ over intervals inside `[t0, t1]`
    (default: the whole grid). Exact for piecewise-linear `y`; include `t0` and `t1` in
    the grid."""
    y = jnp.asarray(y)
    ts = jnp.broadcast_to(jnp.asarray(ts, dtype=float), y.shape)
    dt = jnp.diff(ts, axis=-1)
    inside = jnp.ones_like(dt, dtype=bool)
    if t0 is not None:
        inside = inside & (ts[..., :-1] >= t0)
    if t1 is not None:
        inside = inside & (ts[..., 1:] <= t1)
    return jnp.sum(jnp.where(inside, 0.5 * dt * (y[..., 1:] + y[..., :-1]), 0.0), axis=-1)


def ctrough(ts, y, at):
    """`y` at time(s) `at` (e.g. just before the next dose), linearly interpolated.
    Returns `(...)` for a scalar `at`, `(..., len(at))` for a sequence."""
    y = jnp.asarray(y)
    ts = jnp.asarray(ts, dtype=float)
    at_arr = jnp.atleast_1d(jnp.asarray(at, dtype=float))
    flat = y.reshape(-1, y.shape[-1])
    out = jax.vmap(lambda row: jnp.interp(at_arr, ts, row))(flat)
    out = out.reshape(y.shape[:-1] + at_arr.shape)
    return out[..., 0] if jnp.ndim(at) == 0 else out


# -- RECIST ----------------------------------------------------------------------------------


class RECIST:
    """Response codes (ordered best to worst; 0 = not evaluable, e.g. a failed simulation)."""

    NE, CR, PR, SD, PD = 0, 1, 2, 3, 4
    NAMES = {0: "NE", 1: "CR", 2: "PR", 3: "SD", 4: "PD"}


def recist_response(sld, baseline=None, *, cr_below: float = 0.0, pr_drop: float = 0.30,
                    pd_rise: float = 0.20, pd_abs: float = 5.0):
    """RECIST 1.1 response at each assessment, shape `(..., n_assessments)`.

    `sld`: sums of diameters (mm) at the assessments; `baseline` defaults to the first
    column, which is then not an assessment. Thresholds per RECIST 1.1 section 4.3.1."""
    sld = np.asarray(sld, dtype=float)
    if baseline is None:
        baseline, sld = sld[..., 0], sld[..., 1:]
    baseline = np.asarray(baseline, dtype=float)[..., None]
    prior = np.concatenate([baseline, sld[..., :-1]], axis=-1)
    nadir = np.minimum.accumulate(prior, axis=-1)
    pd = (sld >= (1 + pd_rise) * nadir) & (sld - nadir >= pd_abs)
    cr = sld <= cr_below
    pr = sld <= (1 - pr_drop) * baseline
    code = np.where(pd, RECIST.PD, np.where(cr, RECIST.CR, np.where(pr, RECIST.PR, RECIST.SD)))
    bad = ~np.isfinite(sld) | ~np.isfinite(baseline)
    return np.where(bad, RECIST.NE, code).astype(int)


def best_overall_response(sld, baseline=None, **thresholds):
    """Best RECIST response (CR < PR < SD < PD) up to and including the first PD; NE for
    patients with a non-finite SLD."""
    code = recist_response(sld, baseline, **thresholds)
    is_pd = code == RECIST.PD
    before = np.cumsum(is_pd, axis=-1) - is_pd == 0  # assessments up to the first PD
    best = np.min(np.where(before & (code != RECIST.NE), code, 99), axis=-1)
    ne = np.any(code == RECIST.NE, axis=-1)
    return np.where(ne | (best == 99), RECIST.NE, best).astype(int)


def objective_response_rate(bor) -> float:
    """Fraction of evaluable patients with best overall response CR or PR."""
    bor = np.asarray(bor)
    ev = bor != RECIST.NE
    return float(np.mean((bor[ev] == RECIST.CR) | (bor[ev] == RECIST.PR))) if ev.any() else float("nan")


def time_to_progression(ts, sld, **thresholds):
    """(time, event): the first assessment with RECIST PD (event 1), else the last
    assessment time (censored, event 0). `ts[0]` and `sld[..., 0]` are the baseline."""
    ts = np.asarray(ts, dtype=float)
    code = recist_response(sld, **thresholds)
    t_ass = np.broadcast_to(ts[..., 1:], code.shape)
    is_pd = code == RECIST.PD
    event = is_pd.any(axis=-1)
    first = np.argmax(is_pd, axis=-1)
    t = np.where(event, np.take_along_axis(t_ass, first[..., None], axis=-1)[..., 0], t_ass[..., -1])
    ne = np.any(code == RECIST.NE, axis=-1)
    return np.where(ne, np.nan, t), event.astype(int)


# -- survival ---------------------------------------------------------------------------------


@dataclasses.dataclass
class KaplanMeier:
    """Product-limit estimate: S(t) just after each distinct event time."""

    time: np.ndarray
    survival: np.ndarray
    at_risk: np.ndarray
    events: np.ndarray
    se: np.ndarray  # Greenwood

    def __call__(self, t):
        """S(t) (right-continuous step function; 1 before the first event)."""
        i = np.searchsorted(self.time, np.asarray(t, dtype=float), side="right")
        return np.concatenate([[1.0], self.survival])[i]

    @property
    def median(self) -> float:
        """Smallest time with S(t) <= 0.5 (NaN if never reached)."""
        hit = np.flatnonzero(self.survival <= 0.5)
        return float(self.time[hit[0]]) if len(hit) else float("nan")


def kaplan_meier(time, event) -> KaplanMeier:
    r"""Kaplan-Meier estimate $S(t) = \prod_{t_i \le t} (1 - d_i / n_i)$ with Greenwood's
    variance $S^2 \sum d_i / (n_i (n_i - d_i))$. Patients with NaN time are dropped.
    Censored at time t means still at risk at t (events before censorings at ties)."""
    time, event = np.asarray(time, dtype=float), np.asarray(event).astype(bool)
    if time.shape != event.shape:
        raise ValueError(f"kaplan_meier: time {time.shape} and event {event.shape} differ in shape.")
    keep = np.isfinite(time)
    time, event = time[keep], event[keep]
    ut, d = np.unique(time[event], return_counts=True)
    n_risk = (len(time) - np.searchsorted(np.sort(time), ut, side="left")).astype(float)
    d = d.astype(float)
    s = np.cumprod(1.0 - d / n_risk)
    with np.errstate(divide="ignore", invalid="ignore"):
        gw = np.cumsum(np.where(n_risk > d, d / (n_risk * (n_risk - d)), np.inf))
        se = np.where(s > 0, s * np.sqrt(gw), 0.0)  # Greenwood is undefined once S = 0
    return KaplanMeier(time=ut, survival=s, at_risk=n_risk, events=d, se=se)


# -- toxicity ---------------------------------------------------------------------------------


def grade(y, thresholds):
    """Toxicity grade per patient: how many of the increasing `thresholds` the maximum of
    `y` over time reaches (0 = none). NaN outputs give grade -1 (not evaluable)."""
    th = np.asarray(thresholds, dtype=float)
    if th.ndim != 1 or np.any(np.diff(th) <= 0):
        raise ValueError(f"grade thresholds={thresholds!r} must be a strictly increasing 1-D sequence.")
    peak = np.max(np.asarray(y, dtype=float), axis=-1)
    g = np.sum(peak[..., None] >= th, axis=-1)
    return np.where(np.isfinite(peak), g, -1)


def incidence(grades, at_least: int = 1) -> float:
    """Fraction of evaluable patients (grade >= 0) with grade >= `at_least`."""
    g = np.asarray(grades)
    ev = g >= 0
    return float(np.mean(g[ev] >= at_least)) if ev.any() else float("nan")


# -- uncertainty --------------------------------------------------------------------------------


def bootstrap_ci(statistic, *arrays, n_boot: int = 1000, level: float = 0.95, seed=0):
    """Percentile bootstrap: `(estimate, lower, upper)` of `statistic(*arrays)` with the
    patients (first axis of every array) resampled with replacement."""
    arrays = [np.asarray(a) for a in arrays]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("bootstrap_ci: arrays must have the same number of patients.")
    rng = np.random.default_rng(seed)
    est = statistic(*arrays)
    reps = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        reps.append(statistic(*[a[idx] for a in arrays]))
    a = (1 - level) / 2
    with warnings.catch_warnings():  # all-NaN replicates (e.g. a median never reached) give NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanquantile(np.asarray(reps, dtype=float), [a, 1 - a], axis=0)
    return est, lo, hi
