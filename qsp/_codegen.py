r"""C source for a vector field, generated from its jaxpr (for the native backend).

`c_function(fn, in_avals, name)` traces `fn` with `jax.make_jaxpr` and *scalarises* it:
every array is held as a NumPy object array of scalars, each scalar either a Python
float (a constant known now) or the name of a C local. Elementwise primitives emit one
C statement per element; structural ones (slices, reshapes, concatenation, broadcasts)
only rearrange names; indexing with constant indices (gather, scatter, pad, ...) is
applied as the linear map it is, found by applying the primitive itself to unit
vectors. Constants fold as they meet: $0 \cdot x = 0$, $1 \cdot x = x$, $x + 0 = x$,
so the Jacobian of `jax.jacfwd` keeps only its structural non-zeros, written as straight
code. (One consequence: $0 \cdot x$ is $0$ even for a non-finite $x$; the native solver
checks the finiteness of every stage instead.)

Supported: the arithmetic, comparison, selection and transcendental primitives, moves
and reductions, `dot_general`, constant-index `gather`/`scatter`/`scatter-add`/`pad`/
`dynamic_slice`, nested `jit` and custom-derivative calls, and `cond`. Not supported:
loops (`while`, `scan`) and indices that depend on the state; `NativeUnsupported` says
which primitive, so the caller can fall back to the JAX backend.
"""

from __future__ import annotations

import heapq
import math
import re

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np


class NativeUnsupported(NotImplementedError):
    """The vector field uses something the C generator cannot express."""


class _Emitter:
    """Collects C statements; each new scalar is a `const double` local, or, when
    `varying` is given and the expression reads none of it (a function of the hoisted
    inputs alone, e.g. `log(EC50)` of a parameter), a slot `q[k]` of a separate
    precomputation, done once per patient instead of once per call."""

    def __init__(self, varying: re.Pattern | None = None):
        self.lines: list[str] = []
        self.pre: list[str] = []
        self.count = 0
        self.varying = varying
        self.seen: dict[str, str] = {}

    def new(self, expr: str) -> str:
        # Every expression is pure and reads only earlier names, so equal text is an equal
        # value: reuse it. This is what shares the primal between a function and its
        # derivatives traced together (the adjoint's fused step VJP), and it keeps libm
        # calls, which the C compiler may not merge (errno), from being repeated.
        name = self.seen.get(expr)
        if name is None:
            name = self.seen[expr] = self._new(expr)
        return name

    def _new(self, expr: str) -> str:
        if self.varying is not None and not self.varying.search(expr):
            name = f"q[{len(self.pre)}]"
            self.pre.append(f"  {name} = {expr};")
            return name
        name = f"v{self.count}"
        self.count += 1
        self.lines.append(f"  const double {name} = {expr};")
        return name


def _c(x) -> str:
    """A scalar as C text: a local's name or a literal."""
    if isinstance(x, str):
        return x
    x = float(x)
    if math.isnan(x):
        return "NAN"
    if math.isinf(x):
        return "INFINITY" if x > 0 else "(-INFINITY)"
    return repr(x)


def _const(x) -> bool:
    return not isinstance(x, str)


# C spelling of unary primitives (argument substituted for {0}).
_UNARY = {
    "neg": "(-{0})", "exp": "exp({0})", "log": "log({0})", "log1p": "log1p({0})",
    "expm1": "expm1({0})", "sqrt": "sqrt({0})", "rsqrt": "(1.0/sqrt({0}))", "cbrt": "cbrt({0})",
    "sin": "sin({0})", "cos": "cos({0})", "tan": "tan({0})", "tanh": "tanh({0})",
    "sinh": "sinh({0})", "cosh": "cosh({0})", "asin": "asin({0})", "acos": "acos({0})",
    "atan": "atan({0})", "asinh": "asinh({0})", "acosh": "acosh({0})", "atanh": "atanh({0})",
    "abs": "fabs({0})", "floor": "floor({0})", "ceil": "ceil({0})", "round": "round({0})",
    "logistic": "(1.0/(1.0+exp(-({0}))))", "erf": "erf({0})", "erfc": "erfc({0})",
    "sign": "(({0}) > 0 ? 1.0 : (({0}) < 0 ? -1.0 : ({0})))", "square": "(({0})*({0}))",
    "not": "(({0}) == 0.0 ? 1.0 : 0.0)", "is_finite": "(isfinite({0}) ? 1.0 : 0.0)",
    "exp2": "exp2({0})", "lgamma": "lgamma({0})",
}
_NUMPY_UNARY = {
    "neg": np.negative, "exp": np.exp, "log": np.log, "log1p": np.log1p, "expm1": np.expm1,
    "sqrt": np.sqrt, "sin": np.sin, "cos": np.cos, "tan": np.tan, "tanh": np.tanh, "abs": np.abs,
    "floor": np.floor, "ceil": np.ceil, "sinh": np.sinh, "cosh": np.cosh, "square": np.square,
    "logistic": lambda v: 1.0 / (1.0 + np.exp(-v)), "sign": np.sign,
}
_COMPARE = {"gt": ">", "lt": "<", "ge": ">=", "le": "<=", "eq": "==", "ne": "!="}
# Identities: the primitive passes its operand through (derivative bookkeeping only).
_IDENTITY = frozenset({"stop_gradient", "copy", "copy_p", "reduce_precision", "optimization_barrier"})
_CALLS = frozenset({"pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
                    "custom_vjp_call_jaxpr", "remat", "remat2", "checkpoint"})
# Linear in their floating operands once the integer operands (indices) are known.
_LINEAR_INDEXED = frozenset({"gather", "scatter", "scatter-add", "dynamic_slice", "dynamic_update_slice",
                             "pad", "cumsum", "rev", "transpose", "select_and_gather_add"})


class _Scalariser:
    def __init__(self, varying=None):
        self.em = _Emitter(varying)

    # -- scalar operations with constant folding ------------------------------------------
    def add(self, a, b):
        if _const(a) and _const(b):
            return float(a) + float(b)
        if _const(a) and a == 0:
            return b
        if _const(b) and b == 0:
            return a
        return self.em.new(f"{_c(a)} + {_c(b)}")

    def sub(self, a, b):
        if _const(a) and _const(b):
            return float(a) - float(b)
        if _const(b) and b == 0:
            return a
        if _const(a) and a == 0:
            return self.em.new(f"-{_c(b)}")
        return self.em.new(f"{_c(a)} - {_c(b)}")

    def mul(self, a, b):
        if _const(a) and _const(b):
            return float(a) * float(b)
        if (_const(a) and a == 0) or (_const(b) and b == 0):
            return 0.0
        if _const(a) and a == 1:
            return b
        if _const(b) and b == 1:
            return a
        if _const(a) and a == -1:
            return self.em.new(f"-{_c(b)}")
        if _const(b) and b == -1:
            return self.em.new(f"-{_c(a)}")
        return self.em.new(f"{_c(a)} * {_c(b)}")

    def div(self, a, b):
        if _const(a) and _const(b):
            with np.errstate(all="ignore"):
                return float(np.float64(a) / np.float64(b))
        if _const(a) and a == 0:
            return 0.0
        if _const(b) and b == 1:
            return a
        return self.em.new(f"{_c(a)} / {_c(b)}")

    def total(self, xs):
        acc = 0.0
        for x in xs:
            acc = self.add(acc, x)
        return acc

    # -- arrays ---------------------------------------------------------------------------
    def run(self, jaxpr, consts, inputs):
        env = {}

        def read(v):
            if isinstance(v, jex.core.Literal):
                return _obj(np.asarray(v.val))
            return env[v]

        for v, c in zip(jaxpr.constvars, consts):
            env[v] = _obj(np.asarray(c))
        for v, x in zip(jaxpr.invars, inputs):
            env[v] = x
        for eqn in jaxpr.eqns:
            outs = self.equation(eqn, [read(v) for v in eqn.invars])
            for v, o in zip(eqn.outvars, outs):
                env[v] = np.asarray(o, dtype=object).reshape(v.aval.shape)
        return [read(v) for v in jaxpr.outvars]

    def equation(self, eqn, ins):
        name = eqn.primitive.name
        p = eqn.params
        if all(all(_const(x) for x in a.flat) for a in ins) and name not in _CALLS and name != "cond":
            try:  # everything known now: evaluate (indices, iota, constant folding)
                vals = eqn.primitive.bind(*[jnp.asarray(np.asarray(a, dtype=float).astype(v.aval.dtype))
                                            for a, v in zip(ins, eqn.invars)], **p)
                vals = vals if eqn.primitive.multiple_results else [vals]
                return [_obj(np.asarray(v)) for v in vals]
            except Exception as e:  # pragma: no cover - a primitive that cannot run eagerly
                raise NativeUnsupported(f"cannot evaluate constant `{name}`: {e}") from e
        if name in _IDENTITY:
            return list(ins) if eqn.primitive.multiple_results else [ins[0]]
        if name == "add_any":  # the sum of tangents in autodiff
            name = "add"
        if name in ("add", "sub", "mul", "div", "max", "min", "pow", "atan2", "rem", "nextafter") \
                or name in _COMPARE or name in ("and", "or"):
            a, b = np.broadcast_arrays(*ins)
            return [self._map2(name, a, b)]
        if name in _UNARY:
            return [self._map1(name, ins[0])]
        if name == "integer_pow":
            return [self._map1(("integer_pow", p["y"]), ins[0])]
        if name == "convert_element_type":
            return [self._convert(ins[0], eqn.outvars[0].aval.dtype)]
        if name == "select_n":
            pred, *cases = np.broadcast_arrays(*ins)
            return [self._select(pred, cases)]
        if name == "clamp":
            lo, x, hi = np.broadcast_arrays(*ins)
            return [self._map2("min", self._map2("max", x, lo), hi)]
        if name == "split":
            cuts = np.cumsum(p["sizes"])[:-1]
            return np.split(ins[0], cuts, axis=p["axis"])
        if name == "unstack":  # the transpose of `stack`, met in reverse mode
            return [np.take(ins[0], i, axis=p["axis"]) for i in range(ins[0].shape[p["axis"]])]
        moved = _move(name, p, ins)
        if moved is not None:
            return [moved]
        if name in ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod"):
            return [self._reduce(name, ins[0], tuple(p["axes"]))]
        if name == "dot_general":
            return [self._dot_general(ins[0], ins[1], p["dimension_numbers"])]
        if name in _CALLS:
            sub = next((p[k] for k in ("jaxpr", "call_jaxpr", "fun_jaxpr") if p.get(k) is not None), None)
            if sub is None:
                raise NativeUnsupported(f"`{name}` without a jaxpr")
            inner = sub.jaxpr if hasattr(sub, "jaxpr") else sub
            consts = sub.consts if hasattr(sub, "consts") else []
            return self.run(inner, consts, ins[len(ins) - len(inner.invars):])
        if name == "cond":
            return self._cond(p["branches"], ins[0], ins[1:])
        if name in _LINEAR_INDEXED:
            return self._linear(eqn, ins)
        raise NativeUnsupported(
            f"primitive `{name}` is not supported by the native backend (loops and "
            "state-dependent indexing cannot be generated); use backend='jax'."
        )

    def _map1(self, op, a):
        out = np.empty(a.shape, dtype=object)
        for i, x in np.ndenumerate(a):
            out[i] = self._unary(op, x)
        return out

    def _unary(self, op, x):
        if isinstance(op, tuple):  # integer_pow
            y = op[1]
            if _const(x):
                return float(np.float64(x) ** y)
            if y == 0:
                return 1.0
            if y == 1:
                return x
            if 1 < abs(y) <= 4:
                r = x
                for _ in range(abs(y) - 1):
                    r = self.mul(r, x)
                return r if y > 0 else self.div(1.0, r)
            return self.em.new(f"pow({_c(x)}, {float(y)!r})")
        if _const(x) and op in _NUMPY_UNARY:
            with np.errstate(all="ignore"):
                return float(_NUMPY_UNARY[op](np.float64(x)))
        if op == "neg":
            return self.sub(0.0, x)
        if op == "logistic":  # exp on its own line, so `_batch_libm` can group it
            return self.em.new(f"(1.0/(1.0+{self.em.new(f'exp(-({_c(x)}))')}))")
        return self.em.new(_UNARY[op].format(_c(x)))

    def _map2(self, op, a, b):
        out = np.empty(a.shape, dtype=object)
        for i in np.ndindex(a.shape):
            out[i] = self._binary(op, a[i], b[i])
        return out

    def _binary(self, op, x, y):
        if op in ("add", "sub", "mul", "div"):
            return getattr(self, op)(x, y)
        if _const(x) and _const(y):
            X, Y = np.float64(x), np.float64(y)
            with np.errstate(all="ignore"):
                v = {"max": lambda: np.maximum(X, Y), "min": lambda: np.minimum(X, Y),
                     "pow": lambda: X ** Y, "atan2": lambda: np.arctan2(X, Y), "rem": lambda: np.fmod(X, Y),
                     "and": lambda: float(bool(X) and bool(Y)), "or": lambda: float(bool(X) or bool(Y)),
                     }.get(op, lambda: float(eval(f"X {_COMPARE[op]} Y")))()
            return float(v)
        a, b = _c(x), _c(y)
        if op in _COMPARE:
            return self.em.new(f"({a} {_COMPARE[op]} {b}) ? 1.0 : 0.0")
        c = {"max": f"qsp_max({a}, {b})", "min": f"qsp_min({a}, {b})", "pow": f"pow({a}, {b})",
             "atan2": f"atan2({a}, {b})", "rem": f"fmod({a}, {b})", "nextafter": f"nextafter({a}, {b})",
             "and": f"(({a}) != 0.0 && ({b}) != 0.0) ? 1.0 : 0.0",
             "or": f"(({a}) != 0.0 || ({b}) != 0.0) ? 1.0 : 0.0"}[op]
        return self.em.new(c)

    def _convert(self, a, dtype):
        if jnp.issubdtype(dtype, jnp.inexact):
            return a
        out = np.empty(a.shape, dtype=object)
        for i, x in np.ndenumerate(a):
            if dtype == jnp.bool_:
                out[i] = float(x != 0) if _const(x) else self.em.new(f"({x} != 0.0) ? 1.0 : 0.0")
            else:
                out[i] = float(np.trunc(np.float64(x))) if _const(x) else self.em.new(f"trunc({x})")
        return out

    def _select(self, pred, cases):
        out = np.empty(pred.shape, dtype=object)
        for i in np.ndindex(pred.shape):
            w = pred[i]
            if _const(w):
                out[i] = cases[int(w)][i]
                continue
            r = cases[-1][i]
            for k in range(len(cases) - 2, -1, -1):  # nested: w == k ? case_k : ...
                c = cases[k][i]
                if c is r or (_const(c) and _const(r) and c == r):
                    continue
                r = self.em.new(f"({w} == {float(k)!r}) ? {_c(c)} : {_c(r)}" if len(cases) > 2
                                else f"({w} != 0.0) ? {_c(r)} : {_c(c)}")
            out[i] = r
        return out

    def _reduce(self, name, a, axes):
        keep = [d for d in range(a.ndim) if d not in axes]
        moved = np.transpose(a, keep + list(axes)).reshape([a.shape[d] for d in keep] + [-1])
        out = np.empty(moved.shape[:-1], dtype=object)
        for i in np.ndindex(out.shape):
            xs = list(moved[i])
            if name == "reduce_sum":
                out[i] = self.total(xs)
            else:
                op = {"reduce_max": "max", "reduce_min": "min", "reduce_prod": "mul"}[name]
                r = xs[0]
                for x in xs[1:]:
                    r = self._binary(op, r, x)
                out[i] = r
        return out

    def _dot_general(self, lhs, rhs, dims):
        (lc, rc), (lb, rb) = dims
        lf = [d for d in range(lhs.ndim) if d not in lc and d not in lb]
        rf = [d for d in range(rhs.ndim) if d not in rc and d not in rb]
        L = np.transpose(lhs, list(lb) + lf + list(lc))
        R = np.transpose(rhs, list(rb) + rf + list(rc))
        nb = len(lb)
        bshape, lshape, rshape = L.shape[:nb], L.shape[nb:nb + len(lf)], R.shape[nb:nb + len(rf)]
        L = L.reshape(bshape + lshape + (-1,))
        R = R.reshape(bshape + rshape + (-1,))
        out = np.empty(bshape + lshape + rshape, dtype=object)
        for b in np.ndindex(bshape):
            for i in np.ndindex(lshape):
                for j in np.ndindex(rshape):
                    out[b + i + j] = self.total(self.mul(x, y) for x, y in zip(L[b + i], R[b + j]))
        return out

    def _cond(self, branches, index, ops):
        (w,) = index.reshape(-1)
        if _const(w):
            br = branches[int(np.clip(w, 0, len(branches) - 1))]
            return self.run(br.jaxpr, br.consts, ops)
        results = [self.run(br.jaxpr, br.consts, ops) for br in branches]
        pred = np.asarray(w, dtype=object)
        return [self._select(np.broadcast_to(pred, r[0].shape), list(r)) for r in zip(*results)]

    def _linear(self, eqn, ins):
        """Constant-index structural primitives: out = sum_k M_k @ in_k, each M_k found by
        applying the primitive to unit vectors (the other floating operands zero)."""
        invars = eqn.invars
        floating = [i for i, v in enumerate(invars) if jnp.issubdtype(v.aval.dtype, jnp.inexact)]
        for i, (v, a) in enumerate(zip(invars, ins)):
            if i not in floating and not all(_const(x) for x in a.flat):
                raise NativeUnsupported(f"`{eqn.primitive.name}` with state-dependent indices")
        outs_acc = None
        for k in floating:
            size = ins[k].size

            def apply(unit, k=k):
                args = []
                for i, (v, a) in enumerate(zip(invars, ins)):
                    if i == k:
                        args.append(unit.reshape(v.aval.shape))
                    elif i in floating:
                        args.append(jnp.zeros(v.aval.shape, v.aval.dtype))
                    else:
                        args.append(jnp.asarray(np.asarray(a, dtype=float).astype(v.aval.dtype)))
                r = eqn.primitive.bind(*args, **eqn.params)
                return r if eqn.primitive.multiple_results else [r]

            basis = jnp.eye(size, dtype=invars[k].aval.dtype)
            mats = jax.vmap(apply)(basis)  # each: (size, *out_shape)
            flat_in = ins[k].reshape(-1)
            contrib = []
            for m in mats:
                m = np.asarray(m).reshape(size, -1)
                col = np.empty(m.shape[1], dtype=object)
                for o in range(m.shape[1]):
                    nz = np.flatnonzero(m[:, o])
                    col[o] = self.total(self.mul(float(m[j, o]), flat_in[j]) for j in nz)
                contrib.append(col)
            if outs_acc is None:
                outs_acc = contrib
            else:
                outs_acc = [np.array([self.add(a, b) for a, b in zip(x, y)], dtype=object)
                            for x, y in zip(outs_acc, contrib)]
        return [o.reshape(v.aval.shape) for o, v in zip(outs_acc, eqn.outvars)]


def _obj(a: np.ndarray) -> np.ndarray:
    out = np.empty(a.shape, dtype=object)
    for i, x in np.ndenumerate(a):
        out[i] = float(x)
    return out


def _move(name, p, ins):
    """Primitives that only rearrange elements (no code)."""
    a = ins[0]
    if name == "slice":
        st = p["strides"] or (1,) * a.ndim
        return a[tuple(slice(s, e, k) for s, e, k in zip(p["start_indices"], p["limit_indices"], st))]
    if name == "squeeze":
        return np.squeeze(a, axis=tuple(p["dimensions"]))
    if name == "expand_dims":
        return np.expand_dims(a, tuple(p["dimensions"]))
    if name == "reshape" and p.get("dimensions") is None:
        return a.reshape(tuple(p["new_sizes"]))
    if name == "broadcast_in_dim":
        shape = tuple(p["shape"])
        src = [1] * len(shape)
        for i, d in enumerate(p["broadcast_dimensions"]):
            src[d] = a.shape[i]
        return np.broadcast_to(a.reshape(src), shape)
    if name == "concatenate":
        return np.concatenate(ins, axis=p["dimension"])
    if name == "stack":
        return np.stack(ins, axis=p["axis"])
    if name == "transpose":
        return np.transpose(a, tuple(p["permutation"]))
    if name == "rev":
        return np.flip(a, axis=tuple(p["dimensions"]))
    return None


def c_function(fn, in_avals, name: str, hoist: tuple[int, ...] = (),
               skip_zeros: bool = False, vector_libm: bool = True) -> tuple[str, list[np.ndarray], int]:
    """C source of `void name(const double* in0, ..., double* out0, ...)` computing `fn`.

    `in_avals`: `jax.ShapeDtypeStruct`s of the (array) inputs, read from their C
    pointers in row-major order; every output is written row-major to its pointer.
    `hoist`: indices of inputs that stay fixed across many calls (a patient's
    parameters): what depends on them alone goes to `void name_pre(in_h..., double* q)`,
    and `name` takes `const double* q` after its inputs. `skip_zeros`: outputs that are
    structurally zero are not written (the caller zeroes the buffers once).
    `vector_libm`: independent `exp`/`log` calls are grouped four at a time
    (`_batch_libm`; the source then needs `QSP_VLIBM_HEAD`).
    Returns the source, the outputs as object arrays of their scalars (a Python float
    where the value is a constant: `0.0` marks a structural zero), and the length of q."""
    closed = jax.make_jaxpr(fn)(*in_avals)
    varying = None
    if hoist:
        ks = "|".join(str(k) for k in range(len(in_avals)) if k not in hoist)
        varying = re.compile(r"\bv\d+\b" + (rf"|\bin(?:{ks})\[" if ks else ""))
    s = _Scalariser(varying)
    inputs = []
    for k, av in enumerate(in_avals):
        size = int(np.prod(av.shape, dtype=int))
        arr = np.array([f"in{k}[{i}]" for i in range(size)], dtype=object)
        inputs.append(arr.reshape(av.shape))
    with jax.ensure_compile_time_eval():
        outs = s.run(closed.jaxpr, closed.consts, inputs)
    args = [f"const double* restrict in{k}" for k in range(len(in_avals))]
    if hoist:
        args.append("const double* restrict q")
    args += [f"double* restrict out{k}" for k in range(len(outs))]
    body = _batch_libm(s.em.lines) if vector_libm else list(s.em.lines)
    for k, o in enumerate(outs):
        for i, x in enumerate(np.asarray(o, dtype=object).reshape(-1)):
            if not (skip_zeros and _const(x) and x == 0):
                body.append(f"  out{k}[{i}] = {_c(x)};")
    src = ""
    if hoist:
        pre_args = [f"const double* restrict in{k}" for k in hoist] + ["double* restrict q"]
        src += f"static void {name}_pre({', '.join(pre_args)}) {{\n" + "\n".join(s.em.pre) + "\n}\n"
    src += f"static void {name}({', '.join(args)}) {{\n" + "\n".join(body) + "\n}\n"
    return src, [np.asarray(o, dtype=object) for o in outs], len(s.em.pre)


# -- grouping libm calls ---------------------------------------------------------------

# A 4-lane call of glibc's vector libm (libmvec, AVX2) costs about 1.2 scalar calls here
# (5.3 ns per lane against 17 ns per scalar log + exp; benchmarks/NOTES.md section 20),
# and the Hill terms of the QSP models come as independent groups (a log per drug
# concentration, then an exp per Hill term). Elsewhere, or when the library does not
# link, the same calls run one lane at a time.
QSP_VLIBM_HEAD = """#if defined(QSP_LIBMVEC) && defined(__x86_64__) && defined(__AVX2__)
#include <immintrin.h>
__m256d _ZGVdN4v_exp(__m256d);
__m256d _ZGVdN4v_log(__m256d);
#define QSP_V4(F, n, a, b, c, d, o) _mm256_storeu_pd(o, _ZGVdN4v_##F(_mm256_set_pd(d, c, b, a)))
#else
#define QSP_V4(F, n, a, b, c, d, o) do { (o)[0] = F(a); (o)[1] = F(b); \\
    if ((n) > 2) (o)[2] = F(c); if ((n) > 3) (o)[3] = F(d); } while (0)
#endif
"""

_CALL = re.compile(r"^  const double (v\d+) = (exp|log)\((.*)\);$")
_DEF = re.compile(r"^  const double (v\d+) = ")
_NAME = re.compile(r"\bv\d+\b")


def _one_call(arg: str) -> bool:
    """Whether `arg` is the whole argument of one call (`a)+exp(b` is not)."""
    depth = 0
    for ch in arg:
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            return False
    return depth == 0


def _batch_libm(lines: list[str]) -> list[str]:
    """Reorder straight-line `const double` code so that independent `exp`/`log` calls
    meet, and emit them four lanes at a time (`QSP_V4`).

    A list schedule of the statements' dependency graph: every ready statement that is
    not one of these calls goes first (in its original order), which exposes as many
    calls as possible; then up to four ready calls of the most common function go as one
    vector call (a single one stays scalar). Values are unchanged up to the vector
    library's rounding (glibc documents at most 4 ulp)."""
    n = len(lines)
    defs, calls, deps = {}, [None] * n, []
    for i, line in enumerate(lines):
        m = _CALL.match(line)
        if m and _one_call(m.group(3)):
            calls[i] = (m.group(1), m.group(2), m.group(3))
        d = _DEF.match(line)
        deps.append({defs[v] for v in _NAME.findall(line[d.end():] if d else line) if v in defs})
        if d:
            defs[d.group(1)] = i
    users = [[] for _ in range(n)]
    indeg = [len(d) for d in deps]
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    plain: list[int] = []
    ready: dict[str, list[int]] = {"exp": [], "log": []}

    def push(i):
        heapq.heappush(ready[calls[i][1]] if calls[i] else plain, i)

    for i in range(n):
        if indeg[i] == 0:
            push(i)
    out, k = [], 0
    while True:
        if plain:
            take = [heapq.heappop(plain)]
            out.append(lines[take[0]])
        else:
            fn = max(ready, key=lambda f: len(ready[f]))
            if not ready[fn]:
                break
            take = [heapq.heappop(ready[fn]) for _ in range(min(4, len(ready[fn])))]
            if len(take) == 1:
                out.append(lines[take[0]])
            else:
                args = [calls[i][2] for i in take] + ["1.0"] * (4 - len(take))
                out.append(f"  double lm{k}[4]; QSP_V4({fn}, {len(take)}, {', '.join(args)}, lm{k});")
                out += [f"  const double {calls[i][0]} = lm{k}[{lane}];" for lane, i in enumerate(take)]
                k += 1
        for i in take:
            for u in users[i]:
                indeg[u] -= 1
                if indeg[u] == 0:
                    push(u)
    if len(out) - k != n:  # straight-line code has no cycles; this guards the parse
        raise AssertionError(f"libm grouping scheduled {len(out) - k} of {n} statements")
    return out
