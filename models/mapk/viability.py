r"""In vitro tier, viability: CCLE dose-response of the BRAF V600E CRC lines.

**Data** (CCLE, Barretina et al. Nature 2012, as packaged in the Fröhlich et al. Cell
Syst 2018 PEtab benchmark; `models/data/mapk/ccle_via_froehlich2018_brafv600e_crc.csv`):
relative proliferation after 72 h of 8 doses (2.5-8000 nM) for COLO201, LS411N and
SW1417 (BRAF V600E) under PLX4720 (BRAF inhibitor, the tool analogue of vemurafenib),
selumetinib and PD0325901 (MEK inhibitors) and erlotinib (EGFR kinase inhibitor). One
value per dose, no replicates, no drug-free control row (the data are normalised to it).

Two readings:

1. **Descriptive**: a log-logistic curve per line x drug, `qsp.LogLogistic4` with the
   top fixed at 1 (the normalisation), slope `b`, floor `c` and midpoint `e` per curve,
   one `qsp.fit` over all curves (`fit_loglogistic`). Erlotinib is not fitted: it never
   falls below 0.68 (no midpoint to estimate).
2. **Cascade-linked (ours, labelled)**: the Kirouac 2017 cascade (default patient 122,
   no EGF in the medium) read at rest under constant drug, its proliferation signal
   linked to growth as in the tumour law (the same $\Delta$ as the xenograft tier),

   $$RP(c) = \exp\!\big(-k_{p,\ell}\,T\,\Delta(c)\big),\quad
   \Delta(c) = 1 - \frac{H(S6^*(c); k_g, \tau_g)}{H(S6^*(0); k_g, \tau_g)},\quad T = 3\text{ days},$$

   with one proliferation rate $k_{p,\ell}$ per line and one in vitro potency per drug
   on its node (PLX4720 on BRAF with the cascade's $k_{i2} = 2$; selumetinib and
   PD0325901 on MEK with $k_{i3} = 0.65$), shared by the lines: 6 parameters for 72
   points against the descriptive fit's 27 (`fit_cascade`). Erlotinib is then
   *predicted* as a complete RTK1 (EGFR) block.

What the data support (measured, `tests/test_mapk_xenograft.py` checks them): the
descriptive midpoints put the MEK inhibitors ahead of PLX4720 in every line and COLO201
as the most sensitive line to all three drugs; the cascade-linked fit has one rate per
line, so it predicts the same line ordering for every drug, which holds for the two
MEK inhibitors (COLO201 < LS411N < SW1417) but not for PLX4720 (LS411N and SW1417 swap;
their data differ by less than the single-well noise). The cascade cannot produce
SW1417's high floor under MEK inhibition (0.25-0.45) with the rate that fits its other
curves, which is the main cost in its residual. Erlotinib: the cascade predicts no
effect (EGFR is bypassed by RTK2 in patient 122 without EGF), the data show at most 32%
at the top dose only.
"""

from __future__ import annotations

from importlib import resources

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import qsp
from qsp import AlgebraicModel, param
from qsp._algebraic import LogLogistic4

from ._model import H, Kirouac2017

_INF = float("inf")
_OURS = "ours: CCLE BRAF V600E CRC lines (Barretina 2012) linked to the Kirouac 2017 cascade"
#: The cascade with unit potencies: concentrations enter as multiples of each drug's IC50.
_UNIT = Kirouac2017().replace(taui1=1.0, taui2=1.0, taui3=1.0)

LINES = ("COLO201", "LS411N", "SW1417")
#: CCLE drug -> the cascade node it inhibits (class surrogate).
DRUG_NODE = {"PLX_4720": "BRAF", "Selumetinib": "MEK", "PD0325901": "MEK", "Erlotinib": "EGFR"}
FITTED = ("PLX_4720", "Selumetinib", "PD0325901")
ASSAY_DAYS = 3.0


def load_ccle() -> pd.DataFrame:
    """`cell`, `drug`, `conc_nM`, `relative_proliferation` of `LINES` x `DRUG_NODE`."""
    with resources.files("qsp.models").joinpath("data", "mapk", "ccle_via_froehlich2018_brafv600e_crc.csv").open() as f:
        return pd.read_csv(f)


def _tag(line, drug):
    return f"{line}_{drug}".replace("-", "_")


# -- descriptive: log-logistic per curve --------------------------------------------------


def loglogistic_tables(data: pd.DataFrame | None = None, drugs=FITTED):
    d = load_ccle() if data is None else data
    d = d[d.drug.isin(drugs)].reset_index(drop=True)
    cid = [f"{_tag(c, g)}_{i}" for i, (c, g) in enumerate(zip(d.cell, d.drug))]
    meas = pd.DataFrame({"observableId": "y", "simulationConditionId": cid, "time": 0.0,
                         "measurement": d.relative_proliferation.to_numpy()})
    cond = pd.DataFrame({"conditionId": cid, "x": d.conc_nM.to_numpy(float),
                         "b": [f"b_{_tag(c, g)}" for c, g in zip(d.cell, d.drug)],
                         "c": [f"c_{_tag(c, g)}" for c, g in zip(d.cell, d.drug)],
                         "e": [f"e_{_tag(c, g)}" for c, g in zip(d.cell, d.drug)]})
    return meas, cond


def fit_loglogistic(data: pd.DataFrame | None = None, drugs=FITTED, starts: int = 1) -> qsp.FitResult:
    """One `qsp.fit` of `LogLogistic4` (top fixed at 1) per line x drug curve (nM)."""
    meas, cond = loglogistic_tables(data, drugs)
    init = {n: 100.0 for n in cond.e.unique()} | {n: 0.2 for n in cond.c.unique()}
    # Floors may dip below 0 (drc LL.4 leaves c free); a bound at 0 stalled LM on LS411N.
    bounds = {n: (0.1, 1e5) for n in cond.e.unique()} | {n: (-0.5, 1.0) for n in cond.c.unique()}
    bounds |= {n: (0.05, 10.0) for n in cond.b.unique()}
    return qsp.fit(LogLogistic4(d=1.0), meas, cond, free=[], fixed={"d": 1.0}, initial=init,
                   bounds=bounds, starts=starts)


def loglogistic_ic50(estimates: dict, line: str, drug: str) -> float:
    """Concentration (nM) where the fitted log-logistic crosses 0.5 (inf if its floor is
    above 0.5): $e\,((1 - c)/(0.5 - c) - 1)^{1/b}$."""
    b, c, e = (estimates[f"{k}_{_tag(line, drug)}"] for k in "bce")
    return _INF if c >= 0.5 else float(e * ((1 - c) / (0.5 - c) - 1) ** (1 / b))


# -- cascade-linked ---------------------------------------------------------------------


def _cp(value, description, units="nM"):
    return param(value, units=units, bounds=(0.0, _INF), description=description, source=_OURS)


def _switch(description):
    return param(0.0, units="1", bounds=(0.0, 1.0), transform="identity", description=description)


class CascadeViability(AlgebraicModel):
    """Relative proliferation after `ASSAY_DAYS` of one drug at concentration `conc`
    (nM): the Kirouac 2017 cascade's proliferation signal (see the module docstring)."""

    time_unit = "day"

    kp: float = _cp(1.0, "proliferation rate at rest the drugs can remove (per line)", "1/day")
    ic_plx: float = _cp(300.0, "PLX4720 potency on the BRAF node in vitro")
    ic_sel: float = _cp(50.0, "selumetinib potency on the MEK node in vitro")
    ic_pd: float = _cp(5.0, "PD0325901 potency on the MEK node in vitro")
    ic_erl: float = _cp(20.0, "erlotinib potency on the EGFR (RTK1) node (not fitted)")
    conc: float = param(0.0, units="nM", bounds=(0.0, _INF), transform="identity", description="concentration")
    on_plx: float = _switch("PLX4720 in the well")
    on_sel: float = _switch("selumetinib in the well")
    on_pd: float = _switch("PD0325901 in the well")
    on_erl: float = _switch("erlotinib in the well")

    def signal_loss(self):
        c = self.conc
        s6 = _UNIT.rest_state(self.on_erl * c / self.ic_erl, self.on_plx * c / self.ic_plx,
                              self.on_sel * c / self.ic_sel + self.on_pd * c / self.ic_pd, 0.0)["S6"]
        s6_0 = _UNIT.rest_state()["S6"]
        return 1.0 - H(s6, _UNIT.kg, _UNIT.taug) / H(s6_0, _UNIT.kg, _UNIT.taug)

    def outputs(self, t):
        rp = jnp.exp(-self.kp * ASSAY_DAYS * self.signal_loss())
        return {"relative_proliferation": jnp.broadcast_to(rp, jnp.shape(t))}


_ON = {"PLX_4720": "on_plx", "Selumetinib": "on_sel", "PD0325901": "on_pd", "Erlotinib": "on_erl"}


def cascade_tables(data: pd.DataFrame | None = None, drugs=FITTED):
    d = load_ccle() if data is None else data
    d = d[d.drug.isin(drugs)].reset_index(drop=True)
    cid = [f"{_tag(c, g)}_{i}" for i, (c, g) in enumerate(zip(d.cell, d.drug))]
    meas = pd.DataFrame({"observableId": "relative_proliferation", "simulationConditionId": cid, "time": 0.0,
                         "measurement": d.relative_proliferation.to_numpy()})
    cond = pd.DataFrame({"conditionId": cid, "conc": d.conc_nM.to_numpy(float), "kp": [f"kp_{c}" for c in d.cell]})
    for drug, col in _ON.items():
        cond[col] = (d.drug == drug).astype(float).to_numpy()
    return meas, cond


def fit_cascade(data: pd.DataFrame | None = None, drugs=FITTED, starts: int = 4) -> qsp.FitResult:
    """`qsp.fit` of `CascadeViability`: `kp` per line, one potency per fitted drug."""
    meas, cond = cascade_tables(data, drugs)
    free = [{"PLX_4720": "ic_plx", "Selumetinib": "ic_sel", "PD0325901": "ic_pd"}[g] for g in drugs]
    box = {f: (1.0, 3000.0) for f in free} | {k: (0.2, 3.0) for k in cond.kp.unique()}
    return qsp.fit(CascadeViability(), meas, cond, free=free, starts=starts, start_bounds=box)


def _rp(kp, ic, on, conc):
    m = CascadeViability(kp=kp, ic_plx=ic[0], ic_sel=ic[1], ic_pd=ic[2], ic_erl=ic[3], conc=conc,
                         on_plx=on[0], on_sel=on[1], on_pd=on[2], on_erl=on[3])
    return m.outputs(jnp.zeros(()))["relative_proliferation"]


_rp_curve = jax.jit(jax.vmap(_rp, in_axes=(None, None, None, 0)))


def cascade_curves(estimates: dict, line: str, drug: str, conc_nM):
    """Cascade-linked relative proliferation of `line` under `drug` at `conc_nM`
    (one compiled function for every line, drug and estimate)."""
    ic = [estimates.get(k, CascadeViability.parameter_info()[k].default) for k in ("ic_plx", "ic_sel", "ic_pd", "ic_erl")]
    on = [float(drug == g) for g in _ON]
    return np.asarray(_rp_curve(float(estimates[f"kp_{line}"]), jnp.asarray(ic, float), jnp.asarray(on),
                                jnp.asarray(conc_nM, float)))


def cascade_ic50(estimates: dict, line: str, drug: str, lo=0.1, hi=1e5, n=601) -> float:
    """Concentration (nM) where the cascade-linked curve crosses 0.5 (log-grid crossing,
    log-linear interpolation; inf if it never does below `hi`)."""
    c = np.logspace(np.log10(lo), np.log10(hi), n)
    p = cascade_curves(estimates, line, drug, c)
    below = np.flatnonzero(p < 0.5)
    if len(below) == 0:
        return _INF
    i = below[0]
    w = (p[i - 1] - 0.5) / (p[i - 1] - p[i])
    return float(np.exp(np.log(c[i - 1]) + w * np.log(c[i] / c[i - 1])))


def fit_report(out_dir=None):
    """Run both fits and write `ccle_fit_estimates.csv` (model, parameter, estimate,
    converged, n_at_best, starts) and `ccle_ic50.csv` (line, drug, IC50 of the
    log-logistic fit and of the cascade-linked fit, nM) to the package's data folder."""
    import pathlib

    out = pathlib.Path(out_dir) if out_dir else pathlib.Path(__file__).resolve().parent.parent / "data" / "mapk"
    ll, cas = fit_loglogistic(), fit_cascade()
    rows = []
    for name, r in (("loglogistic", ll), ("cascade", cas)):
        for k, v in r.estimates.items():
            rows.append(dict(model=name, parameter=k, estimate=v, converged=r.converged,
                             n_at_best=r.n_at_best, starts=len(r.starts)))
    pd.DataFrame(rows).to_csv(out / "ccle_fit_estimates.csv", index=False, float_format="%.10g")
    ic = [dict(line=l, drug=g, ic50_loglogistic=loglogistic_ic50(ll.estimates, l, g),
               ic50_cascade=cascade_ic50(cas.estimates, l, g)) for l in LINES for g in FITTED]
    ic = pd.DataFrame(ic)
    ic.to_csv(out / "ccle_ic50.csv", index=False, float_format="%.6g")
    return ll, cas, ic


def load_fit(model: str) -> dict:
    """Shipped estimates of `model` (`"loglogistic"` or `"cascade"`) as a dict."""
    with resources.files("qsp.models").joinpath("data", "mapk", "ccle_fit_estimates.csv").open() as f:
        e = pd.read_csv(f)
    e = e[e.model == model]
    return dict(zip(e.parameter, e.estimate))


def _read_ic50() -> pd.DataFrame:
    with resources.files("qsp.models").joinpath("data", "mapk", "ccle_ic50.csv").open() as f:
        return pd.read_csv(f)


if __name__ == "__main__":
    ll, cas, ic = fit_report()
    print(f"log-logistic: converged={ll.converged}, nll={ll.nll:.4f}; cascade: converged={cas.converged} "
          f"n_at_best={cas.n_at_best}/{len(cas.starts)} nll={cas.nll:.4f}")
    print(cas.summary().to_string())
    print(ic.to_string())
