"""Multi-start fitting: 64 starts in one vmapped call vs 64 sequential fits (issue 3, item 5).

    .venv/bin/python benchmarks/fit_multistart.py            # both workloads, 64 starts
    .venv/bin/python benchmarks/fit_multistart.py --quick    # 8 starts (smoke)

Workloads (data ours, simulated with a fixed seed):

- `emax`: sigmoid Emax (`qsp._algebraic.Emax`), 7 concentrations x 3 replicates,
  free E0, Emax, EC50, h and the additive sigma (Levenberg-Marquardt, NLS).
- `pk2cmt`: `qsp.models.pk2cmt`, IV bolus 100 mg, 12 times x 4 replicates, 20%
  log-normal noise, free CL, V1, Q, V2 and sigma (Levenberg-Marquardt on log
  residuals, `diffrax.Tsit5`, rtol 1e-8).

Both paths run the *same* per-start function `solve_one` that `qsp.fit` builds
(`qsp._fit.prepare`): vmapped = `jax.jit(jax.vmap(solve_one))(U0)` once;
sequential = `jax.jit(solve_one)` called once per start. Compile time (first call
minus a steady call) is reported separately from run time (median of `--repeats`
steady calls, each ending in `block_until_ready`). Both paths must find the same
optimum per start (NLL agreement 1e-6 relative) before any time is reported.

Also end to end: one `qsp.fit(..., starts=64)` call against 64 separate
`qsp.fit(..., starts=1)` calls (each validating and compiling; `--calls` of them timed,
scaled to 64).

Results: `benchmarks/results/fit_multistart.{json,md,png}` with machine and load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from benchmarks._env import LoadSampler, machine_info, timer

RESULTS = Path(__file__).resolve().parent / "results"


def emax_problem(starts):
    from qsp._algebraic import Emax

    rng = np.random.default_rng(0)
    C = np.repeat([0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0], 3)
    ids = [f"w{i}" for i in range(C.size)]
    E = 1.0 - 0.8 * C**1.5 / (2.0**1.5 + C**1.5)
    meas = pd.DataFrame(dict(observableId="E", simulationConditionId=ids, time=0.0,
                             measurement=E + rng.normal(0, 0.03, C.size)))
    cond = pd.DataFrame(dict(conditionId=ids, C=C))
    return Emax(E0=0.5, Emax=-0.5, EC50=1.0, h=1.0), (meas, cond), dict(
        free=["E0", "Emax", "EC50", "h"], starts=starts)


def pk2cmt_problem(starts):
    import diffrax as dfx

    import qsp
    from qsp.models import pk2cmt

    rng = np.random.default_rng(0)
    ts = np.array([0.25, 0.5, 1, 2, 4, 8, 12, 24, 36, 48, 72, 96])
    reg = qsp.Regimen.bolus(100.0, 0.0, "CENT")
    cp = np.asarray(qsp.simulate(pk2cmt(CL=2.0, V1=10.0, Q=3.0, V2=30.0), reg, ts,
                                 rtol=1e-10, atol=1e-12).outputs["CP"])
    rows = [dict(observableId="CP", simulationConditionId="iv", time=t, measurement=v)
            for _ in range(4) for t, v in zip(ts, cp * np.exp(rng.normal(0, 0.2, ts.size)))]
    return pk2cmt(CL=1.0, V1=20.0, Q=1.5, V2=15.0), (pd.DataFrame(rows),), dict(
        regimens={"iv": reg}, free=["CL", "V1", "Q", "V2"], error="lognormal", starts=starts,
        simulate_kwargs=dict(solver=dfx.Tsit5(), rtol=1e-8, atol=1e-10))


def run_one(name, build, starts, repeats, n_calls):
    import qsp
    from qsp._fit import prepare

    model, args, kw = build(starts)
    pb, method, solve_one, U0 = prepare(model, *args, **kw)
    vm = jax.jit(jax.vmap(solve_one))
    sq = jax.jit(solve_one)

    t0 = timer()
    out_v = jax.block_until_ready(vm(U0))
    first_v = timer() - t0
    t0 = timer()
    jax.block_until_ready(sq(U0[0]))
    first_s = timer() - t0

    def sequential():
        return [jax.block_until_ready(sq(u)) for u in U0]

    out_s = sequential()
    # Correctness before timing: the same optimum per start.
    f_v = np.asarray(out_v[1])
    f_s = np.array([float(o[1]) for o in out_s])
    ok = np.isfinite(f_v) & np.isfinite(f_s)
    agree = np.abs(f_v - f_s) <= 1e-6 * np.abs(f_s) + 1e-8
    if not agree[ok].all():
        raise SystemExit(f"{name}: vmapped and sequential fits disagree on start(s) {np.flatnonzero(~agree)}")

    t_v, t_s = [], []
    for _ in range(repeats):  # interleaved, so load swings hit both alike
        t0 = timer()
        jax.block_until_ready(vm(U0))
        t_v.append(timer() - t0)
        t0 = timer()
        sequential()
        t_s.append(timer() - t0)
    run_v, run_s = statistics.median(t_v), statistics.median(t_s)

    # What a user without vmapped starts would do: one qsp.fit call per start (each call
    # validates, builds and compiles its own objective). Timed on `n_calls` starts and
    # scaled to all starts; against it, one qsp.fit call with every start.
    theta0 = np.asarray(jax.vmap(pb.natural)(U0))
    t_calls = []
    for i in range(n_calls):
        one = dict(kw, starts=1, initial=dict(zip(pb.free, map(float, theta0[i]))))
        t0 = timer()
        qsp.fit(model, *args, **one)
        t_calls.append(timer() - t0)
    t0 = timer()
    qsp.fit(model, *args, **kw)
    fit_all = timer() - t0
    per_call = statistics.median(t_calls)
    return dict(
        workload=name, method=method, starts=int(U0.shape[0]), n_free=pb.n_free,
        vmapped_run_s=run_v, sequential_run_s=run_s, ratio=run_v / run_s,
        vmapped_compile_s=first_v - run_v, sequential_compile_s=first_s - run_s / U0.shape[0],
        vmapped_total_s=first_v, sequential_total_s=first_s + run_s - run_s / U0.shape[0],
        best_nll=float(np.nanmin(f_v)), starts_at_best=int(np.sum(np.abs(f_v - np.nanmin(f_v)) <= 1e-6 * abs(np.nanmin(f_v)) + 1e-6)),
        vmapped_runs_s=t_v, sequential_runs_s=t_s,
        fit_call_all_starts_s=fit_all, fit_call_one_start_s=t_calls,
        fit_calls_extrapolated_s=per_call * int(U0.shape[0]),
        ratio_vs_fit_calls=fit_all / (per_call * int(U0.shape[0])),
    )


def figure(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    x = np.arange(len(rows))
    n = rows[0]["starts"]
    panels = (
        (axes[0], "sequential_run_s", "vmapped_run_s", "ratio", f"{n} sequential fits (one compiled fn)",
         f"{n} starts, one vmapped call", "run time, s (compile excluded)"),
        (axes[1], "fit_calls_extrapolated_s", "fit_call_all_starts_s", "ratio_vs_fit_calls",
         f"{n} qsp.fit calls (extrapolated)", f"one qsp.fit(starts={n})", "end to end, s"),
    )
    for ax, seq, vm, ratio, l_seq, l_vm, ylabel in panels:
        ax.bar(x - 0.2, [r[seq] for r in rows], 0.4, label=l_seq)
        ax.bar(x + 0.2, [r[vm] for r in rows], 0.4, label=l_vm)
        for i, r in enumerate(rows):
            ax.text(i + 0.2, r[vm], f"{r[ratio]:.3f}x", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, [f"{r['workload']} ({r['method']})" for r in rows])
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    fig.suptitle(f"qsp.fit multi-start, {n} starts (target: ratio < 0.125)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 starts, 1 repeat")
    ap.add_argument("--starts", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=["emax", "pk2cmt"], default=None)
    ap.add_argument("--replot", action="store_true", help="redraw the figure from the results JSON")
    ap.add_argument("--calls", type=int, default=3, help="separate qsp.fit calls timed (scaled to all starts)")
    args = ap.parse_args(argv)
    starts, repeats = (8, 1) if args.quick else (args.starts, args.repeats)
    if args.replot:
        stem = "fit_multistart" + ("_quick" if args.quick else "")
        figure(json.loads((RESULTS / f"{stem}.json").read_text())["results"], RESULTS / f"{stem}.png")
        return 0
    load = LoadSampler(every=5.0).start()
    rows = []
    for name, build in (("emax", emax_problem), ("pk2cmt", pk2cmt_problem)):
        if args.only and name != args.only:
            continue
        r = run_one(name, build, starts, repeats, args.calls)
        print(f"{name}: vmapped {r['vmapped_run_s']:.3f} s, sequential {r['sequential_run_s']:.3f} s, "
              f"ratio {r['ratio']:.4f} (target < 1/8), compile {r['vmapped_compile_s']:.1f} s / "
              f"{r['sequential_compile_s']:.1f} s; one qsp.fit with all starts {r['fit_call_all_starts_s']:.1f} s vs "
              f"{r['starts']} qsp.fit calls {r['fit_calls_extrapolated_s']:.1f} s (ratio {r['ratio_vs_fit_calls']:.4f})",
              flush=True)
        rows.append(r)
    info = dict(machine=machine_info(), load=load.stop(), quick=args.quick, results=rows)
    stem = "fit_multistart" + ("_quick" if args.quick else "")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(info, indent=2))
    figure(rows, RESULTS / f"{stem}.png")
    lines = [f"# {stem}", "", f"Machine: {info['machine']['cpu_model']}, {info['machine']['cpu_count']} cores; "
             f"load (1 min) mean {info['load']['mean_1min']}, max {info['load']['max_1min']}; "
             f"commit {info['machine']['git_commit']}", "",
             "Run times exclude compilation; the same compiled per-start function runs vmapped once or "
             "in a Python loop.", "",
             "| workload | optimizer | starts | vmapped run (s) | sequential run (s) | ratio | target | compile vmapped / sequential (s) | starts at best |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['method']} | {r['starts']} | {r['vmapped_run_s']:.3f} | "
                     f"{r['sequential_run_s']:.3f} | {r['ratio']:.4f} | < 0.125 {'met' if r['ratio'] < 0.125 else 'NOT met'} | "
                     f"{r['vmapped_compile_s']:.1f} / {r['sequential_compile_s']:.1f} | {r['starts_at_best']} |")
    lines += ["", "End to end (validation + compile + run): one `qsp.fit(..., starts=N)` call against N separate "
              "`qsp.fit(..., starts=1)` calls (median of the timed calls x N).", "",
              "| workload | one call, all starts (s) | N calls, extrapolated (s) | ratio | target |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['fit_call_all_starts_s']:.1f} | {r['fit_calls_extrapolated_s']:.1f} | "
                     f"{r['ratio_vs_fit_calls']:.4f} | < 0.125 {'met' if r['ratio_vs_fit_calls'] < 0.125 else 'NOT met'} |")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
