"""Equivalence of learning curves: a paired two one-sided tests (TOST) procedure on per-seed scores.

Two frameworks trained from the same seed start from the same weights, env seeds and action
noise, so their per-seed scores pair up. Equivalence is claimed when both one-sided t-tests
reject a difference of at least `margin` (H0: |mean difference| >= margin) at level `alpha`;
equivalently, when the (1 - 2 alpha) confidence interval of the mean difference lies inside
(-margin, +margin).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class TostResult:
    n: int
    mean_difference: float
    sd_difference: float
    margin: float
    alpha: float
    p_value: float  # the larger of the two one-sided p-values
    ci_low: float  # (1 - 2 alpha) confidence interval of the mean difference
    ci_high: float
    equivalent: bool

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (f"mean difference {self.mean_difference:+.3f} (sd {self.sd_difference:.3f}, n={self.n}), "
                f"{100 * (1 - 2 * self.alpha):.0f}% CI [{self.ci_low:+.3f}, {self.ci_high:+.3f}] "
                f"{'inside' if self.equivalent else 'not inside'} the margin +-{self.margin:.3f}; "
                f"TOST p = {self.p_value:.3g}")


def paired_tost(reference, other, margin: float, alpha: float = 0.05) -> TostResult:
    """Paired TOST of `other - reference` against the equivalence margin +-`margin` (Student t, n - 1 df)."""
    from scipy import stats

    d = np.asarray(other, np.float64) - np.asarray(reference, np.float64)
    n = len(d)
    if n < 2:
        raise ValueError("the equivalence test needs at least two seeds")
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    if se == 0.0:
        # Identical differences on every seed: the interval is the point itself.
        p = 0.0 if abs(mean) < margin else 1.0
        return TostResult(n, mean, sd, margin, alpha, p, mean, mean, abs(mean) < margin)
    df = n - 1
    p_lower = float(stats.t.sf((mean + margin) / se, df))  # H0: mean <= -margin
    p_upper = float(stats.t.cdf((mean - margin) / se, df))  # H0: mean >= +margin
    p = max(p_lower, p_upper)
    half = float(stats.t.ppf(1 - alpha, df)) * se
    return TostResult(n, mean, sd, margin, alpha, p, mean - half, mean + half, p < alpha)
