"""Virtual populations, digital twins and virtual trials (`qsp.vpop`).

Everything works on any `qsp.ODEModel`; a population is the model with parameter
leaves of shape `(n,)`, which `qsp.simulate` runs as a batch.

- Populations (`_sampling`): `Population` (log-normal or normal random effects with an
  Omega matrix, covariate models), `sample`, `resample_covariates`; reproducible from a
  `jax.random` key.
- Plausible patients (`_plausible`): `plausible_patients` (sample, then move rejected
  candidates into the output ranges with gradients of `plausibility_score`, batched;
  reports simulations per accepted patient).
- Selection (`_selection`): `maxent_weights` (maximum-entropy prevalence weights to
  `Mean`/`SD`/`Quantile`/`Proportion` targets; effective N, max weight, per-marginal KS;
  `InfeasibleTargets` when out of reach) and `allen_selection` (Allen et al. 2016
  probability of inclusion, best of 100 and mean goodness of fit).
- Digital twins (`_twins`): `fit_twins` (per-patient MAP with the population prior and
  Laplace intervals, one batched call, from a NONMEM-style dataset).
- Trials (`_trial`): `run_trial` (arms x population -> `Exposure`, `Response` (RECIST),
  `Toxicity` endpoints; chunked, resumable, multi-device), `TrialResult` (tidy table,
  `summary()` with bootstrap intervals, Kaplan-Meier, xarray trajectories). The endpoint
  functions themselves are in `qsp.endpoints`.
"""

from ._plausible import (
    PlausibleResult as PlausibleResult,
    plausibility_score as plausibility_score,
    plausible_patients as plausible_patients,
)
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
from ._trial import (
    Arm as Arm,
    Exposure as Exposure,
    Response as Response,
    Toxicity as Toxicity,
    TrialResult as TrialResult,
    run_trial as run_trial,
)
from ._twins import Twins as Twins, fit_twins as fit_twins
