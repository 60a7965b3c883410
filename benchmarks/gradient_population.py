"""Gradient of a population loss w.r.t. 10 population parameters: reverse mode against
forward solves and central finite differences (issue 8).

```bash
.venv/bin/python benchmarks/gradient_population.py --workload pk2cmt --n 1000
.venv/bin/python benchmarks/gradient_population.py --workload crs --n 1000
```

Population parameters $\theta$ (10): for `pk2cmt`, the log typical values of CL, V1,
Q, V2, KA and the log IIV scales of the same five (patient $i$ has
$p_{ik} = e^{\theta_k + e^{\theta_{5+k}} \omega \eta_{ik}}$, fixed $\eta$); for `crs`,
log scale factors on the 10 sampled parameters of `models.tce.population.SPREAD`
(Tref, Bref, V_U, kBtumorprolif, KT_U, kIL6prod, CLbase, CLss, V1, V2) multiplying each
patient's sampled value. Loss: the mean over patients and save times of the squared
relative difference of the reported outputs from those at $\theta^\star$ (a fixed
offset from $\theta$), each output scaled by its population maximum at $\theta^\star$.

Timed, all jitted once and reused (compile reported apart): `forward` (one loss
evaluation = one population solve), `reverse` (`jax.value_and_grad`, diffrax's
`RecursiveCheckpointAdjoint`), `central FD` = the 20 forward evaluations of the check
(summed). Check: reverse-mode gradient against central differences with step 1e-4 in
$\theta$ (max relative difference over the 10
components, relative to the largest |component|).
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


def _loss_fn(workload, n):
    import jax
    import jax.numpy as jnp

    import qsp
    from benchmarks.population_suite import CASES

    case = CASES[workload]()
    if workload == "pk2cmt":
        from benchmarks._pk2cmt_peers import Workload

        w = Workload()
        omega = float(np.sqrt(np.log1p(w.cv**2)))
        eta = jnp.asarray(np.random.default_rng(w.seed).standard_normal((n, 5)))
        typ = jnp.log(jnp.asarray([dict(w.typical)[k] for k in case.names]))
        theta0 = jnp.concatenate([typ, jnp.zeros(5)])

        def patients(theta):
            return jnp.exp(theta[:5] + jnp.exp(theta[5:]) * omega * eta)
    else:
        P = jnp.asarray(case.params(n))  # (n, 11): the 10 SPREAD parameters, then KB_U
        theta0 = jnp.zeros(10)

        def patients(theta):
            return P.at[:, :10].multiply(jnp.exp(theta))

    names, ts, reg, keys = case.names, jnp.asarray(case.ts), case.regimen, case.outputs

    def outputs(theta):
        p = patients(theta)
        model = case.model.replace(**{k: p[:, j] for j, k in enumerate(names)})
        sol = qsp.simulate(model, reg, ts, rtol=case.rtol, atol=case.atol, solver=case.solver, max_steps=8192)
        return jnp.stack([sol.outputs[k] for k in keys], axis=-1), sol.status

    theta_star = theta0 + 0.05 * jnp.asarray(np.random.default_rng(1).standard_normal(theta0.shape))
    target, status = jax.jit(outputs)(theta_star)
    if int(np.max(np.asarray(status))) != 0:
        raise RuntimeError("the target population did not solve")
    scale = jnp.max(jnp.abs(target), axis=(0, 1))

    def loss(theta):
        out, _ = outputs(theta)
        return jnp.mean(((out - target) / scale) ** 2)

    return loss, theta0


def run(workload, n, repeats=3, log=print):
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    sampler = _env.LoadSampler().start()
    loss, theta0 = _loss_fn(workload, n)
    f = jax.jit(loss)
    g = jax.jit(jax.value_and_grad(loss))

    def timed(fn, *a):
        t = _env.timer()
        out = jax.block_until_ready(fn(*a))
        return _env.timer() - t, out

    c_f, _ = timed(f, theta0)
    s_f, val = timed(f, theta0)
    c_g, _ = timed(g, theta0)
    s_g, (val_g, grad) = timed(g, theta0)
    log(f"[{workload} N={n}] forward first {c_f:.1f} s then {s_f:.2f} s; reverse first {c_g:.1f} s then {s_g:.2f} s")
    # Check against central differences (these calls double as the FD timing).
    h = 1e-4
    fd = np.zeros(theta0.shape[0])
    fd_times = []
    for k in range(theta0.shape[0]):
        e = jnp.zeros_like(theta0).at[k].set(h)
        tp, vp = timed(f, theta0 + e)
        tm, vm = timed(f, theta0 - e)
        fd_times.append(tp + tm)
        fd[k] = (float(vp) - float(vm)) / (2 * h)
    grad = np.asarray(grad)
    rel = float(np.max(np.abs(grad - fd)) / np.max(np.abs(fd)))
    log(f"[{workload} N={n}] grad vs central FD: max rel diff {rel:.2e}")
    times = {"forward": [s_f], "reverse": [s_g]}
    mem = {}
    for _ in range(repeats - 1):
        for name, fn in (("forward", f), ("reverse", g)):
            with _env.PeakMemory() as pm:
                t, _ = timed(fn, theta0)
            times[name].append(t)
            mem[name] = round(max(mem.get(name, 0), pm.peak_mib), 1)
    med = {k: statistics.median(v) for k, v in times.items()}
    fd_time = float(sum(fd_times))
    res = {
        "benchmark": "gradient_population", "workload": workload, "n": n, "n_params": int(theta0.shape[0]),
        "machine": _env.machine_info(), "loss": float(val), "loss_from_value_and_grad": float(val_g),
        "grad": grad.tolist(), "grad_fd": fd.tolist(), "fd_step": h, "grad_vs_fd_max_rel": rel,
        "compile_s": {"forward": round(c_f - s_f, 3), "reverse": round(c_g - s_g, 3)},
        "times_s": times, "median_s": med, "peak_rss_mib": mem,
        "central_fd_s": fd_time,
        "reverse_over_forward": med["reverse"] / med["forward"],
        "central_fd_over_reverse": fd_time / med["reverse"],
        "target_met_reverse_below_2_forward": med["reverse"] < 2 * med["forward"],
    }
    res["load"] = sampler.stop()
    log(f"[{workload} N={n}] reverse/forward {res['reverse_over_forward']:.2f}, FD/reverse {res['central_fd_over_reverse']:.1f}")
    return res


def to_markdown(results) -> str:
    m = results[0]["machine"]
    lines = ["# gradient_population", "",
             f"{m['time_utc']}, {m['cpu_model']}, {m['cpu_affinity']} cores, git {str(m['git_commit'])[:8]}; "
             + ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v), "",
             "| workload | N | params | forward s | reverse s | reverse/forward | central FD s (20 solves) | FD/reverse | grad vs FD | compile fwd/rev s | load avg mean/max |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in results:
        lines.append(
            f"| {r['workload']} | {r['n']} | {r['n_params']} | {r['median_s']['forward']:.2f} | {r['median_s']['reverse']:.2f} | "
            f"{r['reverse_over_forward']:.2f} | {r['central_fd_s']:.1f} | {r['central_fd_over_reverse']:.1f} | "
            f"{r['grad_vs_fd_max_rel']:.1e} | {r['compile_s']['forward']:.0f}/{r['compile_s']['reverse']:.0f} | "
            f"{r['load']['mean_1min']}/{r['load']['max_1min']} |")
    lines += ["", "Target (issue 8): reverse-mode gradient in less time than 2 forward solves "
              "(reverse/forward < 2). Ratios are within one process, same load.", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="pk2cmt", help="pk2cmt, crs or both (comma-separated)")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="gradient_population_cpu")
    a = ap.parse_args(argv)
    results = [run(w, a.n, a.repeats) for w in a.workload.split(",")]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{a.out}.json").write_text(json.dumps(results, indent=1, default=float))
    (RESULTS / f"{a.out}.md").write_text(to_markdown(results))
    print(to_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
