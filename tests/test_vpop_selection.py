"""Selection and weighting of plausible patients (maximum entropy; Allen et al. 2016)."""

import numpy as np
import pytest

from qsp.vpop import (InfeasibleTargets, Mean, Proportion, Quantile, SD, allen_selection, effective_n,
                      knn_density, maxent_weights, weighted_ks)


@pytest.fixture(scope="module")
def cloud():
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, 4000)
    return {"x": x, "y": x**2 + rng.normal(0, 0.5, 4000), "cat": rng.integers(0, 4, 4000)}


def test_maxent_hits_feasible_targets_exactly(cloud):
    targets = [Mean("x", 0.4), SD("x", 1.2, 0.4), Quantile("y", 0.5, 2.0), Proportion("cat", 0.4, equals=0)]
    res = maxent_weights(cloud, targets)
    assert res.feasible
    for t in targets:
        assert abs(res.achieved[repr(t)] - t.target) < 1e-9
    # recompute independently from the returned weights
    w = res.weights
    assert abs(w.sum() - 1) < 1e-12 and (w >= 0).all()
    assert abs(w @ cloud["x"] - 0.4) < 1e-9
    assert abs(w @ (cloud["x"] - 0.4) ** 2 - 1.44) < 1e-9
    assert abs(w @ (cloud["y"] <= 2.0) - 0.5) < 1e-9
    assert abs(w @ (cloud["cat"] == 0) - 0.4) < 1e-9
    assert res.effective_n == pytest.approx(1 / np.sum(w**2))
    assert res.max_weight == pytest.approx(w.max())


def test_maxent_returns_prior_when_targets_already_met(cloud):
    res = maxent_weights(cloud, [Mean("x", cloud["x"].mean()), Mean("y", cloud["y"].mean())])
    np.testing.assert_allclose(res.weights, 1 / 4000, rtol=1e-10)
    assert res.effective_n == pytest.approx(4000)


def test_maxent_tilt_of_a_normal_is_a_shifted_normal():
    """Tilting N(0,1) by exp(lam x) gives N(lam, 1): for a mean target mu, lam -> mu.
    Tolerance 0.05 covers the Monte-Carlo error of a 40,000-point sample."""
    x = np.random.default_rng(1).normal(size=40_000)
    res = maxent_weights({"x": x}, [Mean("x", 0.5)], data={"x": np.random.default_rng(2).normal(0.5, 1, 40_000)})
    assert abs(res.lam[0] - 0.5) < 0.05
    # the tilted sample matches the shifted normal: KS against N(0.5,1) data is small
    assert res.ks["x"] < 0.03


def test_maxent_says_when_targets_are_out_of_reach(cloud):
    with pytest.raises(InfeasibleTargets, match=r"Mean\(name='x', value=4.0\) asks for 4 but the population only reaches \[-2.99"):
        maxent_weights(cloud, [Mean("x", 4.0)])
    # each target alone is reachable, jointly they are not (x and a copy of x)
    both = {"x": cloud["x"], "x2": cloud["x"].copy()}
    with pytest.raises(InfeasibleTargets, match="no weighting reaches them jointly"):
        maxent_weights(both, [Mean("x", 0.5), Mean("x2", -0.5)], max_iter=50)
    res = maxent_weights(both, [Mean("x", 0.5), Mean("x2", -0.5)], max_iter=50, strict=False)
    assert not res.feasible
    with pytest.raises(ValueError, match="names observable 'z'"):
        maxent_weights(cloud, [Mean("z", 0.0)])


def test_effective_n_and_weighted_ks():
    assert effective_n(np.ones(10)) == pytest.approx(10)
    assert effective_n([1, 0, 0]) == pytest.approx(1)
    x = np.array([1.0, 2.0, 3.0])
    # F_w jumps 0.5 at 1, 0.25 at 2 and 3; data CDF 1/3 steps: sup = |0.5 - 1/3| = 1/6
    assert weighted_ks(x, [0.5, 0.25, 0.25], x) == pytest.approx(1 / 6)


def test_knn_density_of_uniform_points():
    """For n uniform points of unit density, n V(r) to the (k-1)-th other point is
    Gamma(k-1, 1) (Poisson process), so k / (n V) has median k / median(Gamma(k-1)).
    Interior points only (edges thin the neighbourhood); within 10%."""
    from scipy.stats import gamma

    z = np.random.default_rng(3).uniform(size=(4000, 2))
    dens = knn_density(z, k=5) / 4000
    inner = np.all((z > 0.1) & (z < 0.9), axis=1)
    assert np.median(dens[inner]) == pytest.approx(5 / gamma(4).median(), rel=0.1)


def test_allen_selection_reproduces_target_distribution():
    """Plausible patients uniform in a box; target N(mu, Sigma). Probability of inclusion
    must follow rho_D / rho_PP (slope ~1 in log space, rho_PP is constant here), and the
    selected virtual patients must match the target's means (4 SE), SDs (15%) and
    correlation (+-0.1), none of which the uniform cloud has."""
    rng = np.random.default_rng(4)
    pp = rng.uniform([-3, -3], [3, 3], size=(3000, 2))
    mu, cov = np.array([0.5, -0.3]), np.array([[0.6, 0.3], [0.3, 0.5]])
    sel = allen_selection(pp, mean=mu, cov=cov, seed=5)
    z = (pp - mu) @ np.linalg.inv(np.linalg.cholesky(cov)).T
    log_rho = -0.5 * np.sum(z * z, axis=1)
    slope = np.polyfit(log_rho, np.log(sel.p_incl), 1)[0]
    assert abs(slope - 1.0) < 0.1
    vp = pp[sel.selected]
    assert sel.n_vp > 100 and sel.vp_fraction == pytest.approx(sel.n_vp / 3000)
    np.testing.assert_array_less(np.abs(vp.mean(0) - mu), 4 * np.sqrt(np.diag(cov) / sel.n_vp))
    np.testing.assert_allclose(vp.std(0), np.sqrt(np.diag(cov)), rtol=0.15)
    assert abs(np.corrcoef(vp.T)[0, 1] - 0.3 / np.sqrt(0.3)) < 0.1
    assert sel.sum_ks <= sel.mean_sum_ks
    assert sel.sum_ks == pytest.approx(sel.ks.sum())
