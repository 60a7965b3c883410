"""Clinical data for `qsp.fit`: a NONMEM-style dataset as PEtab-style tables.

Each ID becomes one condition (`ID<id>`) with its own regimen (doses with ADDL/II
expanded, by `qsp.nonmem.regimens_from_nonmem`); its observation records (EVID 0,
MDV 0) become measurement rows of one model output (`observable`). Below-LLOQ
records are kept for M3: a `BLQ` column (1 = below, DV holds the LLOQ) or an `LLOQ`
column. Covariate columns named exactly like a model parameter and constant within
an ID set that parameter for the ID (the condition table).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def is_nonmem(frame: pd.DataFrame) -> bool:
    cols = {str(c).strip().upper() for c in frame.columns}
    return "observableId" not in frame.columns and {"ID", "TIME", "DV"} <= cols


def tables_from_nonmem(data, model, observable=None):
    """`(measurements, conditions, regimens)` for `qsp.fit` from a NONMEM dataset."""
    from ._experiment import _output_names
    from ._params import parameter_info
    from .nonmem import read_nonmem, regimens_from_nonmem

    df = read_nonmem(data)
    outputs = sorted(_output_names(model))
    if observable is None:
        if len(outputs) != 1:
            raise ValueError(
                f"a NONMEM dataset's DV must be mapped to a model output: pass observable=... "
                f"(one of {outputs})."
            )
        observable = outputs[0]
    if observable not in outputs:
        raise ValueError(f"observable={observable!r} is not an output of {type(model).__name__}; expected one of {outputs}.")
    inds = regimens_from_nonmem(df, model)
    cols = {c.upper(): c for c in df.columns}
    blq = df[cols["BLQ"]].to_numpy() if "BLQ" in cols else None
    lloq = pd.to_numeric(df[cols["LLOQ"]], errors="coerce").to_numpy(float) if "LLOQ" in cols else None
    info = parameter_info(model)
    cov_cols = [c for c in df.columns if c in info]
    rows, conds, regs = [], [], {}
    mdv = df["MDV"].to_numpy()
    dv = df["DV"].to_numpy(float)
    for ind in inds:
        idv = ind.id
        cid = f"ID{int(idv)}" if float(idv).is_integer() else f"ID{idv}"
        keep = mdv[ind.rows] == 0
        if blq is not None:
            keep |= np.asarray(blq[ind.rows], float) == 1
        if not keep.any():
            raise ValueError(f"NONMEM ID {idv} has no observations (EVID=0, MDV=0); every subject needs data.")
        if np.any(ind.obs_after_dose[keep]):
            t = ind.ts[keep][np.argmax(ind.obs_after_dose[keep])]
            raise ValueError(
                f"NONMEM ID {idv}: an observation at TIME={t:g} follows a dose record at the same time; "
                "qsp.fit reports observations before same-time doses (troughs). Place the observation "
                "record before the dose record."
            )
        for r, t in zip(ind.rows[keep], ind.ts[keep]):
            row = dict(observableId=observable, simulationConditionId=cid, time=float(t), measurement=dv[r])
            if blq is not None:
                row["censored"] = int(float(blq[r]) == 1)
            if lloq is not None:
                row["lloq"] = lloq[r]
            rows.append(row)
        regs[cid] = ind.regimen
        if cov_cols:
            sub = df.iloc[list(range(ind.rows.min(), ind.rows.max() + 1))]
            c = {"conditionId": cid}
            for col in cov_cols:
                vals = pd.to_numeric(sub[col], errors="coerce").dropna().unique()
                if len(vals) > 1:
                    raise ValueError(f"NONMEM ID {idv}: covariate {col} is not constant within the ID ({vals[:3]}).")
                c[col] = float(vals[0]) if len(vals) else np.nan
            conds.append(c)
    regs = {k: v for k, v in regs.items() if v.n_events}
    return pd.DataFrame(rows), (pd.DataFrame(conds) if conds else None), regs
