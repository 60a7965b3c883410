"""SBML for a `qsp.ODEModel`, written from the jaxpr of its `rhs`, for peers such as
libRoadRunner.

Writing a 29-state model out by hand a second time invites transcription errors, so
the benchmark traces `model.rhs` with `jax.make_jaxpr` (the per-patient parameters as
inputs) and turns every equation into SBML: arithmetic into assignment rules
(`w<k> := expr`), index-moving operations (slice, reshape, stack, scatter of constant
indices, ...) into renamings. The peer is then checked against `qsp.simulate` before
anything is timed, so a conversion error cannot pass silently.

States become parameters `s<i>` with rate rules `ds<i>/dt = f_i + u<i>`, where `u<i>`
is a zero-order input (infusion rate) the caller sets per dosing segment. Per-patient
parameters become `p<j>`. Needs `python-libsbml` (the `bench` extra).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.extend.core import Literal
import numpy as np

_BIN = {"add": "({} + {})", "sub": "({} - {})", "mul": "({} * {})", "div": "({} / {})",
        "pow": "pow({}, {})", "gt": "({} > {})", "lt": "({} < {})", "ge": "({} >= {})",
        "le": "({} <= {})", "eq": "({} == {})", "ne": "({} != {})", "and": "({} && {})",
        "or": "({} || {})"}
_UN = {"neg": "(-{})", "exp": "exp({})", "log": "ln({})", "sqrt": "sqrt({})", "abs": "abs({})",
       "logistic": "(1 / (1 + exp(-{})))", "not": "(!{})", "sin": "sin({})", "cos": "cos({})",
       "tanh": "tanh({})", "stop_gradient": "{}", "copy": "{}", "copy_p": "{}",
       "log1p": "ln(1 + {})", "expm1": "(exp({}) - 1)", "sign": "piecewise(1, {0} > 0, -1, {0} < 0, 0)"}
# Operations that only move, copy or zero-fill elements: their index map is found by
# running them on element numbers (see `_moved`).
_MOVE = {"slice", "squeeze", "reshape", "broadcast_in_dim", "concatenate", "stack",
         "expand_dims", "transpose", "rev", "pad", "gather", "dynamic_slice", "select_and_gather_add"}


def _is_sym(x) -> bool:
    return isinstance(x, np.ndarray) and x.dtype == object


def _num(x) -> str:
    x = float(x)
    if x != x or abs(x) == float("inf"):
        raise ValueError(f"cannot write the constant {x} into SBML")
    return repr(x) if x >= 0 else f"({x!r})"


class _Writer:
    def __init__(self):
        self.rules: list[tuple[str, str]] = []

    def name(self, expr: str) -> str:
        w = f"w{len(self.rules)}"
        self.rules.append((w, expr))
        return w

    def lit(self, val) -> np.ndarray:
        a = np.asarray(val)
        if np.issubdtype(a.dtype, np.integer):
            return a  # indices stay numbers (folded below), not SBML symbols
        out = np.empty(a.shape, dtype=object)
        for i, v in np.ndenumerate(a):
            out[i] = ("1" if v else "0") if a.dtype == bool else _num(v)
        return out

    def read(self, env, v):
        if isinstance(v, Literal):
            return self.lit(v.val)
        return env[v]

    def _moved(self, eqn, ins):
        """Apply a data-movement primitive to element numbers to learn where each
        output element comes from (0 means a filled zero)."""
        table = ["0"]
        coded = []
        for a in ins:
            if _is_sym(a):
                coded.append(np.arange(len(table), len(table) + a.size, dtype=np.float64).reshape(a.shape))
                table.extend(a.reshape(-1).tolist())
            else:  # integer operands (indices) are numbers already
                coded.append(a)
        res = np.asarray(eqn.primitive.bind(*[jnp.asarray(x) for x in coded], **eqn.params))
        out = np.empty(res.shape, dtype=object)
        for i, k in np.ndenumerate(res):
            if not 0 <= int(k) < len(table):
                raise RuntimeError(f"{eqn.primitive.name} {eqn.params} {res}")
            out[i] = table[int(k)]
        return out

    def run(self, jaxpr, consts, args):
        env = {}
        for v, c in zip(jaxpr.constvars, consts):
            env[v] = self.lit(c)
        for v, a in zip(jaxpr.invars, args):
            env[v] = a
        for eqn in jaxpr.eqns:
            ins = [self.read(env, v) for v in eqn.invars]
            outs = self.eqn(eqn, ins)
            for v, o in zip(eqn.outvars, outs):
                env[v] = o
        return [self.read(env, v) for v in jaxpr.outvars]

    def eqn(self, eqn, ins):
        p = eqn.primitive.name
        shape = eqn.outvars[0].aval.shape
        if not any(_is_sym(x) for x in ins):  # constant folding (index arithmetic)
            res = eqn.primitive.bind(*[jnp.asarray(x) for x in ins], **eqn.params)
            res = res if eqn.primitive.multiple_results else [res]
            return [np.asarray(r) if np.issubdtype(np.asarray(r).dtype, np.integer) else self.lit(r) for r in res]
        if p in ("jit", "pjit", "closed_call", "core_call", "remat", "checkpoint", "custom_jvp_call", "custom_vjp_call"):
            sub = eqn.params.get("jaxpr") or eqn.params.get("call_jaxpr") or eqn.params.get("fun_jaxpr")
            closed = sub if hasattr(sub, "consts") else None
            inner = closed.jaxpr if closed is not None else sub
            return self.run(inner, closed.consts if closed is not None else [], ins)
        if p in _BIN:
            a, b = (np.broadcast_to(x, shape) for x in ins)
            return [self._elementwise(lambda x, y: _BIN[p].format(x, y), a, b)]
        if p in ("max", "min"):
            a, b = (np.broadcast_to(x, shape) for x in ins)
            op = ">" if p == "max" else "<"
            return [self._elementwise(lambda x, y: f"piecewise({x}, {x} {op} {y}, {y})", a, b)]
        if p in _UN:
            return [self._elementwise(lambda x: _UN[p].format(x), ins[0])]
        if p == "integer_pow":
            n = eqn.params["y"]
            return [self._elementwise(lambda x: f"pow({x}, {n})", ins[0])]
        if p == "square":
            return [self._elementwise(lambda x: f"({x} * {x})", ins[0])]
        if p == "convert_element_type":
            src = eqn.invars[0].aval.dtype
            if src == bool and eqn.params["new_dtype"] != bool:
                return [self._elementwise(lambda x: f"piecewise(1, {x}, 0)", ins[0])]
            return [ins[0]]
        if p == "select_n":
            pred, *cases = (np.broadcast_to(x, shape) for x in ins)
            if len(cases) != 2:
                raise NotImplementedError("select_n with more than two cases")
            return [self._elementwise(lambda c, f, t: f"piecewise({t}, {c}, {f})", pred, cases[0], cases[1])]
        if p == "reduce_sum":
            a = ins[0]
            axes = tuple(eqn.params["axes"])
            keep = [i for i in range(a.ndim) if i not in axes]
            a = np.transpose(a, keep + list(axes)).reshape(shape + (-1,))
            out = np.empty(shape, dtype=object)
            for i in np.ndindex(shape):
                out[i] = self.name("(" + " + ".join(a[i]) + ")")
            return [out]
        if p == "dot_general":
            (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
            if lb or rb or len(lc) != 1 or len(rc) != 1 or ins[0].ndim > 2 or ins[1].ndim > 2:
                raise NotImplementedError("dot_general beyond matrix-vector products")
            a = np.moveaxis(ins[0], lc[0], -1)
            b = np.moveaxis(ins[1], rc[0], 0)
            res = np.empty(a.shape[:-1] + b.shape[1:], dtype=object)
            for i in np.ndindex(a.shape[:-1]):
                for j in np.ndindex(b.shape[1:]):
                    terms = [f"({x} * {y})" for x, y in zip(a[i], b[(slice(None),) + j])]
                    res[i + j] = self.name("(" + " + ".join(terms) + ")")
            return [res]
        if p == "scatter-add":
            # operand + S @ updates with constant indices: learn S by moving element numbers.
            operand, idx, upd = ins
            if _is_sym(idx):
                raise NotImplementedError("scatter-add with computed indices")
            zeros = np.zeros(operand.shape)
            ids = np.arange(1, upd.size + 1, dtype=np.float64).reshape(upd.shape)
            hit = np.asarray(eqn.primitive.bind(jnp.asarray(zeros), jnp.asarray(idx), jnp.asarray(ids), **eqn.params))
            out = operand.copy()
            flat_upd = upd.reshape(-1)
            for i, k in np.ndenumerate(hit):
                if k:
                    out[i] = self.name(f"({operand[i]} + {flat_upd[int(k) - 1]})")
            return [out]
        if p in _MOVE:
            return [self._moved(eqn, ins)]
        raise NotImplementedError(f"primitive {p!r} is not converted to SBML")

    def _elementwise(self, fmt, *arrays):
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        arrays = [np.broadcast_to(a, shape) for a in arrays]
        out = np.empty(shape, dtype=object)
        for i in np.ndindex(shape):
            out[i] = self.name(fmt(*(a[i] for a in arrays)))
        return out


def rhs_rules(model, names, fields=None, p0=None):
    """(rules, rate expressions): assignment rules and one rate expression per state
    for `model.rhs(t, y)` with the parameters `names` as free symbols `p<j>`.
    `fields(p)` (optional) maps the parameter vector to model fields, for vector-valued
    fields; `p0` is then the default vector."""
    n = model.n_states
    fields = fields or (lambda p: dict(zip(names, p)))

    def f(t, y, p):
        return jnp.asarray(model.replace(**fields(p)).rhs(t, y), dtype=float)

    if p0 is None:
        p0 = [float(np.asarray(getattr(model, k))) for k in names]
    p0 = jnp.asarray(p0, dtype=float)
    closed = jax.make_jaxpr(f)(0.0, jnp.zeros(n), p0)
    w = _Writer()
    t = np.array("time", dtype=object)
    y = np.array([f"s{i}" for i in range(n)], dtype=object)
    p = np.array([f"p{j}" for j in range(len(names))], dtype=object)
    (dy,) = w.run(closed.jaxpr, closed.consts, [t, y, p])
    return w.rules, [str(e) for e in dy.reshape(-1)]


def sbml(model, names, fields=None, p0=None) -> str:
    """SBML Level 3 text of `model.rhs` with states `s<i>` (+ inputs `u<i>`) and the
    per-patient parameters `names` as `p<j>` (values of `model` as defaults, or `p0`;
    `fields` as in `rhs_rules`)."""
    import libsbml

    rules, rates = rhs_rules(model, names, fields, p0)
    if p0 is None:
        p0 = [float(np.asarray(getattr(model, k))) for k in names]
    doc = libsbml.SBMLDocument(3, 2)
    m = doc.createModel()
    m.setId(type(model).__name__)
    c = m.createCompartment()
    c.setId("c")
    c.setConstant(True)
    c.setSize(1.0)

    def param(pid, value, constant):
        q = m.createParameter()
        q.setId(pid)
        q.setValue(float(value))
        q.setConstant(constant)

    y0 = np.asarray(model.initial(), dtype=float)
    for i in range(model.n_states):
        param(f"s{i}", y0[i], False)
        param(f"u{i}", 0.0, False)  # set from Python per segment, so not constant
    for j in range(len(names)):
        param(f"p{j}", float(p0[j]), False)
    for wid, _ in rules:
        param(wid, 0.0, False)

    def math(expr):
        ast = libsbml.parseL3Formula(expr)
        if ast is None:
            raise ValueError(f"libsbml could not parse {expr[:200]!r}: {libsbml.getLastParseL3Error()}")
        return ast

    for wid, expr in rules:
        r = m.createAssignmentRule()
        r.setVariable(wid)
        r.setMath(math(expr))
    for i, expr in enumerate(rates):
        r = m.createRateRule()
        r.setVariable(f"s{i}")
        r.setMath(math(f"{expr} + u{i}"))
    text = libsbml.writeSBMLToString(doc)
    if doc.getNumErrors(libsbml.LIBSBML_SEV_ERROR):
        raise ValueError(doc.getErrorLog().toString())
    return text
