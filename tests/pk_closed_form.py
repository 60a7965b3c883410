r"""Closed-form plasma concentrations of linear 1- and 2-compartment PK, for tests.

These are the reference solutions the simulator is checked against. Every function
returns $C(t)$ (amount/volume) at the times `t` for doses `dose` given at times
`tdose` (scalars or sequences, broadcast together), summed over doses: the models are
linear, so the response to a regimen is the sum of the single-dose responses
(superposition).

Single-dose solutions (Gibaldi & Perrier, *Pharmacokinetics*, 2nd ed. 1982, ch. 1-3;
Rowland & Tozer, *Clinical Pharmacokinetics*, 4th ed. 2011, ch. 3 and 19), written
through the unit impulse response of the central compartment,

$$h(\tau) = \sum_i c_i e^{-\lambda_i \tau},$$

- 1-compartment: $c = 1/V$, $\lambda = k = CL/V$;
- 2-compartment (macro-constants): $\alpha, \beta$ are the roots of
  $\lambda^2 - (k_{10} + k_{12} + k_{21})\lambda + k_{10}k_{21}$ with $k_{10} = CL/V_1$,
  $k_{12} = Q/V_1$, $k_{21} = Q/V_2$, and
  $c = \big((\alpha - k_{21}) / (\alpha - \beta),\ (k_{21} - \beta) / (\alpha - \beta)\big) / V_1$.

For a dose $D$ given at $t_d$, with $\tau = t - t_d$ (zero response for $\tau < 0$):

- IV bolus: $C = D\,h(\tau)$;
- zero-order infusion over $T$ (rate $D/T$):
  $C = \frac{D}{T}\sum_i \frac{c_i}{\lambda_i}\big(e^{-\lambda_i(\tau - \min(\tau, T))} - e^{-\lambda_i\tau}\big)$;
- first-order absorption (oral) with bioavailability $F$, rate constant $k_a$ and lag
  $t_{lag}$ ($\tau = t - t_d - t_{lag}$):
  $C = F D k_a \sum_i c_i \frac{e^{-\lambda_i\tau} - e^{-k_a\tau}}{k_a - \lambda_i}$
  (requires $k_a \ne \lambda_i$).

Parameter names follow NONMEM TRANS2/TRANS4 and `qsp.models.pk`.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "dose_times",
    "one_cmt_bolus",
    "one_cmt_infusion",
    "one_cmt_oral",
    "two_cmt_bolus",
    "two_cmt_infusion",
    "two_cmt_macro",
    "two_cmt_oral",
]


def dose_times(time, ii=0.0, addl=0):
    """Times of a dose and its `addl` additional doses every `ii` (NONMEM ADDL/II)."""
    return float(time) + float(ii) * np.arange(int(addl) + 1)


def _doses(t, dose, tdose, *extra):
    """Broadcast to (n_t, n_dose): t down the rows, one column per dose."""
    t = np.asarray(t, dtype=float)
    arrays = np.broadcast_arrays(
        np.atleast_1d(np.asarray(dose, dtype=float)),
        np.atleast_1d(np.asarray(tdose, dtype=float)),
        *(np.atleast_1d(np.asarray(e, dtype=float)) for e in extra),
    )
    return t, t.reshape(-1, 1) - arrays[1][None, :], arrays[0][None, :], [a[None, :] for a in arrays[2:]]


def _bolus(t, dose, tdose, c, lam, after_dose):
    t, tau, d, _ = _doses(t, dose, tdose)
    given = tau >= 0 if after_dose else tau > 0
    tau0 = np.where(given, tau, 0.0)
    h = sum(ci * np.exp(-li * tau0) for ci, li in zip(c, lam))
    return np.sum(np.where(given, d * h, 0.0), axis=-1).reshape(t.shape)


def _infusion(t, dose, tdose, duration, c, lam):
    t, tau, d, (dur,) = _doses(t, dose, tdose, duration)
    on = tau >= 0
    tau0 = np.where(on, tau, 0.0)
    end = np.minimum(tau0, dur)
    resp = sum(ci / li * (np.exp(-li * (tau0 - end)) - np.exp(-li * tau0)) for ci, li in zip(c, lam))
    return np.sum(np.where(on, d / dur * resp, 0.0), axis=-1).reshape(t.shape)


def _oral(t, dose, tdose, ka, F, lag, c, lam):
    t, tau, d, _ = _doses(t, dose, np.asarray(tdose, dtype=float) + lag)
    on = tau >= 0
    tau0 = np.where(on, tau, 0.0)
    resp = sum(ci * (np.exp(-li * tau0) - np.exp(-ka * tau0)) / (ka - li) for ci, li in zip(c, lam))
    return np.sum(np.where(on, F * d * ka * resp, 0.0), axis=-1).reshape(t.shape)


# -- one compartment ------------------------------------------------------------------


def one_cmt_bolus(t, dose, tdose, CL, V, *, after_dose=True):
    """IV boluses into the central compartment. `after_dose`: whether a dose given at
    exactly `t` is included (the right limit) or not (the left limit, a trough)."""
    return _bolus(t, dose, tdose, [1.0 / V], [CL / V], after_dose)


def one_cmt_infusion(t, dose, tdose, duration, CL, V):
    """Zero-order infusions of `dose` over `duration` (scalar or one per dose)."""
    return _infusion(t, dose, tdose, duration, [1.0 / V], [CL / V])


def one_cmt_oral(t, dose, tdose, CL, V, KA, F=1.0, lag=0.0):
    """First-order absorption from a depot (bioavailability `F`, lag time `lag`)."""
    return _oral(t, dose, tdose, KA, F, lag, [1.0 / V], [CL / V])


# -- two compartments -------------------------------------------------------------------


def two_cmt_macro(CL, V1, Q, V2):
    """Macro-constants `(alpha, beta, A, B)` of the 2-compartment model: the central
    concentration after a unit IV bolus is $(A e^{-\\alpha t} + B e^{-\\beta t}) / V_1$."""
    k10, k12, k21 = CL / V1, Q / V1, Q / V2
    s = k10 + k12 + k21
    root = np.sqrt(s * s - 4.0 * k10 * k21)
    alpha, beta = 0.5 * (s + root), 0.5 * (s - root)
    A = (alpha - k21) / (alpha - beta)
    B = (k21 - beta) / (alpha - beta)
    return alpha, beta, A, B


def _two_cmt_response(CL, V1, Q, V2):
    alpha, beta, A, B = two_cmt_macro(CL, V1, Q, V2)
    return [A / V1, B / V1], [alpha, beta]


def two_cmt_bolus(t, dose, tdose, CL, V1, Q, V2, *, after_dose=True):
    """IV boluses into the central compartment (see `one_cmt_bolus` for `after_dose`)."""
    return _bolus(t, dose, tdose, *_two_cmt_response(CL, V1, Q, V2), after_dose)


def two_cmt_infusion(t, dose, tdose, duration, CL, V1, Q, V2):
    """Zero-order infusions of `dose` over `duration` into the central compartment."""
    return _infusion(t, dose, tdose, duration, *_two_cmt_response(CL, V1, Q, V2))


def two_cmt_oral(t, dose, tdose, CL, V1, Q, V2, KA, F=1.0, lag=0.0):
    """First-order absorption from a depot into the central compartment."""
    return _oral(t, dose, tdose, KA, F, lag, *_two_cmt_response(CL, V1, Q, V2))
