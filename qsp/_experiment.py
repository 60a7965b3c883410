"""Measurement and condition tables (PEtab's long format), validated and compiled.

A dataset is a **measurement table**, one row per observation:

| column | meaning |
|---|---|
| `observableId` | a model output name |
| `simulationConditionId` | the experiment/condition (a well, a xenograft arm, a subject) |
| `time` | observation time, in the model's time unit |
| `measurement` | the observed value (may be NaN for a censored row) |
| `noiseParameters` (optional) | the error-model parameter(s) of the row: numbers (a known SD, e.g. a SEM) or parameter names, `;`-separated for the combined model |
| `preequilibrationConditionId` (optional) | a condition simulated to steady state first; its end state starts this condition |
| `lloq` (optional) | lower limit of quantification: rows with `measurement < lloq` or NaN are censored (M3) |
| `censored` (optional) | 1 for a below-LLOQ row whose `measurement` is the LLOQ (NONMEM BLQ style) |
| `weight` (optional) | precision weight `w`: the row's SD is divided by `sqrt(w)` (R `nls` weights) |

and an optional **condition table**: `conditionId` plus one column per model
parameter or initial state (`<state>` or `<state>_0`) that conditions override. A
cell holds a number (e.g. the drug concentration in an in vitro well) or the name of
a parameter, which makes an experiment-specific parameter: `kg = kg_armB` gives arm
B its own estimated growth rate while the other arms share the model's `kg`. Empty
cells keep the model's value.

Regimens (doses) per condition come as a dict `{conditionId: qsp.Regimen}`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from ._dosing import Regimen

REQUIRED = ("observableId", "simulationConditionId", "time", "measurement")


def _blank(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and v.strip() == "")


def _as_number_or_name(v):
    """A condition-table cell: float, parameter name (str) or None (blank)."""
    if _blank(v):
        return None
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return float(v)
    s = str(v).strip()
    try:
        return float(s)
    except ValueError:
        return s


@dataclasses.dataclass
class Dataset:
    """A validated dataset compiled to index arrays (built by `compile_dataset`)."""

    frame: pd.DataFrame  # the measurement table as given, plus `_cond`, `_tidx`, `_censored`
    condition_ids: tuple[str, ...]
    observables: tuple[str, ...]
    times: np.ndarray  # (n_cond, n_t), per condition sorted, padded with the last time
    row_cond: np.ndarray  # (n_rows,) int
    row_time: np.ndarray  # (n_rows,) int: index into times[row_cond]
    row_obs: np.ndarray  # (n_rows,) int: index into observables
    y: np.ndarray  # (n_rows,) observed value, the LLOQ for a censored row
    censored: np.ndarray  # (n_rows,) bool
    weight: np.ndarray  # (n_rows,) float
    noise: list  # per row: tuple of float|str (noiseParameters), or () for the defaults
    param_overrides: dict  # parameter name -> list per condition of float|str|None
    state_overrides: dict  # state name -> list per condition of float|str|None
    regimens: list  # per condition: Regimen or None
    preeq: list  # per condition: index of its preequilibration condition or None

    @property
    def n(self) -> int:
        return len(self.y)


def _frame(obj, what: str) -> pd.DataFrame:
    if isinstance(obj, pd.DataFrame):
        return obj.copy()
    if isinstance(obj, (str, bytes)) or hasattr(obj, "__fspath__"):
        return pd.read_csv(obj, sep=None, engine="python")
    raise TypeError(f"{what} must be a pandas DataFrame or a CSV/TSV path; got {type(obj).__name__}.")


def compile_dataset(model, measurements, conditions=None, regimens=None) -> Dataset:
    """Validate the tables against `model` and compile them to index arrays.

    Raises `ValueError` naming the column, row and value for: missing columns, an
    observable the model lacks, a time that is negative or not finite, a missing or
    negative measurement where the observable must be positive, a condition without
    data, an unknown condition, a condition column that is neither a parameter nor a
    state, a negative concentration (a condition value below a parameter's bounds).
    """
    m = _frame(measurements, "measurements")
    missing = [c for c in REQUIRED if c not in m.columns]
    if missing:
        raise ValueError(
            f"measurement table lacks column(s) {missing}; expected PEtab columns {list(REQUIRED)} "
            f"(got {list(m.columns)})."
        )
    if len(m) == 0:
        raise ValueError("measurement table has no rows; expected at least one observation.")
    m = m.reset_index(drop=True)
    m["observableId"] = m["observableId"].astype(str)
    m["simulationConditionId"] = m["simulationConditionId"].astype(str)

    outputs = _output_names(model)
    for i, obs in enumerate(m["observableId"]):
        if obs not in outputs:
            raise ValueError(
                f"measurement row {i}: observableId={obs!r} is not an output of "
                f"{type(model).__name__}; expected one of {sorted(outputs)}."
            )
    t = pd.to_numeric(m["time"], errors="coerce").to_numpy(float)
    # An algebraic model's "time" is any independent variable (it may be negative).
    bad = np.flatnonzero(~np.isfinite(t) | ((t < 0) & states_allowed(model)))
    if len(bad):
        raise ValueError(
            f"measurement row {bad[0]}: time={m['time'].iloc[bad[0]]} is invalid; expected a "
            "finite number" + (" >= 0." if states_allowed(model) else ".")
        )
    y = pd.to_numeric(m["measurement"], errors="coerce").to_numpy(float)

    # -- censoring (M3) --------------------------------------------------------------
    censored = np.zeros(len(m), bool)
    if "lloq" in m.columns or "LLOQ" in m.columns:
        lloq = pd.to_numeric(m["lloq" if "lloq" in m.columns else "LLOQ"], errors="coerce").to_numpy(float)
        has = np.isfinite(lloq)
        below = has & (np.isnan(y) | (y < lloq))
        censored |= below
        y = np.where(below, lloq, y)
    if "censored" in m.columns:
        flag = pd.to_numeric(m["censored"], errors="coerce").fillna(0).to_numpy() != 0
        censored |= flag
    bad = np.flatnonzero(~np.isfinite(y))
    if len(bad):
        raise ValueError(
            f"measurement row {bad[0]}: measurement={m['measurement'].iloc[bad[0]]!r} is missing or "
            "not finite; expected a number (or an `lloq` column marking it below LLOQ)."
        )

    weight = np.ones(len(m))
    if "weight" in m.columns:
        weight = pd.to_numeric(m["weight"], errors="coerce").to_numpy(float)
        bad = np.flatnonzero(~np.isfinite(weight) | (weight <= 0))
        if len(bad):
            raise ValueError(
                f"measurement row {bad[0]}: weight={m['weight'].iloc[bad[0]]!r}; expected a finite "
                "number > 0."
            )

    noise = [()] * len(m)
    if "noiseParameters" in m.columns:
        noise = []
        for i, v in enumerate(m["noiseParameters"]):
            if _blank(v):
                noise.append(())
                continue
            parts = tuple(_as_number_or_name(p) for p in str(v).split(";"))
            for p in parts:
                if isinstance(p, float) and not (p >= 0 and math.isfinite(p)):
                    raise ValueError(
                        f"measurement row {i}: noiseParameters={v!r}; expected finite numbers >= 0 "
                        "or parameter names."
                    )
            noise.append(parts)

    # -- conditions --------------------------------------------------------------------
    cond_ids = tuple(dict.fromkeys(m["simulationConditionId"]))
    preeq_col = None
    if "preequilibrationConditionId" in m.columns:
        preeq_col = [None if _blank(v) else str(v) for v in m["preequilibrationConditionId"]]
        extra = [c for c in preeq_col if c is not None and c not in cond_ids]
        cond_ids = cond_ids + tuple(dict.fromkeys(extra))
    cidx = {c: i for i, c in enumerate(cond_ids)}
    param_over, state_over = {}, {}
    if conditions is not None:
        c = _frame(conditions, "conditions")
        if "conditionId" not in c.columns:
            raise ValueError(f"condition table lacks column 'conditionId' (got {list(c.columns)}).")
        c["conditionId"] = c["conditionId"].astype(str)
        known = set(c["conditionId"])
        for cid in cond_ids:
            if cid not in known:
                raise ValueError(
                    f"simulationConditionId={cid!r} is not in the condition table; known conditions: "
                    f"{sorted(known)}."
                )
        no_data = sorted(known - set(cond_ids))
        if no_data:
            raise ValueError(
                f"condition {no_data[0]!r} of the condition table has no measurements; every "
                "experiment needs data (remove it or add its observations)."
            )
        c = c.set_index("conditionId")
        info = _param_info(model)
        states = tuple(getattr(model, "states", ()))
        for col in c.columns:
            if col in ("conditionName",):
                continue
            values = [_as_number_or_name(c.loc[cid, col]) for cid in cond_ids]
            if col in info:
                lo, hi = info[col].bounds
                for cid, v in zip(cond_ids, values):
                    if isinstance(v, float) and not (lo <= v <= hi):
                        raise ValueError(
                            f"condition {cid!r}: {col}={v:g} is outside the bounds [{lo:g}, {hi:g}] of "
                            f"parameter {col}" + (f" ({info[col].units})" if info[col].units else "")
                            + ("; a concentration cannot be negative." if lo == 0 else ".")
                        )
                param_over[col] = values
            elif col in states or (col.endswith("_0") and col[:-2] in states):
                name = col if col in states else col[:-2]
                for cid, v in zip(cond_ids, values):
                    if isinstance(v, float) and v < 0:
                        raise ValueError(
                            f"condition {cid!r}: initial state {name}={v:g} is negative; expected >= 0."
                        )
                state_over[name] = values
            else:
                raise ValueError(
                    f"condition table column {col!r} is neither a parameter nor a state of "
                    f"{type(model).__name__}; parameters: {sorted(info)}, states: {list(states)}."
                )
    if state_over and not states_allowed(model):
        raise ValueError(f"{type(model).__name__} has no states; the condition table cannot set initial states.")

    regs = [None] * len(cond_ids)
    for cid, reg in (regimens or {}).items():
        if str(cid) not in cidx:
            raise ValueError(
                f"regimens has condition {cid!r}, which has no measurements; conditions: {list(cond_ids)}."
            )
        if not isinstance(reg, Regimen):
            raise TypeError(f"regimens[{cid!r}] must be a qsp.Regimen; got {type(reg).__name__}.")
        regs[cidx[str(cid)]] = reg
    if any(r is not None for r in regs) and not states_allowed(model):
        raise ValueError(f"{type(model).__name__} is algebraic; it cannot take dose regimens.")

    # -- times: unique sorted per condition, padded ------------------------------------
    row_cond = m["simulationConditionId"].map(cidx).to_numpy()
    per = []
    for k in range(len(cond_ids)):
        tk = np.unique(t[row_cond == k])
        per.append(tk if len(tk) else np.zeros(1))
    n_t = max(len(tk) for tk in per)
    times = np.stack([np.concatenate([tk, np.full(n_t - len(tk), tk[-1])]) for tk in per])
    row_time = np.array([np.searchsorted(per[k], tt) for k, tt in zip(row_cond, t)], dtype=int)
    observables = tuple(dict.fromkeys(m["observableId"]))
    row_obs = m["observableId"].map({o: i for i, o in enumerate(observables)}).to_numpy()

    preeq = [None] * len(cond_ids)
    if preeq_col is not None:
        if not states_allowed(model):
            raise ValueError("preequilibrationConditionId needs an ODE model.")
        for k, p in zip(row_cond, preeq_col):
            if p is not None:
                if preeq[k] not in (None, cidx[p]):
                    raise ValueError(
                        f"condition {cond_ids[k]!r} has two preequilibration conditions; expected one."
                    )
                preeq[k] = cidx[p]

    m["_cond"], m["_tidx"], m["_censored"] = row_cond, row_time, censored
    return Dataset(
        frame=m, condition_ids=cond_ids, observables=observables, times=times,
        row_cond=row_cond, row_time=row_time, row_obs=row_obs, y=y, censored=censored,
        weight=weight, noise=noise, param_overrides=param_over, state_overrides=state_over,
        regimens=regs, preeq=preeq,
    )


def states_allowed(model) -> bool:
    return len(getattr(model, "states", ())) > 0


def _param_info(model):
    from ._params import parameter_info

    return parameter_info(model)


def _output_names(model) -> set:
    import jax.numpy as jnp

    if states_allowed(model):
        y0 = jnp.asarray(model.initial(), dtype=float)
        return set(model.outputs(0.0, y0))
    return set(model.outputs(jnp.zeros(1)))
