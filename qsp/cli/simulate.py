"""`qsp simulate MODEL --data EVENTS.csv`: predictions for every observation record.

Reads a NONMEM-style event dataset (see `qsp.nonmem`), simulates every ID with the
built-in model MODEL in one batched call, and writes one CSV row per observation
record (EVID=0): ID, TIME, one column per model output, and `status` (0 = success).

Parameters: the model's defaults, then `--param NAME=VALUE` for everyone, then
covariate columns named like a parameter (e.g. a `CL` column) per ID.
Exit status: 0 on success, 1 if some ID failed to simulate (its outputs are empty and
its status says why), 2 for bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import math
import os
import sys


def add_parser(sub):
    p = sub.add_parser(
        "simulate",
        help="simulate a NONMEM-style event dataset with a built-in model",
        description=(__doc__ or "").split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="built-in model name (see `qsp models`)")
    p.add_argument("--data", required=True, metavar="EVENTS.csv", help="NONMEM-style event dataset (CSV)")
    p.add_argument(
        "--param", action="extend", nargs="+", default=[], metavar="NAME=VALUE",
        help="set a model parameter for every ID (repeatable)",
    )
    p.add_argument("--out", metavar="PRED.csv", help="write predictions here (default: stdout)")
    p.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance (default 1e-6)")
    p.add_argument("--atol", type=float, default=1e-9, help="absolute tolerance (default 1e-9)")
    p.add_argument("--max-steps", type=int, default=4096, help="solver steps per dosing interval (default 4096)")
    p.set_defaults(func=run)
    return p


def parse_params(items, model_cls) -> dict[str, float]:
    """`["CL=2", "V=30"]` -> `{"CL": 2.0, "V": 30.0}`, checked against the model."""
    from . import UserError

    known = model_cls.parameter_info()
    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UserError(f"--param {item!r}: expected NAME=VALUE, e.g. CL=1.5.")
        if name not in known:
            raise UserError(
                f"--param {item!r}: {model_cls.__name__} has no parameter {name!r}; "
                f"parameters: {', '.join(known)}."
            )
        if known[name].shape != ():
            raise UserError(
                f"--param {item!r}: {name} has shape {known[name].shape} per patient; --param sets scalar "
                "parameters only."
            )
        try:
            value = float(text)
        except ValueError:
            raise UserError(f"--param {item!r}: {text.strip()!r} is not a number; expected NAME=VALUE, e.g. {name}=1.5.") from None
        if math.isnan(value):
            raise UserError(f"--param {item!r}: NaN is not a valid value for {name}.")
        out[name] = value
    return out


def run(args) -> int:
    from . import UserError

    import qsp.models as lib

    try:
        cls = lib.get(args.model)
    except KeyError as err:
        raise UserError(err.args[0]) from None
    params = parse_params(args.param, cls)
    for flag, value in (("--rtol", args.rtol), ("--atol", args.atol), ("--max-steps", args.max_steps)):
        if not value > 0:
            raise UserError(f"{flag}={value}: expected a positive number.")
    if not os.path.isfile(args.data):
        raise UserError(f"--data {args.data}: no such file.")

    from qsp.nonmem import read_nonmem, simulate_nonmem
    from qsp import Status

    data = read_nonmem(args.data)
    model = cls().replace(**params) if params else cls()
    pred = simulate_nonmem(model, data, rtol=args.rtol, atol=args.atol, max_steps=args.max_steps)
    if args.out:
        pred.to_csv(args.out, index=False)
    else:
        pred.to_csv(sys.stdout, index=False)
    status = pred.groupby("ID", sort=False)["status"].first()
    failed = status[status != Status.SUCCESS]
    for ident, code in failed.items():
        print(f"qsp simulate: warning: ID {ident}: {Status.message(code)}", file=sys.stderr)
    return 1 if len(failed) else 0
