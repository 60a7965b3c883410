r"""`Rodas4`: a linearly implicit (Rosenbrock) stiff solver for diffrax.

For $\dot y = f(t, y)$ a step of size $h$ from $(t_0, y_0)$ computes the Jacobian
$J = \partial f/\partial y$ and $f_t = \partial f/\partial t$ at $(t_0, y_0)$ once
(`jax.jacfwd`, exact), factors $W = I/(\gamma h) - J$ once, and solves six linear
systems, one per stage:

$$W k_i = f\big(t_0 + \alpha_i h,\ y_0 + \textstyle\sum_{j<i} a_{ij} k_j\big)
   + \textstyle\sum_{j<i} \frac{c_{ij}}{h} k_j + \gamma_i h f_t,$$

$$y_1 = y_0 + \textstyle\sum_{j\le 4} a_{5j} k_j + k_5 + k_6, \qquad
  \text{error estimate} = k_6 .$$

This is RODAS (Hairer & Wanner, *Solving Ordinary Differential Equations II*, 2nd ed.,
Springer 1996, section IV.7; the coefficients of their code
`rodas.f`, `METH = 1`): order 4 with an embedded order-3 solution, L-stable and
stiffly accurate (the last two stages are the solution), so it needs no Newton
iteration. Compared with an ESDIRK (`diffrax.Kvaerno5` + a chord root finder) it
evaluates f a fixed 7 times per step and has no inner `while` loop; under `jax.vmap`
the inner loop is what makes a population step in lock-step twice over (every
patient pays the most Newton iterations of any patient, in every stage), and on CPU
its many small operations are where the time goes (benchmarks/NOTES.md, section 13).
The price: the Jacobian must be exact (it is: forward-mode autodiff), and a step costs
one Jacobian and one LU factorisation whatever happens.

Dense output is the cubic Hermite interpolant through $(y_0, f_0)$ and $(y_1, f_1)$;
$f_1$ is reused as the next step's $f_0$ (first same as last).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._sparsity import color_columns, jacobian_sparsity

# Hairer & Wanner's rodas.f (METH = 1). alpha_i: stage times; gamma_i: the f_t weights
# (row sums of the method's Gamma matrix); a_ij, c_ij: the W-formulation couplings.
_GAMMA = 0.25
_ALPHA = (0.0, 0.386, 0.21, 0.63, 1.0, 1.0)
_GAMMA_I = (0.25, -0.1043, 0.1035, -0.3620000000000023e-01, 0.0, 0.0)
_A = (
    (),
    (0.1544000000000000e01,),
    (0.9466785280815826e00, 0.2557011698983284e00),
    (0.3314825187068521e01, 0.2896124015972201e01, 0.9986419139977817e00),
    (0.1221224509226641e01, 0.6019134481288629e01, 0.1253708332932087e02, -0.6878860361058950e00),
    (0.1221224509226641e01, 0.6019134481288629e01, 0.1253708332932087e02, -0.6878860361058950e00, 1.0),
)
_C = (
    (),
    (-0.5668800000000000e01,),
    (-0.2430093356833875e01, -0.2063599157091915e00),
    (-0.1073529058151375e00, -0.9594562251023355e01, -0.2047028614809616e02),
    (0.7496443313967647e01, -0.1024680431464352e02, -0.3399990352819905e02, 0.1170890893206160e02),
    (0.8083246795921522e01, -0.7981132988064893e01, -0.3152159432874371e02, 0.1631930543123136e02,
     -0.6058818238834054e01),
)


class Rodas4(dfx.AbstractAdaptiveSolver):
    """RODAS, a 6-stage order-4(3) L-stable Rosenbrock method with an exact Jacobian.

    Use it like any diffrax solver (`qsp.simulate(..., solver=qsp.Rodas4())` or
    `diffrax.diffeqsolve(term, qsp.Rodas4(), ...)` with an adaptive step-size
    controller). Only ODE terms (`diffrax.ODETerm`) are supported. See the module
    docstring for the method and its source.

    `sparse_jacobian` (default true): read the Jacobian's structural pattern from the
    vector field's jaxpr (`qsp._sparsity.jacobian_sparsity`) and build the Jacobian
    from one Jacobian-vector product per colour of a column colouring of it (11 for
    the 29-state CRS model instead of 29 for `jax.jacfwd`); the same matrix, for about
    a third of the forward-mode work there. Where colouring saves nothing (a dense
    pattern) `jax.jacfwd` is used either way.
    """

    sparse_jacobian: bool = True

    term_structure: ClassVar = dfx.AbstractTerm
    interpolation_cls: ClassVar[Callable[..., dfx.ThirdOrderHermitePolynomialInterpolation]] = (
        dfx.ThirdOrderHermitePolynomialInterpolation.from_k
    )

    def order(self, terms):
        return 4

    def error_order(self, terms):
        return 3

    def init(self, terms, t0, t1, y0, args):
        return terms.vf(t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        flat0, unravel = ravel_pytree(y0)
        dtype = flat0.dtype
        t0 = jnp.asarray(t0, dtype=dtype)
        h_raw = jnp.asarray(t1, dtype=dtype) - t0
        # Under vmap, patients that have finished keep taking zero-length steps (masked
        # by diffrax). With h = 0 the 1/h terms are infinite, and reverse mode turns the
        # masked infinities into NaN gradients for everyone (0 * inf): step by a
        # harmless h = 1 instead, and return y0 unchanged (the double-`where` pattern).
        zero = h_raw == 0
        h = jnp.where(zero, jnp.ones_like(h_raw), h_raw)

        def f(t, y):
            return ravel_pytree(terms.vf(t, unravel(y), args))[0]

        if made_jump is False:
            f0 = ravel_pytree(solver_state)[0]
        else:
            f0 = jax.lax.cond(made_jump, lambda: f(t0, flat0), lambda: ravel_pytree(solver_state)[0])
        f_t, J = self._jacobian(f, t0, flat0)
        solve = self._factor(flat0, h, J)
        ks = []
        for i in range(6):
            if i == 0:
                fi = f0
            else:
                yi = flat0 + sum(a * k for a, k in zip(_A[i], ks))
                fi = f(t0 + _ALPHA[i] * h, yi)
            rhs = fi + sum((c / h) * k for c, k in zip(_C[i], ks))
            if _GAMMA_I[i] != 0.0:
                rhs = rhs + (_GAMMA_I[i] * h) * f_t
            ks.append(solve(rhs))
        y1 = jnp.where(zero, flat0, flat0 + sum(a * k for a, k in zip(_A[5], ks)) + ks[5])
        f1 = jnp.where(zero, f0, f(t0 + h, y1))
        dense_info = dict(y0=y0, y1=unravel(y1), k=jax.tree.map(
            lambda a, b: jnp.stack([a, b]), unravel(f0 * h_raw), unravel(f1 * h_raw)))
        # A singular W or an overflow gives non-finite stages: an infinite error
        # estimate makes the step-size controller reject the step and shrink h.
        err = jnp.where(jnp.all(jnp.isfinite(y1)) & jnp.all(jnp.isfinite(f1)), ks[5], jnp.inf)
        err = jnp.where(zero, jnp.zeros_like(err), err)
        return unravel(y1), unravel(err), dense_info, unravel(f1), dfx.RESULTS.successful

    def _factor(self, flat0, h, J):
        """A solver for W x = b, W = I/(gamma h) - J (pivoted LU)."""
        n, dtype = flat0.shape[0], flat0.dtype
        # The row permutation once per step: `jax.scipy.linalg.lu_solve` rebuilds it from
        # the pivots on every call (an n-iteration while loop, six times a step).
        lu, _, perm = jax.lax.linalg.lu(jnp.eye(n, dtype=dtype) / (_GAMMA * h) - J)

        def solve(b):
            x = b[perm][:, None]
            x = jax.lax.linalg.triangular_solve(lu, x, left_side=True, lower=True, unit_diagonal=True)
            return jax.lax.linalg.triangular_solve(lu, x, left_side=True, lower=False)[:, 0]

        return solve

    def _jacobian(self, f, t0, flat0):
        """(f_t, J): the time derivative and the Jacobian of f at (t0, y0)."""
        n, dtype = flat0.shape[0], flat0.dtype
        pattern = None
        if self.sparse_jacobian:
            try:
                pattern = jacobian_sparsity(lambda y: f(t0, y), n, dtype) | np.eye(n, dtype=bool)
            except Exception:  # an unanalysable vector field: the dense Jacobian is as right
                pattern = None
        if pattern is not None:
            colors = color_columns(pattern)
            k = int(colors.max()) + 1
            if k < n:
                # One tangent per colour (the sum of its unit vectors), one along t.
                dts = jnp.asarray(np.r_[np.zeros(k), 1.0], dtype=dtype)
                dys = jnp.asarray(np.r_[np.eye(k)[colors].T, np.zeros((1, n))], dtype=dtype)
                tangents = jax.vmap(lambda dt, dy: jax.jvp(f, (t0, flat0), (dt, dy))[1])(dts, dys)
                rows, cols = np.nonzero(pattern)
                # J[i, j] = (J e_c(j))[i]: no other column of colour c(j) reaches row i.
                J = jnp.zeros((n, n), dtype).at[rows, cols].set(tangents[colors[cols], rows])
                return tangents[k], J
        return jax.jacfwd(f, argnums=(0, 1))(t0, flat0)

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)
