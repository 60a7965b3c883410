"""`qsp models`: list built-in models with parameters, states and outputs."""

from __future__ import annotations

import json


def add_parser(sub):
    p = sub.add_parser("models", help="list built-in models, parameters, states and outputs")
    p.add_argument("name", nargs="?", help="show one model only")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)
    return p


def describe(name: str) -> dict:
    import jax.numpy as jnp
    import numpy as np

    import qsp.models as lib

    cls = lib.get(name)
    model = cls()
    y0 = jnp.asarray(model.initial(), dtype=float)
    outputs = list(model.outputs(0.0, y0))
    params = {}
    for pname, info in cls.parameter_info().items():
        value = np.asarray(info.default)
        params[pname] = {
            "value": value.tolist(),
            "units": info.units,
            "bounds": list(info.bounds),
            "description": info.description,
            "source": info.source,
        }
    doc = (cls.__doc__ or "").strip().splitlines()
    return {
        "name": name,
        "summary": doc[0] if doc else "",
        "time_unit": cls.time_unit,
        "states": list(cls.states),
        "outputs": outputs,
        "parameters": params,
    }


def run(args) -> int:
    import qsp.models as lib

    names = [args.name] if args.name else sorted(lib.BUILTINS)
    infos = [describe(n) for n in names]
    if args.json:
        print(json.dumps(infos, indent=2, default=str))
        return 0
    for info in infos:
        print(f"{info['name']}: {info['summary']}  (time in {info['time_unit']})")
        states = ", ".join(f"{s}={i + 1}" for i, s in enumerate(info["states"]))
        print(f"  states (CMT): {states}")
        print(f"  outputs: {', '.join(info['outputs'])}")
        print("  parameters:")
        for pname, p in info["parameters"].items():
            units = f" {p['units']}" if p["units"] else ""
            desc = f"  {p['description']}" if p["description"] else ""
            print(f"    {pname} = {p['value']}{units}{desc}")
        print()
    return 0
