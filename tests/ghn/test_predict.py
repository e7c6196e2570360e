"""predict_parameters beyond the reference cases: bad input, models ppuda fails on, caching."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from ghn import adjust_for_small_images, load_ghn, predict_parameters
from ghn.__main__ import main as cli


@pytest.fixture(scope="module")
def ghn(reference_dir):
    return load_ghn(reference_dir / "ghn2_random_imagenet_seed0.pt")


def test_not_a_module_is_refused(ghn):
    with pytest.raises(TypeError, match="must be a torch.nn.Module, got str"):
        predict_parameters("resnet50", ghn)
    with pytest.raises(TypeError, match="ghn must be a GHN2"):
        predict_parameters(torchvision.models.resnet18(), object())


class FixedSizeNet(nn.Module):
    """A user-written model whose classifier only fits 32x32 inputs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 32 * 32, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_forward_failing_at_trace_size_names_model_and_size(ghn):
    expected = r"cannot trace FixedSizeNet at input size \(3, 224, 224\)"
    with pytest.raises(ValueError, match=expected):
        predict_parameters(FixedSizeNet(), ghn)
    pred = predict_parameters(FixedSizeNet(), ghn, input_size=32)
    assert pred.predicted == ["conv.weight", "conv.bias", "fc.weight", "fc.bias"]


# Models ppuda fails on, each with the extension that makes it work.
BEYOND_PPUDA = {
    "efficientnet_b0": "decoder crops for every input size",
    "regnet_y_400mf": "decoder crops for every input size",
    "swin_t": "input node linked to every source",
    "vit_b_32": "not refused; MultiheadAttention keeps its own init",
    "googlenet": "aux heads keep their own init, so train mode works",
    "inception_v3": "traced at 299 with its aux head",
}


@pytest.mark.parametrize("name", sorted(BEYOND_PPUDA))
def test_models_ppuda_fails_on_are_predicted(ghn, name):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    pred = predict_parameters(model, ghn)
    params = dict(model.named_parameters())
    assert len(pred.predicted) > 0.6 * len(params)
    for n in pred.predicted:
        assert torch.isfinite(params[n]).all() and not torch.equal(params[n], before[n]), n
    for n in pred.not_predicted:
        assert torch.equal(params[n], before[n]), n
    size = 299 if name == "inception_v3" else 224
    model.train()
    out = model(torch.randn(2, 3, size, size))
    logits = out[0] if isinstance(out, tuple) else out
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()


@pytest.mark.slow
def test_very_deep_model_needs_no_recursion(ghn):
    """efficientnet_v2_l made ppuda hit Python's recursion limit."""
    model = torchvision.models.efficientnet_v2_l()
    pred = predict_parameters(model, ghn)
    assert pred.graph.n_nodes > 800 and not pred.not_predicted


def test_repeat_prediction_reuses_the_graph_and_is_identical(ghn):
    a, b = torchvision.models.resnet18(), torchvision.models.resnet18()
    first = predict_parameters(a, ghn)
    second = predict_parameters(b, ghn)
    assert second.graph is first.graph
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
    other = predict_parameters(torchvision.models.resnet18(num_classes=10), ghn)
    assert other.graph is not first.graph


def test_classifier_flag_and_bn_train(ghn):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    fc = model.fc.weight.detach().clone()
    pred = predict_parameters(model, ghn, predict_classifier=False, bn_train=True)
    assert pred.not_predicted == ["fc.weight", "fc.bias"]
    assert torch.equal(model.fc.weight, fc)
    assert all(m.training and not m.track_running_stats
               for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_predicted_rows_repeat_with_the_ghn_class_period(reference_dir):
    cifar = load_ghn(reference_dir / "ghn2_random_cifar10_seed0.pt")
    model = torchvision.models.resnet18(num_classes=25)
    predict_parameters(model, cifar, predict_classifier=True)
    w, b = model.fc.weight, model.fc.bias
    assert torch.equal(w[:10], w[10:20]) and torch.equal(b[:5], b[20:25])
    assert not torch.equal(w[0], w[1])


def test_small_image_adjustment():
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    stem = model.conv1.weight.detach().clone()
    adjust_for_small_images(model)
    assert model.expected_input_sz == 32
    assert torch.equal(model.conv1.weight, stem[:, :, 2:5, 2:5])
    assert model.conv1.stride == (1, 1) and model.conv1.padding == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 1000)
    shufflenet = adjust_for_small_images(torchvision.models.shufflenet_v2_x0_5())
    assert shufflenet.conv1[0].stride == 1  # ppuda set it on the Sequential, to no effect
    convnext = adjust_for_small_images(torchvision.models.convnext_tiny())
    assert convnext.features[0][0].stride == 1


def test_cli_predict_and_unknown_model(reference_dir, capsys):
    ckpt = str(reference_dir / "ghn2_random_imagenet_seed0.pt")
    assert cli(["predict", "resnet18", "--ghn", ckpt, "--num-classes", "10",
                "--image-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "predicted 60 parameter tensors" in out and "fc.weight, fc.bias" in out
    with pytest.raises(SystemExit, match="unknown model 'resnt18'.*Did you mean resnet18"):
        cli(["predict", "resnt18", "--ghn", ckpt])


def test_verify_passes_on_known_norms_and_fails_otherwise(reference_dir, capsys):
    """The mechanics of `python -m ghn verify`, with ppuda's recorded norms for the random GHN."""
    import json

    ckpt = str(reference_dir / "ghn2_random_imagenet_seed0.pt")
    norm = json.loads((reference_dir / "case01_resnet18.json").read_text())["total_norm"]
    assert cli(["verify", ckpt, "--expect", f"resnet18={norm}"]) == 0
    assert capsys.readouterr().out.strip().endswith("pass")
    assert cli(["verify", ckpt, "--expect", f"resnet18={norm * 1.001}"]) == 1
    assert "FAIL" in capsys.readouterr().out
