"""Kill a large virtual trial halfway, resume it, and compare with an uninterrupted run.

The trial: `qsp.models.pk1cmt` (built-in), N virtual patients (log-normal CL, V, KA;
Omega ours, illustrative), one arm of 100 mg orally once daily for 7 days, exposure
endpoints (Cmax, AUC 0-168 h, Ctrough at 144 h) and the CP trajectories saved.

    python benchmarks/vpop_trial_resume.py --n 100000 --chunk 4096 --out DIR

runs the trial in a child process, SIGKILLs it once half the chunks are on disk,
restarts it (it resumes), then runs the same trial uninterrupted into another directory
and checks that the two per-patient tables and trajectories are bitwise identical.
Prints one JSON line and writes DIR/result.json and results/vpop_trial_resume_cpu.json
(`*_quick.json` for N < 100,000) with the machine and its load.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

HERE = os.path.abspath(__file__)


def trial(n, chunk, out, progress):
    import jax
    import jax.numpy as jnp

    import qsp
    from qsp.models import pk1cmt
    from qsp.vpop import Arm, Exposure, Population, run_trial

    pop = Population(pk1cmt(CL=2.0, V=20.0, KA=1.0), [0.09, 0.04, 0.16], ("CL", "V", "KA")).sample(jax.random.key(0), n)
    arm = Arm("100mg_qd", qsp.Regimen.bolus(100.0, 0.0, "DEPOT", ii=24.0, addl=6))
    ts = jnp.array([0.0, 1.0, 2.0, 4.0, 24.0, 48.0, 96.0, 144.0, 145.0, 146.0, 148.0, 168.0])
    return run_trial(pop, [arm], ts, endpoints=[Exposure("CP", window=(0.0, 168.0), trough_at=144.0)], out=out,
                     chunk_size=chunk, save_outputs=("CP",), progress=progress)


def child(args):
    t = time.perf_counter()
    res = trial(args.n, args.chunk, args.out, progress=True)
    json.dump({"seconds": time.perf_counter() - t, "complete": res.complete, **res.memory},
              open(os.path.join(args.out, "child.json"), "w"))


def chunks_on_disk(out):
    d = [os.path.join(out, x) for x in os.listdir(out) if x.startswith("arm")] if os.path.isdir(out) else []
    return sum(f.startswith("chunk_") for x in d for f in os.listdir(x))


def run_child(n, chunk, out, kill_at=None):
    cmd = [sys.executable, HERE, "--child", "--n", str(n), "--chunk", str(chunk), "--out", out]
    p = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    if kill_at is None:
        if p.wait() != 0:
            raise RuntimeError(f"child failed: {cmd}")
        return json.load(open(os.path.join(out, "child.json")))
    while p.poll() is None and chunks_on_disk(out) < kill_at:
        time.sleep(0.05)
    if p.poll() is not None:
        raise RuntimeError("the child finished before it could be killed; use more chunks")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    return {"killed_with_chunks": chunks_on_disk(out)}


def load(out):
    arm = [x for x in os.listdir(out) if x.startswith("arm")][0]
    files = sorted(f for f in os.listdir(os.path.join(out, arm)) if f.startswith("chunk_"))
    zs = [np.load(os.path.join(out, arm, f)) for f in files]
    return {k: np.concatenate([z[k] for z in zs]) for k in zs[0].files}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--out", required=True)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--no-record", action="store_true", help="do not write benchmarks/results/")
    args = ap.parse_args()
    if args.child:
        return child(args)
    n_chunks = -(-args.n // args.chunk)
    a, b = os.path.join(args.out, "interrupted"), os.path.join(args.out, "uninterrupted")
    for d in (a, b):
        if os.path.exists(d):
            raise SystemExit(f"{d} exists; give a fresh --out")
    killed = run_child(args.n, args.chunk, a, kill_at=n_chunks // 2)
    resumed = run_child(args.n, args.chunk, a)
    straight = run_child(args.n, args.chunk, b)
    x, y = load(a), load(b)
    identical = x.keys() == y.keys() and all(np.array_equal(x[k], y[k], equal_nan=True) for k in x)
    result = {
        "n_patients": args.n, "chunk_size": args.chunk, "n_chunks": n_chunks,
        "killed_with_chunks_on_disk": killed["killed_with_chunks"],
        "chunks_computed_after_restart": resumed["chunks_computed"],
        "identical": bool(identical), "n_rows": int(len(x["patient"])),
        "uninterrupted_seconds": round(straight["seconds"], 1),
        "patients_per_second": round(args.n / straight["seconds"], 1),
        "peak_rss_mb": round(straight["peak_rss_mb"], 1),
        "chunk_result_mb": round(straight["chunk_result_mb"], 3),
    }
    print(json.dumps(result))
    sys.path.insert(0, os.path.dirname(HERE))
    from _env import machine_info

    full = {**result, "machine": machine_info(), "load_avg_end": os.getloadavg()}
    json.dump(full, open(os.path.join(args.out, "result.json"), "w"), indent=1)
    if not args.no_record:
        name = "vpop_trial_resume_cpu" + ("" if args.n >= 100_000 else "_quick") + ".json"
        json.dump(full, open(os.path.join(os.path.dirname(HERE), "results", name), "w"), indent=1)
    if not identical:
        raise SystemExit("resumed run differs from the uninterrupted run")


if __name__ == "__main__":
    main()
