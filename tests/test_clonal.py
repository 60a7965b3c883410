"""Clonal model of Poels et al. 2021: the authors' 10-patient demo, PK checks, invariants,
gradients.

References: the authors' demo fixture (tests/data/clonal: their per-patient PK
parameters, deSolve/lsoda concentrations on a 483-point grid, initial conditions and
end-of-week counts), closed-form steady states of linear oral PK, the steady-state
averages tabulated in shared/references/clonal-resistance.md section 4, an independent
solver (matrix exponentials vs qsp.simulate), central finite differences."""

import os

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import qsp
import qsp.models.clonal as clonal
from qsp.models.clonal import pk as cpk

DATA = os.path.join(os.path.dirname(__file__), "data", "clonal")
SCHEDULES = ("osi80QD_daco30QD", "osi80QD_alone")
DACO_MG = {"osi80QD_daco30QD": 30.0, "osi80QD_alone": 0.0}  # the demo used 30 mg (not 40 as its README says)
CLONE_COLS = ["n0_ex19del", "n1_T790M", "n2_NRAS", "n3_C797S"]


def _read(name):
    return pd.read_csv(os.path.join(DATA, name), comment="#")


@pytest.fixture(scope="module")
def demo():
    conc = _read("demo_concentrations.csv.gz").sort_values(["schedule", "patient", "time_h"])
    pkp = _read("demo_pk_params.csv").sort_values("patient")
    ic = _read("demo_initial_conditions.csv").sort_values("patient")
    ex = _read("demo_expected_counts_168h.csv")
    ts = conc[(conc.schedule == SCHEDULES[0]) & (conc.patient == 1)]["time_h"].to_numpy()
    C = {s: {c: conc[conc.schedule == s][c].to_numpy().reshape(10, -1) for c in ("C_osi_nM", "C_daco_c_nM")}
         for s in SCHEDULES}
    model = clonal.OsiDacoPK(**{k: jnp.asarray(pkp[k].to_numpy()) for k in cpk.PK_NAMES})
    expected = {s: ex[ex.schedule == s].sort_values("patient")[CLONE_COLS].to_numpy() for s in SCHEDULES}
    return dict(ts=ts, C=C, pk=model, ic=ic, expected=expected)


def _grid_pk(model, ts, osi_mg, daco_mg):
    """PK (amounts) on `ts` by matrix exponentials for a population `model`; doses QD at 0..144 h."""
    tg = np.concatenate([[0.0], ts]) if ts[0] > 0 else ts
    on = np.isclose(tg[:, None], np.arange(0.0, 168.0, 24.0)[None], rtol=0, atol=1e-9).any(axis=1)
    assert on.sum() == 7  # every dose time lies on the grid
    axes, _ = cpk.population_axes(model)
    A = jax.vmap(lambda m: cpk.pk_on_grid(m, tg, osi_mg * on, daco_mg * on), in_axes=(axes,))(model)
    return A[:, len(tg) - len(ts):]


def test_demo_concentrations_match_authors(demo):
    # The authors' curves are deSolve lsoda output (default rtol 1e-6), so they carry
    # ~1e-6 relative error themselves: matrix exponentials (exact) and scipy LSODA at
    # rtol 1e-12 both differ from them by at most 1.24e-6 pointwise. We test 1e-6
    # relative to each curve's maximum, and 1.5e-6 pointwise.
    m = demo["pk"]
    for s in SCHEDULES:
        A = _grid_pk(m, demo["ts"], 80.0, DACO_MG[s])
        osi = A[..., 1] / m.V1o[:, None]
        daco = A[..., 4] / m.V2d[:, None]
        ref_o, ref_d = demo["C"][s]["C_osi_nM"], demo["C"][s]["C_daco_c_nM"]
        np.testing.assert_allclose(osi, ref_o, rtol=1.5e-6)
        assert np.max(np.abs(osi - ref_o) / ref_o.max(axis=1, keepdims=True)) <= 1e-6
        if DACO_MG[s]:
            np.testing.assert_allclose(daco, ref_d, rtol=1.5e-6)
            assert np.max(np.abs(daco - ref_d) / ref_d.max(axis=1, keepdims=True)) <= 1e-6
        else:
            assert np.all(ref_d == 0) and np.all(daco == 0)


def test_standard_two_compartment_differs_from_authors(demo):
    # The catenary structure (as coded) is what reproduces the demo; the standard
    # 2-compartment dacomitinib model does not (reference section 4).
    m = demo["pk"]
    std = clonal.OsiDacoPK(**{k: getattr(m, k) for k in cpk.PK_NAMES}, catenary=False)
    A = _grid_pk(std, demo["ts"], 80.0, 30.0)
    rel = np.abs(A[..., 4] / m.V2d[:, None] / demo["C"][SCHEDULES[0]]["C_daco_c_nM"] - 1)
    assert rel[:, 1:].max() > 0.05


def test_demo_counts_trapezoid_match_authors(demo):
    # The authors' closed form with trapezoid integrals on their concentration grid:
    # rtol 1e-10 (issue 6; their output is printed with 12 significant digits).
    ic = demo["ic"]
    n_init = ic[CLONE_COLS].to_numpy()
    mu = ic[["mu_T790M", "mu_NRAS", "mu_C797S"]].to_numpy()
    f = jax.vmap(lambda d, o, n, u: clonal.counts_trapezoid(demo["ts"], d, o, n, u))
    for s in SCHEDULES:
        C = demo["C"][s]
        got = f(C["C_daco_c_nM"], C["C_osi_nM"], n_init, mu)
        np.testing.assert_allclose(got, demo["expected"][s], rtol=1e-10)
    # With the NRAS osimertinib term kept (validation form) the demo is not reproduced.
    val = clonal.published_surface(nras_osi=True)
    C = demo["C"][SCHEDULES[0]]
    got = clonal.counts_trapezoid(demo["ts"], C["C_daco_c_nM"][0], C["C_osi_nM"][0], n_init[0], mu[0], val)
    assert abs(got[2] / demo["expected"][SCHEDULES[0]][0, 2] - 1) > 0.01


@pytest.fixture(scope="module")
def demo_ode(demo):
    """ClonalModel ODE (PK + clones) for the 10 demo patients x 2 schedules (batch 20)."""
    ic = demo["ic"]
    pkp = {k: jnp.tile(getattr(demo["pk"], k), 2) for k in cpk.PK_NAMES}
    model = clonal.ClonalModel(
        **pkp,
        n_init=jnp.tile(jnp.asarray(ic[CLONE_COLS].to_numpy()), (2, 1)),
        mu=jnp.tile(jnp.asarray(ic[["mu_T790M", "mu_NRAS", "mu_C797S"]].to_numpy()), (2, 1)),
    )
    regs = [qsp.Regimen.bolus(80.0, 0.0, "OSI_GUT", ii=24.0, addl=6)
            + qsp.Regimen.bolus(DACO_MG[s], 0.0, "DACO_GUT", ii=24.0, addl=6) for s in SCHEDULES for _ in range(10)]
    sol = qsp.simulate(model, qsp.Regimen.stack(regs), jnp.array([24.0, 168.0]), rtol=1e-9, atol=1e-6,
                       solver=dfx.Tsit5())
    return sol


def test_demo_counts_ode_match_authors(demo, demo_ode):
    # The ODE is the exact model; the authors' numbers are a trapezoid rule on a grid
    # with 0.42-1 h steps. That quadrature error is what separates them (issue 6 hoped
    # for 1e-3): measured worst cases over the 20 runs are 0.54% (sensitive), 2.1%
    # (T790M), 8.9% (NRAS), 3.0% (C797S), 0.54% (total). Tolerances just above those.
    sol = demo_ode.raise_if_failed()
    got = np.asarray(sol.states[:, -1, 6:])
    ref = np.concatenate([demo["expected"][s] for s in SCHEDULES])
    rel = np.abs(got / ref - 1)
    assert np.all(rel.max(axis=0) < [6e-3, 2.5e-2, 0.1, 3.5e-2]), rel.max(axis=0)
    np.testing.assert_allclose(got.sum(axis=1), ref.sum(axis=1), rtol=6e-3)
    # After one week total cells fall to 0.40-0.55x baseline (reference section 7a).
    ratio = got.sum(axis=1) / np.tile(demo["ic"][CLONE_COLS].to_numpy().sum(axis=1), 2)
    assert 0.39 < ratio.min() and ratio.max() < 0.56


def test_demo_counts_ode_match_converged_quadrature(demo, demo_ode):
    # Independent check of the ODE: exact PK (matrix exponentials) on uniform grids of
    # h = 0.02 and 0.01 h, the trapezoid closed form on each, and Richardson
    # extrapolation (4 T(h/2) - T(h)) / 3 of its O(h^2) error: rtol 2e-5 (combination
    # schedule, 10 patients).
    ic = demo["ic"]
    n_init = jnp.asarray(ic[CLONE_COLS].to_numpy())
    mu = jnp.asarray(ic[["mu_T790M", "mu_NRAS", "mu_C797S"]].to_numpy())
    m = demo["pk"]
    got = np.asarray(demo_ode.states[:, -1, 6:])
    for j, s in enumerate(SCHEDULES[:1]):
        T = []
        for h in (0.02, 0.01):
            tg = np.linspace(0.0, 168.0, int(round(168.0 / h)) + 1)
            A = _grid_pk(m, tg, 80.0, DACO_MG[s])
            count = jax.vmap(lambda A, v1, v2, n, u: clonal.counts_trapezoid(tg, A[:, 4] / v2, A[:, 1] / v1, n, u))
            T.append(np.asarray(count(A, m.V1o, m.V2d, n_init, mu)))
        np.testing.assert_allclose(got[10 * j:10 * (j + 1)], (4 * T[1] - T[0]) / 3, rtol=2e-5)


def test_clone_vector_field_invariants():
    # d(total)/dt = sum_k (b_k - d_k) n_k: mutation moves cells, it does not create them;
    # the vector field keeps counts non-negative (zero clones are only fed, not drained).
    s = clonal.published_surface()
    key = jax.random.key(1)
    for i in range(5):
        k1, k2, k3, key = jax.random.split(key, 4)
        n = jax.random.uniform(k1, (4,), minval=0.0, maxval=1e9).at[2].set(0.0)
        daco, osi = jax.random.uniform(k2, (2,), maxval=300.0)
        mu = jax.random.uniform(k3, (3,), maxval=1e-3)
        b = s.birth(daco, osi)
        dn = clonal.clone_matrix(b, s.death, mu) @ n
        np.testing.assert_allclose(jnp.sum(dn), jnp.sum((b - s.death) * n), rtol=1e-12)
        assert float(dn[2]) >= 0.0


def _ss_oral(dose_nmol, ka, k, V, tau, t):
    """Closed-form steady state of a one-compartment oral model (superposition of
    infinitely many doses), t in [0, tau) after a dose."""
    return dose_nmol * ka / (V * (ka - k)) * (np.exp(-k * t) / (1 - np.exp(-k * tau))
                                              - np.exp(-ka * t) / (1 - np.exp(-ka * tau)))


@pytest.fixture(scope="module")
def typical_ss():
    """Typical patient, osi 40 mg + daco 30 mg QD for 40 days, hourly save times on the last day."""
    m = clonal.OsiDacoPK()
    reg = (qsp.Regimen.bolus(40.0, 0.0, "OSI_GUT", ii=24.0, addl=39)
           + qsp.Regimen.bolus(30.0, 0.0, "DACO_GUT", ii=24.0, addl=39))
    ts = 936.0 + np.arange(0.0, 24.0, 1.0)
    sol = qsp.simulate(m, reg, ts, rtol=1e-10, atol=1e-8, max_steps=2048, obs_after_dose=True,
                       solver=dfx.Tsit5())
    return m, ts - 936.0, sol.raise_if_failed()


def test_steady_state_matches_closed_form(typical_ss):
    m, t, sol = typical_ss
    osi = _ss_oral(40e6 / m.MWo, m.kao, m.CL1o / m.V1o, m.V1o, 24.0, t)
    daco = _ss_oral(30e6 / m.MWd, m.kad, m.Qd / m.V2d, m.V2d, 24.0, t)  # catenary central = 1-cpt, k = Qd/V2d
    # 40 days is > 40 half-lives of osimertinib and ~ 18 of the slowest daco rate: rtol 1e-5.
    np.testing.assert_allclose(sol.outputs["C_osi"], osi, rtol=1e-5)
    np.testing.assert_allclose(sol.outputs["C_daco"], daco, rtol=1e-5)
    # Mean concentrations: dose rate / clearance (osi 40 mg QD: 235 nM; daco 30 mg QD:
    # dose rate / Qd = 153.6 nM; reference section 4 table).
    np.testing.assert_allclose(np.mean(osi), 40e6 / m.MWo / 24.0 / m.CL1o, rtol=1e-3)
    assert round(float(40e6 / m.MWo / 24.0 / m.CL1o)) == 235
    assert round(float(30e6 / m.MWd / 24.0 / m.Qd), 1) == 153.6


def test_simulate_agrees_with_matrix_exponential_both_structures():
    # Independent methods: adaptive ODE solve vs exact matrix exponentials, 2 weeks of
    # daco 15 mg TID (8 h) + osi 40 mg BID, standard 2-compartment dacomitinib (the
    # catenary ODE is checked against quadrature with the demo above).
    ts = np.arange(0.0, 337.0, 1.0)
    osi = np.where(ts % 12 == 0, 40.0, 0.0) * (ts < 336)
    daco = np.where(ts % 8 == 0, 15.0, 0.0) * (ts < 336)
    reg = (qsp.Regimen.bolus(40.0, 0.0, "OSI_GUT", ii=12.0, addl=27)
           + qsp.Regimen.bolus(15.0, 0.0, "DACO_GUT", ii=8.0, addl=41))
    for catenary in (False,):
        m = clonal.OsiDacoPK(kad=0.3, catenary=catenary)
        A = cpk.pk_on_grid(m, ts, osi, daco)
        sol = qsp.simulate(m, reg, ts, rtol=1e-10, atol=1e-8, solver=dfx.Tsit5()).raise_if_failed()
        np.testing.assert_allclose(sol.states, A, rtol=1e-6, atol=1e-6)
    # Standard 2-cpt at steady state averages dose rate / CLd (not / Qd).
    m = clonal.OsiDacoPK(catenary=False)
    tl = np.arange(0.0, 24.0 * 60 + 0.25, 0.25)
    A = cpk.pk_on_grid(m, tl, 0.0 * tl, 30.0 * (tl % 24 == 0))
    last = tl >= tl[-1] - 24.0
    c = A[last, 4] / m.V2d
    cavg = float(np.trapezoid(c, tl[last]) / 24.0)
    np.testing.assert_allclose(cavg, 30e6 / m.MWd / 24.0 / m.CLd, rtol=2e-3)


def test_covariates_and_iiv():
    # system.txt holds the covariate models at 50 kg, EGFR-mutant (reference section 4).
    tv = clonal.typical_pk(wt=50.0)
    np.testing.assert_allclose([tv["CL1o"], tv["V1o"], tv["CL2o"], tv["CLd"]],
                               [11.76134, 792.3074, 22.57583, 16.94379], rtol=2e-6)
    om = cpk.omega()
    assert np.all(np.linalg.eigvalsh(om) > 0)
    corr = om / np.sqrt(np.outer(np.diag(om), np.diag(om)))
    i = cpk.PK_NAMES.index
    np.testing.assert_allclose([corr[i("CL1o"), i("CL2o")], corr[i("CLd"), i("Qd")], corr[i("V1o"), i("V2d")]],
                               [0.90, 0.70, 0.85], atol=0.005)
    assert np.all(cpk.omega(cross_drug=False)[np.ix_([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])] == 0)
    with pytest.raises(ValueError, match="unknown covariate 'weight'"):
        clonal.typical_pk(weight=60.0)
    # The same IIV and covariate models through qsp.vpop.Population.
    from qsp.vpop import Population

    pop = Population(clonal.OsiDacoPK(), om, cpk.PK_NAMES, covariate_model=cpk.covariate_model)
    tv = pop.typical({"wt": jnp.array([50.0, 70.0])})
    np.testing.assert_allclose(tv[:, cpk.PK_NAMES.index("CLd")], [16.94379, 19.952 * 1.093], rtol=2e-6)
    # Unbound fraction: the effect is driven by fu x total concentration.
    m = clonal.OsiDacoPK(fu_osi=0.02, fu_daco=0.5)
    a = jnp.array([0.0, 986.0 * 400.0, 0.0, 0.0, 899.371 * 150.0, 0.0])
    np.testing.assert_allclose(m.effect_concentrations(a), (75.0, 8.0), rtol=1e-12)


# Slow tier (its own ~20 s reverse-mode compile). Default tier still covers it:
# d/d(dose amount) by reverse mode through qsp.simulate against central differences in
# test_simulate.py::test_gradients_match_central_differences.
@pytest.mark.slow
def test_gradient_wrt_daily_doses_matches_finite_differences():
    # d log(total cells at day 7) / d(daily dose, mg) through qsp.simulate (reverse
    # mode) vs central differences (h = 0.01 mg): rtol 1e-4.
    model = clonal.ClonalModel(n_init=jnp.array([1e9, 1e5, 10.0, 1.0]), fu_osi=0.05, fu_daco=0.05)

    def log_total(doses):
        reg = (qsp.Regimen.bolus(doses[0], 0.0, "OSI_GUT", ii=24.0, addl=6)
               + qsp.Regimen.bolus(doses[1], 0.0, "DACO_GUT", ii=24.0, addl=6))
        sol = qsp.simulate(model, reg, jnp.array([168.0]), rtol=1e-10, atol=1e-6, solver=dfx.Tsit5())
        return jnp.log(sol.outputs["total"][-1])

    x = jnp.array([40.0, 15.0])
    f = jax.jit(log_total)
    g = jax.grad(log_total)(x)
    h = 0.01
    fd = np.array([(f(x.at[i].add(h)) - f(x.at[i].add(-h))) / (2 * h) for i in range(2)])
    assert np.all(np.asarray(g) < 0)  # more of either drug, fewer cells (at these doses)
    np.testing.assert_allclose(g, fd, rtol=1e-4)
