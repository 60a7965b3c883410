"""The CRS virtual trial: the default NHL population under mosunetuzumab regimens.

`run(n, regimens, cycles, seed)` samples the population (`population.sample`), simulates
every patient under every regimen (vmapped `qsp.simulate`, in equal chunks so one
compile serves all regimens and chunks), and derives per patient:

- `il6_first_peak`: largest serum IL-6 (pg/mL) within 7 days of C1D1;
- `il6_later_peak`: largest serum IL-6 from the second dose on;
- `il6_c1_peak`: largest IL-6 in cycle 1 (days 0-21), the input of the CRS link;
- `crs_grade`: 0, 1 or 2 (= grade >= 2) from the link of `crs.py` (ours);
- `bcell_d1`: PB B cells at 24 h relative to baseline; `tumor_change_d84`: relative
  change of the tumour burden at day 84.

Peaks are maxima over a save grid with points every 1-3 h for the first day after
each possible dose day (0, 7, 14 and D1 of later cycles), which resolves the IL-6 peak
(IL-6 half-life 20 min; the peak follows the end of the infusion by hours).
"""

from __future__ import annotations

import sys
import time as _time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from . import crs, population
from . import regimens as R
from .model import TCECRS, solver

DEFAULT_REGIMENS = ("20", "1.6/20", "label")
RTOL, ATOL = 1e-4, 1e-7  # step tolerances of the trial solves (see simulate_population)
_HOURS = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 18, 24, 36, 48], dtype=float) / 24.0


def crs_uniforms(n: int, seed: int) -> np.ndarray:
    """One uniform number per patient for the CRS grade draw (`crs.grades`), from its own
    stream. (It was `fold_in(PRNGKey(seed), 1)`, which is the key `population.sample`
    draws `Bref` from: u was 0.98-correlated with log Bref, so high-peak patients drew
    high u and low grades; the label arm gave 5.6% grade >= 2 for a calibrated 17.5%.)"""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x435253]))  # "CRS"
    return rng.random(int(n))


def time_grid(cycles: int = 4) -> np.ndarray:
    """Save times (days): dense after each possible dose day, sparse elsewhere, to
    day max(84, 21 * cycles)."""
    end = max(84.0, R.CYCLE * cycles)
    dose_days = [0.0, 7.0, 14.0] + [R.CYCLE * k for k in range(1, cycles)]
    pts = [d + _HOURS for d in dose_days]
    pts.append(np.arange(0.0, end + 1e-9, 3.5))
    pts.append(np.array([1.0, 84.0, end]))
    return np.unique(np.round(np.concatenate(pts), 10))


def _slice(model, idx, n):
    return jax.tree.map(lambda x: x[idx] if eqx_is_batched(x, n) else x, model)


def eqx_is_batched(x, n):
    return isinstance(x, (jax.Array, np.ndarray)) and x.ndim >= 1 and x.shape[0] == n


def simulate_population(model, regimen, ts, chunk: int = 50, progress=None, label: str = "",
                        workers: int = 1, backend: str = "jax", method: str = "rodas4"):
    """IL-6, B_pb_rel and tumor_rel trajectories `(n, n_ts)` and status `(n,)` of a
    batched model under one regimen, in chunks of `chunk` patients (the last chunk is
    padded by repeating patient 0, so every chunk has the same shape). `workers > 1`
    runs the chunks in that many processes (`qsp.simulate(..., workers=)`; the same
    numbers, progress reported once at the end). `backend="native"` solves each patient
    in compiled C (`qsp.simulate(..., backend="native")`: the same Rodas4 method,
    tolerances and interpolated saves; `workers` threads; results agree to the step
    tolerances, benchmarks/NOTES.md section 16); with it, `method="bdf"` solves by the
    native BDF method instead (about twice as fast on this model, LSODA's accuracy at
    the same tolerance; NOTES section 21)."""
    import qsp

    n = int(jnp.shape(model.Tref)[0])
    chunk = min(chunk, n)
    keys = ("IL6", "B_pb_rel", "tumor_rel")
    if method not in ("rodas4", "bdf"):
        raise ValueError(f"method={method!r}; expected 'rodas4' or 'bdf'.")
    if method != "rodas4" and backend != "native":
        raise ValueError(f"method={method!r} is a method of backend='native'; got backend={backend!r}.")
    if backend == "native":
        sol = qsp.simulate(model, regimen, jnp.asarray(ts), rtol=RTOL, atol=ATOL, max_steps=8192,
                           exact_save=False, batch_size=max(chunk, 256), workers=workers, backend="native",
                           solver=None if method == "rodas4" else method)
        if progress is not None:
            progress(label, n, n)
        return {k: np.asarray(sol.outputs[k]) for k in keys}, np.asarray(sol.status)
    if backend != "jax":
        raise ValueError(f"backend={backend!r}; expected 'jax' or 'native'.")
    if workers > 1 and n > chunk:
        sol = qsp.simulate(model, regimen, jnp.asarray(ts), solver=solver(RTOL, ATOL), rtol=RTOL, atol=ATOL,
                           max_steps=8192, exact_save=False, batch_size=chunk, workers=workers)
        if progress is not None:
            progress(label, n, n)
        return {k: np.asarray(sol.outputs[k]) for k in keys}, np.asarray(sol.status)
    outs = {k: [] for k in keys}
    status = []
    for start in range(0, n, chunk):
        idx = np.arange(start, start + chunk)
        keep = idx < n
        idx = np.where(keep, idx, 0)
        sub = _slice(model, idx, n)
        # Interpolated saves (exact_save=False): 50 patients x label ran 22% faster and
        # compiled in 48 s instead of 87 s, with peaks within 7e-6 (relative) of
        # exact saves (measured 2026-11-24 on the loaded 2-core box).
        # Step tolerances 1e-4/1e-7 (simulate's defaults are 1e-6/1e-9): 50 patients x
        # label took 237 mean / 571 max steps instead of 579 / 1135 and half the CPU
        # time, with first and later IL-6 peaks within 2e-4 (relative) of the 1e-6 run
        # (measured 2026-12-01, load ~20 on the shared 2-core box; benchmarks/crs_trial.py).
        sol = qsp.simulate(sub, regimen, jnp.asarray(ts), solver=solver(RTOL, ATOL), rtol=RTOL, atol=ATOL,
                           max_steps=8192, exact_save=False)
        for k in outs:
            outs[k].append(np.asarray(sol.outputs[k])[keep])
        status.append(np.asarray(sol.status)[keep])
        if progress is not None:
            progress(label, min(start + chunk, n), n)
    return {k: np.concatenate(v) for k, v in outs.items()}, np.concatenate(status)


def _bar(label, done, total, t0=[None]):  # noqa: B006 (a start time kept across calls)
    if t0[0] is None or done <= 0:
        t0[0] = _time.perf_counter()
    width = 30
    fill = int(width * done / total)
    sys.stderr.write(f"\r  {label:<16s} [{'#' * fill}{'.' * (width - fill)}] {done}/{total}"
                     f" {_time.perf_counter() - t0[0]:6.1f}s")
    if done >= total:
        sys.stderr.write("\n")
        t0[0] = None
    sys.stderr.flush()


def endpoints(ts, traj, first_dose_days):
    """Per-patient endpoints from trajectories on `ts` (see the module docstring)."""
    il6 = traj["IL6"]
    second = first_dose_days[1] if len(first_dose_days) > 1 else np.inf
    first = np.nanmax(np.where(ts < 7.0, il6, -np.inf), axis=1)
    later = np.nanmax(np.where(ts >= second, il6, -np.inf), axis=1) if np.isfinite(second) else np.full(len(il6), np.nan)
    c1 = np.nanmax(np.where(ts < R.CYCLE, il6, -np.inf), axis=1)
    i1 = int(np.argmin(np.abs(ts - 1.0)))
    i84 = int(np.argmin(np.abs(ts - 84.0)))
    return pd.DataFrame({
        "il6_first_peak": first, "il6_later_peak": later, "il6_c1_peak": c1,
        "bcell_d1": traj["B_pb_rel"][:, i1], "tumor_change_d84": traj["tumor_rel"][:, i84] - 1.0,
    })


def run(n: int = 1000, regimens=DEFAULT_REGIMENS, cycles: int = 4, seed: int = 0, chunk: int = 50,
        progress: bool = True, model: TCECRS | None = None, thresholds=None, pop=None, workers: int = 1,
        backend: str = "jax", method: str = "rodas4"):
    """Simulate the trial. Returns `(summary, patients, curves)`: the per-regimen table,
    the per-patient table, and `{regimen: (ts, IL-6 percentiles 5/50/95)}`. `pop`, a
    `(batched model, parameter frame)` pair, replaces the sampled population; `workers`
    processes share the chunks, or threads with `backend="native"`, whose `method` may be
    "bdf" (see `simulate_population`)."""
    specs = [str(r).strip() for r in regimens]
    if not specs:
        raise ValueError("regimens is empty; give at least one, e.g. 'label'.")
    regs = [R.parse(s, cycles) for s in specs]
    n_events = max(r.n_events for r in regs)
    regs = [r.pad(n_events) for r in regs]
    pop, params = population.sample(n, seed, model) if pop is None else pop
    n = len(params)
    u = crs_uniforms(n, seed)
    ts = time_grid(cycles)
    thr = crs.THRESHOLDS if thresholds is None else thresholds
    rows, per_patient, curves = [], [], {}
    for spec, reg in zip(specs, regs):
        traj, status = simulate_population(pop, reg, ts, chunk, _bar if progress else None, spec, workers, backend,
                                           method)
        t_dose = np.asarray(reg.time)[np.asarray(reg.amount) > 0]
        dose_days = np.unique(t_dose[np.isfinite(t_dose)])
        ep = endpoints(ts, traj, dose_days)
        ok = status == 0
        ep.loc[~ok, :] = np.nan
        if np.all(np.isfinite(thr)):
            grade = crs.grades(ep["il6_c1_peak"].to_numpy(), u, thr).astype(float)
            grade[~ok] = np.nan
        else:
            grade = np.full(len(ep), np.nan)
        pat = pd.concat([pd.DataFrame({"patient": params["patient"], "regimen": spec, "status": status}),
                         ep, pd.DataFrame({"crs_grade": grade}), params.drop(columns="patient")], axis=1)
        per_patient.append(pat)
        m = int(ok.sum())
        k1, k2 = int(np.sum(grade >= 1)), int(np.sum(grade >= 2))
        f = ep[ok]
        graded = bool(np.isfinite(grade).any())
        lo1, hi1 = crs.wilson(k1, m) if graded else (np.nan, np.nan)
        lo2, hi2 = crs.wilson(k2, m) if graded else (np.nan, np.nan)
        row = {
            "regimen": spec, "n": m, "n_failed": int((~ok).sum()),
            "il6_first_peak_p05": f["il6_first_peak"].quantile(0.05),
            "il6_first_peak_p50": f["il6_first_peak"].quantile(0.50),
            "il6_first_peak_p95": f["il6_first_peak"].quantile(0.95),
            "il6_later_peak_p50": f["il6_later_peak"].median(),
            "p_crs_ge1": k1 / m if m and np.isfinite(grade).any() else np.nan,
            "p_crs_ge1_lo": lo1, "p_crs_ge1_hi": hi1,
            "p_crs_ge2": k2 / m if m and np.isfinite(grade).any() else np.nan,
            "p_crs_ge2_lo": lo2, "p_crs_ge2_hi": hi2,
            "bcell_depleted_d1": float(np.mean(f["bcell_d1"] < 0.01)) if m else np.nan,
            "frac_shrink50_d84": float(np.mean(f["tumor_change_d84"] < -0.5)) if m else np.nan,
        }
        rows.append(row)
        il6 = traj["IL6"][ok]
        curves[spec] = (ts, np.nanpercentile(il6, [5, 50, 95], axis=0) if m else np.full((3, len(ts)), np.nan))
    return pd.DataFrame(rows), pd.concat(per_patient, ignore_index=True), curves


def plot(curves, path: str):
    """IL-6 over time by regimen: median and 5-95% band (log scale), saved to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for spec, (ts, (lo, mid, hi)) in curves.items():
        line, = ax.plot(ts, np.maximum(mid, 1e-2), label=spec)
        ax.fill_between(ts, np.maximum(lo, 1e-2), np.maximum(hi, 1e-2), color=line.get_color(), alpha=0.2)
    ax.set_yscale("log")
    ax.set_xlabel("time (days)")
    ax.set_ylabel("serum IL-6 (pg/mL)")
    ax.set_title("Virtual NHL population: IL-6 median and 5-95% band by regimen")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
