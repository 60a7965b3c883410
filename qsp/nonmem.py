"""NONMEM-style event datasets: read, validate, write, turn into regimens, simulate.

A dataset is one record per row with the NONMEM/PREDPP data items

| column | meaning | default when absent or `.` |
|---|---|---|
| `ID` | individual (numeric; each ID's records contiguous) | required |
| `TIME` | time of the record, >= 0, non-decreasing within an ID | required |
| `AMT` | dose amount, >= 0 | 0 |
| `RATE` | infusion rate (> 0); 0 is a bolus | 0 |
| `CMT` | compartment, 1-based (`model.states[CMT - 1]`) | 1 on dose records, else 0 |
| `EVID` | 0 observation, 1 dose, 2 other | 1 if AMT > 0, else 2 if MDV = 1, else 0 |
| `II`, `ADDL` | interdose interval, number of additional doses | 0 |
| `DV` | observed value | NaN |
| `MDV` | 1 if DV is missing | 0 for EVID 0, else 1 |

plus any covariate columns. Headers of these columns are case-insensitive; lines
starting with `#` are comments. Rows are numbered from 1 as data records (header,
blank and comment lines not counted); errors name the row (and, for files, the line),
the ID, the column, the value and what was expected.

Not supported, with a clear error: EVID 3/4 (reset), SS != 0 (steady state),
RATE = -1/-2 (modelled rate/duration), negative CMT, date columns (DATE, DAT1-3).

**Record order.** An observation record placed after a dose record at the same TIME
reports the state after that dose; placed before it, the state before (NONMEM's
PREDPP processes records in file order). Additional doses implied by ADDL/II are given
after an observation at the same time (the observation is a trough), as in PREDPP;
an observation placed after an explicit dose record at a time where an implied dose
also falls sees both doses.

**Covariates as parameters.** In `simulate_nonmem`, a covariate column whose name is
exactly a parameter of the model (e.g. `CL`) sets that parameter per ID. It must be
constant within an ID (`.`/empty entries are ignored); an ID without a value keeps the
model's value.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Any

import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._dosing import Regimen
from ._model import ODEModel

__all__ = ["NonmemError", "Individual", "read_nonmem", "write_nonmem", "regimens_from_nonmem", "simulate_nonmem"]

COLUMNS = ("ID", "TIME", "AMT", "RATE", "CMT", "EVID", "II", "ADDL", "SS", "DV", "MDV")
REQUIRED = ("ID", "TIME")
_INTEGER = ("CMT", "EVID", "ADDL", "SS", "MDV")
_UNSUPPORTED_COLUMNS = ("DATE", "DAT1", "DAT2", "DAT3")
_MISSING = {"", ".", "nan", "na", "none"}


class NonmemError(ValueError):
    """A NONMEM dataset that cannot be read or used, with the row, column and value."""


class _Rows:
    """Formats 'row 3 (line 4, ID 1)' for error messages."""

    def __init__(self, n, lines=None, ids=None):
        self.lines = lines if lines is not None and len(lines) == n else None
        self.ids = ids

    def __call__(self, i) -> str:
        extra = [f"line {self.lines[i]}"] if self.lines is not None else []
        if self.ids is not None and np.isfinite(self.ids[i]):
            extra.append(f"ID {_fmt(self.ids[i])}")
        return f"row {i + 1}" + (f" ({', '.join(extra)})" if extra else "")


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)


def _read_csv(path) -> tuple[pd.DataFrame, list[int]]:
    header, rows, lines = None, [], []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        for rec in reader:
            if not any(f.strip() for f in rec) or rec[0].lstrip().startswith("#"):
                continue
            if header is None:
                header = [h.strip() for h in rec]
                continue
            if len(rec) != len(header):
                raise NonmemError(
                    f"{path}: row {len(rows) + 1} (line {reader.line_num}) has {len(rec)} fields; "
                    f"expected {len(header)}, one per header column ({', '.join(header)})."
                )
            rows.append([f.strip() for f in rec])
            lines.append(reader.line_num)
    if header is None:
        raise NonmemError(f"{path}: no header line; expected a CSV header such as ID,TIME,AMT,EVID,DV.")
    return pd.DataFrame(rows, columns=header, dtype=object), lines


def _numeric(series: pd.Series, name: str, where: _Rows) -> np.ndarray:
    """Column as float64, missing (`.`, empty, NaN) as NaN; non-numbers are an error."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=float)
    text = series.astype(str).str.strip()
    missing = series.isna().to_numpy() | text.str.lower().isin(_MISSING).to_numpy()
    values = pd.to_numeric(text.where(~missing, None), errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(np.isnan(values) & ~missing)
    if len(bad):
        i = bad[0]
        raise NonmemError(
            f"{where(i)}, column {name}: value {text.iloc[i]!r} is not a number; "
            "expected a number ('.' or empty for missing)."
        )
    return values


def _first(mask) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if len(idx) else None


def _fail(where, i, col, value, expected):
    raise NonmemError(f"{where(i)}, column {col}: value {_fmt(value)} {expected}.")


def read_nonmem(data) -> pd.DataFrame:
    """Read and validate a NONMEM-style dataset.

    **Arguments:** `data`: a CSV path or a pandas DataFrame.

    **Returns:** a new DataFrame with the columns ID, TIME, AMT, RATE, CMT, EVID, II,
    ADDL, (SS if given), DV, MDV (upper-case, defaults filled; see the module table),
    then the covariate columns (numeric where every entry is a number or missing).

    **Raises:** `NonmemError` (a `ValueError`) naming the row, ID, column and value.
    """
    if isinstance(data, pd.DataFrame):
        raw, source = data.reset_index(drop=True), "dataset"
        raw.columns = [str(c).strip() for c in raw.columns]
        lines = data.attrs.get("nonmem_lines")  # kept from a file read by read_nonmem
    elif isinstance(data, (str, os.PathLike)):
        raw, lines = _read_csv(data)
        source = os.fspath(data)
    else:
        raise TypeError(f"read_nonmem expects a CSV path or a pandas DataFrame; got {type(data).__name__}.")
    n = len(raw)
    where = _Rows(n, lines)

    names = {}
    for col in raw.columns:
        if not col:
            raise NonmemError(f"{source}: a column has an empty header; expected a name for every column.")
        key = col.upper() if col.upper() in COLUMNS + _UNSUPPORTED_COLUMNS else col
        if key in names:
            raise NonmemError(f"{source}: columns {names[key]!r} and {col!r} both name {key}; expected one.")
        names[key] = col
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise NonmemError(
            f"{source}: column {missing[0]} is missing; a NONMEM dataset needs columns "
            f"{', '.join(REQUIRED)} (found: {', '.join(map(str, raw.columns))})."
        )
    for c in _UNSUPPORTED_COLUMNS:
        if c in names:
            raise NonmemError(f"{source}: column {names[c]} (NONMEM date item) is not supported; expected TIME only.")

    ids = _numeric(raw[names["ID"]], "ID", where)
    if (i := _first(~np.isfinite(ids))) is not None:
        _fail(where, i, "ID", raw[names["ID"]].iloc[i], "is not a finite number; expected a numeric ID")
    where = _Rows(n, lines, ids)
    col = {c: _numeric(raw[names[c]], c, where) for c in COLUMNS if c in names}

    def get(c, default):
        v = col.get(c, np.full(n, np.nan))
        return np.where(np.isnan(v), default, v)

    time = col["TIME"]
    if (i := _first(~np.isfinite(time) | (time < 0))) is not None:
        _fail(where, i, "TIME", time[i], "is invalid; expected a finite time >= 0")
    amt, rate, ii, addl, ss = get("AMT", 0.0), get("RATE", 0.0), get("II", 0.0), get("ADDL", 0.0), get("SS", 0.0)
    mdv_given = col.get("MDV", np.full(n, np.nan))
    evid_default = np.where(amt > 0, 1.0, np.where(mdv_given == 1, 2.0, 0.0))
    evid = get("EVID", evid_default)
    mdv = np.where(np.isnan(mdv_given), (evid != 0).astype(float), mdv_given)
    is_dose = evid == 1
    cmt = get("CMT", np.where(is_dose, 1.0, 0.0))
    values = dict(AMT=amt, RATE=rate, CMT=cmt, EVID=evid, II=ii, ADDL=addl, SS=ss, MDV=mdv)

    for c in _INTEGER:
        v = values[c]
        if (i := _first(~np.isfinite(v) | (v != np.round(v)))) is not None:
            _fail(where, i, c, v[i], "is not an integer; expected an integer")
    checks = [
        ("AMT", amt < 0, "is negative; expected an amount >= 0"),
        ("AMT", ~np.isfinite(amt), "is not finite; expected an amount >= 0"),
        ("EVID", np.isin(evid, (3, 4)), "(reset) is not supported; expected 0 (observation), 1 (dose) or 2 (other)"),
        ("EVID", ~np.isin(evid, (0, 1, 2, 3, 4)), "is not a known EVID; expected 0 (observation), 1 (dose) or 2 (other)"),
        ("SS", ss != 0, "(steady-state dosing) is not supported; expected 0 (give the doses explicitly or with ADDL/II)"),
        ("RATE", np.isin(rate, (-1, -2)), "(rate or duration modelled in $PK) is not supported; expected a rate > 0 or 0 for a bolus"),
        ("RATE", (rate < 0) | ~np.isfinite(rate), "is invalid; expected an infusion rate > 0, or 0 for a bolus"),
        ("CMT", cmt < 0, "(a negative CMT turns a compartment off) is not supported; expected a compartment number >= 1"),
        ("II", (ii < 0) | ~np.isfinite(ii), "is invalid; expected an interdose interval >= 0"),
        ("ADDL", addl < 0, "is negative; expected a number of additional doses >= 0"),
        ("ADDL", (addl > 0) & (ii <= 0), "needs a positive interdose interval II; expected II > 0 when ADDL > 0"),
        ("ADDL", (addl > 0) & ~is_dose, "is on a non-dose record; expected 0 (additional doses belong to EVID=1 records)"),
        ("MDV", ~np.isin(mdv, (0, 1)), "is not 0 or 1; expected MDV 0 (DV observed) or 1 (missing)"),
    ]
    for c, bad, expected in checks:
        if (i := _first(bad)) is not None:
            _fail(where, i, c, values[c][i], expected)
    if is_dose.any() and "AMT" not in names:
        i = _first(is_dose)
        raise NonmemError(f"{where(i)}: EVID=1 is a dose record but the dataset has no AMT column; expected AMT.")

    # Each ID contiguous, TIME non-decreasing within it.
    new = np.r_[True, ids[1:] != ids[:-1]]
    starts = np.flatnonzero(new)
    seen = {}
    for s in starts:
        if ids[s] in seen:
            raise NonmemError(
                f"{where(s)}, column ID: ID {_fmt(ids[s])} reappears after other IDs (its records "
                f"began at row {seen[ids[s]] + 1}); expected each ID's records to be contiguous."
            )
        seen[ids[s]] = s
    back = np.r_[False, (np.diff(time) < 0) & ~new[1:]]
    if (i := _first(back)) is not None:
        raise NonmemError(
            f"{where(i)}, column TIME: value {_fmt(time[i])} is before the previous record's TIME "
            f"{_fmt(time[i - 1])} of the same ID; expected TIME non-decreasing within an ID (sort the records)."
        )

    out = {"ID": ids.astype(np.int64) if np.all(ids == np.round(ids)) else ids, "TIME": time}
    for c in ("AMT", "RATE", "CMT", "EVID", "II", "ADDL", "SS"):
        if c != "SS" or "SS" in names:
            out[c] = values[c].astype(np.int64) if c in _INTEGER else values[c]
    out["DV"] = col.get("DV", np.full(n, np.nan))
    out["MDV"] = mdv.astype(np.int64)
    frame = pd.DataFrame(out)
    for c in raw.columns:
        if c in names.values() and (c.upper() in COLUMNS):
            continue
        frame[c] = _covariate(raw[c])
    if lines is not None and len(lines) == n:
        frame.attrs["nonmem_lines"] = list(lines)
    return frame


def _covariate(series: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.reset_index(drop=True)
    text = series.astype(str).str.strip()
    missing = series.isna() | text.str.lower().isin(_MISSING)
    num = pd.to_numeric(text.where(~missing, None), errors="coerce")
    if (num.isna() & ~missing).any():
        return series.reset_index(drop=True)  # text covariate: kept as is
    if not missing.any() and np.all(num == np.round(num)):
        return num.astype(np.int64)
    return num.astype(float)


def write_nonmem(df: pd.DataFrame, path) -> None:
    """Validate `df` (as `read_nonmem`) and write it as CSV, missing values as `.`."""
    read_nonmem(df).to_csv(path, index=False, na_rep=".")


# -- regimens and observation times per ID --------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Individual:
    """One ID's events: its `regimen`, the times `ts` of its observation (EVID=0)
    records in record order, whether each reports the state after a dose at the same
    time (`obs_after_dose`), and the positions `rows` of those records in the dataset."""

    id: Any
    regimen: Regimen
    ts: np.ndarray
    obs_after_dose: np.ndarray
    rows: np.ndarray


def regimens_from_nonmem(df, model_cls) -> list[Individual]:
    """Per-ID regimens and observation times of a dataset (a path or DataFrame,
    validated with `read_nonmem`) for `model_cls` (a model class or instance; CMT must
    name one of its states). RATE > 0 is a zero-order infusion at that rate, RATE = 0 a
    bolus; II/ADDL add repeated doses. IDs in order of appearance."""
    return _individuals(read_nonmem(df), model_cls)


def _id_bounds(ids) -> list[tuple[int, int]]:
    """(start, stop) record positions of each ID (IDs are contiguous)."""
    b = np.r_[np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]), len(ids)]
    return list(zip(b[:-1].tolist(), b[1:].tolist()))


def _individuals(df: pd.DataFrame, model_cls) -> list[Individual]:
    cls = model_cls if isinstance(model_cls, type) else type(model_cls)
    states = tuple(cls.states)
    ids, evid, cmt = (df[c].to_numpy() for c in ("ID", "EVID", "CMT"))
    where = _Rows(len(df), df.attrs.get("nonmem_lines"), ids.astype(float))
    lo = np.where(evid == 1, 1, 0)
    if (i := _first((cmt < lo) | (cmt > len(states)))) is not None:
        names = ", ".join(f"{s}={k + 1}" for k, s in enumerate(states))
        what = "dose records need" if evid[i] == 1 else "expected 0 or"
        _fail(where, i, "CMT", cmt[i],
              f"is not a compartment of {cls.__name__}; {what} 1..{len(states)} ({names})")

    out = []
    for a, b in _id_bounds(ids):
        rec = df.iloc[a:b]
        e, t = rec["EVID"].to_numpy(), rec["TIME"].to_numpy(dtype=float)
        obs = np.flatnonzero(e == 0)
        # Time of the latest dose record up to each record: an observation placed after
        # a dose record with the same TIME reports the post-dose state.
        last_dose = np.maximum.accumulate(np.where(e == 1, t, -np.inf))
        after = last_dose[obs] == t[obs]
        out.append(Individual(ids[a], _regimen(rec[e == 1]), t[obs], after, a + obs))
    return out


def _regimen(doses: pd.DataFrame) -> Regimen:
    parts = []
    for infused in (False, True):
        d = doses[(doses["RATE"] > 0) == infused]
        if not len(d):
            continue
        kw = dict(
            amount=d["AMT"].to_numpy(float), time=d["TIME"].to_numpy(float),
            cmt=[int(c) for c in d["CMT"]], ii=d["II"].to_numpy(float), addl=d["ADDL"].to_numpy(np.int64),
        )
        parts.append(Regimen.infusion(rate=d["RATE"].to_numpy(float), **kw) if infused else Regimen.bolus(**kw))
    if not parts:
        return Regimen.empty()
    return parts[0] + parts[1] if len(parts) == 2 else parts[0]


# -- simulation ---------------------------------------------------------------------------


def _with_covariates(model: ODEModel, df: pd.DataFrame) -> ODEModel:
    """`model` with the parameters named by covariate columns set per ID."""
    params = model.parameters()
    ids = df["ID"].to_numpy()
    bounds = _id_bounds(ids)
    where = _Rows(len(df), df.attrs.get("nonmem_lines"), ids.astype(float))
    overrides = {}
    for name in df.columns:
        if name in COLUMNS or name not in params:
            continue
        values = _numeric(df[name], name, where)
        base = np.asarray(params[name], dtype=float)
        try:
            per_id = np.array(np.broadcast_to(base, (len(bounds),)), dtype=float)
        except ValueError:
            raise NonmemError(
                f"column {name} sets parameter {name}, whose value in {type(model).__name__} has shape "
                f"{base.shape}; expected a scalar or one value per ID ({len(bounds)} IDs)."
            ) from None
        for k, (a, b) in enumerate(bounds):
            v = values[a:b]
            given = np.flatnonzero(~np.isnan(v))
            if not len(given):
                continue
            first = v[given[0]]
            if (j := _first(~np.isnan(v) & (v != first))) is not None:
                _fail(where, a + j, name, v[j],
                      f"differs from this ID's earlier {name}={_fmt(first)}; expected one value per ID "
                      "(time-varying parameters are not supported)")
            per_id[k] = first
        overrides[name] = jnp.asarray(per_id)
    return model.replace(**overrides) if overrides else model


def _output_order(model: ODEModel, outputs: dict) -> list[str]:
    """Output names in the order the model's `outputs` declares them (a jitted
    Solution returns them sorted)."""
    try:
        declared = list(model.outputs(0.0, jnp.zeros(model.n_states)))
    except Exception:  # e.g. outputs that need a batched state; fall back to sorted names
        declared = []
    return [k for k in declared if k in outputs] + [k for k in outputs if k not in declared]


def simulate_nonmem(model: ODEModel, data, **simulate_kwargs) -> pd.DataFrame:
    """Simulate every ID of a NONMEM-style dataset in one batched `qsp.simulate` call.

    **Arguments:**

    - `model`: a `qsp.ODEModel`. Its parameters may carry a leading axis of one value
      per ID (in order of appearance); covariate columns named like a parameter set it
      per ID (see the module docstring).
    - `data`: a CSV path or DataFrame (validated with `read_nonmem`).
    - `simulate_kwargs`: passed to `qsp.simulate` (`rtol`, `atol`, `max_steps`, `t0`,
      `solver`, ...). `obs_after_dose` comes from the record order, not from here.

    **Returns:** one row per EVID=0 record, in dataset order: `ID`, `TIME`, one column
    per model output, and `status` (a `qsp.Status` code per ID; 0 is success, failed IDs
    have NaN outputs).

    Every ID's regimen is padded to a common number of events (`Regimen.stack`) and its
    observation times to a common length by repeating its last time. `qsp.simulate`
    takes one record-order flag per save slot shared by the batch, so when some
    observation follows a dose at its time, each observation gets two slots at its
    time, the first before and the second after doses, and the right one is read back.
    """
    from ._simulate import simulate

    if "obs_after_dose" in simulate_kwargs:
        raise TypeError("simulate_nonmem takes obs_after_dose from the record order; do not pass it.")
    df = read_nonmem(data)
    inds = _individuals(df, model)
    model = _with_covariates(model, df)
    t0 = float(simulate_kwargs.get("t0", 0.0))

    doubled = any(ind.obs_after_dose.any() for ind in inds)
    width = max(1, max(len(ind.ts) for ind in inds)) * (2 if doubled else 1)
    ts = np.full((len(inds), width), t0)
    slots = []
    for k, ind in enumerate(inds):
        row = np.repeat(ind.ts, 2) if doubled else ind.ts
        if len(row):
            ts[k, : len(row)] = row
            ts[k, len(row):] = row[-1]
        slots.append(2 * np.arange(len(ind.ts)) + ind.obs_after_dose if doubled else np.arange(len(ind.ts)))
    pattern = np.tile([False, True], width // 2) if doubled else False
    regimen = Regimen.stack([ind.regimen for ind in inds])
    sol = simulate(model, regimen, jnp.asarray(ts), obs_after_dose=pattern, **simulate_kwargs)

    who = np.repeat(np.arange(len(inds)), [len(s) for s in slots])
    slot = np.concatenate(slots).astype(int) if slots else np.zeros(0, int)
    rows = np.concatenate([ind.rows for ind in inds])
    out = {"ID": df["ID"].to_numpy()[rows], "TIME": df["TIME"].to_numpy()[rows]}
    for name in _output_order(model, sol.outputs):
        value = sol.outputs[name]
        if name in ("ID", "TIME", "status"):
            raise NonmemError(f"model output {name!r} clashes with a column of the result; rename the output.")
        out[name] = np.asarray(value)[who, slot]
    out["status"] = np.asarray(sol.status).reshape(-1)[who]
    return pd.DataFrame(out)
