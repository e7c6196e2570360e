"""Trace a model into GHN-2's raw computation graph without computing anything (SPEC §2.1).

ppuda runs a real forward pass on a random image, which costs time, consumes the global RNG and,
in train mode, rewrites every BatchNorm's running statistics. We run the same forward on *meta*
tensors through `torch.func.functional_call`: autograd records the same graph, no arithmetic is
done, and the model's own parameters, buffers and the RNG are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
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


def _meta_forward(model: nn.Module, input_size: tuple[int, int, int]):
    """Run the model on meta tensors; returns (output grad_fn, meta tensor id -> registry entry)."""
    registry = parameter_registry(model)
    meta_of: dict[int, torch.Tensor] = {}
    state: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) not in meta_of:
            meta_of[id(p)] = torch.empty_like(p, device="meta").requires_grad_(True)
        state[name] = meta_of[id(p)]
    for name, b in model.named_buffers(remove_duplicate=False):
        state[name] = torch.empty_like(b, device="meta") if b is not None else b
    # Batch of 2, not 1: a train-mode BatchNorm on a 1x1 map refuses a batch of one.
    x = torch.empty(2, *input_size, device="meta")
    with torch.enable_grad():
        out = torch.func.functional_call(model, state, (x,), tie_weights=True, strict=False)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.grad_fn is None:
        raise ValueError(f"{type(model).__name__}'s output does not depend on its parameters")
    by_meta = {id(meta_of[pid]): entry for pid, entry in registry.items() if pid in meta_of}
    return out.grad_fn, by_meta


def trace(model: nn.Module, input_size: tuple[int, int, int]) -> RawGraph:
    """The autograd graph of `model` as GHN-2 nodes and edges, in ppuda's creation order."""
    try:
        root, by_meta = _meta_forward(model, input_size)
    except (RuntimeError, ValueError, NotImplementedError, TypeError, IndexError) as e:
        raise ValueError(
            f"cannot trace {type(model).__name__} at input size {input_size}: {e}. If the model "
            "needs another input size, set model.expected_input_sz (an int or (C, H, W))."
        ) from e
    return _walk(root, by_meta)


def _leaves(fn, by_meta) -> list[tuple[object, str, nn.Module]]:
    """The (AccumulateGrad, name) children of `fn` that are parameters of recognised modules."""
    leaves = []
    for child, _ in fn.next_functions:
        if child is None or type(child).__name__ != "AccumulateGrad":
            continue
        entry = by_meta.get(id(child.variable))
        if entry is None:
            raise ValueError("a leaf tensor that requires grad is not a parameter of the model")
        name, module = entry
        if type(module) not in RECOGNISED or (type(module) in NORMS and ".bias" in name):
            continue
        leaves.append((child, name, module))
    return leaves


def _open(fn, graph: RawGraph, record: dict, by_meta) -> int:
    """Create the node(s) of autograd function `fn`; returns its *first* node."""
    label = type(fn).__name__
    leaves = _leaves(fn, by_meta)
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


def _walk(root, by_meta) -> RawGraph:
    """ppuda's recursive depth-first walk, run with an explicit stack (no recursion limit)."""
    graph = RawGraph()
    record: dict = {}
    stack = [(root, _open(root, graph, record, by_meta), iter(root.next_functions))]
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
            stack.append((child, _open(child, graph, record, by_meta),
                          iter(child.next_functions)))
            break
        else:
            stack.pop()
            if stack:
                _link(graph, stack[-1][1], record[fn])
    return graph
