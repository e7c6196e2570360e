"""A trial's init diagnostics (postproc's diversity summary), kept off the trial's CPU path.

The summary reads every 2-D weight: for convnext_base that is 113 float64 Gram matrices and their
eigenvalues, 5-80 s on a busy 2-core CPU before a fresh trial's first step while its GPU waits.
So it runs where the model already is (the trial's device), and it is cached on the node under
a hash of the weights it reads: the trials of a sweep share their seed, so every random-init
trial of an architecture, and every GHN trial without noise, starts from the same weights, and
the node computes their summary once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

import postproc
from postproc import diversity_summary, list_layers

from ._cache import cache_key, cached_torch, source_hash


def init_summary(model: nn.Module) -> dict[str, float]:
    """``diversity_summary(model)`` as floats, computed on the model's device on a cache miss."""
    key = cache_key(weights=weights_digest(model), code=source_hash(Path(postproc.__file__).parent))

    def compute() -> dict[str, float]:
        return {k: float(v) for k, v in diversity_summary(model).items()}

    return cached_torch("init-summary", key, compute)


def weights_digest(model: nn.Module) -> str:
    """sha256 of the layers the summary reads (names, dtypes, shapes, values in logical order,
    so a channels-last copy on another device has the same digest)."""
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, module in list_layers(model):
            w = module.weight.detach().to("cpu").contiguous()
            digest.update(f"{name}:{w.dtype}:{tuple(w.shape)}\0".encode())
            digest.update(w.view(torch.uint8).numpy())
    return digest.hexdigest()
