r"""`simulate`: integrate a model through its dosing events.

Doses are discontinuities, so the horizon is cut at every event (bolus times,
infusion starts and ends, each shifted by the compartment's lag) into segments
$[B_k, B_{k+1}]$, and each segment is one `diffrax.diffeqsolve` inside a `lax.scan`
(one compile however many doses). On a segment the vector field is

$$\dot y = f(t, y) + u_k, \qquad u_k = \sum_{i\ \text{infusing on}\ k} R_i\, e_{c_i},$$

and at $B_k$ the boluses due then are added: $y(B_k^+) = y(B_k^-) + \sum_j F_{c_j} A_j e_{c_j}$.

**Record order.** An observation at the same time as a dose reports the state *before*
the dose (the left limit; NONMEM's order when the observation record comes first,
i.e. a trough). Pass `obs_after_dose=True` (or a boolean per save time) for the state
just after it (a NONMEM observation record placed after the dose record).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from ._controller import StepController
from ._dosing import Regimen
from ._model import ODEModel
from ._params import _META_KEY
from ._solution import Solution, Status


def default_solver(rtol: float, atol: float) -> dfx.AbstractSolver:
    """Kvaerno5 (L-stable ESDIRK) with a Chord root finder at the step tolerances.

    diffrax's default VeryChord rejects about half the steps on stiff QSP models;
    Chord at the step tolerances is 5-8x faster at equal accuracy
    (`shared/references/performance-baseline.md`, section 6.1)."""
    return dfx.Kvaerno5(root_finder=optx.Chord(rtol=rtol, atol=atol))


@contextlib.contextmanager
def _checks_without_callbacks():
    """Trace the solve with equinox's runtime checks as NaN-producing selects instead of
    host callbacks.

    diffrax checks traced `SaveAt(ts=...)` (sorted, inside [t0, t1]) with
    `eqx.error_if`, which by default embeds a Python host callback; JAX's persistent
    compilation cache refuses to store any program that holds one ("uses host
    callbacks"), so every run recompiled (1-2 minutes for the CRS trial). The save
    times each segment passes are clipped to its interval and sorted by construction,
    and a NaN would be reported as a failed patient (`Status`), not raised: the raising
    form buys nothing here. A user's explicit `EQX_ON_ERROR` setting is left alone, and
    so is anything traced outside `simulate`."""
    try:
        from equinox import _errors as eqx_errors  # private: guarded, falls back to default
    except ImportError:  # pragma: no cover
        yield
        return
    old = getattr(eqx_errors, "EQX_ON_ERROR", None)
    if old != "raise":
        yield
        return
    eqx_errors.EQX_ON_ERROR = "nan"
    try:
        yield
    finally:
        eqx_errors.EQX_ON_ERROR = old


def _check_native(solver, dt0) -> str:
    """The native method for `solver=`: "rodas4" (default, differentiable) or "bdf"."""
    from ._rosenbrock import Rodas4

    if dt0 is not None:
        raise ValueError("backend='native' chooses its first step itself; dt0= is only "
                         "available with backend='jax'.")
    if solver is None or isinstance(solver, Rodas4):
        return "rodas4"
    if isinstance(solver, str) and solver in _NATIVE_METHODS:
        return solver
    raise ValueError(
        f"backend='native' solves by Rodas4 or BDF; got solver={solver!r}. Use solver=None "
        "(Rodas4), solver='bdf', or backend='jax' for a diffrax solver."
    )


_NATIVE_METHODS = ("rodas4", "bdf")


def _adjoint(adjoint):
    if adjoint is None or adjoint == "reverse":
        return dfx.RecursiveCheckpointAdjoint()
    if adjoint == "forward":
        return dfx.ForwardMode()
    if isinstance(adjoint, dfx.AbstractAdjoint):
        return adjoint
    raise ValueError(
        f"adjoint={adjoint!r} is not known; use 'reverse' (for jax.grad), 'forward' "
        "(for jax.jacfwd / jax.jvp) or a diffrax adjoint."
    )


# -- populations: which leaves carry a batch axis ----------------------------------------


def _core_ndim(field: dataclasses.Field) -> int:
    return len(field.metadata.get(_META_KEY, {}).get("shape", ()))


def _as_arrays(model):
    """Python numbers in parameter fields become float arrays (so they can be traced)."""
    def conv(x):
        if isinstance(x, (bool, np.bool_)):
            return x
        if isinstance(x, (int, float, np.integer, np.floating)):
            return jnp.asarray(x, dtype=float)
        return x
    return jax.tree.map(conv, model)


def _batch_axes(module, path="model"):
    """(in_axes pytree, {path: batch size}) for a model whose leaves may carry a leading
    population axis beyond their declared per-patient shape."""
    sizes = {}
    updates = {}
    for f in dataclasses.fields(module):
        if f.metadata.get("static", False):
            continue
        v = getattr(module, f.name)
        if isinstance(v, eqx.Module):
            sub_axes, sub_sizes = _batch_axes(v, f"{path}.{f.name}")
            updates[f.name] = sub_axes
            sizes.update(sub_sizes)
        elif eqx.is_array(v):
            if v.ndim > _core_ndim(f):
                updates[f.name] = 0
                sizes[f"{path}.{f.name}"] = v.shape[0]
            else:
                updates[f.name] = None
        else:
            updates[f.name] = jax.tree.map(lambda _: None, v)
    axes = jax.tree.map(lambda _: None, module)
    for name, ax in updates.items():
        axes = eqx.tree_at(lambda m, n=name: getattr(m, n), axes, ax, is_leaf=lambda x: x is None)
    return axes, sizes


def _check_parameters(model, batched: bool):
    """Raise (single patient) or flag (population) NaN or out-of-bounds parameters.

    Returns a boolean mask of invalid patients for a population, else None."""
    from ._params import parameter_info

    bad_mask = None
    for name, info in parameter_info(model).items():
        value = getattr(model, name)
        if isinstance(value, jax.core.Tracer) or not eqx.is_array_like(value):
            continue
        v = np.asarray(value, dtype=float) if not isinstance(value, (bool, np.bool_)) else None
        if v is None:
            continue
        lo, hi = info.bounds
        bad = np.isnan(v) | (v < lo) | (v > hi)
        if not batched or v.ndim <= len(info.shape):
            if bad.any():
                shown = v if v.ndim == 0 else v.reshape(-1)[np.flatnonzero(bad.reshape(-1))[0]]
                what = "NaN" if np.isnan(shown) else f"{shown:g}"
                raise ValueError(
                    f"parameter {name}={what} of {type(model).__name__} is invalid; expected a "
                    f"number within bounds [{lo:g}, {hi:g}]" + (f" ({info.units})" if info.units else "") + "."
                )
        else:
            row_bad = bad.reshape(bad.shape[0], -1).any(axis=1)
            bad_mask = row_bad if bad_mask is None else (bad_mask | row_bad)
    return bad_mask


# -- the solve -----------------------------------------------------------------------------


class _Config(eqx.Module):
    solver: Any
    controller: Any
    adjoint: Any
    max_steps: int
    dt0: Any
    exact_save: bool
    # Static bound on how many save times one segment owns (see `_save_window`); None:
    # every segment saves at all save times (needed when the breakpoints are traced).
    save_window: Any = None


class _Breakpoints(eqx.Module):
    """One patient's dosing schedule cut into segments (see the module docstring)."""

    y0: Any
    B: Any  # segment boundaries, (n_seg + 1,)
    bolus_seg: Any  # segment whose start each bolus lands on
    bolus_due: Any
    bolus_amt: Any
    onehot: Any  # (n_events, n_states): the compartment of each event
    t_start: Any  # when each infusion starts and stops (clipped to the horizon)
    t_stop: Any
    is_inf: Any
    rate: Any
    owner: Any  # the segment that reports each save time (-1: none, keeps y0)

    @property
    def n_seg(self) -> int:
        return self.B.shape[0] - 1

    def dose(self, k):
        """The bolus vector added at the start of segment k."""
        return jnp.where((self.bolus_seg == k) & self.bolus_due, self.bolus_amt, 0.0) @ self.onehot

    def infusion(self, k):
        """The infusion input u_k on segment k."""
        mid = 0.5 * (self.B[k] + self.B[k + 1])
        active = (self.t_start <= mid) & (mid < self.t_stop) & self.is_inf
        return jnp.where(active, self.rate, 0.0) @ self.onehot


def _breakpoints(model: ODEModel, time, amount, duration, by_rate, cidx, ts, after, t0) -> _Breakpoints:
    n = model.n_states
    y0 = jnp.asarray(model.initial(), dtype=float)
    if y0.shape != (n,):
        raise ValueError(
            f"{type(model).__name__}.initial() returned shape {y0.shape}; expected ({n},) "
            f"for states {model.states}."
        )
    F = jnp.asarray(model.bioavailability(), dtype=float)[cidx]
    lag = jnp.asarray(model.lag(), dtype=float)[cidx]
    t_ev = time + lag
    is_inf = duration > 0
    safe_dur = jnp.where(is_inf, duration, 1.0)
    eff_dur = jnp.where(is_inf, jnp.where(by_rate > 0, F * safe_dur, safe_dur), 0.0)
    safe_eff = jnp.where(is_inf, eff_dur, 1.0)
    rate = jnp.where(is_inf, F * amount / safe_eff, 0.0)
    bolus_amt = jnp.where(is_inf, 0.0, F * amount)
    onehot = jax.nn.one_hot(cidx, n, dtype=float)  # (n_events, n)

    t_final = ts[-1]
    t_start = jnp.clip(t_ev, t0, t_final)
    t_stop = jnp.clip(t_ev + eff_dur, t0, t_final)
    # Two copies of t_final: the last segment is degenerate, so a dose at t_final has a
    # segment to land on (for observations after it).
    B = jnp.sort(jnp.concatenate([jnp.stack([t0]), t_start, t_stop, jnp.stack([t_final, t_final])]))
    n_seg = B.shape[0] - 1
    bolus_seg = jnp.searchsorted(B, t_start, side="left")
    bolus_due = (t_ev <= t_final) & ~is_inf
    left_owner = jnp.searchsorted(B, ts, side="left") - 1
    right_owner = jnp.minimum(jnp.searchsorted(B, ts, side="right") - 1, n_seg - 1)
    owner = jnp.where(after, right_owner, left_owner)
    return _Breakpoints(y0, B, bolus_seg, bolus_due, bolus_amt, onehot, t_start, t_stop, is_inf, rate, owner)


def _solve_one(model: ODEModel, time, amount, duration, by_rate, cidx, ts, after, invalid, t0, cfg: _Config):
    bp = _breakpoints(model, time, amount, duration, by_rate, cidx, ts, after, t0)
    n, y0, B, n_seg, owner = model.n_states, bp.y0, bp.B, bp.n_seg, bp.owner

    term = dfx.ODETerm(lambda t, y, u: jnp.asarray(model.rhs(t, y), dtype=float) + u)
    n_ts = ts.shape[0]
    W = cfg.save_window
    windowed = W is not None and W < n_ts
    if windowed:
        # first[k]: the first save time segment k owns (n_ts if none). Save times at t0
        # before any dose have owner -1: no segment writes them, they keep y0.
        first = jnp.full((n_seg,), n_ts).at[jnp.where(owner < 0, n_seg, owner)].min(
            jnp.arange(n_ts), mode="drop"
        )

    def segment(carry, k):
        y, out, status, steps = carry
        ta, tb = B[k], B[k + 1]
        y = y + bp.dose(k)
        u = bp.infusion(k)
        if windowed:
            # Only the W save times from first[k] on (those past n_ts - 1 repeat the
            # last one). diffrax walks its save times inside the step loop, so saving at
            # all n_ts in every segment cost n_segments x n_ts interpolations
            # (benchmarks/NOTES.md, 2026-11-24 section 1). The steps do not change: the
            # clip controller still lands on every save time.
            idx = jnp.minimum(first[k] + jnp.arange(W), n_ts - 1)
        else:
            idx = jnp.arange(n_ts)
        sol = dfx.diffeqsolve(
            term, cfg.solver, ta, tb, cfg.dt0, y, u,
            saveat=dfx.SaveAt(ts=jnp.clip(ts[idx], ta, tb), t1=True),
            stepsize_controller=(
                dfx.ClipStepSizeController(cfg.controller, step_ts=ts) if cfg.exact_save else cfg.controller
            ),
            adjoint=cfg.adjoint,
            max_steps=cfg.max_steps,
            throw=False,
        )
        ok = sol.result == dfx.RESULTS.successful
        code = jnp.where(
            ok, Status.SUCCESS,
            jnp.where(sol.result == dfx.RESULTS.max_steps_reached, Status.MAX_STEPS_REACHED, Status.SOLVER_FAILED),
        )
        status = jnp.where(status == Status.SUCCESS, code, status)
        if windowed:
            # Repeated indices (the clipped tail) carry identical values, so the
            # scatter's order among them does not matter.
            out = out.at[idx].set(jnp.where((owner[idx] == k)[:, None], sol.ys[:-1], out[idx]))
        else:
            out = jnp.where((owner == k)[:, None], sol.ys[:-1], out)
        steps = steps + sol.stats["num_steps"]  # diffrax counts accepted + rejected
        return (sol.ys[-1], out, status, steps), None

    out0 = jnp.broadcast_to(y0, (ts.shape[0], n))
    init = (y0, out0, jnp.where(invalid, Status.INVALID_PARAMETERS, Status.SUCCESS), jnp.asarray(0))
    (_, ys, status, steps), _ = jax.lax.scan(segment, init, jnp.arange(n_seg))
    ys = jnp.where(status == Status.SUCCESS, ys, jnp.nan)
    return ys, _outputs(model, ts, ys), status, steps


def _outputs(model, ts, ys):
    """The model's outputs at each save time, as float arrays shaped like `ts`."""
    outs = jax.vmap(model.outputs)(ts, ys)
    return {k: jnp.broadcast_to(jnp.asarray(v, dtype=float), ts.shape) for k, v in outs.items()}


def _save_window(model, m_axes, reg_arrays, cidx, ts, t0) -> int | None:
    """The most save times any dosing segment of any patient can own, from the host.

    Segment k owns save times in $[B_k, B_{k+1}]$; counting them in that interval
    widened by a relative 1e-9 bounds what `_solve_one` finds even if its breakpoints
    differ from these by rounding (e.g. a fused multiply-add in `t_ev + F * dur`).
    Returns None when anything that sets the breakpoints (save times, dose times, lags,
    bioavailability of infusions given by rate) is traced; then every segment saves at
    every save time, as before."""
    if any(isinstance(x, jax.core.Tracer) for x in (ts, *reg_arrays, cidx, t0)):
        return None
    try:
        with jax.ensure_compile_time_eval():
            def lag_f(m):
                return (jnp.asarray(m.lag(), dtype=float), jnp.asarray(m.bioavailability(), dtype=float))
            if any(ax == 0 for ax in jax.tree.leaves(m_axes)):
                lag, F = jax.vmap(lag_f, in_axes=(m_axes,))(model)
            else:
                lag, F = lag_f(model)
    except Exception:  # a model whose lag() needs tracing machinery: keep the safe path
        return None
    if isinstance(lag, jax.core.Tracer) or isinstance(F, jax.core.Tracer):
        return None
    time, amount, duration, by_rate = (np.asarray(a, dtype=float) for a in reg_arrays)
    ts = np.asarray(ts, dtype=float)
    if time.shape[-1] == 0:
        return None
    n = model.n_states
    lag, F = np.asarray(lag, dtype=float).reshape(-1, n), np.asarray(F, dtype=float).reshape(-1, n)
    b = max(time.shape[0] if time.ndim == 2 else 1, ts.shape[0] if ts.ndim == 2 else 1, lag.shape[0], F.shape[0])
    lag, F = np.broadcast_to(lag, (b, n)), np.broadcast_to(F, (b, n))
    cidx = np.broadcast_to(np.asarray(cidx), (b, time.shape[-1]))
    time, duration, by_rate = (np.broadcast_to(a, cidx.shape) for a in (time, duration, by_rate))
    t2 = np.broadcast_to(ts, (b, ts.shape[-1]))
    # Breakpoints lie in [t0, t_final], so this is 1e-9 x max(1, |B|, |ts|) of every row.
    tol = 1e-9 * max(1.0, abs(float(t0)), float(np.abs(ts).max()))
    # In blocks of rows: each array below is (rows, ~2 n_events) floats, about 3 kB per
    # patient with 28 doses, so all rows at once held ~3 GB for 1e6 patients
    # (benchmarks/NOTES.md section 12).
    window = 1
    for r0 in range(0, b, _SAVE_WINDOW_ROWS):
        sl = slice(r0, r0 + _SAVE_WINDOW_ROWS)
        w = _save_window_rows(lag[sl], F[sl], cidx[sl], time[sl], duration[sl], by_rate[sl], t2[sl], ts, t0, tol)
        if w is None:
            return None
        window = max(window, w)
    return window


def _static_window(window: int | None, n_ts: int) -> int | None:
    """The save window `_solve_one` compiles for: `window` rounded up, coarsely.

    Coarse on purpose: the window is static, so each distinct value is a ~15 s compile
    (a new dose interval, or a longer tail after the last dose, changes it), while extra
    saves cost little: W = 8, 16, 32 and all 85 save times ran within ~15% of each other
    on pk2cmt (benchmarks/NOTES.md section 19). So a power of two, at least
    `_MIN_WINDOW`, and every save time once that would be over half of them."""
    if window is None:
        return None
    window = max(_MIN_WINDOW, _bucket(window))
    return n_ts if 2 * window > n_ts else window


_MIN_WINDOW = 16


def _bucket(n: int) -> int:
    """The smallest power of two >= n (n >= 1)."""
    return 1 << (int(n) - 1).bit_length()


_SAVE_WINDOW_ROWS = 8192


def _save_window_rows(lag, F, cidx, time, duration, by_rate, t2, ts, t0, tol) -> int | None:
    """`_save_window` for one block of rows (patients)."""
    m = cidx.shape[0]
    t_final = t2[:, -1:]
    t_ev = time + np.take_along_axis(lag, cidx, 1)
    is_inf = duration > 0
    eff_dur = np.where(is_inf, np.where(by_rate > 0, np.take_along_axis(F, cidx, 1) * duration, duration), 0.0)
    with np.errstate(invalid="ignore"):
        ends = np.clip(np.concatenate([t_ev, t_ev + eff_dur], axis=1), float(t0), t_final)
    B = np.sort(np.concatenate([np.full((m, 1), float(t0)), ends, t_final, t_final], axis=1), axis=1)
    if not np.isfinite(B).all():
        return None
    lo, hi = B[:, :-1] - tol, B[:, 1:] + tol
    if ts.ndim == 1:
        counts = np.searchsorted(ts, hi, side="right") - np.searchsorted(ts, lo, side="left")
    else:
        counts = np.stack([np.searchsorted(r, h, side="right") - np.searchsorted(r, l_, side="left")
                           for r, l_, h in zip(t2, lo, hi)])
    return max(1, int(counts.max()))


def _take(tree, axes, idx):
    """Rows `idx` of every leaf batched along axis 0 (per `axes`); others unchanged."""
    return jax.tree.map(
        lambda ax, x: x if ax is None else x[idx], axes, tree, is_leaf=lambda v: v is None
    )


def _run_chunked(args, axes, batch, size, t0, cfg, workers=1):
    """Fixed-size chunks (the last padded by repeating its final member), so a population
    of any size compiles once and holds one chunk's solver state in memory. Large
    single batches also stalled XLA's CPU runtime here (see qsp/__init__.py). With
    `workers > 1` the chunks run in that many processes (`qsp/_workers.py`)."""
    starts = range(0, batch, size)
    chunks = (_take(args, axes, np.minimum(np.arange(s, s + size), batch - 1)) for s in starts)
    if workers > 1 and len(starts) > 1:
        from ._workers import run_chunks

        outs = run_chunks(list(chunks), t0, cfg, axes, workers)
    else:
        outs = (_run(*c, t0, cfg, axes) for c in chunks)
    parts = [jax.tree.map(lambda x: np.asarray(x)[:min(size, batch - s)], out) for s, out in zip(starts, outs)]
    return jax.tree.map(lambda *xs: jnp.asarray(np.concatenate(xs)), *parts)


@eqx.filter_jit
def _run(model, reg_arrays, cidx, ts, after, invalid, t0, cfg, axes):
    fn = lambda m, r, c, t, a, i: _solve_one(m, *r, c, t, a, i, t0, cfg)
    m_ax, r_ax, c_ax, t_ax, a_ax, i_ax = axes
    if all(ax is None for ax in jax.tree.leaves((r_ax, c_ax, t_ax, a_ax, i_ax))) and not any(
        ax == 0 for ax in jax.tree.leaves(m_ax)
    ):
        return fn(model, reg_arrays, cidx, ts, after, invalid)
    return jax.vmap(fn, in_axes=(m_ax, r_ax, c_ax, t_ax, a_ax, i_ax))(model, reg_arrays, cidx, ts, after, invalid)


def simulate(
    model: ODEModel,
    regimen: Regimen | None = None,
    ts=None,
    *,
    t0: float = 0.0,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    max_steps: int = 4096,
    solver: dfx.AbstractSolver | None = None,
    adjoint: Any = "reverse",
    dt0: float | None = None,
    obs_after_dose: Any = False,
    exact_save: bool = True,
    batch_size: int | None = 1024,
    workers: int = 1,
    backend: str = "jax",
) -> Solution:
    """Simulate `model` under `regimen`, saving at `ts`.

    **Arguments:**

    - `model`: an `ODEModel`. Parameter leaves with a leading axis beyond their declared
      shape make it a population (all such leaves share that axis); each member is
      simulated (vmapped, one compile per shape).
    - `regimen`: a `Regimen` (or `None` for no doses); a batched regimen
      (`Regimen.stack`) gives one regimen per population member.
    - `ts`: save times, 1-D and non-decreasing, all `>= t0` (or `(batch, n_ts)`).
    - `t0`: start of the simulation (default 0; the model is at `initial()` there).
    - `rtol`, `atol`: step tolerances of the adaptive controller.
    - `max_steps`: maximum solver steps per dosing interval.
    - `solver`: any diffrax solver (with `backend="native"`: `None` for Rodas4, or
      `"bdf"`, below); default the model class's `default_solver(rtol, atol)`
      if it defines one (a static or class method), else `default_solver(rtol, atol)`
      (stiff Kvaerno5).
    - `adjoint`: `"reverse"` (default, for `jax.grad`), `"forward"` (for `jax.jacfwd`
      and `jax.jvp`), or a diffrax adjoint.
    - `obs_after_dose`: report an observation at a dose time after the dose (bool, or a
      bool per save time, or per patient and save time with a batched `ts`). Default:
      before it (see the module docstring).
    - `exact_save`: make the solver step exactly onto every save time (default), so
      saved values carry the step's full accuracy rather than the interpolant's.
      `False` interpolates: fewer steps on dense save grids, about 10x larger error.

    - `batch_size`: a population larger than this runs as fixed-size chunks of it
      (one compile, bounded memory); `None` runs it as one vmapped batch. Inside
      `jax.jit`/`jax.grad` the population always runs as one batch.
    - `workers`: processes that run the chunks in parallel (default 1: this process).
      On a CPU, one population solve keeps one core busy; `workers=os.cpu_count()`
      uses them all, with one compile per worker (from JAX's persistent cache if
      configured) and bit-identical results. Needs more than one chunk, and a model
      class importable by a fresh process (defined in a module, not a notebook cell).

    - `backend`: `"jax"` (default: diffrax in XLA, differentiable, any solver) or
      `"native"`: each patient solved by Rodas4 in C generated from the model's jaxpr
      and compiled with the system C compiler (`qsp/_native.py`); `workers` are threads
      of this process. Under `jax.jit`/`jax.grad` it runs as a callback whose VJP is the
      solver's discrete adjoint in C (`qsp/_native_grad.py`; reverse mode only, one
      batch, `exact_save=True`). Several times faster per patient on a CPU
      (benchmarks/NOTES.md section 16); results agree with the JAX backend to the
      step tolerances. `solver="bdf"` solves by variable-order BDF in C instead
      (`qsp/_bdf.c`: one Jacobian kept across many steps, as LSODA and CVODE do;
      NOTES section 21): fewer Jacobians for stiff populations, saves always
      interpolated, forward only (not under `jax.jit`/`jax.grad`).

    **Returns:** a `Solution`. Failed trajectories are flagged in `status`, never raised:
    call `sol.raise_if_failed()` to turn failure into an exception.
    """
    if not isinstance(model, ODEModel):
        raise TypeError(f"simulate expects a qsp.ODEModel; got {type(model).__name__}.")
    if ts is None:
        raise ValueError("simulate needs save times ts=..., e.g. ts=jnp.linspace(0, 24, 49).")
    if regimen is None:
        regimen = Regimen.empty()
    if not isinstance(regimen, Regimen):
        raise TypeError(f"regimen must be a qsp.Regimen or None; got {type(regimen).__name__}.")
    if backend not in ("jax", "native"):
        raise ValueError(f"backend={backend!r} is not known; expected 'jax' or 'native'.")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers={workers!r}; expected a whole number of processes >= 1.")
    ts = jnp.asarray(ts, dtype=float)
    if ts.ndim not in (1, 2) or ts.shape[-1] == 0:
        raise ValueError(f"ts must be a non-empty 1-D array of save times; got shape {ts.shape}.")
    if not isinstance(ts, jax.core.Tracer):
        t_np = np.asarray(ts)
        if np.isnan(t_np).any():
            raise ValueError("ts contains NaN; expected finite, non-decreasing save times.")
        if (np.diff(t_np, axis=-1) < 0).any():
            raise ValueError("ts must be sorted (non-decreasing); got unsorted save times.")
        if (t_np < t0).any():
            raise ValueError(f"ts must be >= t0={t0:g}; got min(ts)={t_np.min():g}.")
    if not isinstance(regimen.time, jax.core.Tracer) and regimen.n_events:
        t_np = np.asarray(regimen.time)
        if (t_np[np.isfinite(t_np)] < t0).any():
            raise ValueError(
                f"dose time {t_np[t_np < t0].min():g} is before the simulation start t0={t0:g}; "
                "expected dose times >= t0."
            )

    if regimen.n_events and not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(regimen)):
        # Empty events (t = inf, amount 0) up to a power of two: regimens of 13, 14 or 16
        # doses then share one compiled solve instead of ~15 s of compile each. The empty
        # events add degenerate segments at the horizon, ~4% of the run time for 14 -> 16
        # doses (benchmarks/NOTES.md section 19).
        regimen = regimen.pad(_bucket(regimen.n_events))

    model = _as_arrays(model)
    m_axes, sizes = _batch_axes(model)
    r_batched = regimen.time.ndim == 2
    t_batched = ts.ndim == 2
    if r_batched:
        sizes["regimen"] = regimen.time.shape[0]
    if t_batched:
        sizes["ts"] = ts.shape[0]
    if len(set(sizes.values())) > 1:
        detail = ", ".join(f"{k}: {v}" for k, v in sizes.items())
        raise ValueError(
            f"population axes disagree ({detail}); every batched parameter, the regimen "
            "and ts must share one leading batch size."
        )
    batch = next(iter(sizes.values())) if sizes else None

    after = jnp.asarray(obs_after_dose, dtype=bool)
    if after.ndim == 2 and not t_batched:
        raise ValueError(
            f"obs_after_dose has shape {after.shape} (one row per patient) but ts is 1-D; "
            "pass ts with shape (batch, n_ts) too, or a 1-D obs_after_dose."
        )
    a_batched = after.ndim == 2
    after = jnp.broadcast_to(after, ts.shape if a_batched else ts.shape[-1:])
    invalid_mask = _check_parameters(model, batched=batch is not None)
    if batch is not None:
        invalid = jnp.asarray(invalid_mask if invalid_mask is not None else np.zeros(batch, bool))
        i_ax = 0
    else:
        invalid, i_ax = jnp.asarray(False), None

    cidx = regimen.resolve(type(model))
    reg_arrays = (regimen.time, regimen.amount, regimen.duration, regimen.by_rate)
    r_ax = 0 if r_batched else None
    solver_arg = solver
    if isinstance(solver, str):
        if backend != "native" or solver not in _NATIVE_METHODS:
            raise ValueError(
                f"solver={solver!r}: a name selects a method of backend='native' ("
                f"{', '.join(map(repr, _NATIVE_METHODS))}); with backend='jax' pass a diffrax "
                "solver, e.g. qsp.Rodas4() or diffrax.Kvaerno5()."
            )
        solver = None
    if solver is None:
        # A model may declare its own default (e.g. an explicit solver for non-stiff PK,
        # where Kvaerno5 costs ~14x the CPU of Tsit5 for the same steps:
        # benchmarks/NOTES.md, 2026-11-24 section 2): a `default_solver(rtol, atol)`
        # static or class method on the model class.
        own = getattr(type(model), "default_solver", None)
        solver = own(rtol, atol) if callable(own) else default_solver(rtol, atol)
    cfg = _Config(
        solver=solver,
        controller=StepController(rtol=rtol, atol=atol),
        adjoint=_adjoint(adjoint),
        max_steps=int(max_steps),
        dt0=dt0,
        exact_save=bool(exact_save),
        save_window=_static_window(_save_window(model, m_axes, reg_arrays, cidx, ts, t0), ts.shape[-1]),
    )
    axes = (m_axes, (r_ax,) * 4, r_ax, 0 if t_batched else None, 0 if a_batched else None, i_ax)
    args = (model, reg_arrays, cidx, ts, after, invalid)
    t0_ = jnp.asarray(t0, dtype=float)
    traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(args))
    if backend == "native":
        method = _check_native(solver_arg, dt0)
        if traced:  # jit/grad: a callback with the discrete adjoint as its VJP
            if method != "rodas4":
                raise ValueError(
                    f"solver={method!r} has no adjoint: under jax.jit/jax.grad backend='native' "
                    "solves by Rodas4 and differentiates its steps. Drop solver=, or call "
                    "simulate outside jit for a BDF forward solve."
                )
            from ._native_grad import simulate_traced

            ys, outs, status, steps = simulate_traced(args, axes, t0_, rtol, atol, int(max_steps), int(workers),
                                                      bool(exact_save))
            if batch is None:
                ys, status, steps = ys[0], status[0], steps[0]
                outs = {k: v[0].reshape(ts.shape) for k, v in outs.items()}
            return Solution(ts=ts, states=ys, outputs=outs, status=status, num_steps=steps,
                            state_names=tuple(model.states))
        from ._native import simulate_native

        ys, outs, status, steps = simulate_native(
            args, axes, batch, t0_, rtol, atol, int(max_steps), batch_size, int(workers), bool(exact_save), method)
        return Solution(ts=ts, states=jnp.asarray(ys), outputs={k: jnp.asarray(v) for k, v in outs.items()},
                        status=jnp.asarray(status), num_steps=jnp.asarray(steps),
                        state_names=tuple(model.states))
    if batch is None or traced or batch_size is None or batch <= batch_size:
        with _checks_without_callbacks():
            ys, outs, status, steps = _run(*args, t0_, cfg, axes)
    else:
        with _checks_without_callbacks():
            ys, outs, status, steps = _run_chunked(args, axes, batch, int(batch_size), t0_, cfg, workers)
    return Solution(ts=ts, states=ys, outputs=outs, status=status, num_steps=steps, state_names=tuple(model.states))
