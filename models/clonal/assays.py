r"""The in vitro tier: 3-day growth assays -> growth rates -> drug-effect surfaces.

**Data.** Poels et al. 2021 (Nat Commun 12:3697) calibrate the birth rates on 3-day
viability assays (cell counts at days 1, 2, 3, two replicate wells per condition) of
PC9 (EGFR ex19del, sensitive), PC9-DRH (T790M) and PC9R (NRAS) from Pfizer, and PC9
and PC9-C797S from the Hata lab (MGH). Each line has two plates: an osimertinib
dilution series crossed with a few dacomitinib levels, and the converse. The raw
plates (authors' repository Michorlab/NSCLC_OsimDacoOptimization @ f3efc77,
`growth_assays/`) are packaged as one tidy table, `data/clonal/growth_counts.csv`
(`tidy_plates` rebuilds it from the raw layout).

**Growth rate per condition** (`growth_rates`): the least-squares slope of
$\log(\text{count} + 1)$ against time (24, 48, 72 h), pooling every well of the
condition (replicates, and both plates where a condition appears on both), as the
authors' `predictGrowthRates_*.R` do. Conditions with zero/"unexpected" wells are
dropped (`EXCLUDED`).

**Lab rescaling** (`lab_mapping`): Hata-lab rates are put on the Pfizer scale by the
OLS line of Pfizer-PC9 on Hata-PC9 rates over the conditions both labs ran; the C797S
surface is fitted to the mapped rates.

**Bounded-logistic surface** (`fit_published`): with $y_{\min} = \min g - 10^{-5}$,
$y_{\max} = \max g + 10^{-5}$, the transformed rate
$z = \log\big((g - y_{\min})/(y_{\max} - g)\big)$ is regressed by ordinary least
squares on the clone's design $x_k(D, O)$ (`surfaces.DESIGNS`); the death rate is
$d = -\min g$ if $\min g < 0$, else the authors' default. Standard errors are the OLS
ones, $\sqrt{\operatorname{diag}(s^2 (X^\top X)^{-1})}$, on the transformed scale.

**Monotone surface** (`fit_monotone`, ours): Hill-per-drug with Bliss independence on
the birth rate, least squares on the growth rates themselves.

Both fits also run through the framework (`fit_published_qsp`, `fit_monotone_qsp`:
`qsp.fit` of an `AlgebraicModel` with the well concentrations as condition inputs);
the closed-form OLS and the vmapped optimistix fit are the fast paths that produced
the stored values.
"""

from __future__ import annotations

import glob
import os
from importlib import resources

import numpy as np
import pandas as pd

from .surfaces import CLONES, DESIGNS, DEFAULT_DEATH, BoundedLogistic, HillBliss, design_matrix

#: Assay line of each clone (in `growth_counts.csv`), as the authors use them.
CLONE_LINES = {
    "sensitive": ("scott", "PC9"),
    "T790M": ("scott", "PC9-DRH"),
    "NRAS": ("scott", "PC9R"),
    "C797S": ("aaron", "PC9_C797S"),
}

#: Conditions (daco nM, osi nM) dropped by the authors (zero or "unexpected" wells):
#: reference clonal-resistance.md section 3.
EXCLUDED = {
    "PC9": {(250.0, 5.0), (250.0, 10.0), (0.5, 1000.0), (1.0, 1000.0)},
    "mutant": {(10.0, 1000.0), (250.0, 160.0), (250.0, 1000.0)},
}

HOURS_PER_DAY = 24.0


def _excluded(line: str):
    return EXCLUDED["PC9"] if line == "PC9" else EXCLUDED["mutant"]


def tidy_plates(root: str) -> pd.DataFrame:
    """Read the authors' raw plate layout (`root/<lab>/<line>_<Drug>/*Day_<k>*.csv`) into
    a tidy table: lab, cell_line, plate, day, daco_nM, osi_nM, replicate, count.

    In an `_Osi` plate the columns are osimertinib levels (`DMSO` = 0) and the rows
    dacomitinib levels (two replicate rows per level); `_Daco` plates are the converse."""
    rows = []
    for plate_dir in sorted(glob.glob(os.path.join(root, "*", "*_*"))):
        lab = os.path.basename(os.path.dirname(plate_dir))
        line, drug = os.path.basename(plate_dir).rsplit("_", 1)
        if drug not in ("Osi", "Daco"):
            raise ValueError(f"plate folder {plate_dir!r}: expected a name ending in _Osi or _Daco.")
        for day in (1, 2, 3):
            files = glob.glob(os.path.join(plate_dir, f"*Day_{day}*.csv"))
            if len(files) != 1:
                raise FileNotFoundError(f"expected one Day_{day} file in {plate_dir}; found {len(files)}.")
            raw = pd.read_csv(files[0], header=0, index_col=0)
            cols = [0.0 if str(c).strip() == "DMSO" else float(c) for c in raw.columns]
            seen: dict[float, int] = {}
            for level, values in raw.iterrows():
                level = float(level)
                rep = seen[level] = seen.get(level, 0) + 1
                for c, v in zip(cols, values.to_numpy(dtype=float)):
                    daco, osi = (level, c) if drug == "Osi" else (c, level)
                    rows.append((lab, line, drug, day, daco, osi, rep, v))
    return pd.DataFrame(rows, columns=["lab", "cell_line", "plate", "day", "daco_nM", "osi_nM", "replicate", "count"])


def load_counts() -> pd.DataFrame:
    """The packaged raw counts (`data/clonal/growth_counts.csv`)."""
    path = resources.files("qsp.models").joinpath("data/clonal/growth_counts.csv")
    with path.open() as fh:
        return pd.read_csv(fh, comment="#")


def growth_rates(counts: pd.DataFrame, lab: str, line: str, *, exclude=True) -> pd.DataFrame:
    r"""Net growth rate (1/h) per (daco, osi) condition of one line: OLS slope of
    $\log(\text{count}+1)$ on time in hours, all wells of the condition pooled."""
    sub = counts[(counts["lab"] == lab) & (counts["cell_line"] == line)]
    if sub.empty:
        known = sorted(set(zip(counts["lab"], counts["cell_line"])))
        raise ValueError(f"no assay for lab={lab!r}, line={line!r}; known (lab, line): {known}.")
    out = []
    skip = _excluded(line) if exclude else set()
    for (d, o), g in sub.groupby(["daco_nM", "osi_nM"], sort=True):
        if (d, o) in skip:
            continue
        t = g["day"].to_numpy(float) * HOURS_PER_DAY
        y = np.log(g["count"].to_numpy(float) + 1.0)
        tc = t - t.mean()
        out.append((d, o, float(tc @ (y - y.mean()) / (tc @ tc)), len(g)))
    return pd.DataFrame(out, columns=["daco_nM", "osi_nM", "net_growth_per_h", "n_wells"])


def lab_mapping(counts: pd.DataFrame) -> tuple[float, float]:
    """(intercept, slope) of the OLS line g_Pfizer = a + b g_Hata over the PC9
    conditions both labs ran (the authors' cross-lab rescaling)."""
    p = growth_rates(counts, "scott", "PC9").set_index(["daco_nM", "osi_nM"])["net_growth_per_h"]
    h = growth_rates(counts, "aaron", "PC9").set_index(["daco_nM", "osi_nM"])["net_growth_per_h"]
    shared = p.index.intersection(h.index)
    x, y = h[shared].to_numpy(), p[shared].to_numpy()
    b = float((x - x.mean()) @ (y - y.mean()) / ((x - x.mean()) @ (x - x.mean())))
    return float(y.mean() - b * x.mean()), b


def clone_rates(counts: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Growth rates per clone on the Pfizer scale (C797S mapped from the Hata lab)."""
    counts = load_counts() if counts is None else counts
    out = {}
    for clone, (lab, line) in CLONE_LINES.items():
        r = growth_rates(counts, lab, line)
        if lab == "aaron":
            a, b = lab_mapping(counts)
            r = r.assign(net_growth_per_h=a + b * r["net_growth_per_h"])
        out[clone] = r
    return out


def fit_published(rates: dict[str, pd.DataFrame] | None = None):
    """Fit the bounded-logistic surface of every clone (OLS on the logit scale).

    **Returns:** `(surface, se)`: a `BoundedLogistic` holding the fitted coefficients
    (padded to 4 per clone as in `surfaces.DESIGNS`), and a dict by clone of the
    coefficients' standard errors."""
    rates = clone_rates() if rates is None else rates
    betas, ymins, ymaxs, deaths, ses = [], [], [], [], {}
    for k, clone in enumerate(CLONES):
        r = rates[clone]
        g = r["net_growth_per_h"].to_numpy()
        ymin, ymax = g.min() - 1e-5, g.max() + 1e-5
        z = np.log((g - ymin) / (ymax - g))
        X = np.asarray(design_matrix(k, r["daco_nM"].to_numpy(), r["osi_nM"].to_numpy(), nras_osi=True))
        X = X[:, : DESIGNS[clone]["n"]]
        beta, *_ = np.linalg.lstsq(X, z, rcond=None)
        resid = z - X @ beta
        s2 = resid @ resid / (len(z) - X.shape[1])
        ses[clone] = np.sqrt(np.diag(s2 * np.linalg.inv(X.T @ X)))
        betas.append(np.pad(beta, (0, 4 - len(beta))))
        ymins.append(ymin)
        ymaxs.append(ymax)
        deaths.append(-g.min() if g.min() < 0 else DEFAULT_DEATH[clone])
    surface = BoundedLogistic(
        beta=np.stack(betas), ymin=np.array(ymins), ymax=np.array(ymaxs), death=np.array(deaths)
    )
    return surface, ses


_MONO_KEYS = ("b0", "ic50_daco", "n_daco", "imax_daco", "ic50_osi", "n_osi", "imax_osi")
#: Hill exponents are kept within [N_MIN, N_MAX] and IC50s within [IC50_MIN, IC50_MAX]
#: nM (ours): a step at c = 0 or a switch-like curve would otherwise fit the noise of
#: nearly flat clones (NRAS).
N_MIN, N_MAX = 0.5, 5.0
IC50_MIN, IC50_MAX = 1e-2, 1e4


def _unpack(theta):
    """Unconstrained theta (..., 7) -> HillBliss parameters of one clone."""
    import jax

    sig = jax.nn.sigmoid
    lo, hi = np.log(IC50_MIN), np.log(IC50_MAX)
    ic50 = lambda x: np.e ** (lo + (hi - lo) * sig(x))
    hill = lambda x: N_MIN + (N_MAX - N_MIN) * sig(x)
    return {
        "b0": np.e ** theta[..., 0],
        "ic50_daco": ic50(theta[..., 1]), "n_daco": hill(theta[..., 2]), "imax_daco": sig(theta[..., 3]),
        "ic50_osi": ic50(theta[..., 4]), "n_osi": hill(theta[..., 5]), "imax_osi": sig(theta[..., 6]),
    }


def _ic50_theta(c):
    lo, hi = np.log(IC50_MIN), np.log(IC50_MAX)
    u = (np.log(c) - lo) / (hi - lo)
    return np.log(u / (1 - u))


def fit_monotone(rates: dict[str, pd.DataFrame] | None = None, death=None, starts=(0.3, 3.0, 30.0, 300.0)):
    """Least-squares fit of our `HillBliss` surface to the growth rates of each clone.

    Residuals are predicted minus observed net growth (1/h); death rates are fixed
    (default: the published ones) so the birth/death split matches the paper's.
    Parameters are fitted on a log scale (b0) and within boxes through logistic
    transforms (IC50s on a log scale within [`IC50_MIN`, `IC50_MAX`], Hill exponents
    within [`N_MIN`, `N_MAX`], maximal inhibitions within [0, 1]), by
    Levenberg-Marquardt (optimistix), from a grid of IC50 starts (vmapped over clones
    and starts: one compile); the best start per clone is kept.

    **Returns:** `(surface, rmse)`: the fitted `HillBliss` and the residual RMSE (1/h)
    per clone."""
    import jax
    import jax.numpy as jnp
    import optimistix as optx

    from .surfaces import published_surface

    rates = clone_rates() if rates is None else rates
    death = np.asarray(published_surface().death if death is None else death, dtype=float)
    m = max(len(rates[c]) for c in CLONES)

    def padded(col):
        return np.stack([np.pad(rates[c][col].to_numpy(float), (0, m - len(rates[c]))) for c in CLONES])

    D, O, g = padded("daco_nM"), padded("osi_nM"), padded("net_growth_per_h")
    w = np.stack([np.pad(np.ones(len(rates[c])), (0, m - len(rates[c]))) for c in CLONES])

    def resid(theta, args):
        d, D, O, g, w = args
        p = _unpack(theta)
        s = HillBliss(death=d, **p)
        return w * (s.net_growth(D, O)[..., 0] - g)

    solver = optx.LevenbergMarquardt(rtol=1e-10, atol=1e-12)

    def solve(theta0, args):
        sol = optx.least_squares(resid, solver, theta0, args=args, max_steps=2000, throw=False)
        r = resid(sol.value, args)
        return sol.value, jnp.sum(r * r)

    grid = np.array([(a, b) for a in starts for b in starts])  # (S, 2)
    th0 = np.zeros((4, len(grid), 7))
    th0[..., 0] = np.log(g.max(axis=1) + death)[:, None]
    th0[..., 1], th0[..., 4] = _ic50_theta(grid[:, 0]), _ic50_theta(grid[:, 1])
    th0[..., 3] = th0[..., 6] = 2.0
    args = tuple(jnp.asarray(np.broadcast_to(a[:, None], a.shape[:1] + (len(grid),) + a.shape[1:]))
                 for a in (death, D, O, g, w))
    thetas, costs = jax.jit(jax.vmap(jax.vmap(solve)))(jnp.asarray(th0), args)
    costs = np.where(np.isfinite(np.asarray(costs)), np.asarray(costs), np.inf)
    best = np.argmin(costs, axis=1)
    theta = np.asarray(thetas)[np.arange(4), best]
    p = {k: np.asarray(v, dtype=float) for k, v in _unpack(theta).items()}
    rmse = {c: float(np.sqrt(costs[k, best[k]] / w[k].sum())) for k, c in enumerate(CLONES)}
    return HillBliss(death=death, **p), rmse


def _logit_design_model():
    """An `AlgebraicModel` of the bounded-logistic regression: output `z` (the
    logit-transformed growth rate) = beta . x_k(daco, osi); daco and osi are condition
    inputs."""
    import equinox as eqx
    import jax.numpy as jnp

    from qsp import AlgebraicModel, param

    inputs = dict(bounds=(0.0, float("inf")), transform="identity")

    class LogitDesign(AlgebraicModel):
        b0: float = param(0.0, description="intercept")
        b1: float = param(0.0, description="coefficient of the first design term")
        b2: float = param(0.0, description="coefficient of the second design term")
        b3: float = param(0.0, description="coefficient of the interaction term (sensitive clone only)")
        daco: float = param(0.0, units="nM", description="dacomitinib in the well (condition input)", **inputs)
        osi: float = param(0.0, units="nM", description="osimertinib in the well (condition input)", **inputs)
        clone: int = eqx.field(static=True, default=0)

        def outputs(self, t):
            x = design_matrix(self.clone, self.daco, self.osi, nras_osi=True)
            z = x @ jnp.stack([jnp.asarray(b, dtype=float) for b in (self.b0, self.b1, self.b2, self.b3)])
            return {"z": jnp.broadcast_to(z, jnp.shape(t))}

    return LogitDesign


def fit_published_qsp(rates: dict[str, pd.DataFrame] | None = None, clones=CLONES):
    """`fit_published` through the framework: `qsp.fit` of an `AlgebraicModel` (one
    condition per assay well condition, additive error, Levenberg-Marquardt; its NLS
    standard errors equal the OLS ones).

    **Returns:** `(surface, fits)`: the `BoundedLogistic` (None unless every clone is
    in `clones`) and the `qsp.FitResult` per fitted clone."""
    import qsp

    rates = clone_rates() if rates is None else rates
    LogitDesign = _logit_design_model()
    betas, ymins, ymaxs, deaths, fits = [], [], [], [], {}
    for k, clone in enumerate(CLONES):
        if clone not in clones:
            continue
        r = rates[clone].reset_index(drop=True)
        g = r["net_growth_per_h"].to_numpy()
        ymin, ymax = g.min() - 1e-5, g.max() + 1e-5
        cid = [f"c{i}" for i in range(len(r))]
        meas = pd.DataFrame({"observableId": "z", "simulationConditionId": cid, "time": 0.0,
                             "measurement": np.log((g - ymin) / (ymax - g))})
        cond = pd.DataFrame({"conditionId": cid, "daco": r["daco_nM"], "osi": r["osi_nM"]})
        n = DESIGNS[clone]["n"]
        free = [f"b{j}" for j in range(n)]
        res = qsp.fit(LogitDesign(clone=k), meas, cond, free=free, error="additive")
        fits[clone] = res
        betas.append([res.estimates[f"b{j}"] if j < n else 0.0 for j in range(4)])
        ymins.append(ymin)
        ymaxs.append(ymax)
        deaths.append(-g.min() if g.min() < 0 else DEFAULT_DEATH[clone])
    if len(fits) < len(CLONES):
        return None, fits
    surface = BoundedLogistic(beta=np.asarray(betas), ymin=np.array(ymins), ymax=np.array(ymaxs),
                              death=np.array(deaths))
    return surface, fits


def _hill_bliss_well_model():
    """An `AlgebraicModel` of one clone's net growth under `HillBliss` (output `g`, 1/h);
    daco and osi are condition inputs. Bounds as in `fit_monotone`."""
    import jax.numpy as jnp

    from qsp import AlgebraicModel, param

    from ..blocks import inhibition

    pos = dict(bounds=(0.0, float("inf")))
    inputs = dict(bounds=(0.0, float("inf")), transform="identity")
    ic50 = dict(bounds=(IC50_MIN, IC50_MAX), transform="log", units="nM")

    class HillBlissWell(AlgebraicModel):
        b0: float = param(0.03, units="1/h", description="birth rate without drug", **pos)
        death: float = param(0.01, units="1/h", description="death rate (fixed)", **pos)
        ic50_daco: float = param(1.0, description="dacomitinib IC50 of division", **ic50)
        n_daco: float = param(1.0, bounds=(N_MIN, N_MAX), description="dacomitinib Hill exponent")
        imax_daco: float = param(0.9, bounds=(0.0, 1.0), description="maximal inhibition by dacomitinib")
        ic50_osi: float = param(10.0, description="osimertinib IC50 of division", **ic50)
        n_osi: float = param(1.0, bounds=(N_MIN, N_MAX), description="osimertinib Hill exponent")
        imax_osi: float = param(0.9, bounds=(0.0, 1.0), description="maximal inhibition by osimertinib")
        daco: float = param(0.0, units="nM", description="dacomitinib in the well (condition input)", **inputs)
        osi: float = param(0.0, units="nM", description="osimertinib in the well (condition input)", **inputs)

        def outputs(self, t):
            b = (self.b0 * inhibition(self.daco, self.ic50_daco, self.n_daco, self.imax_daco)
                 * inhibition(self.osi, self.ic50_osi, self.n_osi, self.imax_osi))
            return {"g": jnp.broadcast_to(b - self.death, jnp.shape(t))}

    return HillBlissWell


def fit_monotone_qsp(rates: dict[str, pd.DataFrame] | None = None, clones=CLONES, death=None, starts: int = 16,
                     seed: int = 0):
    """`fit_monotone` through the framework: `qsp.fit` of an `AlgebraicModel` per clone
    (additive error, Levenberg-Marquardt, `starts` Latin-hypercube starts within the
    bounds). Generic initial values (IC50 1 and 10 nM, Hill 1, Imax 0.9), not ours.

    **Returns:** the `qsp.FitResult` per clone (its `estimates["sigma_g"]` is the
    residual RMSE)."""
    import qsp

    from .surfaces import published_surface

    rates = clone_rates() if rates is None else rates
    death = np.asarray(published_surface().death if death is None else death, dtype=float)
    Well = _hill_bliss_well_model()
    fits = {}
    for k, clone in enumerate(CLONES):
        if clone not in clones:
            continue
        r = rates[clone].reset_index(drop=True)
        cid = [f"c{i}" for i in range(len(r))]
        meas = pd.DataFrame({"observableId": "g", "simulationConditionId": cid, "time": 0.0,
                             "measurement": r["net_growth_per_h"]})
        cond = pd.DataFrame({"conditionId": cid, "daco": r["daco_nM"], "osi": r["osi_nM"]})
        free = [n for n in _MONO_KEYS]
        fits[clone] = qsp.fit(Well(death=float(death[k])), meas, cond, free=free, error="additive",
                              starts=starts, seed=seed)
    return fits
