r"""Regimen optimisation, MAPK use case: BRAF + MEK (+ EGFR) inhibitor combination doses
that maximise day-56 response under a toxicity proxy.

**Problem (ours).** On the first `n` patients of Metrum's 250-patient resample of the
Kirouac 2017 population (`load_vpop("s10-resample250")`, per-patient PK), keep each
drug's clinical schedule (vemurafenib BID, cobimetinib QD 21/7, cetuximab weekly;
`_dosing.SCHEDULES`) and choose the dose per administration $d_i$ of vemurafenib
(BRAF), cobimetinib (MEK) and optionally cetuximab (EGFR), between 1/20 of and the
clinical dose $D_i$:

$$\max_d\ ORR(d) \quad\text{s.t.}\quad \text{tox}(d) = \sum_i d_i / D_i \le b.$$

$ORR$ is the fraction with day-56 tumour size below 0.7 of baseline (`classify`: CR or
PR). **The toxicity proxy is ours**, not from Kirouac 2017 or a label: dose intensity
relative to each drug's clinical dose, summed over the drugs (the PK is linear, so
this is the sum of AUC fractions); each drug at its clinical dose scores 1, and the
default budget $b = 2$ allows the exposure of a clinical doublet. ORR is a step
function of the doses; the search uses `qsp.fraction_exceeding` on $-\ln$ size
(a logistic of the threshold crossing at temperature $T$), and the optimum is
re-checked with the exact rule. The fast trial path (`simulate_trial`: exact PK, RK4
PD) is differentiable in the doses.
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import qsp

from ._dosing import DOSE_CMT, SCHEDULES, arm_name, dose_times, parse_arm
from ._trial import simulate_trial
from ._vpop import PR_BELOW, load_vpop

#: Inhibitors searched over, by default and with EGFR.
BRAF_MEK = ("vemurafenib", "cobimetinib")
BRAF_MEK_EGFR = ("cetuximab", "vemurafenib", "cobimetinib")
#: Lowest dose searched, as a fraction of the clinical dose.
LOW = 0.05


def population(n: int = 64):
    """The first `n` patients of the 250-patient resample (a batched `Kirouac2017`)."""
    model, _ = load_vpop("s10-resample250", init="table")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= 250:
        raise ValueError(f"n={n!r}: expected an integer number of patients in 1..250.")
    return jax.tree.map(lambda x: x[:n] if isinstance(x, jax.Array) and x.ndim == 1 and x.shape[0] == 250 else x,
                        model)


def toxicity(doses: dict):
    """The toxicity proxy (ours): sum of dose / clinical dose over the given drugs."""
    return sum(jnp.asarray(d) / SCHEDULES[k][0] for k, d in doses.items())


def family(drugs=BRAF_MEK, days: float = 56.0) -> qsp.RegimenFamily:
    """Doses per administration (mg) of `drugs` on their clinical schedules."""
    drugs = parse_arm(arm_name(drugs))

    def build(v):
        reg = None
        for d in drugs:
            t = dose_times(d, days)
            r = qsp.Regimen.bolus(amount=v[d] * np.ones(len(t)), time=t, cmt=DOSE_CMT[d])
            reg = r if reg is None else reg + r
        return reg

    free = {d: qsp.Free(LOW * SCHEDULES[d][0], SCHEDULES[d][0], init=0.5 * SCHEDULES[d][0], log=True)
            for d in drugs}
    return qsp.RegimenFamily(build, free)


def make_evaluate(model, drugs=BRAF_MEK, *, days: float = 56.0, dt: float = 0.05):
    """`evaluate(regimen, values, temperature)`: ORR (exact or relaxed), mean log day-56
    size, and the toxicity proxy, for the doses in `values`."""
    arm = arm_name(drugs)

    def evaluate(regimen, values, temperature):
        doses = {d: values[d] for d in parse_arm(arm)}
        res = simulate_trial(model, (arm,), days=days, dt=dt, save_dt=days, doses=doses, jit=False)
        size = res.size[0]
        return {"orr": qsp.fraction_exceeding(-jnp.log(size), -np.log(PR_BELOW), temperature,
                                              failed_exceeds=False),
                "mean_log_size": jnp.mean(jnp.log(size)), "toxicity": toxicity(doses)}

    return evaluate


@dataclasses.dataclass
class MapkOptimum:
    """Result of `optimize_mapk`: `values` (mg per administration by drug), `endpoints`
    (exact at the optimum), `table` (the optimum and the clinical-dose references:
    every single agent and combination of `drugs`, exact endpoints, `feasible` when
    within the budget), `result`
    (`qsp.OptimizeResult`), `budget`."""

    values: dict
    endpoints: dict
    table: pd.DataFrame
    result: qsp.OptimizeResult
    budget: float


def optimize_mapk(n: int = 64, drugs=BRAF_MEK_EGFR, budget: float = 2.0, *, temperature: float = 0.05,
                  starts: int = 2, outer: int = 4, max_steps: int = 30, dt: float = 0.05,
                  seed: int = 0) -> MapkOptimum:
    """Best combination doses of `drugs` under `toxicity <= budget` (module docstring)."""
    drugs = parse_arm(arm_name(drugs))
    if not set(drugs) <= set(BRAF_MEK_EGFR) or not {"vemurafenib", "cobimetinib"} <= set(drugs):
        raise ValueError(f"drugs={drugs!r}: expected vemurafenib and cobimetinib, optionally cetuximab.")
    if not budget > 0:
        raise ValueError(f"budget={budget!r}: expected a positive toxicity budget.")
    model = population(n)
    ev = make_evaluate(model, drugs, dt=dt)
    res = qsp.optimize(family(drugs), ev, "orr", sense="maximize", constraints={"toxicity": (None, budget)},
                       temperature=temperature, starts=starts, seed=seed, outer=outer, max_steps=max_steps,
                       rtol=1e-6, atol=1e-6)
    rows = [{"regimen": "optimum", **{d: res.values.get(d, 0.0) for d in drugs}, **res.endpoints,
             "feasible": res.feasible}]
    # Clinical-dose references (each drug at its clinical dose scores 1), all arms in
    # one compiled call: single agents, doublets, and the full combination.
    combos = [c for k in range(1, len(drugs) + 1) for c in itertools.combinations(drugs, k)]
    arms = tuple(arm_name(c) for c in combos)
    sim = simulate_trial(model, arms, days=56.0, dt=dt, save_dt=56.0, doses={d: SCHEDULES[d][0] for d in drugs})
    for combo, arm, size in zip(combos, arms, np.asarray(sim.size)):
        rows.append({"regimen": f"clinical {arm}", **{d: SCHEDULES[d][0] if d in combo else 0.0 for d in drugs},
                     "orr": float(np.mean(size < PR_BELOW)), "mean_log_size": float(np.mean(np.log(size))),
                     "toxicity": float(len(combo)), "feasible": len(combo) <= budget})
    return MapkOptimum(values=dict(res.values), endpoints=dict(res.endpoints), table=pd.DataFrame(rows),
                       result=res, budget=float(budget))
