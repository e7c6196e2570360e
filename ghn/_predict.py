"""Predict a model's parameters with GHN-2, exactly and fast.

Where ppuda's time goes and what we do instead:
- message passing updates one node at a time; we update a whole topological level at once,
  which reads only finished ancestors (descendants in the backward sweep), so it is the same
  computation up to float32 summation order;
- the decoder computes a 64x64xSxS tensor per node; we compute only the spatial positions and
  channels that the tensor's periodic tiling reads, for all nodes sharing that need at once;
- normalisation is applied to the small block before tiling, and tiling writes straight into
  the parameter's storage.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ghn._ghn3 import GHN3
from ghn._graph import Graph, build_graph
from ghn._graph3 import Graph3
from ghn._model import GHN2
from ghn._predict3 import (
    cached_graph3,
    embed_nodes3,
    predict_tensors3,
    targets3,
    write_prediction3,
)
from ghn._trace import NORMS, default_input_size

log = logging.getLogger(__name__)
_GRAPH_CACHE_SIZE = 32


@dataclass
class Prediction:
    """What `predict_parameters` did to a model."""

    model: nn.Module
    predicted: list[str]  # parameter names written by the GHN
    not_predicted: list[str]  # parameters left with their own initialisation
    graph: Graph | Graph3


def predict_parameters(
    model: nn.Module,
    ghn: GHN2 | GHN3,
    *,
    predict_classifier: bool = True,
    bn_train: bool = False,
    input_size: int | tuple[int, int, int] | None = None,
) -> Prediction:
    """Overwrite `model`'s parameters in place with the GHN's (GHN-2 or GHN-3) prediction.

    Args:
        model: any image classifier; traced at `input_size`, else `model.expected_input_sz`
            (see `adjust_for_small_images`), else 224. Nothing but predicted parameters changes.
        ghn: a loaded GHN-2 or GHN-3 (`load_ghn`).
        predict_classifier: write the last layer's weight and bias. ppuda's fine-tuning does so
            only when the model's class count equals the GHN's.
        bn_train: afterwards put every BatchNorm2d in batch-statistics mode, as ppuda's default.
    Returns:
        a `Prediction`; parameters it could not predict keep their values and are listed.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(ghn, (GHN2, GHN3)):
        raise TypeError(f"ghn must be a GHN2 or GHN3 from ghn.load_ghn(), "
                        f"got {type(ghn).__name__}")
    if isinstance(input_size, int):
        input_size = (3, input_size, input_size)
    input_size = tuple(input_size or default_input_size(model))
    if isinstance(ghn, GHN3) or ghn.semantics == "ghn3":
        graph = cached_graph3(ghn, model, input_size)
        predicted = write_prediction3(ghn, graph, model, predict_classifier=predict_classifier)
    else:
        graph = cached_graph(ghn, model, input_size)
        params = dict(model.named_parameters())
        with torch.no_grad():
            blocks = predicted_blocks(ghn, graph, model, predict_classifier=predict_classifier)
            for name, block in blocks.items():
                _tile_into(params[name], block)
        predicted = set(blocks)
    if bn_train:  # GHN-2 (ppuda) matches the exact type, GHN-3 any BatchNorm2d subclass
        for m in model.modules():
            if type(m) is nn.BatchNorm2d or (isinstance(m, nn.BatchNorm2d) and (
                    isinstance(ghn, GHN3) or ghn.semantics == "ghn3")):
                m.track_running_stats, m.training = False, True
    names = [n for n, _ in model.named_parameters()]
    return Prediction(model, [n for n in names if n in predicted],
                      [n for n in names if n not in predicted], graph)


def cached_graph(ghn: GHN2, model: nn.Module, input_size: tuple[int, int, int]) -> Graph:
    """The model's graph, built once per architecture, input size and mode (LRU on the GHN)."""
    cache: OrderedDict = ghn.__dict__.setdefault("_graph_cache", OrderedDict())
    key = (type(model).__qualname__, repr(model), input_size, model.training)
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    graph = cache[key] = build_graph(model, input_size)
    if len(cache) > _GRAPH_CACHE_SIZE:
        cache.popitem(last=False)
    return graph


def _cached(ghn: GHN2, graph: Graph, what: str, make):
    """Per-graph derived data, kept with the graph in the GHN's cache."""
    extras = ghn.__dict__.setdefault("_graph_extras", {})
    key = (id(graph), what)
    if key not in extras or extras[key][0] is not graph:
        extras[key] = (graph, make(graph))
    return extras[key][1]


def embed_nodes(ghn: GHN2 | GHN3, graph: Graph | Graph3) -> torch.Tensor:
    """Final node embeddings y (N x 32): shape encoding, GatedGNN, layer norm."""
    if isinstance(ghn, GHN3) or ghn.semantics == "ghn3":
        return embed_nodes3(ghn, graph)
    device = ghn.embed.weight.device
    ops = torch.tensor(graph.ops, device=device)
    ind = torch.tensor([ghn.vocab.encode(s) for s in graph.shapes], device=device)
    ch, sp = ghn.shape_enc.embed_channel.weight, ghn.shape_enc.embed_spatial.weight
    x = ghn.embed.weight[ops] + torch.cat([ch[ind[:, 0]], ch[ind[:, 1]], sp[ind[:, 2]],
                                           sp[ind[:, 3]]], 1)
    h = _propagate(ghn, _cached(ghn, graph, "schedule", message_schedule), x)
    return ghn.ln(h)


@dataclass(frozen=True)
class _Step:
    """One topological level of a sweep: which nodes, and their message coefficients."""

    nodes: slice | torch.Tensor  # a slice when the level's nodes are numbered contiguously
    coef: torch.Tensor  # (len(nodes), 2N): weights of [phi(h_u), psi(h_u)] rows, interleaved


def message_schedule(graph: Graph) -> tuple[list[_Step], list[_Step]]:
    """GHN-2's forward and backward graph sweeps as level-by-level steps (cached per graph).

    m_v = sum_{(u,v,1)} phi(h_u) + sum_{(u,v,d)} psi(h_u) / d; in the backward sweep the
    edges are reversed. Messages are read from a (2N, 32) table of [phi(h_u); psi(h_u)] rows.
    """
    n = graph.n_nodes
    u, v, hops = graph.edges.unbind(1)
    sweeps = []
    for src, dst, levels in ((u, v, graph.levels), (v, u, graph.levels_rev)):
        coef = torch.zeros(n, 2 * n)
        coef[dst, 2 * src] = (hops == 1).float()
        coef[dst, 2 * src + 1] = 1.0 / hops.float()
        steps = []
        order = torch.argsort(levels, stable=True)
        for group in torch.split(order, torch.bincount(levels).tolist()):
            if not len(group):
                continue
            lo, hi = int(group[0]), int(group[-1]) + 1
            nodes = slice(lo, hi) if hi - lo == len(group) else group
            steps.append(_Step(nodes, coef[nodes].contiguous()))
        sweeps.append(steps)
    return sweeps[0], sweeps[1]


def _propagate(ghn: GHN2, schedule, h: torch.Tensor) -> torch.Tensor:
    """GatedGNN (T=1): a forward then a backward sweep, one topological level at a time."""
    n, hid = h.shape
    a, b, gru = ghn.gnn.mlp.fc, ghn.gnn.mlp_ve.fc, ghn.gnn.gru
    # phi and psi side by side: h -> [phi(h), psi(h)] in two matmuls.
    w1 = torch.cat([a[0].weight, b[0].weight]).t().contiguous()
    b1 = torch.cat([a[0].bias, b[0].bias])
    w2 = torch.block_diag(a[2].weight, b[2].weight).t().contiguous()
    b2 = torch.cat([a[2].bias, b[2].bias])
    h = h.clone()
    for steps in schedule:
        table = torch.zeros(n, 2 * hid, dtype=h.dtype, device=h.device)
        flat = table.view(2 * n, hid)
        for step in steps:
            m = step.coef.to(h) @ flat
            h_old = h[step.nodes]
            if h_old.requires_grad:  # the GRU saves its input, which the next line overwrites
                h_old = h_old.clone()
            h_new = torch.gru_cell(m, h_old, gru.weight_ih, gru.weight_hh,
                                   gru.bias_ih, gru.bias_hh)
            h[step.nodes] = h_new
            table[step.nodes] = torch.addmm(b2, torch.addmm(b1, h_new, w1).relu_(), w2).relu_()
    return h


# ---- decoding -----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Target:
    node: int
    name: str
    role: str  # "weight" | "classifier_weight" | "bias" | "classifier_bias" | "norm"


def _targets(graph: Graph, model: nn.Module, params: dict, predict_classifier: bool):
    """What to write for each parameter node, by position and dimension."""
    n = graph.n_nodes
    targets = []
    for i, name in enumerate(graph.params):
        if name is None:
            continue
        dim = params[name].dim()
        owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        if i == n - 2 and dim >= 2 and dim != 4:
            role = "classifier_weight"
        elif i == n - 1 and dim == 1:
            role = "classifier_bias"
        elif dim == 1:
            role = "norm" if isinstance(owner, NORMS) else "bias"
        elif dim in (2, 4):
            role = "weight"
        else:
            log.warning("cannot predict %s of shape %s", name, tuple(params[name].shape))
            continue
        if role.startswith("classifier") and not predict_classifier:
            continue
        targets.append(_Target(i, name, role))
    return targets


def predicted_blocks(
    ghn: GHN2, graph: Graph, model: nn.Module, *, predict_classifier: bool = True
) -> dict[str, torch.Tensor]:
    """Parameter name -> the GHN's block for it, before periodic tiling (differentiable).

    The one computation behind both paths: inference tiles each block into the parameter's
    storage (`predict_parameters`), training tiles it out of place (`predict_tensors`); tiling
    only copies values, so a trained GHN predicts exactly the tensors it was trained with.
    """
    params = dict(model.named_parameters())
    targets = _targets(graph, model, params, predict_classifier)
    y = embed_nodes(ghn, graph)
    blocks: dict[str, torch.Tensor] = {}
    one_d = [t for t in targets if t.role in ("bias", "norm", "classifier_bias")]
    if one_d:
        nodes = torch.tensor([t.node for t in one_d], device=y.device)
        v = ghn.decoder_1d.fc(y[nodes])
        k = ghn.max_channels
        for t, row in zip(one_d, v):
            blocks.update(_blocks_1d(ghn, t, row[:k], row[k:], params))
    weights = [t for t in targets if t.role in ("weight", "classifier_weight")]
    for t, block in _decode_weights(ghn, y, weights, params):
        blocks[t.name] = block
    return blocks


def predicted_names(graph: Graph | Graph3, model: nn.Module, *, predict_classifier: bool = True
                    ) -> set[str]:
    """The parameter names `predict_tensors` returns, without computing anything: for a GHN-2
    graph or, given a `build_graph3` graph, for a GHN-3 (a norm's bias comes with its weight
    in both)."""
    params = dict(model.named_parameters())
    names = set()
    targets = (targets3(graph, model, predict_classifier=predict_classifier)
               if isinstance(graph, Graph3) else
               _targets(graph, model, params, predict_classifier))
    for t in targets:
        names.add(t.name)
        bias_name = t.name.rsplit(".", 1)[0] + ".bias"
        if t.role == "norm" and bias_name in params:
            names.add(bias_name)
    return names


def predict_tensors(
    ghn: GHN2 | GHN3, graph: Graph | Graph3, model: nn.Module, *, predict_classifier: bool = True
) -> dict[str, torch.Tensor]:
    """Parameter name -> predicted tensor of the parameter's shape, differentiable in the GHN's
    parameters: the input of `torch.func.functional_call(model, tensors, x)` in training."""
    if isinstance(ghn, GHN3) or ghn.semantics == "ghn3":
        return predict_tensors3(ghn, graph, model, predict_classifier=predict_classifier)
    params = dict(model.named_parameters())
    blocks = predicted_blocks(ghn, graph, model, predict_classifier=predict_classifier)
    return {name: _tile(block, params[name].shape) for name, block in blocks.items()}


def _blocks_1d(ghn, t: _Target, v0, v1, params) -> dict[str, torch.Tensor]:
    if t.role == "classifier_bias":
        b = ghn.bias_class(v1)  # bias_class is ReLU then Linear: the classifier's bias row
        return {t.name: torch.tanh(b / 5)}
    if t.role == "bias":
        return {t.name: torch.tanh(v1 / 5)}
    out = {t.name: 2 * torch.sigmoid(v0 / 2)}
    bias_name = t.name.rsplit(".", 1)[0] + ".bias"
    if bias_name in params:
        out[bias_name] = torch.tanh(v1 / 5)
    return out


def _decode_weights(ghn, y, targets, params):
    """Yield (target, normalised block); nodes sharing a block size are decoded together."""
    k, s = ghn.max_channels, ghn.max_spatial
    groups: dict[tuple, list[_Target]] = defaultdict(list)
    for t in targets:
        shape = params[t.name].shape
        kh, kw = (shape[2], shape[3]) if len(shape) == 4 else (1, 1)
        if t.role == "classifier_weight":
            groups[(1, 1, k, k, True)].append(t)
        else:
            groups[(min(kh, s), min(kw, s), min(shape[0], k), min(shape[1], k), False)].append(t)
    for (sh, sw, n_o, n_i, is_cls), group in groups.items():
        nodes = torch.tensor([t.node for t in group], device=y.device)
        blocks = _conv_decoder(ghn, y[nodes], sh, sw, n_o, n_i)
        for t, block in zip(group, blocks):
            shape = params[t.name].shape
            if is_cls:
                head = ghn.decoder.class_layer_predictor[1]
                block = head.weight.flatten(1) @ F.relu(block[:, :, 0, 0]) + head.bias[:, None]
            else:
                block = _spatial_tile(block, shape)
            yield t, block * math.sqrt(_gain(shape) / math.prod(shape[1:]))


def _conv_decoder(ghn, y, sh: int, sw: int, n_o: int, n_i: int) -> torch.Tensor:
    """D(y)[:n_o, :n_i, :sh, :sw] for a batch of embeddings, computing nothing else."""
    s, k = ghn.max_spatial, ghn.max_channels
    dev = y.device
    pos = (torch.arange(sh, device=dev)[:, None] * s + torch.arange(sw, device=dev)).flatten()
    rows = (torch.arange(128, device=dev)[:, None] * s * s + pos).flatten()  # (128 * P)
    fc = ghn.decoder.fc[0]
    z = F.relu(F.linear(y, fc.weight[rows], fc.bias[rows]))  # (B, 128 * P)
    z = z.view(len(y), 128, -1).transpose(1, 2).reshape(-1, 128)  # (B * P, 128)
    c0, c2 = ghn.decoder.conv[0], ghn.decoder.conv[2]
    u = F.relu(F.linear(z, c0.weight.flatten(1), c0.bias))
    ch = (torch.arange(n_o, device=dev)[:, None] * k + torch.arange(n_i, device=dev)).flatten()
    q = F.linear(u, c2.weight.flatten(1)[ch], c2.bias[ch])  # (B * P, n_o * n_i)
    return q.view(len(y), sh, sw, n_o, n_i).permute(0, 3, 4, 1, 2)


def _spatial_tile(block: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Kernels larger than the GHN's S x S read the block periodically."""
    if len(shape) == 2:
        return block[:, :, 0, 0]
    reps = (1, 1, math.ceil(shape[2] / block.shape[2]), math.ceil(shape[3] / block.shape[3]))
    if reps == (1, 1, 1, 1):
        return block
    return block.repeat(reps)[:, :, : shape[2], : shape[3]]


def _gain(shape: torch.Size) -> float:
    """The fan-in factor beta: 1 for depthwise and 1 x k kernels, else 2 (He initialisation)."""
    return 1.0 if len(shape) == 4 and (shape[1] == 1 or shape[2] < shape[3]) else 2.0


def _tile(block: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """out[i, j, ...] = block[i mod b0, j mod b1, ...]: `_tile_into`'s values, out of place."""
    if tuple(shape) == tuple(block.shape):
        return block
    reps = [math.ceil(t / b) for t, b in zip(shape, block.shape)]
    return block.repeat(reps)[tuple(slice(0, t) for t in shape)]


def _tile_into(param: torch.Tensor, block: torch.Tensor) -> None:
    """param[i, j, ...] = block[i mod b0, j mod b1, ...], written in one pass when it can be."""
    shape, bshape = tuple(param.shape), tuple(block.shape)
    if shape == bshape:
        param.copy_(block)
        return
    reps = [math.ceil(t / b) for t, b in zip(shape, bshape)]
    if param.is_contiguous() and all(t == r * b for t, r, b in zip(shape, reps, bshape)):
        split = [d for r, b in zip(reps, bshape) for d in (r, b)]
        view = block.reshape([d for b in bshape for d in (1, b)])
        param.view(split).copy_(view.expand(split))
        return
    full = block.repeat(reps)
    param.copy_(full[tuple(slice(0, t) for t in shape)])
