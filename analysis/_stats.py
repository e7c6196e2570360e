"""Means, spreads and 95% intervals over seeds, the numbers a claim of "beats" must carry.

With n seeds, the interval is Student's t: mean ± t(0.975, n-1) · std / √n, std with Bessel's
correction. Gains are paired: per seed, the difference of the two methods' runs with that seed
(same n-shot draw, same data order), so the spread the interval sees is the one that matters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy.special import stdtrit  # Student's t quantile; scipy.stats costs 0.5 s to import

LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A mean over ``n`` values with its spread; ``std``, ``lo`` and ``hi`` are nan for n < 2."""

    n: int
    mean: float
    std: float
    lo: float
    hi: float

    @property
    def excludes_zero(self) -> bool:
        """The interval lies wholly on one side of 0 (False when there is no interval)."""
        return self.n >= 2 and (self.lo > 0 or self.hi < 0)


def estimate(values: Iterable[float]) -> Estimate:
    """Mean, std and the 95% t-interval of ``values`` (nan-free)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Estimate(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n < 2:
        return Estimate(1, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half = float(stdtrit(n - 1, 0.5 + LEVEL / 2)) * std / math.sqrt(n)
    return Estimate(n, mean, std, mean - half, mean + half)


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> Estimate:
    """The difference a - b over the seeds both have."""
    return estimate(a[s] - b[s] for s in sorted(set(a) & set(b)))
