"""The `qsp` command: `qsp models` and `qsp simulate` (closed-form PK through the CLI,
exit codes and one-line errors). Runs in-process through `qsp.cli.main` so JAX is
imported once; one subprocess test checks the real exit code."""

import io
import json
import re
import subprocess
import sys

import pandas as pd
import pytest

import nonmem_cases as nc
from qsp.cli import main
from qsp.models import pk1cmt

TIGHT = ["--rtol", "1e-10", "--atol", "1e-12"]


def _params(d):
    return ["--param", *(f"{k}={v}" for k, v in d.items())]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "pk1.csv").write_text(nc.PK1_CSV)
    (d / "pk2.csv").write_text(nc.PK2_CSV)
    return d


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- qsp models ---------------------------------------------------------------------------------


def test_models_lists_pk1cmt_with_parameters_and_units(capsys):
    code, out, _ = _run(capsys, "models")
    assert code == 0
    block = out.split("pk1cmt:", 1)[1].split("\n\n", 1)[0]
    assert "states (CMT): DEPOT=1, CENT=2" in block
    assert "outputs: CP, DEPOT, CENT" in block
    for name, info in pk1cmt.parameter_info().items():
        assert f"{name} = {info.default} {info.units}" in block
    code, out, _ = _run(capsys, "models", "pk1cmt", "--json")
    (desc,) = json.loads(out)
    assert {k: (p["value"], p["units"]) for k, p in desc["parameters"].items()} == {
        "CL": (1.0, "L/h"), "V": (10.0, "L"), "KA": (1.0, "1/h"), "F1": (1.0, "1"), "ALAG1": (0.0, "h")}


# -- qsp simulate: closed-form PK ----------------------------------------------------------------


def test_simulate_pk1cmt_matches_closed_form(capsys, data):
    """Issue 2, item 1 via `qsp simulate`: 1-compartment IV bolus, infusion spanning
    later doses, oral with lag, repeated via ADDL/II: relative error < 1e-6 everywhere."""
    code, out, err = _run(capsys, "simulate", "pk1cmt", "--data", data / "pk1.csv", *_params(nc.PK1_PARAMS), *TIGHT)
    assert code == 0, err
    pred = pd.read_csv(io.StringIO(out))
    assert list(pred.columns) == ["ID", "TIME", "CP", "DEPOT", "CENT", "status"]
    nc.assert_matches(pred, nc.PK1)


def test_simulate_pk2cmt_matches_closed_form(capsys, data, tmp_path):
    """The same for the 2-compartment model (macro-constant closed forms), with --out."""
    out_path = tmp_path / "pred.csv"
    code, out, err = _run(capsys, "simulate", "pk2cmt", "--data", data / "pk2.csv", *_params(nc.PK2_PARAMS),
                          *TIGHT, "--out", out_path)
    assert code == 0, err
    assert out == ""
    pred = pd.read_csv(out_path)
    assert list(pred.columns) == ["ID", "TIME", "CP", "DEPOT", "CENT", "PERIPH", "status"]
    nc.assert_matches(pred, nc.PK2)


def test_simulate_failed_id_exits_1_and_says_why(capsys, data, tmp_path):
    bad = tmp_path / "bad_cl.csv"
    bad.write_text(nc.PK1_CSV.replace("\n3,0.0,100.0,0.0,1,1,24.0,2,.,1,0.9\n", "\n3,0.0,100.0,0.0,1,1,24.0,2,.,1,-1\n"))
    code, out, err = _run(capsys, "simulate", "pk1cmt", "--data", bad, *_params(nc.PK1_PARAMS), *TIGHT)
    assert code == 1
    assert err.strip() == "qsp simulate: warning: ID 3: a parameter is NaN, infinite or outside its declared bounds"
    pred = pd.read_csv(io.StringIO(out))
    assert pred.loc[pred["ID"] == 3, "CP"].isna().all() and (pred.loc[pred["ID"] != 3, "status"] == 0).all()


# -- qsp simulate: user errors ---------------------------------------------------------------------

PK1_HEAD = "ID,TIME,AMT,RATE,CMT,EVID,II,ADDL,DV,MDV\n1,0,100,0,2,1,0,0,.,1\n"
ERRORS = [
    (["nosuch"], None, r"unknown model 'nosuch'; built-in models: .*pk1cmt"),
    (["pk1cmt", "--param", "CLX=2"], None, r"--param 'CLX=2': pk1cmt has no parameter 'CLX'; parameters: CL, V, KA"),
    (["pk1cmt", "--param", "CL:2"], None, r"--param 'CL:2': expected NAME=VALUE"),
    (["pk1cmt", "--param", "CL=fast"], None, r"--param 'CL=fast': 'fast' is not a number"),
    (["pk1cmt", "--param", "CL=-1"], None, r"parameter CL=-1 of pk1cmt is invalid; expected a number within bounds \[0, inf\]"),
    (["pk1cmt", "--data", "missing.csv"], "skip", r"--data missing.csv: no such file"),
    (["pk1cmt"], PK1_HEAD + "1,1,.,.,2,0,.,.,.\n", r"row 2 \(line 3\) has 9 fields; expected 10"),
    (["pk1cmt"], PK1_HEAD + "1,x,.,.,2,0,.,.,.,0\n", r"row 2 \(line 3, ID 1\), column TIME: value 'x' is not a number"),
    (["pk1cmt"], PK1_HEAD.replace("TIME", "HOURS"), r"column TIME is missing"),
    (["pk1cmt"], PK1_HEAD + "1,2,.,.,2,0,.,.,.,0\n1,1,.,.,2,0,.,.,.,0\n", r"row 3 \(line 4, ID 1\), column TIME: value 1 is before"),
    (["pk1cmt"], PK1_HEAD.replace(",100,0,2,", ",100,0,5,"), r"row 1 \(line 2, ID 1\), column CMT: value 5 is not a compartment of pk1cmt"),
    (["pk1cmt"], PK1_HEAD.replace(",100,0,2,", ",-100,0,2,"), r"column AMT: value -100 is negative"),
]


@pytest.mark.parametrize("args, text, match", ERRORS)
def test_simulate_user_errors_are_one_line_exit_2(capsys, tmp_path, monkeypatch, args, text, match):
    monkeypatch.chdir(tmp_path)
    if "--data" not in args:
        (tmp_path / "events.csv").write_text(text if text is not None else PK1_HEAD + "1,1,.,.,2,0,.,.,.,0\n")
        args = [*args, "--data", "events.csv"]
    code, out, err = _run(capsys, "simulate", *args)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qsp simulate: error: "), err
    assert re.search(match, lines[0]), lines[0]


def test_exit_status_of_the_real_command(tmp_path):
    """One subprocess: the installed entry point's exit status and a traceback-free error."""
    (tmp_path / "e.csv").write_text(PK1_HEAD)
    proc = subprocess.run([sys.executable, "-m", "qsp", "simulate", "pk1cmt", "--data", "e.csv", "--param", "V"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "qsp simulate: error: --param 'V': expected NAME=VALUE, e.g. CL=1.5."
    assert "Traceback" not in proc.stderr


def test_trial_clonal_is_wired_into_qsp_trial(tmp_path):
    """`qsp trial clonal` reaches models/clonal/cli.py through the shared `qsp trial`."""
    from qsp.cli import main

    rc = main(["trial", "clonal", "--n", "3", "--weeks", "1", "--schedules",
               "daco30QD+osi40BID,daco15QD+osi80QD", "--out", str(tmp_path)])
    assert rc == 0
    import pandas as pd

    summary = pd.read_csv(tmp_path / "summary.csv")
    assert list(summary["schedule"]) == ["daco30QD+osi40BID", "daco15QD+osi80QD"]
    assert (tmp_path / "waterfall.png").exists()
