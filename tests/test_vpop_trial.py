"""Virtual trials: endpoints against closed forms, chunked execution, resume, failures."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import qsp
from qsp import endpoints as ep
from qsp.vpop import Arm, Exposure, Population, Response, Toxicity, run_trial


class Tumour(qsp.ODEModel):
    r"""Test model (ours): IV bolus one-compartment PK killing an exponentially growing
    tumour, dA/dt = -CL/V A, dT/dt = (kg - kkill A/V) T, so that
    log T(t) = log T0 + kg t - kkill \int_0^t C (closed form below)."""

    CL: float = qsp.param(1.0, bounds=(0, float("inf")))
    V: float = qsp.param(5.0, bounds=(0, float("inf")))
    kg: float = qsp.param(0.02, bounds=(0, float("inf")))
    kkill: float = qsp.param(0.02, bounds=(0, float("inf")))
    T0: float = qsp.param(60.0, bounds=(0, float("inf")))
    states = ("CENT", "T")
    time_unit = "day"

    def initial(self):
        return jnp.array([0.0, self.T0])

    def rhs(self, t, y):
        return jnp.stack([-self.CL / self.V * y[0], (self.kg - self.kkill * y[0] / self.V) * y[1]])

    def outputs(self, t, y):
        return {"CP": y[0] / self.V, "SLD": y[1]}


N, CHUNK = 200, 64
TS = np.arange(0.0, 85.0, 7.0)  # weekly assessments; TS[0] is baseline
DOSE_T = np.arange(0.0, 78.0, 7.0)  # weekly bolus, 12 doses
POP = Population(Tumour(), [0.09, 0.04, 0.3, 0.5, 0.05], ("CL", "V", "kg", "kkill", "T0")).sample(jax.random.key(0), N)
WT = np.exp(np.random.default_rng(0).normal(np.log(70), 0.2, N))
ARMS = [Arm("flat", qsp.Regimen.bolus(20.0, 0.0, "CENT", ii=7.0, addl=11)),
        Arm("mg/kg", qsp.Regimen.bolus(0.3, 0.0, "CENT", ii=7.0, addl=11), dose_scale=lambda c: c["WT"])]
def logistic(peak):
    """Our illustrative exposure-toxicity link: P(event) = 1 / (1 + exp(-(peak - 3) / 0.5))."""
    return 1.0 / (1.0 + np.exp(-(peak - 3.0) / 0.5))


ENDPOINTS = [Exposure("CP", trough_at=7.0), Response("SLD"), Toxicity("CP", (2.0, 3.0, 5.0), link=logistic)]
KW = dict(endpoints=ENDPOINTS, chunk_size=CHUNK, covariates={"WT": WT}, save_outputs=("CP", "SLD"),
          progress=False, rtol=1e-9, atol=1e-10)


def closed_form(m, dose):
    """C(t) and SLD(t) at TS; observations at a dose time are pre-dose."""
    cl, v, kg, kk, t0 = (np.asarray(getattr(m, k))[:, None, None] for k in ("CL", "V", "kg", "kkill", "T0"))
    k = cl / v
    dt = TS[None, :, None] - DOSE_T[None, None, :]
    on = dt > 0
    d = np.asarray(dose)[:, None, None]
    c = np.sum(np.where(on, d / v * np.exp(-k * np.where(on, dt, 0)), 0.0), axis=2)
    iauc = np.sum(np.where(on, d / (v * k) * (1 - np.exp(-k * np.where(on, dt, 0))), 0.0), axis=2)
    return c, t0[:, :, 0] * np.exp(kg[:, :, 0] * TS - kk[:, :, 0] * iauc)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("trial_full"))
    return run_trial(POP, ARMS, TS, out=out, **KW)


def test_trajectories_and_endpoints_match_closed_form(full):
    assert full.complete and len(full.patients) == 2 * N
    xr = full.to_xarray()
    assert xr["SLD"].shape == (2, N, len(TS))
    for ai, dose in enumerate([np.full(N, 20.0), 0.3 * WT]):
        c, sld = closed_form(POP, dose)
        np.testing.assert_allclose(xr["CP"].values[ai], c, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(xr["SLD"].values[ai], sld, rtol=1e-6, atol=1e-8)  # mm
        d = full.patients[full.patients["arm"] == ARMS[ai].name]
        np.testing.assert_array_equal(d["patient"], np.arange(N))
        np.testing.assert_array_equal(d["bor"], ep.best_overall_response(sld))
        ttp, ev = ep.time_to_progression(TS, sld)
        np.testing.assert_array_equal(d["ttp"], ttp)
        np.testing.assert_array_equal(d["progressed"], ev)
        np.testing.assert_allclose(d["CP_ctrough"], c[:, 1], rtol=1e-6)  # pre-dose at day 7
        np.testing.assert_array_equal(d["tox_grade"], ep.grade(c, (2.0, 3.0, 5.0)))
        np.testing.assert_allclose(d["tox_prob"], logistic(c.max(axis=1)), rtol=1e-6)
    # a mix of outcomes, so the endpoints are exercised
    assert set(np.unique(full.patients["bor"])) >= {2, 3, 4}


def test_summary_agrees_with_endpoint_functions(full):
    s = full.summary(n_boot=200).set_index("arm")
    for arm in ("flat", "mg/kg"):
        d = full.patients[full.patients["arm"] == arm]
        assert s.loc[arm, "orr"] == pytest.approx(ep.objective_response_rate(d["bor"]))
        assert s.loc[arm, "orr_lo"] <= s.loc[arm, "orr"] <= s.loc[arm, "orr_hi"]
        assert s.loc[arm, "tox_grade1plus"] == pytest.approx(ep.incidence(d["tox_grade"], 1))
        assert s.loc[arm, "tox_expected_incidence"] == pytest.approx(d["tox_prob"].mean())
        km = full.kaplan_meier(arm)
        assert s.loc[arm, "median_ttp"] == km.median or np.isnan(km.median)
        assert s.loc[arm, "n_failed"] == 0


def test_interrupted_run_resumes_to_identical_results(full, tmp_path):
    out = str(tmp_path / "trial")
    part = run_trial(POP, ARMS, TS, out=out, max_chunks=3, **KW)  # "killed" after 3 of 8 chunks
    assert not part.complete and len(part.patients) == 3 * CHUNK
    again = run_trial(POP, ARMS, TS, out=out, **KW)
    assert again.complete and again.memory["chunks_computed"] == 5
    pd.testing.assert_frame_equal(again.patients, full.patients, check_exact=True)
    a, b = again.to_xarray(), full.to_xarray()
    np.testing.assert_array_equal(a["SLD"].values, b["SLD"].values)


def test_refuses_a_directory_holding_another_trial(full):
    with pytest.raises(ValueError, match="holds a different trial .*differs in: ts"):
        run_trial(POP, ARMS, TS + 1.0, out=full.out, **KW)


def test_failed_patients_are_flagged_not_fatal(tmp_path):
    bad = POP.replace(CL=POP.CL.at[5].set(-1.0))  # outside bounds (0, inf)
    res = run_trial(bad, ARMS[:1], TS, out=str(tmp_path / "t"), **KW)
    d = res.patients.set_index("patient")
    assert d.loc[5, "status"] == qsp.Status.INVALID_PARAMETERS
    assert d.loc[5, "bor"] == ep.RECIST.NE and np.isnan(d.loc[5, "CP_cmax"]) and d.loc[5, "tox_grade"] == -1
    assert (d.drop(index=5)["status"] == 0).all()
    assert res.summary(n_boot=50)["n_failed"].iloc[0] == 1


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="arm names .* are not unique"):
        run_trial(POP, [ARMS[0], ARMS[0]], TS, out=str(tmp_path), **KW)
    with pytest.raises(ValueError, match="dose_scale is a function of covariates but covariates=None"):
        run_trial(POP, ARMS, TS, out=str(tmp_path), **{**KW, "covariates": None})
    with pytest.raises(ValueError, match="chunk_size=0 must be a positive integer"):
        run_trial(POP, ARMS, TS, out=str(tmp_path), **{**KW, "chunk_size": 0})
    with pytest.raises(ValueError, match=r"Toxicity\('CP'\) needs thresholds=... or link="):
        Toxicity("CP")
    with pytest.raises(ValueError, match="population has no batched parameter"):
        run_trial(Tumour(), ARMS, TS, out=str(tmp_path), **KW)


# -- slow: real process kill, and multi-device dispatch ------------------------------------------

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_sigkilled_run_resumes_identically(tmp_path):
    """benchmarks/vpop_trial_resume.py SIGKILLs a trial (pk1cmt, 6000 patients, 12 chunks)
    once half its chunks are on disk, restarts it, and compares bitwise with an
    uninterrupted run (the 100,000-patient version is the benchmark's default)."""
    import json
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "vpop_trial_resume.py"), "--n", "6000",
                        "--chunk", "500", "--out", str(tmp_path), "--no-record"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["identical"] and res["n_rows"] == 6000
    assert 6 <= res["killed_with_chunks_on_disk"] < 12
    assert res["chunks_computed_after_restart"] == 12 - res["killed_with_chunks_on_disk"]


SHARD_SCRIPT = """
import jax, numpy as np, pandas as pd, qsp
from qsp.models import pk1cmt
from qsp.vpop import Arm, Exposure, Population, run_trial
assert len(jax.devices()) == 2, jax.devices()
pop = Population(pk1cmt(), [0.09, 0.04], ("CL", "V")).sample(jax.random.key(1), 100)
arm = Arm("a", qsp.Regimen.bolus(100.0, 0.0, "DEPOT", ii=12.0, addl=3))
kw = dict(endpoints=[Exposure("CP", trough_at=36.0)], chunk_size=32, save_outputs=("CP",), progress=False)
ts = np.array([0.0, 1.0, 4.0, 12.0, 24.0, 36.0, 48.0])
one = run_trial(pop, [arm], ts, out="{out}/one", **kw)
two = run_trial(pop, [arm], ts, out="{out}/two", devices=jax.devices(), **kw)
pd.testing.assert_frame_equal(one.patients, two.patients, check_exact=True)
assert np.array_equal(one.to_xarray()["CP"].values, two.to_xarray()["CP"].values)
print("IDENTICAL", len(one.patients))
"""


@pytest.mark.slow
def test_two_device_run_equals_single_device(tmp_path):
    """With two XLA host devices, splitting every chunk over both gives bitwise the
    same table and trajectories as one device (run in a subprocess: the device count
    is fixed when JAX starts)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    r = subprocess.run([sys.executable, "-c", SHARD_SCRIPT.format(out=tmp_path)], capture_output=True, text=True,
                       timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "IDENTICAL 100" in r.stdout
