"""The floor of a stiff population solve on this machine, and how far the native
backend is from it (issue 8: "a path to within 3x of the floor").

```bash
PYTHONPATH=. .venv/bin/python benchmarks/floor.py --workload crs
```

The floor counts the work LSODA does per patient (its right-hand sides, Jacobians and
LU factorisations: `solve_ivp`'s `nfev`, `njev`, `nlu` over the dosing segments of
`population_suite.py`'s case, rtol 1e-6 / atol 1e-9) at the cost of *our* generated C
for the same model on this CPU, timed in a C harness (`qsp_rhs`, `qsp_jac`, the
straight-line sparse LU `qsp_sfactor` and one solve `qsp_ssolve` per RHS, as each of
LSODA's Newton iterations makes):

    floor per patient = nfev (t_rhs + t_solve) + njev t_jac + nlu t_lu,

with nothing for the step logic, the interpolation or the Python around it. Then the
native backend (`solver=None`: Rodas4; `solver="bdf"`) on the same patients, one
thread, CPU seconds per patient, as a multiple of that floor. Writes
`results/floor_<workload>_cpu.json` and `.md`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import _env

RESULTS = Path(__file__).resolve().parent / "results"

# Each timed call perturbs its input so the compiler cannot hoist it out of the loop.
_HARNESS = r"""
#include <stdio.h>
#include <time.h>
static double now(void) { struct timespec s; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &s); return s.tv_sec + 1e-9 * s.tv_nsec; }
int main(int argc, char **argv) {
    double p[QSP_P], y[N], f[N], J[N * N], ft[N], sink = 0.0, t = 1.0;
    long reps = atol(argv[1]);
    FILE *fp = fopen(argv[2], "rb");
    if (fread(p, sizeof(double), QSP_P, fp) != QSP_P || fread(y, sizeof(double), N, fp) != N) return 2;
    fclose(fp);
    Patient pp; pp.p = p;
    qsp_rhs_pre(p, pp.qr); qsp_jac_pre(p, pp.qj);
    memset(J, 0, sizeof(J)); memset(ft, 0, sizeof(ft));
    double t0 = now();
    for (long r = 0; r < reps; r++) { t += 1e-9; qsp_rhs(&t, y, p, pp.qr, f); sink += f[r % N]; }
    double t_rhs = (now() - t0) / reps;
    t0 = now();
    for (long r = 0; r < reps; r++) { t += 1e-9; qsp_jac(&t, y, p, pp.qj, ft, J); sink += J[r % (N * N)]; }
    double t_jac = (now() - t0) / reps;
#ifdef QSP_SNNZ
    double a[QSP_SNNZ], d[N], b[N];
    t0 = now();
    for (long r = 0; r < reps; r++) { qsp_sfactor(J, 50.0 + 1e-9 * r, a, d); sink += a[r % QSP_SNNZ]; }
    double t_lu = (now() - t0) / reps;
    t0 = now();
    for (long r = 0; r < reps; r++) { memcpy(b, f, sizeof(b)); b[0] += 1e-9 * r; qsp_ssolve(a, d, b); sink += b[r % N]; }
    double t_solve = (now() - t0) / reps;
#else
    double t_lu = -1.0, t_solve = -1.0;
#endif
    printf("{\"rhs\": %.6e, \"jac\": %.6e, \"lu\": %.6e, \"solve\": %.6e, \"sink\": %.3e}\n", t_rhs, t_jac, t_lu,
           t_solve, sink);
    return 0;
}
"""


def c_costs(case, p_row, y, reps):
    """Seconds per call of the generated RHS, Jacobian, sparse LU and solve (best of 3)."""
    import jax.numpy as jnp

    from qsp import _native

    one = case.model.replace(**{k: jnp.asarray(v) for k, v in case.fields(p_row).items()})
    kernel = _native.Kernel(one)
    params = np.asarray(_native._flat_params(one), dtype=float)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        c, exe, data = Path(tmp) / "h.c", Path(tmp) / "h", Path(tmp) / "in.bin"
        c.write_text(kernel.source + _HARNESS)
        np.concatenate([params, np.asarray(y, dtype=float)]).tofile(data)
        cc = _native._compiler()
        cmd = [cc, *_native._OPT, "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-DQSP_LIBMVEC", "-o", str(exe), str(c), "-lmvec", "-lm"]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            subprocess.run([cc, *_native._OPT, "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-o", str(exe), str(c), "-lm"], check=True)
        for _ in range(3):
            out = subprocess.run([str(exe), str(reps), str(data)], capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout))
    return {k: min(r[k] for r in runs) for k in ("rhs", "jac", "lu", "solve")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="crs")
    ap.add_argument("--n", type=int, default=20, help="patients for LSODA's work count")
    ap.add_argument("--n-native", type=int, default=200, help="patients for the native timings")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--reps", type=int, default=200000, help="calls per C timing")
    ap.add_argument("--out", default=None, help="results stem (default floor_<workload>_cpu)")
    a = ap.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)
    import qsp
    from benchmarks.population_suite import CASES, scipy_method

    case = CASES[a.workload]()
    p = case.params(max(a.n, a.n_native))
    lsoda = scipy_method(case, "LSODA")
    ref, _ = lsoda(p[: a.n])
    work = {k: v / a.n for k, v in lsoda.work.items()}
    mid = ref[0, len(case.ts) // 2]  # a state from mid-trial for the C timings
    cost = c_costs(case, p[0], mid, a.reps)
    floor = work["nfev"] * (cost["rhs"] + cost["solve"]) + work["njev"] * cost["jac"] + work["nlu"] * cost["lu"]

    native = {}
    for solver in (None, "bdf"):
        m = case.batched(p[: a.n_native])

        def run():
            return qsp.simulate(m, case.regimen, case.ts, rtol=case.rtol, atol=case.atol, max_steps=100000,
                                backend="native", solver=solver)

        sol = run()  # compile
        times = []
        for _ in range(a.repeats):
            c0 = _env.cpu_seconds()
            np.asarray(run().states)
            times.append((_env.cpu_seconds() - c0) / a.n_native)
        per = statistics.median(times)
        ok = np.asarray(sol.status) == 0
        got = case.reported(p[: a.n], np.asarray(sol.states)[: a.n])
        want = case.reported(p[: a.n], ref)
        check = float(max(np.abs(got[..., j] - want[..., j]).max() / np.abs(want[..., j]).max()
                          for j in range(len(case.outputs))))
        native[solver or "rodas4"] = {
            "cpu_s_per_patient": per, "patients_per_s_one_core": 1.0 / per, "x_floor": per / floor,
            "steps_per_patient": float(np.mean(np.asarray(sol.num_steps))), "all_ok": bool(ok.all()),
            "max_rel_diff_vs_lsoda_1e-6": check,
        }
    res = {
        "workload": a.workload, "rtol": case.rtol, "atol": case.atol,
        "lsoda_work_per_patient": work, "c_cost_s": cost,
        "floor_s_per_patient_one_core": floor, "floor_patients_per_s_two_cores": 2.0 / floor,
        "native": native, "machine": _env.machine_info(),
    }
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / (a.out or f"floor_{a.workload}_cpu")
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    lines = [f"# Floor: {a.workload}, rtol {case.rtol:g} / atol {case.atol:g}", "",
             f"LSODA's work per patient ({a.n} patients): " + ", ".join(f"{k} {v:.0f}" for k, v in work.items()),
             "", "Generated C per call (ns): " + ", ".join(f"{k} {1e9 * v:.0f}" for k, v in cost.items()), "",
             f"Floor: {1e3 * floor:.3f} ms per patient per core = {2.0 / floor:,.0f} patients/s on two cores", "",
             "| native method | ms per patient (1 core) | x floor | steps/patient | vs LSODA 1e-6 |", "|---|---:|---:|---:|---:|"]
    for k, v in native.items():
        lines.append(f"| {k} | {1e3 * v['cpu_s_per_patient']:.3f} | {v['x_floor']:.2f} | {v['steps_per_patient']:.0f} | "
                     f"{v['max_rel_diff_vs_lsoda_1e-6']:.1e} |")
    mi = res["machine"]
    lines += ["", f"Machine: {mi['cpu_model']}, {mi['cpu_affinity']} cores usable, load {_env.load_average()}, "
              f"commit {mi['git_commit']}{' (dirty)' if mi['git_dirty'] else ''}, {mi['time_utc']}"]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
