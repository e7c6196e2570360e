"""Decode GHN-3 node embeddings into a model's parameters (docs/ghn3.md).

As for GHN-2, the convolutional decoder is evaluated only at the spatial positions and the
channel block a tensor's tiling reads: a centred kh x kw window, min(t0, M) x min(t1, M)
channels. Nodes needing the same window and block are decoded as one batch. Normalisation is
applied to that small block; tiling then copies it periodically into the full tensor.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ghn._ghn3 import GHN3
from ghn._graph import Graph
from ghn._graph3 import Graph3, build_graph3
from ghn._model import GHN2

log = logging.getLogger(__name__)
_GRAPH_CACHE_SIZE = 32
_WEIGHT_LIKE = ("weight", "in_proj_weight", "pos_embedding", "layer_scale")
_BIAS_LIKE = ("bias", "in_proj_bias")


@dataclass(frozen=True)
class _Target:
    node: int
    name: str
    shape: tuple[int, ...]
    role: str  # weight | classifier_weight | bias | classifier_bias | norm | pos_embedding


def _is_norm(module: nn.Module | None) -> bool:
    return module is not None and "norm" in type(module).__name__.lower()


def targets3(graph: Graph3, model: nn.Module, *, predict_classifier: bool = True
             ) -> list[_Target]:
    """What each matched parameter node becomes, by its role in the graph and its rank."""
    params = dict(model.named_parameters(remove_duplicate=False))
    cls_w, cls_b = graph.classifier
    out = []
    for i, name in enumerate(graph.params):
        if name is None or name.rsplit(".", 1)[-1] not in _WEIGHT_LIKE + _BIAS_LIKE:
            continue
        shape = tuple(params[name].shape)
        is_bias = name.rsplit(".", 1)[-1] in _BIAS_LIKE
        if i == cls_b and len(shape) == 1:
            role = "classifier_bias"
        elif i == cls_w:
            role = "classifier_weight"
        elif len(shape) == 1:
            owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            role = "norm" if not is_bias and _is_norm(owner) else "bias"
        elif len(shape) == 3 and shape[0] == 1 and min(shape[1:]) > 1:
            role = "pos_embedding"
        elif len(shape) in (2, 4):
            role = "weight"
        else:
            log.warning("GHN-3 cannot predict %s of shape %s", name, shape)
            continue
        if role.startswith("classifier") and not predict_classifier:
            continue
        out.append(_Target(i, name, shape, role))
    return out


def node_features(ghn: GHN3, graph: Graph3) -> torch.Tensor:
    """x0 (N, hid): primitive embedding plus the four shape-encoder embeddings."""
    device = ghn.embed.weight.device
    shapes = [ps if ps is not None else (s if s is not None and len(s) == 4 and s[0] == 1
                                           and s[1] == 1 else None)
              for ps, s in zip(graph.param_shapes, graph.shapes)]
    ind = torch.tensor([ghn.vocab.encode(s) for s in shapes], device=device)
    ch, sp = ghn.shape_enc.embed_channel.weight, ghn.shape_enc.embed_spatial.weight
    ops = torch.tensor(graph.ops, device=device)
    return ghn.embed.weight[ops] + torch.cat([ch[ind[:, 0]], ch[ind[:, 1]], sp[ind[:, 2]],
                                              sp[ind[:, 3]]], 1)


def embed_nodes3(ghn: GHN3 | GHN2, graph: Graph3) -> torch.Tensor:
    """Final node embeddings (N, hid): Graphormer layers, or for GHN-2 weights ppuda's
    GatedGNN over the same graph's (u, v, hops) edges."""
    x0 = node_features(ghn, graph)
    if isinstance(ghn, GHN2):
        from ghn._predict import _propagate, message_schedule

        h = _propagate(ghn, message_schedule(_as_ghn2_graph(graph)), x0)
        return ghn.ln(h)
    return ghn.embed_graph(x0, graph.dist.to(ghn.embed.weight.device))


def _as_ghn2_graph(graph: Graph3) -> Graph:
    """The edge list and topological levels GHN-2's message passing reads."""
    dist = graph.dist
    u, v = dist.nonzero(as_tuple=True)  # row-major: sorted by u, then v
    edges = torch.stack([u, v, dist[u, v]], 1)
    n = graph.n_nodes
    one = [(int(a), int(b)) for a, b in (dist == 1).nonzero().tolist()]
    level, level_rev = [0] * n, [0] * n
    for a, b in one:  # nodes are in topological order, so edges go forward
        level[b] = max(level[b], level[a] + 1)
    for a, b in reversed(one):
        level_rev[a] = max(level_rev[a], level_rev[b] + 1)
    return Graph(names=graph.names, params=graph.params, ops=graph.ops, shapes=graph.shapes,
                 edges=edges, levels=torch.tensor(level), levels_rev=torch.tensor(level_rev))


def predicted_blocks3(ghn: GHN3, graph: Graph3, model: nn.Module, *,
                      predict_classifier: bool = True) -> dict[str, torch.Tensor]:
    """Parameter name -> normalised block, to be tiled periodically to the parameter's shape
    (differentiable in the GHN's parameters)."""
    targets = targets3(graph, model, predict_classifier=predict_classifier)
    y = embed_nodes3(ghn, graph)
    params = dict(model.named_parameters(remove_duplicate=False))
    blocks: dict[str, torch.Tensor] = {}
    one_d = [t for t in targets if t.role in ("bias", "norm", "classifier_bias")]
    if one_d:
        m = ghn.max_channels
        v = ghn.decoder_1d.fc(y[torch.tensor([t.node for t in one_d], device=y.device)])
        for t, row in zip(one_d, v):
            v0, v1 = row[:m], row[m:]
            if t.role == "classifier_bias":
                blocks[t.name] = torch.tanh(ghn.bias_class(v1) / 5)
            elif t.role == "bias":
                blocks[t.name] = torch.tanh(v1 / 5)
            else:
                blocks[t.name] = 2 * torch.sigmoid(v0 / 2)
                bias = t.name.rsplit(".", 1)[0] + ".bias"
                if bias in params and bias not in blocks:
                    blocks[bias] = torch.tanh(v1 / 5)
    blocks.update(_decode_weights(ghn, y, [t for t in targets if t.role not in
                                           ("bias", "norm", "classifier_bias")]))
    return blocks


def _window(k: int, s: int, top_left: bool = False) -> tuple[int, int]:
    """Rows [start, start + k) of the S x S decoder map (k <= S): centred for GHN-3, the
    top-left corner for GHN-2 weights (as ppuda crops)."""
    return (0, k) if top_left else (s // 2 - k // 2, k)


def _decode_weights(ghn: GHN3, y: torch.Tensor, targets: list[_Target]):
    m, s = ghn.max_channels, ghn.max_spatial
    groups: dict[tuple, list[_Target]] = defaultdict(list)
    for t in targets:
        shape = t.shape
        if t.role == "classifier_weight":
            groups[("cls", 1, 1, m, min(shape[1], m))].append(t)
        elif t.role == "pos_embedding":
            side = math.isqrt(shape[1])
            groups[("pos", side, side, 1, min(shape[2], m))].append(t)
        elif len(shape) == 2:
            groups[("w", 1, 1, min(shape[0], m), min(shape[1], m))].append(t)
        else:
            kh, kw = shape[2], shape[3]
            if (kh > s) != (kw > s):
                raise ValueError(f"GHN-3 cannot predict {t.name} of shape {shape}: one side of "
                                 f"the kernel exceeds the decoder's {s}x{s} map")
            kind = "big" if kh > s else "w"
            groups[(kind, kh, kw, min(shape[0], m), min(shape[1], m))].append(t)
    for (kind, kh, kw, n_o, n_i), group in groups.items():
        nodes = torch.tensor([t.node for t in group], device=y.device)
        if kind == "big":
            full = _conv_decoder(ghn, y[nodes], (0, s), (0, s), n_o, n_i)
            b = full.shape[0]
            blocks = F.interpolate(full.reshape(b * n_o, n_i, s, s), size=(kh, kw),
                                   mode="bilinear", align_corners=False)
            blocks = blocks.view(b, n_o, n_i, kh, kw)
        else:
            corner = isinstance(ghn, GHN2)
            blocks = _conv_decoder(ghn, y[nodes], _window(kh, s, corner), _window(kw, s, corner),
                                   n_o, n_i)
        for t, block in zip(group, blocks):
            yield t.name, _finish_block(ghn, t, block, kind)


def _finish_block(ghn: GHN3, t: _Target, block: torch.Tensor, kind: str) -> torch.Tensor:
    shape = t.shape
    if kind == "cls":
        head = ghn.decoder.class_layer_predictor[1]
        block = F.linear(F.relu(block[:, :, 0, 0]).t(), head.weight.flatten(1), head.bias).t()
        if len(shape) == 4:
            block = block[:, :, None, None]
        return block * math.sqrt(2 / math.prod(shape[1:]))
    if kind == "pos":
        return block[0].permute(1, 2, 0).reshape(-1, block.shape[1])  # (s*s, n_i), unscaled
    if len(shape) == 2:
        block = block[:, :, 0, 0]
    if len(shape) > 2 and shape[0] == 1 and shape[2] >= 11:
        return block
    beta = 1.0 if len(shape) > 2 and (shape[1] == 1 or shape[2] < shape[3]) else 2.0
    return block * math.sqrt(beta / math.prod(shape[1:]))


def _conv_decoder(ghn: GHN3, y: torch.Tensor, rows: tuple[int, int], cols: tuple[int, int],
                  n_o: int, n_i: int) -> torch.Tensor:
    """D(y)[:n_o, :n_i, rows, cols] for a batch of embeddings, computing nothing else."""
    s, m = ghn.max_spatial, ghn.max_channels
    dev = y.device
    (r0, nr), (c0, ncol) = rows, cols
    pos = ((torch.arange(r0, r0 + nr, device=dev)[:, None] * s
            + torch.arange(c0, c0 + ncol, device=dev)).flatten())
    conv0, conv2 = ghn.decoder.conv[0], ghn.decoder.conv[2]
    w0, w2_all = conv0.weight.flatten(1), conv2.weight.flatten(1)  # GHN-2's are 1x1 convs
    width = w0.shape[1]
    idx = (torch.arange(width, device=dev)[:, None] * s * s + pos).flatten()
    fc = ghn.decoder.fc[0]
    z = F.relu(F.linear(y, fc.weight[idx], fc.bias[idx]))  # (B, width * P)
    z = z.view(len(y), width, -1).transpose(1, 2).reshape(-1, width)  # (B * P, width)
    u = F.relu(F.linear(z, w0, conv0.bias))
    if n_i == m:  # whole rows of the M x M output: a slice, no gather
        w2, b2 = w2_all[: n_o * m], conv2.bias[: n_o * m]
    else:
        ch = (torch.arange(n_o, device=dev)[:, None] * m
              + torch.arange(n_i, device=dev)).flatten()
        w2, b2 = w2_all[ch], conv2.bias[ch]
    q = F.linear(u, w2, b2)  # (B * P, n_o * n_i)
    return q.view(len(y), nr, ncol, n_o, n_i).permute(0, 3, 4, 1, 2)


def expand_block(block: torch.Tensor, shape: tuple[int, ...], ghn: GHN3) -> torch.Tensor:
    """The full tensor: the block repeated periodically along every axis, cropped to shape."""
    if len(shape) == 3 and block.dim() == 2:  # ViT positional embedding
        return _pos_embedding(block, shape, ghn)
    reps = [math.ceil(t / b) for t, b in zip(shape, block.shape)]
    full = block.repeat(reps) if any(r > 1 for r in reps) else block
    return full[tuple(slice(0, t) for t in shape)]


def _pos_embedding(block: torch.Tensor, shape: tuple[int, ...], ghn: GHN3) -> torch.Tensor:
    """Row 0 (the class token's) is a fresh N(0, 0.02^2) draw of M values from the global RNG,
    as GHN-3 does; rows 1.. are the decoded s x s map, channels periodic in M."""
    m, d = ghn.max_channels, shape[2]
    first = torch.normal(0.0, 0.02, size=(1, 1, m)).to(block).view(m)
    first = first.repeat(math.ceil(d / m))[:d]
    rest = block.repeat(1, math.ceil(d / block.shape[1]))[:, :d]
    rows = torch.cat([first[None], rest])
    if rows.shape[0] < shape[1]:
        rows = rows.repeat(math.ceil(shape[1] / rows.shape[0]), 1)
    return rows[: shape[1]][None]


def cached_graph3(ghn: GHN3, model: nn.Module, input_size: tuple[int, int, int]) -> Graph3:
    """The model's graph, built once per architecture, input size and mode (LRU on the GHN)."""
    from collections import OrderedDict

    cache: OrderedDict = ghn.__dict__.setdefault("_graph_cache", OrderedDict())
    key = (type(model).__qualname__, repr(model), input_size, model.training)
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    graph = cache[key] = build_graph3(model, input_size)
    if len(cache) > _GRAPH_CACHE_SIZE:
        cache.popitem(last=False)
    return graph


def predict_tensors3(ghn: GHN3, graph: Graph3, model: nn.Module, *,
                     predict_classifier: bool = True) -> dict[str, torch.Tensor]:
    """Parameter name -> predicted tensor of the parameter's shape, still attached to the
    GHN's autograd graph (GHN-3's keep_grads): what training through the model needs."""
    params = dict(model.named_parameters(remove_duplicate=False))
    blocks = predicted_blocks3(ghn, graph, model, predict_classifier=predict_classifier)
    return {n: expand_block(b, tuple(params[n].shape), ghn) for n, b in blocks.items()}


def write_prediction3(ghn: GHN3, graph: Graph3, model: nn.Module, *,
                      predict_classifier: bool = True) -> set[str]:
    """Overwrite the predicted parameters in place; returns their names."""
    from ghn._predict import _tile_into  # GHN-2's in-place periodic tiling

    params = dict(model.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        blocks = predicted_blocks3(ghn, graph, model, predict_classifier=predict_classifier)
        for name, block in blocks.items():
            param = params[name]
            if param.dim() == 3 and block.dim() == 2:  # ViT positional embedding
                param.copy_(_pos_embedding(block, tuple(param.shape), ghn))
            else:
                _tile_into(param, block)
    return set(blocks)


def ghn3_group_keys(ghn: GHN3, graph: Graph3, model: nn.Module
                    ) -> tuple[list[tuple[tuple[int, ...], list[int]]], dict[int, str]]:
    """GHN-3's decoding groups, (key, nodes) in order of first appearance, and the parameter
    of each matched node. We batch by what is computed instead (window and channel block), so
    this exists to show the two agree on which nodes are matched and how they are keyed."""
    m = ghn.max_channels

    def kappa(n: int) -> int:
        k = min(n, m)
        if k % 3 == 0:
            k = 4 * k // 3
        return m if k >= m / 2 else k

    groups: dict[tuple[int, ...], list[int]] = {}
    names = {}
    for t in targets3(graph, model, predict_classifier=True):
        s = t.shape
        if t.role == "classifier_bias":
            key = (kappa(s[0]), -1)
        elif len(s) == 1:
            key = (kappa(s[0]), 0)
        elif t.role == "classifier_weight":
            key = (kappa(s[0]), kappa(s[1]))
        elif t.role == "pos_embedding":
            side = math.isqrt(s[1])
            key = (1, s[2], side, side)
        elif len(s) == 2:
            key = (kappa(s[0]), kappa(s[1]), 1, 1)
        else:
            key = (kappa(s[0]), kappa(s[1]), s[2], s[3])
        groups.setdefault(key, []).append(t.node)
        names[t.node] = t.name
    return list(groups.items()), names
