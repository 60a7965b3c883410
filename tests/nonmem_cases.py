"""NONMEM-style test datasets with closed-form answers (ours, built for the tests).

Each dataset has several IDs, one dosing scenario each, so one batched simulation
(one compile) checks them all. Records are listed in file order; every observation
states which closed-form value it must report (`after`: whether a bolus given at
exactly its time is included), so the record-order rule is checked, not assumed.

- `PK1`: `pk1cmt` with `--param` values `PK1_PARAMS` and a per-ID `CL` column
  (`.` for ID 4, which keeps the default CL = 1). Observations after a dose record at
  their own time occur (IDs 2 and 5), so `simulate_nonmem` uses its two-slot layout.
- `PK2`: `pk2cmt` with `PK2_PARAMS`, no covariates (an unbatched model), and no
  observation placed after a dose record (the one-slot layout).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pk_closed_form as cf

HEADER = ("ID", "TIME", "AMT", "RATE", "CMT", "EVID", "II", "ADDL", "DV", "MDV")


def dose(t, amt, cmt, rate=0.0, ii=0.0, addl=0):
    return dict(TIME=t, AMT=amt, RATE=rate, CMT=cmt, EVID=1, II=ii, ADDL=addl)


def obs(t, after=False):
    return dict(TIME=t, EVID=0, after=after)


def other(t):
    return dict(TIME=t, EVID=2)


@dataclasses.dataclass
class Case:
    id: int
    records: list
    reference: object  # reference(t, after) -> CP
    covariates: dict = dataclasses.field(default_factory=dict)

    def observations(self):
        return [(r["TIME"], r["after"]) for r in self.records if r["EVID"] == 0]


def to_csv(cases, covariates=()) -> str:
    """The dataset as CSV text, `.` for missing values (a covariate only on the first
    record of each ID, `.` elsewhere, which `simulate_nonmem` must accept)."""
    lines = ["# ours: synthetic events for closed-form PK tests (tests/nonmem_cases.py)",
             ",".join(HEADER + tuple(covariates))]
    for case in cases:
        for k, r in enumerate(case.records):
            mdv = 0 if r["EVID"] == 0 else 1
            row = [case.id, r["TIME"], r.get("AMT", "."), r.get("RATE", "."), r.get("CMT", "."),
                   r["EVID"], r.get("II", "."), r.get("ADDL", "."), ".", mdv]
            row += [case.covariates.get(c, ".") if k == 0 else "." for c in covariates]
            lines.append(",".join(str(v) for v in row))
    return "\n".join(lines) + "\n"


# -- pk1cmt --------------------------------------------------------------------------------

PK1_PARAMS = dict(V=12.0, KA=0.8, F1=0.8, ALAG1=0.5)
_V, _KA, _F, _LAG = PK1_PARAMS["V"], PK1_PARAMS["KA"], PK1_PARAMS["F1"], PK1_PARAMS["ALAG1"]


def _pk1(case_id, cl, records, ref):
    cov = {"CL": cl} if cl is not None else {}
    return Case(case_id, records, ref, cov)


PK1 = [
    # IV bolus q12h x4 (ADDL); troughs at 12 and 24 come before the implied doses.
    _pk1(1, 1.5,
         [obs(0.0), dose(0.0, 100.0, 2, ii=12.0, addl=3), *map(obs, (1.0, 6.0, 12.0, 12.5, 24.0, 30.0, 47.5, 60.0))],
         lambda t, a: cf.one_cmt_bolus(t, 100.0, cf.dose_times(0, 12, 3), 1.5, _V, after_dose=a)),
    # A 10 h infusion (rate 20) spanning boluses at 4 h (observed after) and 8 h (observed before).
    _pk1(2, 2.0,
         [dose(0.0, 200.0, 2, rate=20.0), obs(2.0), dose(4.0, 50.0, 2), obs(4.0, after=True), obs(5.0),
          obs(8.0), dose(8.0, 50.0, 2), obs(9.0), obs(10.0), obs(11.0), obs(24.0)],
         lambda t, a: cf.one_cmt_infusion(t, 200.0, 0.0, 10.0, 2.0, _V)
         + cf.one_cmt_bolus(t, 50.0, [4.0, 8.0], 2.0, _V, after_dose=a)),
    # Oral (DEPOT = CMT 1) q24h x3 with lag 0.5 h and F1 = 0.8; CP = 0 before the lag.
    _pk1(3, 0.9,
         [dose(0.0, 100.0, 1, ii=24.0, addl=2), *map(obs, (0.25, 0.75, 2.0, 6.0, 24.25, 25.0, 49.0, 72.0))],
         lambda t, a: cf.one_cmt_oral(t, 100.0, cf.dose_times(0, 24, 2), 0.9, _V, _KA, _F, _LAG)),
    # Repeated 2 h infusions by RATE (ADDL/II), an EVID=2 record, default CL (no covariate).
    _pk1(4, None,
         [dose(0.0, 100.0, 2, rate=50.0, ii=8.0, addl=2), obs(1.0), obs(2.0), other(3.0), obs(3.0),
          *map(obs, (8.0, 9.0, 10.5, 20.0, 30.0))],
         lambda t, a: cf.one_cmt_infusion(t, 100.0, cf.dose_times(0, 8, 2), 2.0, 1.0, _V)),
    # Record order: observations before and after the same-time dose record at 6 h.
    _pk1(5, 1.2,
         [dose(0.0, 100.0, 2), obs(6.0, after=False), dose(6.0, 100.0, 2), obs(6.0, after=True), obs(7.0)],
         lambda t, a: cf.one_cmt_bolus(t, 100.0, [0.0, 6.0], 1.2, _V, after_dose=a)),
]
PK1_CSV = to_csv(PK1, covariates=("CL",))

# -- pk2cmt --------------------------------------------------------------------------------

PK2_PARAMS = dict(KA=1.2, F1=0.9, ALAG1=0.75)  # CL 1, V1 10, Q 2, V2 20: pk2cmt defaults
_MICRO = dict(CL=1.0, V1=10.0, Q=2.0, V2=20.0)

PK2 = [
    Case(1, [dose(0.0, 100.0, 2, ii=12.0, addl=2), *map(obs, (0.5, 6.0, 12.0, 13.0, 30.0, 48.0))],
         lambda t, a: cf.two_cmt_bolus(t, 100.0, cf.dose_times(0, 12, 2), **_MICRO, after_dose=a)),
    # A 12 h infusion (rate 25) spanning boluses at 3 h and 6 h, observed just before them.
    Case(2, [dose(0.0, 300.0, 2, rate=25.0), obs(1.0), obs(3.0), dose(3.0, 40.0, 2), obs(4.0),
             obs(6.0), dose(6.0, 40.0, 2), *map(obs, (7.0, 12.0, 13.0, 36.0))],
         lambda t, a: cf.two_cmt_infusion(t, 300.0, 0.0, 12.0, **_MICRO)
         + cf.two_cmt_bolus(t, 40.0, [3.0, 6.0], **_MICRO, after_dose=a)),
    Case(3, [dose(0.0, 100.0, 1, ii=12.0, addl=3), *map(obs, (0.5, 1.0, 3.0, 12.5, 13.0, 40.0, 60.0))],
         lambda t, a: cf.two_cmt_oral(t, 100.0, cf.dose_times(0, 12, 3), **_MICRO, KA=1.2, F=0.9, lag=0.75)),
]
PK2_CSV = to_csv(PK2)


def reference_frame(cases):
    """(ID, TIME, CP) of every observation record, in dataset order."""
    rows = [(c.id, t, float(c.reference(np.array([t]), after)[0])) for c in cases for t, after in c.observations()]
    return np.array(rows)


def assert_matches(pred, cases, rtol=1e-6, zero_atol=1e-12):
    """Every observation's CP within `rtol` relative error of the closed form (where
    the closed form is exactly 0, before a lag or a first dose, within `zero_atol`)."""
    ref = reference_frame(cases)
    assert len(pred) == len(ref)
    np.testing.assert_array_equal(pred["ID"].to_numpy(), ref[:, 0])
    np.testing.assert_array_equal(pred["TIME"].to_numpy(), ref[:, 1])
    assert (pred["status"] == 0).all()
    cp, exact = pred["CP"].to_numpy(), ref[:, 2]
    zero = exact == 0
    assert np.all(np.abs(cp[zero]) <= zero_atol), cp[zero]
    rel = np.abs(cp[~zero] / exact[~zero] - 1)
    assert rel.max() < rtol, (rel.max(), pred[~zero].iloc[int(rel.argmax())].to_dict())
    return rel.max()
