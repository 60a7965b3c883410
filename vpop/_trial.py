"""Virtual trials: arms (regimens) x a population -> per-patient endpoints, chunk by chunk.

`run_trial` walks the patient axis in fixed-size chunks (the last chunk is padded by
repeating its last patient, so every chunk has the same shape and there is one
compile), simulates each chunk, computes the endpoints and writes them to
`out/<arm>/chunk_<k>.npz` (atomically: written to a temporary file, then renamed)
before moving on. A `manifest.json` records a fingerprint of the trial (population,
regimens, save times, endpoints, chunking). Re-running into the same directory skips
every chunk already on disk, so an interrupted run resumes where it stopped and loses
nothing; a directory holding a different trial is refused. Only one chunk is in memory
at a time while running (the memory footprint is reported), and failed simulations are
flagged per patient (status != 0, endpoints NaN / not evaluable), never fatal.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from qsp import endpoints as ep
from qsp._dosing import Regimen
from qsp._model import ODEModel
from qsp._params import parameter_fields
from qsp._simulate import _check_parameters, simulate
from qsp._solution import Status

# -- arms and endpoints ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Arm:
    """A trial arm: a regimen for every patient, optionally scaled per patient.

    - `regimen`: a `qsp.Regimen` (the same for all) or a batched one (`Regimen.stack`)
      with one regimen per patient.
    - `dose_scale`: per-patient multiplier of every dose amount: an array `(n,)` or a
      function `f(covariates) -> (n,)` (e.g. `lambda c: c["WT"]` for mg/kg dosing).
      Durations are kept, so scaled infusions scale their rates.
    """

    name: str
    regimen: Regimen
    dose_scale: Any = None


@dataclasses.dataclass(frozen=True)
class Exposure:
    """Cmax, AUC (over `window`, default all save times) and Ctrough (at `trough_at`)."""

    output: str
    window: tuple | None = None
    trough_at: float | None = None

    def outputs(self):
        return (self.output,)

    def compute(self, ts, out):
        y = out[self.output]
        t0, t1 = self.window if self.window is not None else (None, None)
        res = {f"{self.output}_cmax": np.asarray(ep.cmax(y)), f"{self.output}_auc": np.asarray(ep.auc(ts, y, t0, t1))}
        if self.trough_at is not None:
            res[f"{self.output}_ctrough"] = np.asarray(ep.ctrough(ts, y, self.trough_at))
        return res


@dataclasses.dataclass(frozen=True)
class Response:
    """RECIST 1.1 on a sum-of-diameters output (mm): `bor`, `ttp`, `progressed`. The
    first save time is the baseline, the others are the tumour assessments."""

    output: str
    cr_below: float = 0.0

    def outputs(self):
        return (self.output,)

    def compute(self, ts, out):
        sld = out[self.output]
        ttp, ev = ep.time_to_progression(ts, sld, cr_below=self.cr_below)
        return {"bor": ep.best_overall_response(sld, cr_below=self.cr_below), "ttp": ttp, "progressed": ev}


@dataclasses.dataclass(frozen=True)
class Toxicity:
    """Toxicity from the peak of `output`: a grade from increasing `thresholds`
    (column `<name>_grade`), and/or, with `link`, a per-patient probability of the
    event `link(peak)` (column `<name>_prob`, e.g. a logistic exposure-response model);
    its mean over patients is the expected incidence."""

    output: str
    thresholds: tuple = ()
    name: str = "tox"
    link: Callable | None = None

    def __post_init__(self):
        if not self.thresholds and self.link is None:
            raise ValueError(f"Toxicity({self.output!r}) needs thresholds=... or link=....")

    def outputs(self):
        return (self.output,)

    def compute(self, ts, out):
        res = {}
        if self.thresholds:
            res[f"{self.name}_grade"] = ep.grade(out[self.output], self.thresholds)
        if self.link is not None:
            peak = np.max(out[self.output], axis=-1)
            res[f"{self.name}_prob"] = np.asarray(self.link(peak), dtype=float)
        return res


# -- execution ---------------------------------------------------------------------------------


def _batched_fields(model):
    """Names of top-level parameter fields carrying a patient axis, and n."""
    from qsp._params import _META_KEY

    names, sizes = [], set()
    for f in parameter_fields(model):
        v = getattr(model, f.name)
        core = len(f.metadata.get(_META_KEY, {}).get("shape", ()))
        if eqx.is_array(v) and v.ndim > core:
            names.append(f.name)
            sizes.add(v.shape[0])
    if not names:
        raise ValueError("run_trial: population has no batched parameter; pass a population "
                         "(e.g. qsp.vpop.sample(...)) whose parameter leaves have shape (n,).")
    if len(sizes) > 1:
        raise ValueError(f"run_trial: batched parameters disagree on the number of patients {sorted(sizes)}.")
    return names, sizes.pop()


@eqx.filter_jit
def _simulate_chunk(model, regimen, ts, names, sim_kw):
    sol = simulate(model, regimen, ts, **dict(sim_kw))
    return sol.status, {k: sol.outputs[k] for k in names}


def _launch(population, batched, arm, scale, k, chunk_size, n, ts, needed, sim_kw, device):
    """Slice chunk k (padded with the last patient to chunk_size) and dispatch its
    simulation (asynchronously) on `device` (None: the default device)."""
    start = k * chunk_size
    idx = np.minimum(np.arange(start, start + chunk_size), n - 1)
    real = np.arange(start, min(start + chunk_size, n))
    model = population.replace(**{f: getattr(population, f)[idx] for f in batched})
    reg = arm.regimen
    if reg.time.ndim == 2:
        reg = jax.tree.map(lambda a: a[idx], reg)
    if scale is not None:
        b = lambda a: jnp.broadcast_to(a, (chunk_size,) + a.shape[-1:])
        amount = b(reg.amount) * jnp.asarray(scale[idx])[:, None]
        reg = Regimen(b(reg.time), amount, b(reg.duration), b(reg.by_rate), b(reg.target), reg.targets)
    if device is None:
        return model, real, _simulate_chunk(model, reg, ts, needed, sim_kw)
    # default_device rather than device_put: committed inputs compile to a different
    # executable whose results differ in the last bits (measured), uncommitted ones do not.
    with jax.default_device(device):
        return model, real, _simulate_chunk(model, reg, ts, needed, sim_kw)


def _finish(model, real, status, outs, ts, endpoints, save_outputs):
    """Per-patient columns of one chunk (padding dropped, invalid parameters flagged)."""
    # Parameters are traced inside the compiled chunk, so check them here (as
    # qsp.simulate does for a concrete population): flagged, never fatal.
    invalid = _check_parameters(model, batched=True)
    status = np.asarray(status)[: len(real)]
    outs = {kk: np.asarray(v)[: len(real)] for kk, v in outs.items()}
    if invalid is not None and invalid[: len(real)].any():
        bad = invalid[: len(real)]
        status = np.where(bad, Status.INVALID_PARAMETERS, status)
        outs = {kk: np.where(bad[:, None], np.nan, v) for kk, v in outs.items()}
    cols = {"patient": real, "status": status}
    for e in endpoints:
        cols.update({c: np.asarray(v) for c, v in e.compute(np.asarray(ts), outs).items()})
    cols.update({f"traj_{o}": outs[o] for o in save_outputs})
    return cols


def _hash(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if eqx.is_array(p) or isinstance(p, np.ndarray):
            a = np.ascontiguousarray(np.asarray(p))
            h.update(str((a.dtype, a.shape)).encode())
            h.update(a.tobytes())
        else:
            h.update(repr(p).encode())
    return h.hexdigest()[:16]


def _regimen_hash(r: Regimen) -> str:
    return _hash(r.time, r.amount, r.duration, r.by_rate, r.target, r.targets)


@dataclasses.dataclass
class TrialResult:
    """What `run_trial` returns: a tidy per-patient table and summaries."""

    out: str
    arms: tuple
    patients: Any  # pandas DataFrame: arm, patient, status, endpoint columns
    complete: bool
    seconds: float
    memory: dict
    saved_outputs: tuple

    def summary(self, n_boot: int = 1000, level: float = 0.95, seed=0):
        """Per arm: patients, failures, ORR, median TTP, toxicity incidence (grade >= 1,
        >= 3), median exposure, with percentile bootstrap intervals."""
        import pandas as pd

        rows = []
        for arm in self.arms:
            d = self.patients[self.patients["arm"] == arm]
            ok = d["status"].to_numpy() == 0
            row = {"arm": arm, "n": len(d), "n_failed": int((~ok).sum())}
            if "bor" in d:
                row["orr"], row["orr_lo"], row["orr_hi"] = ep.bootstrap_ci(
                    ep.objective_response_rate, d["bor"].to_numpy(), n_boot=n_boot, level=level, seed=seed)
            if "ttp" in d:
                med = lambda t, e: ep.kaplan_meier(t, e).median
                row["median_ttp"], row["median_ttp_lo"], row["median_ttp_hi"] = ep.bootstrap_ci(
                    med, d["ttp"].to_numpy(), d["progressed"].to_numpy(), n_boot=n_boot, level=level, seed=seed)
            for col in [c for c in d.columns if c.endswith("_grade")]:
                for g in (1, 3):
                    key = f"{col[:-6]}_grade{g}plus"
                    row[key], row[key + "_lo"], row[key + "_hi"] = ep.bootstrap_ci(
                        lambda x, g=g: ep.incidence(x, g), d[col].to_numpy(), n_boot=n_boot, level=level, seed=seed)
            for col in [c for c in d.columns if c.endswith("_prob")]:
                row[col[:-5] + "_expected_incidence"], row[col[:-5] + "_expected_incidence_lo"], \
                    row[col[:-5] + "_expected_incidence_hi"] = ep.bootstrap_ci(
                        np.nanmean, d[col].to_numpy(), n_boot=n_boot, level=level, seed=seed)
            for col in [c for c in d.columns if c.endswith(("_cmax", "_auc", "_ctrough"))]:
                row[col + "_median"] = float(np.nanmedian(d[col].to_numpy()))
            rows.append(row)
        return pd.DataFrame(rows)

    def kaplan_meier(self, arm: str):
        """Kaplan-Meier estimate of time to progression in `arm`."""
        d = self.patients[self.patients["arm"] == arm]
        return ep.kaplan_meier(d["ttp"].to_numpy(), d["progressed"].to_numpy())

    def to_xarray(self):
        """Saved trajectories as an xarray Dataset, dims (arm, patient, time), loaded
        from the chunk files (needs xarray, which ArviZ installs)."""
        import xarray as xr

        with open(os.path.join(self.out, "manifest.json")) as f:
            man = json.load(f)
        data = {}
        for name in self.saved_outputs:
            per_arm = []
            for ai, arm in enumerate(self.arms):
                adir = _arm_dir(self.out, ai, arm)
                parts = []
                for f in sorted(os.listdir(adir)):
                    if f.startswith("chunk_") and f.endswith(".npz"):  # not .tmp_ files of a killed run
                        with np.load(os.path.join(adir, f)) as z:
                            parts.append(z[f"traj_{name}"])
                per_arm.append(np.concatenate(parts))
            data[name] = (("arm", "patient", "time"), np.stack(per_arm))
        n_done = data[self.saved_outputs[0]][1].shape[1] if data else man["n_patients"]
        return xr.Dataset(data, coords={"arm": list(self.arms), "patient": np.arange(n_done),
                                        "time": np.asarray(man["ts"])})


def _arm_dir(out, ai, name):
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return os.path.join(out, f"arm{ai}_{safe}")


def _progress(arm, done, total, rate, eta):
    width = 24
    fill = int(width * done / max(total, 1))
    sys.stderr.write(f"\r{arm}: [{'#' * fill}{'.' * (width - fill)}] {done}/{total} chunks, "
                     f"{rate:,.0f} patients/s, ETA {eta:,.0f} s ")
    sys.stderr.flush()


def run_trial(population: ODEModel, arms: Sequence[Arm], ts, *, endpoints: Sequence, out: str,
              chunk_size: int = 1024, covariates: Mapping | None = None, save_outputs: Sequence[str] = (),
              progress: bool = True, max_chunks: int | None = None, devices=None,
              **simulate_kwargs) -> TrialResult:
    """Run a virtual trial: every arm on every patient of `population`.

    **Arguments:**

    - `population`: a batched model (parameter leaves of shape `(n,)`), e.g. from
      `qsp.vpop.sample` or `PlausibleResult.model`.
    - `arms`: `Arm`s (names unique).
    - `ts`: save times (also the tumour assessment times for `Response`).
    - `endpoints`: `Exposure`, `Response`, `Toxicity`, or any object with `outputs()`
      and `compute(ts, outputs) -> {column: (c,) array}`.
    - `out`: results directory (created; an existing run of the same trial resumes).
    - `chunk_size`: patients per chunk (one compiled shape).
    - `covariates`: dict of `(n,)` arrays for `Arm.dose_scale` functions.
    - `save_outputs`: outputs whose full trajectories are kept (`to_xarray()`).
    - `max_chunks`: compute at most this many new chunks, then return (`complete=False`).
    - `devices`: a list of JAX devices (e.g. `jax.devices()`) over which the patient
      axis is sharded at chunk granularity: each device simulates whole chunks, one
      at a time, dispatched asynchronously so the devices work together. Every call has
      the shape `chunk_size` whatever the device count, so results are bitwise the same
      and a run may resume on another device count. (`shard_map` and a GSPMD-sharded
      `jit` of diffrax failed on CPU: `shared/references/performance-baseline.md` §7.
      On the 2-core CPU of this project two host devices gave no speed-up (16,384
      pk1cmt patients: 15-16 s wall on one device, 22 s on two, loaded machine); it is
      meant for machines with several accelerators.)
    - `simulate_kwargs`: passed to `qsp.simulate`.
    """
    import pandas as pd

    t_start = time.perf_counter()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    arms = list(arms)
    if not arms or not all(isinstance(a, Arm) for a in arms):
        raise ValueError("run_trial: arms must be a non-empty sequence of qsp.vpop.Arm.")
    names_seen = [a.name for a in arms]
    if len(set(names_seen)) != len(names_seen):
        raise ValueError(f"run_trial: arm names {names_seen} are not unique.")
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"run_trial: chunk_size={chunk_size!r} must be a positive integer.")
    batched, n = _batched_fields(population)
    if devices is not None:
        devices = list(devices)
        if not devices:
            raise ValueError("run_trial: devices=[] is empty; pass None or a list of jax devices.")
    ts = jnp.asarray(ts, dtype=float)
    endpoints = list(endpoints)
    needed = tuple(dict.fromkeys([o for e in endpoints for o in e.outputs()] + list(save_outputs)))
    sim_kw = tuple(sorted(simulate_kwargs.items()))

    scales = []
    for a in arms:
        s = a.dose_scale
        if callable(s):
            if covariates is None:
                raise ValueError(f"arm {a.name!r}: dose_scale is a function of covariates but covariates=None.")
            s = s({k: np.asarray(v) for k, v in covariates.items()})
        if s is not None:
            s = np.asarray(s, dtype=float)
            if s.shape != (n,) or not np.all(np.isfinite(s)) or np.any(s < 0):
                raise ValueError(f"arm {a.name!r}: dose_scale must give {n} finite non-negative numbers; "
                                 f"got shape {s.shape}.")
        if a.regimen.time.ndim == 2 and a.regimen.time.shape[0] != n:
            raise ValueError(f"arm {a.name!r}: batched regimen has {a.regimen.time.shape[0]} rows; expected {n}.")
        scales.append(s)

    n_chunks = -(-n // chunk_size)
    parts = {
        "population": _hash(*[getattr(population, k) for k in sorted(population.parameters())]),
        "arms": _hash(*[(a.name, _regimen_hash(a.regimen), s) for a, s in zip(arms, scales)]),
        "ts": _hash(ts),
        "endpoints": _hash(*endpoints, needed),
        "chunking": _hash(n, chunk_size),
        "simulate_kwargs": _hash(sim_kw),
    }
    os.makedirs(out, exist_ok=True)
    man_path = os.path.join(out, "manifest.json")
    manifest = {"version": 1, "fingerprint": parts, "n_patients": n, "chunk_size": chunk_size,
                "n_chunks": n_chunks, "arms": names_seen, "ts": np.asarray(ts).tolist(),
                "saved_outputs": list(save_outputs)}
    if os.path.exists(man_path):
        with open(man_path) as f:
            old = json.load(f)
        diff = [k for k in parts if old.get("fingerprint", {}).get(k) != parts[k]]
        if diff:
            raise ValueError(f"run_trial: {out!r} holds a different trial (it differs in: {', '.join(diff)}); "
                             "use another out directory or delete it.")
    else:
        tmp = man_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=1)
        os.replace(tmp, man_path)

    new_chunks, chunk_bytes = 0, 0
    stopped = False
    devs = [None] if devices is None else devices
    for ai, (arm, scale) in enumerate(zip(arms, scales)):
        adir = _arm_dir(out, ai, arm.name)
        os.makedirs(adir, exist_ok=True)
        t_arm, arm_new = time.perf_counter(), 0
        pending = [k for k in range(n_chunks) if not os.path.exists(os.path.join(adir, f"chunk_{k:06d}.npz"))]
        if max_chunks is not None and len(pending) > max_chunks - new_chunks:
            pending, stopped = pending[: max(max_chunks - new_chunks, 0)], True
        # One chunk per device at a time: every call has the same shape (chunk_size), so a
        # patient's result does not depend on the number of devices.
        for g in range(0, len(pending), len(devs)):
            group = pending[g:g + len(devs)]
            launched = [(k, *_launch(population, batched, arm, scale, k, chunk_size, n, ts, needed, sim_kw, dev))
                        for k, dev in zip(group, devs)]
            for k, model, real, (status, outs) in launched:
                cols = _finish(model, real, status, outs, ts, endpoints, save_outputs)
                chunk_bytes = max(chunk_bytes, sum(v.nbytes for v in cols.values()))
                tmp = os.path.join(adir, f".tmp_chunk_{k:06d}.npz")
                np.savez(tmp, **cols)
                os.replace(tmp, os.path.join(adir, f"chunk_{k:06d}.npz"))
                new_chunks += 1
                arm_new += 1
            if progress:
                el = time.perf_counter() - t_arm
                rate = arm_new * chunk_size / max(el, 1e-9)
                left = len(pending) - g - len(group)
                _progress(arm.name, n_chunks - left, n_chunks, rate, left * chunk_size / max(rate, 1e-9))
        if progress:
            sys.stderr.write("\n")
        if stopped:
            break

    # Assemble the per-patient table from disk (endpoints only; trajectories stay on disk).
    frames = []
    for ai, arm in enumerate(arms):
        adir = _arm_dir(out, ai, arm.name)
        for f in sorted(os.listdir(adir)) if os.path.isdir(adir) else []:
            if f.startswith("chunk_") and f.endswith(".npz"):
                with np.load(os.path.join(adir, f)) as z:
                    d = {k: z[k] for k in z.files if not k.startswith("traj_")}
                frames.append(pd.DataFrame({"arm": arm.name, **d}))
    patients = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    complete = not stopped and len(patients) == n * len(arms)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    memory = {"peak_rss_mb": rss1 / 1024.0, "rss_growth_mb": (rss1 - rss0) / 1024.0,
              "chunk_result_mb": chunk_bytes / 2**20, "chunks_computed": new_chunks}
    return TrialResult(out=out, arms=tuple(names_seen), patients=patients, complete=complete,
                       seconds=time.perf_counter() - t_start, memory=memory, saved_outputs=tuple(save_outputs))
