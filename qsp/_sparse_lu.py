r"""Straight-line C for the LU factorisation of a Rosenbrock matrix with a fixed pattern.

The native Rodas4 (`qsp/_rodas4.c`) factors $W = I/(\gamma h) - J$ once per step. $J$'s
structural pattern is known (`qsp._sparsity.jacobian_sparsity`), so the elimination can
be written out once, for that pattern, as straight code over a compact array of the
non-zeros and their fill: no loops, no index arithmetic, no work on zeros (the CRS
model: 525 multiply-adds against ~8,100 for dense LU; benchmarks/NOTES.md section 15).

**Order.** A symmetric permutation chosen by the Markowitz rule on the structure
(at each step the remaining diagonal pivot with the fewest $(r-1)(c-1)$ fill-in
candidates; Markowitz, *Management Science* 3:255, 1957), which keeps the fill small.

**Pivots.** The order is fixed, so there is no partial pivoting: the factorisation is
checked instead. It is refused (the caller falls back to dense LU with partial pivoting
for that step) when a pivot is zero or not finite, or when the element growth
$\max|U|/\max|W|$ exceeds $10^6$, the quantity that bounds the backward error of
Gaussian elimination without pivoting (Wilkinson; Higham, *Accuracy and Stability of
Numerical Algorithms*, 2nd ed., SIAM 2002, section 9.3). For small $h$, $W$ is
diagonally dominant and the check always passes.
"""

from __future__ import annotations

import numpy as np


def markowitz_order(pattern: np.ndarray) -> list[int]:
    """A symmetric elimination order for the boolean pattern (diagonal assumed present)."""
    pattern = np.asarray(pattern, dtype=bool) | np.eye(len(pattern), dtype=bool)
    n = len(pattern)
    rows = [set(np.flatnonzero(pattern[i])) for i in range(n)]  # row i: its column indices
    cols = [set(np.flatnonzero(pattern[:, j])) for j in range(n)]
    remaining, order = set(range(n)), []
    for _ in range(n):
        k = min(remaining, key=lambda v: ((len(rows[v] & remaining) - 1) * (len(cols[v] & remaining) - 1), v))
        remaining.discard(k)
        order.append(k)
        for i in cols[k] & remaining:  # fill: (i, j) for every i below and j right of k
            for j in rows[k] & remaining:
                rows[i].add(j)
                cols[j].add(i)
    return order


def factor_pattern(pattern: np.ndarray, order: list[int]) -> np.ndarray:
    """The pattern of L + U in the permuted order (fill included)."""
    P = (np.asarray(pattern, dtype=bool) | np.eye(len(pattern), dtype=bool))[np.ix_(order, order)]
    n = len(P)
    for k in range(n):
        below = np.flatnonzero(P[k + 1:, k]) + k + 1
        right = np.flatnonzero(P[k, k + 1:]) + k + 1
        P[np.ix_(below, right)] = True
    return P


def c_sparse_lu(pattern: np.ndarray) -> tuple[str, int, int]:
    """C source of `qsp_sfactor`, `qsp_ssolve` and `qsp_ssolve_t` (the transpose) for this pattern; also returns the
    number of stored entries and of multiply-adds in the factorisation."""
    n = len(pattern)
    order = markowitz_order(pattern)
    P = factor_pattern(pattern, order)
    pos = {}
    for i, j in zip(*np.nonzero(P)):
        pos[(int(i), int(j))] = len(pos)
    nnz = len(pos)
    lines = [f"#define QSP_SNNZ {nnz}",
             "/* a[] <- W = g I - J in the Markowitz order, factored in place (L unit lower, U\n"
             "   upper, 1/U_kk in d[]); 0 if a pivot or the growth is unacceptable. */",
             "static int qsp_sfactor(const double *restrict J, double g, double *restrict a, double *restrict d) {"]
    # Load: entries of W (fill starts at zero).
    for (i, j), e in pos.items():
        oi, oj = order[i], order[j]
        w = f"-J[{oi * n + oj}]" if pattern[oi, oj] else "0.0"
        if i == j:
            w = f"g - J[{oi * n + oj}]" if pattern[oi, oj] else "g"
        lines.append(f"  a[{e}] = {w};")
    lines.append("  double big0 = 0.0;")
    lines.append(f"  for (int e = 0; e < {nnz}; e++) big0 = fabs(a[e]) > big0 ? fabs(a[e]) : big0;")
    madds = 0
    for k in range(n):
        kk = pos[(k, k)]
        lines.append(f"  if (!(fabs(a[{kk}]) > 0.0) || !isfinite(a[{kk}])) return 0;")
        lines.append(f"  d[{k}] = 1.0 / a[{kk}];")
        below = [i for i in range(k + 1, n) if (i, k) in pos]
        right = [j for j in range(k + 1, n) if (k, j) in pos]
        for i in below:
            lines.append(f"  a[{pos[(i, k)]}] *= d[{k}];")
            for j in right:
                lines.append(f"  a[{pos[(i, j)]}] -= a[{pos[(i, k)]}] * a[{pos[(k, j)]}];")
                madds += 1
    lines.append("  double big = 0.0;")
    lines.append(f"  for (int e = 0; e < {nnz}; e++) big = fabs(a[e]) > big ? fabs(a[e]) : big;")
    lines.append("  return isfinite(big) && big <= 1e6 * big0;")
    lines.append("}")
    # Solve: x = W^{-1} b in place, b in the original order.
    lines.append("static void qsp_ssolve(const double *restrict a, const double *restrict d, double *restrict b) {")
    lines.append(f"  double x[{n}];")
    for i in range(n):
        terms = "".join(f" - a[{pos[(i, j)]}] * x[{j}]" for j in range(i) if (i, j) in pos)
        lines.append(f"  x[{i}] = b[{order[i]}]{terms};")
    for i in reversed(range(n)):
        terms = "".join(f" - a[{pos[(i, j)]}] * x[{j}]" for j in range(i + 1, n) if (i, j) in pos)
        lines.append(f"  x[{i}] = (x[{i}]{terms}) * d[{i}];")
    for i in range(n):
        lines.append(f"  b[{order[i]}] = x[{i}];")
    lines.append("}")
    # Transposed solve, for the adjoint: W^T = P^T U^T L^T P, so U^T z = b (forward,
    # column i of U) then L^T x = z (backward, column i of L).
    lines.append("static void qsp_ssolve_t(const double *restrict a, const double *restrict d, double *restrict b) {")
    lines.append(f"  double x[{n}];")
    for i in range(n):
        terms = "".join(f" - a[{pos[(j, i)]}] * x[{j}]" for j in range(i) if (j, i) in pos)
        lines.append(f"  x[{i}] = (b[{order[i]}]{terms}) * d[{i}];")
    for i in reversed(range(n)):
        terms = "".join(f" - a[{pos[(j, i)]}] * x[{j}]" for j in range(i + 1, n) if (j, i) in pos)
        lines.append(f"  x[{i}] = x[{i}]{terms};")
    for i in range(n):
        lines.append(f"  b[{order[i]}] = x[{i}];")
    lines.append("}")
    return "\n".join(lines) + "\n", nnz, madds
