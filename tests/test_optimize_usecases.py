"""Regimen optimisation use cases (issue 11): CRS step-up, clonal resistance, MAPK.

Compile time dominates: each use case compiles its evaluation once at a small fixed
population size and the tests share it (module-scoped fixtures).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from qsp.models.clonal import optimize as CO
from qsp.models.clonal import trial as ctrial
from qsp.models.tce import optimize as TO
from qsp.models.tce import population
from qsp.models.tce import regimens as R

SHIPPED = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "optimize_crs" / "regimens.csv"


# -- CRS -------------------------------------------------------------------------------


def test_crs_family_at_label_values_is_the_label_regimen():
    """The family's regimen at the label values (1/2/60 mg, gaps 7/7) is the label
    regimen event for event (4 cycles), and it is traceable: d(sum amount x time)/d
    (d1, d2, d3, gap2, gap3) is (0, 7, 14, d2 + d3 + 2, d3 + 1) by hand (each dose
    also puts 1 into the injection effect `I` at its time)."""
    a, b = TO.regimen(TO.LABEL, 4), R.label(4)
    for f in ("time", "amount", "duration", "target"):
        np.testing.assert_array_equal(np.asarray(getattr(a, f)), np.asarray(getattr(b, f)), err_msg=f)

    def f(x):
        r = TO.regimen(dict(zip(TO.FREE, x)), 1)
        return jnp.sum(r.amount * r.time)

    g = jax.grad(f)(jnp.asarray([1.0, 2.0, 60.0, 7.0, 7.0]))
    np.testing.assert_allclose(np.asarray(g), [0.0, 7.0, 14.0, 64.0, 61.0], rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def fresh():
    """8 patients of seed 2: neither the training (0) nor the shipped re-check (1) seed."""
    pop, _ = population.sample(8, 2)
    return pop, TO.uniforms(2, 8)


def test_crs_shipped_optimum_is_feasible_on_a_fresh_population(fresh):
    """The optimum shipped in benchmarks/results/optimize_crs (trained on seed 0), run
    through the exact (unrelaxed) endpoints on a new population (seed 2): cycle-1
    tumour response at least the label's (the constraint) and a lower expected
    P(CRS >= 2) than the label (the objective)."""
    table = pd.read_csv(SHIPPED)
    chosen = table[table.chosen].iloc[0]
    values = {k: float(chosen[k]) for k in TO.FREE}
    pop, u = fresh
    opt, lab = TO.exact_endpoints(pop, u, values), TO.exact_endpoints(pop, u, TO.LABEL)
    assert opt["tumor_c2d1"] <= lab["tumor_c2d1"]
    assert opt["p_crs2_expected"] < lab["p_crs2_expected"]
    assert opt["p_crs2"] <= lab["p_crs2"]


@pytest.mark.slow
def test_crs_gradient_through_doses_and_days_matches_finite_differences():
    """Reverse-mode gradient of the relaxed endpoints (T = 0.05) w.r.t. d1, d2, d3 and
    the two gaps (days: segment boundaries and save times move) against central
    differences (step 1e-3 relative), 2 patients of seed 0, at 0.5/3/40 mg, gaps 6/5:
    within 1e-4 relative (measured 1.4e-5 worst; days 9e-7), or 1e-9 absolute where the
    endpoint does not depend on a quantity."""
    pop, _ = population.sample(2, 0)
    u = jnp.asarray(TO.uniforms(0, 2))
    x0 = jnp.asarray([0.5, 3.0, 40.0, 6.0, 5.0])
    for key in ("p_crs2_expected", "tumor_c2d1"):
        f = jax.jit(lambda x, key=key: TO.endpoints(pop, u, dict(zip(TO.FREE, x)), 0.05)[key])
        g = np.asarray(jax.jit(jax.grad(f))(x0))
        for i in range(5):
            h = 1e-3 * float(x0[i])
            e = jnp.zeros(5).at[i].set(h)
            fd = (float(f(x0 + e)) - float(f(x0 - e))) / (2 * h)
            assert g[i] == pytest.approx(fd, rel=1e-4, abs=1e-9), (key, list(TO.FREE)[i])


@pytest.mark.slow
def test_cli_optimize_crs_short_run(tmp_path, capsys):
    """`qsp optimize crs` end to end on 2 patients with a 2-step search: the CSV has the
    label and one optimum per level, feasibility flags agree with the exact
    endpoints, and the figure is written; bad flags give one-line errors."""
    from qsp.cli import main

    out = tmp_path / "opt"
    rc = main(["optimize", "crs", "--n", "2", "--n-fresh", "2", "--factors", "1,2", "--outer", "1",
               "--steps", "2", "--out", str(out)])
    assert rc == 0
    t = pd.read_csv(out / "regimens.csv")
    assert list(t.regimen) == ["label", "optimum x1", "optimum x2"]
    assert {"d1", "d2", "d3", "gap2", "gap3", "p_crs2", "p_crs2_expected", "tumor_c2d1", "feasible",
            "p_crs2_fresh", "tumor_c2d1_fresh", "feasible_fresh", "chosen"} <= set(t.columns)
    opt = t.iloc[1:]
    np.testing.assert_array_equal(opt.feasible, opt.tumor_c2d1 <= opt.level + 1e-9)
    lab_fresh = t.tumor_c2d1_fresh.iloc[0]
    np.testing.assert_array_equal(opt.feasible_fresh, opt.tumor_c2d1_fresh <= lab_fresh + np.log(opt.factor))
    for k, f in TO.FREE.items():
        assert ((t[k] >= f.lower) & (t[k] <= f.upper)).all(), k
    assert (out / "pareto_front.png").stat().st_size > 1000
    assert "chosen:" in capsys.readouterr().out
    assert main(["optimize", "crs", "--factors", "2,3", "--out", str(out)]) == 2
    assert "--factors" in capsys.readouterr().err
    assert main(["optimize", "crs", "--seed", "1", "--fresh-seed", "1"]) == 2


# -- clonal ----------------------------------------------------------------------------


def test_clonal_label_exposures_match_closed_form_and_reference():
    """Steady-state exposure limits of the typical patient on the labelled doses. Closed
    form (linear PK at steady state, AUC over one interval = F dose / CL): osimertinib
    80 mg QD, 80e6/500 nmol / CL1o (14.2 L/h); catenary dacomitinib central,
    45e6/469.945 nmol / Qd (17.32 L/h). Cmax against the reference table
    (shared/references/clonal-resistance.md, steady state day 21-22, typical patient:
    osi 80 QD 417-502 nM, daco 45 QD 216.9-237.4 nM) to its rounding. AUC is the
    trapezoid on the hourly grid: within 1e-3 of the closed form (the rule's error on
    these curves is 3e-4)."""
    lim = CO.label_limits(8.0)
    assert lim["auc_osi"] == pytest.approx(80e6 / 500.0 / 14.2, rel=1e-3)
    assert lim["auc_daco"] == pytest.approx(45e6 / 469.945 / 17.32, rel=1e-3)
    assert lim["cmax_osi"] == pytest.approx(502.0, abs=0.5)
    assert lim["cmax_daco"] == pytest.approx(237.4, abs=0.05)


@pytest.fixture(scope="module")
def clonal_small():
    return ctrial.sample_patients(jax.random.key(3), 4)


def test_clonal_exact_ttp_matches_trial_and_relaxation_converges(clonal_small):
    """The exact TTP (first-passage formula) equals `trial.time_to_progression` assessed
    daily; the relaxation tends to it as T -> 0 (within 0.5 day at T = 1e-3)."""
    pts = clonal_small
    ts, counts = ctrial.simulate_schedules(pts, (ctrial.REFERENCE,), weeks=8.0)
    total = counts.sum(-1)[0]
    ref, _ = ctrial.time_to_progression(ts, total, pts.bsld, assess_days=1.0)
    sld = 10.0 * pts.bsld[:, None] * np.cbrt(total / total[:, :1])
    np.testing.assert_array_equal(np.asarray(CO.time_to_progression(ts / 24.0, sld)), ref)
    relaxed = np.asarray(CO.time_to_progression(ts / 24.0, sld, 1e-3))
    np.testing.assert_allclose(relaxed, ref, atol=0.5)


def test_clonal_evaluation_factorises_one_matrix_per_patient(clonal_small):
    """Regression guard for the hang of the clonal search (docs/STATUS.md, issue 11):
    under jit the uniform hourly grid must take `pk_on_grid`'s one-exponential branch.
    The per-step branch factorised 4 x 1344 6x6 matrices; jaxlib splits a LAPACK batch
    of >= 2e5 flop over the XLA CPU pool and blocks the calling worker, so two such
    calls at once deadlocked the 2-thread pool. Every LAPACK call in the lowered
    gradient of the search's endpoints must have a batch of at most the 4 patients."""
    import re

    ev = CO.make_evaluate(clonal_small, 12.0, 24.0, 8.0, CO.label_limits(8.0))

    def f(x):
        e = ev(None, {"osi_mg": x[0], "daco_mg": x[1]}, 0.05)
        return e["mean_ttp"] + sum(v for k, v in e.items() if k.endswith("_ratio"))

    text = jax.jit(jax.grad(f)).lower(jnp.asarray([40.0, 15.0])).as_text()
    calls = re.findall(r"custom_call @(lapack_\w+)\(.*?\) .*?: \(tensor<((?:\d+x)+)f64>", text)
    assert calls, "no LAPACK call found: the check no longer sees the exponential"
    for name, dims in calls:
        shape = [int(d) for d in dims.rstrip("x").split("x")]
        assert int(np.prod(shape[:-2])) <= 4, (name, shape)


@pytest.mark.slow
def test_clonal_optimum_respects_exposure_limits_and_beats_label(clonal_small):
    """Short search (BID osimertinib + QD dacomitinib, 4 patients): the optimum is
    feasible under the exact endpoints (all four exposure ratios <= 1), its mean TTP is
    at least the label's (80 mg QD + 45 mg QD, which is feasible with ratios 1), and
    the exposure ratios follow the dose (linear PK: AUC ratio = daily dose / label)."""
    res = CO.optimize_clonal(n=4, seed=3, frequencies=(("BID", "QD"),), starts=1, outer=2, max_steps=8)
    t = res.table
    lab, opt = t[t.role == "label"].iloc[0], t[t.role == "optimum"].iloc[0]
    assert opt.feasible
    for k in ("cmax_osi", "auc_osi", "cmax_daco", "auc_daco"):
        assert opt[f"{k}_ratio"] <= 1.0 + 1e-6, k
        assert lab[f"{k}_ratio"] == pytest.approx(1.0, rel=1e-12), k
    assert opt.auc_osi_ratio == pytest.approx(2 * opt.osi_mg / 80.0, rel=1e-4)
    assert opt.auc_daco_ratio == pytest.approx(opt.daco_mg / 45.0, rel=1e-4)
    assert opt.mean_ttp >= lab.mean_ttp - 1e-9
    assert res.schedule == opt.schedule and res.frequency == ("BID", "QD")


# -- MAPK ------------------------------------------------------------------------------


@pytest.mark.slow
def test_mapk_short_search_is_feasible_and_exact_orr_is_the_trial_rule():
    """Short search (8 patients, vemurafenib + cobimetinib + cetuximab, toxicity budget
    2): the exact re-check at the optimum is feasible (toxicity proxy = sum of dose /
    clinical dose <= 2, recomputed by hand) and its ORR equals the trial's response rule
    (`summarize`, CR + PR at day 56) on an independent `simulate_trial` run at the
    optimum doses; the clinical doublets in the table score toxicity 2."""
    from qsp.models.mapk import SCHEDULES, simulate_trial, summarize
    from qsp.models.mapk import optimize as MO

    res = MO.optimize_mapk(n=8, budget=2.0, starts=1, outer=1, max_steps=4)
    v = res.values
    tox = sum(v[d] / SCHEDULES[d][0] for d in MO.BRAF_MEK_EGFR)
    assert res.endpoints["toxicity"] == pytest.approx(tox, rel=1e-12)
    assert tox <= 2.0 * (1 + 1e-6) and res.result.feasible
    for d in MO.BRAF_MEK_EGFR:
        assert MO.LOW * SCHEDULES[d][0] <= v[d] <= SCHEDULES[d][0]
    sim = simulate_trial(MO.population(8), ("cetuximab+vemurafenib+cobimetinib",), dt=0.05, save_dt=56.0,
                         doses=v)
    assert res.endpoints["orr"] == pytest.approx(summarize(np.asarray(sim.size[0])).orr, abs=1e-12)
    doublets = res.table[res.table.regimen.str.count(r"\+") == 1]
    assert len(doublets) == 3 and (doublets.toxicity == 2.0).all() and doublets.feasible.all()
    triplet = res.table[res.table.regimen == "clinical cetuximab+vemurafenib+cobimetinib"].iloc[0]
    assert triplet.toxicity == 3.0 and not triplet.feasible
