"""qsp: differentiable quantitative systems pharmacology in JAX.

The public surface: models (`ODEModel`, `param`), dosing (`Regimen`), simulation
(`simulate`, `Solution`, `Status`). Sub-packages: `qsp.models` (model library),
`qsp.vpop` (populations and trials), `qsp.nonmem` (datasets).
"""

import jax as _jax

# Stiff pharmacology needs float64 on CPU; set QSP_FLOAT32=1 for the float32 GPU path.
import os as _os

if _os.environ.get("QSP_FLOAT32", "0") != "1":
    _jax.config.update("jax_enable_x64", True)

from ._algebraic import AlgebraicModel as AlgebraicModel
from ._dosing import Regimen as Regimen
from ._fit import FitResult as FitResult, fit as fit
from ._model import ODEModel as ODEModel
from ._params import ParamInfo as ParamInfo, param as param, parameter_info as parameter_info
from ._posterior import sample as sample_posterior
from ._profile import Profile as Profile, profile as profile
from ._simulate import default_solver as default_solver, simulate as simulate
from ._solution import Solution as Solution, Status as Status

__version__ = "0.1.0"
