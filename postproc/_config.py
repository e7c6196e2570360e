"""Settings of the post-processing of predicted parameters (Knyazev 2022, arXiv 2207.10049)."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PostProcConfig"]


def _check_int(name: str, value: object) -> None:
    # bool is an int subclass; True as a layer index is always a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"PostProcConfig.{name} must be an int >= 0, got {value!r} "
            f"({type(value).__name__}); pass a whole number such as {name}=0"
        )
    if value < 0:
        raise ValueError(
            f"PostProcConfig.{name} must be >= 0, got {value}; use {name}=0 to disable it"
        )


@dataclass(frozen=True)
class PostProcConfig:
    """What `apply_postproc` does to the 2-D layers of a model (ppuda's `init`).

    Defaults do nothing, so a trial without post-processing needs no special case. ppuda's own
    default is orth=True; here orthogonalisation is opt-in to make "no flag" mean "no change".
    """

    beta: float = 0.0  # noise strength: sigma = beta * std(corrcoef(W2d)); 0 = no noise
    orth: bool = False  # QR-orthogonalise each transformed layer (after the noise)
    layer: int = 0  # 1-based index of the first transformed 2-D layer; 0 = all (bar the last)
    max_sz: int = 0  # skip layers with max(out, in) <= max_sz; noise goes to W[max_sz:, max_sz:]

    def __post_init__(self) -> None:
        beta = self.beta
        if isinstance(beta, bool) or not isinstance(beta, (int, float)):
            raise ValueError(
                f"PostProcConfig.beta must be a float >= 0, got {beta!r} "
                f"({type(beta).__name__}); pass a number such as beta=3e-5"
            )
        if not math.isfinite(beta) or beta < 0:
            raise ValueError(
                f"PostProcConfig.beta must be a finite float >= 0, got {beta!r}; "
                "use beta=0 for no noise (the paper's recipes use 1e-5 to 3e-5)"
            )
        object.__setattr__(self, "beta", float(beta))
        if not isinstance(self.orth, bool):
            raise ValueError(
                f"PostProcConfig.orth must be a bool, got {self.orth!r} "
                f"({type(self.orth).__name__}); pass orth=True or orth=False"
            )
        _check_int("layer", self.layer)
        _check_int("max_sz", self.max_sz)

    @property
    def enabled(self) -> bool:
        """False when ppuda's `init` returns at once: none of orth, beta>0, layer>0, max_sz>0."""
        return self.orth or self.beta > 0 or self.layer > 0 or self.max_sz > 0
