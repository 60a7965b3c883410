# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. Calibration tour: one model, three data types, and how sure we are
#
# Translational models are calibrated on data from several levels at once: cells in a
# dish, mouse xenografts, patients. `qsp.fit` takes PEtab-style tables (a measurement
# table, a condition table whose cells override parameters per experiment, dose
# regimens per condition) and fits everything jointly with gradients through the ODE
# solves. Then the questions a reviewer asks:
#
# 1. does the model describe each data type? (observed vs predicted, weighted residuals);
# 2. is each parameter identifiable? (profile likelihood vs the Wald interval);
# 3. what is the posterior? (Hamiltonian Monte Carlo from `qsp.sample_posterior`, ArviZ
#    trace and pair plots, R-hat and effective sample size).
#
# Model: the Claret et al. 2009 tumour growth inhibition model (J Clin Oncol 27:4103),
# $\dot y = k_g y - k_d e^{-\lambda t} C(t)\, y$: exponential growth, kill proportional to
# the drug concentration, and a kill that fades at rate $\lambda$ as resistance emerges.
# With one-compartment PK and bolus doses it has a closed form, so it is written here
# as a `qsp.AlgebraicModel` (a few lines, below): the fit, its Hessian, the profiles and
# the posterior then compile in seconds. The same calls work unchanged for ODE models
# (`tests/test_fit_joint.py` fits the Simeoni ODE model to the same three data types).
# Shared across the data types: the potency `kd` and the resistance rate `lam`. Each data
# type has its own growth rate (named in the condition table) and its own error SD. The
# data are simulated from known parameters (ours, seed fixed), so the estimates can be
# checked against the truth.
#
# Size knob: `QSP_NOTEBOOK_SMALL=1` (fewer experiments, coarser profiles, short chains);
# figures go to `QSP_NOTEBOOK_FIGURES`.

# %%
import os
import time

import arviz as az
import jax.numpy as jnp
import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

import qsp
from qsp import plot

SMALL = os.environ.get("QSP_NOTEBOOK_SMALL", "0") == "1"
FIGURES = os.environ.get("QSP_NOTEBOOK_FIGURES", os.path.join("notebooks", "figures"))
os.makedirs(FIGURES, exist_ok=True)
t0 = time.perf_counter()
NMAX = 60  # most doses per experiment (a static shape)
POS = dict(bounds=(0.0, float("inf")))


def save(fig, name):
    path = os.path.join(FIGURES, name)
    fig.savefig(path, dpi=110)
    print("wrote", path)


class ClaretTGI(qsp.AlgebraicModel):
    r"""Claret 2009 tumour growth inhibition with one-compartment bolus PK, closed form:
    $y(t) = y_0 \exp\big(k_g t - k_d \int_0^t e^{-\lambda s} C(s)\,ds\big)$ with
    $C(s) = C_{ext} + \sum_k (D/V) e^{-k_e (s - t_k)}$ over doses $t_k = k\tau$,
    $k < n$, so the integral is
    $C_{ext}(1 - e^{-\lambda t})/\lambda + \sum_{t_k < t} (D/V) e^{-\lambda t_k}
    (1 - e^{-(k_e + \lambda)(t - t_k)})/(k_e + \lambda)$."""

    kg: float = qsp.param(0.02, units="1/day", description="net growth rate", **POS)
    kd: float = qsp.param(0.02, units="L/(mg day)", description="kill rate per concentration", **POS)
    lam: float = qsp.param(0.01, units="1/day", description="resistance: decay rate of the kill", **POS)
    y0: float = qsp.param(1.0, units="(size)", description="baseline size", **POS)
    dose: float = qsp.param(0.0, units="mg", description="dose per administration", **POS)
    tau: float = qsp.param(7.0, units="day", description="dosing interval", **POS)
    n_doses: float = qsp.param(0.0, units="1", description="number of doses", **POS)
    V: float = qsp.param(50.0, units="L", description="volume of distribution", **POS)
    ke: float = qsp.param(0.2, units="1/day", description="elimination rate constant", **POS)
    C_ext: float = qsp.param(0.0, units="mg/L", description="constant concentration (in vitro well)", **POS)
    time_unit = "day"

    def outputs(self, t):
        t = jnp.asarray(t, float)
        k = jnp.arange(NMAX)
        tk = k * self.tau
        given = (k < self.n_doses)[None, :] & (t[:, None] > tk[None, :])
        r = self.ke + self.lam
        dt = jnp.where(given, t[:, None] - tk[None, :], 0.0)
        doses = jnp.sum(jnp.where(given, self.dose / self.V * jnp.exp(-self.lam * tk) * -jnp.expm1(-r * dt) / r, 0.0), 1)
        ext = self.C_ext * -jnp.expm1(-self.lam * t) / self.lam
        size = self.y0 * jnp.exp(self.kg * t - self.kd * (ext + doses))
        return {"size": size, "diameter": (6.0 * size / jnp.pi) ** (1.0 / 3.0)}


# %% [markdown]
# ## The data: in vitro wells, xenograft arms, patients
#
# - **in vitro**: relative cell counts over 4 days at constant drug concentrations
#   (`C_ext` per well, growth `kg_vitro`);
# - **xenograft**: tumour volume (mm^3) of vehicle and dosed arms, 28 daily doses, mouse
#   PK (fast elimination);
# - **clinical**: tumour diameters (mm) of patients on weekly doses for 18 weeks, human PK,
#   growth `kg_clin`.
#
# Log-normal errors of 10%, 15% and 8%.

# %%
TRUE = dict(kd=0.05, lam=0.015, kg_vitro=0.6, kg_xeno=0.12, kg_clin=0.01)
VITRO = (0.0, 3.0, 10.0) if SMALL else (0.0, 1.0, 3.0, 10.0, 30.0)  # well concentrations (mg/L)
XENO = (0.0, 0.4) if SMALL else (0.0, 0.1, 0.4)  # daily dose (mg)
PATIENTS = [(40.0, 30000.0)] if SMALL else [(20.0, 30000.0), (40.0, 50000.0), (80.0, 20000.0)]  # mg weekly, W0 mm^3

rng = np.random.default_rng(0)
truth = ClaretTGI(kd=TRUE["kd"], lam=TRUE["lam"])
conditions, rows = [], []


def experiment(cid, overrides, kg_name, output, times, noise, sd):
    """One condition: its row in the condition table (numbers fix a parameter in this
    condition, a name makes an estimated experiment-specific parameter) and noisy data."""
    conditions.append(dict(conditionId=cid, kg=kg_name, **overrides))
    f = np.asarray(truth.replace(kg=TRUE[kg_name], **overrides).outputs(times)[output])
    y = f * np.exp(rng.normal(0.0, sd, len(times)))
    rows.extend(dict(observableId=output, simulationConditionId=cid, time=t, measurement=v, noiseParameters=noise)
                for t, v in zip(times, y))


for c in VITRO:
    experiment(f"vitro_{c:g}", dict(C_ext=c, y0=1.0), "kg_vitro", "size", np.arange(0.0, 5.0), "sigma_vitro", 0.10)
for dose in XENO:
    experiment(f"xeno_{dose:g}", dict(dose=dose, tau=1.0, n_doses=28.0, V=0.02, ke=2.0, y0=150.0), "kg_xeno", "size",
               np.arange(0.0, 29.0, 4.0), "sigma_xeno", 0.15)
for i, (dose, w0) in enumerate(PATIENTS):
    experiment(f"patient_{i}", dict(dose=dose, tau=7.0, n_doses=18.0, V=50.0, ke=0.2, y0=w0), "kg_clin", "diameter",
               np.arange(0.0, 127.0, 21.0), "sigma_clin", 0.08)
measurements, conditions = pd.DataFrame(rows), pd.DataFrame(conditions)  # NaN: the model's value
print(conditions.to_string(index=False))
print(f"{len(measurements)} measurements in {len(conditions)} conditions")

# %% [markdown]
# ## The joint fit
#
# Free: the shared `kd` and `lam`; the experiment-specific growth rates named in the
# condition table (`kg_vitro`, `kg_xeno`, `kg_clin`) and the three error SDs are added
# automatically. Starts run vmapped in one compiled call; standard errors come from the
# Hessian.

# %%
start = ClaretTGI(kd=0.01, lam=0.05)
res = qsp.fit(start, measurements, conditions, free=["kd", "lam"], error="lognormal",
              initial=dict(kg_vitro=0.3, kg_xeno=0.05, kg_clin=0.03), starts=1 if SMALL else 8)
table = res.summary()
table["true"] = table["parameter"].map(TRUE)
print(table.to_string(index=False, float_format="{:.4g}".format))
print(f"converged: {res.converged}, Hessian positive definite: {res.hessian_ok}, "
      f"-log L = {res.nll:.2f}, AIC = {res.aic:.1f}, {res.seconds:.0f} s")

# %% [markdown]
# ## Diagnostics: observed vs predicted, weighted residuals
#
# Weighted residuals are $(\ln y - \ln f)/\sigma$: standard normal if the model and
# the error model are right, with no trend over time.

# %%
pred = res.predictions()
kind = pred["simulationConditionId"].str.split("_").str[0]
fig = plot.observed_vs_predicted(pred["measurement"], pred["prediction"], log=True, groups=kind,
                                 name="size", units="relative count | mm^3 | mm",
                                 title_text="Joint fit: observed vs predicted by data type")
save(fig, "calibration_obs_vs_pred.png")

fig = Figure(figsize=(9, 3.2))
axes = fig.subplots(1, 3, sharey=True)
for ax, k in zip(axes, ["vitro", "xeno", "patient"]):
    sel = kind == k
    ax.scatter(pred.loc[sel, "time"], pred.loc[sel, "weighted_residual"], s=12)
    ax.axhline(0, color="k", lw=0.6)
    for h in (-2, 2):
        ax.axhline(h, color="k", ls=":", lw=0.6)
    ax.set_xlabel("time (day)")
    ax.set_title(k, fontsize=9)
axes[0].set_ylabel("weighted residual (1)")
fig.tight_layout()
save(fig, "calibration_residuals.png")

# %% [markdown]
# ## Profile likelihood
#
# `qsp.profile` re-optimises all other parameters on a grid of the profiled one; the
# 95% interval is where $2\,\Delta(-\log L)$ stays below the $\chi^2_1$ quantile 3.84.
# A profile close to the Wald parabola means the Hessian-based SE is trustworthy; a
# flat or one-sided profile flags a parameter the data do not pin down.

# %%
names = ["kd", "lam"] if SMALL else ["kd", "lam", "kg_clin", "kg_xeno"]
profiles = qsp.profile(res, names, n_points=7 if SMALL else 21)
fig = Figure(figsize=(3.6 * len(names), 3.2))
axes = np.atleast_1d(fig.subplots(1, len(names)))
for ax, name in zip(axes, names):
    p = profiles[name]
    g = p.grid
    ax.plot(g["value"], g["delta"], "o-", ms=3, label="profile")
    est, se = res.estimates[name], res.se[name]
    x = np.linspace(g["value"].min(), g["value"].max(), 100)
    ax.plot(x, ((x - est) / se) ** 2, "--", color="C1", label="Wald (quadratic)")
    ax.axhline(p.threshold, color="k", ls=":", lw=0.8, label="95% threshold")
    ax.axvline(TRUE[name], color="C2", lw=1, label="true value")
    ax.set_ylim(0, 2.5 * p.threshold)
    units = ClaretTGI.parameter_info()[name].units if name in ClaretTGI.parameter_info() else "1/day"
    ax.set_xlabel(f"{name} ({units})")
    ax.set_ylabel("2 (-log L - min) (1)")
    print(f"{name}: profile CI {p.ci[0]:.4g} - {p.ci[1]:.4g}, Wald {p.wald[0]:.4g} - {p.wald[1]:.4g}")
axes[0].legend(fontsize=6)
fig.tight_layout()
save(fig, "calibration_profiles.png")
print(f"profiles: {time.perf_counter() - t0:.0f} s since start")

# %% [markdown]
# ## Posterior
#
# `qsp.sample_posterior` runs Hamiltonian Monte Carlo chains vmapped in one compiled
# call (flat priors within the bounds here) and returns an `arviz.InferenceData`, so the
# whole ArviZ toolbox applies: trace plots, pair plots, R-hat, ESS.

# %%
idata = qsp.sample_posterior(res, draws=200 if SMALL else 1000, warmup=200 if SMALL else 500,
                             chains=2 if SMALL else 4)
shown = ["kd", "lam", "kg_clin"]
print(az.summary(idata, var_names=shown).to_string())

matplotlib.use("Agg")  # ArviZ draws through pyplot; files only
import matplotlib.pyplot as plt  # noqa: E402

axes = az.plot_trace(idata, var_names=shown, compact=True)
fig = np.asarray(axes).ravel()[0].figure
fig.tight_layout()
save(fig, "calibration_trace.png")
plt.close(fig)
axes = az.plot_pair(idata, var_names=shown, kind="kde" if not SMALL else "scatter", marginals=True)
fig = np.asarray(axes).ravel()[0].figure
save(fig, "calibration_pair.png")
plt.close(fig)
print(f"notebook 4 done in {time.perf_counter() - t0:.0f} s")
