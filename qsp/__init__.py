"""qsp: differentiable quantitative systems pharmacology in JAX.

The public surface: models (`ODEModel`, `param`), dosing (`Regimen`), simulation
(`simulate`, `Solution`, `Status`). Sub-packages: `qsp.models` (model library),
`qsp.vpop` (populations and trials), `qsp.nonmem` (datasets).
`qsp.plot` (figures; imports matplotlib, so it is not imported here: `from qsp import plot`).
"""

import os as _os

# XLA's multi-threaded Eigen pool on CPU intermittently wedges (all threads parked on a
# futex) when executing large vmapped while-loops: seen here twice, and reported
# upstream (PyAutoFit #1528/#1530, fixed by this flag alone). Turn it off unless the
# user asks otherwise (QSP_XLA_MULTITHREAD=1). Takes effect only if set before JAX's
# CPU backend starts, i.e. when qsp is imported before the first JAX computation.
if _os.environ.get("QSP_XLA_MULTITHREAD", "0") != "1" and "xla_cpu_multi_thread_eigen" not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()

import jax as _jax

# Stiff pharmacology needs float64 on CPU; set QSP_FLOAT32=1 for the float32 GPU path.

if _os.environ.get("QSP_FLOAT32", "0") != "1":
    _jax.config.update("jax_enable_x64", True)

from ._algebraic import AlgebraicModel as AlgebraicModel
from ._dosing import Regimen as Regimen
from ._fit import FitResult as FitResult, fit as fit
from ._model import ODEModel as ODEModel
from ._params import ParamInfo as ParamInfo, param as param, parameter_info as parameter_info
from ._posterior import sample as sample_posterior
from ._profile import Profile as Profile, profile as profile
from ._regimen_opt import Free as Free, RegimenFamily as RegimenFamily, exceeds as exceeds, fraction_exceeding as fraction_exceeding, soft_max as soft_max
from ._sbml_api import load_sbml as load_sbml, simulate_sbml as simulate_sbml
from ._petab import PetabProblem as PetabProblem, petab_problem as petab_problem
from ._rosenbrock import Rodas4 as Rodas4
from ._regimen_search import OptimizeResult as OptimizeResult, ParetoFront as ParetoFront, optimize as optimize, pareto as pareto
from ._simulate import default_solver as default_solver, simulate as simulate
from ._solution import Solution as Solution, Status as Status

__version__ = "0.1.0"
