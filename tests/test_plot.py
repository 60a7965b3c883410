"""qsp.plot: every figure function returns a Figure whose drawn data equal the input
(read back from the axes and compared with numpy on the same input), labels carry
units, failed patients are dropped and counted, bad input raises; and
local_sensitivities agrees with central finite differences."""

import io

import diffrax as dfx
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

import qsp
from qsp import endpoints, plot
from qsp.models import pk1cmt

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")  # qsp.plot does not use pyplot; this guards against a regression


def band(poly: PolyCollection, xs):
    """(lower, upper) y of a fill_between polygon at each x in `xs`."""
    v = poly.get_paths()[0].vertices
    lo = np.array([v[np.isclose(v[:, 0], x), 1].min() for x in xs])
    hi = np.array([v[np.isclose(v[:, 0], x), 1].max() for x in xs])
    return lo, hi


def rendered(fig) -> int:
    """Draw the figure to PNG on its Agg canvas (catches draw-time errors); byte size."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.tell()


def fake_solution(y, ts, status):
    """A population Solution built by hand (no solve): outputs {"CP": y}."""
    y = jnp.asarray(y, dtype=float)
    return qsp.Solution(ts=jnp.asarray(ts, dtype=float), states=y[..., None], outputs={"CP": y},
                        status=jnp.asarray(status), num_steps=jnp.zeros(np.shape(status), int), state_names=("CENT",))


RNG = np.random.default_rng(7)
TS = np.linspace(0.0, 24.0, 7)
Y = np.exp(RNG.normal(0.0, 0.4, (9, 7))) * (1 + TS)  # ours: arbitrary positive curves


# -- concentration-time ----------------------------------------------------------------------


def test_concentration_time_bands_equal_numpy_percentiles_and_drop_failed():
    y = Y.copy()
    y[4] = np.nan  # a failed patient's outputs are NaN ...
    status = np.zeros(9, int)
    status[4] = qsp.Status.MAX_STEPS_REACHED  # ... and flagged
    status[6] = qsp.Status.SOLVER_FAILED  # flagged but finite: still dropped
    fig = plot.concentration_time(fake_solution(y, TS, status), output="CP", percentiles=(5, 25, 50, 75, 95),
                                  units="mg/L", time_unit="h")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    ok = np.delete(Y, [4, 6], axis=0)
    q = np.percentile(ok, [5, 25, 50, 75, 95], axis=0)
    polys = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(polys) == 2
    for poly, (i, j) in zip(polys, [(0, 4), (1, 3)]):
        lo, hi = band(poly, TS)
        np.testing.assert_allclose(lo, q[i], rtol=1e-12)
        np.testing.assert_allclose(hi, q[j], rtol=1e-12)
    (median,) = ax.lines
    np.testing.assert_allclose(median.get_xdata(), TS)
    np.testing.assert_allclose(median.get_ydata(), q[2], rtol=1e-12)
    assert ax.get_xlabel() == "time (h)" and ax.get_ylabel() == "CP (mg/L)"
    assert "2 of 9 patients dropped" in ax.get_title()
    assert rendered(fig) > 10_000


def test_concentration_time_overlays_a_dict_of_arrays_and_log_axis():
    fig = plot.concentration_time({"QW": Y, "Q2W": 2 * Y}, ts=TS, individuals=2, log=True, ylabel="IL-6",
                                  units="pg/mL", time_unit="day")
    ax = fig.axes[0]
    meds = [ln for ln in ax.lines if ln.get_label().endswith("P50")]
    np.testing.assert_allclose(meds[0].get_ydata(), np.median(Y, axis=0))
    np.testing.assert_allclose(meds[1].get_ydata(), np.median(2 * Y, axis=0))
    assert len(ax.lines) == 2 + 2 * 2  # medians + 2 individuals per group
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "IL-6 (pg/mL)" and ax.get_xlabel() == "time (day)"
    assert ax.get_title() == ""  # nothing dropped, no note


def test_concentration_time_bad_input():
    with pytest.raises(ValueError, match="6 time columns but ts has 7"):
        plot.concentration_time(Y[:, :6], ts=TS)
    with pytest.raises(ValueError, match="pass ts="):
        plot.concentration_time(Y)
    with pytest.raises(ValueError, match=r"output='AUC' is not an output"):
        plot.concentration_time(fake_solution(Y, TS, np.zeros(9, int)), output="AUC")
    with pytest.raises(ValueError, match="strictly increasing"):
        plot.concentration_time(Y, ts=TS, percentiles=(95, 5))
    with pytest.raises(ValueError, match="all 9 patients failed"):
        plot.concentration_time(fake_solution(Y, TS, np.ones(9, int)), output="CP")


# -- VPC ---------------------------------------------------------------------------------------


def test_vpc_percentiles_and_their_intervals_equal_numpy():
    n_pat, n_rep = 6, 30
    t_obs = np.repeat(TS, n_pat)
    y_obs = RNG.lognormal(0.0, 0.3, t_obs.size) * (1 + t_obs)
    y_obs[3] = np.nan  # censored / missing: skipped and counted
    sim = RNG.lognormal(0.0, 0.3, (n_rep, n_pat, TS.size)) * (1 + TS)
    edges = np.r_[TS - 0.5, TS[-1] + 0.5]  # one bin per nominal time
    fig = plot.vpc(t_obs, y_obs, sim, TS, bins=edges, ci=0.8, units="ng/mL", time_unit="h", output="CP")
    ax = fig.axes[0]
    polys = [c for c in ax.collections if isinstance(c, PolyCollection)]
    obs_lines = [ln for ln in ax.lines if ln.get_label().startswith("observed P")]
    for j, p in enumerate((5, 50, 95)):
        obs_p = [np.nanpercentile(y_obs[t_obs == t], p) for t in TS]
        np.testing.assert_allclose(obs_lines[j].get_xdata(), TS)
        np.testing.assert_allclose(obs_lines[j].get_ydata(), obs_p, rtol=1e-12)
        per_rep = np.percentile(sim, p, axis=1)  # (n_rep, n_t): the percentile in each replicate
        lo, hi = band(polys[j], TS)
        np.testing.assert_allclose(lo, np.percentile(per_rep, 10, axis=0), rtol=1e-12)
        np.testing.assert_allclose(hi, np.percentile(per_rep, 90, axis=0), rtol=1e-12)
    assert "1 of 42 observations dropped" in ax.get_title()
    assert ax.get_xlabel() == "time (h)" and ax.get_ylabel() == "CP (ng/mL)"


def test_vpc_from_a_solution_skips_failed_members_and_draws_into_given_axes():
    n_rep, n_pat = 12, 5
    sim = RNG.lognormal(0.0, 0.3, (n_rep, n_pat, TS.size)) * (1 + TS)
    status = np.zeros((n_rep, n_pat), int)
    status[2, 1] = qsp.Status.SOLVER_FAILED
    sim_nan = sim.copy()
    sim_nan[2, 1] = np.nan
    t_obs, y_obs = np.repeat(TS, 3), np.repeat(np.median(sim, axis=(0, 1)), 3)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig0 = Figure()
    FigureCanvasAgg(fig0)
    axes = fig0.subplots(1, 2)
    fig = plot.vpc(t_obs, y_obs, fake_solution(sim, TS, status), output="CP", bins=np.r_[TS - 0.5, TS[-1] + 0.5],
                   ax=axes[1])
    assert fig is fig0 and not axes[0].has_data()
    ax = axes[1]
    polys = [c for c in ax.collections if isinstance(c, PolyCollection)]
    per_rep = np.nanpercentile(sim_nan, 50, axis=1)
    lo, hi = band(polys[1], TS)
    np.testing.assert_allclose(lo, np.percentile(per_rep, 5, axis=0), rtol=1e-12)
    np.testing.assert_allclose(hi, np.percentile(per_rep, 95, axis=0), rtol=1e-12)
    assert "1 of 60 simulated patients dropped (failed)" in ax.get_title()
    assert rendered(fig) > 10_000


def test_vpc_bad_input():
    with pytest.raises(ValueError, match="t_obs has 7 entries but y_obs has 6"):
        plot.vpc(TS, TS[:6], np.ones((3, 7)))
    with pytest.raises(ValueError, match="sim has 6 time columns but t_obs"):
        plot.vpc(TS, TS, np.ones((3, 6)))
    with pytest.raises(ValueError, match=r"ci=1.5 must be a level"):
        plot.vpc(TS, TS, np.ones((3, 7)), ci=1.5)


# -- observed vs predicted, dose-response --------------------------------------------------------


def test_observed_vs_predicted_points_identity_and_log_drops():
    pred = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    obs = np.array([1.1, 0.0, 2.7, np.nan, 5.5])
    fig = plot.observed_vs_predicted(obs, pred, log=True, units="mg/L")
    ax = fig.axes[0]
    (pts,) = ax.collections
    np.testing.assert_allclose(pts.get_offsets(), [[1.0, 1.1], [3.0, 2.7], [5.0, 5.5]])
    (ident,) = ax.lines
    np.testing.assert_allclose(ident.get_xdata(), ident.get_ydata())
    np.testing.assert_allclose(ident.get_xdata(), [1.0, 5.5])
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "predicted concentration (mg/L)"
    assert ax.get_ylabel() == "observed concentration (mg/L)"
    assert "2 of 5 points dropped" in ax.get_title()
    assert rendered(fig) > 10_000
    with pytest.raises(ValueError, match="observed has 5 entries but predicted has 4"):
        plot.observed_vs_predicted(obs, pred[:4])


def test_dose_response_recovers_a_noiseless_hill_curve():
    # Reference: the generating Hill parameters (ours); least squares on exact data must
    # return them (relative 1e-6).
    dose = np.r_[0.0, np.geomspace(0.01, 100.0, 9)]
    resp = plot.hill(dose, 1.0, -0.8, 0.7, 1.4)
    est = plot.fit_hill(dose, resp)
    np.testing.assert_allclose([est["E0"], est["Emax"], est["EC50"], est["n"]], [1.0, -0.8, 0.7, 1.4], rtol=1e-6)
    fig = plot.dose_response(dose, resp, dose_units="nM", units="fraction viable", name="viability")
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.collections[0].get_offsets(), np.c_[dose[1:], resp[1:]])
    (curve,) = ax.lines
    np.testing.assert_allclose(curve.get_ydata(), plot.hill(curve.get_xdata(), 1.0, -0.8, 0.7, 1.4), atol=1e-6)
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "dose (nM)"
    assert ax.get_ylabel() == "viability (fraction viable)"
    assert "1 points at dose <= 0 not shown" in ax.get_title()
    assert rendered(fig) > 10_000
    # a given curve (e.g. a model prediction) instead of a fit
    fig = plot.dose_response(dose, resp, curve=lambda d: plot.hill(d, 1.0, -0.8, 0.7, 1.4), log_dose=False)
    (curve,) = fig.axes[0].lines
    np.testing.assert_allclose(curve.get_xdata()[[0, -1]], [0.0, 100.0])
    np.testing.assert_allclose(curve.get_ydata(), plot.hill(curve.get_xdata(), 1.0, -0.8, 0.7, 1.4))
    with pytest.raises(ValueError, match="fit='emax' is not known"):
        plot.dose_response(dose, resp, fit="emax")


# -- oncology ----------------------------------------------------------------------------------


def test_waterfall_bars_sorted_coloured_and_thresholds():
    change = np.array([10.0, -45.0, 25.0, np.nan, -31.0, 0.0, -100.0])
    fig = plot.waterfall(change)
    ax = fig.axes[0]
    heights = np.array([b.get_height() for c in ax.containers for b in c])
    xs = np.array([b.get_x() + b.get_width() / 2 for c in ax.containers for b in c])
    np.testing.assert_allclose(heights[np.argsort(xs)], [25.0, 10.0, 0.0, -31.0, -45.0, -100.0])
    labels = {c.get_label().split()[0]: len(c) for c in ax.containers}
    assert labels == {"PD": 1, "SD": 2, "PR": 3}  # RECIST 1.1 thresholds -30% / +20%
    assert sorted(ln.get_ydata()[0] for ln in ax.lines) == [-30.0, 0.0, 20.0]
    assert ax.get_ylabel() == "best change from baseline (%)"
    assert "1 of 7 patients dropped" in ax.get_title()
    assert rendered(fig) > 10_000
    # RECIST codes from qsp.endpoints become their names
    fig = plot.waterfall([-50.0, 5.0], category=[endpoints.RECIST.CR, endpoints.RECIST.SD])
    assert {c.get_label().split()[0] for c in fig.axes[0].containers} == {"CR", "SD"}
    with pytest.raises(ValueError, match="change has 2 entries but category has 1"):
        plot.waterfall([1.0, 2.0], category=["PR"])
    with pytest.raises(ValueError, match="pr=30"):
        plot.waterfall([1.0], pr=30)


def test_best_percent_change_and_spider_lines():
    sld = np.array([[50.0, 40.0, 30.0, 35.0], [20.0, 22.0, 25.0, 30.0], [40.0, np.nan, 40.0, 40.0]])
    np.testing.assert_allclose(plot.best_percent_change(sld)[:2], [-40.0, 10.0])
    fig = plot.spider(sld, ts=[0, 6, 12, 18], time_unit="week")
    ax = fig.axes[0]
    data = [ln for ln in ax.lines if len(ln.get_xdata()) == 4]
    np.testing.assert_allclose(data[0].get_ydata(), [0.0, -20.0, -40.0, -30.0])
    np.testing.assert_allclose(data[1].get_ydata(), [0.0, 10.0, 25.0, 50.0])
    assert [ln.get_label() for ln in data] == ["PR", "SD"]  # best -40% is PR, best +10% is SD
    assert ax.get_xlabel() == "time (week)" and ax.get_ylabel() == "change from baseline (%)"
    assert "1 of 3 patients dropped" in ax.get_title()
    assert rendered(fig) > 10_000


def test_kaplan_meier_steps_equal_hand_product_limit():
    # Hand computation: events at 1 (n=6), 2 (n=5; the censoring at 2 is still at risk),
    # 3 (n=3), 5 (n=1): S = 5/6, 5/6*4/5, *2/3, *0.
    t = np.array([1.0, 2.0, 2.0, 3.0, 4.0, 5.0, np.nan])
    e = np.array([1, 1, 0, 1, 0, 1, 1])
    fig = plot.kaplan_meier(t, e, ci=True, time_unit="month")
    ax = fig.axes[0]
    step, ticks = ax.lines
    s = [1.0, 5 / 6, 2 / 3, 4 / 9, 0.0]
    np.testing.assert_allclose(step.get_xdata(), [0.0, 1.0, 2.0, 3.0, 5.0, 5.0])
    np.testing.assert_allclose(step.get_ydata(), s + [0.0], rtol=1e-12)
    assert step.get_drawstyle() == "steps-post"
    np.testing.assert_allclose(ticks.get_xdata(), [2.0, 4.0])  # censored patients
    np.testing.assert_allclose(ticks.get_ydata(), [2 / 3, 4 / 9], rtol=1e-12)
    # Greenwood at t=1: S^2 * 1/(6*5); 95% band S -/+ 1.959964 SE
    (poly,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    ys = poly.get_paths()[0].vertices[:, 1]
    se1 = (5 / 6) * np.sqrt(1 / 30)
    assert np.any(np.isclose(ys, 5 / 6 - 1.959964 * se1, rtol=1e-6))
    assert np.any(np.isclose(ys, min(1.0, 5 / 6 + 1.959964 * se1), rtol=1e-6))
    assert ax.get_xlabel() == "time (month)" and ax.get_ylabel() == "survival probability"
    assert "1 of 7 patients dropped" in ax.get_title()
    assert rendered(fig) > 10_000
    with pytest.raises(ValueError, match="event must be 0"):
        plot.kaplan_meier([1.0, 2.0], [1, 2])
    with pytest.raises(ValueError, match="time has 2 entries but event has 3"):
        plot.kaplan_meier([1.0, 2.0], [1, 0, 1])


# -- sensitivities -----------------------------------------------------------------------------


def test_tornado_orders_by_magnitude():
    fig = plot.tornado({"KA": -0.02, "CL": -0.77, "V": -0.23, "F1": 1.0, "Q": np.nan})
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert names == ["KA", "V", "CL", "F1"]  # bottom to top: largest effect on top
    widths = [b.get_width() for b in ax.containers[0]]
    np.testing.assert_allclose(widths, [-0.02, -0.23, -0.77, 1.0])
    assert "1 of 5 parameters dropped" in ax.get_title()
    assert rendered(fig) > 5_000
    assert ax.get_xlabel() == "normalised sensitivity d log y / d log p"
    fig = plot.tornado({"a": (0.8, 1.3), "b": (0.95, 1.02)}, baseline=1.0, xlabel="AUC ratio")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["b", "a"]
    with pytest.raises(ValueError, match=r"sensitivities\['a'\]"):
        plot.tornado({"a": (1, 2, 3)})


SIM = dict(solver=dfx.Tsit5(), rtol=1e-11, atol=1e-13)  # pk1cmt is not stiff; explicit RK compiles fast
TS_SIM = jnp.linspace(0.0, 24.0, 9)
REG = qsp.Regimen.bolus(100.0, 0.0, "DEPOT")
NAMES = ("CL", "V", "KA", "F1")
BASE = pk1cmt(F1=0.5)  # F1 inside (0, 1) so that F1 e^h stays within its bounds


@pytest.fixture(scope="module")
def fd_population():
    """Central differences in log p (step h) as one population: member 2i is p_i e^h,
    2i+1 is p_i e^-h; the last member has CL < 0 (invalid: status 3)."""
    base = BASE
    h = 1e-3
    cols = {n: [] for n in NAMES}
    for name in NAMES:
        for sign in (1, -1):
            for n in NAMES:
                v = float(getattr(base, n))
                cols[n].append(v * np.exp(sign * h) if n == name else v)
    for n in NAMES:
        cols[n].append(-1.0 if n == "CL" else float(getattr(base, n)))
    pop = base.replace(**{n: jnp.asarray(c) for n, c in cols.items()})
    return h, qsp.simulate(pop, REG, TS_SIM, **SIM)


def test_local_sensitivities_match_central_differences(fd_population):
    h, sol = fd_population
    ad = plot.local_sensitivities(BASE, REG, TS_SIM, "CP", reduce="auc", **SIM)
    assert list(ad) == ["CL", "V", "KA", "F1"]  # ALAG1 = 0 is skipped
    y = np.asarray(endpoints.auc(TS_SIM, np.asarray(sol.outputs["CP"])))
    fd = [(np.log(y[2 * i]) - np.log(y[2 * i + 1])) / (2 * h) for i in range(len(NAMES))]
    # truncation O(h^2) ~ 1e-7 and solver error 1e-11 / h ~ 1e-8, relative (measured: <= 3e-7)
    np.testing.assert_allclose([ad[n] for n in NAMES], fd, rtol=1e-5, atol=1e-9)
    # y is linear in F1 (doses scale), so d log y / d log F1 = 1
    assert abs(ad["F1"] - 1.0) < 1e-9


def test_reducers_equal_numpy():
    # each compile of local_sensitivities costs ~10 s here, so the other summaries are
    # checked directly against numpy (trapezoid, max, last value)
    from qsp._plot_sensitivity import _reducer

    y = jnp.asarray(Y[0])
    np.testing.assert_allclose(_reducer("auc")(jnp.asarray(TS), y), np.trapezoid(Y[0], TS), rtol=1e-12)
    assert float(_reducer("cmax")(TS, y)) == Y[0].max()
    assert float(_reducer("last")(TS, y)) == Y[0][-1]


def test_population_with_a_failed_member_plots_and_says_so(fd_population):
    _, sol = fd_population
    assert int(sol.status[-1]) == qsp.Status.INVALID_PARAMETERS
    fig = plot.concentration_time(sol, output="CP", units="mg/L", time_unit="h")
    ax = fig.axes[0]
    assert "1 of 9 patients dropped" in ax.get_title()
    np.testing.assert_allclose(ax.lines[0].get_ydata(), np.median(np.asarray(sol.outputs["CP"])[:-1], axis=0))


def test_local_sensitivities_bad_input():
    with pytest.raises(ValueError, match="reduce='median' is not known"):
        plot.local_sensitivities(pk1cmt(), REG, TS_SIM, "CP", reduce="median")
    with pytest.raises(ValueError, match="output='AUC' is not an output"):
        plot.local_sensitivities(pk1cmt(), REG, TS_SIM, "AUC")
    with pytest.raises(ValueError, match="ALAG1=0"):
        plot.local_sensitivities(pk1cmt(), REG, TS_SIM, "CP", params=["ALAG1"])
    with pytest.raises(ValueError, match="parameter 'CL' has a population axis"):
        plot.local_sensitivities(pk1cmt(CL=jnp.ones(3)), REG, TS_SIM, "CP")
    with pytest.raises(ValueError, match="has no parameter 'Q'"):
        plot.local_sensitivities(pk1cmt(), REG, TS_SIM, "CP", params=["Q"])
