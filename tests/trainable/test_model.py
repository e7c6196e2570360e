import pytest
import torch
import torchvision

from contract import TAGS_KEY
from trainable import TrialConfig, _model, train
from trainable._model import build_model


def _cfg(ghn_path, **overrides):
    flat = {"arch": "resnet18", "image_size": 32, "init": "ghn", "ghn": str(ghn_path),
            "device": "cpu"}
    return TrialConfig.from_flat({**flat, **overrides})


def _direct_prediction(ghn_path, predict_classifier):
    from ghn import adjust_for_small_images, load_ghn, predict_parameters

    model = adjust_for_small_images(torchvision.models.resnet18(num_classes=10))
    return predict_parameters(model, load_ghn(ghn_path), predict_classifier=predict_classifier,
                              input_size=32)


def test_ghn_init_loads_prediction_and_caches_it(reference_dir, monkeypatch):
    from ghn import load_ghn

    path = reference_dir / "ghn2_random_cifar10_seed0.pt"
    model, tags = build_model(_cfg(path), num_classes=10)
    assert tags["ghn.checkpoint"] == load_ghn(path).checkpoint_id
    assert tags["ghn.predict_classifier"] == "True"  # same class count as the GHN: paper's rule
    expected = _direct_prediction(path, True).model.state_dict()
    got = model.state_dict()
    assert model.conv1.kernel_size == (3, 3)  # small-image stem at 32x32
    assert all(torch.equal(got[k], v) for k, v in expected.items())

    def no_predict(*args, **kwargs):
        raise AssertionError("predicted again despite the cache")

    import ghn

    monkeypatch.setattr(ghn, "predict_parameters", no_predict)
    again, _ = build_model(_cfg(path, seed=5), num_classes=10)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in expected.items())


def test_classifier_not_predicted_keeps_own_seeded_init(reference_dir):
    path = reference_dir / "ghn2_random_imagenet_seed0.pt"  # 1000 classes vs our 10
    pred = _direct_prediction(path, False)
    assert "fc.weight" in pred.not_predicted
    a, tags = build_model(_cfg(path, seed=0), num_classes=10)
    b, _ = build_model(_cfg(path, seed=1), num_classes=10)
    assert tags["ghn.predict_classifier"] == "False"
    assert torch.equal(a.layer1[0].conv1.weight, pred.model.layer1[0].conv1.weight)
    assert torch.equal(a.layer1[0].conv1.weight, b.layer1[0].conv1.weight)
    assert not torch.equal(a.fc.weight, b.fc.weight)  # the trial's own init, not the cached one


@pytest.mark.slow
def test_postproc_applies_per_trial_seeded(reference_dir):
    path = reference_dir / "ghn2_random_cifar10_seed0.pt"
    plain, _ = build_model(_cfg(path), num_classes=10)
    noisy, _ = build_model(_cfg(path, **{"postproc.beta": 1e-1}), num_classes=10)
    same, _ = build_model(_cfg(path, **{"postproc.beta": 1e-1}), num_classes=10)
    other, _ = build_model(_cfg(path, seed=1, **{"postproc.beta": 1e-1}), num_classes=10)
    w = lambda m: m.layer2[0].conv1.weight  # noqa: E731
    assert not torch.equal(w(plain), w(noisy))
    assert torch.equal(w(noisy), w(same)) and not torch.equal(w(noisy), w(other))
    orth, _ = build_model(_cfg(path, **{"postproc.orth": True}), num_classes=10)
    assert not torch.equal(w(plain), w(orth))


@pytest.mark.slow
def test_ghn_trial_trains_and_reports_checkpoint_identity(reference_dir, tiny):
    path = reference_dir / "ghn2_random_cifar10_seed0.pt"
    cfg = TrialConfig.from_flat(tiny(**{"init": "ghn", "ghn": str(path), "optim.epochs": 1,
                                        "postproc.beta": 1e-5}))
    seen = []
    last = train(cfg, report=seen.append)
    assert seen[0][TAGS_KEY]["ghn.checkpoint"].startswith("ghn2_random_cifar10_seed0-")
    assert "init/mean_abs_cos" in seen[0] and last["epoch"] == 1.0


def test_pretrained_head_is_replaced():
    model = torchvision.models.mobilenet_v3_small(num_classes=1000)
    _model._replace_head(model, 10)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 10)


def test_classifier_predicted_only_for_the_ghns_own_classes(reference_dir, tmp_path):
    """A GHN trained here on airplane..deer records those names: its head is no head for other
    classes of the same count, which then keep the trial's own seeded init."""
    ckpt = torch.load(reference_dir / "ghn2_random_cifar10_seed0.pt", weights_only=True)
    names = [f"class{i}" for i in range(10)]
    path = tmp_path / "ghn_named.pt"
    torch.save({**ckpt, "classes": names}, path)
    same, tags = build_model(_cfg(path), num_classes=10, classes=names)
    assert tags["ghn.predict_classifier"] == "True"
    other, tags = build_model(_cfg(path), num_classes=10, classes=[f"other{i}" for i in range(10)])
    assert tags["ghn.predict_classifier"] == "False"
    assert torch.equal(same.layer1[0].conv1.weight, other.layer1[0].conv1.weight)
    assert not torch.equal(same.fc.weight, other.fc.weight)
    torch.manual_seed(0)  # the trial's seed: the unpredicted head is torchvision's own init
    fresh = torchvision.models.resnet18(num_classes=10)
    assert torch.equal(other.fc.weight, fresh.fc.weight)


def test_classifier_rule():
    from trainable._model import classifier_applies

    assert classifier_applies(10, None, 10, ("a",) * 10)  # official checkpoints name no classes
    assert not classifier_applies(1000, None, 10, ())
    assert classifier_applies(2, ("cat", "dog"), 2, ("cat", "dog"))
    assert not classifier_applies(2, ("cat", "dog"), 2, ("dog", "cat"))  # same names, other labels
