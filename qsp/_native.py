r"""`simulate(..., backend="native")`: each patient solved by compiled C, outside XLA.

Why: on a CPU, a vmapped population solve steps all patients of a chunk in lock-step
through many small XLA kernels; the 29-state CRS model spent ~36 us per patient-step
where the arithmetic needs a few (benchmarks/NOTES.md sections 13, 15). Here the
vector field and its Jacobian are generated as straight C from the model's jaxpr
(`qsp/_codegen.py`), pasted into a fixed Rodas4 solver (`qsp/_rodas4.c`: the tableau of
`qsp.Rodas4`, the JAX backend's dosing segments, and either exact landing on the save
times or, with `exact_save=False`, its cubic Hermite dense output),
compiled once per model structure with the system C compiler and cached on disk, and
called through `ctypes` (which releases the GIL, so `workers` threads use that many
cores in one process).

What stays in JAX: the dosing schedule of each patient (the same `_breakpoints` as
the JAX backend), the initial state and the outputs, each one jitted call per chunk.

Under `jax.jit`/`jax.grad` the same kernel runs as a callback whose VJP is Rodas4's
discrete adjoint in C (`qsp/_native_grad.py`, `qsp/_rodas4_adj.c`; reverse mode
only). Limits, by design: the solver is always Rodas4 with an exact Jacobian; vector fields with loops or state-dependent
indexing are refused with the primitive's name (`NativeUnsupported`). Results agree
with the JAX backend to the step tolerances, not bit for bit (a different step-size
controller history), which `tests/test_native.py` checks against an independent solver.

Compiler: `$CC` or `cc`; the shared libraries are cached in `$QSP_NATIVE_CACHE`
(default `~/.cache/qsp/native`), keyed by a hash of the source and flags.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._codegen import QSP_VLIBM_HEAD, NativeUnsupported, c_function
from ._sparse_lu import c_sparse_lu
from ._solution import Status

# -O3 -march=native: the straight-line LU and solves ~1.5x faster than -O2 on the CRS
# model (benchmarks/NOTES.md section 16); the cache key then carries the CPU's identity,
# so a cache shared between different machines never loads a foreign binary. Plain -O2
# is the fallback for a compiler that refuses -march=native.
# -fno-math-errno: nothing reads errno, and without it every sqrt/exp/log is a call that
# the compiler may neither inline nor merge.
_OPT = tuple(os.environ.get("QSP_NATIVE_CFLAGS", "-O3 -march=native -fno-math-errno").split())
_BASE = ("-std=c11", "-shared", "-fPIC")


def _cpu_id() -> str:
    import platform

    ident = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            ident += "".join(sorted({ln for ln in f if ln.startswith(("model name", "flags", "Features"))}))
    except OSError:
        pass
    return ident
_LOCK = threading.Lock()
_LIBS: dict[str, ctypes.CDLL] = {}


def _cache_dir() -> Path:
    d = os.environ.get("QSP_NATIVE_CACHE")
    return Path(d) if d else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qsp" / "native"


def _compiler() -> str:
    cc = os.environ.get("CC", "cc")
    path = shutil.which(cc)
    if path is None:
        raise RuntimeError(
            f"backend='native' needs a C compiler; `{cc}` was not found on PATH. Install one "
            "(e.g. `apt install gcc`), set CC=/path/to/compiler, or use backend='jax'."
        )
    return path


def _load(src: str) -> ctypes.CDLL:
    """Compile `src` to a shared library (once: cached on disk by hash) and load it."""
    key = hashlib.sha256((src + "\0" + " ".join(_OPT) + "\0" + _cpu_id()).encode()).hexdigest()[:24]
    with _LOCK:
        if key in _LIBS:
            return _LIBS[key]
        cache = _cache_dir()
        so = cache / f"qsp_{key}.so"
        if not so.exists():
            cc = _compiler()
            try:
                cache.mkdir(parents=True, exist_ok=True)
                if not os.access(cache, os.W_OK):
                    raise PermissionError(cache)
            except OSError:  # a read-only home (some CI runners): a private temporary cache
                cache = Path(tempfile.gettempdir()) / f"qsp-native-{os.getuid() if hasattr(os, 'getuid') else 0}"
                cache.mkdir(parents=True, exist_ok=True)
                so = cache / so.name
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                c_file = Path(tmp) / "model.c"
                c_file.write_text(src)
                out = Path(tmp) / "model.so"
                # With glibc's vector libm where it links (x86-64 Linux); else scalar calls.
                proc = subprocess.run([cc, *_OPT, *_BASE, "-DQSP_LIBMVEC", "-o", str(out), str(c_file), "-lmvec",
                                       "-lm"], capture_output=True, text=True)
                if proc.returncode != 0:
                    proc = subprocess.run([cc, *_OPT, *_BASE, "-o", str(out), str(c_file), "-lm"],
                                          capture_output=True, text=True)
                if proc.returncode != 0 and "QSP_NATIVE_CFLAGS" not in os.environ:
                    proc = subprocess.run([cc, "-O2", *_BASE, "-o", str(out), str(c_file), "-lm"],
                                          capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RuntimeError(f"compiling the native model failed ({cc}):\n{proc.stderr[-4000:]}")
                os.replace(out, so)  # atomic: concurrent processes see a whole file or none
        _LIBS[key] = lib = ctypes.CDLL(str(so))
        return lib


_HEAD = ("#include <math.h>\n" + QSP_VLIBM_HEAD +
         "static inline double qsp_max(double a, double b) { return (a > b || a != a) ? a : b; }\n"
         "static inline double qsp_min(double a, double b) { return (a < b || a != a) ? a : b; }\n")


def native_function(fn, in_avals):
    """`fn` (arrays in, arrays out, float64) compiled to C: a NumPy callable.

    For testing the generator against `fn` itself; the solver uses the same path."""
    src, outs, _ = c_function(fn, in_avals, "qsp_fn")
    shapes = [o.shape for o in outs]
    n_in = len(in_avals)
    args = ", ".join([f"const double* in{k}" for k in range(n_in)] + [f"double* out{k}" for k in range(len(outs))])
    call = ", ".join([f"in{k}" for k in range(n_in)] + [f"out{k}" for k in range(len(outs))])
    lib = _load(_HEAD + src + f"void qsp_call({args}) {{ qsp_fn({call}); }}\n")
    f = lib.qsp_call
    f.restype, f.argtypes = None, [ctypes.c_void_p] * (n_in + len(outs))

    def call_(*xs):
        ins = [np.ascontiguousarray(np.broadcast_to(np.asarray(x, dtype=np.float64), av.shape)) for x, av in zip(xs, in_avals)]
        res = [np.empty(s) for s in shapes]
        f(*(a.ctypes.data for a in ins), *(r.ctypes.data for r in res))
        return res

    return call_


def _flat_params(model) -> jax.Array:
    """A patient's floating parameters as one vector (the C model's `p`)."""
    leaves = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
    if not leaves:
        return jnp.zeros((0,))
    return jnp.concatenate([jnp.ravel(jnp.asarray(x, dtype=float)) for x in leaves])


# The C methods (qsp_solve's last argument): Rodas4 (qsp/_rodas4.c, with the adjoint)
# and the variable-order BDF (qsp/_bdf.c, forward only).
_METHODS = {"rodas4": 0, "bdf": 1}


class Kernel:
    """A model's compiled C solver (see the module docstring)."""

    def __init__(self, model, sparse_lu: bool = True, adjoint: bool = False):
        dyn, static = eqx.partition(model, eqx.is_inexact_array)
        leaves, treedef = jax.tree.flatten(dyn)
        shapes = [jnp.shape(x) for x in leaves]
        sizes = [int(np.prod(s, dtype=int)) for s in shapes]
        self.n, self.p = model.n_states, int(sum(sizes))
        self.adjoint = adjoint

        def f(t, y, p):
            parts, o = [], 0
            for shape, size in zip(shapes, sizes):
                parts.append(p[o:o + size].reshape(shape))
                o += size
            m = eqx.combine(jax.tree.unflatten(treedef, parts), static)
            return jnp.asarray(m.rhs(t, y), dtype=float)

        sd = jax.ShapeDtypeStruct
        avals = (sd((), float), sd((self.n,), float), sd((self.p,), float))
        rhs, _, nq_rhs = c_function(f, avals, "qsp_rhs", hoist=(2,))
        # Structural zeros of J (and f_t) are never written: the solver zeroes them once.
        jac_f = jax.jacfwd(f, argnums=(0, 1))
        jac, (_, J), nq_jac = c_function(jac_f, avals, "qsp_jac", hoist=(2,), skip_zeros=True)
        # The entries the generated Jacobian can make non-zero (the rest folded to 0.0).
        self.pattern = np.array([[not (isinstance(x, float) and x == 0.0) for x in row] for row in J])
        lu = ""
        if sparse_lu and self.n > 1:
            lu, self.lu_entries, self.lu_madds = c_sparse_lu(self.pattern)
        here = Path(__file__)
        template = here.with_name("_rodas4.c").read_text() + here.with_name("_bdf.c").read_text()
        head = _HEAD + (f"#define QSP_N {self.n}\n#define QSP_P {max(self.p, 1)}\n"
                        f"#define QSP_NQR {max(nq_rhs, 1)}\n#define QSP_NQJ {max(nq_jac, 1)}\n")
        self.source = head + rhs + jac + lu + template
        if adjoint:
            self.source += _adjoint_source(f, jac_f, avals, self.n, self.p, self.pattern)
        lib = _load(self.source)
        self._fn = fn = lib.qsp_solve
        fn.restype = None
        fn.argtypes = ([ctypes.c_int] * 3 + [ctypes.c_void_p] * 8 + [ctypes.c_double] * 2 + [ctypes.c_int] * 2
                       + [ctypes.c_void_p] * 3 + [ctypes.c_int])
        if adjoint:
            self._tape_fn, self._adj_fn, self._free_fn = lib.qsp_solve_tape, lib.qsp_adjoint, lib.qsp_tape_free
            self._tape_fn.restype = self._adj_fn.restype = self._free_fn.restype = None
            self._tape_fn.argtypes = ([ctypes.c_int] * 3 + [ctypes.c_void_p] * 8 + [ctypes.c_double] * 2
                                      + [ctypes.c_int] + [ctypes.c_void_p] * 5)
            self._adj_fn.argtypes = [ctypes.c_int] * 3 + [ctypes.c_void_p] * 12
            self._free_fn.argtypes = [ctypes.c_int, ctypes.c_void_p]
            self._pool_fn = lib.qsp_tape_pool_limit
            self._pool_fn.restype, self._pool_fn.argtypes = None, [ctypes.c_longlong]

    def solve(self, params, y0, B, dose, u, ts, owner, invalid, rtol, atol, max_steps, workers=1, exact_save=True,
              method="rodas4"):
        """Solve a batch (row = patient) by `method` ("rodas4" or "bdf"); returns
        (states, status, steps)."""
        meth = _METHODS[method]
        b, n_seg, n_ts = B.shape[0], B.shape[1] - 1, ts.shape[1]
        c = lambda a, dt: np.ascontiguousarray(a, dtype=dt)
        params = c(params if self.p else np.zeros((b, 1)), np.float64)
        y0, B, dose, u, ts = (c(a, np.float64) for a in (y0, B, dose, u, ts))
        owner, invalid = c(owner, np.int32), c(invalid, np.int32)
        out = np.empty((b, n_ts, self.n))
        status = np.empty(b, dtype=np.int32)
        steps = np.empty(b, dtype=np.int64)

        def run(lo, hi):
            if hi <= lo:
                return
            self._fn(hi - lo, n_seg, n_ts, *(a[lo:].ctypes.data for a in (params, y0, B, dose, u, ts, owner, invalid)),
                     float(rtol), float(atol), int(max_steps), int(bool(exact_save)), out[lo:].ctypes.data, status[lo:].ctypes.data,
                     steps[lo:].ctypes.data, meth)

        workers = max(1, min(int(workers), b))
        if workers == 1:
            run(0, b)
        else:  # ctypes drops the GIL for the call: one core per thread
            # Interleaved blocks balance patients of unequal stiffness across threads.
            edges = np.linspace(0, b, 4 * workers + 1).astype(int)
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda i: run(edges[i], edges[i + 1]), range(len(edges) - 1)))
        return out, status, steps


def _adjoint_source(f, jac_f, avals, n, p, pattern) -> str:
    """The adjoint's generated part and `qsp/_rodas4_adj.c`: f's VJP (`qsp_vjp`, one per
    stage point) and the step's VJP at its start (`qsp_svjp`): the VJP of
    $(f, f_t, J)(t, y)$ with cotangents $(\bar r_0, \bar f_t, \bar J)$, where
    $\bar J = \sum_s \bar r_s k_s^T$ is formed inside on J's pattern from the six
    stages' $(\bar r_s, k_s)$. One function, so stage 0's VJP and the Jacobian's share
    their primal (the emitter's common subexpressions) and $\bar J$ never goes
    through memory."""
    sd = jax.ShapeDtypeStruct
    rows, cols = (np.asarray(a, dtype=int) for a in np.nonzero(pattern))

    def vjp(t, y, q, w):
        return jax.vjp(lambda y, q: f(t, y, q), y, q)[1](w)

    def svjp(t, y, q, rb0, ftb, RB, K):
        Jb = jnp.zeros((n, n), dtype=float)
        if len(rows):
            Jb = Jb.at[rows, cols].set(jnp.sum(RB[:, rows] * K[:, cols], axis=0))
        return jax.vjp(lambda y, q: (f(t, y, q), jac_f(t, y, q)), y, q)[1]((rb0, (ftb, Jb)))

    vec, stages = sd((n,), float), sd((6, n), float)
    v_src, _, nq_v = c_function(vjp, avals + (vec,), "qsp_vjp", hoist=(2,))
    s_src, _, nq_s = c_function(svjp, avals + (vec, vec, stages, stages), "qsp_svjp", hoist=(2,))
    # step_back's stage loop is unrolled (qsp/_rodas4_adj.c): an inlined VJP would be
    # copied five times. A large one (CRS: ~1,700 lines) then spills the instruction
    # cache: kept out of line it made the CRS gradient 8% faster; small ones (pk2cmt) stay
    # inline, where the call costs more than it saves (NOTES section 22).
    if v_src.count("\n") > _INLINE_VJP_LINES:
        v_src = v_src.replace("static void qsp_vjp(", "__attribute__((noinline)) static void qsp_vjp(", 1)
    head = f"#define QSP_NQV {max(nq_v, 1)}\n#define QSP_NQSV {max(nq_s, 1)}\n"
    return head + v_src + s_src + (Path(__file__).with_name("_rodas4_adj.c")).read_text()


_INLINE_VJP_LINES = 1000  # measured: CRS (1,700 lines) gains out of line, pk2cmt (44) loses

_KERNELS: dict = {}


def kernel_for(model, m_axes, adjoint: bool = False) -> Kernel:
    """The compiled kernel of a (per-patient) model, reused across calls in a process."""
    for (path, ax), leaf in zip(jax.tree_util.tree_leaves_with_path(m_axes, is_leaf=lambda x: x is None),
                                jax.tree.leaves(model, is_leaf=lambda x: x is None)):
        if ax == 0 and not eqx.is_inexact_array(leaf):
            raise NativeUnsupported(
                f"parameter {jax.tree_util.keystr(path)} varies across patients but is not a "
                "floating-point array; backend='native' bakes such values into the C code. "
                "Use backend='jax'."
            )
    one = jax.tree.map(lambda ax, x: x if ax is None else x[0], m_axes, model, is_leaf=lambda x: x is None)
    dyn, static = eqx.partition(one, eqx.is_inexact_array)
    key = None
    try:
        key = (jax.tree.structure(dyn), static, adjoint)
        hash(key)
    except TypeError:  # an unhashable static field: build (the disk cache still saves the compile)
        key = None
    if key is not None and key in _KERNELS:
        return _KERNELS[key]
    k = Kernel(one, adjoint=adjoint)
    if key is not None:
        _KERNELS[key] = k
    return k


@eqx.filter_jit
def _prepare(model, reg_arrays, cidx, ts, after, t0, axes):
    """Per patient: parameters, initial state, segments, bolus and infusion vectors."""
    from ._simulate import _breakpoints

    def one(m, r, c, t, a):
        bp = _breakpoints(m, *r, c, t, a, t0)
        ks = jnp.arange(bp.n_seg)
        return (_flat_params(m), bp.y0, bp.B, jax.vmap(bp.dose)(ks), jax.vmap(bp.infusion)(ks),
                jnp.broadcast_to(t, bp.owner.shape), bp.owner)

    m_ax, r_ax, c_ax, t_ax, a_ax = axes
    if all(ax is None for ax in jax.tree.leaves(axes)):
        return jax.tree.map(lambda x: x[None], one(model, reg_arrays, cidx, ts, after))
    return jax.vmap(one, in_axes=(m_ax, r_ax, c_ax, t_ax, a_ax))(model, reg_arrays, cidx, ts, after)


@eqx.filter_jit
def _outputs_batch(model, ts, ys, m_ax):
    from ._simulate import _outputs

    ts = jnp.broadcast_to(ts, ys.shape[:2])
    if all(ax is None for ax in jax.tree.leaves(m_ax)):
        return jax.vmap(lambda t, y: _outputs(model, t, y))(ts, ys)
    return jax.vmap(_outputs, in_axes=(m_ax, 0, 0))(model, ts, ys)


def simulate_native(args, axes, batch, t0, rtol, atol, max_steps, batch_size, workers, exact_save=True,
                    method="rodas4"):
    """The native backend of `qsp.simulate` (arguments as its internals prepare them).

    Returns (states, outputs, status, steps) as NumPy arrays, batched iff `batch`."""
    from ._simulate import _take

    model, reg_arrays, cidx, ts, after, invalid = args
    m_ax = axes[0]
    kernel = kernel_for(model, m_ax)
    size = 1 if batch is None else batch
    chunk = size if batch_size is None else max(1, min(size, int(batch_size)))
    parts = []

    def finish(job):
        fut, m, ts_b, keep = job
        ys, status, steps = fut.result()
        ys[status != Status.SUCCESS] = np.nan
        outs = {k: np.asarray(v) for k, v in _outputs_batch(m, jnp.asarray(ts_b), jnp.asarray(ys), m_ax).items()}
        parts.append((ys[:keep], {k: v[:keep] for k, v in outs.items()}, status[:keep], steps[:keep]))

    # A pipeline: chunk k is solved in C (its own threads) while this thread prepares
    # chunk k + 1 and computes the outputs of chunk k - 1 in JAX.
    pending = None
    with ThreadPoolExecutor(1) as solver_thread:
        for s in range(0, size, chunk):
            rows = np.minimum(np.arange(s, s + chunk), size - 1)
            a = args if batch is None else _take(args, axes, rows)
            m, r, c, t, af, inv = a
            params, y0, B, dose, u, ts_b, owner = (np.asarray(x) for x in _prepare(m, r, c, t, af, t0, axes[:5]))
            inv = np.broadcast_to(np.asarray(inv, dtype=bool), (B.shape[0],))
            fut = solver_thread.submit(kernel.solve, params, y0, B, dose, u, ts_b, owner, inv, rtol, atol,
                                       max_steps, workers, exact_save, method)
            if pending is not None:
                finish(pending)
            pending = (fut, m, ts_b, min(chunk, size - s))
        finish(pending)
    ys = np.concatenate([p[0] for p in parts])
    outs = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
    status = np.concatenate([p[2] for p in parts]).astype(np.int32)
    steps = np.concatenate([p[3] for p in parts])
    if batch is None:
        ts1 = np.asarray(ts)
        return ys[0], {k: v[0].reshape(ts1.shape) for k, v in outs.items()}, status[0], steps[0]
    return ys, outs, status, steps
