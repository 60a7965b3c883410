"""The published virtual populations of Kirouac 2017 and the day-56 response rule.

- `"s10"`: Suppl. Table S10, 1000 plausible patients with prevalence weights (PW, sum
  1; 378 have PW = 0) and Table S10's typical PK for everyone.
- `"s10-resample250"`: Metrum's 250 draws from the 1000 by PW (114 distinct patients),
  each with per-patient PK re-drawn from the population PK; unweighted.
"""

from __future__ import annotations

import dataclasses
from importlib import resources

import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._model import Kirouac2017

VPOPS = ("s10", "s10-resample250")

#: The 16 parameters that vary across the plausible patients (Table S10).
VARIED = ("BRAFt", "CRAFt", "dmax", "G13", "Gspry", "Gdusp", "MEKb", "MEKt",
          "PI3Kb", "PI3Kt", "RASb", "RASt", "RTK1t", "RTK2t", "wOR", "wRAS")

#: Per-patient PK columns of the 250 resample (clearances become ke = cl/V).
_PK250 = ("cl2", "ka2", "V2", "cl3", "ka3", "q2", "V3", "V3b", "cl4", "ka4", "V4")

#: Day-56 response thresholds on tumour size relative to baseline (RECIST-like, single
#: time point, as used by Metrum's reproduction; `shared/references/mapk.md` §2.8).
CR_BELOW, PR_BELOW, PD_ABOVE = 0.1, 0.7, 1.2


def _data(name: str) -> pd.DataFrame:
    path = resources.files("qsp.models").joinpath("data", "mapk", name)
    with path.open("r") as f:
        return pd.read_csv(f)


def fixed_table() -> pd.DataFrame:
    """Table S10's columns that are the same for every patient (`name`, `value`, `kind`)."""
    return _data("kirouac2017_tableS10_fixed.csv")


def load_table(vpop: str = "s10") -> pd.DataFrame:
    """The population as a table: `VPOP` (Table S10 id), `PW` (weights; for the resample
    the PW of the drawn patient, informative only), the 16 varied parameters, and for
    the resample the per-patient PK as model fields (`ke*`, `ka*`, `V*`, `q2`, `V3b`)."""
    if vpop not in VPOPS:
        raise ValueError(f"unknown vpop={vpop!r}; expected one of {VPOPS}.")
    s10 = _data("kirouac2017_tableS10_vpop1000_varied.csv")
    if vpop == "s10":
        return s10
    rs = _data("kirouac2017_vpop250_pk_metrum.csv")
    table = s10.set_index("VPOP").loc[rs["VPOP"]].reset_index()
    table.insert(0, "patient", rs["VPOP2"].to_numpy())
    for i in "234":
        table["ke" + i] = rs["cl" + i].to_numpy() / rs["V" + i].to_numpy()
    for c in ("ka2", "V2", "ka3", "q2", "V3", "V3b", "ka4", "V4"):
        table[c] = rs[c].to_numpy()
    return table


def load_vpop(vpop: str = "s10", *, init: str = "table", **fields):
    """The population as one batched `Kirouac2017` (each varied parameter, and the PK
    for the resample, an array with a leading patient axis) and its weights.

    **Returns:** `(model, weights)`; `weights` are the published PW for `"s10"` and
    `None` (unweighted) for `"s10-resample250"`. Extra `fields` replace model fields.
    """
    table = load_table(vpop)
    cols = list(VARIED)
    if vpop != "s10":
        cols += ["ke2", "ka2", "V2", "ke3", "ka3", "q2", "V3", "V3b", "ke4", "ka4", "V4"]
    values = {c: jnp.asarray(table[c].to_numpy(dtype=float)) for c in cols}
    values.update(fields)
    model = Kirouac2017(init=init).replace(**values)
    weights = jnp.asarray(table["PW"].to_numpy(dtype=float)) if vpop == "s10" else None
    return model, weights


def patient(vpop_id: int, *, init: str = "steady") -> Kirouac2017:
    """One Table S10 plausible patient (1-based `VPOP` id) with typical PK."""
    s10 = _data("kirouac2017_tableS10_vpop1000_varied.csv").set_index("VPOP")
    if vpop_id not in s10.index:
        raise ValueError(f"vpop_id={vpop_id} is not a Table S10 patient; expected 1..{len(s10)}.")
    row = s10.loc[vpop_id]
    return Kirouac2017(init=init).replace(**{c: float(row[c]) for c in VARIED})


# -- response ---------------------------------------------------------------------------


def classify(size):
    """Day-56 response category of relative tumour size: `"CR"` (< 0.1), `"PR"` (< 0.7),
    `"PD"` (> 1.2), otherwise `"SD"`; NaN (failed simulation) gives `"NA"`."""
    s = np.asarray(size, dtype=float)
    out = np.full(s.shape, "SD", dtype=object)
    out[s > PD_ABOVE] = "PD"
    out[s < PR_BELOW] = "PR"
    out[s < CR_BELOW] = "CR"
    out[np.isnan(s)] = "NA"
    return out


@dataclasses.dataclass(frozen=True)
class Response:
    """Weighted response summary of one arm: objective response rate (CR + PR), CR and
    PD fractions and the (weighted) median size."""

    orr: float
    cr: float
    pd: float
    median_size: float


def summarize(size, weights=None) -> Response:
    """`Response` of day-56 sizes (patients on the last axis), weighted by `weights`
    (normalised here) or unweighted. Failed (NaN) patients are excluded."""
    s = np.asarray(size, dtype=float).reshape(-1)
    w = np.ones_like(s) if weights is None else np.asarray(weights, dtype=float).reshape(-1)
    if w.shape != s.shape:
        raise ValueError(f"weights has {w.size} entries for {s.size} patients.")
    ok = ~np.isnan(s)
    s, w = s[ok], w[ok]
    w = w / w.sum()
    order = np.argsort(s)
    cum = np.cumsum(w[order])
    median = float(s[order][np.searchsorted(cum, 0.5)])
    return Response(orr=float(w[s < PR_BELOW].sum()), cr=float(w[s < CR_BELOW].sum()),
                    pd=float(w[s > PD_ABOVE].sum()), median_size=median)
