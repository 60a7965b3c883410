"""Smoke test of `benchmarks/pk2cmt_population.py`: its core at N = 10 (scipy timed on 2
patients), the results schema, and that its correctness gate both passes and fails.

Timings are not asserted (speed targets live in benchmarks/, not in tests)."""

import json

import numpy as np
import pytest

from benchmarks._pk2cmt_peers import Workload, closed_form_cp, scipy_cp
from benchmarks.pk2cmt_population import (
    CHECK_THRESHOLD,
    main,
    max_rel_diff,
    run_benchmark,
    to_markdown,
    write_results,
)

RUN_KEYS = {"method", "n", "measured_n", "wall_s", "patients_per_s", "times_s", "repeats",
            "extrapolated", "peak_rss_mib", "load_at_start"}


@pytest.fixture(scope="module")
def results():
    return run_benchmark([10], methods=("qsp_tsit5", "scipy_lsoda"), repeats=1, check_n=10,
                         scipy_subset={"scipy_lsoda": 2}, log=lambda *a: None)


def test_correctness_gate_passes(results):
    chk = results["correctness"]
    assert chk["passed"] and chk["n_patients"] == 10
    # The tight scipy reference itself agrees with the closed form (tests/pk_closed_form.py)
    # far below the gate; every method is within the 1e-3 gate.
    assert chk["max_rel_diff"]["closed_form"] < 1e-8
    assert set(chk["max_rel_diff"]) == {"closed_form", "qsp_tsit5", "scipy_lsoda"}
    assert all(v < CHECK_THRESHOLD for v in chk["max_rel_diff"].values())


def test_results_schema(results, tmp_path):
    assert results["benchmark"] == "pk2cmt_population" and results["schema_version"] == 1
    assert results["complete"] is True
    m = results["machine"]
    for key in ("cpu_model", "cpu_count", "ram_gib", "os", "python", "packages", "git_commit"):
        assert key in m
    assert m["packages"]["jax"] and m["packages"]["scipy"]
    assert len(results["load"]["start"]) == 3 and len(results["load"]["end"]) == 3
    assert results["workload"]["n_obs"] == 85 and results["workload"]["n_doses"] == 28
    runs = {r["method"]: r for r in results["runs"]}
    assert set(runs) == {"qsp_tsit5", "scipy_lsoda"}
    for r in runs.values():
        assert RUN_KEYS <= set(r) and r["n"] == 10 and r["wall_s"] > 0
        assert r["patients_per_s"] == pytest.approx(10 / r["wall_s"], rel=1e-2)
    q, s = runs["qsp_tsit5"], runs["scipy_lsoda"]
    assert not q["extrapolated"] and q["measured_n"] == 10 and q["failures"] == 0
    assert q["steps_mean"] >= 28 and q["compile_s"] >= 0 and q["chunk"] == 10
    assert s["extrapolated"] and s["measured_n"] == 2 and s["nfev_mean"] > 0
    jp, mp = write_results(results, "smoke", tmp_path)
    assert json.loads(jp.read_text())["runs"] == results["runs"]
    md = mp.read_text()
    assert "| qsp_tsit5 |" in md and "extrap. from N=2" in md and "Load average" in md
    assert "Incomplete" not in md and "Incomplete run" in to_markdown({**results, "complete": False})


def test_correctness_gate_fails_on_a_wrong_answer():
    # A 1 % error is caught; the floor only guards exact zeros.
    ref = np.array([[0.0, 1.0, 2.0]])
    assert max_rel_diff(ref * 1.01, ref) == pytest.approx(0.01)
    assert max_rel_diff(ref, ref) == 0.0
    # scipy at rtol = atol = 0.1 is inaccurate: the gate fails and nothing is timed.
    res = run_benchmark([4], methods=("scipy_lsoda",), workload=Workload(rtol=0.1, atol=0.1),
                        check_n=4, log=lambda *a: None)
    assert not res["correctness"]["passed"] and res["runs"] == []
    assert res["correctness"]["max_rel_diff"]["scipy_lsoda"] > CHECK_THRESHOLD
    assert "FAILED" in to_markdown(res)


def test_closed_form_matches_tight_scipy():
    w = Workload(n_doses=4)
    pop = w.population(3)
    ref, nfev = scipy_cp(pop, w, "LSODA", rtol=1e-10, atol=1e-14)
    assert max_rel_diff(closed_form_cp(pop, w), ref) < 1e-8 and (nfev > 0).all()


def test_cli_scipy_only(tmp_path):
    assert main(["--max-n", "3", "--methods", "scipy_lsoda", "--scipy-lsoda-n", "2", "--repeats", "1",
                 "--stem", "cli", "--out-dir", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "cli.json").read_text())
    assert res["settings"]["ns"] == [3] and res["runs"][0]["measured_n"] == 2
