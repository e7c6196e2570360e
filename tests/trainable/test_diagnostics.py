"""Init diagnostics: the diversity summary, cached on the node under a hash of the weights."""

import copy

import pytest
import torch
from torch import nn

from postproc import diversity_summary
from trainable import _diagnostics
from trainable._diagnostics import init_summary, weights_digest


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def test_summary_is_postprocs_and_computed_once_per_weights(monkeypatch):
    model = _model(seed=11)
    want = diversity_summary(model)
    assert init_summary(model) == pytest.approx(want)

    def boom(model):
        raise AssertionError("computed again")

    monkeypatch.setattr(_diagnostics, "diversity_summary", boom)
    # The same weights in another trial, channels-last as on a GPU: a cache hit.
    twin = copy.deepcopy(model).to(memory_format=torch.channels_last)
    assert not twin[0].weight.is_contiguous()
    assert init_summary(twin) == pytest.approx(want)
    with torch.no_grad():
        twin[0].weight[0, 0, 0, 0] += 1e-3  # other weights: another entry
    with pytest.raises(AssertionError, match="computed again"):
        init_summary(twin)


def test_digest_follows_values_not_layout():
    a = _model()
    assert weights_digest(a) == weights_digest(copy.deepcopy(a).to(
        memory_format=torch.channels_last))
    assert weights_digest(a) != weights_digest(_model(seed=1))
