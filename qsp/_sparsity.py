r"""Structural sparsity of a Jacobian, read from the function's jaxpr, and column colouring.

`jacobian_sparsity(f, n)` returns the boolean pattern $S$ with $S_{ij}$ true wherever
$\partial f_i / \partial y_j$ can be non-zero for *some* input, by propagating, through
every equation of `jax.make_jaxpr(f)`, which input elements each array element depends
on. The pattern is a superset of the non-zeros of `jax.jacfwd(f)(y)` at every `y`:
unknown primitives, loops and data-dependent indexing are treated conservatively (every
output element depends on every input the equation sees), never optimistically. Two
exceptions follow the derivative rather than the value, as `jax.jacfwd` does:
comparisons, rounding and integer conversions have zero derivative, so they carry no
dependency (a `jnp.where(y0 > 1, y1, y2)` depends on y1 and y2 only).

`color_columns(S)` groups columns that share no row (a greedy distance-2 colouring,
largest columns first): one Jacobian-vector product per colour then recovers the whole
Jacobian, $J_{ij} = (J\,e_{c(j)})_i$ where $e_c$ is the sum of the unit vectors of
colour $c$ (Curtis, Powell & Reid, *IMA J Appl Math* 13:117, 1974).
"""

from __future__ import annotations

import numpy as np
import jax
import jax.extend as jex
import jax.numpy as jnp

# Elementwise: each output element depends on the same-index element of each operand
# (operands are equal-shaped or rank 0 in a jaxpr).
_ELEMENTWISE = frozenset("""
abs acos acosh add asin asinh atan atan2 atanh cbrt clamp conj copy copy_p cos cosh digamma
div erf erf_inv erfc exp exp2 expm1 imag integer_pow lgamma log log1p logistic max min mul
neg nextafter pow real reduce_precision rem rsqrt select_n sin sinh sqrt square sub tan tanh
""".split())
# Zero derivative everywhere (or almost everywhere): no dependency, as in jax.jacfwd.
_ZERO_DERIVATIVE = frozenset("""
and ceil eq floor ge gt is_finite le lt ne not or round sign stop_gradient xor
""".split())
# Linear in their floating operands with non-negative structure (moves, copies, sums):
# applied to 0/1 indicators they give a positive entry exactly where there is a path.
_LINEAR = frozenset("""
broadcast_in_dim concatenate cumsum dot_general dynamic_slice dynamic_update_slice gather
pad reduce_max reduce_min reduce_sum reshape rev scatter scatter-add slice squeeze stack
transpose
""".split())


def _is_float(aval) -> bool:
    return jnp.issubdtype(aval.dtype, jnp.inexact)


class _Dep:
    """What we know of one jaxpr variable: a concrete value (if computable without the
    input), and a boolean dependency array of shape `aval.shape + (n,)`."""

    __slots__ = ("value", "deps")

    def __init__(self, value, deps):
        self.value, self.deps = value, deps


def _none(aval, n):
    return np.zeros(tuple(aval.shape) + (n,), dtype=bool)


def _concrete(x):
    return None if isinstance(x, jax.core.Tracer) else x


def jacobian_sparsity(f, n: int, dtype=float) -> np.ndarray:
    """Boolean `(m, n)` pattern of `jax.jacfwd(f)` for `f: R^n -> R^m` (1-D in and out).

    A superset of the non-zeros at every input (see the module docstring). `f` may close
    over traced values (a model's parameters under `jax.vmap`): they are treated as
    constants independent of the input."""
    closed = jax.make_jaxpr(f)(jax.ShapeDtypeStruct((n,), dtype))
    jaxpr = closed.jaxpr
    if len(jaxpr.outvars) != 1 or len(jaxpr.outvars[0].aval.shape) != 1:
        raise ValueError(f"jacobian_sparsity: f must map a vector to one vector; got outputs "
                         f"{[v.aval for v in jaxpr.outvars]}")
    x = _Dep(None, np.eye(n, dtype=bool))
    consts = [_Dep(_concrete(c), _none(v.aval, n)) for v, c in zip(jaxpr.constvars, closed.consts)]
    # Called while tracing (a solver step under jit): the indicator arithmetic must run
    # now, not be staged into the caller's program.
    with jax.ensure_compile_time_eval():
        (out,) = _propagate(jaxpr, consts, [x], n)
    return out.deps


def _propagate(jaxpr, consts, inputs, n):
    env = {}

    def read(v):
        if isinstance(v, jex.core.Literal):
            return _Dep(v.val, _none(v.aval, n))
        return env[v]

    for v, d in zip(jaxpr.constvars, consts):
        env[v] = d
    for v, d in zip(jaxpr.invars, inputs):
        env[v] = d
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        outs = _equation(eqn, ins, n)
        for v, d in zip(eqn.outvars, outs):
            env[v] = d
    return [read(v) for v in jaxpr.outvars]


_CALLS = frozenset("""
checkpoint closed_call core_call custom_jvp_call custom_vjp_call custom_vjp_call_jaxpr jit pjit
remat remat2
""".split())


def _sub_jaxpr(eqn):
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = eqn.params.get(key)
        if sub is not None:
            return sub
    return None


def _equation(eqn, ins, n):
    name = eqn.primitive.name
    avals = [v.aval for v in eqn.outvars]
    if not any(d.deps.any() for d in ins):
        if any(_is_float(a) for a in avals) or any(d.value is None for d in ins):
            return [_Dep(None, _none(a, n)) for a in avals]  # floats' values are never needed
        try:  # input-independent integer arithmetic (indices): evaluate it
            vals = eqn.primitive.bind(*[d.value for d in ins], **eqn.params)
            vals = vals if eqn.primitive.multiple_results else [vals]
            return [_Dep(_concrete(v), _none(a, n)) for v, a in zip(vals, avals)]
        except Exception:  # a primitive we cannot run eagerly: fall through, no deps anyway
            return [_Dep(None, _none(a, n)) for a in avals]
    if name in _ZERO_DERIVATIVE:
        return [_Dep(None, _none(a, n)) for a in avals]
    outs = _dependent(eqn, name, ins, avals, n)
    for o, a in zip(outs, avals):
        if not _is_float(a):  # integer or boolean results carry no derivative
            o.deps = _none(a, n)
    return outs


def _dependent(eqn, name, ins, avals, n):
    if name in _ELEMENTWISE or name == "convert_element_type":
        (a,) = avals
        d = _none(a, n)
        for x in ins:
            d |= x.deps  # a rank-0 operand's (n,) broadcasts
        return [_Dep(None, d)]
    moved = _numpy_move(eqn, name, ins, n)
    if moved is not None:
        return [_Dep(None, moved)]
    sub = _sub_jaxpr(eqn) if name in _CALLS else None
    if sub is not None:
        closed = sub if hasattr(sub, "consts") else None
        inner = closed.jaxpr if closed is not None else sub
        consts = ([_Dep(_concrete(c), _none(v.aval, n)) for v, c in zip(inner.constvars, closed.consts)]
                  if closed is not None else [])
        k = len(inner.invars)
        return _propagate(inner, consts, ins[len(ins) - k:], n)
    if name == "cond":  # union over branches, each analysed; the index carries no derivative
        branches = eqn.params["branches"]
        outs = [_Dep(None, _none(a, n)) for a in avals]
        for br in branches:
            consts = [_Dep(_concrete(c), _none(v.aval, n)) for v, c in zip(br.jaxpr.constvars, br.consts)]
            for o, r in zip(outs, _propagate(br.jaxpr, consts, ins[1:], n)):
                o.deps |= r.deps
        return outs
    if name in _LINEAR:
        linear = _linear(eqn, ins, avals, n)
        if linear is not None:
            return linear
    # Anything else (loops, unknown primitives, data-dependent indices): every output
    # element depends on everything any input depends on.
    union = np.zeros(n, dtype=bool)
    for x in ins:
        union |= x.deps.reshape(-1, n).any(axis=0)
    return [_Dep(None, np.broadcast_to(union, tuple(a.shape) + (n,)).copy()) for a in avals]


def _numpy_move(eqn, name, ins, n):
    """The common structural primitives, applied to the dependency arrays in NumPy
    (the trailing axis is the input index); None for anything else."""
    p = eqn.params
    d = [x.deps for x in ins]
    if name == "slice":
        st = p["strides"] or (1,) * len(p["start_indices"])
        return d[0][tuple(slice(a, b, c) for a, b, c in zip(p["start_indices"], p["limit_indices"], st))]
    if name == "squeeze":
        return np.squeeze(d[0], axis=tuple(p["dimensions"]))
    if name == "reshape" and p.get("dimensions") is None:
        return d[0].reshape(tuple(p["new_sizes"]) + (n,))
    if name == "broadcast_in_dim":
        shape = list(p["shape"])
        src = [1] * len(shape)
        for i, dim in enumerate(p["broadcast_dimensions"]):
            src[dim] = d[0].shape[i]
        return np.broadcast_to(d[0].reshape(tuple(src) + (n,)), tuple(shape) + (n,)).copy()
    if name == "concatenate":
        return np.concatenate(d, axis=p["dimension"])
    if name == "stack":
        return np.stack(d, axis=p["axis"])
    if name == "transpose":
        return np.transpose(d[0], tuple(p["permutation"]) + (d[0].ndim - 1,))
    if name in ("reduce_sum", "reduce_max", "reduce_min"):
        return d[0].any(axis=tuple(p["axes"]))
    if name == "rev":
        return np.flip(d[0], axis=tuple(p["dimensions"]))
    return None


def _linear(eqn, ins, avals, n):
    """Apply a linear structural primitive to 0/1 indicators, one dependent operand at a
    time: the other floating operands as zeros (moves and sums: only the indicator's
    elements may reach the output) or, for products (`dot_general`), as ones; integer
    operands as their concrete values."""
    fill = jnp.ones if eqn.primitive.name == "dot_general" else jnp.zeros
    invars = eqn.invars
    dependent = [i for i, x in enumerate(ins) if x.deps.any()]
    for i, x in enumerate(ins):
        if not _is_float(invars[i].aval) and x.value is None:
            return None  # data-dependent index
    outs = [np.zeros(tuple(a.shape) + (n,), dtype=bool) for a in avals]
    for p in dependent:
        if not _is_float(invars[p].aval):
            return None

        def apply(ind, p=p):
            args = []
            for i, x in enumerate(ins):
                aval = invars[i].aval
                if i == p:
                    args.append(ind)
                elif _is_float(aval):
                    args.append(fill(aval.shape, aval.dtype))
                else:
                    args.append(jnp.asarray(x.value))
            r = eqn.primitive.bind(*args, **eqn.params)
            return r if eqn.primitive.multiple_results else [r]

        ind = jnp.asarray(ins[p].deps, dtype=invars[p].aval.dtype)
        try:
            res = jax.vmap(apply, in_axes=-1, out_axes=-1)(ind)
        except Exception:
            return None
        for o, r in zip(outs, res):
            o |= np.asarray(r) > 0
    return [_Dep(None, o) for o in outs]


def color_columns(pattern: np.ndarray) -> np.ndarray:
    """Colour of each column such that no two columns of one colour share a row."""
    pattern = np.asarray(pattern, dtype=bool)
    m, n = pattern.shape
    colors = -np.ones(n, dtype=int)
    row_colors = [set() for _ in range(m)]
    for j in sorted(range(n), key=lambda j: -int(pattern[:, j].sum())):
        rows = np.flatnonzero(pattern[:, j])
        used = set().union(*(row_colors[r] for r in rows)) if rows.size else set()
        c = 0
        while c in used:
            c += 1
        colors[j] = c
        for r in rows:
            row_colors[r].add(c)
    return colors
