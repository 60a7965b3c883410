"""`qsp petab PROBLEM.yaml`: the negative log-likelihood of a PEtab v1 problem at its
nominal parameters (`--json`: `{"nll": <value>, "n_measurements": <n>}`), or with
`--fit` a fit by the calibration engine (trust-region BFGS, forward sensitivities;
`--starts K` starts: the nominal values, then uniform draws within the bounds on the
parameters' PEtab scale), written to `--out` (default `petab_<PROBLEM>`):
`estimates.csv` (parameterId, scale, estimate on that scale, natural value),
`starts.csv` (every start's optimum) and `fit.json` (best nll, converged, seconds).
Exit status: 0 on success, 1 if the best start did not converge, 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import os


def add_parser(sub):
    p = sub.add_parser(
        "petab",
        help="negative log-likelihood or fit of a PEtab v1 problem",
        description=(__doc__ or "").split("\n\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("problem", metavar="PROBLEM.yaml", help="PEtab v1 problem file")
    p.add_argument("--json", action="store_true", help="print {\"nll\": ..., \"n_measurements\": ...}")
    p.add_argument("--fit", action="store_true", help="fit the estimated parameters")
    p.add_argument("--starts", type=int, default=1, help="number of starts with --fit (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random starts")
    p.add_argument("--out", metavar="DIR", help="output directory of --fit (default petab_<PROBLEM>)")
    p.add_argument("--rtol", type=float, default=1e-8, help="ODE solver relative tolerance (default 1e-8)")
    p.add_argument("--atol", type=float, default=1e-10, help="ODE solver absolute tolerance (default 1e-10)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from . import UserError
    from .._petab import petab_problem

    if args.starts < 1:
        raise UserError(f"--starts {args.starts}: expected an integer >= 1.")
    if not os.path.exists(args.problem):
        raise UserError(f"PROBLEM.yaml {args.problem!r} does not exist.")
    pb = petab_problem(args.problem, rtol=args.rtol, atol=args.atol)
    if not args.fit:
        nll = pb.nll_nominal()
        if args.json:
            print(json.dumps({"nll": nll if math.isfinite(nll) else None, "n_measurements": pb.n}))
        else:
            print(f"{pb.name}: negative log-likelihood at the nominal parameters = {nll:.10g} "
                  f"({pb.n} measurements, {pb.n_free} estimated parameters)")
        return 0
    import pandas as pd

    res = pb.fit(args.starts, seed=args.seed)
    out = args.out or f"petab_{pb.name}"
    os.makedirs(out, exist_ok=True)
    nat = res.natural()
    pd.DataFrame({"parameterId": list(res.x), "scale": [res.scale[p] for p in res.x],
                  "estimate": list(res.x.values()), "natural": [nat[p] for p in res.x]}
                 ).to_csv(os.path.join(out, "estimates.csv"), index=False)
    res.starts.to_csv(os.path.join(out, "starts.csv"), index=False)
    summary = {"nll": res.nll, "converged": res.converged, "starts": args.starts, "seconds": res.seconds,
               "n_measurements": pb.n, "nll_nominal": pb.nll_nominal()}
    with open(os.path.join(out, "fit.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{pb.name}: best nll {res.nll:.10g} ({'converged' if res.converged else 'NOT converged'}); "
              f"wrote {out}/estimates.csv, starts.csv, fit.json")
    return 0 if res.converged else 1
