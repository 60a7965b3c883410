"""`qsp trial mapk`: the Kirouac 2017 virtual trial, every arm to day 56.

Writes `summary.csv` (one row per arm: `arm`, `orr`, `cr`, `pd`, `median_size`;
weighted by the prevalence weights when the population has them), `patients.csv`
(`patient`, `arm`, `size_d56`) and `waterfall.png` (one panel per arm).
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd

from ._dosing import ARMS, parse_arm
from ._trial import simulate_trial
from ._vpop import VPOPS, load_table, load_vpop, summarize
from ._weights import TARGETS, derive_weights

WEIGHTS = ("published", "ours")

HELP = """\
Arms are 'untreated' or drug names joined by '+' from cetuximab, vemurafenib,
cobimetinib, gdc0994 (default: all 16). Schedules: vemurafenib 960 mg BID, cobimetinib
60 mg and GDC-0994 400 mg QD 21 days on / 7 off, cetuximab 450 mg IV weekly. Response at
day 56 on tumour size relative to baseline: CR < 0.1, PR < 0.7 (ORR counts both),
PD > 1.2. --vpop s10: Table S10's 1000 plausible patients, typical PK, weighted by the
published prevalence weights (--weights ours: weights re-derived to hit the calibration
arms' ORR/PD targets, written to weights.csv); s10-resample250: Metrum's 250 draws with per-patient PK,
unweighted. --init table: Table S10 initial values (FB = 0.7, TD1 = 1); zeros: FB and
TD1 at 0 (as the mrgsolve translation runs); steady: each patient's drug-free rest state.
"""


def add_parser(tsub, user_error):
    """Register `mapk` under the `qsp trial` subparsers `tsub`."""
    import argparse

    p = tsub.add_parser("mapk", help="BRAF-V600E colorectal cancer (Kirouac 2017): day-56 response by arm",
                        description="Simulate the Kirouac 2017 virtual population under MAPK-inhibitor "
                        "combinations to day 56.", epilog=HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vpop", default="s10", choices=VPOPS, help="virtual population (default s10)")
    p.add_argument("--weights", default="published", choices=WEIGHTS,
                   help="prevalence weights of s10 (default published)")
    p.add_argument("--arms", default=None, help="comma-separated arms (default: all 16)")
    p.add_argument("--init", default="table", choices=("table", "zeros", "steady"),
                   help="initial feedback states (default table)")
    p.add_argument("--dt", type=float, default=0.05, help="RK4 step in days (default 0.05)")
    p.add_argument("--out", default="qsp-out", help="output directory (default qsp-out)")

    def run(args):
        arms = ARMS if args.arms is None else tuple(a.strip() for a in args.arms.split(",") if a.strip())
        if not arms:
            raise user_error(f"--arms {args.arms!r}: expected e.g. 'untreated,cetuximab+vemurafenib'.")
        for a in arms:
            try:
                parse_arm(a)
            except ValueError as err:
                raise user_error(str(err)) from None
        if not (args.dt > 0 and abs(round(0.5 / args.dt) * args.dt - 0.5) < 1e-9):
            raise user_error(f"--dt {args.dt}: expected a step that divides 0.5 day (e.g. 0.05, 0.01).")
        if args.weights == "ours" and args.vpop != "s10":
            raise user_error(f"--weights ours applies to --vpop s10 (the resample is unweighted); got --vpop {args.vpop}.")
        return trial_job(vpop=args.vpop, arms=arms, init=args.init, dt=args.dt, out=args.out, weights=args.weights)

    p.set_defaults(func=run)
    return p


def run_trial(vpop: str = "s10", arms=ARMS, init: str = "table", dt: float = 0.05, weights: str = "published"):
    """Simulate `arms` over the population; returns `(summary, patients, weights)`:
    two DataFrames and the weights used (None for the unweighted resample). With
    `weights="ours"` the calibration arms are simulated too (in the same call) and the
    weights re-derived from them (`derive_weights`)."""
    model, w = load_vpop(vpop, init=init)
    table = load_table(vpop)
    ids = table["patient"].to_numpy() if "patient" in table else table["VPOP"].to_numpy()
    extra = [a for a in TARGETS if a not in arms] if weights == "ours" else []
    res = simulate_trial(model, tuple(arms) + tuple(extra), dt=dt, save_dt=56.0)
    every = np.asarray(res.size)
    size = every[: len(arms)]
    if weights == "ours":
        names = list(arms) + extra
        w = derive_weights(every[[names.index(a) for a in TARGETS]], list(TARGETS.values()))
    weights = w
    rows = []
    for arm, s in zip(arms, size):
        r = summarize(s, weights)
        rows.append(dict(arm=arm, orr=r.orr, cr=r.cr, pd=r.pd, median_size=r.median_size,
                         n=len(s), n_failed=int(np.isnan(s).sum())))
    patients = pd.DataFrame({"patient": np.tile(ids, len(arms)), "arm": np.repeat(arms, len(ids)),
                             "size_d56": size.reshape(-1)})
    return pd.DataFrame(rows), patients, (None if weights is None else np.asarray(weights))


def waterfall(patients: pd.DataFrame, path: str, weights=None):
    """One waterfall panel per arm: day-56 change from baseline, sorted, with the PR
    (-30 %) and PD (+20 %) lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(dict.fromkeys(patients["arm"]))
    ncol = min(4, len(arms))
    nrow = int(np.ceil(len(arms) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.4 * nrow), squeeze=False, sharey=True)
    for ax, arm in zip(axes.flat, arms):
        s = patients.loc[patients["arm"] == arm, "size_d56"].to_numpy()
        keep = np.ones(len(s), bool) if weights is None else np.asarray(weights) > 1e-6
        change = np.sort(100 * (s[keep] - 1))[::-1]
        colors = np.where(change < -30, "tab:blue", np.where(change > 20, "tab:red", "0.6"))
        ax.bar(np.arange(len(change)), change, width=1.0, color=colors)
        ax.axhline(-30, color="k", lw=0.5, ls="--")
        ax.axhline(20, color="k", lw=0.5, ls=":")
        ax.set_title(arm.replace("+", " + "), fontsize=7)
        ax.set_xticks([])
    for ax in axes.flat[len(arms):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("day-56 change (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def trial_job(vpop="s10", arms=ARMS, init="table", dt=0.05, out="qsp-out", weights="published") -> int:
    """Run the trial, write the files and print the summary."""
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    print(f"qsp trial mapk: vpop {vpop}, init {init}, {len(arms)} arms to day 56 (RK4 dt {dt} day)"
          + (f", {weights} weights" if vpop == "s10" else ""), flush=True)
    summary, patients, w = run_trial(vpop, arms, init, dt, weights)
    summary.to_csv(os.path.join(out, "summary.csv"), index=False)
    patients.to_csv(os.path.join(out, "patients.csv"), index=False)
    if weights == "ours":
        table = load_table(vpop)
        pd.DataFrame({"patient": table["VPOP"], "pw_published": table["PW"], "pw_ours": w}).to_csv(
            os.path.join(out, "weights.csv"), index=False)
    waterfall(patients, os.path.join(out, "waterfall.png"), w)
    with pd.option_context("display.width", 200, "display.float_format", "{:.4f}".format):
        print(summary[["arm", "orr", "cr", "pd", "median_size"]].to_string(index=False))
    files = "summary.csv, patients.csv, waterfall.png" + (", weights.csv" if weights == "ours" else "")
    print(f"wrote {out}/{files} ({time.perf_counter() - t0:.0f} s)")
    return 0
