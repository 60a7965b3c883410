"""Reading, validating and writing NONMEM-style event datasets (public as `qsp.nonmem`).

See `qsp.nonmem` for the columns, their defaults and what is not supported. Every
check reports the first offending record as "row R (line L, ID I), column C: value V
..., expected ...", with rows numbered from 1 as data records.
"""

from __future__ import annotations

import csv
import os

import numpy as np
import pandas as pd

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
    if is_dose.any() and "AMT" not in names:
        i = _first(is_dose)
        raise NonmemError(f"{where(i)}: EVID=1 is a dose record but the dataset has no AMT column; expected AMT.")
    checks = [
        ("EVID", np.isin(evid, (3, 4)), "(reset) is not supported; expected 0 (observation), 1 (dose) or 2 (other)"),
        ("EVID", ~np.isin(evid, (0, 1, 2, 3, 4)), "is not a known EVID; expected 0 (observation), 1 (dose) or 2 (other)"),
        ("AMT", amt < 0, "is negative; expected an amount >= 0"),
        ("AMT", ~np.isfinite(amt), "is not finite; expected an amount >= 0"),
        ("AMT", is_dose & (amt == 0), "on a dose record (EVID=1); expected an amount > 0"),
        ("AMT", ~is_dose & (amt != 0), "on a non-dose record (EVID 0 or 2); expected 0 or '.' (only EVID=1 doses)"),
        ("RATE", ~is_dose & (rate != 0), "on a non-dose record (EVID 0 or 2); expected 0 or '.' (only EVID=1 doses)"),
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
