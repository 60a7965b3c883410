"""`Solution`: what `qsp.simulate` returns, with a status per trajectory."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np


class Status:
    """Outcome codes of one trajectory (`Solution.status`)."""

    SUCCESS = 0
    MAX_STEPS_REACHED = 1
    SOLVER_FAILED = 2
    INVALID_PARAMETERS = 3

    MESSAGES = {
        0: "success",
        1: "the solver reached max_steps in a dosing interval; raise max_steps= or loosen rtol/atol",
        2: "the solver failed (step size collapsed or a non-finite value appeared); check the "
        "parameters, or try a tighter atol or another solver",
        3: "a parameter is NaN, infinite or outside its declared bounds",
    }

    @classmethod
    def message(cls, code: int) -> str:
        return cls.MESSAGES.get(int(code), f"unknown status {int(code)}")


class Solution(eqx.Module):
    """A simulated trajectory, or a batch of them.

    **Fields:**

    - `ts`: the save times, shape `(n_ts,)` (or `(batch, n_ts)` for per-patient times).
    - `states`: shape `(..., n_ts, n_states)`, ordered as `state_names`.
    - `outputs`: dict of arrays of shape `(..., n_ts)` by output name.
    - `status`: integer `Status` code per trajectory, shape `(...)`; 0 is success.
      A failed trajectory's states and outputs are NaN and its status says why.
    - `num_steps`: accepted plus rejected solver steps per trajectory.
    """

    ts: Any
    states: Any
    outputs: dict
    status: Any
    num_steps: Any
    state_names: tuple = eqx.field(static=True)

    @property
    def ok(self):
        """Boolean mask of successful trajectories."""
        return jnp.asarray(self.status) == Status.SUCCESS

    @property
    def failed(self) -> np.ndarray:
        """Indices (into the batch) of failed trajectories."""
        return np.flatnonzero(np.asarray(self.status).reshape(-1) != Status.SUCCESS)

    def state(self, name: str):
        """One state's trajectory by name."""
        if name not in self.state_names:
            raise KeyError(f"unknown state {name!r}; states are {self.state_names}.")
        return self.states[..., self.state_names.index(name)]

    def raise_if_failed(self) -> "Solution":
        """Raise a `RuntimeError` naming each failed trajectory and why."""
        status = np.asarray(self.status).reshape(-1)
        bad = np.flatnonzero(status != Status.SUCCESS)
        if len(bad):
            lines = [f"trajectory {i}: {Status.message(status[i])}" for i in bad[:10]]
            more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
            raise RuntimeError(f"{len(bad)} trajectories failed{more}:\n" + "\n".join(lines))
        return self

    def to_frame(self):
        """Outputs as a tidy pandas DataFrame: one row per (trajectory, time)."""
        import pandas as pd

        outs = {k: np.asarray(v) for k, v in self.outputs.items()}
        ts = np.asarray(self.ts)
        status = np.asarray(self.status)
        if status.ndim == 0:
            return pd.DataFrame({"time": ts, **outs})
        n, n_ts = status.shape[0], outs[next(iter(outs))].shape[-1] if outs else len(ts)
        ts_b = np.broadcast_to(ts, (n, n_ts))
        frame = {"id": np.repeat(np.arange(n), n_ts), "time": ts_b.reshape(-1)}
        frame.update({k: v.reshape(-1) for k, v in outs.items()})
        frame["status"] = np.repeat(status, n_ts)
        return pd.DataFrame(frame)
