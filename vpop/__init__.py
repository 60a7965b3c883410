"""Virtual populations, digital twins and virtual trials (`qsp.vpop`).

- `Population`, `sample`, `resample_covariates`: parameter distributions (log-normal or
  normal random effects with an Omega matrix, covariate models), reproducible from a key.
"""

from ._sampling import Population as Population, resample_covariates as resample_covariates, sample as sample
from ._selection import (
    SD as SD,
    InfeasibleTargets as InfeasibleTargets,
    Mean as Mean,
    Proportion as Proportion,
    Quantile as Quantile,
    Selection as Selection,
    Weights as Weights,
    allen_selection as allen_selection,
    effective_n as effective_n,
    knn_density as knn_density,
    ks_normal as ks_normal,
    maxent_weights as maxent_weights,
    weighted_ks as weighted_ks,
)
from ._plausible import PlausibleResult as PlausibleResult, plausibility_score as plausibility_score, plausible_patients as plausible_patients
from ._trial import Arm as Arm, Exposure as Exposure, Response as Response, Toxicity as Toxicity, TrialResult as TrialResult, run_trial as run_trial
from ._twins import Twins as Twins, fit_twins as fit_twins
