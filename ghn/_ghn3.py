"""The GHN-3 network: submodules named exactly as in the official GHN-3 files.

Only the parameter layout and the Graphormer forward live here; graph construction is in
`_graph3.py` and decoding in `_predict3.py`. An official file's state dict loads with
`load_state_dict(strict=True)`: the three structural embeddings sit at the top level, as the
released files store them. See docs/ghn3.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ghn._shapes import ShapeVocab

MAX_DEGREE = 100  # rows of centrality_embed_in/out minus one
MAX_INPUT_DIST = 1000  # rows of input_dist_embed minus one
EDGE_VOCAB = 257  # rows of the edge-distance embedding: index 2 + hops (0..50), rest unused


@dataclass(frozen=True)
class GHN3Config:
    """What defines a GHN-3's tensors. The official files store none of it; `load_ghn` infers
    it from the tensor shapes."""

    hid: int = 64
    heads: int = 8
    layers: int = 3
    max_shape: tuple[int, int, int, int] = (64, 64, 16, 16)
    num_classes: int = 1000

    def __post_init__(self) -> None:
        if len(self.max_shape) != 4 or self.max_shape[0] != self.max_shape[1]:
            raise ValueError(f"max_shape must be (M, M, S, S), got {self.max_shape}")
        if self.max_shape[2] != self.max_shape[3]:
            raise ValueError(f"max_shape must have equal spatial sizes, got {self.max_shape}")
        if self.hid < 4 or self.hid % 4:
            raise ValueError(f"hid must be a positive multiple of 4, got {self.hid}")
        if self.heads < 1 or self.hid % self.heads:
            raise ValueError(f"heads must divide hid={self.hid}, got {self.heads}")
        if self.layers < 1:
            raise ValueError(f"layers must be >= 1, got {self.layers}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")

    @classmethod
    def official(cls, hid: int, **kwargs) -> GHN3Config:
        """The head count the released code derives from hid."""
        return cls(hid=hid, heads=16 if hid > 64 else 8, **kwargs)


class _Layer(nn.Module):
    """One pre-norm Graphormer layer; layer 0 also owns the edge-distance projection."""

    def __init__(self, hid: int, heads: int, first: bool) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(hid)
        self.attn = nn.Module()
        self.attn.to_qkv = nn.Linear(hid, 3 * hid, bias=False)
        self.attn.to_out = nn.Sequential(nn.Linear(hid, hid))
        if first:
            self.attn.edge_embed = nn.Module()
            self.attn.edge_embed.embed = nn.Embedding(EDGE_VOCAB, hid)
            self.attn.proj_e = nn.Sequential(nn.Linear(2 * hid, hid), nn.ReLU(),
                                             nn.Linear(hid, heads))
        self.ln2 = nn.LayerNorm(hid)
        self.ff = nn.Module()
        self.ff.net = nn.Sequential(nn.Linear(hid, 4 * hid), nn.GELU(), nn.Identity(),
                                    nn.Linear(4 * hid, hid))
        self.heads = heads

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x: (N, hid); bias: (H, N, N) added to the attention logits."""
        n, hid = x.shape
        h = self.heads
        qkv = self.attn.to_qkv(self.ln1(x)).view(n, 3, h, hid // h).permute(1, 2, 0, 3)
        q, k, v = qkv.unbind(0)  # (H, N, d) each
        logits = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=1 / math.sqrt(hid // h))
        o = torch.bmm(logits.softmax(-1), v).transpose(0, 1).reshape(n, hid)
        x = x + self.attn.to_out(o)
        return x + self.ff.net(self.ln2(x))


class GHN3(nn.Module):
    """GHN-3 (Knyazev et al., 2023): shape encoder, Graphormer layers with degree,
    input-distance and shortest-path-distance embeddings, and the tensor decoders."""

    def __init__(self, config: GHN3Config = GHN3Config()) -> None:
        super().__init__()
        self.config = config
        m, _, s, _ = config.max_shape
        hid, nc = config.hid, config.num_classes
        self.vocab = ShapeVocab(num_classes=nc, spatial=s)
        self.checkpoint_id = "random-init"
        self.classes: tuple[str, ...] | None = None

        self.ln = nn.LayerNorm(hid)
        self.embed = nn.Embedding(15, hid)
        self.shape_enc = nn.Module()
        self.shape_enc.embed_spatial = nn.Embedding(len(self.vocab.spatial) + 1, hid // 4)
        self.shape_enc.embed_channel = nn.Embedding(len(self.vocab.channels) + 1, hid // 4)
        self.gnn = nn.ModuleList(_Layer(hid, config.heads, i == 0) for i in range(config.layers))
        self.decoder = nn.Module()
        self.decoder.fc = nn.Sequential(nn.Linear(hid, 4 * hid * s * s), nn.ReLU())
        self.decoder.conv = nn.Sequential(nn.Linear(4 * hid, 8 * hid), nn.ReLU(),
                                          nn.Linear(8 * hid, m * m))
        self.decoder.class_layer_predictor = nn.Sequential(nn.ReLU(), nn.Linear(m, nc))
        self.decoder_1d = nn.Module()
        self.decoder_1d.fc = nn.Sequential(nn.Linear(hid, 2 * hid), nn.ReLU(),
                                           nn.Linear(2 * hid, 2 * m))
        self.bias_class = nn.Sequential(nn.ReLU(), nn.Linear(m, nc))
        self.centrality_embed_in = nn.Embedding(MAX_DEGREE + 1, hid)
        self.centrality_embed_out = nn.Embedding(MAX_DEGREE + 1, hid)
        self.input_dist_embed = nn.Embedding(MAX_INPUT_DIST + 1, hid)
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

    def embed_graph(self, x0: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
        """Final node embeddings (N, hid) from initial features x0 and the dense hop-distance
        matrix `dist` (N, N; 0 = no path within 50 hops, or the diagonal)."""
        one_hop = dist == 1
        indeg = one_hop.sum(0).clamp_(max=MAX_DEGREE)
        outdeg = one_hop.sum(1).clamp_(max=MAX_DEGREE)
        x = (x0 + self.centrality_embed_in.weight[indeg] + self.centrality_embed_out.weight[outdeg]
             + self.input_dist_embed.weight[dist[0].clamp(max=MAX_INPUT_DIST)])
        bias = self.edge_bias(dist)
        for layer in self.gnn:
            x = layer(x, bias)
        return self.ln(x)

    def edge_bias(self, dist: torch.Tensor) -> torch.Tensor:
        """(H, N, N) attention bias from forward and backward hop distances.

        The bias of a pair depends only on its two distances, each one of at most 53 values,
        so it is computed once per distinct (forward, backward) pair, K x K x H with
        K = max distance + 3, and gathered: no (N, N, hid) intermediate.
        """
        attn = self.gnn[0].attn
        k = int(dist.max()) + 3
        e = attn.edge_embed.embed.weight[:k]
        p1, p2 = attn.proj_e[0], attn.proj_e[2]
        hid = e.shape[1]
        fwd = e @ p1.weight[:, :hid].t() + p1.bias  # (K, hid)
        bwd = e @ p1.weight[:, hid:].t()
        table = F.linear(F.relu(fwd[:, None] + bwd[None]), p2.weight, p2.bias)  # (K, K, H)
        flat = table.permute(2, 0, 1).reshape(table.shape[2], k * k)
        return flat[:, ((dist + 2) * k + dist.t() + 2).flatten()].view(-1, *dist.shape)

    def forward(self, *args, **kwargs):  # noqa: D401 - see predict_parameters
        raise TypeError("GHN3 is not called directly: use ghn.predict_parameters(model, ghn)")

    def __repr__(self) -> str:
        c = self.config
        return (f"GHN3(hid={c.hid}, heads={c.heads}, layers={c.layers}, "
                f"max_shape={c.max_shape}, num_classes={c.num_classes}, "
                f"checkpoint={self.checkpoint_id!r})")


def expected_state_shapes(config: GHN3Config) -> dict[str, torch.Size]:
    """Name -> shape of every tensor a checkpoint for `config` must hold."""
    with torch.device("meta"):
        return {name: t.shape for name, t in GHN3(config).state_dict().items()}


def infer_config(state: dict[str, torch.Tensor]) -> GHN3Config:
    """The configuration of an official GHN-3 state dict, from its tensor shapes (the files
    store none). Raises ValueError naming what is missing or inconsistent."""
    def shape(key: str) -> torch.Size:
        if key not in state:
            raise ValueError(f"not a GHN-3 state dict: no {key!r}")
        return state[key].shape

    hid = shape("embed.weight")[-1]
    m2 = shape("decoder.conv.2.weight")[0]
    m = math.isqrt(m2)
    if m * m != m2:
        raise ValueError(f"decoder.conv.2.weight has {m2} rows, not a square M*M")
    s = 11 if shape("shape_enc.embed_spatial.weight")[0] == 9 else 16
    nc = shape("decoder.class_layer_predictor.1.weight")[0]
    layers = sum(1 for k in state if k.startswith("gnn.") and k.endswith("ln1.weight"))
    # The released code assumes 16 heads if hid > 64 else 8; the edge projection has one row
    # per head, so the tensors say it directly (and agree for every official file).
    heads = shape("gnn.0.attn.proj_e.2.weight")[0]
    return GHN3Config(hid=hid, heads=heads, layers=layers, max_shape=(m, m, s, s),
                      num_classes=nc)
