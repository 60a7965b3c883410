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


# -- the save window of qsp.simulate (issue 8) and the benchmark's SBML writer ----------------


def test_save_window_is_bitwise_the_all_saves_path(monkeypatch):
    """Each dosing segment saving only the W save times it can own (the fix measured in
    benchmarks/NOTES.md) gives the same states, steps and status, bit for bit, as every
    segment saving at every save time: the saved values are interpolations of the same
    steps. Lags on some patients move the segment ends off the observation grid, and
    obs_after_dose mixes left and right owners."""
    import diffrax
    import jax.numpy as jnp

    import qsp
    import qsp._simulate as S
    from models.pk import pk2cmt

    model = pk2cmt(CL=jnp.array([0.7, 1.0, 1.6]), KA=jnp.array([0.5, 1.0, 2.0]), ALAG1=jnp.array([0.0, 0.75, 2.5]))
    reg = qsp.Regimen.bolus(100.0, time=12.0 * np.arange(6), cmt="DEPOT")
    ts = np.arange(0.0, 72.0 + 1e-9, 3.0)
    after = (ts % 12.0) == 0.0
    W = S._save_window(S._as_arrays(model), S._batch_axes(S._as_arrays(model))[0],
                       (reg.time, reg.amount, reg.duration, reg.by_rate), reg.resolve(pk2cmt), jnp.asarray(ts), 0.0)
    assert W is not None and W < len(ts)  # the window is in use (5 of 25 here)
    # simulate rounds W up to a power of two of at least _MIN_WINDOW (16 in the library,
    # where this 25-point grid would then save everywhere); 1 here, so 8 of 25 are saved.
    monkeypatch.setattr(S, "_MIN_WINDOW", 1)
    assert S._static_window(W, len(ts)) == 8
    traces = []
    solve_one = S._solve_one
    monkeypatch.setattr(S, "_solve_one", lambda *a: traces.append(1) or solve_one(*a))
    kw = dict(solver=diffrax.Tsit5(), obs_after_dose=after)
    win = qsp.simulate(model, reg, ts, **kw)
    n_traces = len(traces)
    # Another schedule, 7 doses instead of 6: padded to the same 8 events and the same
    # window, it reuses the compiled solve (no new trace).
    other = qsp.simulate(model, qsp.Regimen.bolus(100.0, time=12.0 * np.arange(7), cmt="DEPOT"), ts, **kw)
    assert len(traces) == n_traces and (np.asarray(other.status) == 0).all()
    monkeypatch.setattr(S, "_save_window", lambda *a: None)
    full = qsp.simulate(model, reg, ts, **kw)
    assert np.array_equal(np.asarray(win.states), np.asarray(full.states))
    assert np.array_equal(np.asarray(win.num_steps), np.asarray(full.num_steps))
    assert (np.asarray(win.status) == 0).all()


def test_model_default_solver_hook():
    """A model class may declare `default_solver(rtol, atol)`; simulate uses it when no
    solver is given (same result as passing that solver)."""
    import diffrax
    import jax.numpy as jnp

    import qsp

    calls = []

    class Decay(qsp.ODEModel):
        k: float = 0.5
        states = ("A",)

        def initial(self):
            return jnp.array([1.0])

        def rhs(self, t, y):
            return -self.k * y

        @staticmethod
        def default_solver(rtol, atol):
            calls.append((rtol, atol))
            return diffrax.Tsit5()

    ts = np.linspace(0.0, 4.0, 5)
    a = qsp.simulate(Decay(), None, ts, rtol=1e-8, atol=1e-10)
    b = qsp.simulate(Decay(), None, ts, rtol=1e-8, atol=1e-10, solver=diffrax.Tsit5())
    assert calls == [(1e-8, 1e-10)]
    assert np.array_equal(np.asarray(a.states), np.asarray(b.states))
    np.testing.assert_allclose(np.asarray(a.states)[:, 0], np.exp(-0.5 * ts), rtol=1e-7)


def test_sbml_writer_reproduces_the_rhs():
    """The jaxpr -> SBML writer of the RoadRunner peer: its assignment rules, evaluated
    in Python, give pk2cmt's and a Hill/max/where model's rhs to round-off."""
    import math

    import jax.numpy as jnp

    import qsp
    from benchmarks._sbml import rhs_rules
    from models.pk import pk2cmt

    class Odd(qsp.ODEModel):
        a: float = 2.0
        b: float = 0.3
        states = ("X", "Y")

        def initial(self):
            return jnp.array([1.0, 0.5])

        def rhs(self, t, y):
            h = y[0] ** 3 / (self.a ** 3 + y[0] ** 3)
            v = jnp.stack([jnp.maximum(y[1] - self.b, 0.0), jnp.where(t > 1.0, h, -h)])
            return v.at[1].add(jnp.exp(-t) * jnp.log1p(y[0]))

    ns = {"pow": pow, "exp": math.exp, "ln": math.log, "piecewise": lambda a, c, b: a if c else b}
    for model, names, y, t in ((pk2cmt(), ("CL", "V1", "Q", "V2", "KA"), [3.0, 2.0, 1.0], 0.7),
                               (Odd(), ("a", "b"), [1.5, 0.2], 2.0), (Odd(), ("a", "b"), [1.5, 0.9], 0.5)):
        rules, rates = rhs_rules(model, names)
        env = dict(ns, time=t, **{f"s{i}": v for i, v in enumerate(y)},
                   **{f"p{j}": float(getattr(model, k)) for j, k in enumerate(names)})
        for w, expr in rules:
            env[w] = eval(expr.replace("&&", " and ").replace("||", " or "), env)
        got = [eval(r, env) for r in rates]
        want = np.asarray(model.rhs(t, jnp.asarray(y)))
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)


@pytest.mark.slow
def test_population_suite_smoke(tmp_path):
    """The issue-8 suite's runner at N = 4 (qsp and the scipy loop on pk2cmt): the
    correctness gate passes, cells carry the keys the tables and figures need, and
    run_all lists every script."""
    from benchmarks import population_suite as ps
    from benchmarks import run_all

    res = ps.run_suite("pk2cmt", [4], methods=("qsp", "scipy_lsoda"), repeats=1, check_n=4, scipy_n=2,
                       log=lambda *a: None)
    chk = res["correctness"]
    assert chk["passed"] and set(chk["max_rel_diff"]) == {"qsp", "scipy_lsoda"}
    assert all(v < ps.CHECK_THRESHOLD for v in chk["max_rel_diff"].values())
    runs = {r["method"]: r for r in res["runs"]}
    assert runs["qsp"]["measured_n"] == 4 and not runs["qsp"]["extrapolated"]
    assert runs["scipy_lsoda"]["measured_n"] == 2 and runs["scipy_lsoda"]["extrapolated"]
    assert runs["qsp"]["steps_mean"] >= 28 and runs["qsp"]["peak_rss_mib"] > 0
    assert "| 4 | qsp |" in ps.to_markdown(res) and "Load average" in ps.to_markdown(res)
    ps.plot_scaling(res, tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 0
    scripts = {s[0] for s in run_all.steps(quick=False)}
    assert {"population_suite.py", "gradient_population.py", "work_precision.py"} <= scripts


def test_save_window_in_row_blocks_is_the_one_pass_window(monkeypatch):
    """`_save_window` counts its rows (patients) in blocks so a 1e6-patient population
    does not build ~3 GB of host arrays at once (benchmarks/NOTES.md section 12). The
    blocked count must be the one-pass count, wherever the widest segment sits: here
    only the last patient (doses at 0, 30, 60 h) has a 30 h segment owning 11 save
    times (30, 33, ..., 60 h); the others (q12h to 60 h, save times to 72 h) own at most
    5 (12 h / 3 h + 1)."""
    import jax.numpy as jnp

    import qsp
    import qsp._simulate as S
    from models.pk import pk2cmt

    model = S._as_arrays(pk2cmt(CL=jnp.linspace(0.7, 1.6, 5), ALAG1=jnp.array([0.0, 0.5, 1.0, 0.0, 0.0])))
    regs = [qsp.Regimen.bolus(100.0, time=12.0 * np.arange(6), cmt="DEPOT")] * 4
    reg = qsp.Regimen.stack(regs + [qsp.Regimen.bolus(100.0, time=[0.0, 30.0, 60.0], cmt="DEPOT")])
    ts = jnp.arange(0.0, 72.0 + 1e-9, 3.0)

    def window():
        return S._save_window(model, S._batch_axes(model)[0], (reg.time, reg.amount, reg.duration, reg.by_rate),
                              reg.resolve(pk2cmt), ts, 0.0)

    one_pass = window()
    for rows in (1, 2, 3):
        monkeypatch.setattr(S, "_SAVE_WINDOW_ROWS", rows)
        assert window() == one_pass == 11
