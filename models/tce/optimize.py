r"""Regimen optimisation, CRS use case: mosunetuzumab cycle-1 step-up doses and days that
minimise P(CRS >= 2) while keeping cycle-1 tumour response at least the label's.

**Family.** Cycle 1 gives doses $d_1, d_2, d_3$ (mg, 4-h infusions) on days $0$,
$g_2$ and $g_2 + g_3$; later cycles are the label's (60 mg C2D1, 30 mg from C3D1).
Bounds: $d_1 \in [0.1, 10]$, $d_2 \in [0.2, 20]$, $d_3 \in [5, 80]$ mg (log scale),
gaps $g_2, g_3 \in [3, 9]$ days (the label is 1/2/60 mg with gaps 7/7). The days are
searched by gradient: the save grid moves with them (points 0-48 h after each
cycle-1 dose, `trial._HOURS`), so each IL-6 peak stays resolved and differentiable.

**Endpoints** over a virtual population (`population.sample`, seed `seed`), cycle 1
(days 0-21):

- `p_crs2`: P(CRS grade >= 2), the trial's rule: patient $i$ has grade >= 2 when
  $u_i < p_2(m_i)$, with $m_i$ the largest cycle-1 IL-6, $p_2$ the logistic link of
  `crs.py` (ours) and $u_i$ the trial's uniform draw (`trial.run`, same seed).
  Relaxed: $\sigma((p_2(\tilde m_i) - u_i)/T)$ with $\tilde m$ the smooth maximum
  $T_m \log\sum e^{\ln IL6/T_m}$ over the save grid ($T_m = 0.05$).
- `p_crs2_expected`: $\frac1n\sum_i p_2(m_i)$, P(CRS >= 2) of a random patient of
  the population under the link, without the draw (relaxed: $\tilde m$ for $m$).
- `tumor_c2d1`: $\ln$ of the population's mean tumour burden at C2D1 relative to
  baseline, $\ln \frac1n\sum_i B_i(21)/B_i(0)$, continuous (no relaxation): the
  cycle-1 tumour response. Not the mean of $\ln B_i$: a patient whose tumour the
  model eradicates reaches $\ln B_i \approx -200$ in cycle 1, so a mean of logs lets
  the search buy the constraint with one patient's extra eradication while the
  median response worsens (a 32-patient run did: -10 -> -40 for one patient, the
  fresh population then infeasible); the mean burden is bounded below and weighs the
  patients whose tumours are left (ours).

**Problem**: minimise `p_crs2_expected` (the drawn `p_crs2` moves in steps of 1/n
and is flat almost everywhere even when relaxed, unless $T$ is large; its
expectation over the draws is the mean of the link's logistic, smooth in the
peaks) subject to `tumor_c2d1` $\le$ label $-\ \delta$, and,
for the Pareto front, at looser levels label $+ \ln f$ (tumour burden allowed to be
$f$ times the label's at C2D1), all solved as one batch (`qsp.pareto`). The margin
$\delta$ (default 0.05: a mean burden about 5% below the label's on the training
population) keeps the optimum feasible on new patients; it is ours.

**Solver.** The search integrates with Tsit5 (explicit): the model is mildly stiff
(Tsit5 took 8,000-33,000 steps per patient over 84 days against about 550 for
Kvaerno5, with the cycle-1 IL-6 peaks within 2e-6 relative, 8 patients, label), but
reverse-mode gradients through the explicit solver compiled in 93 s against 767 s
for Kvaerno5 on this shared 2-core machine (16 patients, 84 days). The exact
re-check (`exact_endpoints`) uses the same model and grid without relaxations;
`trial_check` re-runs the regimens through the trial's own solver (`model.solver`) over 4
cycles and reports the trial endpoints (`frac_shrink50_d84`).
"""

from __future__ import annotations

import dataclasses
import math

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import qsp

from . import crs, population
from . import regimens as R
from . import trial

FREE = {
    "d1": qsp.Free(0.1, 10.0, init=1.0, log=True),
    "d2": qsp.Free(0.2, 20.0, init=2.0, log=True),
    "d3": qsp.Free(5.0, 80.0, init=60.0, log=True),
    "gap2": qsp.Free(3.0, 9.0, init=7.0),
    "gap3": qsp.Free(3.0, 9.0, init=7.0),
}
LABEL = {"d1": 1.0, "d2": 2.0, "d3": 60.0, "gap2": 7.0, "gap3": 7.0}
PEAK_T = 0.05  # smooth-max temperature on ln IL-6
LATER = [60.0, 30.0, 30.0]  # C2D1, C3D1, C4D1 (label)


def regimen(v, cycles: int = 1):
    """The regimen of values `v` (dict of d1, d2, d3, gap2, gap3), `cycles` cycles."""
    days = [0.0, v["gap2"], v["gap2"] + v["gap3"]]
    later = LATER[: cycles - 1] if cycles > 1 else None
    return R.mosunetuzumab([v["d1"], v["d2"], v["d3"]], later if later else 60.0, cycles, c1_days=days)


def family(free=None) -> qsp.RegimenFamily:
    """The cycle-1 step-up family (module docstring); `free` overrides `FREE`."""
    return qsp.RegimenFamily(lambda v: regimen(v, 1), dict(FREE if free is None else free))


def save_times(v):
    """Cycle-1 save grid: 0-48 h after each dose, then C2D1 (day 21)."""
    d = [jnp.zeros(()), jnp.asarray(v["gap2"]), jnp.asarray(v["gap2"]) + v["gap3"]]
    return jnp.concatenate([dd + jnp.asarray(trial._HOURS) for dd in d] + [jnp.full((1,), R.CYCLE)])


def uniforms(seed: int, n: int) -> np.ndarray:
    """The trial's per-patient uniforms for the CRS grade draw (`trial.crs_uniforms`)."""
    return trial.crs_uniforms(int(n), int(seed))


def endpoints(pop, u, v, temperature=None):
    """Cycle-1 endpoints (module docstring) of values `v` over the batched model `pop`
    with uniforms `u`: exact when `temperature` is None, relaxed otherwise."""
    ts = save_times(v)
    sol = qsp.simulate(pop, regimen(v, 1), ts, solver=dfx.Tsit5(), max_steps=65536, exact_save=False)
    log_il6 = jnp.log(jnp.maximum(sol.outputs["IL6"], 1e-12))
    peak = qsp.soft_max(log_il6, None if temperature is None else PEAK_T, axis=1)
    p2 = jax.nn.sigmoid((peak - math.log(crs.THRESHOLDS[1])) / crs.SLOPE)
    ok = sol.status == 0
    return {
        "p_crs2": qsp.fraction_exceeding(jnp.where(ok, p2 - u, jnp.nan), 0.0, temperature),
        "p_crs2_expected": jnp.mean(jnp.where(ok, p2, 1.0)),
        "tumor_c2d1": jnp.log(jnp.mean(jnp.where(ok, sol.outputs["tumor_rel"][:, -1], jnp.inf))),
    }


@eqx.filter_jit
def _exact(pop, u, x):
    return endpoints(pop, u, dict(zip(FREE, x)), None)


def exact_endpoints(pop, u, values) -> dict:
    """Exact cycle-1 endpoints of `values` (dict) over `pop`; one compile per
    population size."""
    x = jnp.asarray([float(values[k]) for k in FREE])
    return {k: float(val) for k, val in _exact(pop, jnp.asarray(u), x).items()}


def trial_endpoints(pop, u, values, chunk: int = 4) -> dict:
    """The regimen of `values` over 4 cycles through the trial's solver (`model.solver`, dense
    saves after every actual dose day): P(CRS >= 2) with the trial's draws `u`, and
    the fraction with >= 50% tumour shrinkage at day 84."""
    reg = regimen(values, 4)
    dose_days = np.array([0.0, values["gap2"], values["gap2"] + values["gap3"], 21.0, 42.0, 63.0])
    ts = np.unique(np.round(np.concatenate([trial.time_grid(4)] + [d + trial._HOURS for d in dose_days]), 10))
    traj, status = trial.simulate_population(pop, reg, ts, chunk)
    ep = trial.endpoints(ts, traj, dose_days)
    ok = status == 0
    grade = crs.grades(ep["il6_c1_peak"].to_numpy(), u)
    return {"p_crs2_trial": float(np.mean(grade[ok] >= 2)),
            "frac_shrink50_d84": float(np.mean(ep["tumor_change_d84"].to_numpy()[ok] < -0.5)),
            "n_failed_trial": int((~ok).sum())}


@dataclasses.dataclass
class CRSOptimum:
    """Result of `optimize_crs`.

    `values`: the chosen regimen (d1, d2, d3 mg; gap2, gap3 days), the optimum at the
    label's response level; `spec`: it in words; `table`: one row per regimen (the
    label, then the optimum at each level) with exact endpoints on the training
    population and on the fresh one (`*_fresh`), `feasible` (training, exact) and
    `feasible_fresh` (tumour response at least the label's on the fresh population);
    `front`: the `qsp.ParetoFront`; `n_evaluations`: gradient evaluations of the
    search; `settings`."""

    values: dict
    spec: str
    table: pd.DataFrame
    front: qsp.ParetoFront
    n_evaluations: int
    settings: dict


def describe(v) -> str:
    d2, d3 = v["gap2"], v["gap2"] + v["gap3"]
    return f"{v['d1']:.3g}/{v['d2']:.3g}/{v['d3']:.3g} mg on C1D1/D{1 + d2:.3g}/D{1 + d3:.3g}"


def optimize_crs(n: int = 64, seed: int = 0, *, fresh_seed: int = 1, n_fresh: int | None = None,
                 factors=(1.0, 1.5, 2.5), margin: float = 0.05, temperature: float = 0.05,
                 starts: int = 1, outer: int = 3, max_steps: int = 15, trial_check: bool = False,
                 progress=None) -> CRSOptimum:
    """Pareto front of P(CRS >= 2) against cycle-1 tumour response over `n` patients of
    `seed` (module docstring), the chosen regimen at the label's response (`factors`
    must include 1), and the exact re-check on `n_fresh` (default `n`) patients of
    `fresh_seed`. `outer`, `max_steps`: augmented-Lagrangian iterations and BFGS steps
    per iteration (the budget of the search)."""
    for name, val in (("n", n), ("n_fresh", n if n_fresh is None else n_fresh)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
            raise ValueError(f"{name}={val!r}: expected a positive integer number of patients.")
    factors = [float(f) for f in factors]
    if not factors or 1.0 not in factors or min(factors) <= 0:
        raise ValueError(f"factors={factors!r}: expected positive factors including 1.0 (the label's response).")
    if seed == fresh_seed:
        raise ValueError(f"fresh_seed={fresh_seed} must differ from seed={seed}.")
    say = progress or (lambda msg: None)
    n_fresh = n if n_fresh is None else n_fresh
    pop, _ = population.sample(int(n), seed)
    u = uniforms(seed, n)
    fresh, _ = population.sample(int(n_fresh), fresh_seed)
    u_fresh = uniforms(fresh_seed, n_fresh)
    u_j = jnp.asarray(u)

    say("label regimen, exact endpoints")
    lab = exact_endpoints(pop, u, LABEL)
    lab_fresh = exact_endpoints(fresh, u_fresh, LABEL)
    levels = np.array([lab["tumor_c2d1"] - margin + math.log(f) for f in factors])

    def evaluate(reg, v, temperature):
        return endpoints(pop, u_j, v, temperature)

    say(f"search: {len(levels)} levels x {starts} start(s), {n} patients")
    front = qsp.pareto(family(), evaluate, "p_crs2_expected", "tumor_c2d1", levels, trade_off_sense="upper",
                       temperature=temperature, starts=starts, seed=seed, outer=outer, max_steps=max_steps,
                       rtol=1e-6, atol=1e-6, tol=1e-9)
    rows = [{"regimen": "label", "factor": np.nan, "level": np.nan, **LABEL, "spec": describe(LABEL), **lab,
             "feasible": True, **{f"{k}_fresh": val for k, val in lab_fresh.items()}, "feasible_fresh": True}]
    say("exact re-check on the fresh population")
    for f, lvl, r in zip(factors, levels, front.results):
        fr = exact_endpoints(fresh, u_fresh, r.values)
        rows.append({"regimen": f"optimum x{f:g}", "factor": f, "level": lvl, **r.values, "spec": describe(r.values),
                     **r.endpoints, "feasible": r.feasible, **{f"{k}_fresh": val for k, val in fr.items()},
                     "feasible_fresh": fr["tumor_c2d1"] <= lab_fresh["tumor_c2d1"] + math.log(f)})
    table = pd.DataFrame(rows)
    if trial_check:
        say("trial solver re-check (4 cycles)")
        extra = [trial_endpoints(fresh, u_fresh, {k: row[k] for k in FREE}) for _, row in table.iterrows()]
        for k in extra[0]:
            table[f"{k}_fresh"] = [e[k] for e in extra]
    chosen = front.results[factors.index(1.0)]
    table["chosen"] = [False] + [f == 1.0 for f in factors]
    return CRSOptimum(values=dict(chosen.values), spec=describe(chosen.values), table=table, front=front,
                      n_evaluations=front.n_evaluations,
                      settings=dict(n=n, seed=seed, fresh_seed=fresh_seed, n_fresh=n_fresh, margin=margin,
                                    temperature=temperature, starts=starts, outer=outer, max_steps=max_steps))
