"""Kirouac 2017 MAPK virtual trial: 16 arms x 1000 plausible patients in one compiled call.

Checks first that the trial path (exact PK + RK4) agrees with `qsp.simulate` (adaptive
Kvaerno5, rtol 1e-9) on one patient, then times `qsp.models.mapk.simulate_trial` over
all 16 arms of the Table S10 population to day 56 (first call: compile + run; second:
run), and records the weighted response table.

    .venv/bin/python benchmarks/mapk_trial.py [--dt 0.05] [--quick]

`--quick` runs 100 patients (results `*_quick.*`, not for committing).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import qsp
from qsp.models import mapk

from _env import LoadSampler, machine_info

RESULTS = Path(__file__).parent / "results"


def check_accuracy(dt):
    m = mapk.patient(122, init="table")
    arm = "cetuximab+vemurafenib+cobimetinib"
    ref = qsp.simulate(m, mapk.arm_regimen(arm), jnp.array([0.0, 56.0]), rtol=1e-9, atol=1e-12,
                       max_steps=20000).raise_if_failed().outputs["TUMOR"][-1]
    fast = mapk.simulate_trial(m, [arm], dt=dt, save_dt=56.0).size[0, 0]
    rel = abs(float(fast) / float(ref) - 1)
    assert rel < 1e-3, rel
    return rel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dt", type=float, default=0.05)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rel = check_accuracy(args.dt)
    model, w = mapk.load_vpop("s10", init="table")
    n = 100 if args.quick else 1000
    if args.quick:
        model = jax.tree.map(lambda x: x[:n] if isinstance(x, jax.Array) and x.ndim > 0 else x, model)
        w = w[:n]
    load = LoadSampler().start()
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        res = mapk.simulate_trial(model, mapk.ARMS, dt=args.dt, save_dt=56.0)
        size = np.asarray(jax.block_until_ready(res.size))
        times.append(time.perf_counter() - t0)
    load = load.stop()
    table = {arm: vars(mapk.summarize(s, w)) for arm, s in zip(mapk.ARMS, size)}
    out = dict(
        what="mapk simulate_trial, 16 arms x Table S10 patients to day 56, one compiled call",
        n_patients=n, n_arms=len(mapk.ARMS), dt=args.dt, rk4_steps=int(round(56 / args.dt)),
        check_rel_vs_kvaerno5=rel, first_call_s=round(times[0], 2), second_call_s=round(times[1], 2),
        trajectories_per_s=round(n * len(mapk.ARMS) / times[1], 1), load=load,
        response_published_weights=table, machine=machine_info(),
    )
    stem = "mapk_trial_cpu" + ("_quick" if args.quick else "")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(out, indent=1, default=float))
    lines = [f"# {out['what']}", "", f"N = {n}, dt = {args.dt} day, first call {times[0]:.1f} s, "
             f"second call {times[1]:.1f} s ({out['trajectories_per_s']} trajectories/s), load {load}",
             "", "| arm | ORR | CR | PD | median size |", "|---|---|---|---|---|"]
    lines += [f"| {a} | {r['orr']:.4f} | {r['cr']:.4f} | {r['pd']:.4f} | {r['median_size']:.3f} |"
              for a, r in table.items()]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
