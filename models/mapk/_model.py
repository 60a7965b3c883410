r"""The Kirouac 2017 BRAF-V600E colorectal-cancer QSP model as a `qsp.ODEModel`.

Kirouac DC, Schaefer G, Chan J, et al. "Clinical responses to ERK inhibition in
BRAF^V600E-mutant colorectal cancer predicted using a computational model",
npj Syst Biol Appl 2017;3:14 (doi:10.1038/s41540-017-0016-1, CC BY 4.0). Equations
from the paper's SBML as translated to mrgsolve by Metrum Research Group
(metrumresearchgroup/cic-2017 : content/model/mapk.cpp); parameter values from
Supplementary Table S10 (`models/data/mapk/`). Time unit: day; drug amounts mg,
volumes L, concentrations mg/L (total plasma, tumour partition p = 1).

**Normalised Hill logic.** With $H(x; n, K) = x_+^n / (K^n + x_+^n)$ (the SBML calls
the exponent `k*` and the half-maximum `tau*`), every signalling node is algebraic:

$$\begin{aligned}
RTK1 &= [RTK1_b + (RTK1_t - RTK1_b)(1 - G_{13} H(FB3))(1 - G_{14} H(FB4))]\,(1 - H(C_{cet})) \\
RTK2 &= RTK2_b + (RTK2_t - RTK2_b)(1 - G_{23} H(FB3))(1 - G_{24} H(FB4)) \\
RAS  &= [RAS_b + (RAS_t - RAS_b) H(RTK1 + RTK2)]\,(1 - G_{spry} H(FB2)) \\
BRAF &= [BRAF_b + (BRAF_t - BRAF_b) H(RAS)]\,(1 - H(C_{vem})) \\
CRAF &= CRAF_b + (CRAF_t - CRAF_b) H(RAS) \quad(\times\,(1 + a_{par} H(C_{vem}) H(RAS))\text{, ours, off}) \\
MEK  &= [MEK_b + (MEK_t - MEK_b) H(BRAF + CRAF)]\,(1 - H(C_{cob})) \\
ERK  &= [ERK_b + (ERK_t - ERK_b) H(MEK)]\,(1 - G_{dusp} H(FB1))\,(1 - H(C_{gdc})) \\
PI3K &= PI3K_b + (PI3K_t - PI3K_b) H(RTK3 + w_{RAS} RAS), \quad
AKT = AKT_b + (AKT_t - AKT_b) H(PI3K) \\
S6   &= S6_b + (S6_t - S6_b) H(w_{OR} ERK + (1 - w_{OR}) AKT)
\end{aligned}$$

and the dynamic states are lagged copies and the tumour:

$$\dot{FB}_{1,2,3} = r_{1,2,3}(ERK - FB_{1,2,3}),\quad \dot{FB}_4 = r_4(AKT - FB_4),\quad
\dot{TD1} = r_5(S6 - TD1),$$
$$\dot{CELLS} = (u_{max} H(TD1; k_g, \tau_g) - d_{max})\, CELLS\,(1 - CELLS/V_{max}).$$

FB1 is the DUSP-type feedback on ERK, FB2 the SPRY-type feedback on RAS, FB3 the
ERK-dependent repression of RTK signalling, FB4 the AKT/FOXO feedback on RTKs (its gains
G14 = G24 = G34 = 0 in the CRC population). The PI3K-coupled RTK3 is 0 in Table S10, and
the unused AKT-inhibitor and oral-cetuximab compartments of the SBML are dropped.

**PK** (linear): cetuximab IV 1-compartment (`RTK1i_blood`), vemurafenib and GDC-0994
oral 1-compartment (`RAFi_gut`/`RAFi_blood`, `ERKi_gut`/`ERKi_blood`), cobimetinib oral
2-compartment (`MEKi_gut`/`MEKi_blood`/`MEKi_V3`), with Table S10's typical values.

**Initial state** (`init`, static): `"steady"` (default here) puts FB1-FB4 and TD1 at
the drug-free fixed point of each patient (so the signalling is at rest and only the
tumour grows, at the rate $g_0 = u_{max} H(S6^*) - d_{max}$); `"table"` uses Table
S10's initial values (FB = 0.7, TD1 = 1, as Metrum's cic-2017 runs); `"zeros"` starts
FB and TD1 at 0 (as Metrum's pbpk-qsp-mrgsolve runs). CELLS = 1 in all three.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from qsp import ODEModel, Rodas4, param

from ..blocks import first_order_absorption, hill_fraction

_INF = float("inf")
_S10 = "Kirouac 2017 Suppl. Table S10 (fixed for all patients)"
_VP = "Kirouac 2017 Table S10, varied: value of plausible patient 122 (the largest PW)"
_OURS = "ours (extension, not in Kirouac 2017; default reproduces the paper)"

INIT_MODES = ("steady", "table", "zeros")


def _p(value, description, *, units="1", source=_S10, lo=0.0, hi=_INF, transform=None):
    if transform is None and value == 0:
        transform = "identity"  # zero-valued switches: a log scale cannot hold 0
    return param(value, units=units, bounds=(lo, hi), transform=transform,
                 description=description, source=source)


def _frac(value, description, source=_S10):
    return _p(value, description, lo=0.0, hi=1.0, source=source,
              transform="identity" if value in (0, 1) else None)


def _known_zero(*values) -> bool:
    """True when every value is concretely zero (not traced), so a branch can be skipped."""
    for v in values:
        if isinstance(v, jax.core.Tracer):
            return False
        if not np.all(np.asarray(v) == 0):
            return False
    return True


def H(x, n, K):
    r"""The paper's normalised Hill function $x_+^n/(K^n + x_+^n)$ (exponent first, as
    the SBML's `HillEQ(x, k, tau)`), finite gradients at $x = 0$ for fractional $n$."""
    return hill_fraction(x, K, n)


class Kirouac2017(ODEModel):
    """BRAF-V600E CRC MAPK model of Kirouac et al. 2017 (see the module docstring)."""

    # -- receptor layer -------------------------------------------------------------
    RTK1b: float = _p(0.0, "basal EGFR (RTK1) activity")
    RTK1t: float = _p(0.054638, "maximal EGFR (RTK1) activity", source=_VP)
    G13: float = _frac(0.315472, "strength of ERK-dependent (FB3) repression of RTK1", source=_VP)
    G14: float = _frac(0.0, "strength of AKT-dependent (FB4) repression of RTK1")
    RTK2b: float = _p(0.0, "basal activity of other RAS-coupled RTKs (RTK2)")
    RTK2t: float = _p(0.032521, "maximal RTK2 activity (cetuximab-insensitive)", source=_VP)
    G23: float = _frac(0.0, "FB3 repression of RTK2")
    G24: float = _frac(0.0, "FB4 repression of RTK2")
    RTK3b: float = _p(0.0, "basal PI3K-coupled RTK (RTK3) activity")
    RTK3t: float = _p(0.0, "maximal RTK3 activity")
    G33: float = _frac(0.0, "FB3 repression of RTK3")
    G34: float = _frac(0.0, "FB4 repression of RTK3")
    kFB3: float = _p(2.975231742, "Hill exponent of FB3")
    tauFB3: float = _p(0.1, "half-maximum of FB3")
    kFB4: float = _p(2.0, "Hill exponent of FB4")
    tauFB4: float = _p(0.1, "half-maximum of FB4")
    # -- RAS / RAF / MEK / ERK ------------------------------------------------------
    RASb: float = _p(0.066341, "basal RAS activity", source=_VP)
    RASt: float = _p(0.620226, "maximal RAS activity", source=_VP)
    k1: float = _p(0.75, "Hill exponent RTK -> RAS")
    tau1: float = _p(0.5, "half-maximum RTK -> RAS")
    Gspry: float = _frac(0.246719, "strength of SPRY-type (FB2) feedback on RAS", source=_VP)
    kFB2: float = _p(0.436051023, "Hill exponent of FB2")
    tauFB2: float = _p(0.348731219, "half-maximum of FB2")
    BRAFb: float = _p(0.9, "RAS-independent BRAF(V600E) activity")
    BRAFt: float = _p(5.707883, "maximal BRAF activity", source=_VP)
    k2: float = _p(0.1, "Hill exponent RAS -> BRAF")
    tau2: float = _p(2.324980605, "half-maximum RAS -> BRAF")
    CRAFb: float = _p(0.0, "basal CRAF activity")
    CRAFt: float = _p(0.899908, "maximal CRAF activity", source=_VP)
    k5: float = _p(2.74625277, "Hill exponent RAS -> CRAF")
    tau5: float = _p(0.408684957, "half-maximum RAS -> CRAF")
    MEKb: float = _p(0.029434, "basal MEK activity", source=_VP)
    MEKt: float = _p(0.905524, "maximal MEK activity", source=_VP)
    k3: float = _p(2.230710131, "Hill exponent RAF -> MEK")
    tau3: float = _p(0.671868475, "half-maximum RAF -> MEK")
    ERKb: float = _p(0.0, "basal ERK activity")
    ERKt: float = _p(1.0, "maximal ERK activity")
    k4: float = _p(2.609115337, "Hill exponent MEK -> ERK")
    tau4: float = _p(0.1, "half-maximum MEK -> ERK")
    Gdusp: float = _frac(0.358392, "strength of DUSP-type (FB1) feedback on ERK", source=_VP)
    kFB1: float = _p(0.1, "Hill exponent of FB1")
    tauFB1: float = _p(10.0, "half-maximum of FB1")
    # -- PI3K / AKT / S6 ------------------------------------------------------------
    PI3Kb: float = _p(0.119594, "basal PI3K activity", source=_VP)
    PI3Kt: float = _p(1.0, "maximal PI3K activity", source=_VP)
    k7: float = _p(1.0, "Hill exponent RAS/RTK3 -> PI3K")
    tau7: float = _p(0.25, "half-maximum RAS/RTK3 -> PI3K")
    wRAS: float = _frac(0.884663, "weight of RAS input to PI3K", source=_VP)
    AKTb: float = _p(0.0, "basal AKT activity")
    AKTt: float = _p(1.0, "maximal AKT activity")
    k8: float = _p(1.0, "Hill exponent PI3K -> AKT")
    tau8: float = _p(0.25, "half-maximum PI3K -> AKT")
    S6b: float = _p(0.0, "basal S6 activity")
    S6t: float = _p(1.0, "maximal S6 activity")
    k6: float = _p(3.0, "Hill exponent ERK/AKT -> S6")
    tau6: float = _p(0.1, "half-maximum ERK/AKT -> S6")
    wOR: float = _frac(0.893603, "weight of ERK (vs AKT) in the S6 OR gate", source=_VP)
    # -- dynamics and tumour --------------------------------------------------------
    r1: float = _p(3.435989897, "rate of FB1 (DUSP) following ERK", units="1/day")
    r2: float = _p(1.167725843, "rate of FB2 (SPRY) following ERK", units="1/day")
    r3: float = _p(0.959576785, "rate of FB3 following ERK", units="1/day")
    r4: float = _p(1.0, "rate of FB4 following AKT", units="1/day")
    r5: float = _p(10.0, "rate of the S6 signal delay TD1", units="1/day")
    umax: float = _p(0.075, "maximal growth rate", units="1/day")
    kg: float = _p(0.468373391, "Hill exponent TD1 -> growth")
    taug: float = _p(0.241479374, "half-maximum TD1 -> growth")
    dmax: float = _p(0.043984, "death rate", units="1/day", source=_VP)
    Vmax: float = _p(12.0, "carrying capacity (tumour size relative to baseline)")
    # -- drug potencies (Hill inhibition on total plasma concentration) -------------
    ki1: float = _p(1.0, "Hill exponent of cetuximab on RTK1")
    taui1: float = _p(0.0304, "cetuximab IC50 on RTK1", units="mg/L")
    ki2: float = _p(2.0, "Hill exponent of vemurafenib on BRAF")
    taui2: float = _p(0.028338973, "vemurafenib IC50 on BRAF", units="mg/L")
    ki3: float = _p(0.65, "Hill exponent of cobimetinib on MEK")
    taui3: float = _p(0.000779559, "cobimetinib IC50 on MEK", units="mg/L")
    ki4: float = _p(0.65, "Hill exponent of GDC-0994 on ERK")
    taui4: float = _p(0.025468539, "GDC-0994 IC50 on ERK", units="mg/L")
    # -- PK (Table S10 typical values) ----------------------------------------------
    V1: float = _p(4.5, "cetuximab volume", units="L")
    ke1: float = _p(0.148531539, "cetuximab elimination rate", units="1/day")
    V2: float = _p(114.0, "vemurafenib volume", units="L")
    ke2: float = _p(0.28245614, "vemurafenib elimination rate", units="1/day")
    ka2: float = _p(4.5, "vemurafenib absorption rate", units="1/day")
    V3: float = _p(487.0, "cobimetinib central volume", units="L")
    ke3: float = _p(0.630136986, "cobimetinib elimination rate", units="1/day")
    ka3: float = _p(33.0, "cobimetinib absorption rate", units="1/day")
    q2: float = _p(210.0, "cobimetinib intercompartmental clearance", units="L/day")
    V3b: float = _p(295.0, "cobimetinib peripheral volume", units="L")
    V4: float = _p(171.0, "GDC-0994 volume", units="L")
    ke4: float = _p(0.882162162, "GDC-0994 elimination rate", units="1/day")
    ka4: float = _p(35.0, "GDC-0994 absorption rate", units="1/day")
    F2: float = _frac(1.0, "vemurafenib bioavailability")
    F3: float = _frac(1.0, "cobimetinib bioavailability")
    F4: float = _frac(1.0, "GDC-0994 bioavailability")
    p1: float = _p(1.0, "tumour/plasma partition of cetuximab")
    p2: float = _p(1.0, "tumour/plasma partition of vemurafenib")
    p3: float = _p(1.0, "tumour/plasma partition of cobimetinib")
    p4: float = _p(1.0, "tumour/plasma partition of GDC-0994")
    # -- paradoxical CRAF activation by the BRAF inhibitor (ours, off) --------------
    a_par: float = _p(0.0, "maximal paradoxical CRAF activation by vemurafenib", source=_OURS)
    n_par: float = _p(1.0, "Hill exponent of paradoxical activation", source=_OURS)
    K_par: float = _p(0.028338973, "half-maximal vemurafenib concentration of paradoxical "
                      "activation (default: taui2)", units="mg/L", source=_OURS)

    init: str = eqx.field(static=True, default="steady")

    states = ("FB1", "FB2", "FB3", "FB4", "TD1", "CELLS", "RTK1i_blood", "RAFi_gut",
              "RAFi_blood", "MEKi_gut", "MEKi_blood", "MEKi_V3", "ERKi_gut", "ERKi_blood")
    time_unit = "day"

    @staticmethod
    def default_solver(rtol, atol):
        """`qsp.simulate`'s solver for this model when none is passed: `qsp.Rodas4`
        (Rosenbrock, one Jacobian + LU per step, no Newton loop) rather than qsp's
        generic Kvaerno5 + Chord. In the population suite (benchmarks/NOTES.md section
        14, all four drugs, rtol 1e-6 / atol 1e-9, chunks of 64) it ran 8.2 patients/s
        against 4.6 (1.7-1.8x), with 2.3x the steps at a quarter of the cost each, and
        agreed with scipy LSODA at rtol 1e-10 to 9.0e-9 (Kvaerno5: 6.2e-7). The step
        tolerances go to the step-size controller; Rodas4 has no inner solve to tune.
        Pass `solver=qsp.default_solver(rtol, atol)` for the Kvaerno5 path."""
        return Rodas4()

    def __check_init__(self):
        if self.init not in INIT_MODES:
            raise ValueError(f"Kirouac2017 init={self.init!r} is not known; expected one of {INIT_MODES}.")

    # -- the algebraic cascade ---------------------------------------------------------

    def signalling(self, FB1, FB2, FB3, FB4, c_cet=0.0, c_vem=0.0, c_cob=0.0, c_gdc=0.0) -> dict:
        """Every node of the cascade for given feedback states and drug concentrations
        (mg/L). Broadcasts elementwise over array arguments and batched parameters."""
        h3, h4 = H(FB3, self.kFB3, self.tauFB3), H(FB4, self.kFB4, self.tauFB4)
        rtk1 = (self.RTK1b + (self.RTK1t - self.RTK1b) * (1 - self.G13 * h3) * (1 - self.G14 * h4)) * (
            1 - H(c_cet, self.ki1, self.taui1))
        rtk2 = self.RTK2b + (self.RTK2t - self.RTK2b) * (1 - self.G23 * h3) * (1 - self.G24 * h4)
        rtk3 = self.RTK3b + (self.RTK3t - self.RTK3b) * (1 - self.G33 * h3) * (1 - self.G34 * h4)
        ras = (self.RASb + (self.RASt - self.RASb) * H(rtk1 + rtk2, self.k1, self.tau1)) * (
            1 - self.Gspry * H(FB2, self.kFB2, self.tauFB2))
        braf = (self.BRAFb + (self.BRAFt - self.BRAFb) * H(ras, self.k2, self.tau2)) * (
            1 - H(c_vem, self.ki2, self.taui2))
        h_ras_craf = H(ras, self.k5, self.tau5)
        craf = (self.CRAFb + (self.CRAFt - self.CRAFb) * h_ras_craf) * (
            1 + self.a_par * H(c_vem, self.n_par, self.K_par) * h_ras_craf)
        mek = (self.MEKb + (self.MEKt - self.MEKb) * H(braf + craf, self.k3, self.tau3)) * (
            1 - H(c_cob, self.ki3, self.taui3))
        erk = ((self.ERKb + (self.ERKt - self.ERKb) * H(mek, self.k4, self.tau4))
               * (1 - self.Gdusp * H(FB1, self.kFB1, self.tauFB1)) * (1 - H(c_gdc, self.ki4, self.taui4)))
        pi3k = self.PI3Kb + (self.PI3Kt - self.PI3Kb) * H(rtk3 + self.wRAS * ras, self.k7, self.tau7)
        akt = self.AKTb + (self.AKTt - self.AKTb) * H(pi3k, self.k8, self.tau8)
        s6 = self.S6b + (self.S6t - self.S6b) * H(self.wOR * erk + (1 - self.wOR) * akt, self.k6, self.tau6)
        return dict(RTK1=rtk1, RTK2=rtk2, RTK3=rtk3, RAS=ras, BRAF=braf, CRAF=craf, MEK=mek,
                    ERK=erk, PI3K=pi3k, AKT=akt, S6=s6)

    def _bisect(self, f, hi, iters):
        """Root of a strictly decreasing `f` on [0, hi] by bisection, then one Newton step
        from the (gradient-stopped) bisection result: that step carries the implicit-
        function gradient dx*/dθ = -(∂f/∂θ)/(∂f/∂x) without differentiating the loop."""
        hi = jnp.broadcast_to(hi, jnp.shape(f(hi * 0.5)))
        lo = jnp.zeros_like(hi)

        def step(_, lohi):
            a, b = lohi
            mid = 0.5 * (a + b)
            up = f(mid) > 0
            return jnp.where(up, mid, a), jnp.where(up, b, mid)

        a, b = jax.lax.fori_loop(0, iters, step, jax.lax.stop_gradient((lo, hi)))
        x0 = jax.lax.stop_gradient(0.5 * (a + b))
        fx, dfx = jax.jvp(f, (x0,), (jnp.ones_like(x0),))
        return x0 - fx / dfx

    def _fb4_rest(self, e, conc, iters):
        # FB4 at rest given FB1-3 = e: the root of AKT(FB4 = a) - a, decreasing in a
        # (FB4 represses the RTKs upstream of PI3K/AKT).
        if _known_zero(self.G14, self.G24, self.G34):
            # FB4 feeds back on nothing (all CRC patients): AKT at any FB4 is its rest value.
            return self.signalling(e, e, e, 0.0, *conc)["AKT"]
        top = jnp.maximum(jnp.asarray(self.AKTt, float), jnp.asarray(self.AKTb, float))
        return self._bisect(lambda a: self.signalling(e, e, e, a, *conc)["AKT"] - a, top, iters)

    def erk_fixed_point(self, c_cet=0.0, c_vem=0.0, c_cob=0.0, c_gdc=0.0, iters: int = 60):
        r"""ERK at rest under constant drug: the root $e^*$ of
        $g(e) = ERK(FB_{1,2,3} = e, FB_4 = a^*(e)) - e$, where $a^*(e)$ is FB4 at rest.

        ERK falls as its feedbacks rise, so $g$ is strictly decreasing and its root in
        $[0, \max(ERK_t, ERK_b)]$ is unique when the AKT-dependent RTK feedback is off
        ($G_{14} = G_{24} = G_{34} = 0$, as in every Table S10 patient); bisection finds it."""
        conc = (c_cet, c_vem, c_cob, c_gdc)
        top = jnp.maximum(jnp.asarray(self.ERKt, float), jnp.asarray(self.ERKb, float))
        g = lambda e: self.signalling(e, e, e, self._fb4_rest(e, conc, iters), *conc)["ERK"] - e
        return self._bisect(g, top, iters)

    def rest_state(self, c_cet=0.0, c_vem=0.0, c_cob=0.0, c_gdc=0.0) -> dict:
        """Feedback, delay and cascade values at rest under constant drug (FB1-3 = ERK*,
        FB4 = AKT*, TD1 = S6*), and the net growth rate there, `g0` (1/day)."""
        conc = (c_cet, c_vem, c_cob, c_gdc)
        e = self.erk_fixed_point(*conc)
        a = self._fb4_rest(e, conc, 60)
        nodes = self.signalling(e, e, e, a, *conc)
        g0 = self.umax * H(nodes["S6"], self.kg, self.taug) - self.dmax
        return dict(nodes, FB1=e, FB2=e, FB3=e, FB4=a, TD1=nodes["S6"], g0=g0)

    # -- ODEModel interface ------------------------------------------------------------

    def concentrations(self, y):
        """Tumour drug concentrations (mg/L): cetuximab, vemurafenib, cobimetinib, GDC-0994."""
        return (self.p1 * y[..., 6] / self.V1, self.p2 * y[..., 8] / self.V2,
                self.p3 * y[..., 10] / self.V3, self.p4 * y[..., 13] / self.V4)

    def initial(self):
        zero = jnp.zeros(8)
        if self.init == "steady":
            r = self.rest_state()
            pd = jnp.stack([r["FB1"], r["FB2"], r["FB3"], r["FB4"], r["TD1"], jnp.ones(())])
        elif self.init == "table":  # Table S10 initial values (FB1-4 = 0.7, TD1 = 1)
            pd = jnp.array([0.7, 0.7, 0.7, 0.7, 1.0, 1.0])
        else:
            pd = jnp.array([0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
        return jnp.concatenate([jnp.asarray(pd, float), zero])

    def pd_rhs(self, y_pd, conc):
        """d/dt of the six PD states (FB1-4, TD1, CELLS) at drug concentrations `conc`
        (mg/L; cetuximab, vemurafenib, cobimetinib, GDC-0994)."""
        fb1, fb2, fb3, fb4, td1, cells = (y_pd[..., i] for i in range(6))
        n = self.signalling(fb1, fb2, fb3, fb4, *conc)
        growth = (self.umax * H(td1, self.kg, self.taug) - self.dmax) * cells * (1 - cells / self.Vmax)
        return jnp.stack([
            self.r1 * (n["ERK"] - fb1),
            self.r2 * (n["ERK"] - fb2),
            self.r3 * (n["ERK"] - fb3),
            self.r4 * (n["AKT"] - fb4),
            self.r5 * (n["S6"] - td1),
            growth,
        ], axis=-1)

    def rhs(self, t, y):
        a_vem = first_order_absorption(self.ka2, y[7])
        a_cob = first_order_absorption(self.ka3, y[9])
        a_gdc = first_order_absorption(self.ka4, y[12])
        # Cobimetinib distribution as in the SBML: rate constants q2/V3 and q2/V3b.
        to_periph = self.q2 / self.V3 * y[10] - self.q2 / self.V3b * y[11]
        return jnp.concatenate([self.pd_rhs(y[:6], self.concentrations(y)), jnp.stack([
            -self.ke1 * y[6],
            -a_vem,
            self.F2 * a_vem - self.ke2 * y[8],
            -a_cob,
            self.F3 * a_cob - self.ke3 * y[10] - to_periph,
            to_periph,
            -a_gdc,
            self.F4 * a_gdc - self.ke4 * y[13],
        ])])

    def outputs(self, t, y):
        c = self.concentrations(y)
        n = self.signalling(y[0], y[1], y[2], y[3], *c)
        out = {"TUMOR": y[5], "C_cetuximab": c[0], "C_vemurafenib": c[1],
               "C_cobimetinib": c[2], "C_gdc0994": c[3]}
        out.update({k: n[k] for k in ("RTK1", "RTK2", "RAS", "BRAF", "CRAF", "MEK", "ERK", "AKT", "S6")})
        out.update({name: y[i] for i, name in enumerate(self.states[:5])})
        return out
