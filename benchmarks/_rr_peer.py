"""libRoadRunner (LLVM-compiled SBML + SUNDIALS CVODE) as a population peer.

The model comes from `_sbml.sbml` (the jaxpr of the qsp model's `rhs`). Doses are
handled as qsp does: the horizon is cut at every dose start and stop; at a segment's
start the boluses due then are added to the state, and the infusion rates active on
it are the inputs `u<i>`. Each segment is one `simulate(times=...)` call, which
restarts CVODE (as qsp restarts diffrax). An observation at a dose time is the
state before the dose (qsp's default).

`run_population` loops over patients in one process; `run_pool` splits them over a
`multiprocessing` spawn pool (`simulate` holds the GIL, so threads would not help),
one RoadRunner per worker, built in the worker's initialiser and reported
separately as load (compile) time. Needs `libroadrunner` (the `bench` extra).
"""

from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np


def plan(ts, bolus, infusions, n_states, t0=0.0):
    """Segments for one regimen shared by all patients.

    `bolus`: list of (time, state index, amount); `infusions`: list of (start, stop,
    state index, rate). Returns a list of (ta, tb, bolus vector added at ta, input
    vector on (ta, tb), indices of `ts` owned by the segment (ta < t <= tb))."""
    ts = np.asarray(ts, dtype=float)
    t_end = float(ts[-1])
    cuts = {float(t0), t_end}
    cuts |= {float(t) for t, _, _ in bolus if t <= t_end}
    for a, b, _, _ in infusions:
        cuts |= {min(float(a), t_end), min(float(b), t_end)}
    cuts = sorted(cuts)
    segs = []
    for ta, tb in zip(cuts[:-1], cuts[1:]):
        add = np.zeros(n_states)
        for t, i, amt in bolus:
            if t == ta:
                add[i] += amt
        u = np.zeros(n_states)
        for a, b, i, rate in infusions:
            if a <= ta and tb <= b:
                u[i] += rate
        own = np.flatnonzero((ts > ta) & (ts <= tb))
        segs.append((ta, tb, add, u, own))
    return segs


def _runner(sbml: str, rtol: float, atol: float, n_states: int):
    import roadrunner

    r = roadrunner.RoadRunner(sbml)
    r.integrator.relative_tolerance = rtol
    r.integrator.absolute_tolerance = atol
    r.integrator.maximum_num_steps = 100000
    ids = [f"s{i}" for i in range(n_states)]
    r.timeCourseSelections = ["time"] + ids
    return r


def simulate_patients(r, params, y0, segs, n_ts, n_states):
    """States at the save times, shape (n_patients, n_ts, n_states)."""
    sid = [f"s{i}" for i in range(n_states)]
    uid = [f"u{i}" for i in range(n_states)]
    pid = [f"p{j}" for j in range(params.shape[1])]
    out = np.empty((params.shape[0], n_ts, n_states))
    for k in range(params.shape[0]):
        y = np.array(y0[k], dtype=float)
        out[k, :] = y  # save times at t0 report the initial state
        r.setValues(pid, params[k].tolist())
        for ta, tb, add, u, own in segs:
            y = y + add
            if tb <= ta:
                continue
            r.setValues(sid + uid, np.concatenate([y, u]).tolist())
            grid = np.unique(np.concatenate([[ta], _TS[own], [tb]]))
            res = np.asarray(r.simulate(times=grid.tolist()))
            ys = res[:, 1:]
            if own.size:
                out[k, own] = ys[np.searchsorted(grid, _TS[own])]
            y = ys[-1]
    return out


_TS = None
_W = {}


def _init(sbml, rtol, atol, n_states, ts, segs):
    global _TS
    _TS = np.asarray(ts, dtype=float)
    t = time.perf_counter()
    _W["r"] = _runner(sbml, rtol, atol, n_states)
    _W["segs"], _W["n"] = segs, n_states
    _W["load_s"] = time.perf_counter() - t


def _work(args):
    params, y0 = args
    return simulate_patients(_W["r"], params, y0, _W["segs"], _TS.shape[0], _W["n"])


def _load_time(_):
    return _W["load_s"]


class Population:
    """One process: build once (`load_s`), then `run(params, y0)` any number of times."""

    def __init__(self, sbml, ts, segs, n_states, rtol, atol):
        _init(sbml, rtol, atol, n_states, ts, segs)
        self.load_s = _W["load_s"]

    def run(self, params, y0):
        return _work((np.asarray(params), np.asarray(y0)))


class Pool:
    """`processes` spawned workers, each with its own RoadRunner (load time `load_s`,
    the slowest worker's); `run` splits the patients into one contiguous block each."""

    def __init__(self, sbml, ts, segs, n_states, rtol, atol, processes=2):
        ctx = mp.get_context("spawn")
        self.processes = processes
        self.pool = ctx.Pool(processes, initializer=_init, initargs=(sbml, rtol, atol, n_states, ts, segs))
        self.load_s = max(self.pool.map(_load_time, range(processes), chunksize=1))

    def run(self, params, y0):
        parts = np.array_split(np.arange(len(params)), self.processes)
        res = self.pool.map(_work, [(params[p], y0[p]) for p in parts], chunksize=1)
        return np.concatenate(res)

    def close(self):
        self.pool.close()
        self.pool.join()
