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


def run_one(name, build, starts, repeats, n_calls, max_steps=None):
    import qsp
    from qsp._fit import prepare

    model, args, kw = build(starts)
    if max_steps is not None:
        kw = dict(kw, max_steps=max_steps)
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
    steps = np.asarray(out_v[3])
    row = dict(
        workload=name if max_steps is None else f"{name}, max_steps={max_steps}", method=method,
        starts=int(U0.shape[0]), n_free=pb.n_free, max_steps=int(kw.get("max_steps", 1000)),
        vmapped_run_s=run_v, sequential_run_s=run_s, ratio=run_v / run_s,
        vmapped_compile_s=first_v - run_v, sequential_compile_s=first_s - run_s / U0.shape[0],
        vmapped_total_s=first_v, sequential_total_s=first_s + run_s - run_s / U0.shape[0],
        best_nll=float(np.nanmin(f_v)), starts_at_best=int(np.sum(np.abs(f_v - np.nanmin(f_v)) <= 1e-6 * abs(np.nanmin(f_v)) + 1e-6)),
        converged=int(np.asarray(out_v[2]).sum()),
        # Lock-step cost: the vmapped call runs max(steps) iterations for every start;
        # the loop runs sum(steps). Time per start-iteration compares the two fairly.
        steps_max=int(steps.max()), steps_median=float(np.median(steps)), steps_sum=int(steps.sum()),
        us_per_start_iteration_vmapped=1e6 * run_v / (int(steps.max()) * int(U0.shape[0])),
        us_per_start_iteration_sequential=1e6 * run_s / int(steps.sum()),
        vmapped_runs_s=t_v, sequential_runs_s=t_s,
    )
    if not n_calls:
        return row
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
    return dict(row, fit_call_all_starts_s=fit_all, fit_call_one_start_s=t_calls,
                fit_calls_extrapolated_s=per_call * int(U0.shape[0]),
                ratio_vs_fit_calls=fit_all / (per_call * int(U0.shape[0])))


def figure(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    n = rows[0]["starts"]
    panels = (
        (axes[0], "sequential_run_s", "vmapped_run_s", "ratio", f"{n} sequential fits (one compiled fn)",
         f"{n} starts, one vmapped call", "run time, s (compile excluded)"),
        (axes[1], "fit_calls_extrapolated_s", "fit_call_all_starts_s", "ratio_vs_fit_calls",
         f"{n} qsp.fit calls (extrapolated)", f"one qsp.fit(starts={n})", "end to end, s"),
    )
    for ax, seq, vm, ratio, l_seq, l_vm, ylabel in panels:
        sub = [r for r in rows if vm in r]
        x = np.arange(len(sub))
        ax.bar(x - 0.2, [r[seq] for r in sub], 0.4, label=l_seq)
        ax.bar(x + 0.2, [r[vm] for r in sub], 0.4, label=l_vm)
        for i, r in enumerate(sub):
            ax.text(i + 0.2, r[vm], f"{r[ratio]:.3f}x", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, [f"{r['workload']}\n({r['method']})" for r in sub], fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    fig.suptitle(f"qsp.fit multi-start, {n} starts (target: ratio < 0.125)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write(info, stem):
    """Results JSON, figure and markdown table from `info` (rows may come from different
    runs: each row carries the commit, time and load of the run that measured it)."""
    rows = info["results"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(info, indent=2))
    figure(rows, RESULTS / f"{stem}.png")
    m = info["machine"]
    lines = [f"# {stem}", "", f"Machine: {m['cpu_model']}, {m['cpu_count']} cores (shared); versions: "
             + ", ".join(f"{k} {v}" for k, v in m["packages"].items()), "",
             "Run times exclude compilation; the same compiled per-start function runs vmapped once or "
             "in a Python loop. Under `vmap` the optimizer's while loop runs in lock-step: every start "
             "pays max(steps) iterations, the loop pays sum(steps); the last column divides the run "
             "time by those counts. `max_steps=64` rows cap the iterations of both paths (the slowest "
             "start that converged took 41 LM steps for emax).", "",
             "| workload | optimizer | starts | vmapped run (s) | sequential run (s) | ratio | target | compile vmapped / sequential (s) | starts at best / converged | steps max / median / sum | us per start-iteration vmapped / sequential | measured (UTC), commit, load 1-min mean |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    na = "n/a"
    for r in rows:
        st = (f"{r['steps_max']} / {r['steps_median']:g} / {r['steps_sum']}" if "steps_max" in r else na)
        us = (f"{r['us_per_start_iteration_vmapped']:.1f} / {r['us_per_start_iteration_sequential']:.1f}"
              if "steps_max" in r else na)
        lines.append(f"| {r['workload']} | {r['method']} | {r['starts']} | {r['vmapped_run_s']:.3f} | "
                     f"{r['sequential_run_s']:.3f} | {r['ratio']:.4f} | < 0.125 {'met' if r['ratio'] < 0.125 else 'NOT met'} | "
                     f"{r['vmapped_compile_s']:.1f} / {r['sequential_compile_s']:.1f} | {r['starts_at_best']} / {r.get('converged', na)} | "
                     f"{st} | {us} | {r.get('run', {}).get('time_utc', na)[:16]}, {str(r.get('run', {}).get('git_commit', na))[:8]}, "
                     f"{r.get('run', {}).get('load_mean_1min', na)} |")
    lines += ["", "End to end (validation + compile + run): one `qsp.fit(..., starts=N)` call against N separate "
              "`qsp.fit(..., starts=1)` calls (median of the timed calls x N).", "",
              "| workload | one call, all starts (s) | N calls, extrapolated (s) | ratio | target |", "|---|---|---|---|---|"]
    for r in (r for r in rows if "fit_call_all_starts_s" in r):
        lines.append(f"| {r['workload']} | {r['fit_call_all_starts_s']:.1f} | {r['fit_calls_extrapolated_s']:.1f} | "
                     f"{r['ratio_vs_fit_calls']:.4f} | < 0.125 {'met' if r['ratio_vs_fit_calls'] < 0.125 else 'NOT met'} |")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 starts, 1 repeat")
    ap.add_argument("--starts", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=["emax", "pk2cmt"], default=None,
                    help="run one workload; its rows replace that workload's rows in the results file")
    ap.add_argument("--replot", action="store_true", help="redraw the figure and table from the results JSON")
    ap.add_argument("--calls", type=int, default=3, help="separate qsp.fit calls timed (scaled to all starts)")
    ap.add_argument("--capped", type=int, default=64,
                    help="also time each workload with this max_steps for both paths (0: skip)")
    args = ap.parse_args(argv)
    starts, repeats = (8, 1) if args.quick else (args.starts, args.repeats)
    stem = "fit_multistart" + ("_quick" if args.quick else "")
    path = RESULTS / f"{stem}.json"
    if args.replot:
        write(json.loads(path.read_text()), stem)
        return 0
    rows = []
    if args.only and path.exists():  # keep the other workload's rows
        rows = [r for r in json.loads(path.read_text())["results"] if r["workload"].split(",")[0] != args.only]
    for name, build in (("emax", emax_problem), ("pk2cmt", pk2cmt_problem)):
        if args.only and name != args.only:
            continue
        load = LoadSampler(every=5.0).start()
        new = [run_one(name, build, starts, repeats, args.calls)]
        if args.capped:
            new.append(run_one(name, build, starts, repeats, 0, max_steps=args.capped))
        ld, mi = load.stop(), machine_info()
        for r in new:
            r["run"] = dict(time_utc=mi["time_utc"], git_commit=mi["git_commit"], git_dirty=mi["git_dirty"],
                            load_mean_1min=ld["mean_1min"], load_max_1min=ld["max_1min"])
            print({k: v for k, v in r.items() if not isinstance(v, list)}, flush=True)
        rows += new
        write(dict(machine=mi, quick=args.quick, results=rows), stem)  # after each workload
    return 0


if __name__ == "__main__":
    sys.exit(main())
