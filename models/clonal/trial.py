r"""Virtual patients, the paper's schedules, and trial outcomes for the clonal model.

**Virtual patients** (`sample_patients`), as coded in the authors' trial scripts
(`Code/Cannon/Code/run_group*.R`; shared/references/clonal-resistance.md section 5):

| quantity | distribution |
|---|---|
| baseline sum of longest diameters (cm) | N(7.5, 6.227); values < 1 replaced by U(4.5, 7.5) |
| total cells | (4/3) pi (bsld/2)^3 x 1e7 (a sphere of that diameter) |
| pre-existing T790M fraction | N(0.0495, 0.011)/100 x Bernoulli(0.8) |
| pre-existing NRAS fraction | N(0.00495, 0.011)/100 x Bernoulli(0.05), negatives 0 |
| pre-existing C797S fraction | 0 |
| mu_T790M, mu_NRAS, mu_C797S | 10^N(-7, 0.608), (10/6^(1/7))^N(-11, 0.388), 10^N(-9, 0.608) |
| PK | typical (`pk.typical_pk`) x exp(eta), eta ~ N(0, `pk.omega()`) |

Initial counts: n_k = round(total p_k), n_0 = total - sum n_k. (Draws use JAX keys;
the authors' R seed 548331 is not reproduced.) `scheme="figure"` is the alternative
found in one of the authors' figure scripts: bsld ~ Exp(rate ln2/6) + 1, total =
bsld x 1e8, p_T790M = 10^N(-4, 0.08) x Bernoulli(0.8), p_NRAS = 10^N(-6, 0.1) x
Bernoulli(0.05) (which scheme produced the published 8-week results is not recorded).

**Schedules** (`SCHEDULES`): the seven of the main comparison and the 4 x 3 grid of the
paper's Fig. 3C (daco 15 QD / 15 BID / 30 QD / 15 TID x osi 40 QD / 40 BID / 80 QD),
named like `"daco30QD+osi40BID"`; the reference schedule of the paper's analysis code
is `REFERENCE = "daco30QD+osi40BID"`.

**Outcomes:** the relative improvement of Chakrabarti & Michor (Cancer Res 2017), per
patient, $RI = (N_{ref}(T) - N_{new}(T)) / N_{ref}(T)$ with $N$ the total count; and,
ours (the paper has none), time to progression by a RECIST-like rule on the model's own
diameter scale, $SLD(t) = bsld\,(N(t)/N(0))^{1/3}$ (the sphere mapping used to seed
the tumour), progression at +20% and +5 mm over the nadir (`qsp.endpoints`), assessed
every `assess_days`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

from qsp import endpoints

from . import pk as cpk
from .model import counts_trapezoid
from .stochastic import tau_leap
from .surfaces import AbstractSurface, published_surface

_DAILY = {"QD": 24.0, "BID": 12.0, "TID": 8.0}


def _parse(name: str):
    try:
        daco, osi = name.split("+")
        assert daco.startswith("daco") and osi.startswith("osi")
        out = []
        for part, drug in ((daco, "daco"), (osi, "osi")):
            body = part[len(drug):]
            freq = next(f for f in _DAILY if body.endswith(f))
            out.append((float(body[: -len(freq)]), _DAILY[freq]))
        return out
    except (ValueError, AssertionError, StopIteration):
        raise ValueError(
            f"schedule {name!r} is not understood; expected e.g. 'daco30QD+osi40BID' "
            "(mg per dose, QD/BID/TID), or 'daco0QD+osi80QD' for a single drug."
        ) from None


#: Main comparison (paper: "standard" group 1 and "proposed" group 2).
MAIN = ("daco15QD+osi40QD", "daco30QD+osi40QD", "daco30QD+osi80QD", "daco45QD+osi80QD",
        "daco15QD+osi40BID", "daco30QD+osi40BID", "daco30QD+osi80BID")
#: The 4 x 3 grid of Fig. 3C.
GRID = tuple(f"{d}+{o}" for d in ("daco15QD", "daco15BID", "daco30QD", "daco15TID")
             for o in ("osi40QD", "osi40BID", "osi80QD"))
SCHEDULES = tuple(dict.fromkeys(MAIN + GRID))
REFERENCE = "daco30QD+osi40BID"


def schedule_doses(name: str, ts):
    """Doses (mg) of schedule `name` on the grid `ts` (h): `(osi_mg, daco_mg)`, each
    dose at the grid time of its administration (every dose time must be on the grid)."""
    (dmg, dii), (omg, oii) = _parse(name)
    ts = np.asarray(ts, dtype=float)
    t_end = ts[-1]
    def on(ii):
        times = np.arange(0.0, t_end, ii)
        hit = np.isclose(ts[:, None], times[None], rtol=0, atol=1e-9)
        if not hit.any(axis=0).all():
            raise ValueError(f"schedule {name!r}: dose times every {ii:g} h are not all on the time grid.")
        return hit.any(axis=1).astype(float)
    return omg * on(oii), dmg * on(dii)


@dataclasses.dataclass
class Patients:
    """A virtual population: PK parameters `pk` (dict of `(n,)`), `bsld` (cm),
    `n_init (n, 4)`, `mu (n, 3)`."""

    pk: dict
    bsld: np.ndarray
    n_init: np.ndarray
    mu: np.ndarray

    @property
    def n(self) -> int:
        return len(self.bsld)

    def pk_model(self, catenary: bool = True, fu_osi: float = 1.0, fu_daco: float = 1.0):
        return cpk.OsiDacoPK(**{k: jnp.asarray(v) for k, v in self.pk.items()}, catenary=catenary,
                             fu_osi=fu_osi, fu_daco=fu_daco)


def sample_patients(key, n: int, *, cross_drug: bool = True, pre_resistance: bool = True,
                    covariates: dict | None = None, scheme: str = "trial") -> Patients:
    """`n` virtual patients as in the authors' trial scripts (module docstring).
    `pre_resistance=False` is their "noPreRes" variant; `cross_drug=False` drops the
    cross-drug PK correlations; `covariates` go to `pk.typical_pk` (arrays `(n,)`);
    `scheme="figure"` draws tumour size and pre-existing fractions the alternative way."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n={n!r} must be a positive integer number of patients.")
    if scheme not in ("trial", "figure"):
        raise ValueError(f"scheme={scheme!r} is not known; expected 'trial' or 'figure'.")
    k = jax.random.split(key, 12)
    if scheme == "trial":
        q75 = float(norm.ppf(0.75))
        bsld = 7.5 + (11.7 - 7.5) / q75 * jax.random.normal(k[0], (n,))
        bsld = jnp.where(bsld < 1.0, jax.random.uniform(k[1], (n,), minval=4.5, maxval=7.5), bsld)
        total = 4.0 / 3.0 * jnp.pi * (bsld / 2.0) ** 3 * 1e7
        p_t790m = (0.0495 + 0.011 * jax.random.normal(k[2], (n,))) / 100 * jax.random.bernoulli(k[3], 0.8, (n,))
        p_nras = (0.00495 + 0.011 * jax.random.normal(k[4], (n,))) / 100 * jax.random.bernoulli(k[5], 0.05, (n,))
    else:
        bsld = jax.random.exponential(k[0], (n,)) * 6.0 / np.log(2.0) + 1.0
        total = bsld * 1e8
        p_t790m = 10.0 ** (-4.0 + 0.08 * jax.random.normal(k[2], (n,))) * jax.random.bernoulli(k[3], 0.8, (n,))
        p_nras = 10.0 ** (-6.0 + 0.1 * jax.random.normal(k[4], (n,))) * jax.random.bernoulli(k[5], 0.05, (n,))
    p = jnp.maximum(jnp.stack([p_t790m, p_nras, jnp.zeros(n)], axis=1), 0.0)
    if not pre_resistance:
        p = jnp.zeros_like(p)
    nk = jnp.round(total[:, None] * p)
    n_init = jnp.concatenate([(total - nk.sum(axis=1))[:, None], nk], axis=1)
    z95, z995 = float(norm.ppf(0.95)), float(norm.ppf(0.995))
    mu = jnp.stack([
        10.0 ** (-7.0 + jax.random.normal(k[6], (n,)) / z95),
        (10.0 / 6.0 ** (1 / 7)) ** (-11.0 + jax.random.normal(k[7], (n,)) / z995),
        10.0 ** (-9.0 + jax.random.normal(k[8], (n,)) / z95),
    ], axis=1)
    tv = cpk.typical_pk(**(covariates or {}))
    L = np.linalg.cholesky(cpk.omega(cross_drug))
    eta = jax.random.normal(k[9], (n, len(cpk.PK_NAMES))) @ jnp.asarray(L).T
    pkd = {name: np.asarray(jnp.broadcast_to(tv[name], (n,)) * jnp.exp(eta[:, j]))
           for j, name in enumerate(cpk.PK_NAMES)}
    return Patients(pk=pkd, bsld=np.asarray(bsld), n_init=np.asarray(n_init), mu=np.asarray(mu))


def simulate_schedules(patients: Patients, schedules=MAIN, weeks: float = 8.0, *,
                       surface: AbstractSurface | None = None, catenary: bool = True,
                       fu_osi: float = 1.0, fu_daco: float = 1.0, dt: float = 1.0, save_every: float = 24.0,
                       key=None):
    """Clone-count trajectories of every patient under every schedule: exact PK on a grid
    of `dt` hours (matrix exponentials) and the authors' trapezoid closed form on it
    (the paper's own method, hourly grid), or, given a `jax.random` key, one stochastic
    realisation per patient by tau-leaping on the same grid (`stochastic.tau_leap`; the
    same key for every schedule: common random numbers). Returns `(ts_saved, counts)`
    with counts of shape `(n_schedules, n_patients, n_saved, 4)`, saved every
    `save_every` hours."""
    surface = published_surface() if surface is None else surface
    n_steps = int(round(weeks * 168.0 / dt))
    ts = np.linspace(0.0, n_steps * dt, n_steps + 1)
    stride = int(round(save_every / dt))
    model = patients.pk_model(catenary, fu_osi, fu_daco)
    axes, _ = cpk.population_axes(model)

    keys = None if key is None else jax.random.split(key, patients.n)

    @jax.jit
    def run(osi_mg, daco_mg):
        def one(m, n0, mu, k):
            A = cpk.pk_on_grid(m, ts, osi_mg, daco_mg)
            daco, osi = m.effect_concentrations(A.T)
            if k is None:
                return counts_trapezoid(ts, daco, osi, n0, mu, surface, path=True)[::stride]
            return tau_leap(k, ts, daco, osi, n0, mu, surface, path=True)[::stride]
        return jax.vmap(one, in_axes=(axes, 0, 0, None if keys is None else 0))(
            model, jnp.asarray(patients.n_init), jnp.asarray(patients.mu), keys)

    out = [run(*map(jnp.asarray, schedule_doses(s, ts))) for s in schedules]
    return ts[::stride], np.stack([np.asarray(o) for o in out])


def relative_improvement(total_ref, total_new):
    """Per-patient relative improvement (N_ref - N_new) / N_ref (Chakrabarti & Michor 2017)."""
    total_ref = np.asarray(total_ref, dtype=float)
    return (total_ref - np.asarray(total_new, dtype=float)) / total_ref


def time_to_progression(ts_h, total, bsld, *, assess_days: float = 7.0):
    """Ours: (time in days, event) of RECIST-like progression on SLD = bsld (N/N0)^(1/3),
    assessed every `assess_days` (module docstring). `total` is `(..., n_ts)` on `ts_h`,
    `bsld` in cm (converted to mm for the RECIST +5 mm rule)."""
    ts_d = np.asarray(ts_h, dtype=float) / 24.0
    every = np.isclose(np.mod(ts_d + 1e-9, assess_days), 0.0, atol=1e-6)
    total = np.asarray(total, dtype=float)[..., every]
    sld = 10.0 * np.asarray(bsld, dtype=float)[..., None] * np.cbrt(total / total[..., :1])  # mm
    return endpoints.time_to_progression(ts_d[every], sld)


def run(n: int = 1000, weeks: float = 8.0, schedules=MAIN, reference: str = REFERENCE, seed: int = 0, *,
        surface: AbstractSurface | None = None, catenary: bool = True, assess_days: float = 7.0):
    """A virtual trial: every schedule on one shared population (`sample_patients`).

    **Returns:** `(summary, patients)` DataFrames. `summary` has one row per schedule:
    median total cells at the end, the median relative improvement against `reference`
    and the share of patients improved (RI > 0), median resistant fractions per clone
    at the end, and the Kaplan-Meier median time to progression (ours, days; NaN when
    fewer than half progress). `patients` has one row per (schedule, patient)."""
    import pandas as pd

    schedules = list(dict.fromkeys(schedules))
    for s in schedules + [reference]:
        _parse(s)
    if reference not in schedules:
        schedules.append(reference)
    if weeks <= 0:
        raise ValueError(f"weeks={weeks!r} must be positive.")
    pts = sample_patients(jax.random.key(seed), n)
    ts, counts = simulate_schedules(pts, schedules, weeks, surface=surface, catenary=catenary)
    total = counts.sum(axis=-1)
    end = total[:, :, -1]
    ref = end[schedules.index(reference)]
    rows, per = [], []
    for j, s in enumerate(schedules):
        ri = relative_improvement(ref, end[j])
        frac = counts[j, :, -1, 1:] / end[j][:, None]
        ttp, event = time_to_progression(ts, total[j], pts.bsld, assess_days=assess_days)
        km = endpoints.kaplan_meier(ttp, event)
        rows.append({
            "schedule": s, "n": pts.n, "median_total_end": float(np.median(end[j])),
            f"median_RI_vs_{reference}": float(np.median(ri)), "share_improved": float(np.mean(ri > 0)),
            "median_frac_T790M": float(np.median(frac[:, 0])), "median_frac_NRAS": float(np.median(frac[:, 1])),
            "median_frac_C797S": float(np.median(frac[:, 2])), "share_progressed": float(np.mean(event)),
            "median_ttp_days": km.median,
        })
        per.append(pd.DataFrame({"schedule": s, "patient": np.arange(pts.n), "bsld_cm": pts.bsld,
                                 "total_start": total[j, :, 0], "total_end": end[j], "RI": ri,
                                 "ttp_days": ttp, "progressed": event}))
    return pd.DataFrame(rows), pd.concat(per, ignore_index=True)


def plot_waterfall(patients, path: str, reference: str = REFERENCE):
    """Waterfall plots of the per-patient relative improvement against `reference`,
    one panel per other schedule, written to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [s for s in dict.fromkeys(patients["schedule"]) if s != reference]
    fig, axes = plt.subplots(len(others), 1, figsize=(7, 2.2 * max(len(others), 1)), squeeze=False)
    for ax, s in zip(axes[:, 0], others):
        # RI > 0: schedule s ends with fewer cells than the reference.
        imp = np.sort(patients.loc[patients["schedule"] == s, "RI"].to_numpy())[::-1]
        ax.bar(np.arange(len(imp)), 100 * imp, width=1.0, color=np.where(imp > 0, "tab:blue", "tab:red"))
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylabel("RI (%)")
        ax.set_title(f"{s} vs {reference}", fontsize=9)
    axes[-1, 0].set_xlabel("patients (sorted)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
