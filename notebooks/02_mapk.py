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
# # 2. MAPK inhibitor combinations in BRAF-V600E colorectal cancer
#
# BRAF inhibitors alone fail in BRAF-V600E colorectal cancer although they work in
# melanoma: EGFR signalling re-activates the pathway upstream of BRAF. Kirouac et al.
# 2017 (`qsp.models.mapk`) built a MAPK-pathway model with feedbacks, drug PK of
# cetuximab (EGFR), vemurafenib (BRAF), cobimetinib (MEK) and GDC-0994 (ERK), and a
# calibrated virtual population, to rank combinations. This notebook goes:
#
# 1. in vitro: HT-29 pERK dose-response to vemurafenib and cobimetinib, without and
#    with EGF (MARM2 data, Fröhlich et al. 2023), with the model curve;
# 2. the clinical-parameter cascade: steady-state ERK activity and tumour growth rate
#    against each inhibitor's concentration;
# 4. predicted clinical response for every combination (day-56 ORR, prevalence-weighted
#    over Table S10's 1000 plausible patients), a waterfall and a spider plot of the best arm.
#
# 3. xenograft arms: six BRAF-mutant CRC patient-derived xenografts (PDXE, Gao et al.
#    2015) under cetuximab, encorafenib, binimetinib and cetuximab + encorafenib, with
#    the xenograft tier's shipped fit (`qsp.models.mapk.xenograft`);
#
# Size knob: `QSP_NOTEBOOK_SMALL=1` (40 patients, 4 arms, the default in vitro
# parameters instead of the fit); figures go to `QSP_NOTEBOOK_FIGURES`.

# %%
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from qsp import plot
from qsp.models import mapk
from qsp.models.mapk import invitro
from qsp.models.mapk import xenograft as xg

SMALL = os.environ.get("QSP_NOTEBOOK_SMALL", "0") == "1"
FIGURES = os.environ.get("QSP_NOTEBOOK_FIGURES", os.path.join("notebooks", "figures"))
os.makedirs(FIGURES, exist_ok=True)

N = 40 if SMALL else None  # None: all 1000 Table S10 patients
ARMS = (("untreated", "vemurafenib", "cetuximab+vemurafenib", "cetuximab+vemurafenib+cobimetinib") if SMALL
        else mapk.ARMS)
DT = 0.1 if SMALL else 0.05  # RK4 step (day); the CLI default is 0.05
t0 = time.perf_counter()


def save(fig, name):
    path = os.path.join(FIGURES, name)
    fig.savefig(path, dpi=110)
    print("wrote", path)


# %% [markdown]
# ## In vitro: pERK in HT-29 cells
#
# The cascade at rest under constant drug, with an in vitro potency per drug, EGF as a
# ligand of EGFR and an assay background (`invitro.HT29pERK`). At full size
# `invitro.fit_ht29()` estimates 11 parameters with `qsp.fit` (220 wells); the small
# setting draws the model at its starting values. EGF right-shifts vemurafenib by more
# than 100-fold: the reason BRAF inhibition alone is weak in colorectal cancer.

# %%
data = invitro.load_ht29()
if SMALL:
    ht29 = invitro.HT29pERK()
    how = "starting values"
else:
    fit = invitro.fit_ht29()
    print(fit.summary())
    ht29 = fit.model
    how = "fitted"

fig = Figure(figsize=(9, 3.6))
axes = fig.subplots(1, 2, sharey=True)
for ax, (drug, col, other) in zip(axes, [("vemurafenib", "vem", "cob"), ("cobimetinib", "cob", "vem")]):
    single = data[(data[other] == 0) & (data[col] > 0)]
    plot.dose_response(single[col], single["pERK"], fit=None, ax=ax, dose_units="uM", units="of DMSO",
                       name="pERK", groups=np.where(single["egf"] > 0, "+ EGF", "no EGF"))
    grid = np.geomspace(single[col].min(), single[col].max(), 120)
    for j, egf in enumerate((0.0, 1.0)):
        ax.plot(grid, np.asarray(invitro.curves(ht29, grid, drug, egf)), color=f"C{j}", lw=1.3)
        print(f"{drug:12s} EGF={egf:g}: IC50 model {invitro.ic50(ht29, drug, egf):.3g} uM, "
              f"data {invitro.data_ic50(drug, egf, data):.3g} uM")
    ax.set_xlabel(f"{drug} (uM)")
    ax.set_title(f"HT-29, {drug} alone; lines: model ({how})", fontsize=9)
fig.tight_layout()
save(fig, "mapk_invitro_perk.png")

# %% [markdown]
# ## The clinical cascade: ERK and growth against each inhibitor
#
# For the default virtual patient (Table S10 patient 122), `Kirouac2017.rest_state`
# gives the pathway at rest under a constant concentration of one drug (mg/L, the
# clinical potencies): ERK activity relative to untreated, and the net tumour growth
# rate `g0`. Vemurafenib's paradoxical CRAF activation and the feedback release limit
# how far single agents push ERK down.

# %%
pt = mapk.patient(122)
conc = np.geomspace(1e-3, 1e3, 61)
rest = jax.jit(jax.vmap(lambda c, which: pt.rest_state(*[jnp.where(which == k, c, 0.0) for k in range(4)]),
                        in_axes=(0, None)))
fig = Figure(figsize=(9, 3.6))
ax1, ax2 = fig.subplots(1, 2, sharex=True)
erk0 = float(pt.rest_state()["ERK"])
for k, drug in enumerate(mapk.DRUGS):
    r = rest(jnp.asarray(conc), k)
    ax1.plot(conc, np.asarray(r["ERK"]) / erk0, label=drug)
    ax2.plot(conc, np.asarray(r["g0"]), label=drug)
ax1.set_xscale("log")
ax1.set_xlabel("drug concentration (mg/L)")
ax1.set_ylabel("ERK activity (of untreated)")
ax2.set_xlabel("drug concentration (mg/L)")
ax2.set_ylabel("net tumour growth rate (1/day)")
ax2.axhline(0, color="k", lw=0.6)
ax1.legend(fontsize=7)
fig.suptitle("Patient 122 at rest under constant single-agent exposure", fontsize=9)
fig.tight_layout()
save(fig, "mapk_cascade_dose_response.png")

# %% [markdown]
# ## Xenografts: the cascade's signal loss per arm against PDX growth
#
# Each drug is held at a constant exposure (the clinical average steady state of its
# class surrogate: encorafenib -> the BRAF node, binimetinib -> the MEK node; a labelled
# assumption of the tier, there is no mouse PK). The cascade at rest gives the fraction
# of the proliferation signal each arm removes (`xg.arm_losses`); each PDX model has its
# own growth and drug sensitivity (the shipped fit, `xg.load_fit()`). Points: measured
# volumes to day 56; lines: the fit.

# %%
pdx = xg.load_pdxe()
estimates, losses = xg.load_fit(), xg.arm_losses()
print({arm: round(v, 3) for arm, v in losses.items()})
models = list(dict.fromkeys(pdx["patient_id"]))
fig = Figure(figsize=(10, 5.6))
axes = fig.subplots(2, 3, sharex=True).ravel()
for ax, m in zip(axes, models):
    for j, arm in enumerate(xg.ARMS):
        d = pdx[(pdx["patient_id"] == m) & (pdx["drug"] == arm)]
        if d.empty:
            continue
        days = np.linspace(0.0, d["day"].max(), 50)
        ax.plot(d["day"], d["volume_mm3"], "o", ms=3, color=f"C{j}", label=arm)
        ax.plot(days, xg.predict(estimates, m, arm, days, losses), color=f"C{j}", lw=1.2)
    ax.set_yscale("log")
    ax.set_title(m, fontsize=9)
    ax.set_xlabel("time (day)")
    ax.set_ylabel("tumour volume (mm^3)")
axes[0].legend(fontsize=6)
fig.suptitle("BRAF-mutant CRC xenografts (PDXE): data and the xenograft-tier fit", fontsize=9)
fig.tight_layout()
save(fig, "mapk_xenograft.png")

# %% [markdown]
# ## Predicted clinical response for each combination
#
# Table S10's 1000 plausible patients with their prevalence weights, every arm to
# day 56 (`mapk.simulate_trial`: exact PK, fixed-step RK4, all arms and patients in one
# compiled call). Response on the tumour size relative to baseline: CR < 0.1,
# PR < 0.7 (ORR counts both), PD > 1.2 (`mapk.summarize`). Kirouac 2017 used the
# calibration arms' ORRs as targets (`mapk.TARGETS`).

# %%
pop, weights = mapk.load_vpop("s10")
if N is not None:  # the first N patients, weights renormalised inside summarize
    pop = jax.tree.map(lambda x: x[:N] if isinstance(x, jax.Array) and x.ndim > 0 else x, pop)
    weights = weights[:N]
res = mapk.simulate_trial(pop, ARMS, dt=DT, save_dt=7.0)
size = np.asarray(res.size)  # (arm, patient)
rows = []
for arm, s in zip(ARMS, size):
    r = mapk.summarize(s, weights)
    target = mapk.TARGETS.get(arm, (np.nan, np.nan))  # (ORR, PD) clinical targets of the calibration arms
    rows.append(dict(arm=arm, orr=r.orr, cr=r.cr, pd=r.pd, median_size=r.median_size,
                     target_orr=target[0], target_pd=target[1]))
summary = pd.DataFrame(rows).sort_values("orr", ascending=False)
print(summary.to_string(index=False, float_format="{:.3f}".format))

fig = Figure(figsize=(7, 0.35 * len(summary) + 1.5))
ax = fig.subplots()
y = np.arange(len(summary))[::-1]
ax.barh(y, 100 * summary["orr"], color="C0", label="ORR (CR + PR)")
ax.barh(y, -100 * summary["pd"], color="C3", label="PD (shown negative)")
ax.set_yticks(y, summary["arm"].str.replace("+", " + "), fontsize=7)
ax.axvline(0, color="k", lw=0.6)
ax.set_xlabel("patients at day 56 (%, prevalence-weighted)")
ax.set_title(f"Predicted day-56 response by arm ({size.shape[1]} virtual patients)", fontsize=9)
tgt = summary["target_orr"].to_numpy()
ax.plot(100 * tgt, y, "k|", ms=12, mew=2, label="clinical ORR (calibration arms)")
ax.legend(fontsize=7)
fig.tight_layout()
save(fig, "mapk_orr_by_arm.png")

# %% [markdown]
# ## Waterfall and spider plot of the best combination
#
# Patients with a prevalence weight of essentially zero are left out (they are
# plausible but not representative of the clinical population).

# %%
best = summary["arm"].iloc[0]
a = ARMS.index(best)
keep = np.asarray(weights) > 1e-6
change = 100 * (size[a] - 1.0)
category = mapk.classify(size[a])
fig = plot.waterfall(change[keep], category=category[keep], ylabel="day-56 change in tumour size",
                     title_text=f"{best}: best arm, {int(keep.sum())} weighted patients")
save(fig, "mapk_waterfall.png")

traj = np.asarray(res.states[a, :, :, 5])  # tumour size relative to baseline, weekly
fig = plot.spider(traj[keep][:30], res.times, time_unit="day", ylabel="change in tumour size",
                  title_text=f"{best}: tumour size over time (first 30 weighted patients)")
save(fig, "mapk_spider.png")
print(f"notebook 2 done in {time.perf_counter() - t0:.0f} s")
