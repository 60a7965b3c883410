"""Parameter sets of the TCE CRS model: Supplementary Table 2 of Hosseini 2020 and presets.

`table()` reads the shipped copy of Supplementary Table 2
(`models/data/crs/hosseini2020_supp_table2_parameters.csv`); `TABLE_NAMES` maps the
table's names to the model's fields. Presets return a `TCECRS`:

- `human()`: human DLBCL column (the default of `TCECRS()`), label-tuned PK (ours).
- `hosseini_pk(model, bw)`: the paper's linear human PK, cyno PK scaled by body weight
  (Table 2 human column, per kg; body weight 70 kg is an assumption of the reference).
- `cyno(bw=3.4)`: cynomolgus column, spleen only, no tumour (MATLAB defaults: tissue2on
  = tissue3on = 0, BW 3.4 kg), with the MATLAB nonlinear clearance.
- `blinatumomab(bsa)`: CD19xCD3 blinatumomab on the DLBCL physiology: Table 2 "Blin"
  potency rows and 1-compartment PK (CL 22300 mL/m2/d, Vz 1610 mL/m2), BSA in m2
  (1.9 m2 is our assumption).
"""

from __future__ import annotations

import functools
import os

import pandas as pd

from .model import TCECRS

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "crs")
TABLE_CSV = os.path.join(DATA, "hosseini2020_supp_table2_parameters.csv")

#: Table 2 name -> model field (the cell/physiology rows the model takes directly).
TABLE_NAMES = {
    "VmT": "VmT", "fTact": "fTact", "KmBT_act": "KmBT_act", "ndrugactT": "ndrugactT", "S": "S",
    "KdrugactT": "KdrugactT", "VmB": "VmB", "KmTB_kill": "KmTB_kill", "fKmTB_kill": "fKmTB_kill",
    "nkill": "nkill", "KdrugB": "KdrugB", "kBapop": "kBapop", "kBkill": "kBkill", "fBkill": "fBkill",
    "kBprolif": "kBprolif", "kTprolif": "kTprolif", "kTaexit": "kTaexit", "kTact": "kTact",
    "fTadeact": "fTadeact", "fTap": "fTap", "kTaapop": "kTaapop", "fTaprolif": "fTaprolif",
    "fTrapop": "fTrapop", "kTrexit": "kTrexit", "fdrug": "fdrug", "fa0": "fa0", "fAICD": "fAICD",
    "fTa0deact": "fTa0deact", "fTa0apop": "fTa0apop", "finj": "finj",
    "Trpbref_perml": "Tref", "Bpbref_perml": "Bref", "Vpb": "Vpb",
    "Vtissue": "V_S", "KTrp": "KT_S", "KBp": "KB_S", "Kp": "Kp_S",
    "Vtissue2": "V_L", "KTrp2": "KT_L", "KBp2": "KB_L", "Kp2": "Kp_L",
    "Vtissue3": "V_M", "KTrp3": "KT_M", "KBp3": "KB_M", "Kp3": "Kp_M",
    "kBmat_kBapop_ratio": "kBmat_kBapop_ratio", "B19no20_B1920_ratio": "r20",
    "Vtumor": "V_U", "KTrptumor": "KT_U", "KBptumor": "KB_U", "Kptumor": "Kp_U",
    "kBtumorprolif": "kBtumorprolif", "kIL6prod": "kIL6prod", "IL6_tiss_contribution": "f_tiss",
    "thalfIL6": "thalfIL6",
}


@functools.cache
def table() -> pd.DataFrame:
    """Supplementary Table 2 as a DataFrame indexed by parameter name."""
    return pd.read_csv(TABLE_CSV).set_index("name")


def column(name: str) -> dict[str, float]:
    """One column of Table 2 ("cyno", "human", "ALL" or "DLBCL") as model fields
    (rows with no value in that column are left out)."""
    t = table()
    if name not in ("cyno", "human", "ALL", "DLBCL"):
        raise ValueError(f"column={name!r}; expected 'cyno', 'human', 'ALL' or 'DLBCL'.")
    out = {}
    for tname, field in TABLE_NAMES.items():
        v = pd.to_numeric(t.loc[tname, name], errors="coerce")
        if pd.notna(v):
            out[field] = float(v)
    return out


def bounds_cyno() -> dict[str, tuple[float, float]]:
    """The cyno virtual-cohort sampling ranges [LB, UB] of Table 2, by model field."""
    t = table()
    out = {}
    for tname, field in TABLE_NAMES.items():
        lo, hi = (pd.to_numeric(t.loc[tname, c], errors="coerce") for c in ("cyno_LB", "cyno_UB"))
        if pd.notna(lo) and pd.notna(hi):
            out[field] = (float(lo), float(hi))
    return out


def human() -> TCECRS:
    """Human DLBCL (Table 2, DLBCL column) with the label-tuned PK: `TCECRS()`."""
    return TCECRS()


def hosseini_pk(model: TCECRS | None = None, bw: float = 70.0) -> TCECRS:
    """The paper's human PK: Table 2 human column (mL/kg/d, mL/kg) x body weight `bw`
    (kg), linear, constant clearance."""
    model = TCECRS() if model is None else model
    t = table()
    per_kg = {k: float(t.loc[k, "human"]) for k in ("Cl_tdb", "Cld_tdb", "Vc_tdb", "Vp_tdb")}
    cl = per_kg["Cl_tdb"] * bw / 1000.0
    return model.replace(
        CLbase=cl, CLss=cl, Q=per_kg["Cld_tdb"] * bw / 1000.0,
        V1=per_kg["Vc_tdb"] * bw / 1000.0, V2=per_kg["Vp_tdb"] * bw / 1000.0, Vm=0.0,
    )


def cyno(bw: float = 3.4) -> TCECRS:
    """Cynomolgus monkey: Table 2 cyno column, spleen compartment only (MATLAB
    defaults), cyno PK with the MATLAB Michaelis-Menten term (Vm 212 ug/d, Km 4.74
    ug/mL), body weight `bw` kg (MATLAB default 3.4)."""
    base = TCECRS(ln_on=False, marrow_on=False, tumor_on=False)
    t = table()
    vals = column("cyno")
    vals = {k: v for k, v in vals.items() if k in dir(base)}
    per_kg = {k: float(t.loc[k, "cyno"]) for k in ("Cl_tdb", "Cld_tdb", "Vc_tdb", "Vp_tdb")}
    cl = per_kg["Cl_tdb"] * bw / 1000.0
    return base.replace(
        **vals, CLbase=cl, CLss=cl, Q=per_kg["Cld_tdb"] * bw / 1000.0,
        V1=per_kg["Vc_tdb"] * bw / 1000.0, V2=per_kg["Vp_tdb"] * bw / 1000.0,
        Vm=212.0 / 1000.0, Km=4.74,
    )


def blinatumomab(model: TCECRS | None = None, bsa: float = 1.9) -> TCECRS:
    """Blinatumomab (CD19xCD3) on the physiology of `model` (default human DLBCL):
    Table 2 Blin rows (KdrugactT 0.1 ng/mL, n 1, KdrugB 0.15 ng/mL, KmBT_act 0.716,
    KmTB_kill 0.75, nkill 1.027) and 1-compartment PK (CL 22300 mL/m2/d, Vz 1610 mL/m2)
    for body surface area `bsa` m2 (ours: 1.9)."""
    model = TCECRS() if model is None else model
    t = table()
    g = lambda k: float(t.loc[k, "human"])  # noqa: E731
    cl = g("Cl_blin") * bsa / 1000.0
    import dataclasses

    blin = dataclasses.replace(model, target_cd19=True)
    return blin.replace(
        KdrugactT=g("KdrugactT_blin"), ndrugactT=g("ndrugactT_blin"), KdrugB=g("KdrugB_blin"),
        KmBT_act=g("KmBT_act_blin"), KmTB_kill=g("KmTB_kill_blin"), nkill=g("nkill_blin"),
        CLbase=cl, CLss=cl, V1=g("Vz_blin") * bsa / 1000.0, Q=0.0, V2=1.0, Vm=0.0,
    )
