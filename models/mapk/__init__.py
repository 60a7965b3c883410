"""MAPK-pathway model of BRAF-V600E colorectal cancer (Kirouac et al. 2017).

- `Kirouac2017`: the normalised-Hill cascade with feedback, signal delay, logistic
  tumour growth and the PK of cetuximab, vemurafenib, cobimetinib and GDC-0994.
- `load_vpop`, `load_table`, `patient`: the published virtual populations (Table S10
  and Metrum's 250-patient resample with per-patient PK).
- `regimen`, `arm_regimen`, `ARMS`, `POP_PK`, `sample_pk`: clinical schedules, trial
  arms and the published population PK.
- `classify`, `summarize`: the day-56 RECIST-like response rule.
- `derive_weights`, `TARGETS`: prevalence weights re-derived to the clinical targets.
- `invitro`: the HT-29 pERK tier (`qsp.fit` of the cascade); `viability`: CCLE viability of
  the BRAF V600E lines; `xenograft`: PDXE BRAF-mutant CRC arms; `job`: `qsp trial mapk`.
"""

from ._dosing import (
    ARMS as ARMS,
    DOSE_CMT as DOSE_CMT,
    DRUGS as DRUGS,
    MW as MW,
    POP_PK as POP_PK,
    SCHEDULES as SCHEDULES,
    arm_name as arm_name,
    arm_regimen as arm_regimen,
    dose_times as dose_times,
    parse_arm as parse_arm,
    pk_to_model as pk_to_model,
    regimen as regimen,
    sample_pk as sample_pk,
)
from ._model import H as H, INIT_MODES as INIT_MODES, Kirouac2017 as Kirouac2017
from ._vpop import (
    VARIED as VARIED,
    VPOPS as VPOPS,
    Response as Response,
    classify as classify,
    fixed_table as fixed_table,
    load_table as load_table,
    load_vpop as load_vpop,
    patient as patient,
    summarize as summarize,
)
from ._trial import TrialResult as TrialResult, pk_matrix as pk_matrix, simulate_trial as simulate_trial
from ._weights import TARGETS as TARGETS, derive_weights as derive_weights
