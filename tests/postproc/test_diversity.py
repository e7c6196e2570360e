"""diversity / diversity_summary on weights whose answers are known."""

import math

import pytest
import torch
import torchvision
from torch import nn

from postproc import PostProcConfig, apply_postproc, diversity, diversity_summary


def _tiled_linear(out: int, inp: int, block: int = 64) -> nn.Linear:
    """A Linear whose weight repeats one block x block tile, like a GHN-2 prediction."""
    gen = torch.Generator().manual_seed(0)
    tile = torch.randn(block, block, generator=gen)
    layer = nn.Linear(inp, out)
    with torch.no_grad():
        layer.weight.copy_(tile.repeat(out // block, inp // block))
    return layer


def test_orthogonal_layer_is_fully_diverse() -> None:
    layer = nn.Linear(32, 32)
    nn.init.orthogonal_(layer.weight)
    (d,) = diversity(layer)
    assert d.mean_abs_cos == pytest.approx(0, abs=1e-6)
    assert d.repeat_share == 0
    assert d.eff_rank == pytest.approx(32, rel=1e-5)
    assert d.eff_rank_ratio == pytest.approx(1, rel=1e-5)


def test_tiled_layer_repeats_and_has_low_rank() -> None:
    model = nn.Sequential(_tiled_linear(256, 128), nn.Linear(256, 10))
    tiled = diversity(model)[0]
    assert tiled.index == 1 and tiled.name == "0" and tiled.shape == (256, 128)
    assert tiled.repeat_share == pytest.approx(1 - 64 / 256)
    assert tiled.eff_rank <= 64 + 1e-3  # 64 distinct rows at most
    assert tiled.eff_rank_ratio == pytest.approx(tiled.eff_rank / 128)


def test_noise_breaks_the_repeats() -> None:
    model = nn.Sequential(_tiled_linear(256, 128), nn.Linear(256, 10))
    before = diversity(model)[0]
    apply_postproc(model, PostProcConfig(beta=3e-5, orth=True), seed=0)
    after = diversity(model)[0]
    assert after.repeat_share == 0 < before.repeat_share
    assert after.mean_abs_cos < before.mean_abs_cos
    assert after.eff_rank_ratio == pytest.approx(1, rel=1e-5)  # orthonormal columns


def test_identical_rows_and_rank_one() -> None:
    layer = nn.Linear(5, 4, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.arange(1.0, 6.0).expand(4, 5))
    (d,) = diversity(layer)
    assert d.mean_abs_cos == pytest.approx(1, abs=1e-6)
    assert d.repeat_share == pytest.approx(0.75)
    assert d.eff_rank == pytest.approx(1, abs=1e-6)


def test_zero_layer_and_single_filter_are_defined() -> None:
    zero, single = nn.Linear(3, 4), nn.Linear(3, 1)
    nn.init.zeros_(zero.weight)
    d_zero, d_single = diversity(nn.Sequential(zero, single))
    assert d_zero.eff_rank == 0 and d_zero.mean_abs_cos == 0
    assert math.isnan(d_single.mean_abs_cos)
    summary = diversity_summary(nn.Sequential(zero, single))
    assert summary["init/mean_abs_cos"] == 0  # the undefined value is left out of the mean
    assert summary["init/n_layers"] == 2


def test_large_layer_uses_a_deterministic_subsample() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 1500, 1), nn.Linear(4, 2))
    first = diversity(model)[0]
    state = torch.get_rng_state()
    assert diversity(model)[0] == first
    assert torch.equal(torch.get_rng_state(), state)  # sampling leaves the global RNG alone
    assert 0 < first.mean_abs_cos < 0.5


def test_summary_of_resnet50_has_every_key_and_layer() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet50(num_classes=10)
    summary = diversity_summary(model)
    assert set(summary) == {
        "init/mean_abs_cos",
        "init/repeat_share",
        "init/eff_rank_ratio",
        "init/n_layers",
    }
    assert all(isinstance(v, float) for v in summary.values())
    assert summary["init/n_layers"] == 54
    assert summary["init/repeat_share"] == 0  # random init never repeats a filter
