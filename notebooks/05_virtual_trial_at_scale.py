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
# # 5. A virtual trial at scale: digital twins to 100,000 patients
#
# A phase 1 study gives a few tumour scans per patient: too sparse to fit each patient
# alone, enough to place each one within the population. This notebook
#
# 1. fits a **digital twin** per patient of a sparse dataset (`qsp.vpop.fit_twins`:
#    per-patient MAP with the population as the prior, Laplace intervals, all patients in
#    one batched call);
# 2. grows a **100,000-patient virtual population** from the twins (each virtual patient
#    is a draw from one twin's posterior), so the trial population carries what the
#    data say and keeps the uncertainty where they say little;
# 3. runs a **three-arm virtual trial** (`qsp.vpop.run_trial`: chunked, resumable,
#    failed patients flagged) and reports **ORR with bootstrap intervals** and
#    **Kaplan-Meier curves of time to progression** with Greenwood bands.
#
# Model: `qsp.models.tgi.SimeoniTGI` (Simeoni 2004 tumour growth inhibition with
# one-compartment PK; the clinical parameter values are illustrative, ours). The
# "observed" dataset is simulated here from known parameters (seed fixed), so the twins
# can be checked against the truth; with real data, pass your NONMEM-style table.
#
# Size knob: `QSP_NOTEBOOK_SMALL=1` (8 twins, 64 virtual patients); full size: 40
# twins and 100,000 virtual patients (minutes on a GPU, tens of minutes on a CPU).
# Figures go to `QSP_NOTEBOOK_FIGURES`; trial chunks to `QSP_NOTEBOOK_TRIAL_DIR`
# (default: a folder beside the figures, from which a rerun resumes).

# %%
import os
import tempfile
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

import qsp
from qsp import plot
from qsp.models.tgi import SimeoniTGI
from qsp.vpop import Arm, Exposure, Population, Response, fit_twins, run_trial

SMALL = os.environ.get("QSP_NOTEBOOK_SMALL", "0") == "1"
FIGURES = os.environ.get("QSP_NOTEBOOK_FIGURES", os.path.join("notebooks", "figures"))
os.makedirs(FIGURES, exist_ok=True)

N_TWINS = 8 if SMALL else 40
N_TRIAL = 64 if SMALL else 100_000
CHUNK = 32 if SMALL else 1024  # patients per compiled chunk (on a GPU, try 16384)
# A rerun of the same trial resumes from TRIAL_DIR; a changed trial is refused there
# (delete the folder). The small setting uses a fresh temporary folder.
TRIAL_DIR = os.environ.get("QSP_NOTEBOOK_TRIAL_DIR") or (
    tempfile.mkdtemp(prefix="qsp_trial_") if SMALL else os.path.join(FIGURES, f"trial_{N_TRIAL}"))
# SimeoniTGI is not stiff at these parameters: an explicit solver compiles and runs faster.
SIM = dict(solver=diffrax.Tsit5(), rtol=1e-6, atol=1e-8)
t0 = time.perf_counter()


def save(fig, name):
    path = os.path.join(FIGURES, name)
    fig.savefig(path, dpi=110)
    print("wrote", path)


# %% [markdown]
# ## The population and the sparse dataset
#
# Typical patient: a 30 cm^3 tumour (about 39 mm across) in its linear growth phase
# (300 mm^3/day, 1%/day), a drug with clearance 10 L/day and volume 50 L, weekly 1-h IV
# infusions; at 40 mg the typical kill rate (k2 x mean concentration, 0.9%/day) about
# balances growth. Between-patient
# variability (log-normal) on clearance, growth rate, potency and baseline size.
# The study: 40 mg weekly, a baseline scan and 2-4 later scans at 6-weekly visits,
# 8% measurement error on the diameter.

# %%
typical = SimeoniTGI(CL=10.0, V=50.0, lambda0=0.02, lambda1=300.0, k1=0.8, k2=0.015, W0=30_000.0)
NAMES = ("CL", "lambda0", "k2", "W0")
OMEGA = np.diag([0.09, 0.16, 0.16, 0.25])  # variances of log(parameter)
pop = Population(typical, OMEGA, NAMES)
SIGMA = 0.08  # log-scale error SD of a diameter measurement


def weekly(dose_mg, weeks=48):
    return qsp.Regimen.infusion(dose_mg, 0.0, "CENT", duration=1.0 / 24.0, ii=7.0, addl=weeks - 1)


rng = np.random.default_rng(0)
true_eta = np.asarray(pop.sample_eta(jax.random.key(1), N_TWINS))
visits = np.arange(0.0, 169.0, 42.0)  # baseline and 6-weekly scans to week 24
truth = qsp.simulate(pop.build(true_eta), weekly(40.0), visits, **SIM)
rows = []
for i in range(N_TWINS):
    rows.append(dict(ID=i + 1, TIME=0.0, AMT=40.0, CMT=2, EVID=1, DV=np.nan, RATE=40.0 * 24.0, II=7.0, ADDL=47))
    seen = np.sort(np.r_[0, rng.choice(np.arange(1, len(visits)), size=rng.integers(2, 5), replace=False)])
    for k in seen:
        y = float(truth.outputs["diameter"][i, k]) * np.exp(SIGMA * rng.normal())
        rows.append(dict(ID=i + 1, TIME=visits[k], AMT=0.0, CMT=2, EVID=0, DV=y, RATE=0.0, II=0.0, ADDL=0))
data = pd.DataFrame(rows)
print(data.head(8).to_string(index=False))
print(f"{N_TWINS} patients, {int((data.EVID == 0).sum())} scans")

# %% [markdown]
# ## Digital twins
#
# `fit_twins` minimises, per patient, the squared log-scale residuals plus the
# population prior $\tfrac12\eta^\top\Omega^{-1}\eta$ (Levenberg-Marquardt, a fixed
# number of iterations in one compiled, vmapped call) and returns the Laplace covariance
# of each twin. Parameters the scans do not inform (here clearance: no PK samples) stay
# near the prior, with the prior's width.

# %%
twins = fit_twins(pop, data, output="diameter", sigma=SIGMA, error="lognormal", **SIM)
print(f"{twins.converged.sum()} of {N_TWINS} twins converged in {twins.seconds:.1f} s")
lo, hi = twins.interval(0.95)
true_values = np.asarray(pop.values(true_eta))
cover = np.mean((true_values >= lo) & (true_values <= hi), axis=0)
print(pd.DataFrame({"parameter": NAMES, "coverage_of_truth_95": cover,
                    "posterior_sd_over_prior_sd": twins.se.mean(axis=0) / np.sqrt(np.diag(OMEGA))}).to_string(index=False))

obs = data[data.EVID == 0]
pred = qsp.simulate(twins.model, weekly(40.0), visits, **SIM).outputs["diameter"]
k_of = {t: k for k, t in enumerate(visits)}
fitted = np.array([float(pred[int(r.ID) - 1, k_of[r.TIME]]) for r in obs.itertuples()])
fig = plot.observed_vs_predicted(obs["DV"], fitted, units="mm", name="tumour diameter",
                                 title_text=f"Digital twins: {N_TWINS} patients, {len(obs)} scans")
save(fig, "twins_observed_vs_predicted.png")

# %% [markdown]
# ## 100,000 virtual patients from the twins
#
# Each virtual patient picks a twin at random and draws its random effects from that
# twin's Laplace posterior $N(\hat\eta_i, \Sigma_i)$. The virtual population reproduces
# the observed patients' spread of growth and sensitivity, with the uncertainty of
# each twin, instead of assuming the prior.

# %%
key_pick, key_draw = jax.random.split(jax.random.key(2))
pick = np.asarray(jax.random.randint(key_pick, (N_TRIAL,), 0, N_TWINS))
chol = np.linalg.cholesky(twins.cov + 1e-12 * np.eye(len(NAMES)))
z = np.asarray(jax.random.normal(key_draw, (N_TRIAL, len(NAMES))))
eta = twins.eta[pick] + np.einsum("nij,nj->ni", chol[pick], z)
virtual = pop.build(jnp.asarray(eta))

# %% [markdown]
# ## The trial: three dose levels, 48 weeks
#
# RECIST 1.1 on the diameter (`Response`: best overall response, time to progression at
# +20% and +5 mm over the nadir, 6-weekly assessments; the first save time is the
# baseline) and exposure (`Exposure`: Cmax, AUC, trough before the second dose).
# `run_trial` writes each chunk to disk as it finishes: an interrupted run resumes.

# %%
arms = [Arm(f"{d:g} mg weekly", weekly(d)) for d in (20.0, 40.0, 80.0)]
assess = np.arange(0.0, 337.0, 42.0)
result = run_trial(virtual, arms, assess, endpoints=[Response("diameter"), Exposure("C", trough_at=7.0)],
                   out=TRIAL_DIR, chunk_size=CHUNK, save_outputs=("diameter",), progress=not SMALL, **SIM)
print(f"{N_TRIAL:,} patients x {len(arms)} arms in {result.seconds:.0f} s "
      f"(peak RSS {result.memory['peak_rss_mb']:.0f} MB)")
summary = result.summary(n_boot=200 if SMALL else 1000)
print(summary[["arm", "n", "n_failed", "orr", "orr_lo", "orr_hi", "median_ttp", "median_ttp_lo",
               "median_ttp_hi"]].to_string(index=False, float_format="{:.3g}".format))

# %% [markdown]
# ## Objective response rate with intervals

# %%
fig = Figure(figsize=(5.5, 3.6))
ax = fig.subplots()
x = np.arange(len(summary))
err = 100 * np.abs(np.stack([summary["orr"] - summary["orr_lo"], summary["orr_hi"] - summary["orr"]]))
ax.bar(x, 100 * summary["orr"], yerr=err, capsize=4, color="C0")
ax.set_xticks(x, summary["arm"])
ax.set_xlabel("arm")
ax.set_ylabel("objective response rate (%)")
ax.set_title(f"ORR by arm, {N_TRIAL:,} virtual patients each (95% bootstrap intervals)", fontsize=9)
fig.tight_layout()
save(fig, "trial_orr.png")

# %% [markdown]
# ## Kaplan-Meier: time to progression
#
# Patients who have not progressed by week 48 are censored there (ticks are left out at
# this size).

# %%
pt = result.patients
fig = plot.kaplan_meier(pt["ttp"], pt["progressed"], groups=pt["arm"], ci=True, censor_ticks=SMALL,
                        time_unit="day", ylabel="progression-free probability",
                        title_text=f"Time to progression, {N_TRIAL:,} virtual patients per arm")
save(fig, "trial_km.png")

# %% [markdown]
# ## Waterfall of the highest dose (the first 1000 patients)

# %%
traj = result.to_xarray()["diameter"].sel(arm=arms[-1].name).values[:1000]
best = plot.best_percent_change(traj)
bor = pt.loc[pt["arm"] == arms[-1].name, "bor"].to_numpy()[:1000]
fig = plot.waterfall(best, category=bor, title_text=f"{arms[-1].name}: best change in tumour diameter")
save(fig, "trial_waterfall.png")
km = {a.name: result.kaplan_meier(a.name).median for a in arms}
print("median TTP (days):", {k: round(float(v), 1) for k, v in km.items()})

# %% [markdown]
# ## The GPU path and float32
#
# Everything above is JAX: `run_trial` vmaps `qsp.simulate` over a chunk of patients
# and the same code runs on a GPU. For 100,000 patients on an accelerator:
#
# - **Precision.** `import qsp` turns on float64 because stiff pharmacology on CPU
#   needs it. GPUs run float64 at a fraction of their float32 speed, so for non-stiff
#   models like this one set `QSP_FLOAT32=1` *before* importing qsp (e.g.
#   `QSP_FLOAT32=1 python notebooks/05_virtual_trial_at_scale.py`) and loosen the
#   tolerances to what float32 can honour (`rtol=1e-4, atol=1e-6`). Check a few hundred
#   patients against a float64 run before trusting the float32 endpoints: response
#   categories at the RECIST thresholds can flip when a trajectory sits on a threshold.
# - **Chunks.** A larger `chunk_size` (e.g. 16,384) fills the device; every chunk has the
#   same shape, so there is one compile however many patients run.
# - **Several devices.** `run_trial(..., devices=jax.devices())` hands whole chunks to
#   each device in turn; results are bitwise independent of the device count, and a
#   run interrupted on one machine resumes on another from `TRIAL_DIR`.
# - **CPU.** On CPU, `import qsp` disables XLA's multi-threaded Eigen pool (it
#   deadlocked large vmapped solves here); keep chunks at about 1,000 patients.

# %%
print(f"notebook 5 done in {time.perf_counter() - t0:.0f} s")
