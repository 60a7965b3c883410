"""In vitro tier of the clonal model (Poels et al. 2021): growth rates from raw counts,
the published bounded-logistic surface, the refit, and our monotone surface.

References: the authors' derived growth rates (6 significant digits), their published
coefficients (`published_fit_coefficients.csv`, from newFitsAndRates200229.RData),
surface values re-computed from those coefficients in
shared/references/clonal-resistance.md section 3, closed forms (exponential growth),
scipy's LSODA at rtol 1e-12 (4-clone well with mutation), structural monotonicity."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

import qsp.models.clonal as clonal
from qsp.models.clonal import assays
from qsp.models.clonal.surfaces import CLONES, HillBliss

DATA = os.path.join(os.path.dirname(__file__), "data", "clonal")

# Authors' line names in derived_growth_rates_per_hour.csv -> (lab, line) of the raw counts.
LINES = {"PC9": ("scott", "PC9"), "PC9_DRH_T790M": ("scott", "PC9-DRH"), "PC9R_NRAS": ("scott", "PC9R"),
         "PC9_hata": ("aaron", "PC9"), "PC9_C797S_raw_hata": ("aaron", "PC9_C797S")}


@pytest.fixture(scope="module")
def counts():
    return assays.load_counts()


@pytest.fixture(scope="module")
def derived():
    return pd.read_csv(os.path.join(DATA, "derived_growth_rates_per_hour.csv"), comment="#")


@pytest.fixture(scope="module")
def published():
    return clonal.published_surface()


def test_growth_rates_match_authors_derived_rates(counts, derived):
    # The authors' file has 6 significant digits: rel 1e-5 covers its rounding.
    for name, (lab, line) in LINES.items():
        ours = assays.growth_rates(counts, lab, line).set_index(["daco_nM", "osi_nM"])["net_growth_per_h"]
        ref = derived[derived["cell_line"] == name].set_index(["daco_nM", "osi_nM"])["net_growth_per_h"]
        assert len(ours) == len(ref) == {"PC9": 91, "PC9_hata": 91}.get(name, 89), name
        np.testing.assert_allclose(ours[ref.index].to_numpy(), ref.to_numpy(), rtol=1e-5, err_msg=name)


def test_c797s_lab_rescaling(counts, derived):
    # g_pfizer = 0.00148723 + 0.80838468 g_hata over 91 shared conditions (reference section 3).
    a, b = assays.lab_mapping(counts)
    np.testing.assert_allclose([a, b], [0.00148723, 0.80838468], rtol=5e-6)
    std = assays.clone_rates(counts)["C797S"].set_index(["daco_nM", "osi_nM"])["net_growth_per_h"]
    ref = derived[derived["cell_line"] == "PC9_C797S_std"].set_index(["daco_nM", "osi_nM"])["net_growth_per_h"]
    np.testing.assert_allclose(std[ref.index].to_numpy(), ref.to_numpy(), rtol=2e-5, atol=1e-9)


def test_refit_reproduces_published_coefficients(counts, published):
    # Issue 6 asks for relative 1e-4; the OLS refit from raw counts agrees to ~1e-11.
    fitted, se = assays.fit_published(assays.clone_rates(counts))
    for name in ("beta", "ymin", "ymax", "death"):
        np.testing.assert_allclose(getattr(fitted, name), getattr(published, name), rtol=1e-8, atol=1e-12,
                                   err_msg=name)
    for clone in CLONES:
        n = clonal.surfaces.DESIGNS[clone]["n"]
        assert se[clone].shape == (n,) and np.all(se[clone] > 0)


def test_refit_by_qsp_fit_equals_ols(counts):
    # The framework's fit (AlgebraicModel + qsp.fit, Levenberg-Marquardt, NLS standard
    # errors) against the closed-form OLS solution and its standard errors.
    rates = assays.clone_rates(counts)
    ols, se = assays.fit_published(rates)
    _, fits = assays.fit_published_qsp({"sensitive": rates["sensitive"]}, clones=("sensitive",))
    res = fits["sensitive"]
    est = np.array([res.estimates[f"b{j}"] for j in range(4)])
    np.testing.assert_allclose(est, np.asarray(ols.beta)[0], rtol=1e-8)
    np.testing.assert_allclose([res.se[f"b{j}"] for j in range(4)], se["sensitive"], rtol=1e-6)


# Net growth (1/h) re-computed from the published coefficients (reference section 3 table;
# NRAS in the trial form), rounded to 5 decimals there.
TABLE = [
    ((0, 0), (0.02474, 0.01609, 0.02183, 0.01483)),
    ((1, 0), (0.01029, 0.01537, 0.02191, 0.01272)),
    ((10, 0), (-0.00365, 0.01476, 0.02211, 0.00433)),
    ((0, 10), (0.01257, 0.01522, 0.02183, 0.01475)),
    ((0, 100), (-0.00268, 0.00599, 0.02183, 0.01466)),
    ((0, 500), (-0.00582, -0.01068, 0.02183, 0.01460)),
    ((150, 500), (-0.00515, -0.01362, 0.02239, -0.00496)),
    ((1.47, 5.19), (-0.00105, 0.01439, 0.02194, 0.01179)),
]


@pytest.mark.parametrize("conc,expected", TABLE)
def test_published_surface_values(published, conc, expected):
    got = np.asarray(published.net_growth(*conc))
    np.testing.assert_allclose(got, expected, atol=5e-6 + 1e-12)
    np.testing.assert_allclose(np.asarray(published.birth(*conc)) - got, published.death, rtol=1e-12)


def test_published_surface_artefacts(published):
    # Reference section 3 (a): at osi 1000 nM, adding daco 250 nM makes the sensitive
    # clone's net growth less negative (-0.00630 -> -0.00491 /h); the NRAS osimertinib
    # term is zeroed in the trial form only.
    g = np.asarray(published.net_growth(jnp.array([0.0, 250.0]), jnp.array([1000.0, 1000.0])))[:, 0]
    np.testing.assert_allclose(g, [-0.00630, -0.00491], atol=5e-6)
    val = clonal.published_surface(nras_osi=True)
    assert float(val.net_growth(0.0, 500.0)[2]) < float(published.net_growth(0.0, 500.0)[2])
    # Untreated PC9 doubling time ~ ln2/0.0247 ~ 28 h (reference section 3).
    assert abs(np.log(2) / float(published.net_growth(0.0, 0.0)[0]) - 28.0) < 0.1


def _grid_diffs(surface):
    """Differences of net growth along daco and along osi on a grid (0 and log-spaced)."""
    d = jnp.concatenate([jnp.zeros(1), jnp.logspace(-3, 3.5, 40)])
    o = jnp.concatenate([jnp.zeros(1), jnp.logspace(-3, 3.7, 40)])
    D, O = jnp.meshgrid(d, o, indexing="ij")
    g = surface.net_growth(D, O)  # (41, 41, 4)
    return jnp.diff(g, axis=0), jnp.diff(g, axis=1)


def test_monotone_surface_never_rises_with_dose():
    # Property test over the design space and beyond (daco 0-3000 nM, osi 0-5000 nM):
    # the stored fit and 64 random Hill-Bliss surfaces.
    dd, do = _grid_diffs(clonal.monotone_surface())
    assert float(dd.max()) <= 0.0 and float(do.max()) <= 0.0
    keys = jax.random.split(jax.random.key(0), 8)
    u = lambda k, lo, hi: jnp.exp(jax.random.uniform(k, (64, 4), minval=np.log(lo), maxval=np.log(hi)))
    rand = HillBliss(b0=u(keys[0], 1e-3, 0.1), death=u(keys[1], 1e-3, 0.05), ic50_daco=u(keys[2], 1e-2, 1e4),
                     n_daco=u(keys[3], 0.2, 8.0), imax_daco=jax.random.uniform(keys[4], (64, 4)),
                     ic50_osi=u(keys[5], 1e-2, 1e4), n_osi=u(keys[6], 0.2, 8.0),
                     imax_osi=jax.random.uniform(keys[7], (64, 4)))
    worst = jax.vmap(lambda s: jnp.max(jnp.stack([jnp.max(x) for x in _grid_diffs(s)])))(rand)
    assert float(jnp.max(worst)) <= 0.0
    # ... while the published surface does rise (artefact (a)).
    dd, _ = _grid_diffs(clonal.published_surface())
    assert float(dd.max()) > 1e-4


def test_monotone_fit_reproduces_stored_values(counts):
    rates = assays.clone_rates(counts)
    fitted, rmse = assays.fit_monotone(rates)
    stored = clonal.monotone_surface()
    for clone, r in rates.items():
        k = CLONES.index(clone)
        a = np.asarray(fitted.net_growth(r["daco_nM"].to_numpy(), r["osi_nM"].to_numpy()))[:, k]
        b = np.asarray(stored.net_growth(r["daco_nM"].to_numpy(), r["osi_nM"].to_numpy()))[:, k]
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8, err_msg=clone)
        # Least squares on the rates themselves fits them better than the published
        # surface (fitted on the logit scale): RMSE values in surfaces.MONOTONE_FIT.
        pub = np.asarray(clonal.published_surface().net_growth(r["daco_nM"].to_numpy(), r["osi_nM"].to_numpy()))[:, k]
        assert rmse[clone] < np.sqrt(np.mean((pub - r["net_growth_per_h"].to_numpy()) ** 2))


def test_monotone_fit_by_qsp_fit_reaches_the_stored_optimum(counts):
    # The framework's fit (AlgebraicModel + qsp.fit, 16 starts from generic values)
    # reaches the stored optimum of the sensitive clone: same residual RMSE (rel 1e-8)
    # and same predictions (rel 1e-5). (For NRAS, nearly flat, it stops at a slightly
    # worse local optimum: RMSE 0.001661 vs 0.001637; not tested.)
    rates = assays.clone_rates(counts)
    res = assays.fit_monotone_qsp(rates, clones=("sensitive",))["sensitive"]
    r = rates["sensitive"]
    stored = np.asarray(clonal.monotone_surface().net_growth(r["daco_nM"].to_numpy(), r["osi_nM"].to_numpy()))[:, 0]
    rmse = np.sqrt(np.mean((stored - r["net_growth_per_h"].to_numpy()) ** 2))
    np.testing.assert_allclose(res.estimates["sigma_g"], rmse, rtol=1e-8)
    est = {k: v for k, v in res.estimates.items() if k != "sigma_g"}
    fitted = HillBliss(death=clonal.monotone_surface().death, **{k: np.full(4, v) for k, v in est.items()})
    pred = np.asarray(fitted.net_growth(r["daco_nM"].to_numpy(), r["osi_nM"].to_numpy()))[:, 0]
    np.testing.assert_allclose(pred, stored, rtol=1e-5, atol=1e-9)


def test_invitro_single_clone_is_exponential(published):
    # One clone, no mutation: N(t) = N0 exp(g t) (closed form), t in days.
    days = np.array([0.0, 1.0, 3.0, 7.0])
    got = clonal.invitro({"T790M": 5000.0}, 1.0, 50.0, days)
    g = float(published.net_growth(1.0, 50.0)[1])
    np.testing.assert_allclose(got, 5000.0 * np.exp(g * 24.0 * days), rtol=1e-12)
    mono = clonal.monotone_surface()
    got = clonal.invitro({"sensitive": 100.0}, 0.5, 5.0, days, surface="monotone")
    np.testing.assert_allclose(got, 100.0 * np.exp(float(mono.net_growth(0.5, 5.0)[0]) * 24.0 * days), rtol=1e-12)


def test_invitro_with_mutation_matches_scipy(published):
    mu = np.array([1e-3, 2e-4, 5e-4])  # large, so the mutation terms matter
    b = np.asarray(published.birth(0.3, 3.0))
    d = np.asarray(published.death)

    def rhs(t, n):
        out = (b - d) * n
        out[0] -= b[0] * mu.sum() * n[0]
        out[1:] += mu * b[0] * n[0]
        return out

    n0 = np.array([1000.0, 10.0, 0.0, 1.0])
    ref = solve_ivp(rhs, (0, 240.0), n0, t_eval=[48.0, 240.0], rtol=1e-12, atol=1e-12, method="LSODA")
    got = clonal.invitro(dict(zip(CLONES, n0)), 0.3, 3.0, [2.0, 10.0], mu=mu)
    np.testing.assert_allclose(got, ref.y.sum(axis=0), rtol=1e-9)


def test_bad_inputs_name_the_field(counts):
    with pytest.raises(ValueError, match="unknown clone 'L718Q'"):
        clonal.invitro({"L718Q": 1.0}, 0.0, 0.0, [1.0])
    with pytest.raises(ValueError, match="surface='hill' is not known"):
        clonal.invitro({"sensitive": 1.0}, 0.0, 0.0, [1.0], surface="hill")
    with pytest.raises(ValueError, match=r"days=.* must be >= 0"):
        clonal.invitro({"sensitive": 1.0}, 0.0, 0.0, [-1.0])
    with pytest.raises(ValueError, match="no assay for lab='scott', line='H1975'"):
        assays.growth_rates(counts, "scott", "H1975")
    with pytest.raises(ValueError, match=r"BoundedLogistic beta has shape \(3, 4\)"):
        clonal.BoundedLogistic(beta=np.zeros((3, 4)), ymin=np.zeros(4), ymax=np.ones(4), death=np.zeros(4))
