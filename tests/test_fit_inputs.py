"""Bad input to `qsp.fit` fails early with a message naming the field, the value and
what was expected (issue 3, item 8). No compilation happens before these checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import qsp
from qsp._algebraic import Emax
from qsp.models import pk1cmt


def emax_data(C=(0.0, 1.0, 10.0)):
    ids = [f"w{i}" for i in range(len(C))]
    meas = pd.DataFrame(dict(observableId="E", simulationConditionId=ids, time=0.0,
                             measurement=[1.0, 0.6, 0.2]))
    cond = pd.DataFrame(dict(conditionId=ids, C=list(C)))
    return meas, cond


def test_unknown_observable():
    meas, cond = emax_data()
    meas.loc[1, "observableId"] = "viability"
    with pytest.raises(ValueError, match=r"row 1: observableId='viability' is not an output of Emax; expected one of \['E'\]"):
        qsp.fit(Emax(), meas, cond, free=["EC50"])


def test_negative_concentration():
    meas, cond = emax_data(C=(0.0, -1.0, 10.0))
    with pytest.raises(ValueError, match=r"condition 'w1': C=-1 is outside the bounds \[0, inf\].*cannot be negative"):
        qsp.fit(Emax(), meas, cond, free=["EC50"])


def test_negative_initial_state():
    meas = pd.DataFrame(dict(observableId="CP", simulationConditionId="a", time=[1.0], measurement=[1.0]))
    cond = pd.DataFrame(dict(conditionId=["a"], CENT=[-5.0]))
    with pytest.raises(ValueError, match=r"condition 'a': initial state CENT=-5 is negative"):
        qsp.fit(pk1cmt(), meas, cond, free=["CL"])


def test_experiment_without_data():
    meas, cond = emax_data()
    cond = pd.concat([cond, pd.DataFrame(dict(conditionId=["w9"], C=[3.0]))])
    with pytest.raises(ValueError, match=r"condition 'w9' of the condition table has no measurements"):
        qsp.fit(Emax(), meas, cond, free=["EC50"])
    meas = pd.DataFrame(dict(observableId="CP", simulationConditionId="a", time=[1.0], measurement=[1.0]))
    with pytest.raises(ValueError, match=r"regimens has condition 'b', which has no measurements"):
        qsp.fit(pk1cmt(), meas, free=["CL"], regimens={"b": qsp.Regimen.bolus(1.0)})


def test_bounds_lower_above_upper():
    meas, cond = emax_data()
    with pytest.raises(ValueError, match=r"bounds of parameter EC50: lower=2 must be below upper=1"):
        qsp.fit(Emax(), meas, cond, free=["EC50"], bounds={"EC50": (2.0, 1.0)})
    with pytest.raises(ValueError, match=r"lower bound must not exceed upper bound"):
        qsp.param(1.0, bounds=(2.0, 1.0))


def test_other_errors():
    meas, cond = emax_data()
    with pytest.raises(ValueError, match=r"free parameter 'ec50' is not a parameter of Emax"):
        qsp.fit(Emax(), meas, cond, free=["ec50"])
    with pytest.raises(ValueError, match=r"error='gaussian' for observable 'E' is not known"):
        qsp.fit(Emax(), meas, cond, free=["EC50"], error="gaussian")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['measurement'\]"):
        qsp.fit(Emax(), meas.drop(columns="measurement"), cond, free=["EC50"])
    with pytest.raises(ValueError, match=r"row 2: measurement=-0.5 of 'E' must be > 0"):
        bad = meas.copy()
        bad.loc[2, "measurement"] = -0.5
        qsp.fit(Emax(), bad, cond, free=["EC50"], error="lognormal")
    with pytest.raises(ValueError, match=r"initial value EC50=0 is not strictly inside its bounds \[0, inf\]"):
        qsp.fit(Emax(EC50=0.0), meas, cond, free=["EC50"])
    with pytest.raises(ValueError, match=r"starts=0; expected an integer >= 1"):
        qsp.fit(Emax(), meas, cond, free=["EC50"], starts=0)
    with pytest.raises(ValueError, match=r"optimizer='lm' cannot be used: censored"):
        m = meas.assign(lloq=0.5)
        qsp.fit(Emax(), m, cond, free=["EC50"], optimizer="lm")
    ode = pd.DataFrame(dict(observableId="CP", simulationConditionId="a", time=[-1.0], measurement=[1.0]))
    with pytest.raises(ValueError, match=r"row 0: time=-1.0 is invalid; expected a finite number >= 0"):
        qsp.fit(pk1cmt(), ode, free=["CL"])
    with pytest.raises(ValueError, match=r"column 'Kd' is neither a parameter nor a state of Emax"):
        qsp.fit(Emax(), meas, cond.assign(Kd=1.0), free=["EC50"])
    with pytest.raises(ValueError, match=r"'w1' is not in the condition table"):
        qsp.fit(Emax(), meas, cond.iloc[[0, 2]], free=["EC50"])
