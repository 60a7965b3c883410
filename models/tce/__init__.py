"""T-cell engager CRS model (Hosseini et al. 2020, mosunetuzumab) and its regimens.

- `TCECRS` (`model.py`): the 29-state model, human DLBCL defaults.
- `params`: Supplementary Table 2 loader and presets (`cyno`, `hosseini_pk`, `blinatumomab`).
- `regimens`: label, flat and step-up mosunetuzumab regimens, blinatumomab infusions.
"""

from . import params as params, regimens as regimens
from .model import STATES as STATES, TCECRS as TCECRS, solver as solver
