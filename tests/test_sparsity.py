"""`qsp._sparsity` (structural Jacobian pattern from a jaxpr, column colouring) and
`qsp.Rodas4`'s coloured Jacobian, against `jax.jacfwd` and a closed form."""

import math

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np

import qsp
from qsp._sparsity import color_columns, jacobian_sparsity
from qsp.models.tce import TCECRS


def _mixed(y):
    # Products, a branch whose predicate must not count, a sum, an indexed update,
    # a matrix product and a nested jit: the pattern is known by hand.
    a = y[0] * y[1]
    b = jnp.where(y[2] > 1.0, y[3], 2.0 * y[4])
    c = jnp.sum(y[5:7])
    d = jnp.zeros(2).at[1].add(y[7])
    e = jnp.array([[1.0, 0.0], [0.0, 3.0]]) @ y[8:10]
    g = jax.jit(lambda z: jnp.exp(z[0]) + z[1])(y[10:12])
    return jnp.concatenate([jnp.stack([a, b, c]), d, e, g[None]])


def test_pattern_of_a_hand_built_function():
    """Exactly the hand-derived pattern: y2 (a predicate) appears nowhere; the scatter
    leaves row 3 empty; the matrix product is treated structurally (both rows of a
    2x2 product depend on both inputs: conservative, a superset)."""
    expected = np.zeros((8, 12), dtype=bool)
    expected[0, [0, 1]] = True
    expected[1, [3, 4]] = True
    expected[2, [5, 6]] = True
    expected[4, 7] = True
    expected[5:7, 8:10] = True
    expected[7, [10, 11]] = True
    np.testing.assert_array_equal(jacobian_sparsity(_mixed, 12), expected)


def test_pattern_while_tracing_is_the_eager_pattern():
    """A solver step reads the pattern while being traced under `jax.jit`; the indicator
    arithmetic (here the matrix product's) must still run eagerly, giving the same
    pattern (it once raised a tracer conversion error on the clonal model)."""
    seen = {}

    @jax.jit
    def traced(y):
        seen["S"] = jacobian_sparsity(lambda z: _mixed(z) * y[0], 12)
        return y

    traced(jnp.ones(12))
    np.testing.assert_array_equal(seen["S"], jacobian_sparsity(_mixed, 12))


def test_loops_are_conservative():
    """A while loop is not analysed: every output it produces depends on everything
    its inputs depend on (a superset, never a miss)."""
    def f(y):
        z = jax.lax.fori_loop(0, 3, lambda i, c: c * 0.5, y[:2])
        return jnp.concatenate([z, y[2:3]])
    S = jacobian_sparsity(f, 3)
    np.testing.assert_array_equal(S, [[1, 1, 0], [1, 1, 0], [0, 0, 1]])


def test_crs_pattern_covers_jacfwd_and_colouring_is_valid():
    """The CRS model (29 states): every non-zero of `jax.jacfwd` at 6 random states is in
    the structural pattern (177 entries), and no two columns of one colour share a row
    (11 colours)."""
    m = TCECRS()
    n = m.n_states
    S = jacobian_sparsity(lambda y: m.rhs(3.3, y), n)
    jac = jax.jit(jax.vmap(jax.jacfwd(lambda y: m.rhs(3.3, y))))
    rng = np.random.default_rng(0)
    y = jnp.asarray(rng.uniform(0.1, 3.0, (6, n))) * (jnp.abs(m.initial()) + 1.0)
    nonzero = np.any(np.abs(np.asarray(jac(y))) > 0, axis=0)
    assert not np.any(nonzero & ~S), np.argwhere(nonzero & ~S)
    assert S.sum() < n * n / 4
    colors = color_columns(S | np.eye(n, dtype=bool))
    for c in range(colors.max() + 1):
        assert np.all((S | np.eye(n, dtype=bool))[:, colors == c].sum(axis=1) <= 1)
    assert colors.max() + 1 < n


def _transit(t, y, args):
    # A chain of transit compartments, rate 2/h: a bidiagonal Jacobian (2 colours).
    k = 2.0
    return jnp.concatenate([-k * y[:1], k * y[:-1] - k * y[1:]])


def test_rodas4_coloured_jacobian_on_a_transit_chain():
    """Amount in compartment i of an 8-compartment chain from a unit bolus is the Erlang
    closed form (k t)^i e^{-k t} / i!; Rodas4 with the coloured Jacobian (2 tangents)
    matches it within 1e-8 at rtol 1e-10, and matches the dense-Jacobian Rodas4 to
    1e-13 (the same matrix, summed with exact zeros)."""
    ts = jnp.linspace(0.0, 6.0, 13)
    y0 = jnp.zeros(8).at[0].set(1.0)

    def solve(sparse):
        return dfx.diffeqsolve(dfx.ODETerm(_transit), qsp.Rodas4(sparse_jacobian=sparse), 0.0, 6.0, 1e-3, y0,
                               saveat=dfx.SaveAt(ts=ts),
                               stepsize_controller=dfx.PIDController(rtol=1e-10, atol=1e-12)).ys

    ys = solve(True)
    t = np.asarray(ts)[:, None]
    i = np.arange(8)[None, :]
    exact = (2.0 * t) ** i * np.exp(-2.0 * t) / np.vectorize(math.factorial)(i)
    np.testing.assert_allclose(np.asarray(ys), exact, atol=1e-8)
    np.testing.assert_allclose(np.asarray(ys), np.asarray(solve(False)), rtol=0, atol=1e-13)
