#!/usr/bin/env bash
# The population suite on a GPU (issue 8), float64 and a float32 variant. Not yet run:
# no device was available when it was written. Usage, from the repository root on the
# device machine (e.g. through the `device` tool):
#
#   bash benchmarks/gpu_suite.sh            # CRS + pk2cmt, N = 1e3 .. 1e6, float64 and float32
#   QUICK=1 bash benchmarks/gpu_suite.sh    # N = 1e3, 1e4 only (a few minutes)
#
# Needs jax with CUDA (pip install -e ".[bench]" "jax[cuda12]"). scipy and RoadRunner are
# CPU peers and are left out here; compare with the CPU results in results/*_cpu.*.
# QSP_FLOAT32=1 runs without jax_enable_x64 (float32 states and solver arithmetic);
# the correctness gate (1e-3 against scipy LSODA at 1e-10) still applies, at rtol 1e-4.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
NS=${NS:-1000,10000,100000,1000000}
[ "${QUICK:-0}" = 1 ] && NS=1000,10000
CHUNK=${CHUNK:-100000}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
export XLA_PYTHON_CLIENT_PREALLOCATE=false
for wl in crs pk2cmt; do
  $PY benchmarks/population_suite.py --workload "$wl" --n "$NS" --methods qsp,diffrax_vmap \
      --chunk "$CHUNK" --repeats 3 --budget-s 300 --out "population_${wl}_gpu"
  QSP_FLOAT32=1 $PY benchmarks/population_suite.py --workload "$wl" --n "$NS" --methods qsp,diffrax_vmap \
      --chunk "$CHUNK" --repeats 3 --budget-s 300 --rtol 1e-4 --atol 1e-7 --out "population_${wl}_gpu_f32"
done
$PY benchmarks/gradient_population.py --workload pk2cmt,crs --n 1000 --out gradient_population_gpu
