"""Endpoints (qsp.endpoints): exposure, RECIST, progression, Kaplan-Meier, toxicity, bootstrap."""

import numpy as np
import pytest

from qsp.endpoints import (RECIST, auc, best_overall_response, bootstrap_ci, cmax, ctrough, grade, incidence,
                           kaplan_meier, objective_response_rate, recist_response, time_to_progression, tmax)


def test_exposure_metrics_against_closed_forms():
    ts = np.linspace(0.0, 10.0, 2001)
    k = 0.3
    y = np.stack([np.exp(-k * ts), 2.0 + 0.5 * ts])
    # trapezoid error <= T h^2 max|f''| / 12 = 10 * 0.005^2 * 0.09 / 12 ~ 2e-6
    assert float(auc(ts, y)[0]) == pytest.approx((1 - np.exp(-k * 10)) / k, abs=3e-6)
    assert float(auc(ts, y)[1]) == pytest.approx(2.0 * 10 + 0.25 * 100, rel=1e-12)  # linear: exact
    assert float(auc(ts, y, 2.0, 4.0)[1]) == pytest.approx(2.0 * 2 + 0.25 * (16 - 4), rel=1e-12)
    np.testing.assert_allclose(np.asarray(cmax(y)), [1.0, 7.0])
    np.testing.assert_allclose(np.asarray(tmax(ts, y)), [0.0, 10.0])
    np.testing.assert_allclose(np.asarray(ctrough(ts, y, 3.3))[1], 2.0 + 0.5 * 3.3, rtol=1e-12)
    assert np.asarray(ctrough(ts, y, [1.0, 2.0])).shape == (2, 2)


def test_recist_hand_examples():
    sld = np.array([
        [100, 80, 65, 60, 75],   # SD, PR, PR, PD (75 >= 1.2*60 and +15 mm) -> BOR PR
        [10, 12.5, 12.0, 11.0, 11.0],  # +25% but only +2.5 mm: not PD -> SD
        [50, 20, 0, 0, 0],       # PR then CR -> CR
        [100, 130, 50, 50, 50],  # PD at first assessment; later shrinkage does not count -> PD
        [100, 90, np.nan, 90, 90],  # failed simulation -> NE
    ], dtype=float)
    codes = recist_response(sld)
    np.testing.assert_array_equal(codes[0], [RECIST.SD, RECIST.PR, RECIST.PR, RECIST.PD])
    np.testing.assert_array_equal(codes[1], [RECIST.SD] * 4)
    bor = best_overall_response(sld)
    np.testing.assert_array_equal(bor, [RECIST.PR, RECIST.SD, RECIST.CR, RECIST.PD, RECIST.NE])
    assert objective_response_rate(bor) == pytest.approx(2 / 4)  # NE excluded
    t, ev = time_to_progression([0, 6, 12, 18, 24], sld)
    np.testing.assert_array_equal(ev, [1, 0, 0, 1, 0])
    np.testing.assert_array_equal(t[:4], [24, 24, 24, 6])
    assert np.isnan(t[4])


def test_kaplan_meier_hand_computed():
    """times 1,2,2+,3,4+,5 (+ = censored): S = 5/6, 5/6*4/5, *2/3, *0 at t = 1, 2, 3, 5."""
    km = kaplan_meier([1, 2, 2, 3, 4, 5], [1, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(km.time, [1, 2, 3, 5])
    np.testing.assert_array_equal(km.at_risk, [6, 5, 3, 1])
    np.testing.assert_allclose(km.survival, [5 / 6, 2 / 3, 4 / 9, 0.0], rtol=1e-14)
    assert km.se[0] == pytest.approx(5 / 6 * np.sqrt(1 / 30))  # Greenwood: S^2 * d/(n(n-d))
    assert km.se[1] == pytest.approx(2 / 3 * np.sqrt(1 / 30 + 1 / 20))
    assert km.median == 3.0
    np.testing.assert_allclose(km([0.5, 2.5, 10]), [1.0, 2 / 3, 0.0])


def test_kaplan_meier_exponential_median():
    """Exponential event times (rate 0.1), independent uniform censoring: the KM median is
    consistent for ln 2 / 0.1 = 6.93. At n = 20000 (~15000 events) its SE is ~0.7%; we
    allow 3%."""
    rng = np.random.default_rng(0)
    t = rng.exponential(10.0, 20000)
    c = rng.uniform(0, 40, 20000)
    km = kaplan_meier(np.minimum(t, c), (t <= c).astype(int))
    assert km.median == pytest.approx(np.log(2) / 0.1, rel=0.03)


def test_toxicity_grades():
    y = np.array([[1.0, 150.0, 20.0], [5.0, 5.0, 5.0], [np.nan, 1.0, 1.0], [2000.0, 1.0, 0.0]])
    g = grade(y, [10.0, 100.0, 1000.0])
    np.testing.assert_array_equal(g, [2, 0, -1, 3])
    assert incidence(g, 1) == pytest.approx(2 / 3)
    assert incidence(g, 3) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="strictly increasing"):
        grade(y, [10.0, 5.0])


def test_bootstrap_ci_of_a_mean():
    """For a mean, the percentile interval approaches mean +- 1.96 sd/sqrt(n) (within 15%)."""
    x = np.random.default_rng(1).normal(3.0, 2.0, 400)
    est, lo, hi = bootstrap_ci(np.mean, x, n_boot=2000, seed=2)
    assert est == pytest.approx(x.mean())
    half = 1.96 * x.std() / np.sqrt(400)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)
    assert lo < est < hi
