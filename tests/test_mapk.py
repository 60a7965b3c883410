"""Kirouac 2017 MAPK model: parameters, rest state, PK, drug effects, response rule.

References: Kirouac et al. npj Syst Biol Appl 2017;3:14 (Table S10) and
`shared/references/mapk.md` (§2.4 [REPRO] numbers re-computed there with an independent
numpy implementation of the same SBML).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import qsp
from qsp.models import mapk
from qsp.models.mapk import DRUGS, Kirouac2017

# One padded event table and one save grid, traced inside one jax.jit: every qsp.simulate
# call below shares a compile. (Eagerly, qsp.simulate's save window, a static setting
# sized from the concrete dose times, differs per arm: one ~20 s compile each. Traced, it
# takes the all-saves path, bitwise the same results:
# tests/test_benchmarks.py::test_save_window_is_bitwise_the_all_saves_path.)
N_EVENTS = 204  # all four drugs for 56 days: 8 + 112 + 42 + 42
TS = jnp.array([0.0, 0.25, 0.5, 0.75, 1.0, 1.3, 2.0, 2.6, 3.0, 7.0, 14.0, 28.0, 56.0])


@eqx.filter_jit
def _simulate(model, reg):
    return qsp.simulate(model, reg, TS, rtol=1e-9, atol=1e-12, max_steps=20000)


ALL_TARGETS = mapk.arm_regimen("+".join(DRUGS)).targets


@pytest.fixture(scope="module")
def sim():
    def run(model, arm):
        # Python numbers in parameter fields as arrays, so they are traced, not static.
        model = jax.tree.map(lambda x: jnp.asarray(x, dtype=float)
                             if isinstance(x, (int, float)) and not isinstance(x, bool) else x, model)
        reg = mapk.arm_regimen(arm).pad(N_EVENTS)
        # The same dose events relabelled onto every drug's compartment (the regimen's
        # `targets` tuple is static: one per arm would be one compile per arm).
        remap = np.asarray([ALL_TARGETS.index(t) for t in reg.targets] or [0], dtype=np.int32)
        reg = qsp.Regimen(reg.time, reg.amount, reg.duration, reg.by_rate, remap[np.asarray(reg.target)],
                          ALL_TARGETS)
        return _simulate(model, reg).raise_if_failed()
    return run


@pytest.fixture(scope="module")
def rest1000():
    model, w = mapk.load_vpop("s10", init="steady")
    return model, np.asarray(w), jax.jit(lambda m: m.rest_state())(model)


def test_fixed_parameters_are_table_s10():
    table = mapk.fixed_table()
    params = table[table.kind == "parameter"].set_index("name")["value"]
    info = Kirouac2017.parameter_info()
    used = [k for k in params.index if k in info]
    # Every Table S10 parameter is a model field except the dropped AKT-inhibitor and
    # oral-cetuximab slots (ka1, F1, F5, ka5, ke5, V5, p5, ki5, taui5).
    assert set(params.index) - set(used) == {"ka1", "F1", "F5", "ka5", "ke5", "V5", "p5", "ki5", "taui5"}
    for k in used:
        assert info[k].default == pytest.approx(params[k], rel=1e-12), k


def test_default_patient_is_the_largest_weight():
    table = mapk.load_table("s10")
    row = table.loc[table.PW.idxmax()]
    assert int(row.VPOP) == 122
    info = Kirouac2017.parameter_info()
    for k in mapk.VARIED:  # defaults rounded to 6 decimals from the table
        assert info[k].default == pytest.approx(row[k], abs=5e-7), k


def test_rest_state_is_a_fixed_point_for_every_patient(rest1000):
    model, _, rest = rest1000
    y = jnp.stack([rest[k] for k in ("FB1", "FB2", "FB3", "FB4", "TD1")] + [jnp.ones(1000)], axis=-1)
    dy = model.pd_rhs(y, (0.0, 0.0, 0.0, 0.0))
    assert np.abs(np.asarray(dy[:, :5])).max() < 1e-12
    # CELLS alone moves, at the net growth rate of the rest state (logistic factor at 1).
    np.testing.assert_allclose(dy[:, 5], rest["g0"] * (1 - 1 / model.Vmax), rtol=1e-12, atol=1e-15)


def test_rest_state_with_the_akt_feedback_switched_on():
    # G14 = G24 = 0 in every Table S10 patient (FB4 then feeds back on nothing); with
    # them on, FB4 is solved jointly with ERK (nested bisection) and is still at rest.
    model = mapk.patient(122).replace(G14=0.6, G24=0.3)
    r = model.rest_state(0.0, 0.05)
    y = jnp.stack([r["FB1"], r["FB2"], r["FB3"], r["FB4"], r["TD1"], 1.0])
    dy = model.pd_rhs(y, (0.0, 0.05, 0.0, 0.0))
    assert np.abs(np.asarray(dy[:5])).max() < 1e-12
    assert float(r["FB4"]) < float(mapk.patient(122).rest_state(0.0, 0.05)["FB4"])


def test_untreated_growth_reproduces_reference(rest1000):
    # shared/references/mapk.md §2.4 [REPRO]: g0 spans -0.0053...+0.020 /day over the
    # 1000 patients, PW-weighted median +0.0073 /day, 4.7 % of PW mass has g0 < 0.
    _, w, rest = rest1000
    g0 = np.asarray(rest["g0"])
    assert round(g0.min(), 4) == -0.0053 and round(g0.max(), 3) == 0.020
    order = np.argsort(g0)
    median = g0[order][np.searchsorted(np.cumsum(w[order]), 0.5)]
    assert round(median, 4) == 0.0073
    assert round(w[g0 < 0].sum(), 3) == 0.047


# Slow tier (CI time): ~24 s; test_trial_path_agrees_with_simulate runs the model by default.
@pytest.mark.slow
def test_untreated_patient_stays_at_rest_for_56_days(sim):
    model = mapk.patient(122, init="steady")
    sol = sim(model, "untreated")
    rest = model.rest_state()
    for k in ("FB1", "FB2", "FB3", "FB4", "TD1"):
        np.testing.assert_allclose(sol.state(k), float(rest[k]), rtol=1e-8)
    # Logistic growth at constant rate g0 from 1 to carrying capacity K (closed form).
    g0, K = float(rest["g0"]), model.Vmax
    expected = K / (1 + (K - 1) * np.exp(-g0 * np.asarray(TS)))
    np.testing.assert_allclose(sol.outputs["TUMOR"], expected, rtol=1e-7)


def _oral_1cmt(t, times, dose, ka, ke, V):
    """Closed-form 1-compartment oral superposition (F = 1), doses strictly before t."""
    dt = t[:, None] - times[None, :]
    on = dt > 0
    dt = np.where(on, dt, 0)
    return (on * dose * ka / (V * (ka - ke)) * (np.exp(-ke * dt) - np.exp(-ka * dt))).sum(1)


def test_pk_matches_closed_forms(sim):
    model = mapk.patient(122)
    sol = sim(model, "+".join(DRUGS))
    t = np.asarray(TS)
    m = model
    vem = _oral_1cmt(t, mapk.dose_times("vemurafenib"), 960.0, m.ka2, m.ke2, m.V2)
    gdc = _oral_1cmt(t, mapk.dose_times("gdc0994"), 400.0, m.ka4, m.ke4, m.V4)
    ct = mapk.dose_times("cetuximab")
    dtc = t[:, None] - ct[None, :]
    cet = ((dtc > 0) * 450.0 / m.V1 * np.exp(-m.ke1 * np.where(dtc > 0, dtc, 0))).sum(1)
    # Cobimetinib (2-compartment): superpose scipy's matrix exponential of its 3x3 system.
    k12, k21 = m.q2 / m.V3, m.q2 / m.V3b
    A = np.array([[-m.ka3, 0, 0], [m.ka3, -m.ke3 - k12, k21], [0, k12, -k21]])
    cob = np.array([sum(scipy.linalg.expm(A * (ti - td))[1, 0] * 60.0
                        for td in mapk.dose_times("cobimetinib") if td < ti) for ti in t]) / m.V3
    for name, ref in [("vemurafenib", vem), ("gdc0994", gdc), ("cetuximab", cet), ("cobimetinib", cob)]:
        np.testing.assert_allclose(sol.outputs[f"C_{name}"], ref, rtol=1e-6, atol=1e-12, err_msg=name)
    # The trial path's exact PK propagator agrees with the same closed forms.
    E = np.asarray(jax.scipy.linalg.expm(mapk.pk_matrix(model) * 0.3))
    x0 = np.zeros(8); x0[1] = 960.0
    assert E[2] @ x0 / m.V2 == pytest.approx(_oral_1cmt(np.array([0.3]), np.array([0.0]), 960.0, m.ka2, m.ke2, m.V2)[0], rel=1e-12)


def test_trial_path_agrees_with_simulate(sim):
    # Exact PK + RK4 (dt = 0.01 day) against adaptive qsp.simulate at rtol 1e-9 (the
    # model's default solver, Rodas4; on the four-drug arm it agrees with Kvaerno5 at the
    # same tolerances to 1.1e-11 in TUMOR: the reference did not move with the default).
    model = mapk.patient(122, init="table")
    arm = "cetuximab+vemurafenib+cobimetinib"
    ref = sim(model, arm).outputs["TUMOR"]
    fast = mapk.simulate_trial(model, [arm], save_dt=1.0)
    idx = [list(TS).index(d) for d in (7.0, 14.0, 28.0, 56.0)]
    np.testing.assert_allclose(np.asarray(fast.states[0, 0, [7, 14, 28, 56], 5]), np.asarray(ref)[idx], rtol=2e-5)


@pytest.mark.parametrize("drug", DRUGS)
def test_drug_effect_is_monotone(drug):
    # Constant concentration from 0 to 100x the IC50: ERK and net growth never rise.
    model = mapk.patient(122)
    taui = {"cetuximab": model.taui1, "vemurafenib": model.taui2,
            "cobimetinib": model.taui3, "gdc0994": model.taui4}[drug]
    c = jnp.concatenate([jnp.zeros(1), taui * jnp.logspace(-3, 2, 40)])
    conc = [c if d == drug else 0.0 for d in DRUGS]
    rest = model.rest_state(*conc)
    assert np.all(np.diff(np.asarray(rest["ERK"])) <= 1e-12)
    assert np.all(np.diff(np.asarray(rest["g0"])) <= 1e-12)
    if drug != "cetuximab":  # cetuximab alone is inactive in this patient (RTK2 bypass)
        assert float(rest["g0"][-1]) < float(rest["g0"][0]) - 1e-3


def test_feedback_relief_and_cetuximab_removes_the_rebound():
    # Kirouac 2017's mechanism: BRAF inhibition lowers ERK, relieving SPRY/RTK feedback,
    # so RAS and CRAF rise; blocking EGFR with cetuximab removes the RAS/CRAF rebound.
    model = mapk.patient(122)
    base = model.rest_state()
    vem = model.rest_state(0.0, 10 * model.taui2)
    both = model.rest_state(100 * model.taui1, 10 * model.taui2)
    assert float(vem["ERK"]) < 0.5 * float(base["ERK"])
    # Patient 122 (largest PW): RAS +14 %, CRAF +39 % at rest under vemurafenib alone.
    assert float(vem["RAS"]) > 1.1 * float(base["RAS"]) and float(vem["CRAF"]) > 1.3 * float(base["CRAF"])
    # With cetuximab both fall below their untreated level: no rebound left.
    assert float(both["RAS"]) < float(base["RAS"]) and float(both["CRAF"]) < float(base["CRAF"])
    assert float(both["ERK"]) < float(vem["ERK"])


def test_erk_rebound_after_vemurafenib_and_its_removal_by_cetuximab():
    # The time course behind the rest-state test above: at the moment constant drug starts
    # the feedback states still hold their untreated values, so ERK drops to
    # ERK(FB = FB_rest, c); as DUSP/SPRY/RTK feedback relaxes it rebounds to the new rest
    # ERK*(c). Patient 122, vemurafenib at 10x its IC50 (measured: 0.057 -> 0.078, a 35%
    # rebound; with cetuximab 0.043 -> 0.047, 10%; RAS 0.145 -> 0.164 alone, 0.111 -> 0.121
    # with cetuximab, below its untreated 0.145).
    model = mapk.patient(122)

    # One compile (rest states run a bisection loop, slow op by op); the patient is closed
    # over so its zero AKT-feedback gains stay concrete (no nested FB4 bisection).
    @jax.jit
    def course():
        m = model
        base = m.rest_state()
        fb = [base[k] for k in ("FB1", "FB2", "FB3", "FB4")]
        c_vem, c_both = (0.0, 10 * m.taui2), (100 * m.taui1, 10 * m.taui2)
        return base, (m.signalling(*fb, *c_vem), m.rest_state(*c_vem)), (m.signalling(*fb, *c_both), m.rest_state(*c_both))

    base, (v0, vinf), (b0, binf) = course()
    rebound_vem = float(vinf["ERK"] / v0["ERK"]) - 1
    rebound_both = float(binf["ERK"] / b0["ERK"]) - 1
    assert rebound_vem > 0.2 and 0 <= rebound_both < 0.5 * rebound_vem
    # RAS and CRAF: unchanged at onset (upstream of BRAF), then rising with vemurafenib
    # alone; with cetuximab they stay below their untreated level throughout.
    assert float(v0["RAS"]) == pytest.approx(float(base["RAS"]), rel=1e-12)
    assert float(vinf["RAS"]) > float(v0["RAS"]) and float(vinf["CRAF"]) > float(v0["CRAF"])
    assert max(float(b0["RAS"]), float(binf["RAS"])) < float(base["RAS"])
    assert max(float(b0["CRAF"]), float(binf["CRAF"])) < float(base["CRAF"])


def test_gradients_finite_at_zero_drug_and_zero_feedback():
    # Fractional Hill exponents (kFB1 = 0.1, ki3 = 0.65, ...) at x = 0: finite gradients.
    model = mapk.patient(122, init="zeros")
    y0 = model.initial()
    grads = jax.grad(lambda m: jnp.sum(m.rhs(0.0, y0)))(model)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    g_rest = jax.grad(lambda m: m.rest_state()["g0"])(mapk.patient(122))
    leaves = jax.tree.leaves(g_rest)
    assert all(bool(jnp.isfinite(g)) for g in leaves)
    # Implicit-function gradient of the fixed point against central differences.
    h = 1e-6
    fd = (mapk.patient(122).replace(Gdusp=0.358392 + h).rest_state()["g0"]
          - mapk.patient(122).replace(Gdusp=0.358392 - h).rest_state()["g0"]) / (2 * h)
    assert float(g_rest.Gdusp) == pytest.approx(float(fd), rel=1e-6)


def test_paradoxical_craf_is_off_by_default_and_raises_craf_when_on():
    model = mapk.patient(122)
    c = 0.3
    off = model.signalling(0.5, 0.5, 0.5, 0.5, 0.0, c)
    on = model.replace(a_par=1.0).signalling(0.5, 0.5, 0.5, 0.5, 0.0, c)
    assert float(on["CRAF"]) / float(off["CRAF"]) == pytest.approx(1 + float(mapk.H(c, 1.0, model.K_par) * mapk.H(off["RAS"], model.k5, model.tau5)), rel=1e-12)


def test_schedules():
    assert len(mapk.dose_times("vemurafenib")) == 112
    cob = mapk.dose_times("cobimetinib")
    assert len(cob) == 42 and cob[20] == 20 and cob[21] == 28 and cob[-1] == 48
    np.testing.assert_array_equal(mapk.dose_times("cetuximab"), np.arange(0, 56, 7))
    assert len(mapk.ARMS) == 16 and mapk.ARMS[0] == "untreated"
    assert mapk.parse_arm("cobimetinib+cetuximab") == ("cetuximab", "cobimetinib")


def test_sample_pk_moments():
    # Log-normal draws reproduce the published typical values and covariance (n = 20000:
    # standard error of a log-mean ~ sqrt(omega/n) <= 0.013, tolerances 4-5 SE).
    pk = mapk.sample_pk(jax.random.key(0), 20000)
    cl2 = np.log(np.asarray(pk["ke2"] * pk["V2"]))
    assert cl2.mean() == pytest.approx(math.log(32.2), abs=0.01)
    assert np.cov(cl2, np.log(np.asarray(pk["V2"])))[0, 1] == pytest.approx(0.106, abs=0.01)
    assert np.log(np.asarray(pk["ka4"])).var() == pytest.approx(3.0, rel=0.05)


def test_classify_and_summarize():
    size = np.array([0.05, 0.1, 0.5, 0.7, 1.0, 1.2, 1.5, np.nan])
    assert list(mapk.classify(size)) == ["CR", "PR", "PR", "SD", "SD", "SD", "PD", "NA"]
    r = mapk.summarize(size, weights=np.array([1, 1, 2, 1, 1, 1, 2, 5.0]))
    assert r.orr == pytest.approx(4 / 9) and r.cr == pytest.approx(1 / 9) and r.pd == pytest.approx(2 / 9)
    assert r.median_size == 0.7  # cumulative weight reaches half (4.5/9) at size 0.7
    assert mapk.summarize(size[:7]).orr == pytest.approx(3 / 7)


def test_errors():
    with pytest.raises(ValueError, match="init='steady-state' is not known"):
        Kirouac2017(init="steady-state")
    with pytest.raises(ValueError, match="unknown drug 'dabrafenib'"):
        mapk.arm_regimen("cetuximab+dabrafenib")
    with pytest.raises(ValueError, match="unknown vpop='s11'"):
        mapk.load_vpop("s11")
    with pytest.raises(ValueError, match="vpop_id=1001 is not a Table S10 patient"):
        mapk.patient(1001)
