"""`qsp fit MODEL --data DATA.csv --free A,B`: estimate parameters of a built-in model.

DATA is either a PEtab-style measurement table (observableId, simulationConditionId,
time, measurement, optional noiseParameters / lloq / censored / weight), with
`--conditions COND.csv` for per-condition parameters or initial states, or a
NONMEM-style dataset (ID, TIME, AMT, DV, ...; one regimen per ID, BLQ/LLOQ columns
for M3) with `--observable` naming the model output DV measures.

Writes to --out (default `fit_<MODEL>`): `estimates.csv` and `estimates.json`
(estimate, SE, relative SE, Wald 95% CI, and the profile-likelihood 95% CI with
--profile), `predictions.csv` (prediction, SD and weighted residual per row), `starts.csv`
(every start's optimum) and the figures `obs_vs_pred.png`, `residuals.png`, `vpc.png`
(and `profiles.png`). Exit status: 0 on success, 1 if the best start did not
converge, 2 for bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import math
import os


def add_parser(sub):
    p = sub.add_parser(
        "fit",
        help="fit a built-in model to data (PEtab-style tables or a NONMEM dataset)",
        description=(__doc__ or "").split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="built-in model name (see `qsp models`)")
    p.add_argument("--data", required=True, metavar="DATA.csv", help="measurement table or NONMEM dataset")
    p.add_argument("--conditions", metavar="COND.csv", help="PEtab-style condition table")
    p.add_argument("--free", required=True, metavar="A,B", help="comma-separated parameters to estimate")
    p.add_argument("--error", default="additive", help="additive | proportional | combined | lognormal "
                   "(or OBS=KIND,OBS=KIND per observable); default additive")
    p.add_argument("--starts", type=int, default=1, help="number of starts (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the Latin hypercube of starts")
    p.add_argument("--observable", help="model output measured by DV (NONMEM datasets)")
    p.add_argument("--param", action="extend", nargs="+", default=[], metavar="NAME=VALUE",
                   help="set a model parameter (initial value of a free one) (repeatable)")
    p.add_argument("--fix", action="extend", nargs="+", default=[], metavar="NAME=VALUE",
                   help="fix a data-introduced parameter, e.g. an error SD sigma_CP=0.1 (repeatable)")
    p.add_argument("--optimizer", default="auto", help="auto | lm | bfgs | adam | lbfgs")
    p.add_argument("--profile", action="store_true", help="also compute profile-likelihood intervals")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    p.add_argument("--out", metavar="DIR", help="output directory (default fit_<MODEL>)")
    p.set_defaults(func=run)
    return p


def _error_arg(text: str):
    from . import UserError

    if "=" not in text:
        return text
    out = {}
    for item in text.split(","):
        obs, sep, kind = item.partition("=")
        if not sep:
            raise UserError(f"--error {text!r}: expected KIND or OBS=KIND,OBS=KIND.")
        out[obs.strip()] = kind.strip()
    return out


def _fixed(items) -> dict:
    from . import UserError

    out = {}
    for item in items:
        name, sep, val = item.partition("=")
        try:
            out[name.strip()] = float(val)
        except ValueError:
            raise UserError(f"--fix {item!r}: expected NAME=VALUE with a number.") from None
        if not sep:
            raise UserError(f"--fix {item!r}: expected NAME=VALUE.")
    return out


def _clean(x):
    return None if isinstance(x, float) and not math.isfinite(x) else x


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import qsp
    import qsp.models as lib
    from qsp._diagnostics import plot_obs_vs_pred, plot_profiles, plot_residuals, plot_vpc
    from qsp._profile import profile

    from . import UserError
    from .simulate import parse_params

    try:
        cls = lib.get(args.model)
    except KeyError as e:
        raise UserError(e.args[0]) from None
    if not os.path.exists(args.data):
        raise UserError(f"--data {args.data!r}: no such file.")
    free = [f.strip() for f in args.free.split(",") if f.strip()]
    if not free:
        raise UserError("--free: expected at least one parameter name, e.g. --free CL,V.")
    model = cls().replace(**parse_params(args.param, cls)) if args.param else cls()
    res = qsp.fit(model, args.data, args.conditions, free=free, error=_error_arg(args.error),
                  starts=args.starts, seed=args.seed, observable=args.observable,
                  fixed=_fixed(args.fix) or None, optimizer=args.optimizer)
    out = args.out or f"fit_{args.model}"
    os.makedirs(out, exist_ok=True)
    table = res.summary()
    profiles = profile(res) if args.profile else {}
    if profiles:
        table["profile_ci_lower"] = [profiles[p].ci[0] for p in table["parameter"]]
        table["profile_ci_upper"] = [profiles[p].ci[1] for p in table["parameter"]]
    table.to_csv(os.path.join(out, "estimates.csv"), index=False)
    res.predictions().to_csv(os.path.join(out, "predictions.csv"), index=False)
    res.starts.to_csv(os.path.join(out, "starts.csv"), index=False)
    record = dict(
        model=args.model, data=os.path.abspath(args.data), free=res.free, optimizer=res.optimizer,
        nll=res.nll, aic=res.aic, bic=res.bic, n_obs=res.n_obs, converged=res.converged,
        starts=int(len(res.starts)), starts_at_best=res.n_at_best, hessian_ok=res.hessian_ok,
        parameters={r["parameter"]: {k: _clean(v) for k, v in r.items() if k != "parameter"}
                    for r in table.to_dict("records")},
        correlation={p: {q: _clean(float(res.corr[i, j])) for j, q in enumerate(res.free)}
                     for i, p in enumerate(res.free)},
    )
    with open(os.path.join(out, "estimates.json"), "w") as fh:
        json.dump(record, fh, indent=2)
    if not args.no_figures:
        figs = {"obs_vs_pred": plot_obs_vs_pred(res), "residuals": plot_residuals(res), "vpc": plot_vpc(res)}
        if profiles:
            figs["profiles"] = plot_profiles(profiles)
        for name, fig in figs.items():
            fig.savefig(os.path.join(out, f"{name}.png"), dpi=110)
            plt.close(fig)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    print(f"nll {res.nll:.6g}  optimizer {res.optimizer}  converged {res.converged}  "
          f"starts at best {res.n_at_best}/{len(res.starts)}  -> {out}/")
    return 0 if res.converged else 1
