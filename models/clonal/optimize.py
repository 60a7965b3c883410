r"""Regimen optimisation, clonal-resistance use case: osimertinib + dacomitinib doses
(QD or BID) that maximise time to progression under exposure limits.

**Problem (ours).** Over a virtual population (`trial.sample_patients`), choose the
dose per administration of osimertinib $d_o$ and dacomitinib $d_d$ for each of the four
frequency pairs (QD/BID x QD/BID), maximising the mean time to progression

$$\max_{d_o, d_d}\ \overline{TTP}(d_o, d_d)\quad\text{s.t.}\quad
\frac{C_{max,ss}(x)}{C_{max,ss}^{label}(x)} \le 1,\ \frac{AUC_{24,ss}(x)}{AUC_{24,ss}^{label}(x)} \le 1,
\quad x \in \{\text{osimertinib}, \text{dacomitinib}\},$$

where the exposure limits are those of the typical patient (`pk.typical_pk`) on the
labelled doses, osimertinib 80 mg QD (Tagrisso label) and dacomitinib 45 mg QD
(Vizimpro label), taken over the last 24 h of the horizon (steady state: the longest
half-life, dacomitinib's, is about 70 h). The best frequency pair is then the best
of the four optima. The exposure limits are ours (no combination limit is labelled).

**TTP** is that of `trial.time_to_progression` (ours; RECIST-like rule on the sphere
diameter scale, +20% and +5 mm over the nadir), assessed daily here (weekly assessments
put every patient at the same week). It is a first-passage time, zero-gradient almost
everywhere. With $p_k$ the PD indicator at assessment $k$ and
$S_k = \prod_{j \le k}(1 - p_j)$, the exact TTP is

$$TTP = \sum_{k=1}^{K} t_k\,S_{k-1}\,p_k + t_K\,S_K$$

(the first PD time, or $t_K$ if censored). The relaxation replaces each indicator by
a product of logistics, $p_k = \sigma(\ln\frac{SLD_k}{1.2\,\text{nadir}_k}/T)\,
\sigma((SLD_k - \text{nadir}_k - 5\text{ mm})/(T \cdot 10\text{ mm}))$, the same formula
then being the expected first-passage time of independent soft events.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import qsp

from . import pk as cpk
from . import trial
from .model import counts_trapezoid

#: Labelled doses (mg, interval h): Tagrisso 80 mg QD; Vizimpro 45 mg QD.
LABEL = {"osi": (80.0, 24.0), "daco": (45.0, 24.0)}
FREQUENCIES = {"QD": 24.0, "BID": 12.0}
#: Search ranges of the dose per administration (mg).
OSI_RANGE = (5.0, 160.0)
DACO_RANGE = (2.0, 60.0)


def time_grid(weeks: float) -> np.ndarray:
    """Hourly grid (h) over the horizon: the grid of `trial.simulate_schedules`."""
    n = int(round(weeks * 168.0))
    return np.arange(n + 1, dtype=float)


def dose_indicator(ts, ii: float) -> np.ndarray:
    """1 at the grid times of doses every `ii` h from 0 (before the end), else 0."""
    ts = np.asarray(ts, dtype=float)
    return ((np.mod(ts, ii) < 1e-9) & (ts < ts[-1])).astype(float)


def exposures(model, ts, osi_mg, daco_mg, ii_osi: float, ii_daco: float) -> dict:
    """Steady-state exposure of one (unbatched) PK model: Cmax (nM) and AUC (nM h) of
    osimertinib and dacomitinib (central) over the last 24 h of `ts`."""
    a = cpk.pk_on_grid(model, ts, osi_mg * dose_indicator(ts, ii_osi), daco_mg * dose_indicator(ts, ii_daco))
    c = model.pk_outputs(a.T)
    last = np.asarray(ts) >= ts[-1] - 24.0
    out = {}
    for name, key in (("osi", "C_osi"), ("daco", "C_daco")):
        y = c[key][last]
        out[f"cmax_{name}"] = jnp.max(y)
        out[f"auc_{name}"] = jnp.trapezoid(y, jnp.asarray(ts)[last])
    return out


def time_to_progression(ts_d, sld, temperature=None):
    """Exact (temperature None) or relaxed TTP (days) per patient from the SLD (mm) at
    assessments `ts_d` (days; column 0 = baseline); see the module docstring."""
    sld = jnp.asarray(sld)
    prior = sld[..., :-1]
    nadir = jax.lax.cummin(prior, axis=prior.ndim - 1)
    cur = sld[..., 1:]
    rel = jnp.log(cur) - jnp.log(1.2 * nadir)
    absd = cur - nadir - 5.0
    if temperature is None:
        p = ((rel >= 0) & (absd >= 0)).astype(float)
    else:
        p = jax.nn.sigmoid(rel / temperature) * jax.nn.sigmoid(absd / (10.0 * temperature))
    surv = jnp.cumprod(1.0 - p, axis=-1)
    before = jnp.concatenate([jnp.ones_like(surv[..., :1]), surv[..., :-1]], axis=-1)
    t = jnp.asarray(ts_d[1:], dtype=float)
    return jnp.sum(t * before * p, axis=-1) + t[-1] * surv[..., -1]


def _family(ii_osi: float, ii_daco: float, weeks: float, init=(40.0, 15.0)) -> qsp.RegimenFamily:
    n_o, n_d = int(np.ceil(weeks * 168.0 / ii_osi)), int(np.ceil(weeks * 168.0 / ii_daco))

    def build(v):
        return (qsp.Regimen.bolus(v["osi_mg"], 0.0, "OSI_GUT", ii=ii_osi, addl=n_o - 1)
                + qsp.Regimen.bolus(v["daco_mg"], 0.0, "DACO_GUT", ii=ii_daco, addl=n_d - 1))

    return qsp.RegimenFamily(build, {"osi_mg": qsp.Free(*OSI_RANGE, init=init[0], log=True),
                                     "daco_mg": qsp.Free(*DACO_RANGE, init=init[1], log=True)})


def make_evaluate(patients: trial.Patients, ii_osi: float, ii_daco: float, weeks: float, limits: dict):
    """`evaluate(regimen, values, temperature)` for `qsp.optimize`: mean TTP (days; and
    the fraction progressed) over `patients`, and the typical patient's exposure ratios
    against `limits` (from `label_limits`)."""
    ts = time_grid(weeks)
    ind_o, ind_d = jnp.asarray(dose_indicator(ts, ii_osi)), jnp.asarray(dose_indicator(ts, ii_daco))
    model = patients.pk_model()
    axes, _ = cpk.population_axes(model)
    typical = cpk.OsiDacoPK(**{k: jnp.asarray(v) for k, v in cpk.typical_pk().items()})
    every = np.arange(0, len(ts), 24)
    ts_d = ts[every] / 24.0
    n_init, mu, bsld = (jnp.asarray(x) for x in (patients.n_init, patients.mu, patients.bsld))

    def evaluate(regimen, values, temperature):
        osi, daco = values["osi_mg"], values["daco_mg"]

        def one(m, n0, mu_):
            a = cpk.pk_on_grid(m, ts, osi * ind_o, daco * ind_d)
            c_daco, c_osi = m.effect_concentrations(a.T)
            return counts_trapezoid(ts, c_daco, c_osi, n0, mu_, path=True)[every].sum(axis=-1)

        total = jax.vmap(one, in_axes=(axes, 0, 0))(model, n_init, mu)
        sld = 10.0 * bsld[:, None] * jnp.cbrt(total / total[:, :1])
        ttp = time_to_progression(ts_d, sld, temperature)
        ex = exposures(typical, ts, osi, daco, ii_osi, ii_daco)
        out = {"mean_ttp": jnp.mean(ttp), "daily_osi_mg": osi * 24.0 / ii_osi,
               "daily_daco_mg": daco * 24.0 / ii_daco}
        out.update({f"{k}_ratio": v / limits[k] for k, v in ex.items()})
        return out

    return evaluate


def label_limits(weeks: float = 8.0) -> dict:
    """Exposure limits: the typical patient's steady-state Cmax and AUC_24 on the
    labelled doses (osimertinib 80 mg QD, dacomitinib 45 mg QD)."""
    typical = cpk.OsiDacoPK(**{k: jnp.asarray(v) for k, v in cpk.typical_pk().items()})
    ts = time_grid(weeks)
    ex = exposures(typical, ts, LABEL["osi"][0], LABEL["daco"][0], LABEL["osi"][1], LABEL["daco"][1])
    return {k: float(v) for k, v in ex.items()}


@dataclasses.dataclass
class ClonalOptimum:
    """Result of `optimize_clonal`: `schedule` (e.g. "daco13.2BID+osi61.1BID", mg per
    dose), `values` (osi_mg, daco_mg per dose), `frequency` (osi, daco), `endpoints`
    (exact, at the chosen optimum), `table` (one row per frequency pair and for the
    label regimen: doses, exact mean TTP, exposure ratios, feasibility, `scaled_by`:
    the factors that brought a slightly violating optimum onto the limits, see
    `_into_limits`),
    `results` (`qsp.OptimizeResult` per pair), `limits`, `n_evaluations`."""

    schedule: str
    values: dict
    frequency: tuple
    endpoints: dict
    table: pd.DataFrame
    results: dict
    limits: dict
    n_evaluations: int


def _into_limits(evaluate, values, endpoints):
    """The augmented Lagrangian ends within a small violation of the limits; the PK is
    linear, so each exposure ratio is proportional to that drug's dose, and dividing a
    drug's dose by its largest ratio (when above 1) lands exactly on the limit. Returns
    the values, their exact endpoints and the factor applied to (osi, daco)."""
    f_o = max(1.0, endpoints["cmax_osi_ratio"], endpoints["auc_osi_ratio"])
    f_d = max(1.0, endpoints["cmax_daco_ratio"], endpoints["auc_daco_ratio"])
    if f_o == 1.0 and f_d == 1.0:
        return dict(values), dict(endpoints), "1/1"
    v = {"osi_mg": values["osi_mg"] / f_o, "daco_mg": values["daco_mg"] / f_d}
    ep = evaluate(None, {k: jnp.asarray(x) for k, x in v.items()}, None)
    return v, {k: float(x) for k, x in ep.items()}, f"{1 / f_o:.6g}/{1 / f_d:.6g}"


def _name(osi, daco, fo, fd):
    return f"daco{daco:.3g}{fd}+osi{osi:.3g}{fo}"


def optimize_clonal(n: int = 16, seed: int = 0, weeks: float = 8.0, *, temperature: float = 0.05,
                    starts: int = 2, outer: int = 4, max_steps: int = 30,
                    frequencies=(("QD", "QD"), ("QD", "BID"), ("BID", "QD"), ("BID", "BID"))) -> ClonalOptimum:
    """Best (osimertinib, dacomitinib) doses per frequency pair (module docstring) over
    `n` virtual patients of `seed`; `frequencies` are (osimertinib, dacomitinib) pairs."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n={n!r}: expected a positive integer number of patients.")
    for pair in frequencies:
        if len(pair) != 2 or any(f not in FREQUENCIES for f in pair):
            raise ValueError(f"frequencies entry {pair!r}: expected (osi, daco) from {tuple(FREQUENCIES)}.")
    pts = trial.sample_patients(jax.random.key(int(seed)), int(n))
    limits = label_limits(weeks)
    cons = {f"{k}_ratio": (None, 1.0) for k in limits}
    rows, results, n_eval = [], {}, 0
    label_eval = make_evaluate(pts, LABEL["osi"][1], LABEL["daco"][1], weeks, limits)
    lab = {k: float(v) for k, v in label_eval(None, {"osi_mg": jnp.asarray(LABEL["osi"][0]),
                                                    "daco_mg": jnp.asarray(LABEL["daco"][0])}, None).items()}
    rows.append({"schedule": _name(LABEL["osi"][0], LABEL["daco"][0], "QD", "QD"), "role": "label",
                 "osi_mg": LABEL["osi"][0], "daco_mg": LABEL["daco"][0], "osi_freq": "QD", "daco_freq": "QD",
                 **lab, "feasible": True})
    for fo, fd in frequencies:
        ev = make_evaluate(pts, FREQUENCIES[fo], FREQUENCIES[fd], weeks, limits)
        fam = _family(FREQUENCIES[fo], FREQUENCIES[fd], weeks)
        res = qsp.optimize(fam, ev, "mean_ttp", sense="maximize", constraints=cons, temperature=temperature,
                           starts=starts, seed=seed, outer=outer, max_steps=max_steps, tol=1e-6,
                           rtol=1e-6, atol=1e-6)
        results[(fo, fd)] = res
        n_eval += res.n_evaluations
        vals, ep, scale = _into_limits(ev, res.values, res.endpoints)
        rows.append({"schedule": _name(vals["osi_mg"], vals["daco_mg"], fo, fd), "role": "optimum",
                     "osi_mg": vals["osi_mg"], "daco_mg": vals["daco_mg"], "osi_freq": fo,
                     "daco_freq": fd, **ep, "scaled_by": scale,
                     "feasible": all(ep[f"{k}_ratio"] <= 1.0 + 1e-9 for k in limits)})
    table = pd.DataFrame(rows)
    table.loc[table.role == "label", "scaled_by"] = "1/1"
    opt = table[(table.role == "optimum") & table.feasible]
    if len(opt) == 0:
        raise RuntimeError("no frequency pair reached a feasible optimum; see the table of ClonalOptimum.")
    best = opt.sort_values("mean_ttp", ascending=False, kind="stable").iloc[0]
    table["chosen"] = table.schedule == best.schedule
    key = (best.osi_freq, best.daco_freq)
    return ClonalOptimum(schedule=best.schedule, values={"osi_mg": best.osi_mg, "daco_mg": best.daco_mg},
                         frequency=key, endpoints={k: best[k] for k in results[key].endpoints}, table=table,
                         results=results,
                         limits=limits, n_evaluations=n_eval)
