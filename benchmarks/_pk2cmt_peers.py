r"""The pk2cmt repeated-oral-dosing workload and the peers qsp is measured against.

**Workload** (ours): `pk2cmt` with its default typical values (CL 1 L/h, V1 10 L,
Q 2 L/h, V2 20 L, KA 1/h, F1 1, no lag), `amount` mg into DEPOT every `ii` h for
`n_doses` doses, CP observed every `obs_every` h from 0 to `n_doses * ii` h. An
observation at a dose time is the trough before that dose (NONMEM record order).
Inter-individual variability is log-normal, $\theta_i = \theta\,e^{\omega\eta_i}$ with
$\omega^2 = \ln(1 + CV^2)$ and $\eta_i \sim N(0, 1)$ from a fixed seed; patient $i$
has the same parameters whatever N is.

**Peers:**

- `scipy_cp`: a Python loop over patients calling `scipy.integrate.solve_ivp`
  piecewise between doses (what most Python users write);
- `naive_diffrax`: `jax.jit(jax.vmap(...))` of a per-patient `lax.scan` over dosing
  intervals, one plain `diffrax.diffeqsolve` each, saving at that interval's
  observation times only;
- `closed_form_cp`: the analytic solution by superposition of single oral doses
  (`tests/pk_closed_form.py`, Gibaldi & Perrier 1982), used for correctness only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

PARAMS = ("CL", "V1", "Q", "V2", "KA")


@dataclasses.dataclass(frozen=True)
class Workload:
    amount: float = 100.0  # mg per dose, into DEPOT
    ii: float = 12.0  # h between doses
    n_doses: int = 28  # q12h for 14 days
    obs_every: float = 4.0  # h between CP observations
    typical: tuple = (("CL", 1.0), ("V1", 10.0), ("Q", 2.0), ("V2", 20.0), ("KA", 1.0))
    cv: float = 0.30  # log-normal IIV on every parameter in PARAMS
    seed: int = 0
    rtol: float = 1e-6
    atol: float = 1e-9

    def __post_init__(self):
        per = self.ii / self.obs_every
        if abs(per - round(per)) > 1e-12 or per < 1:
            raise ValueError(
                f"obs_every={self.obs_every:g} must divide the dosing interval ii={self.ii:g} "
                "(the naive diffrax peer saves a fixed number of points per interval)."
            )

    @property
    def horizon(self) -> float:
        return self.n_doses * self.ii

    @property
    def obs_per_interval(self) -> int:
        return int(round(self.ii / self.obs_every))

    def times(self) -> np.ndarray:
        """Observation times 0, obs_every, ..., horizon."""
        return self.obs_every * np.arange(self.n_doses * self.obs_per_interval + 1)

    def dose_times(self) -> np.ndarray:
        return self.ii * np.arange(self.n_doses)

    def population(self, n: int) -> dict[str, np.ndarray]:
        """Parameters of patients 0..n-1 (rows of one seeded draw, so prefixes agree)."""
        omega = np.sqrt(np.log1p(self.cv**2))
        eta = np.random.default_rng(self.seed).standard_normal((n, len(PARAMS)))
        typ = dict(self.typical)
        return {p: typ[p] * np.exp(omega * eta[:, j]) for j, p in enumerate(PARAMS)}

    def describe(self) -> dict:
        d = dataclasses.asdict(self)
        d["typical"] = dict(self.typical)
        d.update(model="qsp.models.pk2cmt", dose_cmt="DEPOT", horizon_h=self.horizon,
                 n_obs=len(self.times()), iiv="log-normal, same CV on " + ", ".join(PARAMS))
        return d


def subset(pop: dict, lo: int, hi: int) -> dict:
    return {k: v[lo:hi] for k, v in pop.items()}


# -- closed form ----------------------------------------------------------------------------


def closed_form_cp(pop: dict, w: Workload) -> np.ndarray:
    """CP (n, n_obs) from the project's closed-form reference, `tests/pk_closed_form.py`
    (superposition of single oral doses; loaded by path, `tests` is not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tests" / "pk_closed_form.py"
    spec = importlib.util.spec_from_file_location("_qsp_pk_closed_form", path)
    cf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cf)
    ts, tdose = w.times(), w.dose_times()
    return np.stack([
        cf.two_cmt_oral(ts, w.amount, tdose, *(float(pop[p][i]) for p in PARAMS))
        for i in range(len(pop["CL"]))
    ])


# -- scipy loop -----------------------------------------------------------------------------


def _rhs(t, y, ka, k10, k12, k21):
    depot, cent, periph = y
    absorbed = ka * depot
    to_periph = k12 * cent - k21 * periph
    return [-absorbed, absorbed - k10 * cent - to_periph, to_periph]


def scipy_cp(pop: dict, w: Workload, method: str, rtol: float, atol: float):
    """CP (n, n_obs) and RHS evaluations per patient from a `solve_ivp` loop, one call
    per dosing interval (the dose is added to DEPOT between calls)."""
    from scipy.integrate import solve_ivp

    ts, doses = w.times(), w.dose_times()
    ends = np.append(doses[1:], w.horizon)
    n = len(pop["CL"])
    cp = np.zeros((n, len(ts)))
    nfev = np.zeros(n, dtype=int)
    for i in range(n):
        CL, V1, Q, V2, KA = (float(pop[p][i]) for p in PARAMS)
        args = (KA, CL / V1, Q / V1, Q / V2)
        y = np.zeros(3)
        for ta, tb in zip(doses, ends):
            y = y.copy()
            y[0] += w.amount
            mask = (ts > ta) & (ts <= tb)
            sol = solve_ivp(_rhs, (ta, tb), y, method=method, t_eval=ts[mask], rtol=rtol, atol=atol, args=args)
            if sol.status != 0:
                raise RuntimeError(f"scipy {method} failed for patient {i} on [{ta:g}, {tb:g}]: {sol.message}")
            cp[i, mask] = sol.y[1] / V1
            # t_eval ends at tb, so the last saved column is the state at the interval end.
            y = sol.y[:, -1]
            nfev[i] += sol.nfev
    return cp, nfev


# -- plain jax.vmap of diffrax --------------------------------------------------------------


def naive_diffrax(solver, w: Workload, max_steps: int = 4096):
    """`f(CL, V1, Q, V2, KA) -> (CP (n, n_obs), steps (n,))`, jitted and vmapped; `solver`
    is used exactly as given (no tuned root finder), with a PID controller at the
    workload's tolerances."""
    import diffrax as dfx
    import jax
    import jax.numpy as jnp

    per = w.obs_per_interval
    offsets = w.obs_every * jnp.arange(1, per + 1)

    def one(CL, V1, Q, V2, KA):
        def f(t, y, args):
            absorbed = KA * y[0]
            to_periph = Q * (y[1] / V1 - y[2] / V2)
            return jnp.stack([-absorbed, absorbed - CL / V1 * y[1] - to_periph, to_periph])

        term = dfx.ODETerm(f)

        def interval(y, ta):
            y = y.at[0].add(w.amount)
            sol = dfx.diffeqsolve(
                term, solver, ta, ta + w.ii, None, y,
                saveat=dfx.SaveAt(ts=ta + offsets),
                stepsize_controller=dfx.PIDController(rtol=w.rtol, atol=w.atol),
                max_steps=max_steps, throw=False,
            )
            ok = sol.result == dfx.RESULTS.successful
            return sol.ys[-1], (sol.ys[:, 1] / V1, sol.stats["num_steps"], ok)

        _, (cp, steps, ok) = jax.lax.scan(interval, jnp.zeros(3), jnp.asarray(w.dose_times()))
        cp = jnp.concatenate([jnp.zeros(1), cp.reshape(-1)])
        return cp, steps.sum(), ok.all()

    return jax.jit(jax.vmap(one))
