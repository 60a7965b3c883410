"""SBML import against the SBML Test Suite's semantic cases (tests/data/sbml, LGPL;
see SOURCES.md there): each case's model simulates within the case's own absolute and
relative tolerances (its settings.txt) of the suite's expected results (results.csv),
|sim - ref| <= absolute + relative * |ref| at every listed time and variable.
Unsupported constructs raise an error naming the element."""

from __future__ import annotations

import pathlib

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import qsp
from qsp._sbml_math import UnsupportedSBML

DATA = pathlib.Path(__file__).parent / "data" / "sbml"

# (case, file level): what each case exercises is in SOURCES.md.
CASES = [
    ("00001", "l2v4"),  # level 2 file; mass action, amounts
    ("00003", "l3v2"),  # non-unit stoichiometry
    ("00007", "l3v2"),  # boundary species
    ("00021", "l3v2"),  # non-unit compartment
    ("00027", "l3v2"),  # initial assignment, local parameters
    ("00031", "l3v2"),  # rate rules
    ("00051", "l3v2"),  # compartment volume follows a rate rule
    ("00060", "l3v2"),  # hasOnlySubstanceUnits
    ("00078", "l3v2"),  # function definition + assignment rule
    ("00190", "l3v2"),  # piecewise
    ("00462", "l3v2"),  # concentrations
    ("00851", "l3v2"),  # time csymbol in a kinetic law
    ("01228", "l3v2"),  # time-triggered event
]


def _settings(case):
    out = {}
    for line in (DATA / case / f"{case}-settings.txt").read_text().splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out


def _names(text):
    return [x.strip() for x in text.split(",") if x.strip()]


@pytest.mark.parametrize("case,level", CASES)
def test_semantic_case_within_suite_tolerance(case, level):
    st = _settings(case)
    model = qsp.load_sbml(DATA / case / f"{case}-sbml-{level}.xml")
    ref = pd.read_csv(DATA / case / f"{case}-results.csv")
    ref.columns = [c.strip() for c in ref.columns]
    ts = ref[[c for c in ref.columns if c.lower() == "time"][0]].to_numpy()
    # Tsit5 at rtol 1e-10: the suite's cases are non-stiff and it compiles fastest.
    sol = qsp.simulate_sbml(model, ts, rtol=1e-10, atol=1e-12, solver=dfx.Tsit5(), max_steps=100_000,
                            exact_save=False)
    assert int(np.max(sol.status)) == 0
    spec = type(model)._spec
    amounts = set(_names(st.get("amount", "")))
    for v in _names(st["variables"]):
        sim = np.asarray(sol.outputs[v])
        if spec.kind.get(v) == "species":
            comp = np.asarray(sol.outputs[spec.comp_of[v]])
            if v in amounts and spec.conc[v]:
                sim = sim * comp  # the suite asks for the amount of a concentration species
            elif v not in amounts and not spec.conc[v]:
                sim = sim / comp
        want = ref[v].to_numpy()
        tol = float(st["absolute"]) + float(st["relative"]) * np.abs(want)
        err = np.abs(sim - want)
        assert np.all(err <= tol), f"case {case} {v}: max err/tol {np.max(err / tol):.3g}"


def test_ids_are_state_and_parameter_names_and_jit_vmap_grad_work():
    model = qsp.load_sbml(DATA / "00001" / "00001-sbml-l3v2.xml")
    assert type(model).states == ("S1", "S2")
    assert set(model.parameters()) >= {"k1", "S1", "S2", "compartment"}
    ts = jnp.linspace(0.0, 5.0, 6)
    kw = dict(rtol=1e-10, atol=1e-12, solver=dfx.Tsit5(), exact_save=False)

    # Closed form of S1 -> S2 at rate k1*S1*compartment (amounts, compartment = 1):
    # S1(t) = S1(0) exp(-k1 t).
    def s1_end(k1):
        return qsp.simulate(model.replace(k1=k1), None, ts, **kw).outputs["S1"][-1]

    k1 = float(model.k1)
    s1_end = jax.jit(s1_end)
    val = s1_end(k1)
    assert abs(float(val) - float(model.S1) * np.exp(-k1 * 5.0)) < 1e-8
    g = jax.grad(s1_end)(k1)
    h = 1e-5
    fd = (s1_end(k1 + h) - s1_end(k1 - h)) / (2 * h)
    assert abs(float(g) - float(fd)) <= 1e-6 * abs(float(fd))
    # vmap: a population of three k1 values, each equal to its own closed form.
    pop = model.replace(k1=jnp.array([0.5, 1.0, 2.0]))
    sol = qsp.simulate(pop, None, ts, **kw)
    want = float(model.S1) * np.exp(-np.array([0.5, 1.0, 2.0]) * 5.0)
    # atol: the solver's absolute tolerance (1e-12) bounds the error of the smallest.
    np.testing.assert_allclose(np.asarray(sol.outputs["S1"][:, -1]), want, rtol=1e-7, atol=1e-11)


@pytest.mark.parametrize("case,element", [
    ("00026", "event 'event1'"),  # trigger S1 < 0.1: state-triggered
    ("00039", "algebraic rule #1"),
    ("01227", "event '_E0'"),  # time > J0 where J0 is a reaction rate (depends on states)
])
def test_unsupported_feature_names_the_element(case, element):
    with pytest.raises(UnsupportedSBML) as err:
        qsp.load_sbml(DATA / case / f"{case}-sbml-l3v2.xml")
    assert element in str(err.value)


def _edited(case, old, new):
    text = (DATA / case / f"{case}-sbml-l3v2.xml").read_text()
    assert old in text
    return text.replace(old, new, 1)


def test_fast_reaction_and_delay_are_refused_by_name():
    # Level 3 version 1 still has the `fast` attribute; the reaction is named.
    text = _edited("00001", 'id="reaction1"', 'id="reaction1" fast="true"')
    text = text.replace("level3/version2/core", "level3/version1/core").replace('version="2"', 'version="1"')
    with pytest.raises(UnsupportedSBML, match="reaction 'reaction1' is fast"):
        qsp.load_sbml(text)
    delay = ('<apply><csymbol encoding="text" definitionURL="http://www.sbml.org/sbml/symbols/delay"> delay '
             '</csymbol><ci> S1 </ci><cn> 1 </cn></apply>')
    text = _edited("00001", "<ci> S1 </ci>", delay)
    with pytest.raises(UnsupportedSBML, match="kinetic law of reaction 'reaction1'.*delay"):
        qsp.load_sbml(text)


def test_event_model_refuses_plain_simulate():
    model = qsp.load_sbml(DATA / "01228" / "01228-sbml-l3v2.xml")
    with pytest.raises(UnsupportedSBML, match="simulate_sbml"):
        qsp.simulate(model, None, jnp.linspace(0.0, 1.0, 3))
