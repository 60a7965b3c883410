"""Run the whole performance suite of issue 8 (CPU), one script after another.

```bash
.venv/bin/python benchmarks/run_all.py            # full CPU suite (hours on a busy 2-core box)
.venv/bin/python benchmarks/run_all.py --quick    # small N, writes results/*_quick.*
.venv/bin/python benchmarks/run_all.py --dry-run  # print the commands only
```

Each step is a separate process (fresh JAX state, its own peak memory), so one failing
step does not stop the others; the exit status is the number of failed steps. The GPU
variant is `benchmarks/gpu_suite.sh`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable


def steps(quick: bool) -> list[list[str]]:
    q = "_quick" if quick else ""
    if quick:
        return [
            ["population_suite.py", "--workload", "pk2cmt", "--n", "4", "--check-n", "4", "--scipy-n", "2",
             "--repeats", "1", "--out", f"population_pk2cmt_cpu{q}"],
            ["population_suite.py", "--workload", "crs", "--n", "4", "--check-n", "4", "--scipy-n", "2",
             "--repeats", "1", "--out", f"population_crs_cpu{q}"],
            ["population_suite.py", "--workload", "mapk", "--n", "4", "--check-n", "4", "--scipy-n", "2",
             "--repeats", "1", "--rr-load-timeout-s", "60", "--out", f"population_mapk_cpu{q}"],
            ["population_suite.py", "--workload", "clonal", "--n", "4", "--check-n", "4", "--scipy-n", "2",
             "--repeats", "1", "--out", f"population_clonal_cpu{q}"],
            ["gradient_population.py", "--workload", "pk2cmt", "--n", "8", "--repeats", "2",
             "--out", f"gradient_population_cpu{q}"],
            ["work_precision.py", "--n", "8", "--rtols", "1e-4,1e-6", "--repeats", "1", "--scipy-n", "2",
             "--out", f"work_precision_pk2cmt_cpu{q}"],
            ["memory_population.py", "--n", "2000", "--saves", "few", "--out", f"memory_population_cpu{q}"],
            ["floor.py", "--workload", "crs", "--n", "2", "--n-native", "4", "--repeats", "1", "--reps", "2000",
             "--out", f"floor_crs_cpu{q}"],
        ]
    return [
        ["population_suite.py", "--workload", "pk2cmt", "--n", "100,1000,10000"],
        ["population_suite.py", "--workload", "crs", "--n", "100,1000"],
        ["population_suite.py", "--workload", "crs", "--n", "1000,10000", "--methods",
         "qsp_native_2t,qsp_native_bdf_2t,qsp_native,qsp_native_bdf,scipy_lsoda", "--out", "population_crs_native_bdf_cpu"],
        ["floor.py", "--workload", "crs"],
        ["population_suite.py", "--workload", "mapk", "--n", "100,1000", "--chunk", "64", "--budget-s", "200",
         "--rr-load-timeout-s", "120"],
        ["population_suite.py", "--workload", "clonal", "--n", "100,1000", "--chunk", "64", "--budget-s", "200"],
        ["gradient_population.py", "--workload", "pk2cmt,crs", "--n", "1000"],
        ["work_precision.py", "--n", "200"],
        ["pk2cmt_population.py"],
        ["memory_population.py", "--n", "10000,100000,1000000", "--saves", "few"],
        ["memory_population.py", "--n", "10000,100000", "--saves", "all", "--out", "memory_population_cpu_85saves"],
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args(argv)
    failed = 0
    for step in steps(a.quick):
        cmd = [PY, str(HERE / step[0]), *step[1:]]
        print("$", " ".join(cmd), flush=True)
        if a.dry_run:
            continue
        t = time.perf_counter()
        rc = subprocess.call(cmd)
        print(f"-> exit {rc} after {time.perf_counter() - t:.0f} s", flush=True)
        failed += rc != 0
    return failed


if __name__ == "__main__":
    sys.exit(main())
