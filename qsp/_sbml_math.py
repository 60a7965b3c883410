"""SBML math -> sympy -> JAX.

libsbml parses the MathML into an AST; `to_sympy` walks that AST node by node into a
sympy expression (no XML or MathML is parsed here), and `compile_expr` turns a sympy
expression into a JAX function of a dict of symbol values (`sympy.lambdify` with the
JAX printer). Anything without an ODE meaning here (`delay`, `rateOf`, lambda bodies
left after function expansion) raises `UnsupportedSBML` naming the element.
"""

from __future__ import annotations

import math

import sympy as sp

#: The symbol that stands for SBML's `time` csymbol.
TIME = sp.Symbol("__time__", real=True)
AVOGADRO = 6.02214179e23  # the value SBML L3 fixes for its avogadro csymbol


class UnsupportedSBML(ValueError):
    """An SBML construct qsp does not simulate; the message names the element."""


_SYMS: dict = {}


def symbol(name: str) -> sp.Symbol:
    """The sympy symbol of an SBML id (one per id, real-valued)."""
    if name not in _SYMS:
        _SYMS[name] = sp.Symbol(name, real=True)
    return _SYMS[name]


def _ops():
    import libsbml as L

    unary = {
        L.AST_FUNCTION_ABS: sp.Abs, L.AST_FUNCTION_EXP: sp.exp, L.AST_FUNCTION_LN: sp.log,
        L.AST_FUNCTION_FLOOR: sp.floor, L.AST_FUNCTION_CEILING: sp.ceiling,
        L.AST_FUNCTION_SIN: sp.sin, L.AST_FUNCTION_COS: sp.cos, L.AST_FUNCTION_TAN: sp.tan,
        L.AST_FUNCTION_ARCSIN: sp.asin, L.AST_FUNCTION_ARCCOS: sp.acos, L.AST_FUNCTION_ARCTAN: sp.atan,
        L.AST_FUNCTION_SINH: sp.sinh, L.AST_FUNCTION_COSH: sp.cosh, L.AST_FUNCTION_TANH: sp.tanh,
        L.AST_FUNCTION_ARCSINH: sp.asinh, L.AST_FUNCTION_ARCCOSH: sp.acosh, L.AST_FUNCTION_ARCTANH: sp.atanh,
        L.AST_FUNCTION_SEC: sp.sec, L.AST_FUNCTION_CSC: sp.csc, L.AST_FUNCTION_COT: sp.cot,
        L.AST_FUNCTION_SECH: sp.sech, L.AST_FUNCTION_CSCH: sp.csch, L.AST_FUNCTION_COTH: sp.coth,
        L.AST_FUNCTION_ARCSEC: sp.asec, L.AST_FUNCTION_ARCCSC: sp.acsc, L.AST_FUNCTION_ARCCOT: sp.acot,
        L.AST_FUNCTION_ARCSECH: sp.asech, L.AST_FUNCTION_ARCCSCH: sp.acsch, L.AST_FUNCTION_ARCCOTH: sp.acoth,
        L.AST_FUNCTION_FACTORIAL: sp.factorial,
    }
    rel = {
        L.AST_RELATIONAL_EQ: sp.Eq, L.AST_RELATIONAL_NEQ: sp.Ne, L.AST_RELATIONAL_GT: sp.Gt,
        L.AST_RELATIONAL_GEQ: sp.Ge, L.AST_RELATIONAL_LT: sp.Lt, L.AST_RELATIONAL_LEQ: sp.Le,
    }
    return L, unary, rel


def to_sympy(node, where: str):
    """The sympy expression of a libsbml AST node; `where` names the element (errors)."""
    L, unary, rel = _ops()

    def go(n):
        t = n.getType()
        kids = [go(n.getChild(i)) for i in range(n.getNumChildren())] if t != L.AST_LAMBDA else []
        if t == L.AST_INTEGER:
            return sp.Integer(n.getInteger())
        if t in (L.AST_REAL, L.AST_REAL_E):
            v = n.getReal()
            return sp.Float(v) if math.isfinite(v) else (sp.oo if v > 0 else (-sp.oo if v < 0 else sp.nan))
        if t == L.AST_RATIONAL:
            return sp.Rational(n.getNumerator(), n.getDenominator())
        if t == L.AST_NAME:
            return symbol(n.getName())
        if t == L.AST_NAME_TIME:
            return TIME
        if t == L.AST_NAME_AVOGADRO:
            return sp.Float(AVOGADRO)
        if t == L.AST_CONSTANT_E:
            return sp.E
        if t == L.AST_CONSTANT_PI:
            return sp.pi
        if t == L.AST_CONSTANT_TRUE:
            return sp.true
        if t == L.AST_CONSTANT_FALSE:
            return sp.false
        if t == L.AST_PLUS:
            return sp.Add(*kids) if kids else sp.Integer(0)
        if t == L.AST_TIMES:
            return sp.Mul(*kids) if kids else sp.Integer(1)
        if t == L.AST_MINUS:
            return -kids[0] if len(kids) == 1 else kids[0] - kids[1]
        if t == L.AST_DIVIDE:
            return kids[0] / kids[1]
        if t in (L.AST_POWER, L.AST_FUNCTION_POWER):
            return kids[0] ** kids[1]
        if t == L.AST_FUNCTION_ROOT:
            return kids[1] ** (1 / kids[0]) if len(kids) == 2 else sp.sqrt(kids[0])
        if t == L.AST_FUNCTION_LOG:
            return sp.log(kids[1], kids[0]) if len(kids) == 2 else sp.log(kids[0], 10)
        if t in unary:
            return unary[t](kids[0])
        if t == L.AST_FUNCTION_MAX:
            return sp.Max(*kids)
        if t == L.AST_FUNCTION_MIN:
            return sp.Min(*kids)
        if t == L.AST_FUNCTION_QUOTIENT:
            return sp.floor(kids[0] / kids[1])
        if t == L.AST_FUNCTION_REM:
            return kids[0] - kids[1] * sp.floor(kids[0] / kids[1])
        if t in rel:
            if len(kids) == 2:
                return rel[t](kids[0], kids[1])
            return sp.And(*[rel[t](a, b) for a, b in zip(kids[:-1], kids[1:])])
        if t == L.AST_LOGICAL_AND:
            return sp.And(*kids)
        if t == L.AST_LOGICAL_OR:
            return sp.Or(*kids)
        if t == L.AST_LOGICAL_NOT:
            return sp.Not(kids[0])
        if t == L.AST_LOGICAL_XOR:
            return sp.Xor(*kids)
        if t == L.AST_FUNCTION_PIECEWISE:
            pieces = [(kids[i], kids[i + 1]) for i in range(0, len(kids) - 1, 2)]
            pieces.append((kids[-1], True) if len(kids) % 2 else (sp.nan, True))
            return sp.Piecewise(*pieces)
        if t == L.AST_FUNCTION_DELAY:
            raise UnsupportedSBML(f"{where}: the delay() function (delay differential equations) is not supported.")
        if t == L.AST_FUNCTION_RATE_OF:
            raise UnsupportedSBML(f"{where}: the rateOf csymbol is not supported.")
        if t == L.AST_FUNCTION:
            raise UnsupportedSBML(f"{where}: call of undefined function {n.getName()!r}.")
        raise UnsupportedSBML(f"{where}: MathML element {n.getName() or t!r} is not supported.")

    if node is None:
        raise UnsupportedSBML(f"{where}: has no math.")
    return go(node)


class Compiled:
    """A sympy expression as a JAX function of a dict `env` of symbol values."""

    def __init__(self, expr, where: str = ""):
        self.expr = expr
        self.names = sorted(s.name for s in expr.free_symbols)
        syms = [s for s in sorted(expr.free_symbols, key=lambda s: s.name)]
        self._fn = sp.lambdify(syms, expr, modules="jax", dummify=True)
        self.where = where

    def __call__(self, env):
        try:
            return self._fn(*[env[n] for n in self.names])
        except KeyError as err:
            raise UnsupportedSBML(f"{self.where}: symbol {err.args[0]!r} has no value in the model.") from None
