"""Known-answer check of a GHN checkpoint: total parameter norms of predicted torchvision models.

The norms for the official ImageNet GHN-2 and the GHN-3 checkpoints were published with GHN-3's
results; matching them to 1e-4 shows that a checkpoint loads and predicts as the original
code. The same mechanics run on any checkpoint with expected values given by the caller (the
tests use the reference outputs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchvision

from ghn._ghn3 import GHN3
from ghn._model import GHN2
from ghn._predict import predict_parameters

PUBLISHED_NORMS = {  # official checkpoints, 1000 classes, 224x224
    "ghn2-imagenet": {"resnet50": 286.4883, "resnet18": 146.9574, "convnext_tiny": 159.4444,
                      "convnext_base": 258.8298},
    # GHN-3's published results table: column `ghn3-paramnorm` (GHN-3-XL/m16) and
    # `ghn3-t-paramnorm` (GHN-3-T/m8). ViTs are left out: their class-token row is random.
    "ghn3-xlm16": {"resnet50": 108.4530, "resnet18": 73.9089, "convnext_tiny": 219.8035,
                   "convnext_base": 355.1909},
    "ghn3-tm8": {"resnet50": 78.6197, "resnet18": 54.9382, "convnext_tiny": 77.5166,
                 "convnext_base": 103.0898},
}


@dataclass(frozen=True)
class NormCheck:
    model: str
    expected: float
    measured: float
    rtol: float

    @property
    def passed(self) -> bool:
        return math.isclose(self.measured, self.expected, rel_tol=self.rtol)

    def __str__(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        return (f"{self.model}: total norm {self.measured:.4f}, "
                f"expected {self.expected:.4f} {verdict}")


def total_norm(model: torch.nn.Module) -> float:
    """sqrt of the sum of squares of all parameters, in float64."""
    return math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in model.parameters()))


def verify(ghn: GHN2 | GHN3, expected: dict[str, float], *, rtol: float = 1e-4) -> list[NormCheck]:
    """Predict each torchvision model at its defaults and compare its total norm."""
    checks = []
    for name, norm in expected.items():
        torch.manual_seed(0)  # only parameters the GHN does not predict depend on it
        model = torchvision.models.get_model(name)
        predict_parameters(model, ghn, predict_classifier=True)
        checks.append(NormCheck(name, norm, total_norm(model), rtol))
    return checks
