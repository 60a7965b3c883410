r"""Many patients x many arms in one compiled call: exact PK, fixed-step RK4 for the PD.

The PK of all four drugs is linear, $\dot x = A x$ between doses, so it is propagated
exactly with $e^{A\,h}$ (no stiffness, whatever the absorption rate: the 250-patient
resample has $k_a$ up to $8 \times 10^4$/day). The six PD states are not stiff (the
fastest rate is $r_5 = 10$/day), so classical RK4 on a fixed grid of step `dt`
integrates them, with the drug concentrations at the step's start, midpoint
($e^{A h/2} x$) and end taken from the exact PK. Doses lie on the grid (the clinical
schedules dose at multiples of half a day) and are added at the start of their step.

With `dt = 0.01` day this agrees with `qsp.simulate` (adaptive; the model's default
`qsp.Rodas4`, Kvaerno5 before 2026-12-02) on day-56 tumour size to within 2e-5
relative (`tests/test_mapk.py`), and
`shared/references/mapk.md` §2.9 found the same step reproduce mrgsolve's ORR.
Everything is differentiable: dose amounts and every model parameter.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._dosing import DOSE_CMT, DRUGS, SCHEDULES, dose_times, parse_arm
from ._model import Kirouac2017

#: PK states of `Kirouac2017` in the order of the PK sub-vector (model states 6..13).
PK_STATES = Kirouac2017.states[6:]
_DOSE_IDX = np.array([PK_STATES.index(DOSE_CMT[d]) for d in DRUGS])


def pk_matrix(m: Kirouac2017):
    """The 8x8 matrix $A$ of the linear PK, $\\dot x = A x$, for one patient."""
    z = jnp.zeros(())
    f = lambda v: jnp.asarray(v, float) + z
    k12, k21 = f(m.q2) / f(m.V3), f(m.q2) / f(m.V3b)
    A = jnp.zeros((8, 8))
    A = A.at[0, 0].set(-f(m.ke1))
    A = A.at[1, 1].set(-f(m.ka2)).at[2, 1].set(f(m.F2) * f(m.ka2)).at[2, 2].set(-f(m.ke2))
    A = A.at[3, 3].set(-f(m.ka3)).at[4, 3].set(f(m.F3) * f(m.ka3))
    A = A.at[4, 4].set(-f(m.ke3) - k12).at[4, 5].set(k21).at[5, 4].set(k12).at[5, 5].set(-k21)
    A = A.at[6, 6].set(-f(m.ka4)).at[7, 6].set(f(m.F4) * f(m.ka4)).at[7, 7].set(-f(m.ke4))
    return A


def dose_grid(arms, days: float, dt: float) -> np.ndarray:
    """Indicator of a dose of each drug at the start of each step: `(n_arms, n_steps, 4)`."""
    n_steps = int(round(days / dt))
    if abs(n_steps * dt - days) > 1e-9 * days:
        raise ValueError(f"dt={dt} must divide days={days}.")
    grid = np.zeros((len(arms), n_steps, len(DRUGS)))
    for a, arm in enumerate(arms):
        for drug in parse_arm(arm):
            t = dose_times(drug, days)
            k = np.rint(t / dt).astype(int)
            if np.abs(k * dt - t).max(initial=0) > 1e-9:
                raise ValueError(f"dose times of {drug} are not on the dt={dt} grid.")
            grid[a, k, DRUGS.index(drug)] = 1.0
    return grid


def _batch_axes(model):
    """vmap axes of a population model: 0 for parameter leaves with a patient axis."""
    return jax.tree.map(lambda x: 0 if eqx.is_array(x) and x.ndim > 0 else None, model)


def _n_patients(model):
    sizes = {x.shape[0] for x in jax.tree.leaves(model) if eqx.is_array(x) and x.ndim > 0}
    if len(sizes) > 1:
        raise ValueError(f"population parameters disagree on the number of patients: {sorted(sizes)}.")
    return sizes.pop() if sizes else None


def _one(m: Kirouac2017, grid, doses, dt, n_save):
    """Day-by-day PD trajectory of one patient under one arm's dose grid."""
    A = pk_matrix(m)
    E, E_half = jax.scipy.linalg.expm(A * dt), jax.scipy.linalg.expm(A * (dt / 2))
    conc = lambda x: m.concentrations(jnp.concatenate([jnp.zeros(6), x]))
    f = lambda y, c: m.pd_rhs(y, c)
    y0 = jnp.asarray(m.initial(), float)
    amounts = jnp.zeros((grid.shape[-2], 8)).at[:, _DOSE_IDX].set(grid * doses)

    def step(carry, dose):
        y, x = carry
        x = x + dose
        c0, c1, c2 = conc(x), conc(E_half @ x), conc(E @ x)
        k1 = f(y, c0)
        k2 = f(y + 0.5 * dt * k1, c1)
        k3 = f(y + 0.5 * dt * k2, c1)
        k4 = f(y + dt * k3, c2)
        return (y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4), E @ x), None

    def block(carry, doses_block):
        carry, _ = jax.lax.scan(step, carry, doses_block)
        return carry, carry[0]

    blocks = amounts.reshape(n_save, -1, 8)
    _, ys = jax.lax.scan(block, (y0[:6], y0[6:]), blocks)
    return jnp.concatenate([y0[None, :6], ys], axis=0)


def _run(model, grid, dose_vec, dt: float, n_save: int, batched: bool):
    per_patient = lambda m, g: _one(m, g, dose_vec, dt, n_save)
    if batched:
        per_patient = jax.vmap(per_patient, in_axes=(_batch_axes(model), None))
    return jax.vmap(per_patient, in_axes=(None, 0))(model, grid)


# One module-level jitted function (dt, n_save, batched static): a closure built per
# call was a new function to jit each time, so every call recompiled (~10-20 s).
_run_jit = eqx.filter_jit(_run)


@dataclasses.dataclass(frozen=True)
class TrialResult:
    """Output of `simulate_trial`: `times` (day, `(n_save + 1,)`), `states`
    (`(n_arms, n_patients, n_save + 1, 6)`: FB1-4, TD1, CELLS) and `size`
    (day-`days` tumour size, `(n_arms, n_patients)`)."""

    arms: tuple
    times: np.ndarray
    states: jax.Array

    @property
    def size(self):
        return self.states[..., -1, 5]


def simulate_trial(model: Kirouac2017, arms=("untreated",), *, days: float = 56.0, dt: float = 0.01,
                   save_dt: float = 1.0, doses: dict | None = None, jit: bool = True) -> TrialResult:
    """Simulate every patient of `model` (a population: leaves with a leading patient
    axis, or one patient) under every arm, in one compiled call.

    **Arguments:** `arms` (names, see `parse_arm`), `days` (read-out day), `dt` (RK4
    step, day; must divide `save_dt` and dose times), `save_dt` (spacing of saved
    states), `doses` (mg per administration by drug; default the clinical doses;
    may be traced for gradients).
    """
    arms = tuple(arms)
    n_save = int(round(days / save_dt))
    if abs(n_save * save_dt - days) > 1e-9 * days or abs(round(save_dt / dt) * dt - save_dt) > 1e-9:
        raise ValueError(f"save_dt={save_dt} must divide days={days} and be a multiple of dt={dt}.")
    grid = jnp.asarray(dose_grid(arms, days, dt))
    d = {k: SCHEDULES[k][0] for k in DRUGS} | dict(doses or {})
    unknown = set(d) - set(DRUGS)
    if unknown:
        raise ValueError(f"doses names unknown drug(s) {sorted(unknown)}; expected {DRUGS}.")
    dose_vec = jnp.stack([jnp.asarray(d[k], float) for k in DRUGS])
    model = jax.tree.map(lambda x: jnp.asarray(x, float) if isinstance(x, (int, float)) else x, model)
    n = _n_patients(model)
    states = (_run_jit if jit else _run)(model, grid, dose_vec, float(dt), n_save, n is not None)
    if n is None:
        states = states[:, None]
    times = np.arange(n_save + 1) * save_dt
    return TrialResult(arms=arms, times=times, states=states)
