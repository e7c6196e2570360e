"""GHN-3's graph of a model: tracing, filtering, edge fixes, ordering, distances.

GHN-3 builds its graph differently from GHN-2 (every parameter becomes a node first, two
filtering calls, fixes for Linear weights, softmax and Swin's patch merging, several sources
allowed); docs/ghn3.md lists the rules and where we deliberately differ. As for GHN-2, the
model is traced on an empty batch: autograd records the same graph without computing anything,
and neither the RNG nor BatchNorm statistics are touched.

Distances are a dense (N, N) tensor computed by breadth-first search with boolean matrix
products (50 steps at most), not per-pair Python loops.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import unittest.mock
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ghn._graph import P
from ghn._trace import RawGraph, _TraceMode, default_input_size, walk

log = logging.getLogger(__name__)
MAX_DIST = 50

_SUPPORTED_MODULES = (nn.Conv2d, nn.Linear, nn.MultiheadAttention, nn.BatchNorm2d, nn.LayerNorm,
                      torchvision.models.convnext.LayerNorm2d, nn.Embedding,
                      torchvision.models.vision_transformer.Encoder)
_OP_PRIMITIVE = {"Mean": P["glob_avg"], "AdaptiveAvgPool2D": P["glob_avg"],
                 "MaxPool2DWithIndices": P["max_pool"], "AvgPool2D": P["avg_pool"],
                 "Softmax": P["msa"], "Mul": P["cse"], "Add": P["sum"], "Cat": P["concat"],
                 "input": P["input"]}
_LINEAR_LIKE = (nn.Conv2d, nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear,
                nn.MultiheadAttention)


@dataclass(frozen=True)
class Graph3:
    """A model's GHN-3 graph. `dist[u, v]` is the shortest directed hop count (1..50), else 0."""

    names: list[str]
    params: list[str | None]  # parameter name (as named in the model) of parameter nodes
    ops: list[int]  # index into PRIMITIVES
    shapes: list[tuple[int, ...] | None]  # node shape as GHN-3 reports it
    param_shapes: list[tuple[int, ...] | None]  # the parameter's real shape (shape encoder)
    dist: torch.Tensor  # (N, N) int64
    classifier: tuple[int | None, int | None]  # nodes decoded as classifier weight / bias
    is_sorted: bool  # False when the graph had a cycle and kept its creation order

    @property
    def n_nodes(self) -> int:
        return len(self.names)

    def edges_1hop(self) -> list[tuple[int, int]]:
        return [tuple(e) for e in (self.dist == 1).nonzero().tolist()]


# ---- tracing -------------------------------------------------------------------------------

class ScaledDotProductFlashAttentionForCpu(torch.autograd.Function):
    """One autograd node fed by (q, k, v), as CPU attention on a real batch records; on an
    empty batch PyTorch falls back to the unfused math path, whose extra nodes GHN-3 keeps."""

    @staticmethod
    def forward(ctx, q, k, v):
        return q.new_empty(*q.shape[:-1], v.shape[-1])

    @staticmethod
    def backward(ctx, grad):  # never called: the trace does not run backward
        raise NotImplementedError


def _attention(query, key, value, *args, **kwargs):
    return ScaledDotProductFlashAttentionForCpu.apply(query, key, value)


class _Trace3Mode(_TraceMode):
    """Also records dropout as the multiplication a real CPU batch would record (ATen skips
    dropout on an empty tensor, which would drop the node GHN-3 sees), and fused attention
    as one node."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            q, k, v = (list(args) + [(kwargs or {}).get(n) for n in ("query", "key", "value")])[:3]
            return ScaledDotProductFlashAttentionForCpu.apply(q, k, v)
        if func is F.dropout:
            kwargs = kwargs or {}
            names = ("input", "p", "training", "inplace")
            bound = dict(zip(names, args)) | kwargs
            p, training = bound.get("p", 0.5), bound.get("training", True)
            x = bound["input"]
            if training and p > 0:
                return x * torch.empty_like(x, requires_grad=False)
            return x
        return super().__torch_function__(func, types, args, kwargs)


def _patched_attention(model: nn.Module):
    """nn.MultiheadAttention calls attention from inside its own functional, where the mode
    does not reach; the module global is what that call looks up. Patched only while tracing
    a model that has such a module (the patch is process-wide)."""
    if not any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        return contextlib.nullcontext()
    return unittest.mock.patch.object(F, "scaled_dot_product_attention", _attention)


def _registry(model: nn.Module) -> dict[int, tuple[str, nn.Module]]:
    """id(parameter) -> (name, module); for a tensor under several names the last one wins."""
    reg: dict[int, tuple[str, nn.Module]] = {}
    seen: set[str] = set()
    for path, module in model.named_modules():
        for attr, p in module.named_parameters(recurse=False):
            key = f"{path}.{attr}" if path else attr
            if key not in seen:
                seen.add(key)
                reg[id(p)] = (key, module)
    return reg


def _forward_roots(model: nn.Module, input_size: tuple[int, int, int]) -> list:
    """grad_fn of every output tensor of a forward pass on an empty batch."""
    params = [p for p in model.parameters() if not p.requires_grad]
    buffers = {n: b.clone() for n, b in model.named_buffers(remove_duplicate=False)}
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    x = torch.empty(0, *input_size, device=device)
    try:
        for p in params:
            p.requires_grad_(True)
        with (torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
              torch.enable_grad(), _Trace3Mode(),
              _patched_attention(model)):
            out = torch.func.functional_call(model, buffers, (x,), strict=False)
    finally:
        for p in params:
            p.requires_grad_(False)
    outs = list(out.values()) if isinstance(out, dict) else (
        list(out) if isinstance(out, (tuple, list)) else [out])
    roots = [o.grad_fn for o in outs if isinstance(o, torch.Tensor) and o.grad_fn is not None]
    if not roots:
        raise ValueError(f"{type(model).__name__}'s output does not depend on its parameters")
    return roots


def _open(fn, graph: RawGraph, record: dict, registry) -> int:
    """Create the node(s) of autograd function `fn`: one per parameter leaf, else one op node."""
    leaves = []
    for child, _ in fn.next_functions:
        if child is not None and type(child).__name__ == "AccumulateGrad":
            entry = registry.get(id(child.variable))
            if entry is None:
                raise ValueError("a leaf tensor that requires grad is not a model parameter")
            leaves.append((child, *entry))
    label = type(fn).__name__
    if not leaves:
        saved = {"kernel_size": getattr(fn, "_saved_kernel_size", None)}
        first = last = graph.add_node(label, saved=saved)
    else:
        nodes = []
        for leaf, name, module in leaves:
            nodes.append(graph.add_node(name, param=name, module=module))
            record[leaf] = (nodes[-1], name)
        first, last = nodes[0], nodes[-1]
    record[fn] = (last, label)
    return first


def trace3(model: nn.Module, input_size: tuple[int, int, int]) -> RawGraph:
    """The depth-first walk of every output's autograd graph, sharing one record table."""
    try:
        roots = _forward_roots(model, input_size)
    except (RuntimeError, ValueError, NotImplementedError, TypeError, IndexError) as e:
        raise ValueError(
            f"cannot trace {type(model).__name__} at input size {input_size}: {e}. If the model "
            "needs another input size, set model.expected_input_sz (an int or (C, H, W))."
        ) from e
    return walk(roots, _registry(model), _open)


# ---- filtering and fixes --------------------------------------------------------------------

class _Nodes:
    """Mutable node records plus successor/predecessor sets, indexed by position."""

    def __init__(self, raw: RawGraph) -> None:
        self.labels = list(raw.labels)
        self.params = list(raw.params)
        self.modules = list(raw.modules)
        self.saved = list(raw.saved)
        n = len(self.labels)
        self.succ: list[set[int]] = [set() for _ in range(n)]
        self.pred: list[set[int]] = [set() for _ in range(n)]
        for u, v in raw.edges:
            self.add(u, v)

    def add(self, u: int, v: int) -> None:
        self.succ[u].add(v)
        self.pred[v].add(u)

    def remove(self, u: int, v: int) -> None:
        self.succ[u].discard(v)
        self.pred[v].discard(u)

    def swap(self, i: int, j: int) -> None:
        for rec in (self.labels, self.params, self.modules, self.saved):
            rec[i], rec[j] = rec[j], rec[i]

    def keep_only(self, keep: list[int]) -> None:
        new = {old: k for k, old in enumerate(keep)}
        self.labels = [self.labels[i] for i in keep]
        self.params = [self.params[i] for i in keep]
        self.modules = [self.modules[i] for i in keep]
        self.saved = [self.saved[i] for i in keep]
        self.succ = [{new[v] for v in self.succ[i] if v in new} for i in keep]
        self.pred = [{new[u] for u in self.pred[i] if u in new} for i in keep]


def _kind(label: str) -> str:
    return label.split("Backward", 1)[0]


def _supported(g: _Nodes, i: int) -> bool:
    module = g.modules[i]
    if module is None:
        return _kind(g.labels[i]) in _OP_PRIMITIVE
    if "norm" in type(module).__name__.lower() and g.labels[i].endswith(".bias"):
        return False
    return isinstance(module, _SUPPORTED_MODULES)


def _filter(g: _Nodes, patterns: list[str]) -> None:
    """Drop matching nodes pass by pass, linking each dropped node's predecessors to its
    successors; the keep rules depend on the node's neighbours in the current order."""
    has_sigmoid = any("sigmoid" in s.lower() or "swish" in s.lower() for s in g.labels)
    indeg = [len(p) for p in g.pred]  # as at the start of the call, never refreshed
    order = list(range(len(g.labels)))
    for pattern in patterns:
        labels = [g.labels[n] for n in order]
        dropped = []
        for i, n in enumerate(order):
            if pattern not in labels[i] or _keep(i, labels, has_sigmoid, indeg[n]):
                continue
            for p in g.pred[n]:
                for s in g.succ[n]:
                    if p != s:
                        g.add(p, s)
            dropped.append(n)
        for n in dropped:
            for p in list(g.pred[n]):
                g.remove(p, n)
            for s in list(g.succ[n]):
                g.remove(n, s)
        gone = set(dropped)
        order = [n for n in order if n not in gone]
    g.keep_only(order)


def _in_head(i: int, labels: list[str]) -> bool:
    if i + 1 >= len(labels):
        return True
    return any(labels[i - k].lower().startswith(("classifier", "fc", "head")) for k in (1, 2))


def _keep(i: int, labels: list[str], has_sigmoid: bool, indeg: int) -> bool:
    label = labels[i]
    if label.startswith("Mean"):
        return not has_sigmoid or _in_head(i, labels)
    if label.startswith("Mul"):
        if not has_sigmoid or _in_head(i, labels):
            return False
        return (labels[i - 2].lower().startswith(("hard", "sigmoid"))
                or labels[i - 3].lower().startswith(("relu", "mean"))
                or labels[i + 1].lower().startswith(("hard", "sigmoid", "relu")))
    if label.startswith(("Add", "Cat")):
        return indeg > 1
    return False


def _fix_weight_edges(g: _Nodes) -> None:
    """Put each Linear weight in front of its bias (prev -> W -> b -> consumers)."""
    for i in range(len(g.labels)):
        if g.pred[i] or "weight" not in g.labels[i]:
            continue
        successors = sorted(g.succ[i])
        for j in successors:
            same = g.modules[j] is not None and g.modules[j] is g.modules[i]
            if not (same or (not g.pred[i] and "softmax" in g.labels[j].lower())):
                continue
            if not (g.pred[j] - {i}):
                continue
            n_succ = len(g.succ[i])
            g.swap(i, j)
            g.remove(i, j)
            g.add(j, i)
            if n_succ == 1:
                for s in sorted(g.succ[j] - {i}):
                    g.remove(j, s)
                    g.add(i, s)


def _count_paths(succ: list[set[int]], src: int, dst: int, cap: int = 2) -> int:
    """Number of directed paths src -> dst, counted up to `cap` (the graph is a DAG here)."""
    memo: dict[int, int] = {dst: 1}
    on_stack: set[int] = set()

    def count(u: int) -> int:
        if u in memo:
            return memo[u]
        if u in on_stack:
            return 0
        on_stack.add(u)
        total = 0
        for v in succ[u]:
            total += count(v)
            if total >= cap:
                break
        on_stack.discard(u)
        memo[u] = min(total, cap)
        return memo[u]

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(succ) + 100))
    try:
        return count(src)
    finally:
        sys.setrecursionlimit(limit)


def _fix_softmax(g: _Nodes) -> None:
    snapshot = [set(s) for s in g.succ]
    for s in range(len(g.labels)):
        if "softmax" not in g.labels[s].lower():
            continue
        for j in sorted(g.succ[s]):
            for p in sorted(g.pred[j] - {s}):
                paths = _count_paths(snapshot, p, j)
                linked = p in g.succ[s]
                if paths >= 2 or not linked:
                    g.remove(p, j)
                if paths == 1 and not linked:
                    g.add(p, s)


def _fix_swin(g: _Nodes) -> None:
    """Route the patch-merging norm into its reduction, and attention output around it.

    Where the norm follows the reduction (Swin-V2's PatchMergingV2) the redirect would make a
    2-cycle; it is skipped there (a deliberate difference, docs/ghn3.md)."""
    for u in range(len(g.labels)):
        for v in sorted(g.succ[u]):
            lu, lv = g.labels[u], g.labels[v]
            if lu.endswith("norm.weight") and (lv.endswith("norm1.weight") or "Add" in lv):
                target = lu.replace("norm", "reduction")
                r = next((k for k, lab in enumerate(g.labels) if target in lab), None)
                if r is None or u in g.succ[r]:
                    continue
                g.remove(u, v)
                g.add(u, r)
            elif lu.endswith("attn.proj.bias") and lv.endswith("reduction.weight"):
                g.remove(u, v)
                for s in sorted(g.succ[v]):
                    if g.labels[s].startswith("AddBackward"):
                        g.add(u, s)


def _connect_bias_free_classifier(g: _Nodes) -> None:
    """A bias-free last Linear (MaxViT) hangs beside its matmul, which filtering removes as
    the output, leaving the weight disconnected; feed it the matmul's other inputs instead."""
    for w in range(len(g.labels)):
        module = g.modules[w]
        if (type(module) is not nn.Linear or module.bias is not None or g.pred[w]
                or not g.labels[w].endswith(".weight")):
            continue
        for s in sorted(g.succ[w]):
            if g.modules[s] is None and not g.succ[s]:  # the matmul producing the output
                for p in sorted(g.pred[s] - {w}):
                    g.remove(p, s)
                    g.add(p, w)


def _topological(g: _Nodes) -> list[int] | None:
    """Kahn's algorithm by generations (networkx's order); None if there is a cycle."""
    n = len(g.labels)
    indeg = [len(p) for p in g.pred]
    generation = [v for v in range(n) if indeg[v] == 0]
    order = []
    while generation:
        order += generation
        nxt = []
        for u in generation:
            for v in sorted(g.succ[u]):
                indeg[v] -= 1
                if indeg[v] == 0:
                    nxt.append(v)
        generation = nxt
    return order if len(order) == n else None


def build_graph3(model: nn.Module, input_size: tuple[int, int, int] | None = None) -> Graph3:
    """Trace `model` and build GHN-3's graph of it."""
    input_size = input_size or default_input_size(model)
    g = _Nodes(trace3(model, input_size))
    if isinstance(model, torchvision.models.MaxVit):
        _connect_bias_free_classifier(g)
    unsupported = sorted({g.labels[i] for i in range(len(g.labels)) if not _supported(g, i)})
    _filter(g, ["Mul", *unsupported, "Mean", "Add", "Cat"])
    _fix_weight_edges(g)
    _fix_softmax(g)
    if isinstance(model, torchvision.models.SwinTransformer):
        _fix_swin(g)
    _filter(g, ["Add", "Cat"])
    n = len(g.labels)
    sources = [i for i in range(n) if not g.pred[i] and "weight" in g.labels[i]]
    g.labels.append("input")
    g.params.append(None)
    g.modules.append(None)
    g.saved.append({})
    g.succ.append(set())
    g.pred.append(set())
    for s in sources:
        g.add(n, s)
    for i in range(n + 1):
        g.remove(i, i)
    order = _topological(g)
    is_sorted = order is not None
    if order is None:
        log.warning("the graph of %s has a cycle; nodes keep their creation order",
                    type(model).__name__)
        order = list(range(n + 1))
    g.keep_only(order)
    if isinstance(model, torchvision.models.VisionTransformer):
        _insert_pos_add(g)
    if isinstance(model, torchvision.models.SqueezeNet):
        _move_squeezenet_pool(g)
    return _finish(g, model, is_sorted)


def _insert_pos_add(g: _Nodes) -> None:
    """After ViT's positional embedding, an explicit `AddBackward0` node takes over its edges."""
    enc = torchvision.models.vision_transformer.Encoder
    i = next((k for k, m in enumerate(g.modules) if isinstance(m, enc)), None)
    if i is None:
        return
    order = list(range(len(g.labels)))
    g.labels.insert(i + 1, "AddBackward0")
    g.params.insert(i + 1, None)
    g.modules.insert(i + 1, None)
    g.saved.insert(i + 1, {})
    shift = [k if k < i else k + 1 for k in order]  # old index -> new index of its edges
    succ = [set() for _ in range(len(g.labels))]
    pred = [set() for _ in range(len(g.labels))]
    for u in order:
        for v in g.succ[u]:
            succ[shift[u]].add(shift[v])
            pred[shift[v]].add(shift[u])
    g.succ, g.pred = succ, pred
    g.add(i, i + 1)


def _move_squeezenet_pool(g: _Nodes) -> None:
    """Put SqueezeNet's final pooling before its classifier conv, moving the node together
    with its edges (GHN-3 moves only the label; docs/ghn3.md)."""
    n = len(g.labels)
    if not (g.labels[-1].startswith("Mean") and g.labels[-3].startswith("classifier")):
        return
    order = list(range(n - 3)) + [n - 1, n - 3, n - 2]
    g.keep_only(order)


def _finish(g: _Nodes, model: nn.Module, is_sorted: bool) -> Graph3:
    n = len(g.labels)
    named = dict(model.named_parameters(remove_duplicate=False))
    shapes, param_shapes, ops = [], [], []
    for i in range(n):
        name, module = g.params[i], g.modules[i]
        if name is not None:
            shape = tuple(named[name].shape)
            param_shapes.append(shape)
            if len(shape) == 3 and shape[0] == 1 and min(shape[1:]) > 1:
                side = int(shape[1] ** 0.5)
                shape = (1, shape[2], side, side)
            elif i == n - 2 and len(shape) == 4 and shape[2:] == (1, 1):
                shape = shape[:2]
            shapes.append(shape)
            ops.append(_param_primitive(module, g.labels[i]))
        else:
            param_shapes.append(None)
            kind = _kind(g.labels[i])
            if kind in ("MaxPool2DWithIndices", "AvgPool2D"):
                k = g.saved[i].get("kernel_size") or (3, 3)
                k = tuple(k) * 2 if len(k) == 1 else tuple(k)
                shapes.append((1, 1, int(k[0]), int(k[1])))
            else:
                shapes.append(None)
            ops.append(_OP_PRIMITIVE.get(kind, P["sum"]))
    cls_w = n - 2 if n >= 2 and ".weight" in g.labels[n - 2] else None
    cls_b = n - 1 if ".bias" in g.labels[n - 1] else None
    if cls_w is None and cls_b is None and g.params[n - 1] is not None and \
            g.labels[n - 1].endswith(".weight") and len(param_shapes[n - 1]) == 2:
        cls_w = n - 1  # a bias-free classifier ends the graph (deliberate, docs/ghn3.md)
    dist = distances(n, [(u, v) for u in range(n) for v in g.succ[u]])
    return Graph3(names=g.labels, params=g.params, ops=ops, shapes=shapes,
                  param_shapes=param_shapes, dist=dist, classifier=(cls_w, cls_b),
                  is_sorted=is_sorted)


def _param_primitive(module: nn.Module, label: str) -> int:
    t = type(module)
    if t in (nn.Conv2d, nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear,
             nn.MultiheadAttention):
        if "bias" in label:
            return P["bias"]
        if t is nn.Conv2d and module.groups > 1:
            return P["dil_conv"] if min(module.dilation) > 1 else P["sep_conv"]
        return P["conv"]
    if t is nn.BatchNorm2d:
        return P["bn"]
    if t in (nn.LayerNorm, torchvision.models.convnext.LayerNorm2d):
        return P["ln"]
    if t in (nn.Embedding, torchvision.models.vision_transformer.Encoder):
        return P["pos_enc"]
    raise ValueError(f"GHN-3 has no primitive for a parameter of {t.__name__} ({label})")


def distances(n: int, edges: list[tuple[int, int]], max_dist: int = MAX_DIST) -> torch.Tensor:
    """Dense shortest directed hop counts, 1..max_dist, else 0 (diagonal included).

    Breadth-first from every node at once: column u of `frontier` marks the nodes first
    reached from u at the current depth; one step ORs, for every node, the frontier rows of its
    predecessors (a grouped reduction over the edge list, O(N * E) per hop; the graphs have
    about N edges). numpy runs it on one thread: these arrays are small, and a multi-threaded
    kernel spends more time waking threads than working on a busy machine.
    """
    if not edges or n == 0:
        return torch.zeros(n, n, dtype=torch.int64)
    e = np.asarray(edges, dtype=np.int64)
    order = np.argsort(e[:, 1], kind="stable")
    src, dst = e[order, 0], e[order, 1]
    targets, starts = np.unique(dst, return_index=True)
    dist_t = np.zeros((n, n), dtype=np.int64)  # dist_t[v, u] = hops from u to v
    reached = np.eye(n, dtype=bool)
    frontier = np.eye(n, dtype=bool)
    for d in range(1, max_dist + 1):
        nxt = np.zeros((n, n), dtype=bool)
        nxt[targets] = np.logical_or.reduceat(frontier[src], starts, axis=0)
        nxt &= ~reached
        if not nxt.any():
            break
        dist_t[nxt] = d
        reached |= nxt
        frontier = nxt
    return torch.from_numpy(np.ascontiguousarray(dist_t.T))
