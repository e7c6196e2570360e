"""Noise and orthogonalisation of 2-D layers, as ppuda's `init` does it.

Predicted GHN-2 weights are tiled copies of one 64x64 block, so many filters are identical.
Knyazev 2022 breaks that symmetry by adding a little noise scaled to each layer's filter
correlation, then optionally orthogonalising the layer with a QR decomposition.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from postproc._config import PostProcConfig

__all__ = ["LayerReport", "apply_postproc", "list_layers", "corr_std"]

_logger = logging.getLogger(__name__)

_BLOCK_ELEMENTS = 1 << 22  # float64 entries of one row block (32 MiB)


@dataclass(frozen=True)
class LayerReport:
    """What `apply_postproc` did to one layer; small and flat so it can be logged."""

    index: int  # 1-based layer number, as in `list_layers`
    name: str  # module name
    shape: tuple[int, ...]  # weight shape
    transposed: bool  # the 2-D view had fewer rows than columns and was transposed
    corr_std: float | None  # std of the row correlations of the 2-D view (None without noise)
    noise_std: float  # sigma = beta * corr_std of the added noise (0.0 without noise)
    orthogonalised: bool


def list_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The 2-D layers in `model.modules()` order; layer k (1-based) is element k-1.

    A layer is a module with a non-None `weight` of >= 2 dims (convs, linears), as in ppuda,
    so norm layers (1-D weights) are never counted.
    """
    layers = []
    for name, module in model.named_modules():  # deduplicated: first name seen
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() >= 2:
            layers.append((name, module))
    return layers


def _as_2d(weight: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(rows, rest) view of a weight, transposed when it has fewer rows than columns."""
    mat = weight.reshape(weight.shape[0], -1)
    if mat.shape[0] < mat.shape[1]:
        return mat.t(), True
    return mat, False


def corr_std(mat: torch.Tensor) -> torch.Tensor:
    """std (Bessel-corrected) of the entries of `torch.corrcoef(mat)` (rows as variables), in
    `mat`'s dtype, NaN where a row has zero variance, as corrcoef gives.

    The n x n matrix is never formed. With U the rows centred and scaled to unit norm, the
    correlations are U U^T: their sum is |U^T 1|^2 and their sum of squares |U^T U|_F^2, so the
    m x m Gram matrix of the columns is enough, accumulated in float64 over row blocks: O(n m^2)
    time and O(m^2) memory against corrcoef's O(n^2 m) and n^2. A weight's 2-D view has at least
    as many rows as columns (a 3x3 conv with 512 filters: 4608 x 512), so this is the cheap
    side; a wider matrix gets U U^T itself.
    """
    n, m = mat.shape
    count = float(n) * n
    if m > n:
        unit = _unit_rows(mat.double())
        corr = unit @ unit.t()
        total, squares = corr.sum(), corr.square().sum()
    else:
        col_sums = torch.zeros(m, dtype=torch.float64, device=mat.device)
        gram = torch.zeros(m, m, dtype=torch.float64, device=mat.device)
        step = max(1, _BLOCK_ELEMENTS // m)
        for start in range(0, n, step):
            unit = _unit_rows(mat[start : start + step].double())
            col_sums += unit.sum(dim=0)
            gram += unit.t() @ unit
        total, squares = col_sums @ col_sums, gram.square().sum()
    var = (squares - total * total / count) / (count - 1)
    return var.clamp_min(0).sqrt().to(mat.dtype)


def _unit_rows(mat: torch.Tensor) -> torch.Tensor:
    """Rows centred and scaled to unit norm (a zero-variance row becomes NaN)."""
    centred = mat - mat.mean(dim=1, keepdim=True)
    return centred / centred.norm(dim=1, keepdim=True)


def _orthogonalise(weight: torch.Tensor) -> None:
    """Replace W by the Q of its 2-D view's reduced QR, columns signed by diag(R) (in place)."""
    work = weight if weight.dtype in (torch.float32, torch.float64) else weight.float()
    mat, transposed = _as_2d(work)
    q, r = torch.linalg.qr(mat)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)  # sign(0) = 0 zeroes a column, as ppuda
    if transposed:
        q = q.t()
    weight.copy_(q.reshape(weight.shape))


class _NoiseSource:
    """Draws eps per layer: from seeded per-device generators, one given generator, or torch's
    global RNG (ppuda's `randn_like`)."""

    def __init__(self, seed: int | None, generator: torch.Generator | None) -> None:
        self._seed = seed
        self._generator = generator
        self._per_device: dict[torch.device, torch.Generator] = {}

    def randn(self, like: torch.Tensor) -> torch.Tensor:
        gen = self._generator
        if gen is None and self._seed is None:
            return torch.randn_like(like)
        if gen is None:
            gen = self._per_device.get(like.device)
            if gen is None:
                gen = torch.Generator(device=like.device).manual_seed(self._seed)
                self._per_device[like.device] = gen
        elif gen.device.type != like.device.type:
            raise ValueError(
                f"generator is on {gen.device} but the weight is on {like.device}; "
                f"create it with torch.Generator(device={str(like.device)!r}) or pass seed="
            )
        return torch.randn(like.shape, generator=gen, dtype=like.dtype, device=like.device)


def _transform(
    index: int, name: str, weight: torch.Tensor, config: PostProcConfig, noise: _NoiseSource
) -> LayerReport:
    """Noise then orthogonalisation of one layer's weight, in place (noise, then QR)."""
    mat, transposed = _as_2d(weight)
    corr, sigma = None, 0.0
    if config.beta > 0:
        # float16/bfloat16 weights: compute the statistic in float32 (corrcoef needs the range)
        corr_t = corr_std(mat if mat.dtype in (torch.float32, torch.float64) else mat.float())
        sigma_t = config.beta * corr_t  # float32 scalar like ppuda, so sigma rounds the same way
        corr, sigma = float(corr_t), float(sigma_t)
        if not torch.isfinite(sigma_t):
            raise ValueError(
                f"layer {index} ({name}, weight {tuple(weight.shape)}): the correlation of its "
                "filters is undefined (a filter has zero variance), so the noise would be NaN; "
                f"start after it with layer={index + 1} or skip it with max_sz"
            )
        part = weight[config.max_sz :, config.max_sz :]
        part.add_(sigma_t.to(part.dtype) * noise.randn(part))
    if config.orth:
        _orthogonalise(weight)
    return LayerReport(
        index=index,
        name=name,
        shape=tuple(weight.shape),
        transposed=transposed,
        corr_std=corr,
        noise_std=sigma,
        orthogonalised=config.orth,
    )


def apply_postproc(
    model: nn.Module,
    config: PostProcConfig,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> list[LayerReport]:
    """Add correlation-scaled noise to and/or orthogonalise a model's 2-D layers, in place.

    Layers are those of `list_layers`, numbered from 1 (L in all); layer l is transformed when
    l >= config.layer, l < L (the last layer, usually the classifier, is never touched) and
    max(out, in) > config.max_sz. Norm parameters and biases are never changed.

    Randomness: with `seed`, noise comes from a fresh `torch.Generator` per device seeded with
    it, so repeated calls give identical weights and torch's global RNG is not consumed. CPU and
    CUDA generators produce different streams for the same seed, so the same seed gives
    different noise on CPU and on GPU. With `generator`, it is used as is (and advanced). With
    neither, torch's global RNG is used through `randn_like`, as ppuda does.

    Returns:
        One `LayerReport` per transformed layer, in layer order ([] when `config.enabled` is
        False).
    """
    if seed is not None and generator is not None:
        raise ValueError("pass seed= or generator=, not both")
    if not config.enabled:
        return []
    layers = list_layers(model)
    n_layers = len(layers)
    if config.layer > n_layers:
        raise ValueError(
            f"PostProcConfig.layer={config.layer} is beyond this model's {n_layers} 2-D layers "
            f"(L={n_layers}); use a value in 0..{n_layers - 1} (layer L itself is never changed)"
        )
    if n_layers and config.layer == n_layers:
        _logger.warning("layer=%d is the last 2-D layer, which is always skipped", n_layers)
    noise = _NoiseSource(seed, generator)
    reports = []
    with torch.no_grad():
        for index, (name, module) in enumerate(layers[:-1], start=1):
            weight = module.weight
            if index < config.layer or max(weight.shape[0], weight.shape[1]) <= config.max_sz:
                continue
            reports.append(_transform(index, name, weight, config, noise))
    _logger.debug("post-processed %d of %d 2-D layers with %s", len(reports), n_layers, config)
    return reports
