"""Test configuration: float64, strict shapes, and a persistent compilation cache so
re-runs (and CI with a warm cache) skip most XLA compile time."""

import os

import qsp  # noqa: F401  (sets XLA_FLAGS before JAX's CPU backend starts; see qsp/__init__.py)
import jax

jax.config.update("jax_enable_x64", True)
jax.config.update(
    "jax_compilation_cache_dir",
    os.environ.get("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".jax_cache")),
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def pytest_xdist_make_scheduler(config, log):
    """`-n N` keeps each test module on one worker (xdist's `loadfile`) instead of xdist's
    default `load`, which hands out runs of consecutive tests and so splits modules across
    workers: each worker then repeats the module's fixtures, traces and compiles (a cold
    run duplicated ~50 s of `qsp.optimize` in test_optimize_vpop.py and ~30 s each in
    test_vpop_twins.py and test_vpop_trial.py). An explicit other `--dist` is honoured."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadFileScheduling

    return LoadFileScheduling(config, log)
