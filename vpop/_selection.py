r"""Selecting and weighting plausible patients so a population matches observed data.

Two methods (`shared/references/vpop-methods.md` §A and §D2):

**Maximum-entropy prevalence weights** (`maxent_weights`). Among all weightings of the
plausible patients that reproduce the summary targets exactly, take the one closest to
the prior weights $w^0$ in Kullback-Leibler divergence:

$$\min_w \sum_i w_i \ln\frac{w_i}{w^0_i}\quad\text{s.t.}\quad \sum_i w_i f(y_i) = t,\ \sum_i w_i = 1.$$

The solution is an exponential tilt $w_i \propto w^0_i e^{\lambda^\top f(y_i)}$ with
$\lambda$ minimising the convex dual $\ln \sum_i w^0_i e^{\lambda^\top f_i} - \lambda^\top t$
(solved by damped Newton: gradient $E_w[f] - t$, Hessian $\mathrm{Cov}_w[f]$). Targets are
linear in $w$: means, second moments, quantiles ($f = 1[y \le q_{data}]$, $t$ = the
level) and bin proportions (response categories). They are reachable iff $t$ lies inside
the convex hull of the $f_i$; otherwise the dual is unbounded and we say so.

**Allen et al. 2016 probability of inclusion** (`allen_selection`; Allen, Rieger &
Musante, CPT:PSP 5:140). $p_i = \rho_D(y_i)/\rho_{PP}(y_i)$ with $\rho_D$ a multivariate
normal fitted to the data and $\rho_{PP}$ a $k$-nearest-neighbour density of the
plausible patients in data-standardised coordinates ($k = 5$, the point itself
counted). Patient $i$ is selected iff $u_i < s\,p_i$; the scale $s$ minimises the mean
over 10 selections of $\sum_j KS_j$ (KS of each standardised marginal against $N(0,1)$);
of 100 selections at that $s$ the best is kept. We choose $s$ on a log grid over Allen's
range $[1/\max p, 1000/\max p]$ instead of by simulated annealing (deterministic, and
the objective is a noisy step function either way).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

# -- targets -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Mean:
    """Target: the mean of observable `name` equals `value`."""

    name: str
    value: float

    def feature(self, y):
        return np.asarray(y[self.name], dtype=float)

    @property
    def target(self):
        return float(self.value)


@dataclasses.dataclass(frozen=True)
class SD:
    """Target: the standard deviation of `name` about `mean` equals `value` (a second
    moment, so give `Mean(name, mean)` as well)."""

    name: str
    value: float
    mean: float

    def feature(self, y):
        return (np.asarray(y[self.name], dtype=float) - self.mean) ** 2

    @property
    def target(self):
        return float(self.value) ** 2


@dataclasses.dataclass(frozen=True)
class Quantile:
    """Target: the `q`-quantile of `name` is `value` (the weighted CDF at `value` is `q`)."""

    name: str
    q: float
    value: float

    def feature(self, y):
        return (np.asarray(y[self.name], dtype=float) <= self.value).astype(float)

    @property
    def target(self):
        return float(self.q)


@dataclasses.dataclass(frozen=True)
class Proportion:
    """Target: a fraction `p` of patients has `name` in `[lo, hi)`, or equal to `equals`
    (a category such as a RECIST response code)."""

    name: str
    p: float
    lo: float = -math.inf
    hi: float = math.inf
    equals: object = None

    def feature(self, y):
        v = np.asarray(y[self.name])
        if self.equals is not None:
            return (v == self.equals).astype(float)
        return ((v >= self.lo) & (v < self.hi)).astype(float)

    @property
    def target(self):
        return float(self.p)


class InfeasibleTargets(ValueError):
    """The targets lie outside what any weighting of the population can reach."""


@dataclasses.dataclass
class Weights:
    """Prevalence weights and their diagnostics."""

    weights: np.ndarray
    lam: np.ndarray
    achieved: dict
    targets: dict
    feasible: bool
    iterations: int
    effective_n: float
    max_weight: float
    ks: dict

    def resample(self, seed, n: int) -> np.ndarray:
        """Indices of `n` patients drawn with probability = weight (an unweighted Vpop)."""
        return np.random.default_rng(seed).choice(len(self.weights), size=n, p=self.weights)


def effective_n(w) -> float:
    """Kish's effective sample size 1 / sum w_i^2 of normalised weights."""
    w = np.asarray(w, dtype=float)
    w = w / w.sum()
    return float(1.0 / np.sum(w * w))


def weighted_ks(x, w, data) -> float:
    """Two-sample KS statistic sup |F_w(x) - F_data(x)| of a weighted sample vs data."""
    x, w, data = np.asarray(x, float), np.asarray(w, float), np.sort(np.asarray(data, float))
    order = np.argsort(x)
    xs, cw = x[order], np.cumsum(w[order]) / w.sum()
    grid = np.union1d(xs, data)
    fx = np.concatenate([[0.0], cw])[np.searchsorted(xs, grid, side="right")]
    fd = np.searchsorted(data, grid, side="right") / len(data)
    return float(np.max(np.abs(fx - fd)))


def _observables(observables, n=None) -> dict:
    obs = {k: np.asarray(v) for k, v in (observables.items() if hasattr(observables, "items") else observables)}
    lengths = {len(v) for v in obs.values()}
    if len(lengths) != 1:
        raise ValueError(f"observables have different lengths {sorted(lengths)}; expected one value per patient.")
    return obs


def maxent_weights(observables, targets: Sequence, *, prior_weights=None, data: Mapping | None = None,
                   tol: float = 1e-9, max_iter: int = 200, strict: bool = True) -> Weights:
    """Maximum-entropy (minimum-KL) prevalence weights that hit `targets` exactly.

    **Arguments:**

    - `observables`: dict (or DataFrame) of per-patient arrays, shape `(n,)` each.
    - `targets`: `Mean`, `SD`, `Quantile` and `Proportion` targets on those observables.
    - `prior_weights`: $w^0$ (default uniform).
    - `data`: optional dict of observed samples by observable name; the result then
      reports the weighted KS statistic of each marginal against them (`ks`).
    - `tol`: absolute tolerance on every target (in the target's own units).
    - `strict`: raise `InfeasibleTargets` when the targets are out of reach (default);
      with `False`, return the last weights with `feasible=False`.

    **Returns:** `Weights` with `weights`, `effective_n` (Kish), `max_weight`, `achieved`
    and `ks`.
    """
    obs = _observables(observables)
    n = len(next(iter(obs.values())))
    targets = list(targets)
    if not targets:
        raise ValueError("maxent_weights needs at least one target.")
    for t in targets:
        if t.name not in obs:
            raise ValueError(f"target {t!r} names observable {t.name!r}; observables are {sorted(obs)}.")
    F = np.stack([t.feature(obs) for t in targets], axis=1)
    tv = np.asarray([t.target for t in targets], dtype=float)
    labels = [repr(t) for t in targets]
    w0 = np.full(n, 1.0 / n) if prior_weights is None else np.asarray(prior_weights, dtype=float)
    if w0.shape != (n,) or np.any(w0 < 0) or not np.isfinite(w0).all() or w0.sum() <= 0:
        raise ValueError(f"prior_weights must be {n} non-negative finite numbers with a positive sum.")
    w0 = w0 / w0.sum()
    if not np.isfinite(F).all():
        bad = int(np.flatnonzero(~np.isfinite(F).all(axis=0))[0])
        raise ValueError(f"target {labels[bad]}: observable has NaN/inf values; drop failed patients first.")

    # Marginal reach: each target must lie inside [min f, max f] over patients with w0 > 0.
    support = w0 > 0
    lo, hi = F[support].min(axis=0), F[support].max(axis=0)
    problems = []
    for j in range(len(tv)):
        if not (lo[j] - tol <= tv[j] <= hi[j] + tol):
            problems.append(f"{labels[j]} asks for {tv[j]:g} but the population only reaches "
                            f"[{lo[j]:g}, {hi[j]:g}]")
    if problems and strict:
        raise InfeasibleTargets("targets outside the population's reach: " + "; ".join(problems) + ".")

    # Newton on the dual in standardised feature coordinates (scale-free steps).
    mu, sd = F.mean(axis=0), F.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    G, g_t = (F - mu) / sd, (tv - mu) / sd
    lam = np.zeros(len(tv))
    logw0 = np.log(np.where(support, w0, 1.0)) + np.where(support, 0.0, -np.inf)

    def tilt(lam):
        a = logw0 + G @ lam
        a_max = a.max()
        e = np.exp(a - a_max)
        return e / e.sum(), a_max + np.log(e.sum())

    def dual(lam):
        return tilt(lam)[1] - lam @ g_t

    it, converged = 0, False
    for it in range(1, max_iter + 1):
        w, _ = tilt(lam)
        m = w @ G
        grad = m - g_t
        if np.all(np.abs(grad * sd) <= tol):
            converged = True
            break
        C = (G - m).T @ ((G - m) * w[:, None])
        step = -np.linalg.lstsq(C + 1e-12 * np.eye(len(tv)), grad, rcond=None)[0]
        f0, s = dual(lam), 1.0
        while s > 1e-10 and dual(lam + s * step) > f0 + 1e-4 * s * (grad @ step):
            s *= 0.5
        if s <= 1e-10:
            break
        lam = lam + s * step
    w, _ = tilt(lam)
    achieved = dict(zip(labels, (w @ F).tolist()))
    if not converged:
        gap = np.abs(w @ F - tv)
        j = int(np.argmax(gap))
        msg = (f"targets lie outside the population's reach: no weighting reaches them jointly "
               f"(after {it} Newton steps the worst target {labels[j]} is at {achieved[labels[j]]:g}, "
               f"asked {tv[j]:g}; effective N fell to {effective_n(w):.3g}). Widen the plausible "
               "population or relax the targets.")
        if problems:
            msg = "targets outside the population's reach: " + "; ".join(problems) + "."
        if strict:
            raise InfeasibleTargets(msg)
    ks = {}
    if data is not None:
        for k, v in data.items():
            if k not in obs:
                raise ValueError(f"data names observable {k!r}; observables are {sorted(obs)}.")
            ks[k] = weighted_ks(obs[k], w, v)
    return Weights(
        weights=w, lam=lam / sd, achieved=achieved, targets=dict(zip(labels, tv.tolist())),
        feasible=bool(converged), iterations=it, effective_n=effective_n(w),
        max_weight=float(w.max()), ks=ks,
    )


# -- Allen et al. 2016 -----------------------------------------------------------------------


@dataclasses.dataclass
class Selection:
    """An unweighted virtual population selected from plausible patients."""

    selected: np.ndarray  # boolean mask over plausible patients
    p_incl: np.ndarray
    sf: float
    ks: np.ndarray  # KS statistic per marginal of the kept selection
    sum_ks: float
    mean_sum_ks: float  # mean over the n_repeats selections at sf
    vp_fraction: float

    @property
    def n_vp(self) -> int:
        return int(self.selected.sum())


def _norm_cdf(x):
    from math import erf, sqrt

    return 0.5 * (1.0 + np.vectorize(erf)(np.asarray(x) / sqrt(2.0)))


def ks_normal(z) -> float:
    """One-sample KS statistic of `z` against N(0, 1)."""
    z = np.sort(np.asarray(z, float))
    n = len(z)
    if n == 0:
        return 1.0
    c = _norm_cdf(z)
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - c), np.max(c - (i - 1) / n)))


def knn_density(z, k: int = 5, block: int = 1024) -> np.ndarray:
    """k-nearest-neighbour density k / V_m(r_k) of points z (n, m); the point itself is
    one of the k (Allen 2016). Blocked, so memory is O(block * n)."""
    z = np.asarray(z, float)
    n, m = z.shape
    if n < k:
        raise ValueError(f"knn_density needs at least k={k} points; got {n}.")
    r = np.empty(n)
    sq = np.sum(z * z, axis=1)
    for s in range(0, n, block):
        d2 = sq[s:s + block, None] + sq[None, :] - 2.0 * z[s:s + block] @ z.T
        r[s:s + block] = np.sqrt(np.maximum(np.partition(d2, k - 1, axis=1)[:, k - 1], 0.0))
    vol = math.pi ** (m / 2) / math.gamma(m / 2 + 1) * r**m
    return k / np.maximum(vol, 1e-300)


def allen_selection(y, *, data=None, mean=None, cov=None, seed=0, k: int = 5, n_repeats: int = 100,
                    n_sf: int = 61, sf: float | None = None) -> Selection:
    """Allen et al. 2016 selection of virtual patients from plausible patients.

    **Arguments:**

    - `y`: observables of the plausible patients, shape `(n, m)` (e.g. log HDL, LDL, TC).
    - `data`: observed samples `(N, m)`, from which the normal target is fitted; or give
      `mean` `(m,)` and `cov` `(m, m)` directly.
    - `seed`: for the uniform draws of the acceptance-rejection step.
    - `k`: neighbours in the density estimate of the plausible patients.
    - `n_repeats`: selections at the chosen scale; the best (smallest sum of KS) is kept.
    - `sf`: fix the scale factor instead of optimising it.
    """
    y = np.asarray(y, dtype=float)
    if y.ndim != 2:
        raise ValueError(f"allen_selection: y must have shape (n, m); got {y.shape}.")
    if data is not None:
        data = np.asarray(data, dtype=float)
        mean, cov = data.mean(axis=0), np.cov(data, rowvar=False).reshape(y.shape[1], y.shape[1])
    if mean is None or cov is None:
        raise ValueError("allen_selection needs data=... or both mean=... and cov=....")
    mean, cov = np.asarray(mean, float), np.asarray(cov, float)
    sd = np.sqrt(np.diag(cov))
    z = (y - mean) / sd
    corr = cov / np.outer(sd, sd)
    Li = np.linalg.inv(np.linalg.cholesky(corr))
    u = z @ Li.T
    m = y.shape[1]
    rho_d = np.exp(-0.5 * np.sum(u * u, axis=1)) / np.sqrt((2 * np.pi) ** m * np.linalg.det(corr))
    p = rho_d / knn_density(z, k)
    rng = np.random.default_rng(seed)

    # Phi(z) once per patient: the KS statistic of any subset is then a sort away.
    cdf = _norm_cdf(z)

    def score(mask):
        if mask.sum() <= 1:
            return np.ones(m), float(m)
        c = np.sort(cdf[mask], axis=0)
        k = len(c)
        i = np.arange(1, k + 1)[:, None]
        ks = np.maximum(np.max(i / k - c, axis=0), np.max(c - (i - 1) / k, axis=0))
        return ks, float(ks.sum())

    if sf is None:
        grid = np.logspace(0.0, 3.0, n_sf) / p.max()
        means = [np.mean([score(rng.uniform(size=len(p)) < s * p)[1] for _ in range(10)]) for s in grid]
        sf = float(grid[int(np.argmin(means))])
    best, scores = None, []
    for _ in range(n_repeats):
        mask = rng.uniform(size=len(p)) < sf * p
        ks, tot = score(mask)
        scores.append(tot)
        if best is None or tot < best[2]:
            best = (mask, ks, tot)
    mask, ks, tot = best
    return Selection(selected=mask, p_incl=p, sf=sf, ks=ks, sum_ks=tot,
                     mean_sum_ks=float(np.mean(scores)), vp_fraction=float(mask.mean()))
