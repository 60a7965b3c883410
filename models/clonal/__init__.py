r"""Clonal-prevalence resistance model for dacomitinib + osimertinib in EGFR-mutant NSCLC
(Poels et al. 2021, Nat Commun 12:3697, doi:10.1038/s41467-021-23912-4).

- `pk`: osimertinib (+AZ5104) and dacomitinib population PK (`OsiDacoPK`), catenary
  (as coded by the authors) or standard 2-compartment dacomitinib, unbound fraction,
  covariate models and correlated log-normal IIV.
- `surfaces`: birth-rate surfaces: the published bounded logistic and our monotone
  Hill-Bliss alternative.
- `model`: the four-clone expected-value model (`ClonalModel`, an ODE with the PK),
  the authors' trapezoid closed form (`counts_trapezoid`) and `invitro` wells.
- `assays`: the in vitro tier: raw counts -> growth rates -> fitted surfaces.
- `stochastic`: tau-leaping simulation of the branching process.
- `trial`: virtual patients, the paper's schedules, relative improvement, time to
  progression (ours), the virtual trial behind `qsp trial clonal` (`cli`).
"""

from . import assays as assays, pk as pk, stochastic as stochastic, surfaces as surfaces, trial as trial
from .model import ClonalModel as ClonalModel, clone_matrix as clone_matrix, counts_trapezoid as counts_trapezoid
from .model import invitro as invitro
from .stochastic import tau_leap as tau_leap
from .pk import OsiDacoPK as OsiDacoPK, pk_on_grid as pk_on_grid, typical_pk as typical_pk
from .surfaces import CLONES as CLONES, BoundedLogistic as BoundedLogistic, HillBliss as HillBliss
from .surfaces import monotone_surface as monotone_surface, published_surface as published_surface
