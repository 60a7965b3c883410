"""Work-precision curves: error against time per patient at rtol 1e-3 .. 1e-8 (issue 8).

```bash
.venv/bin/python benchmarks/work_precision.py --workload pk2cmt --n 200
```

For each tolerance (atol = rtol * 1e-3) and method of `population_suite` (qsp with
Tsit5, qsp with Kvaerno5 + Chord = `qsp.default_solver`, scipy LSODA loop, libRoadRunner
one process), the error is the max over patients of max_t |CP - ref| / max_t |ref|
against the closed form (`tests/pk_closed_form.py`, superposition of oral doses) and
the time is the median wall time per patient of `--repeats` calls after a first
(compiling) call. scipy is run on the first `--scipy-n` patients. Writes
`results/work_precision_<workload>_cpu.{json,md,png}`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import _env

RESULTS = Path(__file__).resolve().parent / "results"
RTOLS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
METHODS = ("qsp_tsit5", "qsp_kvaerno5", "scipy_lsoda", "roadrunner_1p")


def run(n=200, rtols=RTOLS, methods=METHODS, repeats=3, scipy_n=20, log=print):
    import os

    import jax

    jax.config.update("jax_enable_x64", True)
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", str(Path(__file__).resolve().parents[1] / ".jax_cache"))
    import diffrax as dfx
    import jax.numpy as jnp

    import qsp
    from benchmarks import population_suite as ps
    from benchmarks._pk2cmt_peers import PARAMS, Workload, closed_form_cp

    sampler = _env.LoadSampler().start()
    w = Workload()
    P = ps.pk2cmt_case().params(n)
    ref = closed_form_cp({k: P[:, j] for j, k in enumerate(PARAMS)}, w)[:, :, None]
    sbml_text = None
    if "roadrunner_1p" in methods:
        from benchmarks import _sbml

        sbml_text = _sbml.sbml(ps.pk2cmt_case().model, PARAMS)
    points = []
    for rtol in rtols:
        atol = rtol * 1e-3
        case = ps.pk2cmt_case(rtol, atol)
        for name in methods:
            m = min(n, scipy_n) if name.startswith("scipy") else n
            if name == "qsp_tsit5":
                run_ = ps.qsp_method(case, m)
            elif name == "qsp_kvaerno5":
                # array tolerances: traced, one compile for every rtol
                case.solver = qsp.default_solver(jnp.asarray(rtol), jnp.asarray(atol))
                run_ = ps.qsp_method(case, m)
                case.solver = dfx.Tsit5()
            elif name == "scipy_lsoda":
                run_ = ps.scipy_method(case, "LSODA")
            elif name == "roadrunner_1p":
                run_ = ps.roadrunner_method(case, 1, sbml_text)
            else:
                raise ValueError(f"unknown method {name!r}")
            st, steps = run_(P[:m])  # compile / warm up
            err = ps.max_rel_diff(case.reported(P[:m], st), ref[:m])
            times = []
            for _ in range(repeats):
                t = _env.timer()
                run_(P[:m])
                times.append(_env.timer() - t)
            per = statistics.median(times) / m
            points.append({"method": name, "rtol": rtol, "atol": atol, "n": m, "error": err,
                           "s_per_patient": per, "times_s": times,
                           "steps_mean": None if steps is None else float(np.mean(steps)),
                           "load": _env.load_average()})
            log(f"rtol {rtol:g} {name}: error {err:.2e}, {per * 1e3:.3f} ms/patient")
    return {"benchmark": "work_precision", "workload": "pk2cmt", "n": n, "machine": _env.machine_info(),
            "error": "max over patients of max_t|CP - closed form| / max_t|closed form|",
            "points": points, "load": sampler.stop()}


def plot(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name in dict.fromkeys(p["method"] for p in res["points"]):
        pts = [p for p in res["points"] if p["method"] == name]
        ax.loglog([p["s_per_patient"] * 1e3 for p in pts], [p["error"] for p in pts], "o-", label=name)
        for p in pts:
            ax.annotate(f"{p['rtol']:.0e}", (p["s_per_patient"] * 1e3, p["error"]), fontsize=6)
    ax.set_xlabel("wall time per patient (ms)")
    ax.set_ylabel("max relative error of CP vs closed form")
    ld = res["load"]
    ax.set_title(f"pk2cmt work-precision (load avg {ld['mean_1min']} on 2 cores)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def to_markdown(res) -> str:
    m = res["machine"]
    lines = ["# work_precision: pk2cmt", "",
             f"{m['time_utc']}, {m['cpu_model']}, {m['cpu_affinity']} cores, git {str(m['git_commit'])[:8]}; "
             + ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
             + f". Load avg mean {res['load']['mean_1min']}, max {res['load']['max_1min']}.", "",
             f"Error: {res['error']}.", "",
             "| method | rtol | N timed | error | ms/patient | steps mean |", "|---|---:|---:|---:|---:|---:|"]
    for p in res["points"]:
        st = "" if p["steps_mean"] is None else f"{p['steps_mean']:.0f}"
        lines.append(f"| {p['method']} | {p['rtol']:.0e} | {p['n']} | {p['error']:.2e} | {p['s_per_patient'] * 1e3:.3f} | {st} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--rtols", default=",".join(f"{r:g}" for r in RTOLS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scipy-n", type=int, default=20)
    ap.add_argument("--out", default="work_precision_pk2cmt_cpu")
    a = ap.parse_args(argv)
    res = run(a.n, tuple(float(x) for x in a.rtols.split(",")), tuple(a.methods.split(",")), a.repeats, a.scipy_n)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{a.out}.json").write_text(json.dumps(res, indent=1, default=float))
    (RESULTS / f"{a.out}.md").write_text(to_markdown(res))
    plot(res, RESULTS / f"{a.out}.png")
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
