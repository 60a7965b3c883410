"""Clinical regimens for the T-cell engager CRS model (`TCECRS`), as `qsp.Regimen`.

Every drug dose goes into `Drug_C` (mg) and adds 1 to the injection-effect state `I`
(Hosseini 2020 MATLAB code: each dose event bumps the injection effect). Time is in
days; day 1 of cycle k is t = 21 (k - 1).

Mosunetuzumab (Lunsumio USPI/EU SmPC): IV infusions, 21-day cycles, step-up on C1D1,
C1D8, C1D15. The approved (`label`) schedule is 1/2/60 mg on C1D1/D8/D15, 60 mg on
C2D1 and 30 mg on D1 of C3 onwards. Cycle-1 infusions last 4 h, later ones 2 h
(label: 4 h in C1, 2 h afterwards if tolerated).

Blinatumomab (Hosseini 2020 Fig 4c/d, data of Hijazi 2018): continuous IV infusion in
ug/m2/day, step-up 5 -> 15 -> 60 weekly, or flat 60; amounts convert with the body
surface area (`bsa`, m2) of the blinatumomab model.

Notation (`parse`): `label`, or `D1[/D8[/D15]][:M]`, the cycle-1 doses in mg on days
1, 8 and 15 (as many as written) and the dose M on day 1 of every later cycle (M
defaults to the last cycle-1 dose): `20`, `1.6/20`, `6.7/6.7/6.7:20`, `0.4`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qsp import Regimen

CYCLE = 21.0  # days
C1_HOURS = 4.0  # infusion length in cycle 1 (h)
LATER_HOURS = 2.0  # infusion length from cycle 2 (h)


def _traced(*xs) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(xs))


def doses(amounts_mg: Sequence[float], times_d: Sequence[float], hours: Sequence[float]) -> Regimen:
    """IV infusions of `amounts_mg` (mg) starting at `times_d` (days) lasting `hours`,
    each adding 1 to the injection effect `I`.

    Concrete inputs build a numpy-backed regimen and are checked (positive amounts).
    When any input is a JAX tracer (inside `jax.grad`/`jit`, e.g. `qsp.optimize`), the
    regimen is built with `jax.numpy` so amounts and times stay differentiable; traced
    values cannot be checked here. The number of doses is always static."""
    xp = jnp if _traced(amounts_mg, times_d, hours) else np
    amounts = xp.asarray(amounts_mg, dtype=float)
    times = xp.asarray(times_d, dtype=float)
    dur = xp.asarray(hours, dtype=float) / 24.0
    if amounts.shape != times.shape or amounts.shape != dur.shape or amounts.ndim != 1:
        raise ValueError(
            f"doses needs equal-length 1-D amounts, times and hours; got {amounts.shape}, "
            f"{times.shape}, {dur.shape}."
        )
    if len(amounts) == 0:
        raise ValueError("doses needs at least one dose.")
    if xp is np:
        for i, a in enumerate(amounts):
            if not np.isfinite(a) or a <= 0:
                raise ValueError(f"dose amount[{i}]={a:g} mg; expected a positive number of mg.")
    drug = Regimen.infusion(amount=amounts, time=times, cmt="Drug_C", duration=dur)
    return drug + Regimen.bolus(amount=xp.ones_like(amounts), time=times, cmt="I")


def mosunetuzumab(c1: Sequence[float], later: Sequence[float] | float | None = None, cycles: int = 4,
                  c1_days: Sequence[float] | None = None) -> Regimen:
    """Mosunetuzumab: cycle-1 doses `c1` (mg) on C1D1, D8, D15 (as many as given; or on
    `c1_days`, days since C1D1, increasing and before C2D1), then `later` on D1 of cycles
    2..`cycles` (a number, or one dose per later cycle; default the last cycle-1 dose).
    4-h infusions in cycle 1, 2-h later. Doses and days may be JAX tracers (see `doses`)."""
    traced = _traced(c1, later, c1_days)
    conv = (lambda xs: list(xs)) if traced else (lambda xs: [float(x) for x in xs])
    c1 = conv(c1)
    if not 1 <= len(c1) <= 3:
        raise ValueError(f"c1={c1!r}: expected 1 to 3 cycle-1 doses (days 1, 8, 15).")
    if int(cycles) != cycles or cycles < 1:
        raise ValueError(f"cycles={cycles!r}: expected an integer >= 1.")
    n_later = int(cycles) - 1
    if later is None:
        later = c1[-1]
    if np.ndim(later) == 0:
        later = [later] * n_later
    later = conv(later)
    if len(later) < n_later:
        later = later + [later[-1]] * (n_later - len(later)) if later else [c1[-1]] * n_later
    later = later[:n_later]
    if c1_days is None:
        days = [7.0 * i for i in range(len(c1))]
    else:
        days = conv(c1_days)
        if len(days) != len(c1):
            raise ValueError(f"c1_days={days!r}: expected one day per cycle-1 dose ({len(c1)}).")
        if not _traced(c1_days):
            d = np.asarray(days, dtype=float)
            if not (np.all(np.isfinite(d)) and d[0] >= 0 and np.all(np.diff(d) > 0) and d[-1] < CYCLE):
                raise ValueError(f"c1_days={days!r}: expected increasing days in [0, {CYCLE:g}).")
    amounts = c1 + later
    times = days + [CYCLE * k for k in range(1, n_later + 1)]
    hours = [C1_HOURS] * len(c1) + [LATER_HOURS] * n_later
    return doses(amounts, times, hours)


def label(cycles: int = 4) -> Regimen:
    """The approved step-up: 1/2/60 mg C1D1/D8/D15, 60 mg C2D1, 30 mg D1 from C3
    (Lunsumio USPI 2022, section 2.2)."""
    return mosunetuzumab([1.0, 2.0, 60.0], [60.0] + [30.0] * max(cycles - 2, 0), cycles)


def flat(dose_mg: float = 20.0, cycles: int = 4) -> Regimen:
    """A fixed dose on D1 of every cycle (Hosseini 2020 compares flat 20 mg)."""
    return mosunetuzumab([dose_mg], dose_mg, cycles)


def parse(spec: str, cycles: int = 4) -> Regimen:
    """A mosunetuzumab regimen from the notation in the module docstring."""
    s = spec.strip()
    if s == "label":
        return label(cycles)
    m = re.fullmatch(r"([0-9.eE+-]+(?:/[0-9.eE+-]+){0,2})(?::([0-9.eE+-]+))?", s)
    if m is None:
        raise ValueError(
            f"regimen {spec!r} is not understood; expected 'label' or D1[/D8[/D15]][:M] "
            "in mg, e.g. '20', '1.6/20', '6.7/6.7/6.7:20'."
        )
    try:
        c1 = [float(x) for x in m.group(1).split("/")]
        maint = float(m.group(2)) if m.group(2) else None
    except ValueError:
        raise ValueError(f"regimen {spec!r}: doses must be numbers in mg, e.g. '1.6/20'.") from None
    return mosunetuzumab(c1, maint, cycles)


# -- blinatumomab ----------------------------------------------------------------------


def blinatumomab(rates_ug_m2_day: Sequence[float], starts_d: Sequence[float], end_d: float, bsa: float) -> Regimen:
    """Continuous IV infusion at `rates_ug_m2_day[i]` from `starts_d[i]` until the next
    start (the last until `end_d`), for a patient of body surface area `bsa` (m2).
    Amounts are in mg (1 ug = 1e-3 mg)."""
    rates = np.asarray(rates_ug_m2_day, dtype=float)
    starts = np.asarray(starts_d, dtype=float)
    ends = np.append(starts[1:], float(end_d))
    if np.any(ends <= starts):
        raise ValueError(f"blinatumomab: end_d={end_d:g} must follow the last start {starts[-1]:g}.")
    amounts = rates * (ends - starts) * bsa * 1e-3  # mg
    drug = Regimen.infusion(amount=amounts, time=starts, cmt="Drug_C", duration=ends - starts)
    return drug + Regimen.bolus(amount=np.ones_like(amounts), time=starts, cmt="I")


def blinatumomab_step_up(bsa: float = 1.9, end_d: float = 28.0) -> Regimen:
    """5 -> 15 -> 60 ug/m2/day, stepping up weekly (Hosseini 2020 Fig 4c; Hijazi 2018)."""
    return blinatumomab([5.0, 15.0, 60.0], [0.0, 7.0, 14.0], end_d, bsa)


def blinatumomab_flat(bsa: float = 1.9, end_d: float = 28.0) -> Regimen:
    """Flat 60 ug/m2/day from day 0 (Hosseini 2020 Fig 4d)."""
    return blinatumomab([60.0], [0.0], end_d, bsa)
