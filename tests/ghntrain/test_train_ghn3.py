"""GHN-3 training (``--model ghn3``): the same loop, checkpoints and resume as GHN-2's. Its
data-parallel run (two Ray Train workers) is the killed-run drill in test_train.py."""

from __future__ import annotations

import logging

import pytest
import torch

from ghn import GHN3, Graph3, load_ghn, predict_parameters, predict_tensors, predicted_names
from ghntrain import TrainConfig, Trainer, TrainImages, build, train

GHN3_TINY = dict(hid=8, heads=2, layers=1, max_shape=(32, 32, 3, 3), image_size=8,
                 meta_batch=2, batch_size=16, held_out=3, log_every=1,
                 families=("resnet", "darts"), model="ghn3")


TINY_FLAGS = ["--hid", "8", "--max-shape", "32,32,3,3", "--image-size", "8", "--meta-batch", "1",
              "--batch-size", "8", "--held-out", "2", "--families", "resnet",
              "--train-per-class", "10", "--log-every", "1"]


def _images(n=64, seed=0):
    """Two classes told apart by brightness: dark images are class 0, bright ones class 1."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    base = torch.where(y[:, None, None, None] == 1, 150, 0)
    x = (base + torch.randint(0, 100, (n, 8, 8, 3), generator=g)).to(torch.uint8)
    return TrainImages(x, y, torch.full((1, 3, 1, 1), 0.4), torch.full((1, 3, 1, 1), 0.3),
                       ["dark", "bright"])


class _Killed(Exception):
    pass


def _kill(path):
    raise _Killed


def test_ghn3_trainer_builds_a_ghn3_and_caches_ghn3_graphs():
    trainer = Trainer(TrainConfig(**{**GHN3_TINY, "steps": 1}), _images())
    assert isinstance(trainer.ghn, GHN3)
    c = trainer.ghn.config
    assert (c.hid, c.heads, c.layers, c.num_classes) == (8, 2, 1, 2)
    trainer.step()
    assert trainer._models and all(isinstance(g, Graph3) for _, g in trainer._models.values())
    model, graph = next(iter(trainer._models.values()))
    names = set(predict_tensors(trainer.ghn, graph, model))
    assert names == {n for n, _ in model.named_parameters()}  # every parameter trains
    assert predicted_names(graph, model) == names  # what prepare_arch checks, uncomputed


def test_ghn3_config_is_validated_by_name():
    with pytest.raises(ValueError, match="model must be one of ghn2, ghn3, got 'ghn4'"):
        TrainConfig(model="ghn4")
    with pytest.raises(ValueError, match="heads must divide hid=8"):
        TrainConfig(**{**GHN3_TINY, "heads": 3})


def test_ghn3_checkpoint_round_trips_through_load_ghn_with_classes(tmp_path):
    trainer = Trainer(TrainConfig(**{**GHN3_TINY, "steps": 2}), _images())
    out = tmp_path / "ghn3.pt"
    train(trainer, out)
    raw = torch.load(out, weights_only=True)
    assert raw["config"]["ghn"] == "ghn3" and raw["step"] == 2
    loaded = load_ghn(out)
    assert isinstance(loaded, GHN3) and loaded.config == trainer.ghn.config
    assert loaded.classes == ("dark", "bright")
    for k, v in trainer.ghn.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    spec = trainer.sampler.held_out[0]
    a = predict_parameters(build(spec, 2), loaded, input_size=8).model.state_dict()
    b = predict_parameters(build(spec, 2), trainer.ghn, input_size=8).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_ghn3_resume_continues_bit_for_bit(tmp_path):
    cfg = TrainConfig(**{**GHN3_TINY, "steps": 4, "checkpoint_every": 2})
    straight = Trainer(cfg, _images())
    train(straight, tmp_path / "straight.pt")
    out = tmp_path / "killed.pt"
    with pytest.raises(_Killed):
        train(Trainer(cfg, _images()), out, on_checkpoint=_kill)
    resumed = Trainer(cfg, _images())
    resumed.restore(torch.load(out, weights_only=True))
    assert resumed.step_count == 2
    train(resumed, out)
    for k, v in straight.ghn.state_dict().items():
        assert torch.equal(resumed.ghn.state_dict()[k], v), k
    with pytest.raises(ValueError, match=r"other settings .*'model': \('ghn3', 'ghn2'\)"):
        Trainer(TrainConfig(**{**GHN3_TINY, "steps": 4, "checkpoint_every": 2,
                               "model": "ghn2"}), _images()).restore(
            torch.load(out, weights_only=True))


def test_a_ghn2_checkpoint_without_the_model_field_still_resumes(tmp_path):
    """Runs started before ``model``, ``heads`` and ``layers`` existed stored no such fields:
    they were GHN-2 runs and resume as such."""
    cfg = TrainConfig(**{**GHN3_TINY, "model": "ghn2", "heads": 8, "layers": 3, "steps": 2,
                         "checkpoint_every": 1})
    out = tmp_path / "old.pt"
    with pytest.raises(_Killed):
        train(Trainer(cfg, _images()), out, on_checkpoint=_kill)
    ckpt = torch.load(out, weights_only=True)
    for k in ("model", "heads", "layers"):
        del ckpt["train_config"][k]
    resumed = Trainer(cfg, _images())
    resumed.restore(ckpt)
    assert resumed.step_count == 1


def test_init_from_a_ghn_of_the_other_kind_is_refused(tmp_path):
    out = tmp_path / "g2.pt"
    train(Trainer(TrainConfig(**{**GHN3_TINY, "model": "ghn2", "steps": 1}), _images()), out)
    with pytest.raises(ValueError, match="is a GHN2; this run trains a GHN3"):
        Trainer(TrainConfig(**{**GHN3_TINY, "steps": 1}), _images(), init=str(out))


@pytest.mark.slow
def test_ghn3_training_lowers_the_loss():
    """A few dozen steps on two brightness classes: the last window's mean loss is well below
    the first's (fixed seed, so the comparison is reproducible)."""
    trainer = Trainer(TrainConfig(**{**GHN3_TINY, "steps": 24, "lr": 3e-3}), _images())
    losses = [trainer.step()["loss"] for _ in range(24)]
    first, last = sum(losses[:6]) / 6, sum(losses[-6:]) / 6
    assert last < first - 0.1, (first, last)


@pytest.mark.slow
def test_cli_trains_and_evaluates_a_ghn3(cifar_jpeg_dir, tmp_path, monkeypatch, capsys, caplog,
                                         new_mlflow_store):
    from ghn.__main__ import main

    monkeypatch.setenv("GHN_SWEEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO)
    out = tmp_path / "g3.pt"
    data = ["--data", str(cifar_jpeg_dir), "--classes", "cat,dog"]
    uri = new_mlflow_store(tmp_path / "mlflow.db")
    assert main(["train", *data, "--steps", "2", "--out", str(out), *TINY_FLAGS,
                 "--model", "ghn3", "--heads", "2", "--layers", "1",
                 "--tracking-uri", uri]) == 0
    ghn = load_ghn(out)
    assert isinstance(ghn, GHN3) and ghn.classes == ("cat", "dog")
    assert ghn.config.layers == 1
    assert main(["evaluate", str(out), "--data", str(cifar_jpeg_dir), "--test-per-class",
                 "10"]) == 0
    assert "chance" in capsys.readouterr().out
    import mlflow

    client = mlflow.MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("ghn-train").experiment_id])[0]
    assert run.data.params["model"] == "ghn3" and run.data.params["heads"] == "2"
