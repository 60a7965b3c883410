"""NONMEM-style datasets: reading, validation errors, regimens, and batched simulation
against closed-form PK (tests/pk_closed_form.py, itself checked against scipy here)."""

import io

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

import nonmem_cases as nc
import pk_closed_form as cf
from qsp import Regimen
from qsp.models import pk1cmt
from qsp.nonmem import (
    NonmemError, read_nonmem, regimens_from_nonmem, simulate_nonmem, stack_regimens, write_nonmem,
)

TIGHT = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def pk1_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("nonmem") / "pk1.csv"
    path.write_text(nc.PK1_CSV)
    return path


@pytest.fixture(scope="module")
def pk1_pred(pk1_path):
    return simulate_nonmem(pk1cmt(**nc.PK1_PARAMS), pk1_path, **TIGHT)


def _csv(tmp_path, text, name="d.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


# -- the reference itself ----------------------------------------------------------------


def _scipy_pk2(ts, CL, V1, Q, V2, KA, boluses=(), infusions=(), orals=()):
    """CP of pk2cmt's equations by scipy Radau (rtol 1e-12), integrated piecewise between
    dose events. boluses: (t, amt) into CENT; infusions: (t, amt, dur); orals: (t, F*amt)."""
    def rhs(t, y, rate):
        a = KA * y[0]
        flow = Q * (y[1] / V1 - y[2] / V2)
        return [-a, a - CL / V1 * y[1] - flow + rate, flow]

    cuts = sorted({0.0, *(b[0] for b in boluses), *(o[0] for o in orals),
                   *(i[0] for i in infusions), *(i[0] + i[2] for i in infusions), float(max(ts))})
    y, out = np.zeros(3), {}
    for a, b in zip(cuts[:-1], cuts[1:]):
        y = y + [sum(o[1] for o in orals if o[0] == a), sum(d[1] for d in boluses if d[0] == a), 0.0]
        rate = sum(i[1] / i[2] for i in infusions if i[0] <= a < i[0] + i[2])
        inside = [t for t in ts if a < t < b]
        sol = solve_ivp(rhs, (a, b), y, args=(rate,), method="Radau", rtol=1e-12, atol=1e-14,
                        t_eval=inside + [b])
        out.update(zip(inside + [b], sol.y[1] / V1))
        y = sol.y[:, -1]
    return np.array([out[t] for t in ts])


def test_closed_forms_match_scipy():
    """The closed forms the simulator is judged by agree with an independent solver
    (scipy Radau at rtol 1e-12) to relative 1e-8, for each dose kind; Q = 0 makes the
    2-compartment equations the 1-compartment model."""
    ts = [0.5, 3.0, 7.0, 15.0, 30.0]
    p2 = dict(CL=1.3, V1=9.0, Q=2.5, V2=18.0)
    doses = dict(boluses=[(0.0, 100.0), (6.0, 50.0)], infusions=[(1.0, 80.0, 10.0)], orals=[(2.5, 0.8 * 60.0)])
    ref = _scipy_pk2(ts, **p2, KA=0.9, **doses)
    mine = (cf.two_cmt_bolus(ts, [100.0, 50.0], [0.0, 6.0], **p2) + cf.two_cmt_infusion(ts, 80.0, 1.0, 10.0, **p2)
            + cf.two_cmt_oral(ts, 60.0, 2.0, **p2, KA=0.9, F=0.8, lag=0.5))
    np.testing.assert_allclose(mine, ref, rtol=1e-8)
    ref1 = _scipy_pk2(ts, CL=1.3, V1=9.0, Q=0.0, V2=1.0, KA=0.9, **doses)
    mine1 = (cf.one_cmt_bolus(ts, [100.0, 50.0], [0.0, 6.0], 1.3, 9.0) + cf.one_cmt_infusion(ts, 80.0, 1.0, 10.0, 1.3, 9.0)
             + cf.one_cmt_oral(ts, 60.0, 2.0, 1.3, 9.0, 0.9, F=0.8, lag=0.5))
    np.testing.assert_allclose(mine1, ref1, rtol=1e-8)


# -- reading and writing -------------------------------------------------------------------


def test_read_fills_nonmem_defaults(tmp_path):
    text = "# a comment line\nid,time,amt,Mdv,dv,WT\n1,0,100,.,.,70\n\n1,1,.,.,3.5,70\n1,2,0,1,.,70\n"
    df = read_nonmem(_csv(tmp_path, text))
    assert list(df.columns) == ["ID", "TIME", "AMT", "RATE", "CMT", "EVID", "II", "ADDL", "DV", "MDV", "WT"]
    # NONMEM without EVID: AMT > 0 is a dose; MDV = 1 without AMT is an other-type event.
    assert df["EVID"].tolist() == [1, 0, 2]
    assert df["MDV"].tolist() == [1, 0, 1]
    assert df["CMT"].tolist() == [1, 0, 0]  # doses default to CMT 1
    assert df["RATE"].tolist() == [0.0] * 3 and df["ADDL"].tolist() == [0] * 3
    assert np.isnan(df["DV"][0]) and df["DV"][1] == 3.5
    assert df["WT"].tolist() == [70] * 3


def test_write_then_read_round_trips(tmp_path, pk1_path):
    df = read_nonmem(pk1_path)
    out = tmp_path / "copy.csv"
    write_nonmem(df, out)
    assert "1,0.0,0.0,0.0,0,0,0.0,0,.,0,1.5" in out.read_text()
    pd.testing.assert_frame_equal(read_nonmem(out), df)


BASE = "ID,TIME,AMT,RATE,CMT,EVID,II,ADDL,SS,DV,MDV\n1,0,100,0,2,1,0,0,0,.,1\n1,2,.,.,2,0,.,.,0,5,0\n"
BAD = [
    (BASE + "1,3,.,.,2,0,.,.,0,5,0,9\n", r"row 3 \(line 4\) has 12 fields; expected 11"),
    (BASE.replace("1,0,100,", "1,0,abc,"), r"row 1 \(line 2, ID 1\), column AMT: value 'abc' is not a number"),
    (BASE.replace("1,0,100,", "1,-1,100,"), r"row 1 \(line 2, ID 1\), column TIME: value -1 is invalid; expected a finite time >= 0"),
    (BASE.replace("1,0,100,", "1,0,-5,"), r"row 1 \(line 2, ID 1\), column AMT: value -5 is negative; expected an amount >= 0"),
    (BASE.replace("1,0,100,", "1,0,0,"), r"row 1 \(line 2, ID 1\), column AMT: value 0 on a dose record \(EVID=1\); expected an amount > 0"),
    (BASE.replace("1,2,.,", "1,2,5,"), r"row 2 \(line 3, ID 1\), column AMT: value 5 on a non-dose record"),
    (BASE + "1,1,.,.,2,0,.,.,0,5,0\n", r"row 3 \(line 4, ID 1\), column TIME: value 1 is before the previous record's TIME 2"),
    (BASE + "2,0,.,.,2,0,.,.,0,5,0\n1,5,.,.,2,0,.,.,0,5,0\n", r"row 4 \(line 5, ID 1\), column ID: ID 1 reappears"),
    (BASE.replace("TIME", "T"), r"column TIME is missing; a NONMEM dataset needs columns ID, TIME"),
    (BASE.replace(",1,0,0,0,.,1", ",3,0,0,0,.,1"), r"column EVID: value 3 \(reset\) is not supported"),
    (BASE.replace(",1,0,0,0,.,1", ",7,0,0,0,.,1"), r"column EVID: value 7 is not a known EVID"),
    (BASE.replace(",1,0,0,0,.,1", ",1,24,0,1,.,1"), r"column SS: value 1 \(steady-state dosing\) is not supported"),
    (BASE.replace("1,0,100,0,", "1,0,100,-2,"), r"column RATE: value -2 \(rate or duration modelled in \$PK\) is not supported"),
    (BASE.replace(",1,0,0,0,.,1", ",1,0,2,0,.,1"), r"column ADDL: value 2 needs a positive interdose interval II"),
    (BASE.replace("1,0,100,0,2,", "1,0,100,0,1.5,"), r"column CMT: value 1.5 is not an integer"),
    (BASE.replace("ID,TIME,AMT", "ID,TIME,time"), r"columns 'TIME' and 'time' both name TIME"),
]


@pytest.mark.parametrize("text, match", BAD)
def test_bad_dataset_is_rejected_with_row_column_and_value(tmp_path, text, match):
    with pytest.raises(NonmemError, match=match):
        read_nonmem(_csv(tmp_path, text))


def test_dataframe_rows_are_numbered_from_one():
    df = pd.read_csv(io.StringIO(BASE))
    df.loc[1, "TIME"] = -3.0
    with pytest.raises(NonmemError, match=r"^row 2 \(ID 1\), column TIME: value -3 is invalid"):
        read_nonmem(df)


def test_dose_record_without_amt_column():
    df = pd.DataFrame({"ID": [1], "TIME": [0.0], "EVID": [1]})
    with pytest.raises(NonmemError, match=r"row 1 \(ID 1\): EVID=1 is a dose record but the dataset has no AMT column"):
        read_nonmem(df)


def test_unknown_cmt_is_checked_against_the_model(tmp_path):
    path = _csv(tmp_path, BASE.replace("1,0,100,0,2,", "1,0,100,0,3,"))
    read_nonmem(path)  # valid as a dataset; CMT 3 is wrong only for a 2-state model
    with pytest.raises(NonmemError, match=r"row 1 \(line 2, ID 1\), column CMT: value 3 is not a compartment "
                       r"of pk1cmt; dose records need 1..2 \(DEPOT=1, CENT=2\)"):
        regimens_from_nonmem(path, pk1cmt)


# -- regimens ---------------------------------------------------------------------------------


def test_regimens_expand_addl_rates_and_record_order(pk1_path):
    inds = regimens_from_nonmem(pk1_path, pk1cmt())
    assert [i.id for i in inds] == [1, 2, 3, 4, 5]
    r1 = inds[0].regimen.to_frame()
    assert r1["time"].tolist() == [0.0, 12.0, 24.0, 36.0] and r1["duration"].tolist() == [0.0] * 4
    r2 = inds[1].regimen.to_frame()  # 200 at rate 20 lasts 10 h; boluses at 4 and 8
    assert r2["time"].tolist() == [0.0, 4.0, 8.0] and r2["duration"].tolist() == [10.0, 0.0, 0.0]
    r4 = inds[3].regimen.to_frame()
    assert r4["time"].tolist() == [0.0, 8.0, 16.0] and r4["duration"].tolist() == [2.0] * 3
    assert inds[2].regimen.to_frame()["cmt"].tolist() == [1, 1, 1]
    # ID 5: observation, dose, observation at 6 h; EVID=2 records give no observation.
    assert inds[4].ts.tolist() == [6.0, 6.0, 7.0]
    assert inds[4].obs_after_dose.tolist() == [False, True, False]
    assert inds[3].ts.tolist() == [1.0, 2.0, 3.0, 8.0, 9.0, 10.5, 20.0, 30.0]
    assert not inds[0].obs_after_dose.any()  # implied ADDL doses come after a same-time observation


def test_batched_regimen_table_equals_regimen_stack(pk1_path):
    """simulate_nonmem pads the event table itself (fast for many IDs); it must hold the
    same events as `Regimen.stack` of the per-ID regimens."""
    inds = regimens_from_nonmem(pk1_path, pk1cmt)
    fast, ref = stack_regimens(inds), Regimen.stack([ind.regimen for ind in inds])
    assert fast.time.shape == ref.time.shape == (5, 4)

    def events(reg, i):
        t = np.asarray(reg.time[i])
        cols = [t, reg.amount[i], reg.duration[i], reg.by_rate[i], reg.resolve(pk1cmt)[i]]
        return sorted(zip(*(np.asarray(c)[np.isfinite(t)].tolist() for c in cols)))

    for i in range(5):
        assert events(fast, i) == events(ref, i)
    assert np.isinf(np.asarray(fast.time[4, 2:])).all() and (np.asarray(fast.amount[4, 2:]) == 0).all()


# -- simulation ---------------------------------------------------------------------------------


def test_simulate_nonmem_matches_closed_form(pk1_pred):
    """Issue 2, item 1 (Python API of the dataset path): every observation of IV bolus,
    infusion spanning later doses, oral with lag, repeated via ADDL/II, within 1e-6."""
    assert list(pk1_pred.columns) == ["ID", "TIME", "CP", "DEPOT", "CENT", "status"]
    nc.assert_matches(pk1_pred, nc.PK1)


def test_record_order_before_and_after_a_dose(pk1_pred):
    """ID 5: at 6 h an observation record before the dose record reports the trough,
    one after it the trough plus the dose (100 mg / V)."""
    at6 = pk1_pred[(pk1_pred["ID"] == 5) & (pk1_pred["TIME"] == 6.0)]["CP"].to_numpy()
    k, V = 1.2 / nc._V, nc._V
    trough = 100.0 / V * np.exp(-k * 6.0)
    np.testing.assert_allclose(at6, [trough, trough + 100.0 / V], rtol=1e-7)


def test_parameters_per_id_through_the_model_batch_axis(pk1_path, pk1_pred):
    """A model whose CL carries one value per ID gives what the CL column gave."""
    df = read_nonmem(pk1_path).drop(columns="CL")
    cl = jnp.array([1.5, 2.0, 0.9, 1.0, 1.2])
    pred = simulate_nonmem(pk1cmt(**nc.PK1_PARAMS).replace(CL=cl), df, **TIGHT)
    np.testing.assert_allclose(pred["CP"], pk1_pred["CP"], rtol=1e-12, atol=1e-15)


def test_failed_id_is_flagged_and_the_others_complete(pk1_path, pk1_pred):
    df = read_nonmem(pk1_path)
    df.loc[df["ID"] == 3, "CL"] = -1.0
    pred = simulate_nonmem(pk1cmt(**nc.PK1_PARAMS), df, **TIGHT)
    bad = pred["ID"] == 3
    assert (pred.loc[bad, "status"] == 3).all() and pred.loc[bad, "CP"].isna().all()
    assert (pred.loc[~bad, "status"] == 0).all()
    np.testing.assert_allclose(pred.loc[~bad, "CP"], pk1_pred.loc[~bad, "CP"], rtol=1e-12, atol=1e-15)


def test_time_varying_parameter_column_is_rejected(pk1_path):
    df = read_nonmem(pk1_path)
    df.loc[2, "CL"] = 2.0  # ID 1 had CL 1.5 on its first record
    with pytest.raises(NonmemError, match=r"row 3 \(line 5, ID 1\), column CL: value 2 differs from this "
                       r"ID's earlier CL=1.5; expected one value per ID"):
        simulate_nonmem(pk1cmt(), df)


def test_parameter_column_names_must_match_exactly(pk1_path):
    df = read_nonmem(pk1_path).rename(columns={"CL": "cl"})
    with pytest.raises(NonmemError, match="column 'cl' differs only in case from parameter 'CL' of pk1cmt"):
        simulate_nonmem(pk1cmt(), df)


def test_record_order_comes_from_the_data_not_kwargs(pk1_path):
    with pytest.raises(TypeError, match="obs_after_dose from the record order"):
        simulate_nonmem(pk1cmt(), pk1_path, obs_after_dose=True)
