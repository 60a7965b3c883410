"""`qsp trial`: virtual trials of the built-in models.

`qsp trial crs` runs the mosunetuzumab CRS trial (Hosseini 2020 model,
`qsp.models.tce`): the default NHL virtual population under each regimen, one row per
regimen printed and written to DIR/summary.csv, with DIR/patients.csv and
DIR/il6_by_regimen.png.
"""

from __future__ import annotations

import os

from . import UserError

CRS_HELP = """\
Regimen notation: 'label' is the approved mosunetuzumab schedule, 1/2/60 mg on
C1D1/D8/D15, 60 mg C2D1, 30 mg from C3D1. Otherwise D1[/D8[/D15]][:M] gives the
cycle-1 doses in mg on days 1, 8 and 15 (as many as written) and the dose M on day 1
of every later 21-day cycle (M defaults to the last cycle-1 dose): '20', '1.6/20',
'6.7/6.7/6.7:20', '1.6/10/10:20', '0.4'. Infusions last 4 h in cycle 1, 2 h later.

CRS grades come from a logistic link on the largest cycle-1 IL-6 peak that is ours
(not Hosseini's), calibrated to the label's 39% any-grade incidence.
"""


def add_parser(sub):
    import argparse

    p = sub.add_parser("trial", help="virtual trials (crs: mosunetuzumab CRS and response)")
    tsub = p.add_subparsers(dest="trial", metavar="TRIAL")
    c = tsub.add_parser("crs", help="mosunetuzumab step-up dosing: CRS incidence, IL-6, response",
                        description="Simulate the default NHL virtual population (Hosseini 2020 model) "
                        "under mosunetuzumab regimens.", epilog=CRS_HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--n", type=int, default=1000, help="number of virtual patients (default 1000)")
    c.add_argument("--regimens", default="20,1.6/20,label",
                   help="comma-separated regimens (default '20,1.6/20,label'; notation below)")
    c.add_argument("--cycles", type=int, default=4, help="21-day cycles to simulate (default 4)")
    c.add_argument("--seed", type=int, default=0, help="population seed (default 0)")
    c.add_argument("--chunk", type=int, default=50, help="patients per vmapped batch (default 50; the solver steps a batch in lockstep, so small batches lose less to hard patients)")
    c.add_argument("--workers", type=int, default=None,
                   help="processes (jax backend) or threads (native) sharing the patients (default: one "
                   "per available CPU core, at most one per chunk; 1 runs everything in this thread)")
    c.add_argument("--backend", choices=("auto", "native", "jax"), default="auto",
                   help="native: each patient solved in C generated from the model (needs a C compiler; "
                   "several times faster); jax: the vmapped diffrax solve; auto (default): native when a "
                   "C compiler is found, else jax")
    c.add_argument("--method", choices=("rodas4", "bdf"), default="rodas4",
                   help="native backend's solver: rodas4 (default) or bdf (about twice as fast on this "
                   "model, LSODA's accuracy at the same tolerance; benchmarks/NOTES.md section 21)")
    c.add_argument("--out", default="qsp-out", help="output directory (default qsp-out)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=run_crs)
    from qsp.models.mapk import job as mapk_job  # `qsp trial mapk` (Kirouac 2017)

    mapk_job.add_parser(tsub, UserError)
    from qsp.models.clonal.cli import add_parser as add_clonal  # `qsp trial clonal` (Poels 2021)

    add_clonal(tsub)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    return p


def run_crs(args) -> int:
    if args.n < 1:
        raise UserError(f"--n {args.n}: expected a positive number of patients.")
    if args.cycles < 1:
        raise UserError(f"--cycles {args.cycles}: expected an integer >= 1.")
    if args.chunk < 1:
        raise UserError(f"--chunk {args.chunk}: expected a positive integer.")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers}: expected a positive number of processes.")
    specs = [s.strip() for s in str(args.regimens).split(",") if s.strip()]
    if not specs:
        raise UserError(f"--regimens {args.regimens!r}: expected e.g. '20,1.6/20,label'.")
    from qsp.models.tce import regimens as R, trial

    for s in specs:  # fail on notation before any compile
        try:
            R.parse(s, args.cycles)
        except ValueError as err:
            raise UserError(str(err)) from None
    if args.method != "rodas4" and args.backend == "jax":
        raise UserError(f"--method {args.method} is a method of the native backend; drop --backend jax "
                        "or --method.")
    return crs_job(n=args.n, regimens=specs, cycles=args.cycles, seed=args.seed, chunk=args.chunk,
                   out=args.out, progress=not args.no_progress, workers=args.workers, backend=args.backend,
                   method=args.method)


def default_workers(n: int, chunk: int) -> int:
    """One process per available CPU core, at most one per chunk."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, -(-n // max(1, chunk))))


def resolve_backend(backend: str) -> str:
    """'auto' -> 'native' when a C compiler is on PATH (`$CC` or `cc`), else 'jax'."""
    if backend != "auto":
        return backend
    import shutil

    return "native" if shutil.which(os.environ.get("CC", "cc")) else "jax"


def crs_job(n, regimens, cycles, seed, chunk, out, progress=True, workers=None, backend="auto",
            method="rodas4") -> int:
    """Run the CRS trial and write summary.csv, patients.csv and il6_by_regimen.png."""
    import time

    import pandas as pd

    from qsp.models.tce import trial

    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    workers = default_workers(n, chunk) if workers is None else workers
    chosen = resolve_backend(backend)

    def run(be):
        unit = ("thread", "threads") if be == "native" else ("worker process", "worker processes")
        how = f"{be} backend" + (f" ({method})" if be == "native" else "")
        print(f"qsp trial crs: {n} virtual NHL patients (seed {seed}), {cycles} cycles, "
              f"regimens {', '.join(regimens)}, {how}, {workers} {unit[workers > 1]}", flush=True)
        return trial.run(n=n, regimens=regimens, cycles=cycles, seed=seed, chunk=chunk, progress=progress,
                         workers=workers, backend=be, method=method if be == "native" else "rodas4")

    try:
        summary, patients, curves = run(chosen)
    except (RuntimeError, NotImplementedError) as err:
        # 'auto' promised a result whatever the machine: a compiler that is present but
        # fails (or a model the generator cannot express) falls back to the JAX backend.
        if chosen != "native":
            raise
        if backend != "auto":
            raise UserError(f"--backend native: {err} (or use --backend jax)") from None
        print(f"qsp trial crs: the native backend is unavailable here ({str(err).splitlines()[0]}); "
              "using the JAX backend.", flush=True)
        summary, patients, curves = run("jax")
    summary.to_csv(os.path.join(out, "summary.csv"), index=False)
    patients.to_csv(os.path.join(out, "patients.csv"), index=False)
    trial.plot(curves, os.path.join(out, "il6_by_regimen.png"))
    cols = ["regimen", "n", "il6_first_peak_p50", "il6_first_peak_p95", "il6_later_peak_p50",
            "p_crs_ge1", "p_crs_ge2", "bcell_depleted_d1", "frac_shrink50_d84"]
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.3g}".format):
        print(summary[cols].to_string(index=False))
    failed = int(summary["n_failed"].sum())
    if failed:
        print(f"warning: {failed} patient simulations failed (status != 0 in patients.csv); "
              "they are left out of the summary.")
    print(f"wrote {out}/summary.csv, patients.csv, il6_by_regimen.png "
          f"({time.perf_counter() - t0:.0f} s)")
    return 0
