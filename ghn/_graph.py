"""GHN-2's graph of a model: ordering, pruning of unsupported ops, node features.

The result is exactly ppuda's graph for every model ppuda handles. Two documented extensions
cover models ppuda refuses: a graph with several source nodes (Swin, MaxViT, ViT: ops fed only
by unrecognised parameters) gets an edge from the input node to each source, and nothing here
recurses, so depth is unlimited (EfficientNet-V2-L).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ghn._trace import NORMS, RawGraph, trace

PRIMITIVES = ("max_pool", "avg_pool", "sep_conv", "dil_conv", "conv", "msa", "cse", "sum",
              "concat", "input", "bias", "bn", "ln", "pos_enc", "glob_avg")
P = {name: i for i, name in enumerate(PRIMITIVES)}
# Op kinds (label cut at "Backward") that can stay in the graph, and their primitive.
SUPPORTED = {"Mean": P["glob_avg"], "AdaptiveAvgPool2D": P["glob_avg"],
             "MaxPool2DWithIndices": P["max_pool"], "AvgPool2D": P["avg_pool"], "Add": P["sum"],
             "Cat": P["concat"], "Mul": P["cse"], "Clone": P["msa"], "input": P["input"]}
MAX_DIST = 50  # virtual edges connect nodes up to this many hops apart


@dataclass(frozen=True)
class Graph:
    """A model's GHN-2 graph in topological order; node 0 is the input."""

    names: list[str]  # parameter name, autograd op label, or "input"
    params: list[str | None]  # parameter name of parameter nodes
    ops: list[int]  # index into PRIMITIVES
    shapes: list[tuple[int, ...] | None]  # what the shape encoder sees
    edges: torch.Tensor  # (E, 3) int64 rows (u, v, hops), sorted by u then v
    levels: torch.Tensor  # (N,) longest path from the input: a node depends on lower levels only
    levels_rev: torch.Tensor  # (N,) longest path to the output

    @property
    def n_nodes(self) -> int:
        return len(self.names)

    def edges_1hop(self) -> list[tuple[int, int]]:
        one = self.edges[self.edges[:, 2] == 1]
        return [(int(u), int(v)) for u, v in one[:, :2].tolist()]


def build_graph(model: nn.Module, input_size: tuple[int, int, int]) -> Graph:
    """Trace `model` and turn the autograd graph into GHN-2's graph."""
    raw = trace(model, input_size)
    _rewire_linear(raw)
    order = _topological_order(raw)
    succ, pred = _adjacency(raw, order)
    labels = [raw.labels[n] for n in order]
    kept = _prune(labels, [raw.params[n] for n in order], [raw.saved[n] for n in order],
                  succ, pred)
    new_id = {old: i for i, old in enumerate(kept)}
    edges = [(new_id[u], new_id[v]) for u in kept for v in succ[u]]
    nodes = [order[n] for n in kept]
    ops = [_primitive(raw, n) for n in nodes]
    shapes = [_shape(raw, n) for n in nodes]
    return Graph(names=[raw.labels[n] for n in nodes], params=[raw.params[n] for n in nodes],
                 ops=ops, shapes=shapes, **_distances(len(kept), edges))


def _rewire_linear(raw: RawGraph) -> None:
    """Move each Linear weight from beside its consumer to in front of it: prev -> W -> b."""
    for w, module in enumerate(raw.modules):
        if type(module) is not nn.Linear or ".weight" not in raw.labels[w]:
            continue
        for s in [v for (u, v) in raw.edges if u == w]:
            into_s = [(u, v) for (u, v) in raw.edges if v == s]
            raw.edges.difference_update(into_s)
            raw.edges.update((u, w) for u, _ in into_s)
            raw.edges.add((w, s))
        raw.edges.discard((w, w))


def _topological_order(raw: RawGraph) -> list[int]:
    """Append the input node, then Kahn's algorithm by generations (networkx's order)."""
    n = len(raw.labels)
    has_pred = {v for _, v in raw.edges}
    sources = [v for v in range(n) if v not in has_pred]
    if not sources:
        raise ValueError("the traced graph has no source node")
    inp = raw.add_node("input")
    raw.edges.update((inp, s) for s in sources)  # ppuda allows exactly one source
    raw.edges = {(u, v) for u, v in raw.edges if u != v}
    succ: list[list[int]] = [[] for _ in range(n + 1)]
    indeg = [0] * (n + 1)
    for u, v in raw.edges:
        succ[u].append(v)
        indeg[v] += 1
    generation, order = [inp], []
    while generation:
        order += generation
        nxt = []
        for u in generation:
            for v in sorted(succ[u]):
                indeg[v] -= 1
                if indeg[v] == 0:
                    nxt.append(v)
        generation = nxt
    if len(order) != n + 1:
        raise ValueError("the traced graph has a cycle")
    return order


def _adjacency(raw: RawGraph, order: list[int]):
    """Successor and predecessor sets, with nodes renumbered by their position in `order`."""
    pos = {node: i for i, node in enumerate(order)}
    succ: list[set[int]] = [set() for _ in order]
    pred: list[set[int]] = [set() for _ in order]
    for u, v in raw.edges:
        succ[pos[u]].add(pos[v])
        pred[pos[v]].add(pos[u])
    return succ, pred


def _kind(label: str) -> str:
    return label.split("Backward", 1)[0]


def _keep(i: int, order: list[int], labels, params, saved, pred) -> bool:
    """ppuda's rule for whether node `order[i]` survives the pass that matched it."""
    n = order[i]
    if params[n] is not None:
        return True
    kind = _kind(labels[n])
    if kind in ("AdaptiveAvgPool2D", "MaxPool2DWithIndices", "AvgPool2D", "input"):
        return True
    if kind in ("Add", "Cat"):
        return len(pred[n]) >= 2
    if kind == "Mean":
        keepdim = saved[n].get("keepdim")
        if keepdim is not None:
            return bool(keepdim)
        return i != len(order) - 1 and not labels[order[i + 1]].startswith("cells.")
    if kind == "Mul":
        return labels[order[i - 2]].startswith("Hard")
    if kind == "Clone":
        return labels[order[i - 11]].startswith("Softmax")
    return False


def _prune(labels, params, saved, succ, pred) -> list[int]:
    """Remove unsupported ops pass by pass, bridging their edges; returns the kept nodes."""
    unsupported = {lab for lab, p in zip(labels, params)
                   if p is None and _kind(lab) not in SUPPORTED}
    order = list(range(len(labels)))
    for pattern in ["Mul", "Clone", *sorted(unsupported), "Mean", "Add", "Cat"]:
        dropped = []
        for i, n in enumerate(order):
            if pattern not in labels[n] or _keep(i, order, labels, params, saved, pred):
                continue
            for p in pred[n]:
                for s in succ[n]:
                    if p != s:
                        succ[p].add(s)
                        pred[s].add(p)
            dropped.append(n)
        for n in dropped:
            for p in pred[n]:
                succ[p].discard(n)
            for s in succ[n]:
                pred[s].discard(n)
            succ[n], pred[n] = set(), set()
        gone = set(dropped)
        order = [n for n in order if n not in gone]
    return order


def _primitive(raw: RawGraph, n: int) -> int:
    module = raw.modules[n]
    if module is None:
        return SUPPORTED[_kind(raw.labels[n])]
    if isinstance(module, NORMS):
        return P["bn"] if type(module) is nn.BatchNorm2d else P["ln"]
    if "bias" in raw.labels[n]:
        return P["bias"]
    if type(module) is nn.Conv2d and module.groups > 1:
        return P["dil_conv"] if min(module.dilation) > 1 else P["sep_conv"]
    return P["conv"]


def _shape(raw: RawGraph, n: int) -> tuple[int, ...] | None:
    module, name = raw.modules[n], raw.params[n]
    if module is not None:
        return tuple(getattr(module, name.rsplit(".", 1)[1]).shape)
    if _kind(raw.labels[n]) in ("MaxPool2DWithIndices", "AvgPool2D"):
        k = raw.saved[n].get("kernel_size") or (3, 3)
        k = tuple(k) * 2 if len(k) == 1 else tuple(k)
        return (1, 1, int(k[0]), int(k[1]))
    return None


def _distances(n: int, edges: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
    """All (u, v, hops) with a shortest path of 1..MAX_DIST hops, and longest-path levels."""
    succ: list[list[int]] = [[] for _ in range(n)]
    for u, v in edges:
        succ[u].append(v)
    far = np.iinfo(np.int32).max // 2
    dist = np.full((n, n), far, dtype=np.int32)
    for u in range(n - 1, -1, -1):  # topological order: successors have larger numbers
        if succ[u]:
            dist[u] = dist[succ[u]].min(axis=0) + 1
            dist[u, succ[u]] = 1
    if (dist[0, 1:] >= far).any() or (dist[:-1, n - 1] >= far).any():
        raise ValueError("the graph is not connected from its input to its output")
    u, v = np.nonzero(dist <= MAX_DIST)
    hops = dist[u, v]
    level = np.zeros(n, dtype=np.int64)
    level_rev = np.zeros(n, dtype=np.int64)
    for a in range(n):
        for b in succ[a]:
            level[b] = max(level[b], level[a] + 1)
    for a in range(n - 1, -1, -1):
        for b in succ[a]:
            level_rev[a] = max(level_rev[a], level_rev[b] + 1)
    return {"edges": torch.from_numpy(np.stack([u, v, hops], 1).astype(np.int64)),
            "levels": torch.from_numpy(level), "levels_rev": torch.from_numpy(level_rev)}
