"""Wall time of the default CRS virtual trial (`qsp trial crs`: N = 1000, regimens 20,
1.6/20 and label, 4 cycles, seed 0) after compilation, on this machine.

A warm-up trial of one chunk per regimen compiles the solve (same chunk shape, so the
timed run reuses it); then the full trial is timed with the progress bar on, as the
command runs it (wall and this process's CPU seconds). The load average is sampled throughout (the machine is shared). The
label arm's cycle-1 IL-6 peaks also give the CRS link thresholds
(`crs.calibrate_link`, recorded here for `models/tce/crs.py`).

    .venv/bin/python benchmarks/crs_trial.py [--n 1000] [--chunk 50] [--workers 2] [--backend native]

`--workers k` runs the chunks in k processes (`qsp.simulate(..., workers=k)`, what the
command does by default, one per core); the warm-up then gives every worker chunks to
compile, and the CPU seconds reported are this process's only (the workers' are not
counted: compare wall times). `--backend native` solves each patient in generated C
(`qsp.simulate(..., backend="native")`, `workers` threads; its warm-up is one 256-patient
chunk, the native trial's chunk size, and includes generating and compiling the C).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from qsp.models.tce import crs, trial

from _env import LoadSampler, cpu_seconds, machine_info

RESULTS = Path(__file__).parent / "results"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--chunk", type=int, default=50)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--backend", choices=("jax", "native"), default="jax")
    ap.add_argument("--tag", default="cpu")
    a = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"crs_trial_{a.tag}.json"
    load = LoadSampler(every=5.0).start()
    res = {"benchmark": "crs_trial", "n": a.n, "regimens": [], "cycles": 4, "seed": 0, "chunk": a.chunk,
           "workers": a.workers, "backend": a.backend, "machine": machine_info()}
    t0 = time.perf_counter()
    warm = a.chunk * (1 if a.workers == 1 else 2 * a.workers)  # chunks for every worker
    if a.backend == "native":
        warm = 256
    # compiles the chunk solve
    trial.run(n=warm, chunk=a.chunk, progress=False, workers=a.workers, backend=a.backend)
    res["warmup_compile_plus_run_s"] = round(time.perf_counter() - t0, 1)
    # The three regimens in one `trial.run`, as `qsp trial crs` runs them: they are
    # padded to one event count, so the warm-up's compile serves all of them. (Until
    # 2026-12-02 this timed one regimen per call; each padded to its own event count and
    # recompiled inside the timing.)
    t0, c0 = time.perf_counter(), cpu_seconds()
    summary, patients, _ = trial.run(n=a.n, chunk=a.chunk, progress=True, workers=a.workers, backend=a.backend)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    for spec in trial.DEFAULT_REGIMENS:
        res["regimens"].append({"regimen": spec, "n_failed": int((patients[patients.regimen == spec].status != 0).sum())})
    lab = patients[(patients.regimen == "label") & (patients.status == 0)]
    pk = lab.il6_c1_peak.to_numpy()
    res["crs_thresholds_label"] = [float(x) for x in crs.calibrate_link(pk, crs.TARGET_GE1, crs.TARGET_GE2)]
    res["label_c1_peak_quantiles_5_25_50_75_95"] = [round(float(x), 1) for x in np.percentile(pk, [5, 25, 50, 75, 95])]
    # CPU seconds of this process: what the run costs on an unshared core (XLA's CPU
    # runtime runs one thread here, see qsp/__init__.py); wall depends on the load.
    res.update(trial_wall_s=round(wall, 1), trial_cpu_s=round(cpu, 1), within_2_min_wall=wall <= 120.0,
               load=load.summary(), summary=json.loads(summary.to_json(orient="records")))
    out.write_text(json.dumps(res, indent=1) + "\n")
    load.stop()
    print(json.dumps({k: v for k, v in res.items() if k not in ("summary", "machine")}, indent=1))


if __name__ == "__main__":
    main()
