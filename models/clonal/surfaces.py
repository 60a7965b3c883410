r"""Drug-effect surfaces: birth and death rates of each clone as functions of the
dacomitinib and osimertinib concentrations $D, O$ (nM). Rates per hour.

Both surfaces share one interface: `birth(daco, osi)` and `net_growth(daco, osi)`
return shape `(..., 4)` in the clone order `CLONES`, `death` has shape `(4,)`.

**Published bounded-logistic surface** (`BoundedLogistic`, Poels et al. 2021, Nat
Commun 12:3697; coefficients from the authors' code, `published_surface()`):

$$g_k(D, O) = y_{\min,k} + (y_{\max,k} - y_{\min,k})\,\sigma\big(\beta_k \cdot x_k(D, O)\big),
\qquad b_k = g_k + d_k,$$

with $\sigma$ the logistic function and the designs, $\ell(c) = \log(c + 1)$:

| clone | $x_k$ (after the intercept) |
|---|---|
| sensitive (ex19del, PC9) | $\ell(D)^{1/3},\ \ell(O)^{1/1.5},\ \ell(D)^{1/3}\ell(O)^{1/1.5}$ |
| T790M (PC9-DRH) | $\ell(D)^{1/3},\ \ell(O)^{2}$ |
| NRAS (PC9R) | $\ell(O),\ \ell(D)$ |
| C797S (PC9-C797S) | $\ell(D),\ \ell(O)$ |

The authors' trial code multiplies the NRAS osimertinib term by 0 (`nras_osi=False`,
the default, the form that reproduces their demo); their validation scripts keep it
(`nras_osi=True`). Known artefacts: the positive interaction term lets dacomitinib
*raise* the sensitive clone's net growth at high osimertinib, and the surface is
extrapolated beyond the assay design. Since $d_k = -\min g = -(y_{\min,k} + 10^{-5})$,
the birth rate is bounded below by $-10^{-5}$/h, not 0: far beyond the design (e.g.
T790M at osimertinib > ~10 uM) it can be slightly negative, as in the authors' code
(whose counts are clamped at 0; `stochastic.tau_leap` treats negative rates as 0).

**Monotone Hill-Bliss surface** (`HillBliss`, ours): each drug inhibits division by a
Hill factor and the two act independently (Bliss) on the birth rate,

$$b_k = b_{0,k}\,\big(1 - I^D_k h(D; IC^D_{50,k}, n^D_k)\big)\big(1 - I^O_k h(O; IC^O_{50,k}, n^O_k)\big),
\qquad h(c) = \frac{c^n}{IC_{50}^n + c^n},$$

with $0 \le I \le 1$; death $d_k$ is the published constant. Each factor is
non-increasing in its concentration, so a higher dose of either drug never raises any
clone's birth or net growth. Its default values are our least-squares fit to the
growth rates (`assays.fit_monotone`), not the paper's.
"""

from __future__ import annotations

import functools
from importlib import resources

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..blocks import inhibition

#: Clone order of every 4-vector in this package.
CLONES = ("sensitive", "T790M", "NRAS", "C797S")

#: Clone names in the authors' files.
_PAPER_NAMES = {"ex19del": "sensitive", "T790M": "T790M", "NRAS": "NRAS", "C797S": "C797S"}

#: Design of each clone: R model terms (order of the coefficients) and their number.
DESIGNS = {
    "sensitive": {"terms": ("(Intercept)", "I(log(daco + 1)^(1/3))", "I(log(osi + 1)^(1/1.5))",
                            "I(log(daco + 1)^(1/3)):I(log(osi + 1)^(1/1.5))"), "n": 4},
    "T790M": {"terms": ("(Intercept)", "I(log(daco + 1)^(1/3))", "I(log(osi + 1)^2)"), "n": 3},
    "NRAS": {"terms": ("(Intercept)", "I(log(osi + 1))", "I(log(daco + 1))"), "n": 3},
    "C797S": {"terms": ("(Intercept)", "I(log(daco + 1))", "I(log(osi + 1))"), "n": 3},
}

#: Death rate used when a line never shrinks in the assay (authors' defaults, 1/h).
DEFAULT_DEATH = {"sensitive": 0.1, "T790M": 0.1, "NRAS": 0.01, "C797S": 0.1}


def _field(shape):
    """An array field with its per-patient shape declared (so `qsp.simulate` reads a
    leading axis beyond it, and only that, as a population axis)."""
    return eqx.field(converter=jnp.asarray, metadata={"qsp": {"shape": shape}})


def _pow(x, p):
    """x**p for x >= 0 with a finite gradient at 0 (fractional powers)."""
    pos = x > 0
    safe = jnp.where(pos, x, 1.0)
    return jnp.where(pos, jnp.exp(p * jnp.log(safe)), 0.0)


def design_matrix(k: int, daco, osi, *, nras_osi: bool = False):
    """The design $x_k(D, O)$ of clone `k`, padded with zeros to 4 columns: `(..., 4)`."""
    ld = jnp.log1p(jnp.maximum(jnp.asarray(daco, dtype=float), 0.0))
    lo = jnp.log1p(jnp.maximum(jnp.asarray(osi, dtype=float), 0.0))
    ld, lo = jnp.broadcast_arrays(ld, lo)
    one, zero = jnp.ones_like(ld), jnp.zeros_like(ld)
    if k == 0:
        a, b = _pow(ld, 1.0 / 3.0), _pow(lo, 1.0 / 1.5)
        cols = (one, a, b, a * b)
    elif k == 1:
        cols = (one, _pow(ld, 1.0 / 3.0), lo**2, zero)
    elif k == 2:
        cols = (one, lo if nras_osi else zero, ld, zero)
    elif k == 3:
        cols = (one, ld, lo, zero)
    else:
        raise ValueError(f"clone index k={k} is not known; expected 0..3 for {CLONES}.")
    return jnp.stack(cols, axis=-1)


class AbstractSurface(eqx.Module):
    """Birth rates as functions of both concentrations; constant death rates."""

    death: eqx.AbstractVar[jax.Array]

    def birth(self, daco, osi):
        """Birth rates `(..., 4)` (1/h) at concentrations `daco`, `osi` (nM)."""
        return self.net_growth(daco, osi) + self.death

    def net_growth(self, daco, osi):
        """Net growth rates `(..., 4)` (1/h)."""
        return self.birth(daco, osi) - self.death


class BoundedLogistic(AbstractSurface):
    """The published bounded-logistic surface (see the module docstring).

    Fields (clone order `CLONES`): `beta (4, 4)` coefficients padded with zeros to 4
    per clone in the order of `DESIGNS`, `ymin`, `ymax` (bounds of net growth, 1/h),
    `death` (1/h); `nras_osi` (static) keeps the NRAS osimertinib term."""

    beta: jax.Array = _field((4, 4))
    ymin: jax.Array = _field((4,))
    ymax: jax.Array = _field((4,))
    death: jax.Array = _field((4,))
    nras_osi: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        for name, shape in (("beta", (4, 4)), ("ymin", (4,)), ("ymax", (4,)), ("death", (4,))):
            got = jnp.shape(getattr(self, name))
            if got[-len(shape):] != shape:
                raise ValueError(f"BoundedLogistic {name} has shape {got}; expected {shape} (clones {CLONES}).")

    def net_growth(self, daco, osi):
        f = jnp.stack(
            [design_matrix(k, daco, osi, nras_osi=self.nras_osi) @ self.beta[k] for k in range(4)], axis=-1
        )
        return self.ymin + (self.ymax - self.ymin) * jax.nn.sigmoid(f)


def published_coefficients():
    """The authors' fitted coefficients as a pandas table (clone, cell_line, term, coefficient)."""
    import pandas as pd

    path = resources.files("qsp.models").joinpath("data/clonal/published_fit_coefficients.csv")
    with path.open() as fh:
        tab = pd.read_csv(fh, comment="#")
    return tab.assign(clone=tab["clone"].map(_PAPER_NAMES))


def published_surface(nras_osi: bool = False) -> BoundedLogistic:
    """`BoundedLogistic` with the published coefficients (Poels et al. 2021, authors'
    `newFitsAndRates200229.RData`; `data/clonal/published_fit_coefficients.csv`)."""
    beta, ymin, ymax, death = (np.array(a) for a in _published_arrays())
    return BoundedLogistic(beta=beta, ymin=ymin, ymax=ymax, death=death, nras_osi=nras_osi)


@functools.lru_cache(maxsize=1)
def _published_arrays():
    """(beta, ymin, ymax, death) read once from the packaged table."""
    tab = published_coefficients()
    beta = np.zeros((4, 4))
    ymin, ymax, death = np.zeros(4), np.zeros(4), np.zeros(4)
    for k, clone in enumerate(CLONES):
        rows = tab[tab["clone"] == clone].set_index("term")["coefficient"]
        for j, term in enumerate(DESIGNS[clone]["terms"]):
            beta[k, j] = rows[term]
        ymin[k], ymax[k], death[k] = rows["ymin"], rows["ymax"], rows["death_d"]
    return beta, ymin, ymax, death


class HillBliss(AbstractSurface):
    """Monotone surface of ours: Hill inhibition of division per drug, Bliss
    independence (see the module docstring). All fields have shape `(4,)`."""

    b0: jax.Array = _field((4,))
    death: jax.Array = _field((4,))
    ic50_daco: jax.Array = _field((4,))
    n_daco: jax.Array = _field((4,))
    imax_daco: jax.Array = _field((4,))
    ic50_osi: jax.Array = _field((4,))
    n_osi: jax.Array = _field((4,))
    imax_osi: jax.Array = _field((4,))

    def birth(self, daco, osi):
        d = jnp.asarray(daco, dtype=float)[..., None]
        o = jnp.asarray(osi, dtype=float)[..., None]
        return (
            self.b0
            * inhibition(d, self.ic50_daco, self.n_daco, self.imax_daco)
            * inhibition(o, self.ic50_osi, self.n_osi, self.imax_osi)
        )


def surface(kind: str = "published") -> AbstractSurface:
    """A surface by name: `"published"` (bounded logistic, trial form) or `"monotone"`
    (our Hill-Bliss fit)."""
    if kind == "published":
        return published_surface()
    if kind == "monotone":
        return monotone_surface()
    raise ValueError(f"surface={kind!r} is not known; expected 'published' or 'monotone'.")


def monotone_surface() -> HillBliss:
    """`HillBliss` with our fitted values (`MONOTONE_FIT`)."""
    return HillBliss(**{k: np.asarray(v, dtype=float) for k, v in MONOTONE_FIT.items()})


#: Our least-squares fit of `HillBliss` to the assay growth rates (`assays.fit_monotone`;
#: regenerate with it; death fixed at the published values). Clone order `CLONES`.
#: Residual RMSE (1/h): sensitive 0.00172, T790M 0.00103, NRAS 0.00164, C797S 0.00211
#: (published surface on the same rates: 0.00393, 0.00281, 0.00230, 0.00251). Some
#: values sit on the fit's bounds (T790M n_daco, NRAS IC50_daco, C797S n_osi): those
#: drugs barely act on those clones in the assay.
MONOTONE_FIT = {
    "b0": [0.03180312545985692, 0.030917095228286704, 0.03205274906306519, 0.020455568295693956],
    "death": [0.0069237849682, 0.0146542984927, 0.01, 0.00656292823499],
    "ic50_daco": [0.4531227464188127, 0.7342570337484668, 0.010000042569217327, 11.667613547827388],
    "n_daco": [3.6658346135368935, 0.5000000000000095, 1.7438799768317539, 1.2553460446654952],
    "imax_daco": [0.8696208235192523, 0.07500103607066139, 0.02359812786039955, 0.9220765609617056],
    "ic50_osi": [6.771093862784036, 63.23987488049698, 465.910507783838, 350.6584533469391],
    "n_osi": [1.381393370045318, 1.7762040625173394, 0.6137516178334761, 4.999999999999962],
    "imax_osi": [0.9232536276213229, 0.9625707451974526, 0.13199388667317663, 0.15414672921929223],
}
