"""Virtual populations, digital twins and virtual trials (`qsp.vpop`).

- `Population`, `sample`, `resample_covariates`: parameter distributions (log-normal or
  normal random effects with an Omega matrix, covariate models), reproducible from a key.
"""

from ._sampling import Population as Population, resample_covariates as resample_covariates, sample as sample
