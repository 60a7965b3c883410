r"""van de Pas cholesterol model: the virtual-population benchmark of Allen et al. 2016
and Rieger et al. 2018 (8 cholesterol pools, 22 varied parameters).

van de Pas NC et al., Biophys J 2012 (human whole-body cholesterol model), as used by
Allen RJ, Rieger TR, Musante CJ, CPT Pharmacometrics Syst Pharmacol 2016;5:140 and
Rieger TR et al., Prog Biophys Mol Biol 2018;139:15 (`openPfizer/vpop-gen`, Apache-2.0).
Structure, values, search bounds and plausibility bounds as specified in
`shared/references/vandepas-benchmark.md` §1-2 (decoded from the SimBiology model;
data in `shared/data/vandepas/`). States are **amounts (mmol)**, time in days:

$$\begin{aligned}
\dot{FC_i} &= k_{03} + k_{04} + k_{14} FC_l - (k_{15} + k_{16} + k_{20}) FC_i, &
\dot{CE_i} &= k_{20} FC_i - k_{11} CE_i,\\
\dot{FC_l} &= k_{01} + k_{05} NH + k_{10} HCE + k_{13} HFC - (k_{14} + k_{18} + k_{19}) FC_l - k_{17}, &
\dot{CE_l} &= k_{19} FC_l - k_{06} CE_l,\\
\dot{HFC} &= k_{08} C_p + k_{16} FC_i + k_{17} - (k_{09} + k_{13}) HFC, &
\dot{HCE} &= k_{09} HFC - k_{10} HCE - k_{21} HCE\, NH / V_{pl},\\
\dot{NH} &= k_{06} CE_l + k_{11} CE_i + k_{21} HCE\, NH / V_{pl} - (k_{05} + k_{07}) NH, &
\dot{C_p} &= k_{02} + k_{07} NH - (k_{08} + k_{12}) C_p,
\end{aligned}$$

with $LDL = r\,NH$ and $V_{pl} = 2.79$ L. Outputs in mg/dL use the reference code's
factor $c = 38.66 / 2.79$: HDL $= c(HFC + HCE)$, LDL $= c\,r\,NH$, TC $= c(NH + HFC + HCE)$.

`steady_state()` solves the equilibrium algebraically (§1.6 of the spec): every pool is
explicit given NH, and NH is the positive root of the non-HDL balance $g(NH) = 0$,
found by bisection on a log grid (vectorised, no ODE integration). It is what the Vpop
benchmark uses; `qsp.simulate` of the ODE to long times gives the same point (tested).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from qsp import ODEModel, param

_SRC = "van de Pas 2012 via openPfizer/vpop-gen My_Model.mat (vandepas-benchmark.md §1.3)"
V_PL = 2.79  # L, plasma volume (vandepas-benchmark.md §1.1)
MGDL = 38.66 / 2.79  # mmol -> mg/dL factor hard-coded in vpop-gen (§1.5)

#: Search box of the 22 varied parameters (vandepas-benchmark.md §2.1; data/vdp_parameters.csv).
SEARCH_BOUNDS = {
    "k01": (0.0362, 1.44), "k02": (0.0, 12.1), "k03": (0.0692, 0.4995), "k04": (0.01, 2.19),
    "k05": (0.203136, 5.0784), "k06": (0.0997904, 2.49476), "k07": (0.023302, 0.58255),
    "k08": (0.0063786, 0.159465), "k09": (0.0, 17.58 / 0.837), "k10": (0.235996, 5.8999),
    "k11": (3.8, 95.0), "k12": (0.00673868, 0.168467), "k13": (0.37515, 9.37875),
    "k14": (1.28 / 14.4, 6.03 / 14.4), "k15": (0.0, 3.71 / 1.2736), "k16": (0.00628146, 0.1570365),
    "k17": (1.382, 34.55), "k18": (0.0, 2.23 / 14.4), "k19": (0.0661112, 1.65278),
    "k20": (0.477386, 11.93465), "k21": (3.46 * 2.79 / (2.4831 * 11.2437), 6.64 * 2.79 / (2.4831 * 11.2437)),
    "r": (0.0, 1.0),
}

#: Plausibility bounds (mmol) of FCi, CEi, FCl, CEl, HFC, HCE, NH, Cp, LDL, literally as
#: coded in vpop-gen `get_p_and_state_bnds.m` (vandepas-benchmark.md §2.2).
STATE_LOWER = np.array([0.0, 0.0, 12.24, 6.3, 0.3627 / 4, 0.3627 / 1.333, 0.5959 * 2.79, 0.34 * 64.8, 0.232 * 2.79])
STATE_UPPER = np.array([4.8 * 0.64, 0.88 * 0.64, 9.2 * 1.8, 7.1 * 1.8, 2.79 * 4.0415 / 4, 2.79 * 4.0415 / 1.333,
                        10.18 * 2.79, 1.74 * 64.8, 8.571 * 2.79])


def _k(default, units, what):
    return param(default, units=units, bounds=(0.0, float("inf")), transform="log", description=what, source=_SRC)


class vandepas(ODEModel):
    """van de Pas whole-body cholesterol model (8 pools, amounts in mmol, time in days)."""

    k01: float = _k(0.44, "mmol/day", "hepatic cholesterol synthesis")
    k02: float = _k(3.79, "mmol/day", "peripheral cholesterol synthesis")
    k03: float = _k(0.18, "mmol/day", "intestinal cholesterol synthesis")
    k04: float = _k(1.09, "mmol/day", "dietary cholesterol intake")
    k05: float = _k(1.01568, "1/day", "hepatic uptake from LDL")
    k06: float = _k(0.498952, "1/day", "VLDL-C secretion")
    k07: float = _k(0.11651, "1/day", "peripheral uptake from LDL")
    k08: float = _k(0.031893, "1/day", "peripheral transport to HDL")
    k09: float = _k(9.39068, "1/day", "HDL-associated esterification (LCAT)")
    k10: float = _k(1.17998, "1/day", "hepatic HDL-CE uptake")
    k11: float = _k(19.0, "1/day", "intestinal chylomicron secretion")
    k12: float = _k(0.0336934, "1/day", "peripheral cholesterol loss")
    k13: float = _k(1.87575, "1/day", "hepatic HDL-FC uptake")
    k14: float = _k(0.254167, "1/day", "biliary excretion")
    k15: float = _k(1.45258, "1/day", "fecal excretion")
    k16: float = _k(0.0314073, "1/day", "intestinal transport to HDL (adjusted for steady state)")
    k17: float = _k(6.91, "mmol/day", "hepatic transport to HDL (zero order)")
    k18: float = _k(0.0715278, "1/day", "hepatic catabolism")
    k19: float = _k(0.330556, "1/day", "hepatic esterification")
    k20: float = _k(2.38693, "1/day", "intestinal esterification")
    k21: float = _k(0.49266, "1/(mM*day)", "CETP transfer HDL-CE -> non-HDL")
    r: float = param(0.85, units="1", bounds=(0.0, 1.0), description="LDL / non-HDL ratio (NHANES fit)", source=_SRC)

    states = ("FCi", "CEi", "FCl", "CEl", "HFC", "HCE", "NH", "Cp")
    time_unit = "day"

    def initial(self):
        # Nominal steady state (vandepas-benchmark.md §1.2); the reference protocol starts
        # every parameter set here.
        return jnp.array([1.2736, 0.16, 14.4, 9.54, 0.837, 2.4831, 11.2437, 77.76])

    def rhs(self, t, y):
        FCi, CEi, FCl, CEl, HFC, HCE, NH, Cp = (y[i] for i in range(8))
        cetp = self.k21 * HCE * NH / V_PL
        return jnp.stack([
            self.k03 + self.k04 + self.k14 * FCl - (self.k15 + self.k16 + self.k20) * FCi,
            self.k20 * FCi - self.k11 * CEi,
            self.k01 + self.k05 * NH + self.k10 * HCE + self.k13 * HFC
            - (self.k14 + self.k18 + self.k19) * FCl - self.k17,
            self.k19 * FCl - self.k06 * CEl,
            self.k08 * Cp + self.k16 * FCi + self.k17 - (self.k09 + self.k13) * HFC,
            self.k09 * HFC - self.k10 * HCE - cetp,
            self.k06 * CEl + self.k11 * CEi + cetp - (self.k05 + self.k07) * NH,
            self.k02 + self.k07 * NH - (self.k08 + self.k12) * Cp,
        ])

    def outputs(self, t, y):
        return lipids(y, self.r)

    # -- the equilibrium, algebraically ----------------------------------------------------

    def _pools(self, NH):
        """Every pool at equilibrium given NH (§1.6)."""
        Cp = (self.k02 + self.k07 * NH) / (self.k08 + self.k12)
        di = self.k15 + self.k16 + self.k20
        a, b = (self.k03 + self.k04) / di, self.k14 / di
        h0 = (self.k08 * Cp + self.k16 * a + self.k17) / (self.k09 + self.k13)
        h1 = self.k16 * b / (self.k09 + self.k13)
        q = self.k09 / (self.k10 + self.k21 * NH / V_PL)
        u = self.k10 * q + self.k13
        FCl = (self.k01 + self.k05 * NH + u * h0 - self.k17) / (self.k14 + self.k18 + self.k19 - u * h1)
        FCi = a + b * FCl
        HFC = h0 + h1 * FCl
        HCE = q * HFC
        g = self.k19 * FCl + self.k20 * FCi + self.k21 * HCE * NH / V_PL - (self.k05 + self.k07) * NH
        y = jnp.stack([FCi, self.k20 * FCi / self.k11, FCl, self.k19 * FCl / self.k06, HFC, HCE,
                       jnp.broadcast_to(NH, jnp.shape(FCl)), Cp], axis=-1)
        return g, y

    def steady_state(self, n_bisect: int = 80, lo: float = 1e-6, hi: float = 1e4):
        """(y_ss, ok): the equilibrium state `(..., 8)` (batched over parameter leaves) and
        whether a positive root of g(NH) was bracketed in [lo, hi] (mmol) and every pool
        is positive. Bisection on log NH; g(lo) > 0 > g(hi) is required."""
        g_lo, _ = self._pools(jnp.asarray(lo))
        g_hi, _ = self._pools(jnp.asarray(hi))
        shape = jnp.broadcast_shapes(jnp.shape(g_lo), jnp.shape(g_hi))
        a, b = jnp.full(shape, np.log(lo)), jnp.full(shape, np.log(hi))

        def body(_, ab):
            a, b = ab
            m = 0.5 * (a + b)
            gm, _ = self._pools(jnp.exp(m))
            return jnp.where(gm > 0, m, a), jnp.where(gm > 0, b, m)

        a, b = jax.lax.fori_loop(0, n_bisect, body, (a, b))
        _, y = self._pools(jnp.exp(0.5 * (a + b)))
        ok = (g_lo > 0) & (g_hi < 0) & jnp.all(y > 0, axis=-1) & jnp.all(jnp.isfinite(y), axis=-1)
        return y, ok


def lipids(y, r):
    """HDL, LDL, TC (mg/dL), their natural logs, and LDL (mmol) from the state `(..., 8)`."""
    HFC, HCE, NH = y[..., 4], y[..., 5], y[..., 6]
    hdl, ldl, tc = MGDL * (HFC + HCE), MGDL * r * NH, MGDL * (NH + HFC + HCE)
    return {"HDL": hdl, "LDL": ldl, "TC": tc, "ln_hdl": jnp.log(hdl), "ln_ldl": jnp.log(ldl),
            "ln_tc": jnp.log(tc), "LDL_mmol": r * NH}


def plausible(y, r):
    """Strict plausibility (score exactly 0): all 8 pools and LDL = r NH inside
    `STATE_LOWER`/`STATE_UPPER` (inclusive)."""
    full = jnp.concatenate([y, (r * y[..., 6])[..., None]], axis=-1)
    return jnp.all((full >= STATE_LOWER) & (full <= STATE_UPPER), axis=-1)
