"""The default NHL virtual population of the TCE CRS model.

Each virtual patient is `TCECRS` with a few parameters drawn log-normally around the
human DLBCL values of Hosseini 2020 Supp. Table 2 (and the label-tuned PK), clipped to
a plausible range. The spreads are ours unless a source is named:

| parameter | median | log-SD | range | what varies |
|---|---|---|---|---|
| `Tref` | 5e5 /mL (Table 2) | 0.5 | 1e5-2e6 (Table 2 ALL-cyno values) | baseline PB CD8 T cells |
| `Bref` | 5e5 /mL (Table 2) | 1.0 | 1e4-2e6 | baseline PB B cells (prior anti-CD20 lowers them) |
| `V_U` | 49.6 mL (Table 2) | 1.0 | 5-500 mL | tumour load |
| `kBtumorprolif` | 0.025 /d (Table 2) | 0.5 | 0.005-0.1 /d | tumour growth |
| `KT_U` | 125 (Table 2) | 0.7 | 25-625 | tumour T-cell infiltration |
| `kIL6prod` | model value | 0.5 | x/4 - x4 | IL-6 production |
| `CLbase`, `CLss`, `V1`, `V2`, `tCL_half` | model values | CV 63, 18, 31, 25, 86% | x/5 - x5 | PK IIV (EU SmPC 5.2) |

(log-SD = sqrt(log(1 + CV^2)) for the SmPC CVs.) Baselines stay steady states because
the references move with them (`Tref`, `Bref` are both the reference and the
patient's baseline). Tumour B-cell density is held at the Table 2 value
(3.25e9 /mL) whatever the PB baseline: `KB_U = 3.25e9 / Bref` (ours).

`sample(n, seed)` is reproducible: the same `(n, seed)` gives bit-identical draws.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .model import TCECRS

TUMOR_B_DENSITY = 3.25e9  # cells/mL, Table 2 DLBCL Btumor_perml


def _sd(cv: float) -> float:
    return math.sqrt(math.log(1.0 + cv * cv))


#: name -> (log-SD, lower, upper); a lower/upper that is a float < 1 with "rel" is a
#: factor of the median (see `_range`).
SPREAD = {
    "Tref": (0.5, 1e5, 2e6),
    "Bref": (1.0, 1e4, 2e6),
    "V_U": (1.0, 5.0, 500.0),
    "kBtumorprolif": (0.5, 0.005, 0.1),
    "KT_U": (0.7, 25.0, 625.0),
    "kIL6prod": (0.5, "x/4", "x4"),
    "CLbase": (_sd(0.63), "x/5", "x5"),
    "CLss": (_sd(0.18), "x/5", "x5"),
    "V1": (_sd(0.31), "x/5", "x5"),
    "V2": (_sd(0.25), "x/5", "x5"),
    "tCL_half": (_sd(0.86), "x/5", "x5"),
}


def _range(lo, hi, median):
    conv = lambda v: median / float(v[2:]) if v.startswith("x/") else median * float(v[1:])  # noqa: E731
    return (conv(lo) if isinstance(lo, str) else lo, conv(hi) if isinstance(hi, str) else hi)


def sample(n: int, seed: int = 0, model: TCECRS | None = None) -> tuple[TCECRS, pd.DataFrame]:
    """`n` virtual NHL patients from `seed`: the batched model (parameter leaves of
    shape `(n,)`) and a DataFrame of the sampled parameters (one row per patient)."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n={n!r}: expected a positive integer number of patients.")
    model = TCECRS() if model is None else model
    keys = jax.random.split(jax.random.PRNGKey(int(seed)), len(SPREAD))
    values = {}
    for key, (name, (sd, lo, hi)) in zip(keys, SPREAD.items()):
        median = float(getattr(model, name))
        lo, hi = _range(lo, hi, median)
        z = jax.random.normal(key, (int(n),), dtype=jnp.float64)
        values[name] = np.clip(median * np.exp(sd * np.asarray(z)), lo, hi)
    values["KB_U"] = TUMOR_B_DENSITY / values["Bref"]
    frame = pd.DataFrame(values)
    frame.insert(0, "patient", np.arange(int(n)))
    batched = model.replace(**{k: jnp.asarray(v) for k, v in values.items()})
    return batched, frame
