"""Gradient of a population loss w.r.t. 10 population parameters: reverse and forward
mode against forward solves and central finite differences (issue 8).

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
evaluation = one population solve), and the gradient methods chosen with `--methods`:

- `reverse`: `jax.value_and_grad` through diffrax's `RecursiveCheckpointAdjoint()`
  (its default number of checkpoints, $O(\sqrt{2\,\text{max\_steps}})$ per dosing
  segment);
- `reverse_ckpt<K>`: the same with `RecursiveCheckpointAdjoint(checkpoints=K)`;
- `jacfwd`: forward mode, `jax.jacfwd` (10 tangents carried through one solve) with
  `qsp.simulate(..., adjoint="forward")` (diffrax `ForwardMode`);
- `jacfwd_patients`: forward mode with one tangent per *patient* parameter (5 for
  pk2cmt, 11 for crs) instead of one per population parameter, then the chain rule
  (see `per_patient_forward`);

With `--backend native` both the forward solve and the gradient go through
`qsp.simulate(..., backend="native")` (Rodas4 in C; `reverse` is then its discrete
adjoint in C, `qsp/_native_grad.py`), so the ratio compares like with like.

and `central FD` = the 20 forward evaluations of the check (summed). `--solver
kvaerno5` swaps pk2cmt's Tsit5 for qsp's default implicit solver. Check: each
gradient against central differences with step 1e-4 in $\theta$ (max absolute
difference over the 10 components, relative to the largest |FD component|).
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


def _loss_fn(workload, n, solver=None, backend="jax", workers=1):
    import jax
    import jax.numpy as jnp

    import qsp
    from benchmarks.population_suite import CASES

    case = CASES[workload]()
    if solver == "kvaerno5":  # qsp's default (implicit) solver, for pk2cmt too
        case.solver = qsp.default_solver(case.rtol, case.atol)
    elif solver not in (None, "model"):
        raise ValueError(f"--solver: {solver!r} is not known; expected model or kvaerno5.")
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

    def solve(p, adjoint="reverse"):
        model = case.model.replace(**{k: p[:, j] for j, k in enumerate(names)})
        if backend == "native":  # Rodas4 in C; its VJP is the discrete adjoint in C
            sol = qsp.simulate(model, reg, ts, rtol=case.rtol, atol=case.atol, max_steps=8192, backend="native",
                               workers=workers)
        else:
            sol = qsp.simulate(model, reg, ts, rtol=case.rtol, atol=case.atol, solver=case.solver, max_steps=8192,
                               adjoint=adjoint)
        return jnp.stack([sol.outputs[k] for k in keys], axis=-1), sol.status

    theta_star = theta0 + 0.05 * jnp.asarray(np.random.default_rng(1).standard_normal(theta0.shape))
    target, status = jax.jit(lambda th: solve(patients(th)))(theta_star)
    if int(np.max(np.asarray(status))) != 0:
        raise RuntimeError("the target population did not solve")
    scale = jnp.max(jnp.abs(target), axis=(0, 1))

    def misfit(out):
        return jnp.mean(((out - target) / scale) ** 2)

    def loss(theta, adjoint="reverse"):
        return misfit(solve(patients(theta), adjoint)[0])

    # The pieces, for the per-patient forward mode: theta -> patient parameters
    # (algebraic), patient parameters -> outputs (the ODE solves), outputs -> loss.
    loss.parts = (patients, lambda p, adjoint: solve(p, adjoint)[0], misfit)
    return loss, theta0


def per_patient_forward(loss):
    r"""`theta -> (loss, gradient)` by forward mode through the solves with one tangent
    per *patient* parameter instead of one per population parameter.

    Patient $i$'s outputs $y_i$ depend only on its own parameters $p_i \in \mathbb R^d$,
    so one tangent that moves parameter $k$ of every patient at once gives every
    $\partial y_i / \partial p_{ik}$ in one pass: $d$ tangents (5 for pk2cmt) carry all
    $n d$ sensitivities, however many population parameters $\theta$ there are. The
    rest is algebra and cheap reverse mode:
    $\partial L/\partial p_{ik} = \langle \partial L/\partial y_i, \partial y_i/\partial p_{ik}\rangle$
    (reverse mode through the misfit only), then
    $\nabla_\theta L = (\partial p/\partial\theta)^\top \partial L/\partial p$ (a VJP of the
    patient map, no ODE). The ODE solve runs once, in diffrax `ForwardMode`."""
    import jax
    import jax.numpy as jnp

    patients, solve, misfit = loss.parts

    def value_and_grad(theta):
        p, pull = jax.vjp(patients, theta)
        n, d = p.shape
        seeds = jnp.broadcast_to(jnp.eye(d, dtype=p.dtype)[:, None, :], (d, n, d))
        y, dy = jax.vmap(lambda s: jax.jvp(lambda q: solve(q, "forward"), (p,), (s,)), out_axes=(None, 0))(seeds)
        val, dL_dy = jax.value_and_grad(misfit)(y)
        dL_dp = jnp.einsum("i...,ki...->ik", dL_dy, dy)
        return val, pull(dL_dp)[0]

    return value_and_grad


def gradient_fns(loss, methods):
    """Jitted `theta -> (value, gradient)` for each method name (see the module docstring)."""
    import diffrax as dfx
    import jax

    fns = {}
    for name in methods:
        if name == "reverse":
            fns[name] = jax.jit(jax.value_and_grad(loss))
        elif name.startswith("reverse_ckpt"):
            adj = dfx.RecursiveCheckpointAdjoint(checkpoints=int(name[len("reverse_ckpt"):]))
            fns[name] = jax.jit(jax.value_and_grad(lambda th, a=adj: loss(th, a)))
        elif name == "jacfwd_patients":
            fns[name] = jax.jit(per_patient_forward(loss))
        elif name == "jacfwd":
            # has_aux returns the primal the tangents were carried with: value and
            # gradient from one solve.
            g = jax.jacfwd(lambda th: (loss(th, "forward"),) * 2, has_aux=True)
            fns[name] = jax.jit(lambda th, g=g: g(th)[::-1])
        else:
            raise ValueError(f"--methods: {name!r} is not known; expected reverse, reverse_ckpt<K>, jacfwd or jacfwd_patients.")
    return fns


def run(workload, n, repeats=3, methods=("reverse",), solver=None, log=print, backend="jax", workers=1):
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    sampler = _env.LoadSampler().start()
    loss, theta0 = _loss_fn(workload, n, solver, backend, workers)
    f = jax.jit(loss)
    grads = gradient_fns(loss, methods)

    def timed(fn, *a):
        t, c = _env.timer(), _env.cpu_seconds()
        out = jax.block_until_ready(fn(*a))
        return _env.timer() - t, _env.cpu_seconds() - c, out

    # First call (compile + run), then one untimed call: the first run after a compile
    # was up to 2.6x slower than the next ones (memory first touched), so the timed
    # repeats below start from the third call.
    compile_s, times, cpu = {}, {}, {}
    first, _, _ = timed(f, theta0)
    s_f, c_f, val = timed(f, theta0)
    compile_s["forward"], times["forward"], cpu["forward"] = round(first - s_f, 3), [], []
    values, grad = {}, {}
    for name, g in grads.items():
        first, _, _ = timed(g, theta0)
        s_g, c_g, (values[name], gr) = timed(g, theta0)
        grad[name] = np.asarray(gr)
        compile_s[name], times[name], cpu[name] = round(first - s_g, 3), [], []
        log(f"[{workload} N={n}] {name}: first call {first:.1f} s, then {s_g:.2f} s (forward {s_f:.2f} s); "
            f"load {_env.load_average()}")
    # Check against central differences (these calls double as the FD timing).
    h = 1e-4
    fd = np.zeros(theta0.shape[0])
    fd_time = 0.0
    for k in range(theta0.shape[0]):
        e = jnp.zeros_like(theta0).at[k].set(h)
        tp, _, vp = timed(f, theta0 + e)
        tm, _, vm = timed(f, theta0 - e)
        fd_time += tp + tm
        fd[k] = (float(vp) - float(vm)) / (2 * h)
    rel = {k: float(np.max(np.abs(g - fd)) / np.max(np.abs(fd))) for k, g in grad.items()}
    log(f"[{workload} N={n}] grad vs central FD, max rel diff: {rel}")
    mem = {}
    for _ in range(repeats):  # interleaved, so load drifts hit every method alike
        for name, fn in (("forward", f), *grads.items()):
            with _env.PeakMemory() as pm:
                t, c, _ = timed(fn, theta0)
            times[name].append(t)
            cpu[name].append(c)
            mem[name] = round(max(mem.get(name, 0), pm.peak_mib), 1)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = {k: med[k] / med["forward"] for k in grads}
    res = {
        "benchmark": "gradient_population", "workload": workload, "n": n, "n_params": int(theta0.shape[0]),
        "methods": list(grads), "solver": "rodas4 (native)" if backend == "native" else (solver or "model"),
        "backend": backend, "workers": workers, "machine": _env.machine_info(), "loss": float(val),
        "loss_from_gradient_call": {k: float(v) for k, v in values.items()},
        "grad": {k: v.tolist() for k, v in grad.items()}, "grad_fd": fd.tolist(), "fd_step": h,
        "grad_vs_fd_max_rel": rel,
        # FD's own truncation error hides differences between the methods; this does not.
        "grad_vs_first_method_max_rel": {k: float(np.max(np.abs(g - grad[methods[0]])) / np.max(np.abs(fd)))
                                         for k, g in grad.items()},
        "compile_s": compile_s, "times_s": times, "cpu_s": cpu,
        "median_s": med, "median_cpu_s": {k: statistics.median(v) for k, v in cpu.items()},
        "peak_rss_mib": mem, "central_fd_s": fd_time,
        "gradient_over_forward": ratio,
        "central_fd_over_gradient": {k: fd_time / med[k] for k in grads},
        "target_met_gradient_below_2_forward": {k: r < 2 for k, r in ratio.items()},
    }
    res["load"] = sampler.stop()
    log(f"[{workload} N={n}] gradient/forward {ratio}")
    return res


def to_markdown(results) -> str:
    m = results[0]["machine"]
    lines = ["# gradient_population", "",
             f"{m['time_utc']}, {m['cpu_model']}, {m['cpu_affinity']} cores, git {str(m['git_commit'])[:8]}; "
             + ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v), "",
             "| workload | solver | N | params | method | forward s | gradient s | gradient/forward | CPU s fwd/grad "
             "| central FD s (20 solves) | FD/gradient | grad vs FD | first-call excess fwd/grad s | peak RSS MiB | load avg mean/max |",
             "|---|---|---:|---:|---|---:|---:|---:|---|---:|---:|---:|---|---:|---|"]
    for r in results:
        for k in r["methods"]:
            lines.append(
                f"| {r['workload']} | {r.get('solver', 'model')} | {r['n']} | {r['n_params']} | {k} | {r['median_s']['forward']:.2f} | "
                f"{r['median_s'][k]:.2f} | **{r['gradient_over_forward'][k]:.2f}** | "
                f"{r['median_cpu_s']['forward']:.2f}/{r['median_cpu_s'][k]:.2f} | {r['central_fd_s']:.1f} | "
                f"{r['central_fd_over_gradient'][k]:.1f} | {r['grad_vs_fd_max_rel'][k]:.1e} | "
                f"{r['compile_s']['forward']:.0f}/{r['compile_s'][k]:.0f} | {r['peak_rss_mib'].get(k, '')} | "
                f"{r['load']['mean_1min']}/{r['load']['max_1min']} |")
    lines += ["", "Target (issue 8): the gradient in less time than 2 forward solves "
              "(gradient/forward < 2). Medians of the repeats; ratios are within one process, "
              "repeats interleaved, same load. First-call excess: first call minus the second (the compile, "
              "or loading it from the persistent cache). `reverse`: RecursiveCheckpointAdjoint (default "
              "checkpoints); `reverse_ckpt<K>`: K checkpoints per dosing segment; `jacfwd`: forward "
              "mode (diffrax ForwardMode, 10 tangents).", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="pk2cmt", help="pk2cmt, crs or both (comma-separated)")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", default="reverse,reverse_ckpt64,jacfwd_patients",
                    help="comma-separated: jacfwd, jacfwd_patients, reverse, reverse_ckpt<K> (e.g. reverse_ckpt64)")
    ap.add_argument("--solver", default="model",
                    help="model (the workload's: Tsit5 for pk2cmt, Kvaerno5 + Chord for crs) or kvaerno5")
    ap.add_argument("--backend", default="jax", choices=("jax", "native"),
                    help="native: forward and gradient both through qsp.simulate(backend='native') "
                         "(Rodas4 in C, reverse mode by its discrete adjoint); use --methods reverse")
    ap.add_argument("--workers", type=int, default=1, help="native threads (forward and adjoint alike)")
    ap.add_argument("--out", default="gradient_population_cpu")
    a = ap.parse_args(argv)
    methods = tuple(a.methods.split(","))
    results = [run(w, a.n, a.repeats, methods, a.solver, backend=a.backend, workers=a.workers)
               for w in a.workload.split(",")]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{a.out}.json").write_text(json.dumps(results, indent=1, default=float))
    (RESULTS / f"{a.out}.md").write_text(to_markdown(results))
    print(to_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
