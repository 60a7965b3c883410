"""`qsp optimize`: regimen optimisation use cases.

`qsp optimize crs` searches mosunetuzumab cycle-1 step-up doses and days that minimise
expected P(CRS >= 2) at the label's cycle-1 tumour response (and at looser response levels:
the Pareto front), by gradient (`qsp.pareto` over `qsp.models.tce.optimize`), re-checks
the optima with the exact endpoints on a fresh virtual population, and writes
DIR/regimens.csv and DIR/pareto_front.png.
"""

from __future__ import annotations

import os

from . import UserError

CRS_HELP = """\
The family: cycle-1 doses d1/d2/d3 (mg) on day 1, day 1+gap2 and day 1+gap2+gap3;
later cycles as the label (60 mg C2D1, 30 mg from C3D1). The label is 1/2/60 mg with
gaps 7/7. P(CRS >= 2) uses the trial's CRS link on the largest cycle-1 IL-6 (ours,
calibrated to the label's incidence); tumour response is the log of the mean tumour
burden at C2D1 relative to baseline. regimens.csv has one row per regimen (label, then the
optimum at each level): exact endpoints on the training population and, with the
suffix _fresh, on the fresh one.
"""


def add_parser(sub):
    import argparse

    p = sub.add_parser("optimize", help="regimen optimisation (crs: mosunetuzumab step-up vs CRS)")
    osub = p.add_subparsers(dest="problem", metavar="PROBLEM")
    c = osub.add_parser("crs", help="step-up doses and days minimising P(CRS >= 2) at the label's response",
                        description="Gradient search of mosunetuzumab cycle-1 step-up regimens (Hosseini 2020 "
                        "model) on a virtual population; Pareto front of P(CRS >= 2) vs tumour response.",
                        epilog=CRS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--n", type=int, default=64, help="training patients (default 64)")
    c.add_argument("--seed", type=int, default=0, help="training population seed (default 0)")
    c.add_argument("--n-fresh", type=int, default=None, help="fresh patients for the re-check (default --n)")
    c.add_argument("--fresh-seed", type=int, default=1, help="fresh population seed (default 1)")
    c.add_argument("--factors", default="1,1.5,2.5",
                   help="response levels: tumour burden at C2D1 allowed, as multiples of the label's "
                   "(default '1,1.5,2.5'; must include 1, the chosen regimen)")
    c.add_argument("--margin", type=float, default=0.05,
                   help="log mean tumour burden required below the label's on the training population (default 0.05)")
    c.add_argument("--temperature", type=float, default=0.05, help="relaxation temperature (default 0.05)")
    c.add_argument("--outer", type=int, default=3, help="augmented-Lagrangian iterations (default 3)")
    c.add_argument("--steps", type=int, default=15, help="BFGS steps per iteration (default 15)")
    c.add_argument("--trial-check", action="store_true",
                   help="also re-run the regimens through the 4-cycle trial solver (slow: adds a compile)")
    c.add_argument("--out", default="qsp-out", help="output directory (default qsp-out)")
    c.set_defaults(func=run_crs)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    return p


def run_crs(args) -> int:
    for flag, val in (("--n", args.n), ("--outer", args.outer), ("--steps", args.steps)):
        if val < 1:
            raise UserError(f"{flag} {val}: expected a positive integer.")
    if args.n_fresh is not None and args.n_fresh < 1:
        raise UserError(f"--n-fresh {args.n_fresh}: expected a positive integer.")
    if args.seed == args.fresh_seed:
        raise UserError(f"--fresh-seed {args.fresh_seed} must differ from --seed {args.seed}.")
    try:
        factors = [float(x) for x in str(args.factors).split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--factors {args.factors!r}: expected comma-separated numbers, e.g. '1,1.5,2.5'.") from None
    if 1.0 not in factors or min(factors) <= 0:
        raise UserError(f"--factors {args.factors!r}: expected positive numbers including 1.")
    if not args.temperature > 0:
        raise UserError(f"--temperature {args.temperature}: expected a positive number.")
    import time

    from qsp.models.tce import optimize as O

    t0 = time.perf_counter()
    res = O.optimize_crs(n=args.n, seed=args.seed, fresh_seed=args.fresh_seed, n_fresh=args.n_fresh,
                         factors=factors, margin=args.margin, temperature=args.temperature, outer=args.outer,
                         max_steps=args.steps, trial_check=args.trial_check,
                         progress=lambda m: print(f"  [{time.perf_counter() - t0:6.0f} s] {m}", flush=True))
    os.makedirs(args.out, exist_ok=True)
    res.table.to_csv(os.path.join(args.out, "regimens.csv"), index=False)
    plot_front(res.table, os.path.join(args.out, "pareto_front.png"))
    cols = ["regimen", "spec", "p_crs2", "p_crs2_expected", "tumor_c2d1", "feasible", "p_crs2_fresh",
            "tumor_c2d1_fresh", "feasible_fresh"]
    print(res.table[cols].to_string(index=False))
    print(f"chosen: {res.spec}; {res.n_evaluations} gradient evaluations; "
          f"{time.perf_counter() - t0:.0f} s; wrote {args.out}/regimens.csv, pareto_front.png")
    return 0


def plot_front(table, path: str):
    """P(CRS >= 2) against tumour burden at C2D1 (exact endpoints): the optima (the
    front) and the label, training (filled) and fresh population (open)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    opt = table[table.regimen != "label"].sort_values("tumor_c2d1")
    lab = table[table.regimen == "label"].iloc[0]
    for sfx, fill, name in (("", True, "training"), ("_fresh", False, "fresh population")):
        x = np.exp(opt[f"tumor_c2d1{sfx}"])
        y = 100 * opt[f"p_crs2_expected{sfx}"]
        kw = dict(mfc="tab:blue" if fill else "none", mec="tab:blue")
        ax.plot(x, y, "o-" if fill else "o--", color="tab:blue", label=f"optima ({name})", **kw)
        ax.plot(np.exp(lab[f"tumor_c2d1{sfx}"]), 100 * lab[f"p_crs2_expected{sfx}"], "*", ms=14, color="tab:red",
                mfc="tab:red" if fill else "none", label=f"label 1/2/60 mg ({name})")
    ch = table[table.get("chosen", False) == True]  # noqa: E712 (pandas mask)
    for _, r in ch.iterrows():
        ax.annotate(f"chosen: {r['spec']}", (np.exp(r["tumor_c2d1"]), 100 * r["p_crs2_expected"]), fontsize=8,
                    xytext=(8, 8), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("mean tumour burden at C2D1 (fraction of baseline)")
    ax.set_ylabel("expected P(CRS grade >= 2) (%)")
    ax.set_title("Mosunetuzumab cycle-1 step-up: benefit/risk front", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
