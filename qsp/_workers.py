"""Worker processes for chunked populations: `qsp.simulate(..., workers=k)`.

XLA's CPU runtime runs one vmapped population solve on one core: the solve is a long
chain of small kernels, too small to split. Two Python threads dispatching chunks at once
would use two cores but deadlock here: a batched LU of a stiff model's Jacobian (> 8
patients of the 29-state CRS model) goes to jaxlib's LAPACK kernel, which splits the
batch over XLA's 2-thread intra-op pool and blocks the calling worker until the pieces
finish, so two such calls hold both workers (benchmarks/NOTES.md, sections 13-14).
Separate processes share no pool, so chunks run in `k` spawned processes, each with its
own JAX, compiling the chunk program once (from JAX's persistent cache when the parent
has one configured) and keeping it for later calls. The pools live until the
interpreter exits.

Results are bit-identical to `workers=1`: the same program runs on the same chunks.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import jax
import numpy as np

_POOLS: dict[int, ProcessPoolExecutor] = {}


def _init(x64: bool, cache_dir, xla_flags):
    if xla_flags is not None:
        os.environ["XLA_FLAGS"] = xla_flags
    import jax

    jax.config.update("jax_enable_x64", x64)
    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _pool(workers: int) -> ProcessPoolExecutor:
    pool = _POOLS.get(workers)
    if pool is None:
        cache_dir = jax.config.jax_compilation_cache_dir
        pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_init,
            initargs=(bool(jax.config.jax_enable_x64), cache_dir, os.environ.get("XLA_FLAGS")))
        _POOLS[workers] = pool
    return pool


@atexit.register
def _shutdown():
    for pool in _POOLS.values():
        pool.shutdown(wait=False, cancel_futures=True)
    _POOLS.clear()


def _to_host(tree):
    return jax.tree.map(lambda x: np.asarray(x) if isinstance(x, jax.Array) else x, tree)


def _solve_chunk(args, t0, cfg, axes):
    from ._simulate import _checks_without_callbacks, _run

    with _checks_without_callbacks():
        out = _run(*args, t0, cfg, axes)
    return _to_host(jax.block_until_ready(out))


def run_chunks(chunks, t0, cfg, axes, workers: int):
    """`_run(*chunk, t0, cfg, axes)` for every chunk, in `workers` processes, in order."""
    pool = _pool(workers)
    try:
        futures = [pool.submit(_solve_chunk, _to_host(c), _to_host(t0), cfg, axes) for c in chunks]
        return [f.result() for f in futures]
    except BrokenProcessPool as e:
        _POOLS.pop(workers, None)
        raise RuntimeError(
            f"simulate(workers={workers}): a worker process died ({e}); rerun with workers=1 "
            "to see the error in this process (or check memory: each worker holds one chunk)."
        ) from e
    except (pickle.PicklingError, AttributeError, TypeError, ImportError) as e:
        text = str(e)
        if isinstance(e, pickle.PicklingError) or "pickle" in text or "Can't get attribute" in text:
            raise TypeError(
                f"simulate(workers={workers}): the model, regimen or solver cannot be sent to a "
                f"worker process ({e}). Define the model class in an importable module (not in "
                "a notebook cell or __main__ of an interactive session), or use workers=1."
            ) from e
        raise
