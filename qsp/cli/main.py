"""`qsp` with no command: the main job on built-in defaults.

Until the CRS virtual trial lands, the main job simulates the built-in `pk2cmt` model
under a repeated oral regimen and writes the concentration profile.
"""

from __future__ import annotations

import os


def add_parser(sub):
    p = sub.add_parser("main", help="the main job on built-in defaults (what `qsp` alone runs)")
    p.add_argument("--out", default="qsp-out", help="output directory (default: qsp-out)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import jax.numpy as jnp

    import qsp
    from qsp.models import pk2cmt

    os.makedirs(args.out, exist_ok=True)
    regimen = qsp.Regimen.bolus(amount=100.0, time=0.0, cmt="DEPOT", ii=12.0, addl=13)
    sol = qsp.simulate(pk2cmt(), regimen, ts=jnp.linspace(0.0, 168.0, 337)).raise_if_failed()
    path = os.path.join(args.out, "pk2cmt_profile.csv")
    sol.to_frame().to_csv(path, index=False)
    cp = sol.outputs["CP"]
    print(f"pk2cmt, 100 mg q12h oral x14: Cmax {float(cp.max()):.3f} mg/L, "
          f"C(168 h) {float(cp[-1]):.3f} mg/L, {int(sol.num_steps)} solver steps -> {path}")
    return 0
