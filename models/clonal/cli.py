"""`qsp trial clonal`: the clonal-resistance virtual trial (Poels et al. 2021 schedules).

Wiring (in `qsp/cli/trial.py`): `from qsp.models.clonal.cli import add_parser as
add_clonal; add_clonal(tsub)` where `tsub` is the `qsp trial` sub-parser set.
"""

from __future__ import annotations

import os

HELP = """\
Schedules are named daco<mg><QD|BID|TID>+osi<mg><QD|BID|TID>, e.g. daco30QD+osi40BID
(the reference of the paper's analysis code). 'main' = the paper's seven schedules,
'grid' = its 4 x 3 grid (Fig. 3C). Relative improvement RI = (N_ref - N)/N_ref of the
total cell count at the end (Chakrabarti & Michor 2017): RI > 0 means fewer cells than
the reference. Time to progression is ours (the paper has none): RECIST-like +20% and
+5 mm over the nadir of SLD = bsld (N/N0)^(1/3), weekly assessments.
"""


def add_parser(tsub):
    import argparse

    c = tsub.add_parser("clonal", help="dacomitinib + osimertinib schedules: clonal resistance (Poels 2021)",
                        description="Run the paper's schedules on one shared virtual population of the "
                        "clonal-resistance model.", epilog=HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--n", type=int, default=1000, help="virtual patients (default 1000)")
    c.add_argument("--weeks", type=float, default=8.0, help="treatment duration in weeks (default 8)")
    c.add_argument("--schedules", default="main", help="comma-separated schedules, 'main' or 'grid' (default main)")
    c.add_argument("--reference", default="daco30QD+osi40BID", help="reference schedule for RI")
    c.add_argument("--surface", choices=("published", "monotone"), default="published",
                   help="drug-effect surface (default: the published bounded logistic)")
    c.add_argument("--seed", type=int, default=0, help="population seed (default 0)")
    c.add_argument("--out", default="qsp-out", help="output directory (default qsp-out)")
    c.set_defaults(func=run_clonal)
    return c


def run_clonal(args) -> int:
    from qsp.cli import UserError
    from qsp.models.clonal import surfaces, trial

    if args.n < 1:
        raise UserError(f"--n {args.n}: expected a positive number of patients.")
    if not args.weeks > 0:
        raise UserError(f"--weeks {args.weeks}: expected a positive number of weeks.")
    names = []
    for s in (x.strip() for x in str(args.schedules).split(",") if x.strip()):
        names += list(trial.MAIN if s == "main" else trial.GRID if s == "grid" else [s])
    if not names:
        raise UserError(f"--schedules {args.schedules!r}: expected e.g. 'main' or 'daco30QD+osi40BID'.")
    for s in names + [args.reference]:
        try:
            trial._parse(s)
        except ValueError as err:
            raise UserError(str(err)) from None
    import pandas as pd

    os.makedirs(args.out, exist_ok=True)
    print(f"qsp trial clonal: {args.n} virtual patients (seed {args.seed}), {args.weeks:g} weeks, "
          f"{len(names)} schedules, reference {args.reference}, surface {args.surface}", flush=True)
    summary, patients = trial.run(n=args.n, weeks=args.weeks, schedules=names, reference=args.reference,
                                  seed=args.seed, surface=surfaces.surface(args.surface))
    summary.to_csv(os.path.join(args.out, "summary.csv"), index=False)
    patients.to_csv(os.path.join(args.out, "patients.csv"), index=False)
    trial.plot_waterfall(patients, os.path.join(args.out, "waterfall.png"), args.reference)
    with pd.option_context("display.width", 220, "display.max_columns", 20, "display.float_format", "{:.3g}".format):
        print(summary.to_string(index=False))
    print(f"wrote {args.out}/summary.csv, patients.csv, waterfall.png")
    return 0
