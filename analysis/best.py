"""The one definition of a sweep's best trial.

The progress line, the parent run's ``best.*`` tags, ``best_config.json``, the end-of-sweep line
and the report all rank trials with `rank_key`:

1. diverged and failed trials, and trials without a finite ``val/acc``, are never best;
2. a trial run to its last epoch beats any that did not (stopped early by ASHA, still running,
   interrupted): its number is final and was not chosen at a lucky early epoch;
3. then the higher best ``val/acc`` over the trial's epochs (validation chooses, never test);
4. ties go to the smaller trial id (Tune numbers a sweep's trials in order: the earlier one).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TypeVar

from analysis._data import DIVERGED, FAILED, FINISHED

__all__ = ["rank_key", "best_of"]

T = TypeVar("T")


def rank_key(status: str, best_val: float | None, trial_id: str) -> tuple | None:
    """Sort key, smallest first, of a trial that may be best; None for one that never is."""
    if status in (DIVERGED, FAILED) or best_val is None or not math.isfinite(best_val):
        return None
    return (status != FINISHED, -float(best_val), str(trial_id))


def best_of(items: Iterable[T], key: Callable[[T], tuple | None]) -> T | None:
    """The item whose `rank_key` (computed by ``key``) is smallest; None when none may be best."""
    ranked = [(k, i, item) for i, item in enumerate(items) if (k := key(item)) is not None]
    return min(ranked)[2] if ranked else None
