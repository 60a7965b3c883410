"""Clinical schedules, trial arms and the published population PK of the four drugs.

Schedules (Kirouac 2017 Fig. 6B, as reproduced by Metrum, `shared/references/mapk.md`
§2.8): vemurafenib 960 mg BID continuous; cobimetinib 60 mg and GDC-0994 400 mg QD,
21 days on / 7 off; cetuximab 450 mg IV weekly (about 250 mg/m^2; the 400 mg/m^2
loading dose is not modelled). Doses fall at t = 0 and before the read-out day.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from qsp import Regimen

#: Drug names in the order of the model's concentration outputs.
DRUGS = ("cetuximab", "vemurafenib", "cobimetinib", "gdc0994")

#: Dosing compartment (state name of `Kirouac2017`) of each drug.
DOSE_CMT = {"cetuximab": "RTK1i_blood", "vemurafenib": "RAFi_gut",
            "cobimetinib": "MEKi_gut", "gdc0994": "ERKi_gut"}

#: Clinical schedule of each drug: (dose mg, interval day, days on, cycle length day).
SCHEDULES = {
    "cetuximab": (450.0, 7.0, None, None),
    "vemurafenib": (960.0, 0.5, None, None),
    "cobimetinib": (60.0, 1.0, 21, 28),
    "gdc0994": (400.0, 1.0, 21, 28),
}

#: Molecular weights (g/mol) to convert in vitro molar concentrations to mg/L.
MW = {"cetuximab": 152_000.0, "vemurafenib": 489.9, "cobimetinib": 531.3, "gdc0994": 440.8}


def dose_times(drug: str, days: float = 56.0) -> np.ndarray:
    """Times (day) of the clinical doses of `drug` in [0, days)."""
    if drug not in SCHEDULES:
        raise ValueError(f"unknown drug {drug!r}; expected one of {DRUGS}.")
    _, ii, on, cycle = SCHEDULES[drug]
    t = np.arange(0.0, days - 1e-9, ii)
    if on is not None:
        t = t[np.mod(t, cycle) < on - 1e-9]
    return t


def regimen(drug: str, days: float = 56.0, dose: float | None = None) -> Regimen:
    """The clinical schedule of one drug up to `days` (dose in mg; default clinical)."""
    t = dose_times(drug, days)
    amount = SCHEDULES[drug][0] if dose is None else dose
    return Regimen.bolus(amount=np.full(len(t), amount), time=t, cmt=DOSE_CMT[drug])


def parse_arm(arm: str) -> tuple[str, ...]:
    """Drugs of an arm named `untreated` or drug names joined by `+` (any order)."""
    if arm == "untreated":
        return ()
    drugs = tuple(arm.split("+"))
    for d in drugs:
        if d not in DRUGS:
            raise ValueError(
                f"arm {arm!r}: unknown drug {d!r}; expected 'untreated' or drugs from "
                f"{', '.join(DRUGS)} joined by '+'.")
    if len(set(drugs)) != len(drugs):
        raise ValueError(f"arm {arm!r} names a drug twice.")
    return tuple(d for d in DRUGS if d in drugs)


def arm_name(drugs) -> str:
    """The arm name of a set of drugs: names in `DRUGS` order joined by `+`, or `untreated`."""
    return "+".join(d for d in DRUGS if d in drugs) or "untreated"


#: All 16 combinations, untreated first, in a stable order.
ARMS = tuple(arm_name(c) for k in range(5) for c in itertools.combinations(DRUGS, k))


def arm_regimen(arm: str, days: float = 56.0) -> Regimen:
    """The regimen of a trial arm (`Regimen.empty()` for `untreated`)."""
    drugs = parse_arm(arm)
    reg = Regimen.empty()
    for d in drugs:
        reg = regimen(d, days) if reg.n_events == 0 else reg + regimen(d, days)
    return reg


# -- population PK ----------------------------------------------------------------------

#: Population PK of Kirouac 2017 Suppl. Table S9, as transcribed in Metrum's
#: cic-2017 content/objects.R (`shared/references/mapk.md` §2.7): typical values and
#: the covariance (log scale) of the log-normal inter-individual variability.
POP_PK = {
    "vemurafenib": dict(names=("cl2", "ka2", "V2"), theta=(32.2, 4.48, 114.0),
                        omega=((0.109, 0.0, 0.106), (0.0, 1.02, 0.0), (0.106, 0.0, 0.457))),
    "cobimetinib": dict(names=("cl3", "ka3", "q2", "V3", "V3b"), theta=(327.0, 33.7, 252.0, 487.0, 335.0),
                        omega=((0.35, 0.0, 0.0, 0.264, 0.18), (0.0, 2.81, 0.0, 0.0, 0.0),
                               (0.0, 0.0, 0.517, 0.0, 0.0), (0.264, 0.0, 0.0, 0.26, 0.0625),
                               (0.18, 0.0, 0.0, 0.0625, 0.557))),
    "gdc0994": dict(names=("cl4", "ka4", "V4"), theta=(161.0, 35.0, 171.0),
                    omega=((0.182, 0.0, 0.0), (0.0, 3.0, 0.0), (0.0, 0.0, 0.149))),
    "cetuximab": dict(names=("cl1", "V1"), theta=(0.67, 4.5), omega=((0.0, 0.0), (0.0, 0.0))),
}


def pk_to_model(pk: dict) -> dict:
    """Model fields (ke = CL/V) from clearance/volume PK parameters (`POP_PK` names)."""
    out = {}
    for k, v in pk.items():
        if k.startswith("cl"):
            i = k[2:]
            out["ke" + i] = v / pk["V" + i]
        else:
            out[k] = v
    return out


def sample_pk(key, n: int) -> dict:
    """Draw `n` patients' PK from `POP_PK` (log-normal with the published covariance);
    returns model fields (`ke*`, `ka*`, `V*`, `q2`, `V3b`) as arrays of shape `(n,)`."""
    out = {}
    for i, (drug, spec) in enumerate(POP_PK.items()):
        theta = jnp.log(jnp.asarray(spec["theta"]))
        cov = jnp.asarray(spec["omega"])
        eta = jax.random.multivariate_normal(jax.random.fold_in(key, i), jnp.zeros(len(theta)), cov,
                                             shape=(n,), method="svd")
        vals = jnp.exp(theta + eta)
        out.update({name: vals[:, j] for j, name in enumerate(spec["names"])})
    return pk_to_model(out)
