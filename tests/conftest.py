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
