r"""Osimertinib (+ AZ5104) and dacomitinib population PK, as used by Poels et al. 2021.

Oral doses (mg) go to a gut depot and are absorbed first-order; the depot is in mg and
the systemic compartments in nmol (dose in nmol = mg * 1e6 / MW), so concentrations
are in nM. Time in hours. No bioavailability term: clearances are apparent (CL/F).

**Osimertinib** (parent $A_1$, metabolite AZ5104 $A_2$; all parent clearance forms
the metabolite, as in the authors' ubiquity `system.txt`):

$$\dot A_g = -k_{ao} A_g,\quad
\dot A_1 = k_{ao} A_g \tfrac{10^6}{MW_o} - \tfrac{CL_{1o}}{V_{1o}} A_1,\quad
\dot A_2 = \tfrac{CL_{1o}}{V_{1o}} A_1 - \tfrac{CL_{2o}}{V_{2o}} A_2,\qquad C_{osi} = A_1/V_{1o}.$$

**Dacomitinib**, two structures (`catenary`, static switch):

- `catenary=True` (default, paper-faithful: the authors' code): elimination from the
  *peripheral* compartment, no return flow,
  $\dot A_c = k_{ad} A_g\tfrac{10^6}{MW_d} - \tfrac{Q_d}{V_{2d}} A_c$,
  $\dot A_p = \tfrac{Q_d}{V_{2d}} A_c - \tfrac{CL_d}{V_{3d}} A_p$.
  Its steady-state mean central concentration is dose rate / $Q_d$, independent of $CL_d$.
- `catenary=False` (standard 2-compartment, central elimination):
  $\dot A_c = k_{ad} A_g\tfrac{10^6}{MW_d} - \tfrac{CL_d}{V_{2d}} A_c - Q_d(\tfrac{A_c}{V_{2d}} - \tfrac{A_p}{V_{3d}})$,
  $\dot A_p = Q_d(\tfrac{A_c}{V_{2d}} - \tfrac{A_p}{V_{3d}})$.

$C_{daco} = A_c / V_{2d}$. The concentrations that drive the drug effect are
$f_u C$ (`fu_osi`, `fu_daco`; 1 = total plasma concentration, as in the paper; the
in vitro validation concentrations of the paper correspond to $f_u \approx 0.02$).

**Covariates and IIV** (`typical_pk`, `OMEGA`): the covariate models and the
log-normal IIV (variances and covariances, ubiquity `IIVCOR` entries) of the authors'
code (`Code/fixedPKparameters.R`, `system.txt`), summarised in
`shared/references/clonal-resistance.md` section 4. Individual value = typical x exp(eta),
eta ~ N(0, OMEGA).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from qsp import ODEModel, param

from ..blocks import first_order_absorption, linear_elimination

_SRC = "Poels 2021 (authors' ubiquity system.txt / fixedPKparameters.R)"
_POS = dict(bounds=(0.0, float("inf")))

#: PK parameters that carry IIV, in the row order of `OMEGA`.
PK_NAMES = ("kao", "CL1o", "V1o", "CL2o", "V2o", "kad", "CLd", "V2d", "Qd", "V3d")

#: IIV variances (log scale) in `PK_NAMES` order (authors' system.txt).
OMEGA_DIAG = (0.7921, 0.2116, 0.2704, 0.2704, 0.3844, 1.466, 0.103, 0.092, 0.025, 0.178)
#: Within-drug IIV covariances (authors' system.txt).
OMEGA_WITHIN = {("CL1o", "CL2o"): 0.21528, ("CLd", "Qd"): 0.035521}
#: Cross-drug IIV covariances (authors' system.txt; correlations ~0.1, ~0.1, ~0.85, ~0.85).
OMEGA_CROSS = {("CL1o", "CLd"): 0.014763, ("CL2o", "Qd"): 0.008222,
               ("V1o", "V2d"): 0.134065, ("V2o", "V3d"): 0.222342}


def omega(cross_drug: bool = True) -> np.ndarray:
    """The IIV covariance matrix (10 x 10, `PK_NAMES` order); `cross_drug=False` drops
    the osimertinib-dacomitinib covariances (the authors' "Corr0" scenario)."""
    om = np.diag(np.asarray(OMEGA_DIAG, dtype=float))
    entries = {**OMEGA_WITHIN, **(OMEGA_CROSS if cross_drug else {})}
    for (a, b), c in entries.items():
        i, j = PK_NAMES.index(a), PK_NAMES.index(b)
        om[i, j] = om[j, i] = c
    return om


#: Default covariates of `typical_pk`: a 70 kg EGFR-mutant patient, albumin 4 g/dL,
#: reference categories elsewhere.
DEFAULT_COVARIATES = dict(wt=70.0, alb=4.0, healthy=0.0, asian_other=0.0, chinese=0.0, japanese=0.0,
                          non_asian_caucasian=0.0, food=0.0, female=0.0, asian=0.0, concomitant=0.0,
                          egfr_mut=1.0, bat=22.0)


def typical_pk(**covariates) -> dict:
    """Typical PK values for given covariates (arrays broadcast), as coded by the authors.

    Keywords (defaults `DEFAULT_COVARIATES`): `wt` (kg), `alb` (g/dL), indicators
    `healthy`, `asian_other`, `chinese`, `japanese`, `non_asian_caucasian`, `food`,
    `female`, `asian`, `concomitant`, `egfr_mut`, and `bat` (the code's BAT covariate)."""
    unknown = set(covariates) - set(DEFAULT_COVARIATES)
    if unknown:
        raise ValueError(
            f"typical_pk: unknown covariate {sorted(unknown)[0]!r}; expected one of {sorted(DEFAULT_COVARIATES)}."
        )
    c = {k: jnp.asarray(covariates.get(k, v), dtype=float) for k, v in DEFAULT_COVARIATES.items()}
    wt = c["wt"] / 70.0
    return {
        "kao": 0.24 + 0.0 * wt,
        "CL1o": 14.2 * 1.44 ** c["healthy"] * wt**0.56,
        "V1o": 986.0 * (c["alb"] / 4.0) ** 1.33 * wt**0.65,
        "CL2o": 31.5 * 1.21 ** c["asian_other"] * 1.17 ** c["chinese"] * 1.20 ** c["japanese"]
        * 1.10 ** c["non_asian_caucasian"] * 2.25 ** c["healthy"] * wt**0.99,
        "V2o": 207.0 + 0.0 * wt,
        "kad": 0.067 * 1.227 ** c["food"],
        "CLd": 19.952 * wt**0.75 * 0.885 ** c["female"] * 1.085 ** c["asian"] * 0.67 ** c["concomitant"]
        * 1.093 ** c["egfr_mut"] * 0.954 ** (1.0 - c["egfr_mut"]) * (1.0 + 0.002 * (c["bat"] - 22.0))
        * (c["alb"] / 4.0) ** 0.543,
        "V2d": 899.371 + 0.0 * wt,
        "Qd": 17.32 + 0.0 * wt,
        "V3d": 908.308 + 0.0 * wt,
    }


_TV = {k: float(v) for k, v in typical_pk().items()}


def covariate_model(typical: dict, covariates: dict) -> dict:
    """Individual typical values for `qsp.vpop.Population(OsiDacoPK(), omega(), PK_NAMES,
    covariate_model=covariate_model)`: the authors' covariate models (`typical_pk`),
    scaled by the model's typical values relative to ours (so a model with edited
    typical values keeps its edits)."""
    ind = typical_pk(**covariates)
    return {k: typical[k] * ind[k] / _TV[k] for k in typical}


class AbstractOsiDacoPK(ODEModel):
    """PK parameters and vector field shared by `OsiDacoPK` and the clonal model."""

    kao: float = param(_TV["kao"], units="1/h", description="osimertinib absorption rate", source=_SRC, **_POS)
    CL1o: float = param(_TV["CL1o"], units="L/h", description="osimertinib clearance (70 kg)", source=_SRC, **_POS)
    V1o: float = param(_TV["V1o"], units="L", description="osimertinib volume (70 kg, Alb 4)", source=_SRC, **_POS)
    CL2o: float = param(_TV["CL2o"], units="L/h", description="AZ5104 clearance (70 kg)", source=_SRC, **_POS)
    V2o: float = param(_TV["V2o"], units="L", description="AZ5104 volume", source=_SRC, **_POS)
    kad: float = param(_TV["kad"], units="1/h", description="dacomitinib absorption rate (fasted)",
                       source=_SRC, **_POS)
    CLd: float = param(_TV["CLd"], units="L/h", description="dacomitinib clearance (70 kg, EGFR-mutant)",
                       source=_SRC, **_POS)
    V2d: float = param(_TV["V2d"], units="L", description="dacomitinib central volume", source=_SRC, **_POS)
    Qd: float = param(_TV["Qd"], units="L/h", description="dacomitinib intercompartmental clearance",
                      source=_SRC, **_POS)
    V3d: float = param(_TV["V3d"], units="L", description="dacomitinib peripheral volume", source=_SRC, **_POS)
    MWo: float = param(500.0, units="g/mol", description="osimertinib molecular weight (as coded)",
                       source=_SRC, **_POS)
    MWd: float = param(469.945, units="g/mol", description="dacomitinib molecular weight", source=_SRC, **_POS)
    fu_osi: float = param(1.0, units="1", bounds=(0.0, 1.0),
                          description="fraction of the osimertinib concentration that drives the effect "
                          "(1 = total, paper)")
    fu_daco: float = param(1.0, units="1", bounds=(0.0, 1.0),
                           description="fraction of the dacomitinib concentration that drives the effect "
                           "(1 = total, paper)")
    catenary: bool = eqx.field(static=True, default=True)

    def pk_matrix(self):
        """The 6 x 6 matrix K of the linear PK, dA/dt = K A, in the state order
        (OSI_GUT mg, OSI nmol, AZ5104 nmol, DACO_GUT mg, DACO nmol, DACO_P nmol)."""
        z = jnp.zeros(())
        kao, k1o, k2o = self.kao, self.CL1o / self.V1o, self.CL2o / self.V2o
        kad, kq2, kq3, kel = self.kad, self.Qd / self.V2d, self.Qd / self.V3d, self.CLd / self.V3d
        fo, fd = 1e6 / self.MWo, 1e6 / self.MWd
        if self.catenary:
            dc = (kad * fd, -kq2, z)
            dp = (z, kq2, -kel)
        else:
            dc = (kad * fd, -kq2 - self.CLd / self.V2d, kq3)
            dp = (z, kq2, -kq3)
        rows = [
            (-kao, z, z, z, z, z),
            (kao * fo, -k1o, z, z, z, z),
            (z, k1o, -k2o, z, z, z),
            (z, z, z, -kad, z, z),
            (z, z, z) + dc,
            (z, z, z) + dp,
        ]
        return jnp.stack([jnp.stack(jnp.broadcast_arrays(*r)) for r in rows])

    def pk_rhs(self, a):
        """dA/dt of the 6 PK states (written out with the shared blocks)."""
        og, o1, o2, dg, dc, dp = (a[i] for i in range(6))
        abs_o = first_order_absorption(self.kao, og)
        abs_d = first_order_absorption(self.kad, dg)
        el1 = linear_elimination(self.CL1o, self.V1o, o1)
        el2 = linear_elimination(self.CL2o, self.V2o, o2)
        c2p = linear_elimination(self.Qd, self.V2d, dc)  # central -> peripheral flux
        if self.catenary:
            d_c = abs_d * 1e6 / self.MWd - c2p
            d_p = c2p - linear_elimination(self.CLd, self.V3d, dp)
        else:
            back = linear_elimination(self.Qd, self.V3d, dp)
            d_c = abs_d * 1e6 / self.MWd - linear_elimination(self.CLd, self.V2d, dc) - c2p + back
            d_p = c2p - back
        return jnp.stack([-abs_o, abs_o * 1e6 / self.MWo - el1, el1 - el2, -abs_d, d_c, d_p])

    def pk_outputs(self, a):
        return {
            "C_osi": a[1] / self.V1o,
            "C_az5104": a[2] / self.V2o,
            "C_daco": a[4] / self.V2d,
            "C_daco_p": a[5] / self.V3d,
        }

    def effect_concentrations(self, a):
        """(daco, osi) concentrations (nM) that drive the birth rates: fu x total."""
        return self.fu_daco * a[4] / self.V2d, self.fu_osi * a[1] / self.V1o


class OsiDacoPK(AbstractOsiDacoPK):
    """Osimertinib (+AZ5104) and dacomitinib oral PK (Poels et al. 2021). Doses in mg
    into `OSI_GUT` / `DACO_GUT`; outputs in nM."""

    states = ("OSI_GUT", "OSI", "AZ5104", "DACO_GUT", "DACO", "DACO_P")

    def initial(self):
        return jnp.zeros(6)

    def rhs(self, t, y):
        return self.pk_rhs(y)

    def outputs(self, t, y):
        return self.pk_outputs(y)


def pk_on_grid(model: AbstractOsiDacoPK, ts, osi_mg, daco_mg):
    """Exact PK on a time grid by matrix exponentials (the PK is linear).

    **Arguments:** `model` (unbatched; `jax.vmap` for populations), `ts` (grid, h,
    increasing), `osi_mg`, `daco_mg` (dose given at each grid time, arrays like `ts`).
    **Returns:** amounts `(len(ts), 6)`: the state at each `ts[i]` *before* the dose
    given at `ts[i]` (concentrations are continuous across oral doses anyway).
    A uniform grid uses a single exponential."""
    # Uniformity is read from the concrete input, before any jnp op: under jit every
    # jnp result is a tracer, so testing after `jnp.asarray` took the per-step branch,
    # a batch of len(ts) 6x6 LU factorisations per patient. Such batches (batch x 216
    # >= 2e5 flop) are split by jaxlib's LAPACK kernels over the XLA CPU pool, whose
    # workers then block waiting: two concurrently and the pool deadlocks (issue 11).
    uniform = False
    if not isinstance(ts, jax.core.Tracer):
        dt_np = np.diff(np.asarray(ts, dtype=float))
        uniform = dt_np.size > 0 and np.allclose(dt_np, dt_np[0], rtol=1e-12, atol=0.0)
    ts = jnp.asarray(ts, dtype=float)
    K = model.pk_matrix()
    dts = jnp.diff(ts)
    if uniform:
        E = jax.scipy.linalg.expm(K * dts[0])
        Es = jnp.broadcast_to(E, (dts.shape[0], 6, 6))
    else:
        Es = jax.vmap(lambda h: jax.scipy.linalg.expm(K * h))(dts)
    doses = jnp.zeros((ts.shape[0], 6)).at[:, 0].set(osi_mg).at[:, 3].set(daco_mg)

    def step(a, inp):
        E, dose = inp
        return E @ (a + dose), a

    a_last, before = jax.lax.scan(step, jnp.zeros(6), (Es, doses[:-1]))
    return jnp.concatenate([before, a_last[None]], axis=0)


def population_axes(model):
    """`jax.vmap` in_axes for a model whose parameter leaves may carry a leading
    population axis beyond their declared per-patient shape (as `qsp.simulate` reads
    populations). Returns `(axes, n)`; `n` is None for a single patient."""
    from qsp import parameter_info

    shapes = {k: len(v.shape) for k, v in parameter_info(model).items()}
    axes, sizes = {}, set()
    for name, core in shapes.items():
        v = getattr(model, name)
        if eqx.is_array(v) and v.ndim > core:
            axes[name] = 0
            sizes.add(v.shape[0])
    if len(sizes) > 1:
        raise ValueError(f"population axes disagree: batched parameters have sizes {sorted(sizes)}.")
    spec = jax.tree.map(lambda _: None, model)
    for name in axes:
        spec = eqx.tree_at(lambda m, n=name: getattr(m, n), spec, 0, is_leaf=lambda x: x is None)
    return spec, (sizes.pop() if sizes else None)
