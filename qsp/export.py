"""Results out, in the formats colleagues use.

- `tidy(result)`: a simulation (`qsp.Solution`), a `qsp.vpop` `TrialResult` (its
  `patients` table) or any results table as a tidy
  (long) DataFrame: one row per (id, time, variable) with a `value` column.
- `write_tidy(result, path)`: that table as CSV (`.csv`) or Parquet (`.parquet`,
  needs pyarrow, which qsp does not install).
- `to_xarray(sol)` / `write_netcdf(result, path)`: an `xarray.Dataset` with dims
  `(id, time)` per output (trial tables: one variable per column over `row`), written
  as netCDF (h5netcdf engine; arviz pulls it in).
- `posterior_to_arviz(draws, names)`: posterior draws `(chain, draw, parameter)` (or
  a dict of `(chain, draw)` arrays) as `arviz.InferenceData`; `qsp.sample_posterior`
  already returns one.
- `nonmem_dataset(model, regimens, ts, observable, ...)`: a NONMEM-style dataset
  (ID, TIME, AMT, RATE, CMT, EVID, DV, MDV) of simulated virtual patients, dose
  records from their regimens and observation records with DV the simulated
  `observable` (optionally with residual error), validated and written by
  `qsp.nonmem.write_nonmem` for fitting in NONMEM or nlmixr2.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

__all__ = ["tidy", "write_tidy", "to_xarray", "write_netcdf", "posterior_to_arviz", "nonmem_dataset"]


def _is_solution(x) -> bool:
    from ._solution import Solution

    return isinstance(x, Solution)


def tidy(result) -> pd.DataFrame:
    """Long table `id, time, variable, value` of a `Solution` (outputs; `id` is the
    population member, 0 for a single trajectory) or, for a DataFrame, its numeric
    columns melted against the others (identifier columns are kept)."""
    if _is_solution(result):
        ts = np.asarray(result.ts)
        outs = {k: np.asarray(v) for k, v in result.outputs.items()}
        first = next(iter(outs.values()))
        n = 1 if first.ndim == 1 else first.shape[0]
        ts_b = np.broadcast_to(ts, (n, first.shape[-1]))
        frames = []
        for k, v in outs.items():
            v = v.reshape(n, -1)
            frames.append(pd.DataFrame({"id": np.repeat(np.arange(n), v.shape[1]), "time": ts_b.reshape(-1),
                                        "variable": k, "value": v.reshape(-1)}))
        return pd.concat(frames, ignore_index=True)
    if not isinstance(result, pd.DataFrame) and isinstance(getattr(result, "patients", None), pd.DataFrame):
        result = result.patients  # a qsp.vpop TrialResult: one row per (arm, patient)
    if isinstance(result, pd.DataFrame):
        value_cols = [c for c in result.columns if pd.api.types.is_float_dtype(result[c])]
        id_cols = [c for c in result.columns if c not in value_cols]
        if not value_cols:
            raise ValueError("tidy: the table has no floating-point columns to melt.")
        return result.melt(id_vars=id_cols, value_vars=value_cols, var_name="variable", value_name="value")
    raise TypeError(f"tidy expects a qsp.Solution or a pandas DataFrame; got {type(result).__name__}.")


def write_tidy(result, path) -> pd.DataFrame:
    """Write `tidy(result)` to `path` (`.csv` or `.parquet`); returns the table."""
    df = tidy(result)
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext == ".csv":
        df.to_csv(path, index=False)
    elif ext in (".parquet", ".pq"):
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            raise ImportError("writing Parquet needs pyarrow (pip install pyarrow); or write .csv.")
        df.to_parquet(path, index=False)
    else:
        raise ValueError(f"write_tidy: path {os.fspath(path)!r} must end in .csv or .parquet.")
    return df


def to_xarray(result):
    """An `xarray.Dataset`: a `Solution`'s outputs over `(id, time)` (and its states
    over `(id, time, state)`), or a DataFrame's columns over `row`."""
    import xarray as xr

    if not isinstance(result, pd.DataFrame) and hasattr(result, "to_xarray") and hasattr(result, "patients"):
        return result.to_xarray()  # a qsp.vpop TrialResult
    if isinstance(result, pd.DataFrame):
        return xr.Dataset.from_dataframe(result.reset_index(drop=True).rename_axis("row"))
    if not _is_solution(result):
        raise TypeError(f"to_xarray expects a qsp.Solution or a pandas DataFrame; got {type(result).__name__}.")
    ts = np.asarray(result.ts)
    outs = {k: np.asarray(v) for k, v in result.outputs.items()}
    first = next(iter(outs.values()))
    n = 1 if first.ndim == 1 else first.shape[0]
    data = {k: (("id", "time"), v.reshape(n, -1)) for k, v in outs.items()}
    states = np.asarray(result.states).reshape(n, first.shape[-1], -1)
    data["_states"] = (("id", "time", "state"), states)
    coords = {"id": np.arange(n), "state": list(result.state_names)}
    if ts.ndim == 1:
        coords["time"] = ts
    else:
        data["_time"] = (("id", "time"), ts)
    data["status"] = (("id",), np.asarray(result.status).reshape(n))
    return xr.Dataset(data, coords=coords)


def write_netcdf(result, path):
    """Write `to_xarray(result)` (or an `xarray.Dataset`) as netCDF; returns the dataset."""
    import xarray as xr

    ds = result if isinstance(result, xr.Dataset) else to_xarray(result)
    ds.to_netcdf(path, engine="h5netcdf")
    return ds


def posterior_to_arviz(draws, names=None):
    """`arviz.InferenceData` from posterior draws: an array `(chain, draw, parameter)`
    with parameter `names`, or a dict `{name: (chain, draw)}`."""
    import arviz as az

    if isinstance(draws, dict):
        post = {k: np.asarray(v, float) for k, v in draws.items()}
    else:
        arr = np.asarray(draws, float)
        if arr.ndim != 3:
            raise ValueError(f"posterior draws have shape {arr.shape}; expected (chain, draw, parameter).")
        if names is None or len(names) != arr.shape[2]:
            raise ValueError(f"names={names!r}: expected {arr.shape[2]} parameter names.")
        post = {n: arr[:, :, i] for i, n in enumerate(names)}
    for k, v in post.items():
        if v.ndim != 2:
            raise ValueError(f"posterior draws of {k!r} have shape {v.shape}; expected (chain, draw).")
    return az.from_dict(posterior=post)


def nonmem_dataset(model, regimens, ts, observable, path=None, *, sigma_add=0.0, sigma_prop=0.0,
                   seed=0, **simulate_kwargs) -> pd.DataFrame:
    """A NONMEM-style dataset of simulated virtual patients.

    **Arguments:** `model`, a single `ODEModel` or a population (batched parameters);
    `regimens`, one `Regimen` for everyone or a list with one per patient; `ts`, the
    observation times; `observable`, the model output DV records; `sigma_add`,
    `sigma_prop`: residual error added to DV, $DV = f(1 + \\sigma_p\\epsilon_1) +
    \\sigma_a\\epsilon_2$ (`seed` fixes it; 0 gives the model prediction). Doses carry
    CMT as the 1-based state number; infusions carry RATE. With `path`, the table is
    validated and written by `qsp.nonmem.write_nonmem`."""
    from ._dosing import Regimen
    from ._simulate import simulate
    from .nonmem import read_nonmem, write_nonmem

    ts = np.asarray(ts, float)
    if isinstance(regimens, Regimen):
        reg_list = None
    else:
        reg_list = list(regimens)
    if reg_list is not None:
        sol = simulate(model, Regimen.stack(reg_list), ts, **simulate_kwargs)
    else:
        sol = simulate(model, regimens, ts, **simulate_kwargs)
    if observable not in sol.outputs:
        raise ValueError(f"observable={observable!r} is not an output of {type(model).__name__}; "
                         f"outputs: {', '.join(sol.outputs)}.")
    f = np.asarray(sol.outputs[observable])
    f = f.reshape(-1, ts.shape[-1])
    n = f.shape[0]
    if reg_list is not None and len(reg_list) != n:
        raise ValueError(f"{len(reg_list)} regimens for {n} simulated patients.")
    rng = np.random.default_rng(seed)
    dv = f * (1 + sigma_prop * rng.standard_normal(f.shape)) + sigma_add * rng.standard_normal(f.shape)
    status = np.asarray(sol.status).reshape(n)
    rows = []
    states = tuple(type(model).states)
    for i in range(n):
        if status[i] != 0:
            continue  # failed simulations are left out rather than written as numbers
        reg = reg_list[i] if reg_list is not None else regimens
        cidx = np.asarray(reg.resolve(type(model))).reshape(-1)
        t = np.asarray(reg.time).reshape(-1)
        amt = np.asarray(reg.amount).reshape(-1)
        dur = np.asarray(reg.duration).reshape(-1)
        for k in range(t.size):
            if not np.isfinite(t[k]) or amt[k] == 0:
                continue  # padding events of stacked regimens
            rows.append(dict(ID=i + 1, TIME=t[k], AMT=amt[k], RATE=amt[k] / dur[k] if dur[k] > 0 else 0.0,
                             CMT=int(cidx[k]) + 1, EVID=1, DV=np.nan, MDV=1))
        obs_cmt = states.index(observable) + 1 if observable in states else 1
        for j, tj in enumerate(ts.reshape(-1)[-f.shape[1]:]):
            rows.append(dict(ID=i + 1, TIME=tj, AMT=np.nan, RATE=np.nan, CMT=obs_cmt, EVID=0, DV=dv[i, j], MDV=0))
    df = pd.DataFrame(rows, columns=["ID", "TIME", "AMT", "RATE", "CMT", "EVID", "DV", "MDV"])
    # By ID and time; at a dose time the observation record comes first, as DV is the
    # state before the dose (qsp.simulate's default; NONMEM reads it as a trough).
    df = df.sort_values(["ID", "TIME", "EVID"], kind="stable").reset_index(drop=True)
    if path is not None:
        write_nonmem(df, path)
    else:
        read_nonmem(df)  # validate
    return df
