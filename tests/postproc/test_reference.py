"""apply_postproc against ppuda's own results on a GHN-2-predicted resnet50 (postproc_cases.json).

The model is case 6 of the reference data: resnet50(num_classes=10) for 32x32 inputs with
parameters predicted by the random ImageNet GHN-2. Seeded results were made with
torch.manual_seed(0) right before ppuda's `init`; on CPU `seed=0` draws the same stream.
"""

import json
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from ghn import adjust_for_small_images, load_ghn, predict_parameters
from postproc import PostProcConfig, apply_postproc, list_layers


@pytest.fixture(scope="module")
def cases(reference_dir: Path) -> dict:
    return json.loads((reference_dir / "postproc_cases.json").read_text())


@pytest.fixture(scope="module")
def predicted(reference_dir: Path) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The predicted model and a copy of its state dict, made once (prediction takes seconds)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet50(num_classes=10)
    adjust_for_small_images(model)
    ghn = load_ghn(reference_dir / "ghn2_random_imagenet_seed0.pt")
    torch.manual_seed(1)  # ppuda's tracing drew randn(1,3,32,32) here; ours draws nothing
    predict_parameters(model, ghn, predict_classifier=False, bn_train=False)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def _fresh(predicted: tuple[nn.Module, dict[str, torch.Tensor]]) -> nn.Module:
    """The shared model, reset to its predicted parameters (cheaper than rebuilding resnet50)."""
    model, state = predicted
    model.load_state_dict(state)
    return model


def _reproducible(entry: dict, flat_index: int) -> bool:
    """Whether W.flatten()[flat_index] lies in the first rank_2d columns of the 2-D view's Q."""
    shape = entry["shape"]
    rest = 1
    for dim in shape[1:]:
        rest *= dim
    column = flat_index // rest if entry["transposed"] else flat_index % rest
    return column < entry["rank_2d"]


def test_layers_match_reference(predicted: tuple, cases: dict) -> None:
    layers = list_layers(_fresh(predicted))
    assert len(layers) == cases["n_2d_layers"] == 54
    for entry, (name, module) in zip(cases["recipe_B"]["layers"], layers):
        assert f"{name}.weight" == entry["param"]
        assert list(module.weight.shape) == entry["shape"]


def test_recipe_b_sigma_and_seeded_noise(predicted: tuple, cases: dict) -> None:
    """init(orth=False, beta=1e-5, layer=0): sigma per layer and the seeded noise."""
    model = _fresh(predicted)
    state = predicted[1]
    reports = apply_postproc(model, PostProcConfig(beta=1e-5), seed=0)
    by_index = {r.index: r for r in reports}
    layers = list_layers(model)
    for entry in cases["recipe_B"]["layers"]:
        if "skipped" in entry:
            assert entry["layer"] not in by_index
            continue
        report = by_index[entry["layer"]]
        assert report.transposed == entry["transposed"]
        assert report.corr_std == pytest.approx(entry["corr_std"], rel=1e-5)
        assert report.noise_std == pytest.approx(entry["noise_std"], rel=1e-5)
        name, module = layers[entry["layer"] - 1]
        seeded = entry["seeded_result"]
        noise = (module.weight - state[f"{name}.weight"]).double()
        assert noise.norm().item() == pytest.approx(seeded["noise_norm"], rel=1e-4)
        first = module.weight.detach().flatten()[:4].double()
        torch.testing.assert_close(
            first, torch.tensor(seeded["first"], dtype=torch.float64), rtol=1e-5, atol=1e-7
        )
    assert len(reports) == 53


def test_recipe_a_seeded(predicted: tuple, cases: dict) -> None:
    """init(orth=True, beta=3e-5, layer=37) after torch.manual_seed(0)."""
    model = _fresh(predicted)
    state = predicted[1]
    reports = apply_postproc(model, PostProcConfig(beta=3e-5, orth=True, layer=37), seed=0)
    assert [r.index for r in reports] == list(range(37, 54))
    layers = list_layers(model)
    for entry in cases["recipe_A"]["layers"]:
        name, module = layers[entry["layer"] - 1]
        if "skipped" in entry:
            assert torch.equal(module.weight, state[f"{name}.weight"])
            continue
        report = reports[entry["layer"] - 37]
        assert report.noise_std == pytest.approx(entry["noise_std"], rel=1e-5)
        seeded = entry["seeded_result"]
        assert module.weight.double().norm().item() == pytest.approx(seeded["norm"], rel=1e-6)
        first = module.weight.detach().flatten()[:4].double()
        torch.testing.assert_close(
            first, torch.tensor(seeded["first"], dtype=torch.float64), rtol=1e-4, atol=1e-6
        )


@pytest.mark.slow
def test_recipe_a_orth_without_noise(predicted: tuple, cases: dict) -> None:
    """init(orth=True, beta=0, layer=37): norms, and the values in the reproducible columns.

    Tiled predictions have rank 64, so Q's columns past the rank are floating-point noise."""
    model = _fresh(predicted)
    apply_postproc(model, PostProcConfig(orth=True, layer=37))
    layers = list_layers(model)
    for entry in cases["recipe_A"]["layers"]:
        if "skipped" in entry:
            continue
        _, module = layers[entry["layer"] - 1]
        ref = entry["orth_beta0"]
        weight = module.weight.detach()
        assert weight.double().norm().item() == pytest.approx(ref["norm"], rel=1e-5)
        mat = weight.reshape(weight.shape[0], -1)
        mat = mat.t() if entry["transposed"] else mat
        assert int((mat.abs().sum(dim=0) == 0).sum()) == ref["n_zero_columns"]
        flat = weight.flatten()
        keep = [i for i in range(len(ref["first"])) if _reproducible(entry, i)]
        assert keep, entry["param"]
        torch.testing.assert_close(
            flat[keep].double(),
            torch.tensor(ref["first"], dtype=torch.float64)[keep],
            rtol=1e-4,
            atol=1e-6,
        )
