"""The MAPK and clonal workloads of `benchmarks/population_suite.py` (issue 8): the
parameter columns reach the model fields they name, and a bad arm is refused."""

import numpy as np
import pytest


def test_clonal_case_columns_reach_vector_fields():
    """17 columns -> 10 PK scalars, `n_init` (4,) and `mu` (3,), for one patient's row
    and for a population; the initial state is the PK at zero and the clone counts of
    `n_init` (the model's `initial`), and the regimen is one year of QD + QD."""
    from benchmarks import population_suite as ps
    from models.clonal.pk import PK_NAMES

    case = ps.clonal_case()
    P = case.params(3)
    assert P.shape == (3, 17)
    m = case.batched(P)
    assert np.asarray(m.n_init).shape == (3, 4) and np.asarray(m.mu).shape == (3, 3)
    np.testing.assert_array_equal(np.asarray(m.mu), P[:, 14:17])
    np.testing.assert_array_equal(np.asarray(getattr(m, PK_NAMES[1])), P[:, 1])
    y0 = case.y0(P)
    np.testing.assert_array_equal(y0[:, :6], 0.0)
    np.testing.assert_array_equal(y0[:, 6:], P[:, 10:14])
    # 365 osimertinib + 365 dacomitinib doses, all at the same daily times.
    assert len(case.bolus) == 730 and len({t for t, _, _ in case.bolus}) == 365
    assert case.p0().shape == (17,)


def test_mapk_case_arm_and_population():
    from benchmarks import population_suite as ps
    from models import mapk

    with pytest.raises(ValueError, match="arm='cetuximab\\+aspirin' is not a trial arm"):
        ps.mapk_case(arm="cetuximab+aspirin")
    case = ps.mapk_case()
    P = case.params(1001)  # cycles past Table S10's 1000 patients
    assert P.shape == (1001, len(mapk.VARIED))
    np.testing.assert_array_equal(P[1000], P[0])
    # The default arm's dose times contain every other arm's.
    times = {t for t, _, _ in case.bolus}
    for arm in mapk.ARMS:
        assert {float(t) for t in np.asarray(mapk.arm_regimen(arm).time)} <= times
