r"""The likelihood of a dataset under a model: error models, censoring, weights, priors.

For observation $i$ with prediction $f_i$ and precision weight $w_i$ the standard
deviation is $s_i = \sigma_i / \sqrt{w_i}$ with, per observable,

| `error` | $\sigma_i$ | parameters |
|---|---|---|
| `"additive"` | $a$ | `sigma_<obs>` |
| `"proportional"` | $b\,\lvert f_i\rvert$ | `cv_<obs>` |
| `"combined"` | $\sqrt{a^2 + b^2 f_i^2}$ | `sigma_<obs>`, `cv_<obs>` |
| `"lognormal"` | $a$ on $\log y$ | `sigma_<obs>` |

A row's `noiseParameters` replaces these parameters by numbers (a known SD, e.g. a
SEM) or by other parameter names. The negative log-likelihood of an observed row is
$\tfrac12 z_i^2 + \log s_i + \tfrac12\log 2\pi$ with $z_i = (y_i - f_i)/s_i$ (for the
log-normal model $z_i = (\log y_i - \log f_i)/s_i$ plus the Jacobian $\log y_i$, so
NLLs compare across error models). A row below the LLOQ $L_i$ contributes the
probability of being below it (Beal's M3 method, Beal 2001, J Pharmacokinet
Pharmacodyn 28:481): $-\log \Phi((L_i - f_i)/s_i)$.

Parameters are estimated unconstrained, $\theta = T(u)$ within their bounds
$[l, h]$: $l + e^u$ (lower bound only; the log scale when $l = 0$), $h - e^u$,
$l + (h - l)\,\mathrm{sigmoid}(u)$ (logit, both finite) or $u$ (unbounded).
Optional priors add $-\log p(\theta)$: `("normal", mean, sd)`,
`("lognormal", log_median, sd_log)` or `("cauchy", location, scale)` (on a parameter
bounded below at the location, e.g. a positive one, this is the half-Cauchy up to a
constant: the truncation's normaliser does not depend on $\theta$).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr

from ._experiment import Dataset, states_allowed
from ._params import parameter_info

ERRORS = ("additive", "proportional", "combined", "lognormal")
_LOG2PI = math.log(2 * math.pi)
# transform codes
_ID, _LOWER, _UPPER, _LOGIT = 0, 1, 2, 3


def error_parameter_names(kind: str, obs: str) -> tuple[str, ...]:
    """Default error-parameter names of observable `obs` under error model `kind`."""
    return {
        "additive": (f"sigma_{obs}",),
        "proportional": (f"cv_{obs}",),
        "combined": (f"sigma_{obs}", f"cv_{obs}"),
        "lognormal": (f"sigma_{obs}",),
    }[kind]


def transform_code(lo: float, hi: float) -> int:
    if math.isfinite(lo) and math.isfinite(hi):
        return _LOGIT
    if math.isfinite(lo):
        return _LOWER
    if math.isfinite(hi):
        return _UPPER
    return _ID


def to_natural(u, code, lo, hi):
    """theta = T(u), elementwise; `code`, `lo`, `hi` are numpy arrays (static).

    `u` is clipped to +/-40 on transformed parameters: e^40 is far beyond any useful
    range, and the clip keeps a wild optimizer step from overflowing the model."""
    u = jnp.where(code == _ID, u, jnp.clip(u, -40.0, 40.0))
    lo_ = jnp.where(np.isfinite(lo), lo, 0.0)
    hi_ = jnp.where(np.isfinite(hi), hi, 0.0)
    return jnp.select(
        [code == _LOWER, code == _UPPER, code == _LOGIT],
        [lo_ + jnp.exp(u), hi_ - jnp.exp(u), lo_ + (hi_ - lo_) * jax.nn.sigmoid(u)],
        u,
    )


def to_unconstrained(theta, code, lo, hi, names):
    """u = T^{-1}(theta) (numpy), with an error for a value on or outside its bounds."""
    theta = np.asarray(theta, float)
    u = np.empty_like(theta)
    for i, (t, c, l, h, n) in enumerate(zip(theta, code, lo, hi, names)):
        if not (l < t < h) and c != _ID:
            raise ValueError(
                f"initial value {n}={t:g} is not strictly inside its bounds [{l:g}, {h:g}]; "
                f"pass initial={{{n!r}: ...}} inside the bounds (estimation is on a log/logit scale)."
            )
        if not math.isfinite(t):
            raise ValueError(f"initial value {n}={t} is not finite.")
        u[i] = {_ID: t, _LOWER: math.log(max(t - l, 1e-300)), _UPPER: math.log(max(h - t, 1e-300)),
                _LOGIT: math.log((t - l) / (h - t)) if c == _LOGIT else 0.0}[int(c)]
    return u


@dataclasses.dataclass
class Problem:
    """Everything static about one estimation problem (built by `build_problem`)."""

    model: Any
    data: Dataset
    names: list  # every value in the table V: [free..., fixed params..., literals...]
    n_free: int
    v_const: np.ndarray  # values of V beyond the free ones
    lo: np.ndarray  # bounds of the free parameters
    hi: np.ndarray
    code: np.ndarray  # transform codes of the free parameters
    init: np.ndarray  # natural initial values of the free parameters
    model_params: dict  # model parameter -> (n_cond,) int indices into V
    state_idx: dict  # state -> (n_cond,) int indices into V (-1: keep the model's initial state)
    groups: list  # (kind, censored, rows, a_idx, b_idx) per group of rows
    priors: list  # (index into free, kind, m, s)
    sim_kwargs: dict
    preeq_time: float
    profiled_sigma: int | None  # free index of the single additive sigma (NLS convention), if any
    is_error: np.ndarray  # (n_free,) bool: which free parameters are error-model parameters

    @property
    def free(self) -> list:
        return self.names[: self.n_free]

    # -- evaluation ---------------------------------------------------------------------

    def values(self, theta):
        return jnp.concatenate([jnp.asarray(theta, float), jnp.asarray(self.v_const)])

    def outputs(self, theta, adjoint="forward"):
        """Model outputs per condition: dict of (n_cond, n_t) arrays, and a status per condition."""
        V = self.values(theta)
        over = {p: V[jnp.asarray(idx)] for p, idx in self.model_params.items()}
        times = jnp.asarray(self.data.times)
        if not states_allowed(self.model):
            def one(vals, t):
                return self.model.replace(**vals).outputs(t)
            outs = jax.vmap(one)(over, times)
            return outs, jnp.zeros(times.shape[0], int)
        from ._simulate import simulate
        from ._dosing import Regimen

        model = self.model.replace(**over) if over else self.model
        regs = self.data.regimens
        regimen = None
        if any(r is not None for r in regs):
            regimen = Regimen.stack([r if r is not None else Regimen.empty() for r in regs])
        kw = dict(self.sim_kwargs, adjoint=adjoint)
        if self.state_idx or any(p is not None for p in self.data.preeq):
            model = self._initial_states(model, V, kw)
        sol = simulate(model, regimen, times, **kw)
        return sol.outputs, sol.status

    def _initial_states(self, model, V, kw):
        from ._simulate import simulate

        n_cond, n = self.data.times.shape[0], len(self.model.states)
        y0 = jnp.broadcast_to(jnp.asarray(self.model.initial(), float), (n_cond, n))
        mask = np.zeros((n_cond, n), bool)
        pre = np.array([-1 if p is None else p for p in self.data.preeq])
        if (pre >= 0).any():
            # Preequilibration: simulate every condition without doses to preeq_time and
            # start each condition from its preequilibration condition's end state.
            ts = jnp.full((n_cond, 1), self.preeq_time)
            end = simulate(_with_initial(model, y0, mask), None, ts, **kw).states[:, -1, :]
            y0 = jnp.where((pre >= 0)[:, None], end[np.maximum(pre, 0)], y0)
            mask = np.broadcast_to((pre >= 0)[:, None], (n_cond, n)).copy()
        for s, idx in self.state_idx.items():
            j = self.model.states.index(s)
            has = np.asarray(idx) >= 0
            y0 = y0.at[:, j].set(jnp.where(has, V[jnp.maximum(jnp.asarray(idx), 0)], y0[:, j]))
            mask[:, j] |= has
        return _with_initial(model, y0, mask)

    def predictions(self, theta, adjoint="forward"):
        """Prediction per measurement row (n_rows,)."""
        outs, status = self.outputs(theta, adjoint)
        P = jnp.stack([outs[o] for o in self.data.observables])
        pred = P[self.data.row_obs, self.data.row_cond, self.data.row_time]
        bad = status[self.data.row_cond] != 0
        return jnp.where(bad, jnp.nan, pred)

    def nll_theta(self, theta, adjoint="forward"):
        """Negative log-likelihood (plus negative log prior) at natural free values."""
        V = self.values(theta)
        pred = self.predictions(theta, adjoint)
        total = 0.0
        for kind, cens, rows, a, b in self.groups:
            total = total + jnp.sum(_row_nll(kind, cens, pred[rows], self.data.y[rows],
                                             self.data.weight[rows], V[a], V[b]))
        total = total + self.prior_nll(theta)
        return jnp.where(jnp.isfinite(total), total, jnp.inf)

    def prior_nll(self, theta):
        out = 0.0
        for i, kind, m, s in self.priors:
            if kind == "cauchy":
                out = out + jnp.log1p(((theta[i] - m) / s) ** 2) + math.log(math.pi * s)
                continue
            x = jnp.log(theta[i]) if kind == "lognormal" else theta[i]
            out = out + 0.5 * ((x - m) / s) ** 2 + math.log(s) + 0.5 * _LOG2PI + (x if kind == "lognormal" else 0.0)
        return out

    def nll(self, u, adjoint="forward"):
        return self.nll_theta(self.natural(u), adjoint)

    def natural(self, u):
        return to_natural(u, self.code, self.lo, self.hi)

    def unconstrained(self, theta):
        return to_unconstrained(theta, self.code, self.lo, self.hi, self.free)

    def residuals_theta(self, theta, adjoint="forward"):
        """Least-squares residuals whose half sum of squares is the NLL up to a constant
        (known SDs), or the weighted raw residuals when one additive sigma is profiled.
        Log-normal rows give residuals on the log scale."""
        V = self.values(theta)
        pred = self.predictions(theta, adjoint)
        out = []
        for kind, cens, rows, a, b in self.groups:
            if kind == "lognormal":
                r = (np.log(self.data.y[rows]) - jnp.log(jnp.maximum(pred[rows], 1e-300)))
            else:
                r = self.data.y[rows] - pred[rows]
            r = r * np.sqrt(self.data.weight[rows])
            if self.profiled_sigma is None:
                r = r / V[a]
            out.append(r)
        for i, kind, m, s in self.priors:
            x = jnp.log(theta[i]) if kind == "lognormal" else theta[i]
            z = (x - m) / s
            if kind == "cauchy":
                # r^2 / 2 = log(1 + z^2): r = z sqrt(2 log1p(z^2) / z^2), series near 0.
                small = jnp.abs(z) < 1e-4
                zs = jnp.where(small, 1.0, z)
                z = z * jnp.sqrt(jnp.where(small, 2.0 - z**2, 2 * jnp.log1p(zs**2) / zs**2))
            out.append(jnp.atleast_1d(z))
        r = jnp.concatenate(out)
        return jnp.where(jnp.isfinite(r), r, 1e10)

    def n_residual_rows(self) -> int:
        return sum(len(g[2]) for g in self.groups)

    def residuals(self, u, adjoint="forward"):
        return self.residuals_theta(self.natural(u), adjoint)

    def least_squares_ok(self) -> str | None:
        """None if Levenberg-Marquardt applies, else the reason it does not."""
        for kind, cens, rows, a, b in self.groups:
            if cens:
                return "censored (M3) rows make the likelihood not a sum of squares"
            if kind not in ("additive", "lognormal"):
                return f"the {kind} error model's SD depends on the prediction"
        err_free = [i for i, n in enumerate(self.free) if self.is_error[i]]
        if self.profiled_sigma is None and err_free:
            return "error parameters are estimated (fix them, or use one additive sigma)"
        return None


def _row_nll(kind, cens, f, y, w, a, b):
    sw = np.sqrt(w)
    if kind == "lognormal":
        s = a / sw
        mu = jnp.log(jnp.maximum(f, 1e-300))
        z = (np.log(y) - mu) / s
        if cens:
            return -log_ndtr(z)
        return 0.5 * z**2 + jnp.log(s) + 0.5 * _LOG2PI + np.log(y)
    if kind == "additive":
        sd = a
    elif kind == "proportional":
        sd = b * jnp.abs(f)
    else:
        sd = jnp.sqrt(a**2 + (b * f) ** 2)
    s = sd / sw
    z = (y - f) / s
    if cens:
        return -log_ndtr(z)
    return 0.5 * z**2 + jnp.log(s) + 0.5 * _LOG2PI


# -- initial states via a wrapper model ----------------------------------------------------

_WRAPPERS: dict = {}


def _with_initial(model, y0, mask):
    """`model` with its initial state replaced where `mask` (per condition) is set."""
    import equinox as eqx

    from ._model import ODEModel

    base_cls = type(model)
    if base_cls not in _WRAPPERS:
        class WithInitial(ODEModel):
            base: Any
            y0: Any
            mask: Any
            states = base_cls.states
            time_unit = base_cls.time_unit

            def initial(self):
                return jnp.where(self.mask, self.y0, jnp.asarray(self.base.initial(), float))

            def rhs(self, t, y):
                return self.base.rhs(t, y)

            def outputs(self, t, y):
                return self.base.outputs(t, y)

            def bioavailability(self):
                return self.base.bioavailability()

            def lag(self):
                return self.base.lag()

        WithInitial.__name__ = WithInitial.__qualname__ = base_cls.__name__
        _WRAPPERS[base_cls] = WithInitial
    del eqx
    return _WRAPPERS[base_cls](base=model, y0=y0, mask=jnp.asarray(mask))
