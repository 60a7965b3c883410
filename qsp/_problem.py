"""Assemble an estimation `Problem`: which values are free, fixed, shared or per experiment.

Every number the likelihood needs lives in one vector `V`: the free parameters first
(estimated, in `free` order, then the ones the data introduce), then fixed
parameters, then literal numbers from the tables. Model parameters, per-condition
overrides, initial states and error-model parameters are gathers from `V`, so one
compiled objective serves every start, profile point and posterior draw.

Parameters the *data* name are estimated unless given in `fixed`:

- experiment-specific parameters: names written in condition-table cells (bounds and
  initial value from the model parameter whose column they sit in);
- error-model parameters: `sigma_<obs>`, `cv_<obs>` (see `qsp._likelihood`), or names
  given in `noiseParameters`.
"""

from __future__ import annotations

import math

import numpy as np

from ._experiment import Dataset, states_allowed
from ._likelihood import ERRORS, Problem, error_parameter_names, transform_code
from ._params import parameter_info


def _check_bounds(name, b):
    try:
        lo, hi = float(b[0]), float(b[1])
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"bounds[{name!r}]={b!r}; expected (lower, upper) numbers.") from None
    if not lo < hi:
        raise ValueError(
            f"bounds of parameter {name}: lower={lo:g} must be below upper={hi:g}."
        )
    return lo, hi


def build_problem(model, data: Dataset, free, error="additive", *, fixed=None, initial=None,
                  bounds=None, priors=None, sim_kwargs=None, preeq_time=1e3) -> Problem:
    fixed, initial, bounds, priors = dict(fixed or {}), dict(initial or {}), dict(bounds or {}), dict(priors or {})
    info = parameter_info(model)
    name = type(model).__name__
    free = [free] if isinstance(free, str) else list(free or [])
    if len(set(free)) != len(free):
        raise ValueError(f"free={free} lists a parameter twice.")

    # -- error model per observable -----------------------------------------------------
    kinds = {}
    for obs in data.observables:
        k = error.get(obs) if isinstance(error, dict) else error
        if k is None:
            raise ValueError(f"error={error!r} has no entry for observable {obs!r}.")
        if k not in ERRORS:
            raise ValueError(f"error={k!r} for observable {obs!r} is not known; expected one of {ERRORS}.")
        kinds[obs] = k
    if isinstance(error, dict):
        extra = set(error) - set(data.observables)
        if extra:
            raise ValueError(f"error names observable {sorted(extra)[0]!r}, which has no measurements.")

    # -- collect names: model parameters, experiment-specific, error parameters ---------
    bnd, init_v, is_err, origin = {}, {}, {}, {}

    def scalar_model_param(p):
        v = np.asarray(getattr(model, p))
        if v.shape != ():
            raise ValueError(f"parameter {p} of {name} has shape {v.shape}; only scalar parameters can be estimated or overridden.")
        return float(v)

    def add_model_param(p):
        if p not in bnd:
            bnd[p] = info[p].bounds
            init_v[p] = scalar_model_param(p)
            is_err[p] = False

    for p in free:
        if p in info:
            add_model_param(p)
    y0_model = np.asarray(model.initial(), float) if states_allowed(model) else None
    for col, cells in list(data.param_overrides.items()) + list(data.state_overrides.items()):
        is_param = col in data.param_overrides
        if is_param:
            add_model_param(col)
        for v in cells:
            if isinstance(v, str):
                if v in info:
                    add_model_param(v)
                elif v not in bnd:
                    bnd[v] = info[col].bounds if is_param else (0.0, math.inf)
                    init_v[v] = init_v[col] if is_param else float(y0_model[model.states.index(col)])
                    is_err[v] = False
                    origin[v] = col

    def add_error_param(p, kind_slot, obs):
        if p in info:
            add_model_param(p)
            return
        if p not in bnd:
            bnd[p] = (0.0, math.inf)
            yo = data.y[(data.row_obs == data.observables.index(obs)) & ~data.censored]
            spread = float(np.std(yo)) if len(yo) > 1 else 0.0
            init_v[p] = (0.2 * spread if spread > 0 else 1.0) if kind_slot == "a" and kinds[obs] != "lognormal" else 0.2
            is_err[p] = True

    row_params = []  # per row: (a, b): names or floats or None
    for i in range(data.n):
        obs = data.observables[data.row_obs[i]]
        kind = kinds[obs]
        parts = data.noise[i] or error_parameter_names(kind, obs)
        need = 2 if kind == "combined" else 1
        if len(parts) != need:
            raise ValueError(
                f"measurement row {i}: noiseParameters has {len(parts)} value(s); the {kind} error "
                f"model of {obs!r} needs {need}."
            )
        a, b = (None, parts[0]) if kind == "proportional" else (parts[0], parts[1] if need == 2 else None)
        for slot, p in (("a", a), ("b", b)):
            if isinstance(p, str):
                add_error_param(p, slot, obs)
        if kind == "lognormal":
            bad = data.y[i] <= 0
            if bad:
                raise ValueError(
                    f"measurement row {i}: measurement={data.y[i]:g} of {obs!r} must be > 0 for the "
                    "lognormal error model (mark values below LLOQ with an `lloq` column)."
                )
        row_params.append((a, b))

    # -- free, fixed, bounds, initial values --------------------------------------------
    for p in free:
        if p not in bnd:
            raise ValueError(
                f"free parameter {p!r} is not a parameter of {name} or of the data; "
                f"model parameters: {', '.join(info)}."
            )
    for p in fixed:
        if p not in bnd and p not in info:
            raise ValueError(f"fixed parameter {p!r} is not a parameter of {name} or of the data.")
        if p in free:
            raise ValueError(f"parameter {p!r} is both free and fixed.")
    for p in list(fixed):
        if p in info:
            add_model_param(p)
    for p, b in bounds.items():
        if p not in bnd:
            raise ValueError(f"bounds given for {p!r}, which is not a parameter of {name} or of the data.")
        bnd[p] = _check_bounds(p, b)
    for p in initial:
        if p not in bnd:
            raise ValueError(f"initial value given for {p!r}, which is not a parameter of {name} or of the data.")
    auto = [p for p in bnd if p not in free and p not in fixed and p not in info]
    free_all = free + auto
    fixed_names = [p for p in bnd if p not in free_all]
    names = free_all + fixed_names
    index = {p: i for i, p in enumerate(names)}
    consts = [float(fixed.get(p, init_v[p])) for p in fixed_names]

    def lit(v):
        consts.append(float(v))
        return len(free_all) + len(consts) - 1

    def ref(v):
        return -1 if v is None else (index[v] if isinstance(v, str) else lit(v))

    n_cond = data.times.shape[0]
    model_params = {}
    for p in [q for q in bnd if q in info]:
        cells = data.param_overrides.get(p, [None] * n_cond)
        model_params[p] = np.array([index[p] if v is None else ref(v) for v in cells], dtype=int)
    state_idx = {s: np.array([ref(v) for v in cells], dtype=int) for s, cells in data.state_overrides.items()}

    zero, one = lit(0.0), lit(1.0)
    groups_rows = {}
    a_idx, b_idx = np.empty(data.n, int), np.empty(data.n, int)
    for i, (a, b) in enumerate(row_params):
        a_idx[i] = zero if a is None else ref(a)
        b_idx[i] = one if b is None else ref(b)
        key = (kinds[data.observables[data.row_obs[i]]], bool(data.censored[i]))
        groups_rows.setdefault(key, []).append(i)
    groups = [(k, c, np.array(r), a_idx[r], b_idx[r]) for (k, c), r in groups_rows.items()]

    lo = np.array([bnd[p][0] for p in free_all], float)
    hi = np.array([bnd[p][1] for p in free_all], float)
    code = np.array([transform_code(l, h) for l, h in zip(lo, hi)], int)
    init = np.array([float(initial.get(p, init_v[p])) for p in free_all], float)

    prior_list = []
    for p, spec in priors.items():
        if p not in free_all:
            raise ValueError(f"prior given for {p!r}, which is not estimated; free parameters: {free_all}.")
        kind, m, s = spec
        if kind not in ("normal", "lognormal", "cauchy") or not float(s) > 0:
            raise ValueError(f"priors[{p!r}]={spec!r}; expected ('normal'|'lognormal'|'cauchy', location, scale > 0).")
        prior_list.append((free_all.index(p), kind, float(m), float(s)))

    err_free = [i for i, p in enumerate(free_all) if is_err[p]]
    profiled = None
    if len(err_free) == 1 and not prior_list and len({k for k, *_ in groups}) == 1 \
            and all(k in ("additive", "lognormal") and not c for k, c, *_ in groups) \
            and all(np.all(a == err_free[0]) for _, _, _, a, _ in groups):
        profiled = err_free[0]

    return Problem(
        model=model, data=data, names=names, n_free=len(free_all),
        v_const=np.array(consts, float), lo=lo, hi=hi, code=code, init=init,
        model_params=model_params, state_idx=state_idx, groups=groups, priors=prior_list,
        sim_kwargs=dict(sim_kwargs or {}), preeq_time=float(preeq_time), profiled_sigma=profiled,
        is_error=np.array([is_err[p] for p in free_all], bool),
    )
