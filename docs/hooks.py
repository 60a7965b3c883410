"""mkdocs hooks: the source tree mkdocstrings reads, and parameter tables generated
from the models' own metadata.

The package `qsp` is installed from three folders (`qsp/`, `models/` as `qsp.models`,
`vpop/` as `qsp.vpop`; setuptools `package-dir`), which griffe's static analysis
cannot map. `build/docs_src/qsp` is rebuilt when this hook loads: symbolic links to
every entry of `qsp/`, plus `models` and `vpop`, so `::: qsp.models.tce` resolves
without importing anything.

A page line `{{ parameters("qsp.models.tce:TCECRS") }}` becomes a Markdown table of
`parameter_info()` of that class (name, default, units, bounds, description, source),
so the documented values are always the code's values.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import shutil

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _shadow_tree() -> None:
    pkg = os.path.join(_ROOT, "build", "docs_src", "qsp")
    shutil.rmtree(pkg, ignore_errors=True)
    os.makedirs(pkg)
    links = {e: os.path.join(_ROOT, "qsp", e) for e in os.listdir(os.path.join(_ROOT, "qsp")) if e != "__pycache__"}
    links.update(models=os.path.join(_ROOT, "models"), vpop=os.path.join(_ROOT, "vpop"))
    for name, target in links.items():
        os.symlink(target, os.path.join(pkg, name))


_shadow_tree()

_MARK = re.compile(r"\{\{\s*parameters\(\s*\"([\w.]+):(\w+)\"\s*\)\s*\}\}")


def _num(x) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.6g}"


def _cell(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def parameter_table(module: str, cls: str) -> str:
    model = getattr(importlib.import_module(module), cls)
    rows = ["| parameter | default | units | bounds | description | source |", "|---|---|---|---|---|---|"]
    for name, info in model.parameter_info().items():
        default = info.default
        shape = getattr(info, "shape", ())
        value = f"array {tuple(shape)}" if shape else _num(default)
        lo, hi = info.bounds
        rows.append(f"| `{name}` | {value} | {_cell(info.units)} | [{_num(lo)}, {_num(hi)}] | "
                    f"{_cell(info.description)} | {_cell(info.source)} |")
    return "\n".join(rows)


def on_page_markdown(markdown, page, config, files):
    return _MARK.sub(lambda m: parameter_table(m.group(1), m.group(2)), markdown)
