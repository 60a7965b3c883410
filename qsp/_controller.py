r"""The step-size controller of `qsp.simulate`: diffrax's PID controller whose step-size
proposals carry no derivative.

Why: diffrax proposes the next step as $h_{n+1} = \phi_n h_n$ with the factor $\phi_n$
held constant under differentiation but $h_n = t_{n+1} - t_n$ differentiable. When a
step is clipped to land on a save time ($t_{n+1} = t_j$, fixed) its length depends on
where the segment started, and every later proposal multiplies that dependence by the
growth factors (up to 10 per step). Under `ClipStepSizeController(step_ts=...)`
(`exact_save=True`, the default) the derivative of the solution w.r.t. a segment's
start (a lag time, an infusion end by rate) was off by up to $10^{19}$ (diffrax 0.7.2;
`benchmarks/NOTES.md` section 17). Holding each proposed length constant, as the factor
already is, keeps step *positions* differentiable (a grid shifted with the segment
start until it lands on a save time) and removes the amplification; the gradient is
then that of the discrete solution on that grid, which agrees with finite differences
to the tolerances.
"""

from __future__ import annotations

import diffrax as dfx
import jax


class StepController(dfx.PIDController):
    """`diffrax.PIDController` with `stop_gradient` on each proposed step length."""

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state):
        keep, next_t0, next_t1, made_jump, state, result = super().adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state
        )
        next_t1 = next_t0 + jax.lax.stop_gradient(next_t1 - next_t0)
        return keep, next_t0, next_t1, made_jump, state, result
