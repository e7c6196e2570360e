"""Seeded samplers of small image classifiers for training a GHN (what it learns from).

Two kinds of family, selectable and mixable:
- ``darts``: DARTS-style cell networks as described for DeepNets-1M (Knyazev et al., 2021, §4):
  a conv stem, a stack of normal cells with reduction cells at 1/3 and 2/3 of the depth, each
  cell a small DAG whose nodes sum two ops of earlier nodes (separable, dilated, plain convs,
  max / avg pooling, identity), the cell output the concatenation of its nodes; depth, width,
  nodes per cell and normalisation (BatchNorm or none) vary.
- ``resnet``, ``mobilenet``, ``densenet``, ``convnext``: small variants of the torchvision
  families the sweeps fine-tune, built from torchvision's own blocks (BasicBlock,
  InvertedResidual, _DenseBlock, CNBlock) with random depth and width. GHN-2 does not predict
  ConvNeXt's ``layer_scale`` (torchvision starts it at 1e-6), so here it is a fixed
  buffer, drawn from {1e-6, 0.1}: at 1e-6 the GHN sees blocks as the sweeps start them; at 0.1
  their predicted weights reach the loss, so the GHN learns them.

An architecture is a hashable ``ArchSpec``; ``build`` turns it into a module. Sizes are bounded
so that one GHN step over a meta-batch of them stays around a second on a laptop CPU. BatchNorm
always uses batch statistics (no running buffers), as ppuda trains and evaluates GHN-2.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torchvision
from torch import nn
from torchvision.models.convnext import CNBlock, CNBlockConfig
from torchvision.models.densenet import _DenseBlock, _Transition
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.models.resnet import BasicBlock
from torchvision.ops.misc import Conv2dNormActivation

from ghn import adjust_for_small_images

FAMILIES = ("darts", "resnet", "mobilenet", "densenet", "convnext")
OPS = ("sep_conv_3x3", "dil_conv_3x3", "conv_3x3", "conv_1x1", "max_pool_3x3", "avg_pool_3x3",
       "skip_connect")


@dataclass(frozen=True)
class ArchSpec:
    """One architecture: its family and the sampled choices, as sorted (key, value) pairs."""

    family: str
    choices: tuple[tuple[str, object], ...]

    @property
    def name(self) -> str:
        return f"{self.family}:" + ",".join(f"{k}={_short(v)}" for k, v in self.choices)

    def get(self, key: str):
        return dict(self.choices)[key]


def _short(v: object) -> str:
    """Depths as 1-2-1; a cell's genotype as 8 hex digits of its hash (names stay readable)."""
    if isinstance(v, tuple) and v and isinstance(v[0], tuple):
        return hashlib.sha1(repr(v).encode()).hexdigest()[:8]
    if isinstance(v, tuple):
        return "-".join(_short(x) for x in v)
    return str(v)


def sample_spec(family: str, rng: random.Random) -> ArchSpec:
    """One architecture of ``family``, drawn with ``rng``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown architecture family {family!r}; known: {', '.join(FAMILIES)}")
    if family == "darts":
        n_nodes = rng.randint(2, 3)
        cells = tuple(_sample_cell(n_nodes, rng) for _ in range(2))  # (normal, reduction)
        c = {"C": rng.choice((8, 12, 16)), "layers": rng.randint(2, 4), "nodes": n_nodes,
             "norm": rng.choice(("bn", "bn", "none")), "normal": cells[0], "reduce": cells[1]}
    elif family == "resnet":
        stages = rng.randint(2, 3)
        c = {"width": rng.choice((8, 16, 24)), "depths": tuple(rng.randint(1, 2)
                                                                for _ in range(stages))}
    elif family == "mobilenet":
        stages = rng.randint(2, 3)
        # Expanded depthwise convs at full 32x32 resolution dominate a CPU step (a width-24,
        # x6 net costs 2-5 s forward + backward at batch 64 on 2 cores): kept narrower.
        c = {"width": rng.choice((8, 12, 16)), "expand": rng.choice((2, 4)),
             "depths": tuple(rng.randint(1, 2) for _ in range(stages))}
    elif family == "convnext":
        stages = rng.randint(2, 3)
        c = {"width": rng.choice((8, 16, 24)), "layer_scale": rng.choice((1e-6, 0.1)),
             "depths": tuple(rng.randint(1, 2) for _ in range(stages))}
    else:
        blocks = rng.randint(2, 3)
        c = {"growth": rng.choice((4, 8, 12)), "layers": tuple(rng.randint(1, 3)
                                                                for _ in range(blocks))}
    return ArchSpec(family, tuple(sorted(c.items())))


def _sample_cell(n_nodes: int, rng: random.Random) -> tuple[tuple[str, int], ...]:
    """Two (op, input) pairs per node; inputs 0, 1 are the cell inputs, 2.. earlier nodes.
    Redrawn until both cell inputs are read: an unread input's preprocessing would be a dead
    branch whose parameters the GHN never sees."""
    while True:
        cell = tuple((rng.choice(OPS), rng.randrange(i + 2)) for i in range(n_nodes)
                     for _ in (0, 1))
        if {0, 1} <= {i for _, i in cell}:
            return cell


class ArchSampler:
    """Draws architectures of the given families (uniformly among families), never one of the
    held-out set: ``held_out`` is fixed by ``held_out_seed`` alone, so evaluation sees the same
    architectures whatever the training seed."""

    def __init__(self, families: Sequence[str] = FAMILIES, *, held_out: int = 20,
                 held_out_seed: int = 12345) -> None:
        unknown = [f for f in families if f not in FAMILIES]
        if unknown or not families:
            raise ValueError(f"architecture families must be some of {', '.join(FAMILIES)}, "
                             f"got {list(families)}")
        self.families = tuple(families)
        hrng = random.Random(held_out_seed)
        specs: dict[ArchSpec, None] = {}
        for _ in range(100 * held_out):  # a small family may have fewer distinct members
            if len(specs) == held_out:
                break
            specs.setdefault(sample_spec(hrng.choice(self.families), hrng))
        self.held_out = list(specs)
        self._held = set(specs)

    def sample(self, rng: random.Random) -> ArchSpec:
        """A training architecture (redrawn while it is one of the held-out set)."""
        for _ in range(1000):
            spec = sample_spec(rng.choice(self.families), rng)
            if spec not in self._held:
                return spec
        raise ValueError(f"the families {self.families} have no architectures outside the "
                         f"{len(self._held)} held out; hold out fewer")


def build(spec: ArchSpec, num_classes: int) -> nn.Module:
    """The module of ``spec``, with BatchNorm in batch-statistics mode."""
    make = {"darts": _darts, "resnet": _resnet, "mobilenet": _mobilenet,
            "densenet": _densenet, "convnext": _convnext}[spec.family]
    model = make(spec, num_classes)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.track_running_stats = False
            m.running_mean = m.running_var = m.num_batches_tracked = None
    model.arch_name = spec.name
    return model


def _head(channels: int, num_classes: int) -> list[nn.Module]:
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]


# ---- torchvision families ---------------------------------------------------------------------

def _resnet(spec: ArchSpec, num_classes: int) -> nn.Module:
    w = spec.get("width")
    layers: list[nn.Module] = [nn.Conv2d(3, w, 3, padding=1, bias=False), nn.BatchNorm2d(w),
                               nn.ReLU(inplace=True)]
    c = w
    for s, depth in enumerate(spec.get("depths")):
        out = w * 2 ** s
        for d in range(depth):
            stride = 2 if s > 0 and d == 0 else 1
            down = None if stride == 1 and c == out else nn.Sequential(
                nn.Conv2d(c, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
            layers.append(BasicBlock(c, out, stride, down))
            c = out
    return nn.Sequential(*layers, *_head(c, num_classes))


def _mobilenet(spec: ArchSpec, num_classes: int) -> nn.Module:
    w = spec.get("width")
    layers: list[nn.Module] = [Conv2dNormActivation(3, w, stride=1,
                                                    activation_layer=nn.ReLU6)]
    c = w
    for s, depth in enumerate(spec.get("depths")):
        out = w * 2 ** s
        for d in range(depth):
            layers.append(InvertedResidual(c, out, 2 if s > 0 and d == 0 else 1,
                                           spec.get("expand")))
            c = out
    return nn.Sequential(*layers, *_head(c, num_classes))


def _densenet(spec: ArchSpec, num_classes: int) -> nn.Module:
    g = spec.get("growth")
    c = 2 * g
    layers: list[nn.Module] = [nn.Conv2d(3, c, 3, padding=1, bias=False)]
    blocks = spec.get("layers")
    for i, n in enumerate(blocks):
        layers.append(_DenseBlock(n, c, bn_size=2, growth_rate=g, drop_rate=0.0))
        c += n * g
        if i < len(blocks) - 1:
            layers.append(_Transition(c, c // 2))
            c //= 2
    layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, *_head(c, num_classes))


def _convnext(spec: ArchSpec, num_classes: int) -> nn.Module:
    w, depths = spec.get("width"), spec.get("depths")
    last = len(depths) - 1
    setting = [CNBlockConfig(w * 2 ** s, None if s == last else w * 2 ** (s + 1), d)
               for s, d in enumerate(depths)]
    model = torchvision.models.ConvNeXt(setting, layer_scale=spec.get("layer_scale"),
                                        num_classes=num_classes)
    model.features[0][0].stride = 1  # the sweeps' 32x32 stem (ghn.adjust_for_small_images)
    for block in model.modules():
        if isinstance(block, CNBlock):  # not predicted: a constant, not a parameter
            value = block.layer_scale.detach().clone()
            del block.layer_scale
            block.register_buffer("layer_scale", value)
    return model


# ---- DARTS-style cells ------------------------------------------------------------------------

def _op(name: str, c: int, stride: int, bn: bool) -> nn.Module:
    norm = [nn.BatchNorm2d(c)] if bn else []
    if name == "sep_conv_3x3":
        return nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False),
                             nn.Conv2d(c, c, 1, bias=not bn), *norm)
    if name == "dil_conv_3x3":
        return nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, stride, 2, dilation=2, groups=c,
                                                  bias=False), nn.Conv2d(c, c, 1, bias=not bn),
                             *norm)
    if name in ("conv_3x3", "conv_1x1"):
        k = 3 if name == "conv_3x3" else 1
        return nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, k, stride, k // 2, bias=not bn), *norm)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride, 1, count_include_pad=False)
    if stride == 1:
        return nn.Identity()
    # skip_connect in a reduction cell: a strided 1x1 conv, as DARTS' factorised reduce does
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 1, 2, bias=not bn), *norm)


def _preprocess(c_in: int, c: int, stride: int, bn: bool) -> nn.Module:
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c, 1, stride, bias=not bn),
                         *([nn.BatchNorm2d(c)] if bn else []))


class _Cell(nn.Module):
    def __init__(self, genotype, c_pp: int, c_p: int, c: int, reduction: bool,
                 reduction_prev: bool, bn: bool) -> None:
        super().__init__()
        self.pre0 = _preprocess(c_pp, c, 2 if reduction_prev else 1, bn)
        self.pre1 = _preprocess(c_p, c, 1, bn)
        self.inputs = [i for _, i in genotype]
        self.ops = nn.ModuleList(_op(name, c, 2 if reduction and i < 2 else 1, bn)
                                 for name, i in genotype)
        self.n_nodes = len(genotype) // 2

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for k in range(self.n_nodes):
            a, b = 2 * k, 2 * k + 1
            states.append(self.ops[a](states[self.inputs[a]])
                          + self.ops[b](states[self.inputs[b]]))
        return torch.cat(states[2:], 1)


class DartsNet(nn.Module):
    """A stem, ``layers`` cells (reduction at 1/3 and 2/3 of the depth), a linear classifier."""

    def __init__(self, spec: ArchSpec, num_classes: int) -> None:
        super().__init__()
        c, layers, bn = spec.get("C"), spec.get("layers"), spec.get("norm") == "bn"
        n = spec.get("nodes")
        self.stem = nn.Sequential(nn.Conv2d(3, 2 * c, 3, padding=1, bias=not bn),
                                  *([nn.BatchNorm2d(2 * c)] if bn else []))
        c_pp, c_p, reduction_prev = 2 * c, 2 * c, False
        cells = []
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3) and i > 0
            c_cur = c * (2 if reduction else 1)
            geno = spec.get("reduce" if reduction else "normal")
            cells.append(_Cell(geno, c_pp, c_p, c_cur, reduction, reduction_prev, bn))
            c_pp, c_p, reduction_prev, c = c_p, n * c_cur, reduction, c_cur
        self.cells = nn.ModuleList(cells)
        self.pool, self.classifier = nn.AdaptiveAvgPool2d(1), nn.Linear(c_p, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(self.pool(s1).flatten(1))


def _darts(spec: ArchSpec, num_classes: int) -> nn.Module:
    return DartsNet(spec, num_classes)


def torchvision_model(name: str, num_classes: int) -> nn.Module:
    """A full torchvision classifier for evaluation (``--archs resnet18,...``), small stem."""
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"unknown architecture {name!r}: give 'held-out' or torchvision "
                         "classification model names (torchvision.models.list_models())")
    model = torchvision.models.get_model(name, num_classes=num_classes)
    return adjust_for_small_images(model)
