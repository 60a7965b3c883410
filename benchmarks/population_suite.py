"""Population simulation, qsp against its peers in one run: pk2cmt, CRS, MAPK, clonal.

```bash
.venv/bin/python benchmarks/population_suite.py --workload crs --n 100,1000
.venv/bin/python benchmarks/population_suite.py --workload pk2cmt --n 100,1000,10000
.venv/bin/python benchmarks/population_suite.py --workload mapk --n 100,1000 --chunk 64
.venv/bin/python benchmarks/population_suite.py --workload clonal --n 100,1000 --chunk 64
```

Workloads (same tolerances for every method, rtol 1e-6 / atol 1e-9, float64):

- `pk2cmt`: `benchmarks/_pk2cmt_peers.Workload` (28 oral doses q12h, CP every 4 h,
  30 % CV on CL, V1, Q, V2, KA).
- `crs`: `models.tce.TCECRS` (Hosseini 2020, 29 states, stiff), the label step-up
  1/2/60 mg on days 0/7/14 (4-h infusions) and 60 mg on day 21 (2 h), each dose also
  adding 1 to the injection state; 28 days; saves dense after each dose, every 12 h
  elsewhere; virtual patients from `models.tce.population.sample` (11 parameters).
- `mapk`: `models.mapk.Kirouac2017` (Kirouac 2017, 14 states), one arm of the 16-arm
  trial (default all four drugs: the union of every arm's dose events, 112 dosing
  segments in 56 days; `--arm` for another, see `mapk_case`), Table S10 patients, daily saves.
- `clonal`: `models.clonal.ClonalModel` (Poels 2021, PK + four clones, 10 states), one
  year of once-daily osimertinib + dacomitinib (365 segments; `--schedule`), patients
  from `clonal.trial.sample_patients` (17 columns), daily saves.

Methods: `qsp` (`qsp.simulate`, the case's solver: Rodas4 for CRS (`models.tce.solver`),
Tsit5 for pk2cmt, the model's own default for MAPK and clonal, which is `qsp.Rodas4` since
2026-12-02 (`Kirouac2017.default_solver`, `ClonalModel.default_solver`; before, qsp's
generic Kvaerno5 + Chord)); `qsp_kvaerno5` (the same with `qsp.default_solver`,
Kvaerno5 + Chord at the step tolerances: what `qsp` was for MAPK and clonal before, in
their default list so the two solvers stay timed in one run); `qsp_rodas4` (the same with
`qsp.Rodas4()`; for mapk and clonal now identical to `qsp`); `qsp_allsaves` (the same
with every dosing segment saving at every save time, as `qsp.simulate` did before the
save window, for the record); `diffrax_vmap`
(a hand-written `jit(vmap)` of a `lax.scan` over the dosing segments, the same
solver, saving each segment's own save times); `scipy_lsoda`, `scipy_bdf` (a
`solve_ivp` loop over patients and segments with the jitted JAX right-hand side and
its `jacfwd` Jacobian); `roadrunner_1p`, `roadrunner_2p` (libRoadRunner CVODE from
SBML written from the jaxpr, one process and a 2-process spawn pool).

Protocol: every method's outputs on the first `--check-n` patients are compared with
scipy LSODA at rtol 1e-10 / atol 1e-12 (max over patients and outputs of
|a - ref| / max_t |ref|, per patient and output) and must be below 1e-3, or nothing is
timed. Compile (load) time is reported apart from run time; repeats are interleaved
across methods; scipy and, above `--budget-s`, any method are timed on a prefix and
scaled (`extrapolated`); peak RSS per cell (`_env.PeakMemory`); load sampled
throughout (`_env.LoadSampler`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import _env

RESULTS = Path(__file__).resolve().parent / "results"
CHECK_THRESHOLD = 1e-3


# -- workloads ------------------------------------------------------------------------------


class Case:
    """A model, its population parameters, one regimen and the save times."""

    def __init__(self, name, model, names, pop, regimen, ts, solver, outputs, rtol=1e-6, atol=1e-9,
                 fields=None):
        import jax
        import jax.numpy as jnp

        self.name, self.model, self.names, self._pop = name, model, list(names), pop
        self._fields = fields  # optional p -> {field: value}, for vector-valued fields (clonal)
        self.regimen, self.ts = regimen, np.asarray(ts, dtype=float)
        self.solver, self.outputs, self.rtol, self.atol = solver, outputs, rtol, atol
        self.n_states = model.n_states
        self.py_rhs = None  # optional (rhs, jac) in plain Python for the scipy loop
        t = np.asarray(regimen.time)
        dur = np.asarray(regimen.duration)
        amt = np.asarray(regimen.amount)
        cidx = np.asarray(regimen.resolve(type(model)))
        self.bolus = [(float(t[i]), int(cidx[i]), float(amt[i])) for i in range(len(t)) if dur[i] == 0]
        self.infusions = [(float(t[i]), float(t[i] + dur[i]), int(cidx[i]), float(amt[i] / dur[i]))
                          for i in range(len(t)) if dur[i] > 0]

        def out_fn(p, ys):
            m = model.replace(**self.fields(p))
            o = jax.vmap(m.outputs)(jnp.asarray(self.ts), ys)
            return jnp.stack([jnp.asarray(o[k], dtype=float) for k in outputs], axis=-1)

        self._out = jax.jit(jax.vmap(out_fn))

    def params(self, n):
        return self._pop(n)  # (n, len(names)) float array

    def fields(self, p):
        """Model fields from parameter columns: `p` is one patient's row `(len(names),)`
        or a population `(n, len(names))` (fields then carry a leading patient axis).
        By default column j is the scalar field `names[j]`; a case may map several
        columns to one vector field (`fields=` in the constructor)."""
        if self._fields is not None:
            return self._fields(p)
        return {k: p[..., j] for j, k in enumerate(self.names)}

    def p0(self):
        """The model's own values as one parameter row (the SBML writer's defaults)."""
        if self._fields is None:
            return np.asarray([float(np.asarray(getattr(self.model, k))) for k in self.names])
        return np.asarray(self._pop(1)[0], dtype=float)  # patient 0: overwritten per patient anyway

    def batched(self, p):
        import jax.numpy as jnp

        return self.model.replace(**self.fields(jnp.asarray(p)))

    def y0(self, p):
        import jax

        return np.asarray(jax.vmap(lambda q: self.model.replace(**self.fields(q)).initial())(p))

    def reported(self, p, states):
        """(n, n_ts, n_outputs) reported outputs from states (n, n_ts, n_states)."""
        return np.asarray(self._out(np.asarray(p), np.asarray(states)))


def pk2cmt_case(rtol=1e-6, atol=1e-9):
    import diffrax as dfx

    import qsp
    from benchmarks._pk2cmt_peers import PARAMS, Workload
    from models.pk import pk2cmt

    w = Workload()
    reg = qsp.Regimen.bolus(w.amount, time=w.dose_times(), cmt="DEPOT")

    def pop(n):
        d = w.population(n)
        return np.stack([d[k] for k in PARAMS], axis=1)

    case = Case("pk2cmt", pk2cmt(), PARAMS, pop, reg, w.times(), dfx.Tsit5(), ("CP",), rtol, atol)

    def rhs(t, y, p, u):
        CL, V1, Q, V2, KA = p
        a = KA * y[0]
        q = Q * (y[1] / V1 - y[2] / V2)
        return np.array([-a + u[0], a - CL / V1 * y[1] - q + u[1], q + u[2]])

    def jac(t, y, p, u):
        CL, V1, Q, V2, KA = p
        return np.array([[-KA, 0.0, 0.0], [KA, -CL / V1 - Q / V1, Q / V2], [0.0, Q / V1, -Q / V2]])

    case.py_rhs = (rhs, jac)
    return case


def crs_ts():
    hours = np.array([0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 18, 24, 36, 48]) / 24.0
    pts = [d + hours for d in (0.0, 7.0, 14.0, 21.0)] + [np.arange(0.0, 28.0 + 1e-9, 0.5)]
    return np.unique(np.round(np.concatenate(pts), 10))


def crs_case(rtol=1e-6, atol=1e-9):
    from models.tce import TCECRS, solver
    from models.tce import regimens as R
    from models.tce.population import SPREAD, sample

    names = list(SPREAD) + ["KB_U"]

    def pop(n):
        m, _ = sample(int(n), seed=0)
        return np.stack([np.asarray(getattr(m, k), dtype=float) for k in names], axis=1)

    return Case("crs", TCECRS(), names, pop, R.label(cycles=2), crs_ts(), solver(rtol, atol),
                ("IL6", "C_drug", "B_pb_rel"), rtol, atol)


#: The MAPK arm timed by default: all four drugs. Its dose events (vemurafenib twice
#: daily, cobimetinib and GDC-0994 daily 21 days on / 7 off, cetuximab weekly) are the
#: union of every other arm's, so it has the most dosing segments (112 in 56 days) and
#: every PK sub-system active: the costliest of the 16 arms per patient for every
#: method (a single-drug arm solves a subset of its segments).
MAPK_ARM = "cetuximab+vemurafenib+cobimetinib+gdc0994"


def mapk_case(rtol=1e-6, atol=1e-9, arm=MAPK_ARM):
    """Kirouac 2017 MAPK model, one arm of its 16-arm trial (`models.mapk.ARMS`).

    One case is one regimen (every method here simulates one regimen shared by the
    population), so the per-method comparison uses one representative arm, `MAPK_ARM`
    by default (see its comment) and any other with `--arm`. The 16-arm trial's cost is
    at most 16 times this arm's; the trial's own fast path (`mapk.simulate_trial`,
    exact PK + fixed-step RK4 over all arms in one call) is timed by `mapk_trial.py`.
    Looping the 16 arms through every peer would cost 16x the scipy and RoadRunner time
    on a 2-core machine shared by three engineers for no new information per method.

    Population: the Table S10 plausible patients in order (`mapk.load_table("s10")`,
    16 varied parameters, typical PK; cycled past 1000), Table S10 initial values
    (`init="table"`, as `mapk_trial.py` and Metrum's runs). Saves daily to day 56;
    outputs tumour size, ERK activity and the cobimetinib concentration.
    """
    from models import mapk

    if arm not in mapk.ARMS:
        raise ValueError(f"mapk arm={arm!r} is not a trial arm; expected one of {', '.join(mapk.ARMS)}.")
    names = list(mapk.VARIED)
    table = mapk.load_table("s10")

    def pop(n):
        rows = np.arange(int(n)) % len(table)
        return table[names].to_numpy(dtype=float)[rows]

    model = mapk.Kirouac2017(init="table")
    # The solver `qsp.simulate` picks for this model when given none (Rodas4).
    return Case(f"mapk[{arm}]", model, names, pop, mapk.arm_regimen(arm, 56.0), np.arange(0.0, 57.0),
                type(model).default_solver(rtol, atol), ("TUMOR", "ERK", "C_cobimetinib"), rtol, atol)


#: The clonal schedule timed by default: osimertinib 80 mg + dacomitinib 30 mg, both
#: once daily (one of the paper's main comparison, `models.clonal.trial.MAIN`).
CLONAL_SCHEDULE = "daco30QD+osi80QD"


def clonal_case(rtol=1e-6, atol=1e-9, schedule=CLONAL_SCHEDULE, days=365):
    """Poels 2021 clonal-resistance model (`models.clonal.ClonalModel`: catenary
    osimertinib/dacomitinib PK + four clones, 10 states), one year of daily dosing.

    Population: `clonal.trial.sample_patients(key(0), n)` (the authors' trial scheme):
    per-patient PK (10 parameters with IIV), initial clone counts (4) and mutation
    probabilities (3), 17 columns; `n_init` and `mu` are vector fields, mapped by the
    case's `fields`. Regimen: the doses of `trial.schedule_doses(schedule, hourly grid)`
    as boluses into `OSI_GUT` / `DACO_GUT` (QD + QD: 365 dosing segments). Saves daily
    (before that day's dose); outputs total cells, resistant fraction, C_osi, C_daco.
    """
    import jax.numpy as jnp

    import qsp
    from models.clonal import ClonalModel, trial
    from models.clonal.pk import PK_NAMES

    hours = 24.0 * days
    grid = np.arange(0.0, hours + 0.5, 1.0)
    osi_mg, daco_mg = trial.schedule_doses(schedule, grid)
    reg = (qsp.Regimen.bolus(osi_mg[osi_mg > 0], time=grid[osi_mg > 0], cmt="OSI_GUT")
           + qsp.Regimen.bolus(daco_mg[daco_mg > 0], time=grid[daco_mg > 0], cmt="DACO_GUT"))
    k = len(PK_NAMES)
    names = list(PK_NAMES) + [f"n_init[{i}]" for i in range(4)] + [f"mu[{i}]" for i in range(3)]

    def pop(n):
        import jax

        pts = trial.sample_patients(jax.random.key(0), int(n))
        return np.concatenate([np.stack([pts.pk[c] for c in PK_NAMES], axis=1), pts.n_init, pts.mu], axis=1)

    def fields(p):
        out = {c: p[..., j] for j, c in enumerate(PK_NAMES)}
        out["n_init"], out["mu"] = jnp.asarray(p[..., k:k + 4]), jnp.asarray(p[..., k + 4:k + 7])
        return out

    # The solver `qsp.simulate` picks for this model when given none (Rodas4).
    return Case(f"clonal[{schedule}]", ClonalModel(), names, pop, reg, np.arange(0.0, hours + 1e-9, 24.0),
                ClonalModel.default_solver(rtol, atol), ("total", "resistant_fraction", "C_osi", "C_daco"), rtol, atol,
                fields=fields)


CASES = {"pk2cmt": pk2cmt_case, "crs": crs_case, "mapk": mapk_case, "clonal": clonal_case}


# -- methods: each returns run(p) -> (states (n, n_ts, n_states), steps (n,) or None) ----------


def qsp_method(case, chunk, all_saves=False, solver=None, workers=1):
    import jax
    import jax.numpy as jnp

    import qsp
    import qsp._simulate as S

    # As built (work_precision swaps case.solver between methods), or the one given.
    solver = case.solver if solver is None else solver

    def run(p):
        orig = S._save_window
        if all_saves:
            S._save_window = lambda *a, **k: None
        try:
            # Tolerances as arrays: traced, so a new tolerance does not recompile.
            sol = qsp.simulate(case.batched(p), case.regimen, case.ts, rtol=jnp.asarray(case.rtol),
                               atol=jnp.asarray(case.atol),
                               solver=solver, max_steps=16384, batch_size=chunk, workers=workers)
            ys = jax.block_until_ready(sol.states)
        finally:
            S._save_window = orig
        return np.asarray(ys), np.asarray(sol.num_steps)

    return run


def native_method(case, threads=1, solver=None):
    """`qsp.simulate(..., backend="native")`: each patient in C generated from the model
    (Rodas4, whatever the case's JAX solver, or `solver="bdf"`), `threads` threads,
    chunks of 1,024 patients (the chunk only bounds the memory of the JAX-side
    preparation)."""
    import qsp

    def run(p):
        sol = qsp.simulate(case.batched(p), case.regimen, case.ts, rtol=case.rtol, atol=case.atol,
                           max_steps=16384, batch_size=1024, workers=threads, backend="native", solver=solver)
        return np.asarray(sol.states), np.asarray(sol.num_steps)

    return run


def _segments(case):
    from benchmarks._rr_peer import plan

    return plan(case.ts, case.bolus, case.infusions, case.n_states)


def vmap_method(case, chunk):
    """What a JAX user writes: the dosing segments are known in advance and shared, so a
    `lax.scan` over them, one `diffeqsolve` each saving its own (padded) save times."""
    import diffrax as dfx
    import jax
    import jax.numpy as jnp

    segs = _segments(case)
    n_ts = len(case.ts)
    W = max(1, max(len(s[4]) for s in segs))
    ta = jnp.asarray([s[0] for s in segs])
    tb = jnp.asarray([s[1] for s in segs])
    add = jnp.asarray(np.stack([s[2] for s in segs]))
    u = jnp.asarray(np.stack([s[3] for s in segs]))
    idx = np.full((len(segs), W), n_ts)  # n_ts: a dropped write
    tsave = np.zeros((len(segs), W))
    for k, s in enumerate(segs):
        idx[k, :len(s[4])] = s[4]
        tsave[k] = s[1]
        tsave[k, :len(s[4])] = case.ts[s[4]]
    idx, tsave = jnp.asarray(idx), jnp.asarray(tsave)
    model = case.model

    def one(p):
        m = model.replace(**case.fields(p))
        term = dfx.ODETerm(lambda t, y, uk: jnp.asarray(m.rhs(t, y), dtype=float) + uk)
        y0 = jnp.asarray(m.initial(), dtype=float)

        def seg(carry, k):
            y, out, steps = carry
            y = y + add[k]
            sol = dfx.diffeqsolve(term, case.solver, ta[k], tb[k], None, y, u[k],
                                  saveat=dfx.SaveAt(ts=tsave[k], t1=True),
                                  stepsize_controller=dfx.PIDController(rtol=case.rtol, atol=case.atol),
                                  max_steps=16384, throw=False)
            out = out.at[idx[k]].set(sol.ys[:-1], mode="drop")
            return (sol.ys[-1], out, steps + sol.stats["num_steps"]), None

        out0 = jnp.broadcast_to(y0, (n_ts, y0.shape[0]))
        (_, out, steps), _ = jax.lax.scan(seg, (y0, out0, jnp.asarray(0)), jnp.arange(len(segs)))
        return out, steps

    f = jax.jit(jax.vmap(one))

    def run(p):
        outs, steps = [], []
        size = min(chunk, len(p))  # as qsp.simulate: one batch up to `chunk`, then chunks
        for s in range(0, len(p), size):
            q = p[s:s + size]
            pad = np.concatenate([q, np.repeat(q[-1:], size - len(q), 0)]) if len(q) < size else q
            o, st = jax.block_until_ready(f(jnp.asarray(pad)))
            outs.append(np.asarray(o)[:len(q)])
            steps.append(np.asarray(st)[:len(q)])
        return np.concatenate(outs), np.concatenate(steps)

    return run


def scipy_method(case, method, rtol=None, atol=None):
    import jax
    import jax.numpy as jnp
    from scipy.integrate import solve_ivp

    rtol = case.rtol if rtol is None else rtol
    atol = case.atol if atol is None else atol
    segs = _segments(case)
    model = case.model

    def f(t, y, p, u):
        return jnp.asarray(model.replace(**case.fields(p)).rhs(t, y), dtype=float) + u

    if case.py_rhs is not None:  # plain numpy/Python RHS where the workload has one
        rhs, jac = case.py_rhs
    else:
        rhs = jax.jit(f)
        jac = jax.jit(jax.jacfwd(f, argnums=1))

    def run(p):
        y0s = case.y0(p)
        out = np.empty((len(p), len(case.ts), case.n_states))
        nfev = np.zeros(len(p), dtype=int)
        run.work = work = {"nfev": 0, "njev": 0, "nlu": 0}  # summed over patients (benchmarks/floor.py)
        for i in range(len(p)):
            pi = p[i] if case.py_rhs is not None else jnp.asarray(p[i])
            y = y0s[i].copy()
            out[i] = y
            for ta, tb, add, u, own in segs:
                y = y + add
                if tb <= ta:
                    continue
                uj = u if case.py_rhs is not None else jnp.asarray(u)
                te = np.append(case.ts[own], tb)
                te = np.unique(te)
                sol = solve_ivp(lambda t, yy: np.asarray(rhs(t, yy, pi, uj)), (ta, tb), y, method=method,
                                t_eval=te, rtol=rtol, atol=atol,
                                jac=lambda t, yy: np.asarray(jac(t, yy, pi, uj)))
                if sol.status != 0:
                    raise RuntimeError(f"scipy {method} failed, patient {i}, [{ta:g}, {tb:g}]: {sol.message}")
                if own.size:
                    out[i, own] = sol.y.T[np.searchsorted(te, case.ts[own])]
                y = sol.y[:, -1]
                nfev[i] += sol.nfev
                for k in work:
                    work[k] += int(getattr(sol, k))
        return out, nfev

    return run


def roadrunner_method(case, processes, sbml_text):
    from benchmarks import _rr_peer

    segs = _segments(case)
    if processes == 1:
        pop = _rr_peer.Population(sbml_text, case.ts, segs, case.n_states, case.rtol, case.atol)
    else:
        pop = _rr_peer.Pool(sbml_text, case.ts, segs, case.n_states, case.rtol, case.atol, processes)

    def run(p):
        return pop.run(np.asarray(p), case.y0(p)), None

    run.load_s = pop.load_s
    run.close = getattr(pop, "close", lambda: None)
    return run


METHODS = ("qsp", "qsp_allsaves", "diffrax_vmap", "scipy_lsoda", "scipy_bdf", "roadrunner_1p", "roadrunner_2p")
#: Not in the default list of pk2cmt/crs: `qsp` with `qsp.Rodas4()` instead of the case's
#: solver (the CRS, MAPK and clonal cases already use Rodas4), and `qsp_kvaerno5`, `qsp`
#: with qsp's generic `qsp.default_solver` (Kvaerno5 + Chord).
#: `qsp_2w`: `qsp` with its chunks in 2 worker processes (`qsp.simulate(..., workers=2)`),
#: the counterpart of `roadrunner_2p` on a 2-core machine.
#: `qsp_native` / `qsp_native_2t`: the native backend in one / two threads;
#: `qsp_native_bdf` / `qsp_native_bdf_2t`: the same with `solver="bdf"` (NOTES section 21).
EXTRA_METHODS = ("qsp_rodas4", "qsp_kvaerno5", "qsp_2w", "qsp_native", "qsp_native_2t", "qsp_native_bdf",
                 "qsp_native_bdf_2t")
#: Default methods per workload where they differ from `METHODS`: MAPK and clonal, whose
#: model default became Rodas4 (NOTES section 14), are also timed with the Kvaerno5 + Chord
#: they had before, in the same run; `qsp_allsaves` (a record of the pre-save-window
#: behaviour) is left out.
WORKLOAD_METHODS = {w: ("qsp", "qsp_kvaerno5", "diffrax_vmap", "scipy_lsoda", "scipy_bdf", "roadrunner_1p",
                        "roadrunner_2p") for w in ("mapk", "clonal")}


def build(case, name, chunk, sbml_text=None):
    if name == "qsp":
        return qsp_method(case, chunk)
    if name == "qsp_rodas4":
        import qsp

        return qsp_method(case, chunk, solver=qsp.Rodas4())
    if name == "qsp_kvaerno5":
        import qsp

        return qsp_method(case, chunk, solver=qsp.default_solver(case.rtol, case.atol))
    if name == "qsp_2w":
        return qsp_method(case, chunk, workers=2)
    if name in ("qsp_native", "qsp_native_2t", "qsp_native_bdf", "qsp_native_bdf_2t"):
        return native_method(case, threads=2 if name.endswith("_2t") else 1, solver="bdf" if "_bdf" in name else None)
    if name == "qsp_allsaves":
        return qsp_method(case, chunk, all_saves=True)
    if name == "diffrax_vmap":
        return vmap_method(case, chunk)
    if name.startswith("scipy_"):
        return scipy_method(case, name.split("_")[1].upper())
    if name.startswith("roadrunner_"):
        return roadrunner_method(case, int(name.split("_")[1][:-1]), sbml_text)
    raise ValueError(f"unknown method {name!r}; expected one of {', '.join(METHODS + EXTRA_METHODS)}")


def _rr_load(sbml_text, rtol, atol, n_states):
    from benchmarks import _rr_peer

    _rr_peer._runner(sbml_text, rtol, atol, n_states)


def _rr_load_probe(sbml_text, case, timeout_s):
    """Load the SBML in a spawned process, stopped after `timeout_s`: RoadRunner's load
    (LLVM code generation) cannot be interrupted in-process, and for the MAPK model's
    SBML it did not finish in 14 minutes. Returns (loaded, seconds)."""
    import multiprocessing as mp

    proc = mp.get_context("spawn").Process(target=_rr_load, args=(sbml_text, case.rtol, case.atol, case.n_states))
    t = _env.timer()
    proc.start()
    proc.join(timeout_s)
    ok = proc.exitcode == 0
    if proc.is_alive():
        proc.terminate()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
    return ok, _env.timer() - t


def max_rel_diff(a, ref) -> float:
    """max over patients and outputs of max_t |a - ref| / max_t |ref|."""
    scale = np.maximum(np.abs(ref).max(axis=1, keepdims=True), 1e-300)
    return float(np.nanmax(np.abs(a - ref) / scale)) if np.isfinite(a).all() else float("inf")


# -- the run --------------------------------------------------------------------------------


def run_suite(workload, ns, methods=METHODS, repeats=3, check_n=20, chunk=1000, budget_s=240.0,
              scipy_n=20, rtol=1e-6, atol=1e-9, log=print, on_progress=None, case_kw=None,
              rr_load_timeout_s=300.0):
    import os

    import jax

    # QSP_FLOAT32=1 (the GPU float32 variant) keeps JAX in float32; the reference and
    # the CPU peers stay float64 (numpy).
    float32 = os.environ.get("QSP_FLOAT32", "0") == "1"
    jax.config.update("jax_enable_x64", not float32)
    # The persistent compilation cache (the tests' .jax_cache unless
    # JAX_COMPILATION_CACHE_DIR is set): a rerun loads instead of compiling; the record
    # says which cache was used (machine.jax_compilation_cache_dir).
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", str(Path(__file__).resolve().parents[1] / ".jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    sampler = _env.LoadSampler().start()
    case = CASES[workload](rtol, atol, **(case_kw or {}))
    nmax = max(ns)
    P = case.params(max(nmax, check_n))
    sbml_text, sbml_s, sbml_error = None, None, None
    if any(m.startswith("roadrunner") for m in methods):
        from benchmarks import _sbml

        t = _env.timer()
        try:
            sbml_text = _sbml.sbml(case.model, case.names, case.fields, case.p0())
        except Exception as e:  # the writer covers the primitives the models so far use
            log(f"[{workload}] SBML writer failed ({type(e).__name__}: {e}); RoadRunner left out")
            sbml_error = f"the SBML writer failed ({type(e).__name__}: {e})"
            methods = tuple(m for m in methods if not m.startswith("roadrunner"))
        sbml_s = _env.timer() - t
    if sbml_text is not None and rr_load_timeout_s:
        ok, probe_s = _rr_load_probe(sbml_text, case, rr_load_timeout_s)
        log(f"[{workload}] RoadRunner load probe: {'loaded' if ok else 'NOT loaded'} in {probe_s:.1f} s")
        if not ok:
            sbml_error = (f"RoadRunner did not load the SBML within {rr_load_timeout_s:g} s "
                          f"(a separate process, stopped)")
            methods = tuple(m for m in methods if not m.startswith("roadrunner"))

    # Correctness first: the reference is scipy LSODA at tight tolerances.
    pc = P[:check_n]
    t = _env.timer()
    ref_states, _ = scipy_method(case, "LSODA", rtol=1e-10, atol=1e-12)(pc)
    ref = case.reported(pc, ref_states)
    log(f"[{workload}] reference ({check_n} patients, LSODA 1e-10) in {_env.timer() - t:.1f} s")
    runners, compile_s, check, compiled = {}, {}, {}, {}
    for name in methods:
        t = _env.timer()
        run = build(case, name, min(chunk, max(ns)), sbml_text)
        load = getattr(run, "load_s", 0.0)
        t1 = _env.timer()
        # First call: JAX methods compile at the shape they are timed at (N up to a
        # chunk), so the check costs no extra compile; the first check_n rows are checked.
        jax_shape = min(chunk, nmax) if (name.startswith("qsp") or name == "diffrax_vmap") else check_n
        st, _ = run(P[:max(check_n, jax_shape)])
        first = _env.timer() - t1
        compiled[name] = {max(check_n, jax_shape)}
        check[name] = max_rel_diff(case.reported(pc, st[:check_n]), ref)
        runners[name] = run
        compile_s[name] = {"build_s": round(t1 - t, 3), "load_s": round(load, 3), "first_call_s": round(first, 3)}
        log(f"[{workload}] {name}: check {check[name]:.2e}, first call {first:.1f} s, load {load:.1f} s")
    passed = all(v < CHECK_THRESHOLD for v in check.values())
    res = {"benchmark": "population_suite", "workload": workload, "schema_version": 1,
           "machine": _env.machine_info(), "float32": float32, "rtol": case.rtol, "atol": case.atol, "n_ts": len(case.ts),
           "n_states": case.n_states, "n_doses": len(case.bolus) + len(case.infusions),
           "case": case.name, "solver": type(case.solver).__name__,
           "outputs": list(case.outputs), "sbml_write_s": sbml_s, "sbml_error": sbml_error,
           "correctness": {"n_patients": check_n, "reference": "scipy LSODA rtol 1e-10 atol 1e-12",
                           "max_rel_diff": check, "threshold": CHECK_THRESHOLD, "passed": passed},
           "compile": compile_s, "runs": []}
    if not passed:
        log(f"[{workload}] correctness gate failed: {check}")
        res["load"] = sampler.stop()
        return res
    per_patient = {}  # seconds per patient at the previous N, to keep cells within the budget
    for n in ns:
        cells = {}
        for name in methods:
            m = min(n, scipy_n) if name.startswith("scipy") else n
            if name in per_patient and m * per_patient[name] > budget_s:
                m = max(int(budget_s / per_patient[name]), 1)  # timed on a prefix, scaled (extrapolated)
            cells[name] = {"method": name, "n": n, "measured_n": m, "times_s": [], "cpu_s": []}
        if any(m.startswith("qsp") or m == "diffrax_vmap" for m in methods) and n > check_n:
            # compile at the timed chunk shape before timing (same shape for every n >= chunk)
            for name in methods:
                if (name.startswith("qsp") or name == "diffrax_vmap") and min(n, chunk) not in compiled[name]:
                    compiled[name].add(min(n, chunk))
                    t = _env.timer()
                    runners[name](P[:min(n, chunk)])
                    compile_s[name].setdefault("chunk_first_call_s", {})[str(min(n, chunk))] = round(_env.timer() - t, 3)
        for rep in range(repeats):
            for name in methods:
                c = cells[name]
                if c.get("skip"):
                    continue
                m = c["measured_n"]
                with _env.PeakMemory() as mem:
                    t, cpu = _env.timer(), _env.cpu_seconds()
                    st, steps = runners[name](P[:m])
                    dt, dcpu = _env.timer() - t, _env.cpu_seconds() - cpu
                c["times_s"].append(round(dt, 4))
                c["cpu_s"].append(round(dcpu, 4))
                c["peak_rss_mib"] = round(max(c.get("peak_rss_mib", 0), mem.peak_mib), 1)
                if steps is not None:
                    c["steps_mean"], c["steps_max"] = float(np.mean(steps)), int(np.max(steps))
                c.setdefault("load_at_start", _env.load_average())
                if dt * (repeats - rep - 1) > budget_s:
                    c["skip"] = True  # fewer repeats where they would not fit the budget
                log(f"[{workload}] N={n} {name} rep {rep}: {dt:.2f} s ({m} patients)")
        for name, c in cells.items():
            c.pop("skip", None)
            med = statistics.median(c["times_s"])
            c["repeats"] = len(c["times_s"])
            c["extrapolated"] = c["measured_n"] < n
            c["wall_s"] = med * n / c["measured_n"]
            c["patients_per_s"] = n / c["wall_s"]
            per_patient[name] = med / c["measured_n"]
            res["runs"].append(c)
        res["load"] = sampler.summary()
        if on_progress is not None:
            on_progress(res)  # partial results survive an interrupted run
    for r in runners.values():
        getattr(r, "close", lambda: None)()
    res["load"] = sampler.stop()
    return res


def to_markdown(res) -> str:
    m = res["machine"]
    pk = m["packages"]
    lines = [f"# population_suite: {res['workload']}", "",
             f"{m['time_utc']}, {m['cpu_model']}, {m['cpu_affinity']} cores, {m['ram_gib']} GiB, "
             f"git {str(m['git_commit'])[:8]}{' (dirty)' if m['git_dirty'] else ''}; "
             + ", ".join(f"{k} {v}" for k, v in pk.items() if v) + f", libroadrunner {_rr_version()}.",
             f"Load average (1 min) start {res['load']['start'][0]}, mean {res['load']['mean_1min']}, "
             f"max {res['load']['max_1min']} on {m['cpu_count']} cores: read ratios within one N.",
             f"rtol {res['rtol']}, atol {res['atol']}, {res['n_states']} states, {res['n_doses']} dose events, "
             f"{res['n_ts']} save times; outputs {', '.join(res['outputs'])}.",
             f"Case {res.get('case', res['workload'])}; `qsp` and `diffrax_vmap` use the case's solver "
             f"({res.get('solver', '?')}), `qsp_rodas4` uses qsp.Rodas4, `qsp_kvaerno5` qsp.default_solver "
             f"(Kvaerno5 + Chord)."
             + (f" RoadRunner not run: {res['sbml_error']}." if res.get("sbml_error") else ""),
             "",
             "Correctness (max over patients and outputs of max_t|a - ref| / max_t|ref|, first "
             f"{res['correctness']['n_patients']} patients, vs {res['correctness']['reference']}): "
             + ", ".join(f"{k} {v:.1e}" for k, v in res["correctness"]["max_rel_diff"].items()), "",
             "| N | method | patients/s | wall s | CPU s | repeats | steps mean/max | peak RSS MiB | compile/load s |",
             "|---:|---|---:|---:|---:|---:|---|---:|---:|"]
    for r in res["runs"]:
        comp = res["compile"][r["method"]]
        cs = comp["load_s"] or comp["first_call_s"]
        steps = f"{r['steps_mean']:.0f}/{r['steps_max']}" if "steps_mean" in r else ""
        ext = " (extrap.)" if r["extrapolated"] else ""
        lines.append(f"| {r['n']} | {r['method']} | {r['patients_per_s']:.1f}{ext} | {r['wall_s']:.2f} | "
                     f"{statistics.median(r['cpu_s']):.2f} | {r['repeats']} | {steps} | {r['peak_rss_mib']} | {cs:.1f} |")
    lines += ["", "compile/load: JAX first call at the check shape (compile + one run), RoadRunner "
              "SBML load (LLVM); scipy: first call (jit of the RHS and Jacobian).", ""]
    return "\n".join(lines)


def plot_scaling(res, path):
    """Wall time against N per method (log-log), extrapolated cells hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name in dict.fromkeys(r["method"] for r in res["runs"]):
        rs = sorted((r for r in res["runs"] if r["method"] == name), key=lambda r: r["n"])
        line, = ax.loglog([r["n"] for r in rs], [r["wall_s"] for r in rs], "-", label=name)
        for r in rs:
            ax.plot(r["n"], r["wall_s"], "o", color=line.get_color(),
                    markerfacecolor="none" if r["extrapolated"] else line.get_color())
    ax.set_xlabel("patients N")
    ax.set_ylabel("wall time (s), median; hollow = extrapolated")
    ax.set_title(f"{res['workload']}: time vs N (load avg {res['load']['mean_1min']} on "
                 f"{res['machine']['cpu_count']} cores)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _rr_version():
    try:
        import importlib.metadata as md

        return md.version("libroadrunner")
    except Exception:
        return "not installed"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=sorted(CASES), default="crs")
    ap.add_argument("--n", default="100,1000")
    ap.add_argument("--methods", default=None,
                    help=f"comma-separated, from {', '.join(METHODS + EXTRA_METHODS)} (default: "
                    f"{', '.join(METHODS)}; for {', '.join(WORKLOAD_METHODS)}: "
                    f"{', '.join(WORKLOAD_METHODS['mapk'])})")
    ap.add_argument("--arm", default=None, help=f"mapk only: the trial arm (default {MAPK_ARM})")
    ap.add_argument("--schedule", default=None, help=f"clonal only: the schedule (default {CLONAL_SCHEDULE})")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--check-n", type=int, default=20)
    ap.add_argument("--scipy-n", type=int, default=20)
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--budget-s", type=float, default=240.0)
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--atol", type=float, default=1e-9)
    ap.add_argument("--rr-load-timeout-s", type=float, default=300.0,
                    help="RoadRunner is left out when its SBML load takes longer (probed in a separate process; 0: no probe)")
    ap.add_argument("--out", default=None, help="results stem (default population_<workload>_cpu)")
    a = ap.parse_args(argv)
    ns = [int(float(x)) for x in a.n.split(",")]
    stem = a.out or f"population_{a.workload}_cpu"
    RESULTS.mkdir(exist_ok=True)

    def partial(r):
        (RESULTS / f"{stem}.partial.json").write_text(json.dumps(r, indent=1, default=float))

    methods = tuple(a.methods.split(",")) if a.methods else WORKLOAD_METHODS.get(a.workload, METHODS)
    case_kw = {}
    for flag, wl in (("arm", "mapk"), ("schedule", "clonal")):
        if getattr(a, flag) is not None:
            if a.workload != wl:
                ap.error(f"--{flag} applies to --workload {wl}, not {a.workload}")
            case_kw[flag] = getattr(a, flag)
    res = run_suite(a.workload, ns, methods, a.repeats, a.check_n, a.chunk, a.budget_s,
                    a.scipy_n, a.rtol, a.atol, on_progress=partial, case_kw=case_kw,
                    rr_load_timeout_s=a.rr_load_timeout_s)
    (RESULTS / f"{stem}.partial.json").unlink(missing_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(res, indent=1, default=float))
    (RESULTS / f"{stem}.md").write_text(to_markdown(res))
    if res["runs"]:
        plot_scaling(res, RESULTS / f"{stem}.png")
    print(to_markdown(res))
    return 0 if res["correctness"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
