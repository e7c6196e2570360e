"""How diverse a model's filters are: a cheap check of what GHN tiling and post-processing do.

Tiled GHN-2 predictions repeat filters exactly and have low rank; noise and orthogonalisation
should raise the effective rank and drop the repeats. These numbers are logged as `init/...`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from postproc._apply import list_layers

__all__ = ["LayerDiversity", "diversity", "diversity_summary"]

_MAX_COS_ROWS = 512  # filters sampled for the cosine statistic: 512^2 products per layer
_SAMPLE_SEED = 0  # fixed, so the same weights always give the same numbers


@dataclass(frozen=True)
class LayerDiversity:
    """Diversity of one 2-D layer's filters (rows of its (out, in * kh * kw) matrix)."""

    index: int  # 1-based, as in `list_layers`
    name: str
    shape: tuple[int, ...]
    mean_abs_cos: float  # mean |cosine| between distinct filters (nan with < 2 filters)
    repeat_share: float  # fraction of filters that exactly copy an earlier filter
    eff_rank: float  # exp(entropy of normalised singular values), Roy & Vetterli 2007
    eff_rank_ratio: float  # eff_rank / min(rows, cols)


def _mean_abs_cos(mat: torch.Tensor) -> float:
    """Mean |cos| over pairs of distinct rows, on a fixed random subsample of <= 512 rows.

    A random subsample keeps the estimate unbiased for tiled weights: evenly spaced rows would
    alias with the 64-row tiling period and over-count the exact copies.
    """
    n = mat.shape[0]
    if n < 2:
        return math.nan
    if n > _MAX_COS_ROWS:
        gen = torch.Generator().manual_seed(_SAMPLE_SEED)
        rows = torch.randperm(n, generator=gen)[:_MAX_COS_ROWS].to(mat.device)
        mat = mat[rows]
        n = _MAX_COS_ROWS
    unit = nn.functional.normalize(mat, dim=1)
    cos = (unit @ unit.t()).abs_()
    cos.fill_diagonal_(0)
    return float(cos.sum(dtype=torch.float64)) / (n * (n - 1))


def _repeat_share(mat: torch.Tensor) -> float:
    """Fraction of rows equal (bit for bit) to an earlier row: 1 - unique / rows."""
    n_unique = torch.unique(mat, dim=0).shape[0]
    return 1.0 - n_unique / mat.shape[0]


def _effective_rank(mat: torch.Tensor) -> float:
    """exp(H(p)), p = singular values / their sum (Roy & Vetterli 2007); 0 for a zero matrix.

    Singular values come from the eigenvalues of the smaller Gram matrix in float64, which is
    several times faster than an SVD and accurate for the large values that dominate H.
    """
    m = mat.double()
    gram = m @ m.t() if m.shape[0] <= m.shape[1] else m.t() @ m
    sv = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt()
    total = sv.sum()
    if total <= 0:
        return 0.0
    p = sv / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def diversity(model: nn.Module) -> list[LayerDiversity]:
    """Per-layer filter diversity of every 2-D layer of `model` (see `list_layers`)."""
    result = []
    with torch.no_grad():
        for index, (name, module) in enumerate(list_layers(model), start=1):
            weight = module.weight.detach()
            mat = weight.reshape(weight.shape[0], -1)
            if mat.dtype not in (torch.float32, torch.float64):
                mat = mat.float()
            eff = _effective_rank(mat)
            result.append(
                LayerDiversity(
                    index=index,
                    name=name,
                    shape=tuple(weight.shape),
                    mean_abs_cos=_mean_abs_cos(mat),
                    repeat_share=_repeat_share(mat),
                    eff_rank=eff,
                    eff_rank_ratio=eff / min(mat.shape),
                )
            )
    return result


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def diversity_summary(model: nn.Module) -> dict[str, float]:
    """Layer averages of `diversity`, under flat metric names ready for MLflow / Ray Tune.

    Keys: `init/mean_abs_cos`, `init/repeat_share`, `init/eff_rank_ratio` (unweighted means over
    layers, ignoring undefined values) and `init/n_layers`.
    """
    layers = diversity(model)
    return {
        "init/mean_abs_cos": _nanmean([d.mean_abs_cos for d in layers]),
        "init/repeat_share": _nanmean([d.repeat_share for d in layers]),
        "init/eff_rank_ratio": _nanmean([d.eff_rank_ratio for d in layers]),
        "init/n_layers": float(len(layers)),
    }
