"""Population simulation of pk2cmt with repeated oral dosing: qsp against its peers.

    .venv/bin/python benchmarks/pk2cmt_population.py            # N = 1e2 .. 1e5
    .venv/bin/python benchmarks/pk2cmt_population.py --quick    # N = 1e2, 1e3 (smoke)

Workload: `benchmarks/_pk2cmt_peers.py` (100 mg q12h for 14 days into DEPOT, CP every
4 h, 30% CV log-normal IIV on CL, V1, Q, V2, KA; rtol 1e-6, atol 1e-9, float64).

Methods: `qsp.simulate` with its default solver (Kvaerno5 + Chord) and with
`solver=diffrax.Tsit5()`; a plain `jax.jit(jax.vmap(diffrax.diffeqsolve))` with
Kvaerno5 and Tsit5 as shipped; a `scipy.integrate.solve_ivp` loop (LSODA, BDF).

Order of work:

1. Correctness, before any timing: CP of every method on the first `check_n` patients
   against scipy LSODA at rtol 1e-10 / atol 1e-14, max relative difference < 1e-3
   (and the closed form of `tests/pk_closed_form.py` against that reference). If any
   method fails, nothing is timed and the script exits 1.
2. Timing, per N: JAX methods run in one call (N <= `chunk`) or in fixed-size chunks
   (one compile shape); compile time = first call - one steady call, reported
   separately; run time = median of repeats, each ending in `block_until_ready`.
   Repeats are interleaved across methods so load swings hit all alike. scipy times
   the first `scipy_subset` patients and scales linearly in N ("extrap."). A cell
   whose predicted time exceeds `budget_s` is extrapolated from the largest N measured.
3. Results: `benchmarks/results/<stem>.json` and `.md` with machine, load, versions.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import datetime as dt
import json
import math
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import _env
from benchmarks._pk2cmt_peers import PARAMS, Workload, closed_form_cp, naive_diffrax, scipy_cp, subset

SCHEMA_VERSION = 1
RESULTS = Path(__file__).resolve().parent / "results"
REF_TOL = dict(rtol=1e-10, atol=1e-14)
CHECK_THRESHOLD = 1e-3
METHODS = {
    "qsp_kvaerno5": "qsp.simulate, default solver (Kvaerno5 + Chord root finder)",
    "qsp_tsit5": "qsp.simulate, solver=diffrax.Tsit5()",
    "diffrax_vmap_kvaerno5": "jit(vmap(diffrax.diffeqsolve)), Kvaerno5() as shipped",
    "diffrax_vmap_tsit5": "jit(vmap(diffrax.diffeqsolve)), Tsit5()",
    "scipy_lsoda": "scipy solve_ivp LSODA, Python loop over patients",
    "scipy_bdf": "scipy solve_ivp BDF, Python loop over patients",
    # Not run by default: how much exact_save=True (a step onto every save time) costs.
    "qsp_kvaerno5_interp": "qsp.simulate, default solver, exact_save=False",
    "qsp_tsit5_interp": "qsp.simulate, solver=diffrax.Tsit5(), exact_save=False",
}
DEFAULT_METHODS = tuple(m for m in METHODS if not m.endswith("_interp"))


# -- methods --------------------------------------------------------------------------------


class JaxMethod:
    """prepare(pop) -> device args; call(args) -> device outputs; result(out) -> numpy."""

    def __init__(self, name: str, w: Workload):
        import diffrax as dfx
        import jax.numpy as jnp

        self.name, self.w = name, w
        solver = dfx.Tsit5() if "tsit5" in name else (None if name.startswith("qsp") else dfx.Kvaerno5())
        exact_save = not name.endswith("_interp")
        if name.startswith("qsp"):
            import qsp
            from qsp.models import pk2cmt

            reg = qsp.Regimen.bolus(amount=w.amount, time=0.0, cmt="DEPOT", ii=w.ii, addl=w.n_doses - 1)
            ts = jnp.asarray(w.times())
            self.prepare = lambda pop: pk2cmt(**{p: jnp.asarray(pop[p]) for p in PARAMS})
            self.call = lambda m: qsp.simulate(m, reg, ts, rtol=w.rtol, atol=w.atol, solver=solver,
                                                exact_save=exact_save)
            self.result = lambda s: (np.asarray(s.outputs["CP"]), np.asarray(s.num_steps), np.asarray(s.status) == 0)
        else:
            f = naive_diffrax(solver, w)
            self.prepare = lambda pop: tuple(jnp.asarray(pop[p]) for p in PARAMS)
            self.call = lambda args: f(*args)
            self.result = lambda out: tuple(np.asarray(x) for x in out)

    def run(self, chunks):
        import jax

        return jax.block_until_ready([self.call(c) for c in chunks])


def _pad(pop: dict, n: int) -> dict:
    """Pad to n patients by repeating the last one (fixed chunk shapes, no recompiles)."""
    have = len(pop["CL"])
    return pop if have == n else {k: np.concatenate([v, np.repeat(v[-1:], n - have)]) for k, v in pop.items()}


def _chunks(pop: dict, n: int, chunk: int) -> list[dict]:
    size = min(n, chunk)
    return [_pad(subset(pop, lo, min(lo + size, n)), size) for lo in range(0, n, size)]


def max_rel_diff(cp, ref) -> float:
    """max |cp - ref| / |ref| over patients and times; the floor 1e-12 of each patient's
    peak only guards the pre-dose t = 0, where both are exactly 0."""
    floor = 1e-12 * np.max(np.abs(ref), axis=-1, keepdims=True)
    return float(np.max(np.abs(cp - ref) / np.maximum(np.abs(ref), floor)))


# -- the benchmark -------------------------------------------------------------------------


def run_benchmark(ns, *, methods=DEFAULT_METHODS, workload: Workload | None = None, repeats: int = 3,
                  chunk: int = 1_000, scipy_subset: dict | None = None, check_n: int = 100,
                  budget_s: float = 300.0, log=print, on_progress=None) -> dict:
    """Check, then time, every method at every N; returns the results dict (see README).

    `on_progress(results)` is called with the partial results (`complete: False`) after
    each N, so a long run that is cut short still leaves its measurements behind."""
    import jax

    jax.config.update("jax_enable_x64", True)  # as `import qsp` does; the naive peers need it too
    w = workload or Workload()
    ns = sorted(int(n) for n in ns)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected some of {list(METHODS)}.")
    scipy_subset = {k: v for k, v in {"scipy_lsoda": 100, "scipy_bdf": 20, **(scipy_subset or {})}.items()
                    if k in methods}
    sampler = _env.LoadSampler().start()
    machine = _env.machine_info()
    log(f"machine: {machine['cpu_model']}, {machine['cpu_count']} cpus, load {sampler.start_load}")
    pop = w.population(ns[-1])
    jax_methods = {m: JaxMethod(m, w) for m in methods if not m.startswith("scipy")}
    first_call: dict = {}  # (method, shape) -> seconds of the first (compiling) call

    # 1. correctness
    n_c = min(check_n, ns[-1])
    sub = subset(pop, 0, n_c)
    ref, _ = scipy_cp(sub, w, "LSODA", **REF_TOL)
    checks = {"closed_form": max_rel_diff(closed_form_cp(sub, w), ref)}
    for m in methods:
        if m.startswith("scipy"):
            cp, _ = scipy_cp(sub, w, m.split("_")[1].upper(), w.rtol, w.atol)
        else:
            jm = jax_methods[m]
            args = [jm.prepare(sub)]
            t0 = _env.timer()
            out = jm.run(args)
            first_call[(m, n_c)] = (_env.timer() - t0, n_c)
            cp = jm.result(out[0])[0]
        checks[m] = max_rel_diff(cp, ref)
        log(f"check {m}: max rel diff of CP vs reference {checks[m]:.2e}")
    passed = all(np.isfinite(v) and v < CHECK_THRESHOLD for v in checks.values())
    correctness = {
        "reference": f"scipy solve_ivp LSODA rtol={REF_TOL['rtol']:g} atol={REF_TOL['atol']:g}",
        "n_patients": n_c, "output": "CP", "threshold": CHECK_THRESHOLD,
        "max_rel_diff": checks, "passed": bool(passed),
    }

    def results(complete: bool) -> dict:
        return {
            "benchmark": "pk2cmt_population", "schema_version": SCHEMA_VERSION, "complete": complete,
            "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine, "load": sampler.stop() if complete else sampler.summary(),
            "workload": w.describe(), "methods": {m: METHODS[m] for m in methods},
            "settings": {"ns": ns, "repeats": repeats, "chunk": chunk, "scipy_subset": scipy_subset,
                         "budget_s": budget_s, "timing": "median wall time of repeats, block_until_ready"},
            "correctness": correctness, "runs": list(runs),
        }

    # 2. timing
    runs: list[dict] = []
    per_patient: dict = {}  # method -> (n, seconds per patient) at the largest N measured
    for n in ns if passed else []:
        load_n = _env.load_average()
        cells = []
        for m in methods:
            cell = {"method": m, "n": n, "load_at_start": load_n, "times_s": [], "cpu_s": []}
            if m.startswith("scipy"):
                n_sub = min(n, scipy_subset[m])
                prev = next((r for r in runs if r["method"] == m and r["measured_n"] == n_sub), None)
                if prev is not None:  # the same patients were timed at a smaller N
                    cell.update(measured_n=n_sub, times_s=prev["times_s"], reused_from_n=prev["n"])
                    for k in ("cpu_s", "peak_rss_mib", "rss_increase_mib", "nfev_mean", "nfev_max"):
                        cell[k] = prev[k]
                    cell["reps"] = 0
                else:
                    cell.update(measured_n=n_sub, reps=repeats, pop=subset(pop, 0, n_sub))
            else:
                pred = per_patient[m][1] * n if m in per_patient else 0.0
                if pred > budget_s:
                    cell.update(measured_n=per_patient[m][0], reps=0, predicted_s=pred)
                else:
                    reps = repeats if pred == 0 else max(1, min(repeats, int(budget_s // pred)))
                    jm = jax_methods[m]
                    cell.update(measured_n=n, reps=reps, shape=min(n, chunk),
                                args=[jm.prepare(c) for c in _chunks(pop, n, chunk)])
                    if (m, cell["shape"]) not in first_call:  # compile on one chunk, timed
                        t0 = _env.timer()
                        jm.run(cell["args"][:1])
                        first_call[(m, cell["shape"])] = (_env.timer() - t0, n)
                        log(f"{m} N={n}: first call (compile + run) of shape {cell['shape']} "
                            f"{first_call[(m, cell['shape'])][0]:.2f} s")
            cells.append(cell)
        for r in range(max(c["reps"] for c in cells)):
            for cell in cells:
                if r >= cell["reps"]:
                    continue
                m = cell["method"]
                mem = _env.PeakMemory() if r == 0 else None
                c0, t0 = _env.cpu_seconds(), _env.timer()
                with mem or contextlib.nullcontext():
                    if m.startswith("scipy"):
                        cp, nfev = scipy_cp(cell["pop"], w, m.split("_")[1].upper(), w.rtol, w.atol)
                        cell.update(nfev_mean=float(nfev.mean()), nfev_max=int(nfev.max()))
                    else:
                        cell["out"] = jax_methods[m].run(cell["args"])
                cell["times_s"].append(_env.timer() - t0)
                cell["cpu_s"].append(_env.cpu_seconds() - c0)
                if mem is not None:
                    cell.update(peak_rss_mib=round(mem.peak_mib, 1), rss_increase_mib=round(mem.increase_mib, 1),
                                peak_rss_reset=mem.reset)
                log(f"{m} N={n} rep {r + 1}/{cell['reps']}: {cell['times_s'][-1]:.3f} s")
        for cell in cells:
            if "out" in cell:
                res = [jax_methods[cell["method"]].result(o) for o in cell.pop("out")]
                cell["steps"] = np.concatenate([r[1] for r in res])[:n]
                cell["ok"] = np.concatenate([r[2] for r in res])[:n]
            runs.append(_finish_cell(cell, first_call, per_patient))
        log(_summary_line(runs, n))
        if on_progress is not None and n != ns[-1]:
            on_progress(results(complete=False))

    return results(complete=True)


def _finish_cell(cell: dict, first_call: dict, per_patient: dict) -> dict:
    m, n = cell["method"], cell["n"]
    rec = {k: cell.get(k) for k in ("method", "n", "measured_n", "load_at_start", "peak_rss_mib",
                                    "rss_increase_mib", "nfev_mean", "nfev_max", "reused_from_n")}
    rec["times_s"] = [round(t, 4) for t in cell["times_s"]]
    rec["cpu_s"] = [round(t, 3) for t in cell["cpu_s"]]
    rec["repeats"] = len(cell["times_s"])
    if not cell["times_s"]:  # over budget: scale the largest measured N linearly
        n0, spp = per_patient[m]
        rec.update(wall_s=spp * n, extrapolated=True, measured_n=n0, predicted_s=cell.get("predicted_s"))
    else:
        med, mn = statistics.median(cell["times_s"]), cell["measured_n"]
        rec.update(wall_s=med * n / mn, extrapolated=mn < n)
        per_patient[m] = (mn, med / mn)
    if "steps" in cell:  # JAX: steps and failures of the last repeat, over all N patients
        steps, ok = cell["steps"], cell["ok"]
        rec.update(steps_mean=round(float(steps.mean()), 1), steps_max=int(steps.max()),
                   failures=int((~ok).sum()))
        shape = cell["shape"]
        n_chunks = math.ceil(n / shape)
        steady = statistics.median(cell["times_s"]) / n_chunks  # one chunk, compiled
        first, first_n = first_call[(m, shape)]
        rec.update(chunk=shape, n_chunks=n_chunks, first_call_s=round(first, 3),
                   compile_s=round(max(first - steady, 0.0), 3), compiled_at_n=first_n)
    rec["wall_s"] = round(rec["wall_s"], 4)
    rec["patients_per_s"] = round(n / rec["wall_s"], 2)
    return rec


def _summary_line(runs: list, n: int) -> str:
    cells = [r for r in runs if r["n"] == n]
    return f"N={n}: " + ", ".join(
        f"{r['method']} {r['patients_per_s']:.4g}/s" + (" (extrap.)" if r["extrapolated"] else "") for r in cells)


# -- output ---------------------------------------------------------------------------------


def _fmt_wall(r: dict) -> str:
    s = f"{r['wall_s']:.3g} s"
    if r["extrapolated"]:
        return f"~{s} (extrap. from N={r['measured_n']})"
    return s


def under_load(res: dict) -> bool:
    """Another workload was running: runnable processes beyond ours (about one core's
    worth of XLA threads) before we started, or more runnable processes than cores."""
    cpus = res["machine"]["cpu_affinity"] or res["machine"]["cpu_count"] or 1
    load = res["load"]
    return load["start"][0] > 0.5 or load["max_1min"] > cpus + 0.5


def to_markdown(res: dict) -> str:
    m, w, load, chk = res["machine"], res["workload"], res["load"], res["correctness"]
    pk = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    lines = [
        f"# pk2cmt population benchmark ({m.get('jax_backend', 'cpu')})",
        "",
        f"Generated by `benchmarks/pk2cmt_population.py` on {res['created_utc']}, "
        f"git {str(m['git_commit'])[:10]}{' (dirty tree)' if m['git_dirty'] else ''}.",
        "",
        f"- Machine: {m['cpu_model']}, {m['cpu_count']} CPUs ({m['cpu_affinity']} usable), "
        f"{m['ram_gib']} GiB RAM, {m['os']}, Python {m['python']}.",
        f"- Packages: {pk}.",
        f"- Load average (1/5/15 min): {load['start']} at start, {load['end']} at end; 1-min max "
        f"{load['max_1min']}, mean {load['mean_1min']} over {load['n_samples']} samples.",
    ]
    if not res.get("complete", True):
        lines.append(f"- **Incomplete run**: written after N={max(r['n'] for r in res['runs']):,} of "
                     f"{res['settings']['ns']}.")
    if under_load(res):
        lines.append("- **Timings were taken under load** (a shared machine with other jobs running): "
                     "absolute numbers are pessimistic and noisy; repeats are interleaved across methods, "
                     "so ratios within one N are fairer than absolute times.")
    lines += [
        f"- Workload: {w['model']}, {w['amount']:g} mg into {w['dose_cmt']} every {w['ii']:g} h x "
        f"{w['n_doses']} doses, CP every {w['obs_every']:g} h to {w['horizon_h']:g} h ({w['n_obs']} "
        f"observations), {w['iiv']} ({100 * w['cv']:g}% CV), seed {w['seed']}; rtol {w['rtol']:g}, "
        f"atol {w['atol']:g}, float64.",
        f"- Timing: {res['settings']['timing']} (repeats {res['settings']['repeats']}, interleaved); "
        f"JAX chunk size {res['settings']['chunk']}; scipy times the first "
        + ", ".join(f"{v} ({k})" for k, v in res["settings"]["scipy_subset"].items())
        + " patients and scales linearly (extrap.); cells predicted above "
        f"{res['settings']['budget_s']:g} s are scaled from the largest N measured (extrap.).",
        "",
        f"## Correctness (before timing): CP vs {chk['reference']}, first {chk['n_patients']} patients",
        "",
        "| method | max relative difference |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v:.2e} |" for k, v in chk["max_rel_diff"].items()]
    lines += ["", f"Threshold {chk['threshold']:g}: {'passed' if chk['passed'] else '**FAILED** (nothing timed)'}.", ""]
    runs = res["runs"]
    if not runs:
        return "\n".join(lines) + "\n"
    ns = sorted({r["n"] for r in runs})
    methods = list(res["methods"])
    by = {(r["method"], r["n"]): r for r in runs}
    lines += ["## Wall time and patients/s", "", "| method | " + " | ".join(f"N={n:,}" for n in ns) + " |",
              "|---|" + "---:|" * len(ns)]
    for meth in methods:
        row = [f"{_fmt_wall(by[meth, n])}, {by[meth, n]['patients_per_s']:.4g}/s" for n in ns]
        lines.append(f"| {meth} | " + " | ".join(row) + " |")
    if "scipy_lsoda" in methods:
        lines += ["", "Speed-up over the scipy LSODA loop (wall-time ratio):", "",
                  "| method | " + " | ".join(f"N={n:,}" for n in ns) + " |", "|---|" + "---:|" * len(ns)]
        for meth in methods:
            row = [f"{by['scipy_lsoda', n]['wall_s'] / by[meth, n]['wall_s']:.3g}" for n in ns]
            lines.append(f"| {meth} | " + " | ".join(row) + " |")
    lines += ["", "## Details", "",
              "| method | N | wall (median) | repeats | compile s | steps mean / max | RHS evals mean | "
              "failures | peak RSS MiB (+increase) | CPU/wall |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        comp = "" if r.get("compile_s") is None else f"{r['compile_s']:.2f}" + (
            "" if r["compiled_at_n"] == r["n"] else f" (shape of N={r['compiled_at_n']})")
        steps = f"{r['steps_mean']:.0f} / {r['steps_max']}" if r.get("steps_mean") is not None else ""
        nfev = f"{r['nfev_mean']:.0f}" if r.get("nfev_mean") is not None else ""
        mem = f"{r['peak_rss_mib']:.0f} (+{r['rss_increase_mib']:.0f})" if r.get("peak_rss_mib") is not None else ""
        cpu = (f"{statistics.median(c / t for c, t in zip(r['cpu_s'], r['times_s'])):.2f}"
               if r["times_s"] and not r.get("reused_from_n") else "")
        reps = f"{r['repeats']}" + (f" (N={r['reused_from_n']} run)" if r.get("reused_from_n") else "")
        lines.append(f"| {r['method']} | {r['n']:,} | {_fmt_wall(r)} | {reps} | {comp} | {steps} | "
                     f"{nfev} | {r.get('failures', '')} | {mem} | {cpu} |")
    lines += ["", "Steps: qsp = `Solution.num_steps`; diffrax = `stats['num_steps']` summed over dosing "
              "intervals (accepted + rejected; under vmap every patient in a batch waits for the slowest). "
              "scipy reports RHS evaluations instead. Memory: peak resident set of the process during the "
              "first timed repeat (high-water mark reset before it), and its increase over the start.",
              "", "Methods: " + "; ".join(f"`{k}`: {v}" for k, v in res["methods"].items()) + ".",
              "", "How it is measured: `benchmarks/README.md`; analysis and findings: `benchmarks/NOTES.md`."]
    return "\n".join(lines) + "\n"


def write_results(res: dict, stem: str, out_dir: Path = RESULTS) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    jp, mp = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    jp.write_text(json.dumps(res, indent=1) + "\n")
    mp.write_text(to_markdown(res))
    return jp, mp


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N = 1e2 and 1e3 only (smoke run)")
    ap.add_argument("--max-n", type=float, default=None, help="largest N (default 1e5; 1e3 with --quick)")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                    help="comma-separated, from: " + ", ".join(METHODS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=1_000,
                    help="JAX batch size; larger N runs in fixed chunks (one batch of 10,000 hung, NOTES.md)")
    ap.add_argument("--budget-s", type=float, default=300.0, help="extrapolate cells predicted above this")
    ap.add_argument("--scipy-lsoda-n", type=int, default=100, help="patients timed for scipy LSODA")
    ap.add_argument("--scipy-bdf-n", type=int, default=20, help="patients timed for scipy BDF")
    ap.add_argument("--obs-every", type=float, default=4.0, help="hours between CP observations")
    ap.add_argument("--check-n", type=int, default=100, help="patients in the correctness check")
    ap.add_argument("--stem", default=None, help="results file name without extension")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    max_n = int(args.max_n or (1_000 if args.quick else 100_000))
    ns = [n for n in (100, 1_000, 10_000, 100_000, 1_000_000) if n <= max_n] or [max_n]
    import jax

    stem = args.stem or f"pk2cmt_population_{jax.default_backend()}" + ("_quick" if args.quick else "")
    res = run_benchmark(
        ns, methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        workload=Workload(obs_every=args.obs_every), repeats=args.repeats, chunk=args.chunk,
        scipy_subset={"scipy_lsoda": args.scipy_lsoda_n, "scipy_bdf": args.scipy_bdf_n},
        budget_s=args.budget_s, check_n=args.check_n,
        log=functools.partial(print, flush=True),
        on_progress=lambda partial: write_results(partial, stem, args.out_dir),
    )
    for p in write_results(res, stem, args.out_dir):
        print(f"wrote {p}")
    return 0 if res["correctness"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
