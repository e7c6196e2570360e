"""The GHN-2 network: submodules named exactly as in the official ppuda checkpoints.

Only the parameter layout lives here; how a prediction uses it is in `_predict.py`.
The state dict of `GHN2(...)` has the 31 tensors of the official files, so the official files load
with `load_state_dict(strict=True)` and no renaming.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ghn._shapes import ShapeVocab


@dataclass(frozen=True)
class GHN2Config:
    """The constructor arguments a GHN-2 checkpoint stores under 'config'."""

    max_shape: tuple[int, int, int, int] = (64, 64, 16, 16)
    num_classes: int = 1000
    hid: int = 32

    def __post_init__(self) -> None:
        if len(self.max_shape) != 4 or self.max_shape[0] != self.max_shape[1]:
            raise ValueError(f"max_shape must be (K, K, S, S), got {self.max_shape}")
        if self.max_shape[2] != self.max_shape[3]:
            raise ValueError(f"max_shape must have equal spatial sizes, got {self.max_shape}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")


def _mlp(hid: int) -> nn.Module:
    """gnn.mlp / gnn.mlp_ve: Linear, ReLU, Linear, ReLU (note the final ReLU)."""
    module = nn.Module()
    module.fc = nn.Sequential(
        nn.Linear(hid, hid // 2), nn.ReLU(), nn.Linear(hid // 2, hid), nn.ReLU()
    )
    return module


class GHN2(nn.Module):
    """GHN-2 (Knyazev et al., 2021): shape encoder, GatedGNN, and the tensor decoders."""

    def __init__(self, config: GHN2Config = GHN2Config()) -> None:
        super().__init__()
        self.config = config
        k, _, s, _ = config.max_shape
        hid, nc = config.hid, config.num_classes
        self.vocab = ShapeVocab(num_classes=nc, spatial=s)
        self.checkpoint_id = "random-init"
        self.classes: tuple[str, ...] | None = None  # names, when a checkpoint records them
        # "ppuda": GHN-2's own graph and decoding; "ghn3": GHN-3's graph, top-left crops and
        # tiling rules, as GHN-3's code runs GHN-2 weights (docs/ghn3.md)
        self.semantics = "ppuda"

        self.ln = nn.LayerNorm(hid)
        self.embed = nn.Embedding(15, hid)
        self.shape_enc = nn.Module()
        self.shape_enc.embed_spatial = nn.Embedding(len(self.vocab.spatial) + 1, hid // 4)
        self.shape_enc.embed_channel = nn.Embedding(len(self.vocab.channels) + 1, hid // 4)

        self.gnn = nn.Module()
        self.gnn.mlp = _mlp(hid)
        self.gnn.mlp_ve = _mlp(hid)
        self.gnn.gru = nn.GRUCell(hid, hid)

        self.decoder = nn.Module()
        self.decoder.fc = nn.Sequential(nn.Linear(hid, 128 * s * s), nn.ReLU())
        self.decoder.conv = nn.Sequential(
            nn.Conv2d(128, 256, 1), nn.ReLU(), nn.Conv2d(256, k * k, 1)
        )
        self.decoder.class_layer_predictor = nn.Sequential(nn.ReLU(), nn.Conv2d(k, nc, 1))
        self.decoder_1d = nn.Module()
        self.decoder_1d.fc = nn.Sequential(nn.Linear(hid, k), nn.ReLU(), nn.Linear(k, 2 * k))
        self.bias_class = nn.Sequential(nn.ReLU(), nn.Linear(k, nc))
        self.eval()

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def max_channels(self) -> int:
        return self.config.max_shape[0]

    @property
    def max_spatial(self) -> int:
        return self.config.max_shape[2]

    def forward(self, *args, **kwargs):  # noqa: D401 - see predict_parameters
        raise TypeError("GHN2 is not called directly: use ghn.predict_parameters(model, ghn)")

    def __repr__(self) -> str:
        return (
            f"GHN2(max_shape={self.config.max_shape}, num_classes={self.num_classes}, "
            f"checkpoint={self.checkpoint_id!r}"
            + (", semantics='ghn3')" if self.semantics == "ghn3" else ")")
        )


def as_ghn3_semantics(ghn: GHN2) -> GHN2:
    """Make `ghn` predict as GHN-3's code runs GHN-2 weights: GHN-3's graph (any torchvision
    classifier), top-left decoder crops, GHN-3's tiling and normalisation. Returns `ghn`; its
    checkpoint_id gains '+ghn3' so caches keyed on it keep the two apart."""
    if ghn.semantics != "ghn3":
        ghn.semantics = "ghn3"
        ghn.checkpoint_id += "+ghn3"
        ghn.__dict__.pop("_graph_cache", None)
    return ghn


def expected_state_shapes(config: GHN2Config) -> dict[str, torch.Size]:
    """Name -> shape of every tensor a checkpoint for `config` must hold, in stored order."""
    with torch.device("meta"):
        return {name: t.shape for name, t in GHN2(config).state_dict().items()}
