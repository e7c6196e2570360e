"""Top-1 accuracy of predicted parameters, without any training: the measure of a GHN.

Each architecture is predicted through the inference path (``predict_parameters``, the one
trials use) and evaluated with BatchNorm on batch statistics, as ppuda evaluates GHN-2 (the
GHN predicts no running statistics). The same architectures with their own random
initialisation give the floor; chance is 1 / classes. Batch statistics need batches that look
like the training batches: test sets come sorted by class (ImageFolder), and a one-class batch
normalises the class signal away, so images are evaluated in one fixed shuffled order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ghn import GHN2, GHN3, predict_parameters
from ghntrain._archs import ArchSampler, build, torchvision_model
from trainable import to_input


@dataclass
class ArchResult:
    """One architecture's row of ``evaluate``: what the GHN's prediction is worth over the
    architecture's own random initialisation."""

    name: str
    predicted: float  # top-1 with the GHN's parameters
    random_init: float  # top-1 with the architecture's own initialisation


def held_out_archs(train_config: dict, num_classes: int) -> list[tuple[str, nn.Module]]:
    """The held-out architectures of a training run, rebuilt from its stored config, each
    initialised from its own seed: their random-init accuracy, the floor the GHN's is compared
    with, is the same in every evaluation of every GHN trained with that held-out set."""
    seed = train_config["held_out_seed"]
    sampler = ArchSampler(train_config["families"], held_out=train_config["held_out"],
                          held_out_seed=seed)
    archs = []
    for i, spec in enumerate(sampler.held_out):
        with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
            torch.manual_seed(seed + i)
            archs.append((spec.name, build(spec, num_classes)))
    return archs


def named_archs(names: list[str], num_classes: int) -> list[tuple[str, nn.Module]]:
    """torchvision classifiers by name, with the small-image stem."""
    return [(n, torchvision_model(n, num_classes)) for n in names]


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor,
             std: torch.Tensor, size: int, batch_size: int = 256) -> float:
    """Top-1 over (x, y), uint8 NHWC, in batches of a fixed shuffled order (BatchNorm
    normalises each batch, so each batch must mix the classes as training batches do)."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    correct = 0
    for i in range(0, len(y), batch_size):
        idx = order[i:i + batch_size]
        logits = model(to_input(x[idx], mean, std, size))
        correct += int((logits.argmax(1) == y[idx]).sum())
    return correct / len(y)


def evaluate(ghn: GHN2 | GHN3, archs: list[tuple[str, nn.Module]], x: torch.Tensor,
             y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, *, image_size: int
             ) -> list[ArchResult]:
    """Per architecture: top-1 of its random init, then of the GHN's prediction."""
    results = []
    for name, model in archs:
        model.eval()
        _batch_stat_norms(model)
        torch.manual_seed(0)
        floor = accuracy(model, x, y, mean, std, image_size)
        pred = predict_parameters(model, ghn, input_size=image_size, bn_train=True)
        if pred.not_predicted:
            name += f" ({len(pred.not_predicted)} tensors not predicted)"
        results.append(ArchResult(name, accuracy(model, x, y, mean, std, image_size), floor))
    return results


def _batch_stat_norms(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.track_running_stats = False
            m.running_mean = m.running_var = m.num_batches_tracked = None


def format_table(results: list[ArchResult], num_classes: int) -> str:
    """A plain-text table, one row per architecture, then the means and chance."""
    width = max([len(r.name) for r in results] + [12])
    lines = [f"{'architecture':<{width}}  predicted  random init"]
    lines += [f"{r.name:<{width}}  {r.predicted:9.3f}  {r.random_init:11.3f}" for r in results]
    mean_p = sum(r.predicted for r in results) / len(results)
    mean_r = sum(r.random_init for r in results) / len(results)
    lines.append(f"{'mean':<{width}}  {mean_p:9.3f}  {mean_r:11.3f}")
    lines.append(f"{'chance':<{width}}  {1 / num_classes:9.3f}")
    return "\n".join(lines)
