"""`qsp.plot`: the figures pharmacometricians expect, each a function returning a
`matplotlib.figure.Figure` (Agg canvas, never shown; pass `ax=` to draw into an
existing axes instead, and the figure of that axes is returned).

- Populations and fits: `concentration_time` (percentile bands of a population
  `qsp.Solution` or an array, several populations overlaid from a dict), `vpc`
  (visual predictive check), `observed_vs_predicted`, `dose_response` (points and a
  fitted Hill curve, `fit_hill`, `hill`).
- Oncology: `waterfall` (best % change with RECIST -30%/+20% lines),
  `spider` (% change over time), `kaplan_meier` (product-limit curves with censoring
  ticks and Greenwood bands); helpers `percent_change`, `best_percent_change`.
- Sensitivity: `local_sensitivities` (d log y / d log p by `jax.grad` through
  `qsp.simulate`) and `tornado`.

Failed patients (`Solution.status != 0`) and non-finite values are skipped, and the
figure's title says how many were dropped. Bad input (mismatched lengths, unknown
outputs, bad thresholds) raises a `ValueError` naming the argument.

This module imports matplotlib; `import qsp` does not import it.
"""

from ._plot_oncology import (
    RECIST_COLOURS as RECIST_COLOURS,
    best_percent_change as best_percent_change,
    kaplan_meier as kaplan_meier,
    percent_change as percent_change,
    spider as spider,
    waterfall as waterfall,
)
from ._plot_pk import (
    concentration_time as concentration_time,
    dose_response as dose_response,
    fit_hill as fit_hill,
    hill as hill,
    observed_vs_predicted as observed_vs_predicted,
    vpc as vpc,
)
from ._plot_sensitivity import local_sensitivities as local_sensitivities, tornado as tornado

__all__ = [
    "RECIST_COLOURS", "best_percent_change", "concentration_time", "dose_response", "fit_hill", "hill",
    "kaplan_meier", "local_sensitivities", "observed_vs_predicted", "percent_change", "spider", "tornado",
    "vpc", "waterfall",
]
