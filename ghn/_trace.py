"""Trace a model into GHN-2's raw computation graph without computing anything.

ppuda runs a real forward pass on a random image, which costs time, consumes the global RNG and,
in train mode, rewrites every BatchNorm's running statistics. We run the same forward on a batch
of *zero* images: autograd records the same graph, no arithmetic is done (meta tensors would do
too, but their Python decompositions are 30x slower), and neither the model's parameters and
buffers nor the RNG are touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

# Exact types whose parameters become graph nodes (ppuda matches `type(m) is T`, not isinstance).
RECOGNISED = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.LayerNorm,
              torchvision.models.convnext.LayerNorm2d)
NORMS = (nn.BatchNorm2d, nn.LayerNorm, torchvision.models.convnext.LayerNorm2d)


@dataclass
class RawGraph:
    """Nodes in creation order with their edges, before ordering and filtering."""

    labels: list[str] = field(default_factory=list)
    params: list[str | None] = field(default_factory=list)  # parameter name of parameter nodes
    modules: list[nn.Module | None] = field(default_factory=list)  # owner of parameter nodes
    saved: list[dict] = field(default_factory=list)  # keepdim / kernel_size of op nodes
    edges: set[tuple[int, int]] = field(default_factory=set)

    def add_node(self, label: str, param: str | None = None, module: nn.Module | None = None,
                 saved: dict | None = None) -> int:
        self.labels.append(label)
        self.params.append(param)
        self.modules.append(module)
        self.saved.append(saved or {})
        return len(self.labels) - 1


def parameter_registry(model: nn.Module) -> dict[int, tuple[str, nn.Module]]:
    """id(parameter) -> (first full name seen, owning module), in named_modules() order."""
    registry: dict[int, tuple[str, nn.Module]] = {}
    for path, module in model.named_modules():
        for attr, p in module.named_parameters(recurse=False):
            registry.setdefault(id(p), (f"{path}.{attr}" if path else attr, module))
    return registry


def default_input_size(model: nn.Module) -> tuple[int, int, int]:
    """(C, H, W) to trace at: `model.expected_input_sz` as ppuda reads it, else 224.

    Inception-v3 is the exception: at 224 its auxiliary head in train mode cannot run (a 5x5
    conv on a 3x3 map), so it is traced at its native 299.
    """
    size = getattr(model, "expected_input_sz", None)
    if size is None:
        size = 299 if isinstance(model, torchvision.models.Inception3) else 224
    if isinstance(size, (tuple, list)):
        return tuple(int(s) for s in size)  # type: ignore[return-value]
    return (3, int(size), int(size))


class _BatchNormStandIn(torch.autograd.Function):
    """One autograd node fed by (input, weight, bias), as a real BatchNorm records.

    On an empty batch ATen's batch_norm takes a shortcut made of clone, select, mul and add
    nodes, which would change the graph; this stand-in records what a real batch would.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        return torch.empty_like(x)

    @staticmethod
    def backward(ctx, grad):  # never called: the trace does not run backward
        raise NotImplementedError


class _TraceMode(torch.overrides.TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.batch_norm:
            x, weight, bias = args[0], kwargs.get("weight"), kwargs.get("bias")
            if len(args) > 3:
                weight = args[3]
            if len(args) > 4:
                bias = args[4]
            return _BatchNormStandIn.apply(x, weight, bias)
        return func(*args, **kwargs)


def _empty_forward(model: nn.Module, input_size: tuple[int, int, int]):
    """Run the model on a batch of zero images; returns (output grad_fn, registry).

    Every op still runs, so autograd records the whole graph, but there is nothing to compute.
    Buffers are swapped for copies (a train-mode BatchNorm would update them), parameters are
    made to require grad for the trace only, and the RNG state is restored afterwards.
    """
    registry = parameter_registry(model)
    params = [p for p in model.parameters() if not p.requires_grad]
    buffers = {n: b.clone() for n, b in model.named_buffers(remove_duplicate=False)}
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    x = torch.empty(0, *input_size, device=device)
    try:
        for p in params:
            p.requires_grad_(True)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            with torch.enable_grad(), _TraceMode():
                out = torch.func.functional_call(model, buffers, (x,), strict=False)
    finally:
        for p in params:
            p.requires_grad_(False)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.grad_fn is None:
        raise ValueError(f"{type(model).__name__}'s output does not depend on its parameters")
    return out.grad_fn, registry


def trace(model: nn.Module, input_size: tuple[int, int, int]) -> RawGraph:
    """The autograd graph of `model` as GHN-2 nodes and edges, in ppuda's creation order."""
    try:
        root, registry = _empty_forward(model, input_size)
    except (RuntimeError, ValueError, NotImplementedError, TypeError, IndexError) as e:
        raise ValueError(
            f"cannot trace {type(model).__name__} at input size {input_size}: {e}. If the model "
            "needs another input size, set model.expected_input_sz (an int or (C, H, W))."
        ) from e
    return walk([root], registry)


def _leaves(fn, registry) -> list[tuple[object, str, nn.Module]]:
    """The (AccumulateGrad, name) children of `fn` that are parameters of recognised modules."""
    leaves = []
    for child, _ in fn.next_functions:
        if child is None or type(child).__name__ != "AccumulateGrad":
            continue
        entry = registry.get(id(child.variable))
        if entry is None:
            raise ValueError("a leaf tensor that requires grad is not a parameter of the model")
        name, module = entry
        if type(module) not in RECOGNISED or (type(module) in NORMS and ".bias" in name):
            continue
        leaves.append((child, name, module))
    return leaves


def _open(fn, graph: RawGraph, record: dict, registry) -> int:
    """Create the node(s) of autograd function `fn`; returns its *first* node."""
    label = type(fn).__name__
    leaves = _leaves(fn, registry)
    if not leaves:
        saved = {"keepdim": getattr(fn, "_saved_keepdim", None),
                 "kernel_size": getattr(fn, "_saved_kernel_size", None)}
        first = last = graph.add_node(label, saved=saved)
    else:
        nodes = []
        for leaf, name, module in leaves:
            nodes.append(graph.add_node(name, param=name, module=module))
            record[leaf] = (nodes[-1], name)
        first, last = nodes[0], nodes[-1]
    record[fn] = (last, label)
    return first


def _link(graph: RawGraph, first: int, child: tuple[int | None, str]) -> None:
    j, label = child
    if j is not None and j != first:
        graph.edges.add((first, j) if "bias" in label else (j, first))


def walk(roots, registry, open_node=None) -> RawGraph:
    """ppuda's recursive depth-first walk, run with an explicit stack (no recursion limit), from
    each root in turn with one record table. ``open_node`` adds a function's nodes to the graph
    (default: GHN-2's)."""
    open_node = open_node or _open
    graph = RawGraph()
    record: dict = {}
    for root in roots:
        if root in record:
            continue
        stack = [(root, open_node(root, graph, record, registry), iter(root.next_functions))]
        while stack:
            fn, first, children = stack[-1]
            for child, _ in children:
                if child is None:
                    continue
                if child in record:
                    _link(graph, first, record[child])
                    continue
                if type(child).__name__ == "AccumulateGrad":
                    record[child] = (None, "AccumulateGrad")
                    continue
                stack.append((child, open_node(child, graph, record, registry),
                              iter(child.next_functions)))
                break
            else:
                stack.pop()
                if stack:
                    _link(graph, stack[-1][1], record[fn])
    return graph
