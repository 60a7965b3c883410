r"""`backend="native"` under `jax.jit`, `jax.grad` and `jax.vjp`: the C solver as a JAX
primitive with a reverse-mode rule.

The forward solve is a `jax.pure_callback` into the compiled Rodas4 (`qsp/_native.py`).
Its VJP is the *discrete adjoint* of that solver (`qsp/_rodas4_adj.c`): the forward
pass under `jax.grad` records every accepted step (state, stages, LU factors) on a
tape in C memory; the backward pass walks the tape in reverse, transposing each stage
(transposed triangular solves with the recorded factors, $f$'s VJP at each stage
point, and the VJP of $(f_t, J)$ for the step's Jacobian), so the gradient is that of
the computed solution (step sizes held fixed, as diffrax does), not of a second,
differently discretised ODE. Everything before and after the C call (the dosing
schedule from the model's parameters, the initial state, the outputs) stays in JAX
and is differentiated by JAX; the callback returns cotangents for the per-patient
parameters, initial states, bolus vectors, infusion inputs and segment boundaries
(the last by the jump condition of a trajectory with an event; see the C file).

Tapes live between the forward and the backward call in a registry capped by
`$QSP_NATIVE_TAPE_MB` (default 2048 MB; CRS at rtol 1e-6 takes ~3.7 MB per
patient). The forward records tapes block by block while the population's tapes fit
under that cap and solves the remaining patients without one; the backward call
records those (and any evicted population, or a second pullback of `jax.vjp`) again,
in chunks that fit the cap, each chunk's adjoint run before the next is recorded. So
memory stays bounded whatever the population, and a population whose tapes do not
all fit pays one extra forward solve for the patients that did not fit, not for all of
them (benchmarks/NOTES.md section 22). Results never depend on the registry or the
chunks, only the time does.

Limits: reverse mode only (`jax.jvp`/`jax.jacfwd` through it raise: use
`backend="jax"` with `adjoint="forward"`), `exact_save=True`, and gradients w.r.t.
save times are zero (they are not differentiable inputs here). A failed patient
(non-zero status) gets NaN outputs, as in the JAX backend, and zero cotangents,
so a loss that masks failed patients stays finite.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np

from ._solution import Status

_REG_LOCK = threading.Lock()
_REGISTRY: OrderedDict = OrderedDict()  # handle -> _Tapes
_HANDLES = itertools.count(1)


def _cap_bytes() -> int:
    return int(float(os.environ.get("QSP_NATIVE_TAPE_MB", "2048")) * 2**20)


class _Tapes:
    """One population's tapes (C pointers, freed once)."""

    def __init__(self, kernel, ptrs, nbytes):
        self.kernel, self.ptrs, self.nbytes = kernel, ptrs, int(nbytes)

    def free(self):
        if self.ptrs is not None:
            self.kernel._free_fn(len(self.ptrs), ctypes.addressof(self.ptrs))
            self.ptrs = None

    __del__ = free


def _split(b, workers):
    workers = max(1, min(int(workers), b))
    edges = np.linspace(0, b, 4 * workers + 1).astype(int) if workers > 1 else np.array([0, b])
    return workers, [(int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]


def _c(a, dt):
    return np.ascontiguousarray(a, dtype=dt)


#: Patients per recording block (times the threads): the forward checks its tape budget
#: between blocks.
_TAPE_BLOCK = 16


def solve_tape(kernel, params, y0, B, dose, u, ts, owner, invalid, rtol, atol, max_steps, workers, budget=None):
    """Forward solve recording tapes: (states, status, steps, _Tapes). With a `budget`
    (bytes), blocks of patients are recorded until their tapes reach it and the rest are
    solved without a tape (listed in `_Tapes.missing`)."""
    b, n_seg, n_ts = B.shape[0], B.shape[1] - 1, ts.shape[1]
    params = _c(params if kernel.p else np.zeros((b, 1)), np.float64)
    y0, B, dose, u, ts = (_c(a, np.float64) for a in (y0, B, dose, u, ts))
    owner, invalid = _c(owner, np.int32), _c(np.broadcast_to(invalid, (b,)), np.int32)
    out = np.empty((b, n_ts, kernel.n))
    status = np.empty(b, dtype=np.int32)
    steps = np.empty(b, dtype=np.int64)
    ptrs = (ctypes.c_void_p * b)()
    nbytes = np.zeros(b, dtype=np.int64)
    base = ctypes.addressof(ptrs)
    kernel._pool_fn(_cap_bytes())

    def run(lo, hi):
        kernel._tape_fn(hi - lo, n_seg, n_ts, *(a[lo:].ctypes.data for a in (params, y0, B, dose, u, ts, owner, invalid)),
                        float(rtol), float(atol), int(max_steps), out[lo:].ctypes.data, status[lo:].ctypes.data,
                        steps[lo:].ctypes.data, base + lo * ctypes.sizeof(ctypes.c_void_p), nbytes[lo:].ctypes.data)

    def run_range(lo, hi):
        w, blocks = _split(hi - lo, workers)
        if w == 1:
            run(lo, hi)
        else:
            with ThreadPoolExecutor(w) as pool:
                list(pool.map(lambda lh: run(lo + lh[0], lo + lh[1]), blocks))

    done = b
    if budget is None:
        run_range(0, b)
    else:
        step = _TAPE_BLOCK * max(1, int(workers))
        done = 0
        while done < b and nbytes[:done].sum() < budget:
            run_range(done, min(b, done + step))
            done = min(b, done + step)
        if done < b:  # over budget: the rest without tapes (recorded again by the backward)
            o, st, sp = kernel.solve(params[done:], y0[done:], B[done:], dose[done:], u[done:], ts[done:],
                                     owner[done:], invalid[done:], rtol, atol, max_steps, workers, True)
            out[done:], status[done:], steps[done:] = o, st, sp
    tapes = _Tapes(kernel, ptrs, nbytes.sum())
    tapes.missing = np.arange(done, b)
    return out, status, steps, tapes


def adjoint(kernel, tapes, params, B, dose, u, owner, ybar, workers):
    """Cotangents (y0, params, dose, u, B) from tapes and the states' cotangent."""
    b, n_seg, n_ts = B.shape[0], B.shape[1] - 1, owner.shape[1]
    n = kernel.n
    params = _c(params if kernel.p else np.zeros((b, 1)), np.float64)
    B, dose, u, ybar = (_c(a, np.float64) for a in (B, dose, u, ybar))
    owner = _c(owner, np.int32)
    y0b, pb = np.empty((b, n)), np.empty((b, params.shape[1]))
    db, ub, Bb = np.empty((b, n_seg, n)), np.empty((b, n_seg, n)), np.empty((b, n_seg + 1))
    base = ctypes.addressof(tapes.ptrs)

    def run(lo, hi):
        kernel._adj_fn(hi - lo, n_seg, n_ts, base + lo * ctypes.sizeof(ctypes.c_void_p),
                       *(a[lo:].ctypes.data for a in (params, B, dose, u, owner, ybar, y0b, pb, db, ub, Bb)))

    workers, blocks = _split(b, workers)
    if workers == 1:
        run(0, b)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda lh: run(*lh), blocks))
    return y0b, pb[:, :kernel.p], db, ub, Bb


def _register(tapes) -> int:
    handle = next(_HANDLES)
    with _REG_LOCK:
        _REGISTRY[handle] = tapes
        total = sum(t.nbytes for t in _REGISTRY.values())
        # The newest stays (its forward kept its tapes within about the cap already).
        while len(_REGISTRY) > 1 and total > _cap_bytes():
            _, old = _REGISTRY.popitem(last=False)
            total -= old.nbytes
            old.free()
    return handle


def _take(handle):
    with _REG_LOCK:
        return _REGISTRY.pop(int(handle), None)


def native_states(kernel, rtol, atol, max_steps, workers):
    """`(params, y0, B, dose, u, ts, owner, invalid) -> (states, status, steps)`, traceable,
    with the discrete adjoint as its VJP (see the module docstring)."""
    n = kernel.n

    def shapes(B, ts):
        b, n_ts = B.shape[0], ts.shape[1]
        return (jax.ShapeDtypeStruct((b, n_ts, n), jnp.float64), jax.ShapeDtypeStruct((b,), jnp.int32),
                jax.ShapeDtypeStruct((b,), jnp.int64))

    def host_solve(params, y0, B, dose, u, ts, owner, invalid):
        out, status, steps = kernel.solve(np.asarray(params), np.asarray(y0), np.asarray(B), np.asarray(dose),
                                          np.asarray(u), np.asarray(ts), np.asarray(owner),
                                          np.broadcast_to(np.asarray(invalid), (B.shape[0],)), rtol, atol,
                                          max_steps, workers, True)
        return out, status, steps

    def host_tape(*args):
        out, status, steps, tapes = solve_tape(kernel, *(np.asarray(a) for a in args), rtol, atol, max_steps, workers,
                                               budget=_cap_bytes())
        return out, status, steps, np.asarray(_register(tapes), dtype=np.int64)

    def host_adjoint(handle, params, y0, B, dose, u, ts, owner, invalid, ybar):
        args = [np.asarray(a) for a in (params, y0, B, dose, u, ts, owner, invalid)]
        args[-1] = np.broadcast_to(args[-1], (args[2].shape[0],))
        b = args[2].shape[0]
        tapes = _take(handle)
        per = None
        if tapes is None:  # evicted, or a second pullback: every patient recorded again
            missing, res = np.arange(b), None
        else:
            missing = tapes.missing
            try:
                res = adjoint(kernel, tapes, args[0], args[2], args[3], args[4], args[6], np.asarray(ybar), workers)
            finally:
                recorded = b - len(missing)
                per = tapes.nbytes / recorded if recorded and tapes.nbytes else None
                tapes.free()
        if len(missing) == 0:
            return res
        if res is None:
            n, p, n_seg = kernel.n, kernel.p, args[2].shape[1] - 1
            res = (np.zeros((b, n)), np.zeros((b, p)), np.zeros((b, n_seg, n)), np.zeros((b, n_seg, n)),
                   np.zeros((b, n_seg + 1)))
        # Chunks whose tapes fit the cap: record, take the adjoint, free, next.
        chunk = int(max(1, _cap_bytes() // per)) if per else _TAPE_BLOCK * max(1, int(workers))
        for lo in range(0, len(missing), chunk):
            idx = missing[lo:lo + chunk]
            sub = [a[idx] for a in args]
            *_, t = solve_tape(kernel, *sub, rtol, atol, max_steps, workers)
            try:
                part = adjoint(kernel, t, sub[0], sub[2], sub[3], sub[4], sub[6], np.asarray(ybar)[idx], workers)
            finally:
                t.free()
            for full, got in zip(res, part):
                full[idx] = got
        return res

    @jax.custom_vjp
    def states(params, y0, B, dose, u, ts, owner, invalid):
        return jax.pure_callback(host_solve, shapes(B, ts), params, y0, B, dose, u, ts, owner, invalid,
                                 vmap_method="sequential")

    def fwd(params, y0, B, dose, u, ts, owner, invalid):
        out = jax.pure_callback(host_tape, (*shapes(B, ts), jax.ShapeDtypeStruct((), jnp.int64)),
                                params, y0, B, dose, u, ts, owner, invalid, vmap_method="sequential")
        return out[:3], (out[3], params, y0, B, dose, u, ts, owner, invalid)

    def bwd(res, cts):
        handle, params, y0, B, dose, u, ts, owner, invalid = res
        ybar = jnp.where(jnp.isfinite(cts[0]), cts[0], 0.0)
        res_shapes = tuple(jax.ShapeDtypeStruct(a.shape, jnp.float64) for a in (y0, params, dose, u, B))
        y0b, pb, db, ub, Bb = jax.pure_callback(host_adjoint, res_shapes, handle, params, y0, B, dose, u, ts,
                                                owner, invalid, ybar, vmap_method="sequential")
        return pb, y0b, Bb, db, ub, jnp.zeros_like(ts), None, None

    states.defvjp(fwd, bwd)
    return states


def simulate_traced(args, axes, t0, rtol, atol, max_steps, workers, exact_save):
    """The native backend inside a JAX trace: (states, outputs, status, steps), one batch."""
    from ._native import _outputs_batch, _prepare, kernel_for

    if not exact_save:
        raise ValueError("backend='native' under jax.jit/jax.grad needs exact_save=True (the adjoint "
                         "differentiates the steps that land on the save times).")
    model, reg_arrays, cidx, ts, after, invalid = args
    m_ax = axes[0]
    kernel = kernel_for(model, m_ax, adjoint=True)
    params, y0, B, dose, u, ts_b, owner = _prepare(model, reg_arrays, cidx, ts, after, t0, axes[:5])
    b = B.shape[0]
    inv = jnp.broadcast_to(jnp.asarray(invalid, dtype=bool), (b,))
    ys, status, steps = native_states(kernel, float(rtol), float(atol), int(max_steps), int(workers))(
        params, y0, B, dose, u, ts_b, owner.astype(jnp.int32), inv)
    ys = jnp.where((status == Status.SUCCESS)[:, None, None], ys, jnp.nan)
    outs = _outputs_batch(model, ts_b, ys, m_ax)
    return ys, outs, status, steps
