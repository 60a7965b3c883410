r"""CRS grade link: from a patient's peak serum IL-6 to P(CRS grade >= 1) and P(grade >= 2).

**Ours, not Hosseini's.** Hosseini 2020 states that no IL-6 threshold for CRS is
established; it compares regimens by the IL-6 peak itself. To turn peaks into
incidences we use an empirical logistic link on the log of the largest cycle-1 IL-6
peak $m$ (pg/mL):

$$P(\text{grade} \ge k) = \sigma\big((\ln m - \ln m_k)/s\big), \qquad k = 1, 2,$$

with one slope $s$ (log scale) and thresholds $m_1 < m_2$. The thresholds are
calibrated (`calibrate_link`) so that the default virtual population (`population.sample`,
`n = 1000`, seed 0) on the label regimen has the label's incidence: 39% any grade
(Lunsumio USPI, adverse-reaction table, pooled 1/2/60/60/30 mg) and 17.5% grade >= 2
(grades 2/3/4 = 15/2/0.5%: the reference's recollection of the USPI, marked [R] there).
The slope $s = 1$ (an e-fold of IL-6 moves the log-odds by 1) is an assumption.

A patient's grade is drawn from these probabilities with one uniform number per patient
(`u`, from the trial seed), shared across regimens: the same patient at a lower peak never
gets a higher grade.
"""

from __future__ import annotations

import numpy as np

#: Log-scale slope of the link (ours).
SLOPE = 1.0
#: Target incidences on the label regimen: any grade (USPI, [V] in the reference) and
#: grade >= 2 (15 + 2 + 0.5%, [R] in the reference).
TARGET_GE1 = 0.39
TARGET_GE2 = 0.175
#: Thresholds m_1, m_2 (pg/mL) from `calibrate_link` on the default population
#: (`population.sample(1000, seed=0)`, label regimen, 4 cycles, `trial.run` at its
#: rtol 1e-4, f_tiss = 0; 0 failed solves; cycle-1 peak quantiles 5/25/50/75/95% =
#: 134/384/675/1236/2553 pg/mL; benchmarks/results/crs_trial_cpu.json, 2026-12-01).
THRESHOLDS = (1113.323637953682, 3856.2272156311715)


def probabilities(peak_il6, thresholds=None, slope: float = SLOPE):
    """P(grade >= 1), P(grade >= 2) for peak IL-6 values (pg/mL)."""
    m1, m2 = THRESHOLDS if thresholds is None else thresholds
    x = np.log(np.maximum(np.asarray(peak_il6, dtype=float), 1e-12))
    p1 = 1.0 / (1.0 + np.exp(-(x - np.log(m1)) / slope))
    p2 = 1.0 / (1.0 + np.exp(-(x - np.log(m2)) / slope))
    return p1, p2


def grades(peak_il6, u, thresholds=None, slope: float = SLOPE):
    """Grade 0, 1 or 2+ per patient from the link and one uniform `u` per patient."""
    p1, p2 = probabilities(peak_il6, thresholds, slope)
    u = np.asarray(u, dtype=float)
    return np.where(u < p2, 2, np.where(u < p1, 1, 0))


def _solve_threshold(peaks, target, slope):
    """ln m such that mean sigma((ln peak - ln m)/slope) = target (bisection; the mean
    decreases in ln m)."""
    x = np.log(np.maximum(peaks, 1e-12))
    lo, hi = x.min() - 40 * slope, x.max() + 40 * slope
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        p = np.mean(1.0 / (1.0 + np.exp(-(x - mid) / slope)))
        lo, hi = (mid, hi) if p > target else (lo, mid)
    return float(np.exp(0.5 * (lo + hi)))


def calibrate_link(peaks_label, target_ge1: float = TARGET_GE1, target_ge2: float = TARGET_GE2,
                   slope: float = SLOPE) -> tuple[float, float]:
    """Thresholds (m_1, m_2) giving mean P(>=1) = `target_ge1` and P(>=2) = `target_ge2`
    over the label-regimen peaks `peaks_label` of a virtual population."""
    peaks = np.asarray(peaks_label, dtype=float)
    peaks = peaks[np.isfinite(peaks)]
    if len(peaks) == 0:
        raise ValueError("calibrate_link needs at least one finite IL-6 peak.")
    if not 0 < target_ge2 < target_ge1 < 1:
        raise ValueError(f"targets must satisfy 0 < ge2 < ge1 < 1; got ge1={target_ge1}, ge2={target_ge2}.")
    return _solve_threshold(peaks, target_ge1, slope), _solve_threshold(peaks, target_ge2, slope)


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson 95% interval of a binomial proportion k/n."""
    if n == 0:
        return (np.nan, np.nan)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (float(max(0.0, mid - half)), float(min(1.0, mid + half)))
