"""`qsp` with no command: the main job on built-in defaults.

The main job is the mosunetuzumab CRS virtual trial (`qsp trial crs`) on its defaults
(1000 patients, seed 0, 4 cycles, regimens flat 20 mg, 1.6/20 and label), written to
`qsp-out/`, with the native backend when a C compiler is found (`qsp trial crs
--backend`; benchmarks/results/crs_trial_cpu*.md for times). `--n` makes it smaller.
"""

from __future__ import annotations

MAIN_N = 1000


def add_parser(sub):
    p = sub.add_parser("main", help="the main job on built-in defaults (what `qsp` alone runs): "
                       f"the CRS trial, {MAIN_N} patients")
    p.add_argument("--out", default="qsp-out", help="output directory (default: qsp-out)")
    p.add_argument("--n", type=int, default=MAIN_N, help=f"virtual patients (default {MAIN_N})")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from .trial import crs_job

    if args.n < 1:
        from . import UserError

        raise UserError(f"--n {args.n}: expected a positive number of patients.")
    return crs_job(n=args.n, regimens=["20", "1.6/20", "label"], cycles=4, seed=0,
                   chunk=min(args.n, 50), out=args.out)
