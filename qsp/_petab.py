r"""PEtab v1 import: `qsp.petab_problem(yaml)` -> a `PetabProblem` with a JAX negative
log-likelihood.

The tables are read with the `petab` library; the SBML model with `qsp.load_sbml`.
Estimated parameters $x$ live on their PEtab scale (`lin`, `log`, `log10`) within
their bounds; the others sit at their `nominalValue`. Every simulation (one per
distinct pre-equilibration and simulation condition pair) is one member of a single
vmapped `qsp.simulate` call:

- condition-table columns set model parameters/compartments (numbers or parameter
  ids) or species initial values (in the species' own unit);
- pre-equilibration: the pre-equilibration condition is simulated to
  `preeq_time` (a steady state is checked: $\max_i |\dot y_i| \le$ `preeq_tol`
  $(1 + |y_i|)$) and the simulation starts from its end state, with species the
  simulation condition sets reset to those values (the PEtab rule).

Observables and noise formulas are sympy expressions (placeholders
`observableParameter{n}_{obs}` and `noiseParameter{n}_{obs}` filled per measurement
row). For a measurement $m$ with simulated observable $y$ and noise $\sigma$
(PEtab v1 spec, "noise distributions"):

| `noiseDistribution` | lin | log | log10 |
|---|---|---|---|
| normal | $\tfrac12\log 2\pi\sigma^2 + \tfrac12 r^2$, $r = (m - y)/\sigma$ | same with $r = (\ln m - \ln y)/\sigma$, $+ \ln m$ | $r = (\log_{10} m - \log_{10} y)/\sigma$, $+ \ln(m \ln 10)$ |
| laplace | $\ln 2\sigma + \lvert m - y\rvert/\sigma$ | same on $\ln$, $+\ln m$ | same on $\log_{10}$, $+\ln(m\ln 10)$ |

Fitting (`PetabProblem.fit`) uses the calibration engine's optimizer (`qsp._optimize`:
trust-region BFGS, forward-mode sensitivities, vmapped starts) on $u$, with
$x = l + (h - l)\,\mathrm{sigmoid}(u)$ inside the scaled bounds $[l, h]$.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time as _time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

_LOG2PI = math.log(2 * math.pi)
_LN10 = math.log(10.0)


def _unscale(x, scale):
    return {"lin": x, "log": jnp.exp(x), "log10": 10.0 ** x}[scale]


def _scale(v, scale):
    return {"lin": v, "log": math.log(v), "log10": math.log10(v)}[scale]


def _number(v):
    """float(v) if v is a number (or numeric string), else None."""
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return float(v)
    try:
        return float(str(v))
    except ValueError:
        return None


def _split(cell):
    """A `observableParameters`/`noiseParameters` cell as a list of entries."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return []
    if isinstance(cell, (int, float, np.integer, np.floating)):
        return [float(cell)]
    return [c.strip() for c in str(cell).split(";") if c.strip()]


@dataclasses.dataclass
class _Data:
    n: int


class PetabProblem:
    """A PEtab v1 problem ready to evaluate: `nll(x)` on the PEtab scale, `nll_nominal()`,
    `fit(...)`. Built by `qsp.petab_problem(path)`."""

    def __init__(self, yaml_path, *, rtol=1e-8, atol=1e-10, max_steps=100_000, solver=None,
                 preeq_time=1e4, preeq_tol=1e-6):
        import petab.v1 as petab
        import yaml

        from ._sbml_math import Compiled

        yaml_path = os.fspath(yaml_path)
        if not os.path.exists(yaml_path):
            raise FileNotFoundError(f"PEtab problem file {yaml_path!r} does not exist.")
        with open(yaml_path) as fh:
            spec = yaml.safe_load(fh)
        if str(spec.get("format_version", "1")).split(".")[0] != "1":
            raise ValueError(f"{yaml_path}: format_version={spec.get('format_version')!r}; only PEtab v1 is supported.")
        self.petab = pb = petab.Problem.from_yaml(yaml_path)
        base = os.path.dirname(os.path.abspath(yaml_path))
        sbml = spec["problems"][0]["sbml_files"]
        if len(spec["problems"]) != 1 or len(sbml) != 1:
            raise ValueError(f"{yaml_path}: expected one problem with one SBML file.")
        self.model = _load_model(os.path.join(base, sbml[0]))
        self.name = os.path.splitext(os.path.basename(yaml_path))[0]
        self.sim_kwargs = dict(rtol=rtol, atol=atol, max_steps=max_steps)
        if solver is not None:
            self.sim_kwargs["solver"] = solver
        self.preeq_time, self.preeq_tol = float(preeq_time), float(preeq_tol)
        mspec = type(self.model)._spec
        self._mspec = mspec
        if mspec.events:
            raise ValueError(f"{yaml_path}: SBML events ({', '.join(e.id for e in mspec.events)}) are not "
                             "supported in PEtab problems yet.")

        # -- parameters ----------------------------------------------------------------
        par = pb.parameter_df
        if "objectivePriorType" in par.columns and par["objectivePriorType"].notna().any():
            raise ValueError(f"{yaml_path}: objective priors (objectivePriorType) are not supported.")
        self.ids = list(par.index)
        self.scale = {p: str(par.loc[p, "parameterScale"]) if "parameterScale" in par else "lin" for p in self.ids}
        for p, s in self.scale.items():
            if s not in ("lin", "log", "log10"):
                raise ValueError(f"parameter {p}: parameterScale={s!r}; expected lin, log or log10.")
        est = par["estimate"].astype(int) == 1
        self.free = [p for p in self.ids if est[p]]
        self.nominal = {p: float(par.loc[p, "nominalValue"]) for p in self.ids}
        self.lo = np.array([_scale(float(par.loc[p, "lowerBound"]), self.scale[p]) for p in self.free])
        self.hi = np.array([_scale(float(par.loc[p, "upperBound"]), self.scale[p]) for p in self.free])
        self.x_nominal = np.array([_scale(self.nominal[p], self.scale[p]) for p in self.free])

        # -- simulations: (preeq, sim) pairs -------------------------------------------
        meas = pb.measurement_df.copy()
        if "preequilibrationConditionId" not in meas:
            meas["preequilibrationConditionId"] = np.nan
        meas["preequilibrationConditionId"] = meas["preequilibrationConditionId"].fillna("").astype(str)
        t = meas["time"].astype(float).to_numpy()
        if not np.all(np.isfinite(t)):
            raise ValueError("measurements at time inf (steady-state data) are not supported.")
        pairs = list(dict.fromkeys(zip(meas["preequilibrationConditionId"], meas["simulationConditionId"])))
        self.pairs = pairs
        self.ts = np.unique(t)
        self.n = len(meas)
        self.data = _Data(self.n)
        row_sim = np.array([pairs.index(k) for k in zip(meas["preequilibrationConditionId"], meas["simulationConditionId"])])
        row_t = np.searchsorted(self.ts, t)
        self.y = meas["measurement"].astype(float).to_numpy()
        cond = pb.condition_df
        fields = self.model.sbml_names  # SBML id -> field
        states = list(mspec.states)

        # Values by name: free parameters (index into x), nominal numbers, literals.
        def ref(v, where):
            num = _number(v)
            if num is not None:
                return ("num", num)
            if v in self.free:
                return ("free", self.free.index(v))
            if v in self.nominal:
                return ("num", self.nominal[v])
            raise ValueError(f"{where}: {v!r} is neither a number nor a parameter of the parameter table.")

        self._ref = ref

        def overrides(cid):
            out = {}
            if not cid:
                return out
            if cid not in cond.index:
                raise ValueError(f"condition {cid!r} is used in the measurement table but not defined.")
            for col in cond.columns:
                if col == "conditionName":
                    continue
                v = cond.loc[cid, col]
                if isinstance(v, float) and math.isnan(v):
                    continue
                if col not in fields:
                    raise ValueError(f"condition table column {col!r} is not a parameter, compartment or species of the model.")
                out[col] = ref(v, f"condition {cid!r}, column {col!r}")
            return out

        # Model fields: the parameter table's model parameters, then conditions.
        self._field_refs = {}  # field -> per-simulation refs (for the main simulation)
        self._preeq_refs = {}
        self._species_reset = []  # per simulation: {state index: ref}
        self._species_preeq_init = []
        table_params = {p: ref(p, "parameter table") for p in self.ids if p in fields}
        sims = []
        for pre, sim in pairs:
            sims.append((overrides(pre), overrides(sim)))
        for which, k in (("main", 1), ("preeq", 0)):
            refs = {}
            for j, ov in enumerate(sims):
                vals = dict(table_params)
                vals.update({c: r for c, r in ov[k].items() if mspec.kind[c] != "species" or c not in states})
                vals.update({c: r for c, r in ov[k].items() if mspec.kind[c] == "species" and c not in states})
                for c, r in vals.items():
                    refs.setdefault(c, [None] * len(sims))[j] = r
            (self._field_refs if which == "main" else self._preeq_refs).update(refs)
        for pre_ov, sim_ov in sims:
            self._species_reset.append({states.index(c): r for c, r in sim_ov.items() if c in states})
            self._species_preeq_init.append({states.index(c): r for c, r in pre_ov.items() if c in states})
        self.has_preeq = np.array([bool(pre) for pre, _ in pairs])

        # -- observables and noise -----------------------------------------------------
        from petab.v1.math import sympify_petab

        obs = pb.observable_df
        self.groups = []
        known = set(mspec.outputs) | set(self.ids)
        for oid in obs.index:
            rows = np.flatnonzero(meas["observableId"].to_numpy() == oid)
            if rows.size == 0:
                continue
            f_obs = sympify_petab(obs.loc[oid, "observableFormula"])
            f_noise = sympify_petab(obs.loc[oid, "noiseFormula"])
            trans = str(obs.loc[oid, "observableTransformation"]) if "observableTransformation" in obs and \
                isinstance(obs.loc[oid, "observableTransformation"], str) else "lin"
            dist = str(obs.loc[oid, "noiseDistribution"]) if "noiseDistribution" in obs and \
                isinstance(obs.loc[oid, "noiseDistribution"], str) else "normal"
            if trans not in ("lin", "log", "log10") or dist not in ("normal", "laplace"):
                raise ValueError(f"observable {oid!r}: {dist}/{trans} is not a PEtab v1 noise model "
                                 "(normal|laplace with lin|log|log10).")
            place = {}
            for kind, col in (("observableParameter", "observableParameters"), ("noiseParameter", "noiseParameters")):
                cells = meas[col].to_numpy()[rows] if col in meas else [None] * rows.size
                split = [_split(c) for c in cells]
                k = 1
                while any(s.name == f"{kind}{k}_{oid}" for s in (f_obs.free_symbols | f_noise.free_symbols)):
                    name = f"{kind}{k}_{oid}"
                    vals = []
                    for i, s in zip(rows, split):
                        if len(s) < k:
                            raise ValueError(f"measurement row {i}: {col} has {len(s)} entries; observable "
                                             f"{oid!r} needs {name}.")
                        vals.append(ref(s[k - 1], f"measurement row {i}, {col}"))
                    place[name] = vals
                    k += 1
            for f in (f_obs, f_noise):
                for s in f.free_symbols:
                    if s.name not in known and s.name not in place:
                        raise ValueError(f"observable {oid!r}: symbol {s.name!r} in its formulas is not a model "
                                         "entity or a parameter of the parameter table.")
            self.groups.append(dict(id=oid, rows=rows, sim=row_sim[rows], t=row_t[rows], trans=trans, dist=dist,
                                    obs=Compiled(f_obs, f"observableFormula of {oid!r}"),
                                    noise=Compiled(f_noise, f"noiseFormula of {oid!r}"), place=place))
        self._outputs = set(mspec.outputs)

    # -- evaluation ---------------------------------------------------------------------

    def _value(self, r, x):
        kind, v = r
        return jnp.asarray(v, dtype=float) if kind == "num" else self._natural_free(x)[v]

    def _natural_free(self, x):
        return jnp.stack([_unscale(x[i], self.scale[p]) for i, p in enumerate(self.free)]) if self.free \
            else jnp.zeros(0)

    def _model_for(self, refs, x):
        fields = self.model.sbml_names
        upd = {}
        for c, rs in refs.items():
            vals = [self._value(r, x) if r is not None else jnp.asarray(getattr(self.model, fields[c]), float)
                    for r in rs]
            upd[fields[c]] = jnp.stack(vals)
        n = len(self.pairs)
        if not upd:  # every member needs the population axis
            f = next(iter(fields.values()))
            upd[f] = jnp.full((n,), jnp.asarray(getattr(self.model, f), float))
        return self.model.replace(**upd)

    def simulate(self, x, adjoint="forward"):
        """Outputs of every simulation at `self.ts`: (dict of (n_sim, n_t) arrays, status (n_sim,))."""
        from ._sbml import _restart
        from ._simulate import _as_arrays, _batch_axes, simulate

        x = jnp.asarray(x, dtype=float)
        kw = dict(self.sim_kwargs, adjoint=adjoint)
        n = len(self.pairs)
        main = self._model_for(self._field_refs, x)
        y0 = _batched_initial(main)
        status = jnp.zeros(n, int)
        if self.has_preeq.any():
            pre = self._model_for(self._preeq_refs, x)
            yp = _batched_initial(pre)
            for j, d in enumerate(self._species_preeq_init):
                for k, r in d.items():
                    yp = yp.at[j, k].set(self._value(r, x) * self._vol(pre, j, k))
            ts_pre = jnp.array([0.5 * self.preeq_time, self.preeq_time])
            sol = simulate(_restart(pre, yp), None, ts_pre, **kw)
            end = sol.states[:, -1, :]
            pre_a = _as_arrays(pre)
            rate = jax.vmap(lambda m, y: m.rhs(self.preeq_time, y), in_axes=(_batch_axes(pre_a)[0], 0))(pre_a, end)
            steady = jnp.all(jnp.abs(rate) <= self.preeq_tol * (1 + jnp.abs(end)), axis=1)
            ok = (sol.status == 0) & steady
            status = jnp.where(jnp.asarray(self.has_preeq) & ~ok, 4, status)
            y0 = jnp.where(jnp.asarray(self.has_preeq)[:, None], end, y0)
        for j, d in enumerate(self._species_reset):
            for k, r in d.items():
                y0 = y0.at[j, k].set(self._value(r, x) * self._vol(main, j, k))
        sol = simulate(_restart(main, y0), None, jnp.asarray(self.ts), **kw)
        return sol.outputs, jnp.maximum(status, sol.status)

    def _vol(self, model, j, k):
        """Amount per unit of the species' value (its compartment size for concentrations)."""
        s = self._mspec.states[k]
        if self._mspec.kind[s] != "species" or not self._mspec.conc[s]:
            return 1.0
        env = jax.tree.map(lambda a: a[j] if getattr(a, "ndim", 0) > 0 else a,
                           {c: getattr(model, f) for c, f in model.sbml_names.items()})
        return jnp.asarray(env[self._mspec.comp_of[s]], float)

    def predictions(self, x, adjoint="forward"):
        """Per observable group: (rows, simulated observable, noise SD), and whether
        every simulation succeeded."""
        x = jnp.asarray(x, dtype=float)
        outs, status = self.simulate(x, adjoint)
        theta = dict(zip(self.free, self._natural_free(x)))
        out = []
        for g in self.groups:
            env = {}
            for name in set(g["obs"].names) | set(g["noise"].names):
                if name in g["place"]:
                    env[name] = jnp.stack([self._value(r, x) for r in g["place"][name]])
                elif name in self._outputs:
                    env[name] = outs[name][g["sim"], g["t"]]
                elif name in theta:
                    env[name] = theta[name]
                else:
                    env[name] = jnp.asarray(self.nominal[name], float)
            y = g["obs"](env) * jnp.ones(len(g["rows"]))
            s = g["noise"](env) * jnp.ones(len(g["rows"]))
            out.append((g["rows"], y, s))
        return out, jnp.all(status == 0)

    def nll(self, x, adjoint="forward"):
        """Negative log-likelihood at `x` (free parameters on their PEtab scale)."""
        preds, ok = self.predictions(x, adjoint)
        total = 0.0
        for g, (rows, y, s) in zip(self.groups, preds):
            total = total + jnp.sum(_nll_terms(self.y[rows], y, s, g["dist"], g["trans"]))
        return jnp.where(ok & jnp.isfinite(total), total, jnp.inf)

    def nll_nominal(self) -> float:
        """The negative log-likelihood at the parameter table's nominal values."""
        return float(self.nll(jnp.asarray(self.x_nominal)))

    # -- the calibration engine's interface (qsp._optimize) ------------------------------

    @property
    def n_free(self):
        return len(self.free)

    @property
    def code(self):
        from ._likelihood import transform_code

        return np.array([transform_code(lo, hi) for lo, hi in zip(self.lo, self.hi)], int)

    @property
    def init(self):
        return self.x_nominal

    profiled_sigma = None

    def natural(self, u):
        """Scaled parameters x (PEtab scale) from unconstrained u."""
        from ._likelihood import to_natural

        return to_natural(u, self.code, self.lo, self.hi)

    def unconstrained(self, x):
        from ._likelihood import to_unconstrained

        return to_unconstrained(x, self.code, self.lo, self.hi, self.free)

    def nll_u(self, u, adjoint="forward"):
        return self.nll(self.natural(u), adjoint)

    def fit(self, starts=1, *, x0=None, seed=0, rtol=1e-8, atol=1e-8, max_steps=500, spread=0.0):
        """Fit with the calibration engine's trust-region BFGS (forward sensitivities),
        `starts` starts vmapped in one compiled call: `x0` (default nominal), then
        uniform draws in the scaled bounds (or within `x0 +/- spread` if `spread > 0`).
        Returns a `PetabFit`."""
        from ._optimize import _make_solver

        t0 = _time.perf_counter()
        x0 = self.x_nominal if x0 is None else np.asarray(x0, float)
        rng = np.random.default_rng(seed)
        X = [x0]
        for _ in range(starts - 1):
            if spread > 0:
                X.append(np.clip(x0 + rng.uniform(-spread, spread, x0.shape), self.lo + 1e-6, self.hi - 1e-6))
            else:
                X.append(self.lo + (self.hi - self.lo) * rng.uniform(0.005, 0.995, x0.shape))
        U0 = jnp.asarray(np.stack([self.unconstrained(x) for x in X]))
        solve_one = _make_solver(_EngineView(self), "bfgs", rtol, atol, int(max_steps), 1e-2)
        U, F, OK, STEPS = map(np.asarray, jax.jit(jax.vmap(solve_one))(U0))
        F = np.where(np.isfinite(F), F, np.inf)
        best = int(np.argmin(F))
        xb = np.asarray(self.natural(jnp.asarray(U[best])))
        starts_df = pd.DataFrame(np.asarray([self.natural(jnp.asarray(u)) for u in U]), columns=self.free)
        starts_df.insert(0, "nll", F)
        starts_df.insert(1, "converged", OK.astype(bool))
        starts_df.insert(2, "steps", STEPS)
        return PetabFit(x=dict(zip(self.free, map(float, xb))), nll=float(F[best]), converged=bool(OK[best]),
                        starts=starts_df, seconds=_time.perf_counter() - t0, scale=dict(self.scale))


def _nll_terms(m, y, s, dist, trans):
    """PEtab v1 negative log-likelihood of measurements `m` given simulated `y`, noise `s`."""
    if trans == "lin":
        r, jac = m - y, 0.0
    elif trans == "log":
        r, jac = np.log(m) - jnp.log(y), np.log(m)
    else:
        r, jac = np.log10(m) - jnp.log10(y), np.log(m * _LN10)
    if dist == "normal":
        return 0.5 * _LOG2PI + jnp.log(s) + 0.5 * (r / s) ** 2 + jac
    return jnp.log(2 * s) + jnp.abs(r) / s + jac


class _EngineView:
    """`PetabProblem` seen as the calibration engine's `Problem` (what `_make_solver` uses)."""

    def __init__(self, pb: PetabProblem):
        self._pb = pb
        self.model = pb.model
        self.data = pb.data
        self.profiled_sigma = None

    def nll(self, u, adjoint="forward"):
        return self._pb.nll_u(u, adjoint)

    def natural(self, u):
        return self._pb.natural(u)


def _batched_initial(model):
    """Initial amounts of every member of a population model, shape (n, n_states)."""
    from ._simulate import _as_arrays, _batch_axes

    model = _as_arrays(model)
    axes, _ = _batch_axes(model)
    return jax.vmap(lambda m: m.initial(), in_axes=(axes,))(model)


@dataclasses.dataclass
class PetabFit:
    """Result of `PetabProblem.fit`: best `x` (PEtab scale, by parameter id), its `nll`,
    whether the best start converged, every start's optimum, wall time."""

    x: dict
    nll: float
    converged: bool
    starts: pd.DataFrame
    seconds: float
    scale: dict

    def natural(self) -> dict:
        """The estimates on the natural (linear) scale."""
        return {p: float(_unscale(jnp.asarray(v), self.scale[p])) for p, v in self.x.items()}


_MODELS: dict = {}


def _load_model(path):
    """`load_sbml`, once per file version: the same model class each time, so
    `qsp.simulate`'s compiled solves are reused across problems on one file."""
    from ._sbml import load_sbml

    key = (os.path.abspath(path), os.path.getmtime(path))
    if key not in _MODELS:
        _MODELS[key] = load_sbml(path)
    return _MODELS[key]


def petab_problem(yaml_path, **kwargs) -> PetabProblem:
    """Load a PEtab v1 problem (its YAML file); keyword arguments go to `PetabProblem`
    (`rtol`, `atol`, `max_steps`, `solver`, `preeq_time`, `preeq_tol`)."""
    return PetabProblem(yaml_path, **kwargs)
