r"""Peak memory of a large pk2cmt population through `qsp.simulate`'s chunks (issue 8:
"memory: 1e6 patients in chunks within 4 GB").

```bash
.venv/bin/python benchmarks/memory_population.py --n 10000,100000 --saves all,few
.venv/bin/python benchmarks/memory_population.py --n 1000000 --saves few --out memory_population_cpu_1e6
```

Workload: `benchmarks/_pk2cmt_peers.Workload` (pk2cmt, 100 mg into DEPOT q12h x 28,
log-normal IIV CV 30 % on CL, V1, Q, V2, KA; Tsit5 at rtol 1e-6 / atol 1e-9, as in
`population_suite.py`), `qsp.simulate(..., batch_size=1024)` on the host arrays of
all N patients (one call).

`qsp.simulate` solves one chunk of 1,024 patients at a time, but gathers every
chunk's result on the host and returns them as one array, so the returned
`Solution` alone is N x n_ts x (n_states + n_outputs) x 8 bytes (plus status and
steps). Two save grids separate what the chunks cost from what the answer costs:

- `all`: the workload's 85 save times (every 4 h): 85 x (3 states + 4 outputs: CP,
  DEPOT, CENT, PERIPH) x 8 = 4.8 kB per patient, 4.4 GiB of results at N = 1e6, more
  than the 4 GB target by itself;
- `few`: 3 save times (24 h, 168 h, 336 h): 3 x 7 x 8 B + status and steps = 184 B
  per patient, 176 MiB at N = 1e6.

Each (N, saves) runs in a fresh process, so its peak is its own: the process's
high-water mark of resident memory (VmHWM, the whole process: Python, JAX, XLA,
compiled code, inputs and results) is read after a warm-up call at N = 1,024 (the
compile) and again, reset in between, after the timed N-patient call. Correctness:
CP of the first 20 patients against the closed form (`tests/pk_closed_form.py`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import _env

RESULTS = Path(__file__).resolve().parent / "results"
FEW_TS = (24.0, 168.0, 336.0)
LIMIT_GB_MIB = 4e9 / 2**20  # the 4 GB, read as 4e9 bytes (3815 MiB; stricter than 4 GiB)


def _closed_form(pop, w, ts, k):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tests" / "pk_closed_form.py"
    spec = importlib.util.spec_from_file_location("_qsp_pk_closed_form", path)
    cf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cf)
    from benchmarks._pk2cmt_peers import PARAMS

    return np.stack([cf.two_cmt_oral(ts, w.amount, w.dose_times(), *(float(pop[p][i]) for p in PARAMS))
                     for i in range(k)])


def _streamed(sim_rows, n, batch_size, path):
    """Caller-side chunks: one `qsp.simulate` per `batch_size` patients (the last chunk
    padded by repeating its final patient, so every call has one shape and one
    compile), each chunk's states and outputs appended to the file `path` as float64
    rows (patient-major: states (n_ts x 3), then outputs in sorted-name order), only
    status and steps kept in memory. Returns (status, steps, output names)."""
    status, steps = np.empty(n, np.int64), np.empty(n, np.int64)
    with open(path, "wb") as fh:
        for start in range(0, n, batch_size):
            idx = np.minimum(np.arange(start, start + batch_size), n - 1)
            sol = sim_rows(idx)
            m = min(batch_size, n - start)
            names = sorted(sol.outputs)
            states = np.asarray(sol.states)[:m].reshape(m, -1)
            outs = np.stack([np.asarray(sol.outputs[k])[:m] for k in names], axis=-1).reshape(m, -1)
            fh.write(np.concatenate([states, outs], axis=1).tobytes())
            status[start:start + m] = np.asarray(sol.status)[:m]
            steps[start:start + m] = np.asarray(sol.num_steps)[:m]
    return status, steps, names


def child(n, saves, batch_size, stream=False):
    """One measurement in this process; returns a dict (printed as JSON by `main`)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import diffrax as dfx

    import qsp
    from benchmarks._pk2cmt_peers import PARAMS, Workload
    from models.pk import pk2cmt

    w = Workload()
    ts = w.times() if saves == "all" else np.asarray(FEW_TS)
    reg = qsp.Regimen.bolus(w.amount, time=w.dose_times(), cmt="DEPOT")
    pop = w.population(n)

    def sim(m):
        model = pk2cmt().replace(**{k: pop[k][:m] for k in PARAMS})
        return qsp.simulate(model, reg, ts, rtol=w.rtol, atol=w.atol, solver=dfx.Tsit5(),
                            max_steps=16384, batch_size=batch_size)

    t, c = _env.timer(), _env.cpu_seconds()
    warm = sim(min(batch_size, n))  # compiles the chunk function
    jax.block_until_ready(warm.states)
    compile_s, compile_cpu = _env.timer() - t, _env.cpu_seconds() - c
    del warm
    peak_warm = (_env._status_kib("VmHWM") or 0) / 1024
    k = min(20, n)
    with _env.PeakMemory() as pm:
        t, c = _env.timer(), _env.cpu_seconds()
        if stream:
            import tempfile

            def sim_rows(idx):
                model = pk2cmt().replace(**{q: pop[q][idx] for q in PARAMS})
                return qsp.simulate(model, reg, ts, rtol=w.rtol, atol=w.atol, solver=dfx.Tsit5(),
                                    max_steps=16384, batch_size=None)

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "population.f64"
                status, steps, names = _streamed(sim_rows, n, batch_size, path)
                wall, cpu = _env.timer() - t, _env.cpu_seconds() - c
                result_bytes = path.stat().st_size + status.nbytes + steps.nbytes
                width = len(ts) * (3 + len(names))
                head = np.fromfile(path, dtype=np.float64, count=k * width).reshape(k, width)
                cp = head[:, len(ts) * 3:].reshape(k, len(ts), len(names))[:, :, names.index("CP")]
            n_outputs = len(names)
        else:
            sol = sim(n)
            jax.block_until_ready(sol.states)
            wall, cpu = _env.timer() - t, _env.cpu_seconds() - c
            result_bytes = sum(int(np.asarray(x).nbytes) for x in
                               (sol.states, sol.status, sol.num_steps, *sol.outputs.values()))
            status, steps = np.asarray(sol.status), np.asarray(sol.num_steps)
            cp, n_outputs = np.asarray(sol.outputs["CP"][:k]), len(sol.outputs)
    ref = _closed_form(pop, w, ts, k)
    rel = float(np.max(np.abs(cp - ref)) / np.max(np.abs(ref)))
    return {
        "n": n, "saves": saves, "n_ts": int(len(ts)), "batch_size": batch_size, "stream": bool(stream),
        "n_states": 3, "n_outputs": n_outputs,
        "wall_s": wall, "cpu_s": cpu, "patients_per_s": n / wall,
        "compile_and_first_chunk_s": compile_s, "compile_and_first_chunk_cpu_s": compile_cpu,
        "rss_before_mib": round(pm.rss_before_mib, 1),
        "peak_rss_warmup_mib": round(peak_warm, 1),
        "peak_rss_run_mib": round(pm.peak_mib, 1), "peak_reset": pm.reset,
        "result_mib": round(result_bytes / 2**20, 1),
        "all_success": bool((status == 0).all()), "n_failed": int((status != 0).sum()),
        "steps_mean": float(steps.mean()), "steps_max": int(steps.max()),
        "cp_vs_closed_form_max_rel_first20": rel,
        "load_end": _env.load_average(),
    }


def run(ns, saves_list, batch_size, timeout_s, stream=False, log=print):
    rows = []
    for saves in saves_list:
        for n in ns:
            cmd = [sys.executable, __file__, "--child", str(n), "--saves", saves, "--batch-size", str(batch_size)]
            cmd += ["--stream"] if stream else []
            log(f"[memory] N={n} saves={saves}: load {_env.load_average()}")
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            except subprocess.TimeoutExpired:
                rows.append({"n": n, "saves": saves, "error": f"not finished in {timeout_s} s"})
                log(f"[memory] N={n} saves={saves}: timed out after {timeout_s} s")
                continue
            line = [x for x in p.stdout.splitlines() if x.startswith("{")]
            if p.returncode != 0 or not line:
                rows.append({"n": n, "saves": saves, "error": p.stderr[-2000:]})
                log(f"[memory] N={n} saves={saves}: failed\n{p.stderr[-2000:]}")
                continue
            r = json.loads(line[-1])
            rows.append(r)
            log(f"[memory] N={n} saves={saves}: {r['wall_s']:.1f} s ({r['patients_per_s']:.0f}/s), peak RSS "
                f"{r['peak_rss_run_mib']:.0f} MiB (after warm-up {r['peak_rss_warmup_mib']:.0f}), "
                f"results {r['result_mib']:.0f} MiB, CP vs closed form {r['cp_vs_closed_form_max_rel_first20']:.1e}")
    return rows


def to_markdown(res) -> str:
    m = res["machine"]
    lines = ["# memory_population", "",
             f"{m['time_utc']}, {m['cpu_model']}, {m['cpu_affinity']} cores, {m['ram_gib']} GiB RAM, "
             f"git {str(m['git_commit'])[:8]}; " + ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v), "",
             "pk2cmt, 28 oral doses q12h, Tsit5 rtol 1e-6 / atol 1e-9, "
             + (f"caller-side chunks of {res['batch_size']} (one `qsp.simulate` each, results appended to "
                "a file: the results column is the file)" if res.get("stream") else
                f"`qsp.simulate(..., batch_size={res['batch_size']})`") + ", each row a fresh process. Peak RSS: the whole process's high-water "
             "mark (VmHWM) during the N-patient call; after warm-up: the same mark after the compiling "
             "call at N = 1,024. Results: the returned arrays (states, outputs, status, steps).", "",
             "| N | save times | wall s | patients/s | CPU s | peak RSS MiB | peak after warm-up MiB | results MiB "
             "| peak - results MiB | steps mean/max | all solved | CP vs closed form | load end |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---|"]
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r['n']} | {r['saves']} | {r['error'][:80]!r} |||||||||||")
            continue
        lines.append(
            f"| {r['n']:,} | {r['n_ts']} | {r['wall_s']:.1f} | {r['patients_per_s']:.0f} | {r['cpu_s']:.1f} | "
            f"**{r['peak_rss_run_mib']:.0f}** | {r['peak_rss_warmup_mib']:.0f} | {r['result_mib']:.0f} | "
            f"{r['peak_rss_run_mib'] - r['result_mib']:.0f} | {r['steps_mean']:.0f}/{r['steps_max']} | "
            f"{r['all_success']} | {r['cp_vs_closed_form_max_rel_first20']:.1e} | {r['load_end']} |")
    lines += ["", f"Target (issue 8): 1e6 patients in chunks within 4 GB ({LIMIT_GB_MIB:.0f} MiB if GB = 1e9 B).",
              ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="10000,100000", help="comma-separated population sizes")
    ap.add_argument("--saves", default="few,all", help="comma-separated: few (3 save times), all (85)")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per (N, saves) process")
    ap.add_argument("--out", default="memory_population_cpu")
    ap.add_argument("--stream", action="store_true",
                    help="caller-side chunks: one qsp.simulate per chunk, results appended to a file")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child is not None:
        print(json.dumps(child(a.child, a.saves, a.batch_size, a.stream)))
        return 0
    sampler = _env.LoadSampler().start()
    rows = run([int(x) for x in a.n.split(",")], a.saves.split(","), a.batch_size, a.timeout, a.stream)
    res = {"benchmark": "memory_population", "machine": _env.machine_info(), "batch_size": a.batch_size,
           "stream": a.stream,
           "few_ts": list(FEW_TS), "rows": rows, "load": sampler.stop(), "limit_mib_gb": LIMIT_GB_MIB}
    ok = [r for r in rows if "error" not in r]
    res["max_peak_rss_mib"] = max((r["peak_rss_run_mib"] for r in ok), default=None)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{a.out}.json").write_text(json.dumps(res, indent=1, default=float))
    (RESULTS / f"{a.out}.md").write_text(to_markdown(res))
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
