"""PEtab import against published reference likelihoods of the PEtab benchmark
collection (tests/data/petab, BSD-3; see SOURCES.md there), the `qsp petab` CLI, and a
fit of Boehm_JProteomeRes2014 with the calibration engine."""

from __future__ import annotations

import copy
import json
import pathlib

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qsp._optimize import _fwd_grad
from qsp._petab import petab_problem
from qsp.cli import main

DATA = pathlib.Path(__file__).parent / "data" / "petab"

# Negative log-likelihood at the nominal parameters: -llh of AMICI's
# tests/benchmark_models/benchmark_models.yaml (AMICI-dev/AMICI commit 5c524dd), which
# reproduces the benchmark collection's values up to the conventions noted there.
REFERENCE = {
    "Boehm_JProteomeRes2014": 138.22199693517703,  # 3 observables, estimated noise SDs
    "Elowitz_Nature2000": -63.20279991419332,  # normal noise on log10 scale (log-normal)
    "Fiedler_BMCSystBiol2016": -58.58390161681,  # 3 conditions, observable/noise parameters
    "Sneyd_PNAS2002": -319.79177818768756,  # 9 conditions
    "Zheng_PNAS2012": -278.33353271001477,  # pre-equilibration
}


def _yaml(name):
    return DATA / name / f"{name}.yaml"


def _near_nominal(pb, step):
    """Nominal +/- `step` (alternating signs) on the PEtab scale, kept 0.01 inside the
    bounds (Boehm's published best has k_exp_hetero at its lower bound)."""
    x = pb.x_nominal + step * np.where(np.arange(pb.n_free) % 2 == 0, 1.0, -1.0)
    return np.clip(x, pb.lo + 0.01, pb.hi - 0.01)


@pytest.fixture(scope="module")
def boehm():
    return petab_problem(_yaml("Boehm_JProteomeRes2014"))


# Sneyd in the slow tier (~20 s): its features, several conditions overriding model
# parameters and assignment rules, are covered in the default tier by Fiedler.
# Zheng (pre-equilibration, ~50 s) too, for CI time.
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in ("Sneyd_PNAS2002", "Zheng_PNAS2012") else n
                                  for n in REFERENCE if n != "Boehm_JProteomeRes2014"])
def test_reference_nll_at_nominal(name):
    # Fiedler is non-stiff: Tsit5 compiles in about half the time of the default
    # Kvaerno5 (same nll to 1e-6); Elowitz and Zheng need the stiff default.
    kw = {"solver": dfx.Tsit5()} if name == "Fiedler_BMCSystBiol2016" else {}
    nll = petab_problem(_yaml(name), **kw).nll_nominal()
    assert abs(nll - REFERENCE[name]) < 1e-3, f"{name}: {nll} vs {REFERENCE[name]}"


def test_cli_json_reproduces_boehm_reference(boehm, capsys):
    # Same model file as the fixture: the CLI reuses its compiled solve.
    assert main(["petab", str(_yaml("Boehm_JProteomeRes2014")), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_measurements"] == 48
    assert abs(out["nll"] - REFERENCE["Boehm_JProteomeRes2014"]) < 1e-3


def test_cli_bad_input_one_line(tmp_path, capsys):
    assert main(["petab", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "missing.yaml" in err and "does not exist" in err
    assert main(["petab", str(_yaml("Boehm_JProteomeRes2014")), "--fit", "--starts", "0"]) == 2
    assert "--starts 0" in capsys.readouterr().err


@pytest.mark.slow
def test_fit_gradient_matches_finite_differences(boehm):
    # The objective `qsp.fit`'s optimizer differentiates: forward sensitivities through
    # `_fwd_grad`, on the unconstrained scale. Central differences, h = 1e-4.
    x = _near_nominal(boehm, 0.05)
    u = jnp.asarray(boehm.unconstrained(x))
    g = np.asarray(jax.grad(_fwd_grad(boehm.nll_u))(u))
    f = jax.jit(boehm.nll_u)
    h = 1e-4
    fd = np.array([(f(u.at[i].add(h)) - f(u.at[i].add(-h))) / (2 * h) for i in range(boehm.n_free)])
    np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-4 * np.max(np.abs(fd)))


@pytest.mark.slow
def test_fit_from_nominal_neighbourhood_reaches_published_best(boehm):
    # Start 0.1 log10 units (a factor 1.26) away from the published best parameters
    # in alternating directions; the fit must reach the published best objective
    # 138.22199693517703 (AMICI benchmark_models.yaml, see REFERENCE) or better,
    # up to 1e-3.
    x0 = _near_nominal(boehm, 0.1)
    assert boehm.nll(jnp.asarray(x0)) > REFERENCE["Boehm_JProteomeRes2014"] + 1.0
    res = boehm.fit(1, x0=x0)
    assert res.nll <= REFERENCE["Boehm_JProteomeRes2014"] + 1e-3


@pytest.mark.parametrize("dist,trans", [("laplace", "lin"), ("laplace", "log"), ("normal", "log"), ("laplace", "log10")])
def test_noise_models_match_their_densities(boehm, dist, trans):
    # Boehm under other PEtab noise models (same simulations, so no new compile) against
    # the densities from scipy.stats on the transformed scale, times the Jacobian of the
    # log/log10 transform (1/m, 1/(m ln 10)), as the PEtab v1 spec defines them.
    from scipy import stats

    x = jnp.asarray(boehm.x_nominal)
    preds, ok = boehm.predictions(x)
    assert bool(ok)
    # Log scales need a positive simulated observable: Boehm's are 0 at t = 0, so keep
    # the rows where it is positive (the measurements are all > 0).
    other = copy.copy(boehm)
    other.groups = []
    f = {"lin": lambda v: v, "log": np.log, "log10": np.log10}[trans]
    dens = stats.laplace if dist == "laplace" else stats.norm
    want = 0.0
    for g, (rows, y, s) in zip(boehm.groups, preds):
        keep = np.flatnonzero(np.asarray(y) > 0) if trans != "lin" else np.arange(len(rows))
        other.groups.append(dict(g, dist=dist, trans=trans, rows=g["rows"][keep], sim=g["sim"][keep],
                                 t=g["t"][keep], place={k: [v[i] for i in keep] for k, v in g["place"].items()}))
        m, y, s = boehm.y[rows][keep], np.asarray(y)[keep], np.asarray(s)[keep]
        jac = {"lin": 0.0, "log": np.log(m), "log10": np.log(m * np.log(10))}[trans]
        want += np.sum(-dens.logpdf(f(m), loc=f(y), scale=s) + jac)
    assert sum(len(g["rows"]) for g in other.groups) > 30
    got = float(other.nll(x))
    assert np.isfinite(want)
    assert abs(got - want) <= 1e-9 * abs(want)


def test_bad_tables_name_the_field(tmp_path):
    import shutil

    src = DATA / "Boehm_JProteomeRes2014"
    for f in src.iterdir():
        shutil.copy(f, tmp_path / f.name)
    obs = tmp_path / "observables_Boehm_JProteomeRes2014.tsv"
    text = obs.read_text()
    obs.write_text(text.replace("\tlin\tnormal", "\tlin\tcauchy", 1))
    with pytest.raises(ValueError, match="observable 'pSTAT5A_rel': cauchy/lin is not a PEtab v1 noise model"):
        petab_problem(tmp_path / "Boehm_JProteomeRes2014.yaml")
    obs.write_text(text)
    cond = tmp_path / "experimentalCondition_Boehm_JProteomeRes2014.tsv"
    cond.write_text("conditionId\tconditionName\tnot_in_model\nmodel1_data1\tcondition1\t1.0\n")
    with pytest.raises(ValueError, match="column 'not_in_model' is not a parameter, compartment or species"):
        petab_problem(tmp_path / "Boehm_JProteomeRes2014.yaml")
