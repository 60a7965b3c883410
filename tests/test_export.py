"""Export: tidy CSV, netCDF, ArviZ, and a NONMEM-style dataset of simulated virtual
patients that `qsp.nonmem` reads back and re-simulates to the same DV."""

from __future__ import annotations

import importlib.util

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import qsp
from qsp import export
from qsp.models import pk1cmt
from qsp.nonmem import read_nonmem, simulate_nonmem

TS = np.array([0.0, 1.0, 2.0, 6.0, 12.0, 13.0, 24.0])
KW = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def population():
    model = pk1cmt(CL=jnp.array([1.0, 2.0, 4.0]), V=jnp.array([10.0, 12.0, 8.0]), KA=jnp.array([1.0, 0.7, 1.5]))
    regimen = qsp.Regimen.bolus(100.0, time=0.0, cmt="DEPOT", ii=12.0, addl=1)
    return model, regimen, qsp.simulate(model, regimen, TS, **KW)


def test_tidy_csv_round_trip(population, tmp_path):
    _, _, sol = population
    df = export.write_tidy(sol, tmp_path / "sim.csv")
    back = pd.read_csv(tmp_path / "sim.csv")
    assert list(back.columns) == ["id", "time", "variable", "value"]
    assert len(back) == 3 * len(TS) * len(sol.outputs)
    cp = back[(back.variable == "CP") & (back.id == 1)].sort_values("time")
    np.testing.assert_array_equal(cp["value"].to_numpy(), np.asarray(sol.outputs["CP"][1]))
    np.testing.assert_array_equal(back["value"].to_numpy(), df["value"].to_numpy())
    if importlib.util.find_spec("pyarrow") is None:
        with pytest.raises(ImportError, match="pyarrow"):
            export.write_tidy(sol, tmp_path / "sim.parquet")
    with pytest.raises(ValueError, match=r"\.csv or \.parquet"):
        export.write_tidy(sol, tmp_path / "sim.txt")


def test_tidy_trial_table():
    table = pd.DataFrame({"id": [0, 1], "arm": ["a", "b"], "cmax": [1.5, 2.5], "auc": [10.0, 20.0]})
    long = export.tidy(table)
    assert set(long.columns) == {"id", "arm", "variable", "value"}
    assert long.set_index(["id", "variable"]).loc[(1, "auc"), "value"] == 20.0

    class Trial:  # the shape of qsp.vpop's TrialResult: a `patients` table
        patients = table

    pd.testing.assert_frame_equal(export.tidy(Trial()), long)


def test_netcdf_round_trip(population, tmp_path):
    import xarray as xr

    _, _, sol = population
    export.write_netcdf(sol, tmp_path / "sim.nc")
    ds = xr.open_dataset(tmp_path / "sim.nc", engine="h5netcdf")
    np.testing.assert_array_equal(ds["CP"].values, np.asarray(sol.outputs["CP"]))
    np.testing.assert_array_equal(ds["time"].values, TS)
    assert list(ds["state"].values) == ["DEPOT", "CENT"]
    ds.close()


def test_posterior_to_arviz():
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(2, 50, 3))
    idata = export.posterior_to_arviz(draws, ["CL", "V", "KA"])
    np.testing.assert_array_equal(idata.posterior["V"].values, draws[:, :, 1])
    assert idata.posterior.sizes["chain"] == 2 and idata.posterior.sizes["draw"] == 50
    with pytest.raises(ValueError, match="expected 3 parameter names"):
        export.posterior_to_arviz(draws, ["CL"])


def test_nonmem_dataset_reads_back_and_resimulates(population, tmp_path):
    model, regimen, sol = population
    path = tmp_path / "vpop.csv"
    df = export.nonmem_dataset(model, regimen, TS, "CP", path, **KW)
    back = read_nonmem(path)
    assert (back["EVID"] == 1).sum() == 3 * 2 and (back["EVID"] == 0).sum() == 3 * len(TS)
    # Re-simulating the written dataset (independent parsing of its dose records)
    # gives the DV written, to solver precision; DV equals the simulated CP.
    resim = simulate_nonmem(model, path, **KW)
    obs = df[df.EVID == 0]
    np.testing.assert_allclose(resim["CP"].to_numpy(), obs["DV"].to_numpy(), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(obs["DV"].to_numpy().reshape(3, -1), np.asarray(sol.outputs["CP"]), rtol=1e-12)
    # Residual error (seeded): DV = f (1 + 0.1 eps1) + 0.05 eps2 differs from f.
    noisy = export.nonmem_dataset(model, regimen, TS, "CP", sigma_prop=0.1, sigma_add=0.05, seed=1, **KW)
    nobs = noisy[noisy.EVID == 0]
    assert not np.allclose(nobs["DV"].to_numpy(), obs["DV"].to_numpy())
