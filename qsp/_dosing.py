"""`Regimen`: dose events as padded arrays, so regimens vmap across patients and arms.

Each event has a time, an amount, a duration (0 for a bolus) and a target compartment.
Repeated dosing (NONMEM II/ADDL) is expanded when the regimen is built, so every
regimen is a flat, fixed-size table; `Regimen.stack` pads several regimens to one size
and adds a leading axis (one regimen per patient or per arm).

Zero-order infusions follow NONMEM: given by `rate`, bioavailability F changes the
duration (F*AMT/RATE) and keeps the rate; given by `duration`, F changes the rate and
keeps the duration. Amounts and times are ordinary JAX leaves, so `jax.grad` flows
through them (dose-size and step-up-day optimisation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._model import resolve_cmt

_PAD_TIME = np.inf


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _xp(*arrays):
    """numpy for concrete inputs (building thousands of regimens stays cheap), jax.numpy
    when any input is traced (so gradients flow through amounts and times)."""
    return np if all(_is_concrete(a) for a in arrays) else jnp


def _as_1d(name: str, value, dtype=None):
    arr = value if isinstance(value, jax.Array) else np.asarray(value, dtype=dtype)
    if arr.ndim > 1:
        raise ValueError(f"Regimen {name} must be a scalar or a 1-D sequence; got shape {arr.shape}.")
    return arr.reshape(-1)


def _check_concrete(name: str, arr, *, allow_zero=True, allow_inf=False):
    if not _is_concrete(arr):
        return
    a = np.asarray(arr, dtype=float)
    for i, v in enumerate(a):
        if np.isnan(v):
            raise ValueError(f"Regimen {name}[{i}] is NaN; expected a finite number >= 0.")
        if not allow_inf and np.isinf(v):
            raise ValueError(f"Regimen {name}[{i}]={v} is not finite; expected a finite number >= 0.")
        if v < 0:
            raise ValueError(f"Regimen {name}[{i}]={v:g} is negative; expected a number >= 0.")
        if not allow_zero and v == 0:
            raise ValueError(f"Regimen {name}[{i}]=0; expected a number > 0.")


class Regimen(eqx.Module):
    """A dosing regimen: a table of dose events.

    Build regimens with `Regimen.bolus`, `Regimen.infusion` and `Regimen.step_up`,
    combine them with `+` (several doses, drugs or compartments), and pad/stack them
    with `Regimen.stack` for populations and trial arms.

    **Fields** (arrays of shape `(..., n_events)`; a leading axis is a batch of
    regimens): `time`, `amount`, `duration` (0 for a bolus), `by_rate` (1 where the
    infusion was specified by rate), `target` (index into the static `targets` tuple
    of compartments, each a state name or a 1-based CMT number).
    """

    time: Any
    amount: Any
    duration: Any
    by_rate: Any
    target: Any
    targets: tuple = eqx.field(static=True)

    # -- constructors -----------------------------------------------------------------

    @classmethod
    def bolus(cls, amount, time=0.0, cmt=1, ii=0.0, addl=0) -> "Regimen":
        """Instantaneous doses.

        **Arguments:** `amount` and `time` (scalars or sequences, broadcast together;
        times non-decreasing and >= 0), `cmt` (state name or 1-based CMT number),
        `ii` (interdose interval) and `addl` (number of additional doses, NONMEM ADDL).

        !!! example
            `Regimen.bolus(amount=100.0, time=0.0, cmt="CENT", ii=24.0, addl=6)` is a
            daily 100-unit bolus for a week.
        """
        return cls._build(amount, time, cmt, ii, addl, duration=0.0, by_rate=False)

    @classmethod
    def infusion(cls, amount, time=0.0, cmt=1, *, duration=None, rate=None, ii=0.0, addl=0) -> "Regimen":
        """Zero-order infusions, given by `duration` or by `rate` (exactly one).

        An infusion may outlast later doses; overlapping infusions add their rates.
        """
        if (duration is None) == (rate is None):
            raise ValueError(
                "Regimen.infusion needs exactly one of duration=... or rate=...; "
                f"got duration={duration!r}, rate={rate!r}."
            )
        if rate is not None:
            r = _as_1d("rate", rate, float)
            _check_concrete("rate", r, allow_zero=False)
            amount_1d = _as_1d("amount", amount, float)
            n = max(len(r), len(amount_1d))
            r = jnp.broadcast_to(r, (n,)) if len(r) != n else r
            amount_1d = jnp.broadcast_to(amount_1d, (n,)) if len(amount_1d) != n else amount_1d
            dur = amount_1d / r
            return cls._build(amount_1d, time, cmt, ii, addl, duration=dur, by_rate=True)
        d = _as_1d("duration", duration, float)
        _check_concrete("duration", d, allow_zero=False)
        return cls._build(amount, time, cmt, ii, addl, duration=d, by_rate=False)

    @classmethod
    def step_up(cls, amounts, times, cmt=1, *, duration=None) -> "Regimen":
        """A step-up sequence: dose `amounts[i]` at `times[i]`, as boluses or, with
        `duration`, as infusions of that duration."""
        if duration is None:
            return cls.bolus(amount=amounts, time=times, cmt=cmt)
        return cls.infusion(amount=amounts, time=times, cmt=cmt, duration=duration)

    @classmethod
    def empty(cls) -> "Regimen":
        """No doses."""
        z = np.zeros((0,))
        return cls(z, z, z, z, np.zeros((0,), dtype=np.int32), ())

    @classmethod
    def _build(cls, amount, time, cmt, ii, addl, *, duration, by_rate) -> "Regimen":
        amount = _as_1d("amount", amount, float)
        time = _as_1d("time", time, float)
        ii_ = _as_1d("ii", ii, float)
        addl_ = np.asarray(addl).reshape(-1)
        duration = _as_1d("duration", duration, float)
        cmts = list(cmt) if isinstance(cmt, (list, tuple, np.ndarray)) else [cmt]
        lengths = {len(a) for a in (amount, time, ii_, addl_, duration, cmts)} - {1}
        if len(lengths) > 1:
            raise ValueError(
                "Regimen sequences must have equal lengths (or length 1); got "
                f"amount={len(amount)}, time={len(time)}, ii={len(ii_)}, addl={len(addl_)}, "
                f"duration={len(duration)}, cmt={len(cmts)}."
            )
        n = lengths.pop() if lengths else 1
        _check_concrete("time", time)
        _check_concrete("amount", amount)
        _check_concrete("ii", ii_)
        if _is_concrete(time):
            t = np.asarray(time, dtype=float)
            bad = np.nonzero(np.diff(t) < 0)[0]
            if len(bad):
                i = int(bad[0]) + 1
                raise ValueError(
                    f"Regimen time must be sorted (non-decreasing); got time[{i}]={t[i]:g} "
                    f"after time[{i - 1}]={t[i - 1]:g}. Sort the doses, or build them "
                    "separately and combine with `+`."
                )
        if not np.issubdtype(addl_.dtype, np.integer) or np.any(addl_ < 0):
            raise ValueError(f"Regimen addl={addl!r} must be a non-negative integer.")
        if _is_concrete(ii_):
            ii_np = np.broadcast_to(np.asarray(ii_, dtype=float), (n,))
            for i, (a, d) in enumerate(zip(np.broadcast_to(addl_, (n,)), ii_np)):
                if a > 0 and d <= 0:
                    raise ValueError(
                        f"Regimen addl[{i}]={a} needs a positive interdose interval; got ii={d:g}."
                    )
        for c in cmts:
            if isinstance(c, str):
                continue
            if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)) or c < 1:
                raise ValueError(
                    f"Regimen cmt={c!r} must be a state name or a 1-based CMT number (int >= 1)."
                )

        xp = _xp(amount, time, ii_, duration)

        def bc(a):
            return xp.broadcast_to(xp.asarray(a, dtype=float), (n,))

        amount, time, ii_, duration = bc(amount), bc(time), bc(ii_), bc(duration)
        addl_ = np.broadcast_to(addl_, (n,)).astype(int)
        cmts = cmts * n if len(cmts) == 1 else cmts
        # NONMEM ADDL: doses at time + k*II, k = 0..ADDL.
        rep = np.repeat(np.arange(n), addl_ + 1)
        k = np.concatenate([np.arange(a + 1) for a in addl_]).astype(float)
        targets = tuple(dict.fromkeys(cmts))
        target = np.asarray([targets.index(cmts[i]) for i in rep], dtype=np.int32)
        reg = cls(
            time=time[rep] + k * ii_[rep],
            amount=amount[rep],
            duration=duration[rep],
            by_rate=np.full(len(rep), 1.0 if by_rate else 0.0),
            target=target,
            targets=targets,
        )
        return reg._sorted()

    # -- combination -------------------------------------------------------------------

    def _sorted(self) -> "Regimen":
        if self.time.ndim != 1 or not _is_concrete(self.time):
            return self
        order = np.argsort(np.asarray(self.time), kind="stable")
        if np.all(order == np.arange(len(order))):
            return self
        return Regimen(
            self.time[order], self.amount[order], self.duration[order],
            self.by_rate[order], self.target[order], self.targets,
        )

    def __add__(self, other: "Regimen") -> "Regimen":
        if not isinstance(other, Regimen):
            return NotImplemented
        if self.time.ndim != 1 or other.time.ndim != 1:
            raise ValueError("`+` combines single regimens; combine before `Regimen.stack`.")
        targets = tuple(dict.fromkeys(self.targets + other.targets))
        remap = np.asarray([targets.index(t) for t in other.targets] or [0], dtype=np.int32)
        other_target = remap[np.asarray(other.target)] if len(other.targets) else other.target
        xp = _xp(*jax.tree.leaves(self), *jax.tree.leaves(other))
        cat = lambda a, b: xp.concatenate([xp.asarray(a), xp.asarray(b)])
        return Regimen(
            cat(self.time, other.time), cat(self.amount, other.amount),
            cat(self.duration, other.duration), cat(self.by_rate, other.by_rate),
            cat(self.target, other_target).astype(np.int32), targets,
        )._sorted()

    def pad(self, n_events: int) -> "Regimen":
        """Pad with empty events (amount 0, at t = inf) to exactly `n_events` events."""
        n = self.n_events
        if n_events < n:
            raise ValueError(f"Regimen.pad(n_events={n_events}) is smaller than its {n} events.")
        extra = n_events - n
        xp = _xp(*jax.tree.leaves(self))

        def p(a, fill, dtype=float):
            a = xp.asarray(a, dtype=dtype)
            return xp.concatenate([a, xp.full(a.shape[:-1] + (extra,), fill, dtype=a.dtype)], axis=-1)

        return Regimen(
            p(self.time, _PAD_TIME), p(self.amount, 0.0), p(self.duration, 0.0),
            p(self.by_rate, 0.0), p(self.target, 0, np.int32), self.targets,
        )

    @staticmethod
    def stack(regimens: Sequence["Regimen"], n_events: int | None = None) -> "Regimen":
        """Pad regimens to a common size and stack them along a new leading axis (one
        regimen per patient or per arm)."""
        regimens = list(regimens)
        if not regimens:
            raise ValueError("Regimen.stack needs at least one regimen.")
        targets = tuple(dict.fromkeys(t for r in regimens for t in r.targets))
        remapped = []
        for r in regimens:
            if r.time.ndim != 1:
                raise ValueError("Regimen.stack takes single (unbatched) regimens.")
            m = np.asarray([targets.index(t) for t in r.targets] or [0], dtype=np.int32)
            tgt = m[np.asarray(r.target)] if r.targets else r.target
            remapped.append(Regimen(r.time, r.amount, r.duration, r.by_rate, tgt, targets))
        n = max(r.n_events for r in remapped) if n_events is None else n_events
        padded = [r.pad(n) for r in remapped]
        leaves = [jax.tree.leaves(r) for r in padded]
        if all(_is_concrete(x) for ls in leaves for x in ls):
            # One numpy stack per field: jnp.stack over thousands of arrays is slow.
            stack = lambda *xs: np.stack([np.asarray(x) for x in xs])
        else:
            stack = lambda *xs: jnp.stack(xs)
        return jax.tree.map(stack, *padded)

    # -- inspection --------------------------------------------------------------------

    @property
    def n_events(self) -> int:
        return int(self.time.shape[-1])

    def resolve(self, model_cls) -> jnp.ndarray:
        """0-based state index of every event's compartment for `model_cls`."""
        if not self.targets:
            return jnp.zeros(self.target.shape, dtype=jnp.int32)
        idx = jnp.asarray([resolve_cmt(model_cls, t) for t in self.targets], dtype=jnp.int32)
        return idx[self.target]

    def to_frame(self):
        """The events as a pandas DataFrame (one row per event)."""
        import pandas as pd

        if self.time.ndim != 1:
            raise ValueError("to_frame() shows a single regimen; index the batch first.")
        return pd.DataFrame(
            {
                "time": np.asarray(self.time),
                "amount": np.asarray(self.amount),
                "duration": np.asarray(self.duration),
                "cmt": [self.targets[int(i)] for i in np.asarray(self.target)] if self.targets else [],
            }
        )
