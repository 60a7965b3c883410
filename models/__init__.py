"""The qsp model library (`qsp.models`).

Built-in models are listed in `BUILTINS` as `name -> "module:Class"` and imported
lazily, so `qsp models` and `qsp simulate` do not import every model to run one.
"""

from __future__ import annotations

import importlib

from . import blocks as blocks, pk as pk
from .pk import pk1cmt as pk1cmt, pk2cmt as pk2cmt

#: Built-in models by CLI name. Add a line when a model lands.
BUILTINS: dict[str, str] = {
    "pk1cmt": "qsp.models.pk:pk1cmt",
    "pk2cmt": "qsp.models.pk:pk2cmt",
    "tgi": "qsp.models.tgi:SimeoniTGI",
    "mapk": "qsp.models.mapk:Kirouac2017",
    "clonal": "qsp.models.clonal:ClonalModel",
    "osidaco_pk": "qsp.models.clonal:OsiDacoPK",
    "tce_crs": "qsp.models.tce:TCECRS",
    "vandepas": "qsp.models.vandepas:vandepas",
}


def get(name: str):
    """The model class registered under `name` (see `BUILTINS`)."""
    if name not in BUILTINS:
        raise KeyError(f"unknown model {name!r}; built-in models: {', '.join(sorted(BUILTINS))}.")
    module, cls = BUILTINS[name].split(":")
    return getattr(importlib.import_module(module), cls)
