"""GHN training: exact differentiable prediction, learning, checkpoints, resume, bad input."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ghn import GHN3, load_ghn, predict_parameters, predict_tensors
from ghn._predict import cached_graph
from ghntrain import (
    FAMILIES,
    ArchSampler,
    TrainConfig,
    Trainer,
    TrainImages,
    accuracy,
    build,
    held_out_archs,
    prepare_arch,
    sample_spec,
    train,
)

TINY = dict(hid=8, max_shape=(32, 32, 3, 3), image_size=8, meta_batch=2, batch_size=16,
            held_out=3, log_every=1,
            families=("resnet", "darts"))


def _images(n=64, seed=0):
    """Two classes told apart by brightness: dark images are class 0, bright ones class 1."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    base = torch.where(y[:, None, None, None] == 1, 150, 0)
    x = (base + torch.randint(0, 100, (n, 8, 8, 3), generator=g)).to(torch.uint8)
    return TrainImages(x, y, torch.full((1, 3, 1, 1), 0.4), torch.full((1, 3, 1, 1), 0.3),
                       ["dark", "bright"])


def _loss_on(trainer, specs, x, y):
    total = 0.0
    with torch.no_grad():
        for spec in specs:
            model, graph = trainer._model(spec)
            out = torch.func.functional_call(model, predict_tensors(trainer.ghn, graph, model),
                                             (x,))
            total += F.cross_entropy(out, y).item()
    return total / len(specs)


def test_training_path_predicts_exactly_what_inference_writes_and_its_gradient_is_right():
    torch.manual_seed(0)
    trainer = Trainer(TrainConfig(**TINY), _images())
    ghn = trainer.ghn.double()
    model = build(sample_spec("darts", random.Random(1)), 2)
    graph = cached_graph(ghn, model, (3, 8, 8))
    model.double()
    tensors = predict_tensors(ghn, graph, model)
    predict_parameters(model, ghn, input_size=8)
    written = dict(model.named_parameters())
    assert set(tensors) == set(written)  # every parameter of a sampled net is predicted
    assert all(torch.equal(written[k], v.detach()) for k, v in tensors.items())
    weights = {k: torch.randn_like(v) for k, v in tensors.items()}

    def objective():
        return sum((v * weights[k]).sum() for k, v in predict_tensors(ghn, graph, model).items())

    objective().backward()
    direction = {n: torch.randn_like(p) for n, p in ghn.named_parameters()}
    analytic = sum((p.grad * direction[n]).sum() for n, p in ghn.named_parameters())
    eps = 1e-7
    with torch.no_grad():
        for n, p in ghn.named_parameters():
            p += eps * direction[n]
        plus = objective()
        for n, p in ghn.named_parameters():
            p -= 2 * eps * direction[n]
        minus = objective()
        for n, p in ghn.named_parameters():
            p += eps * direction[n]
    assert float(analytic) == pytest.approx(float((plus - minus) / (2 * eps)), rel=1e-5)


@pytest.mark.slow
def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    trainer = Trainer(TrainConfig(**{**TINY, "steps": 12, "lr": 3e-3}), _images())
    specs = [trainer.sampler.sample(random.Random(i)) for i in range(3)]
    x, y = trainer._batch()
    before = _loss_on(trainer, specs, x, y)
    for _ in range(12):
        trainer.step()
    after = _loss_on(trainer, specs, x, y)
    assert after < before - 0.05, (before, after)


def test_checkpoint_round_trips_through_load_ghn(tmp_path):
    trainer = Trainer(TrainConfig(**{**TINY, "steps": 2}), _images())
    out = tmp_path / "ghn.pt"
    train(trainer, out)
    raw = torch.load(out, weights_only=True)
    assert {"state_dict", "config", "epoch"} <= set(raw) and raw["step"] == 2
    loaded = load_ghn(out)
    assert loaded.config.hid == 8 and loaded.num_classes == 2
    for k, v in trainer.ghn.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    model = build(trainer.sampler.held_out[0], 2)
    a = predict_parameters(model, loaded, input_size=8).model.state_dict()
    b = predict_parameters(build(trainer.sampler.held_out[0], 2), trainer.ghn,
                           input_size=8).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    cut = tmp_path / "cut.pt"  # a run killed mid-copy elsewhere: half a file
    cut.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    with pytest.raises(ValueError, match="cut.pt is not a readable torch checkpoint"):
        load_ghn(cut)


class _Killed(Exception):
    pass


@pytest.mark.slow
def test_resume_continues_at_the_right_step_bit_for_bit(tmp_path):
    cfg = TrainConfig(**{**TINY, "steps": 4, "checkpoint_every": 2})
    straight = Trainer(cfg, _images())
    train(straight, tmp_path / "straight.pt")

    def kill(path):
        raise _Killed

    out = tmp_path / "killed.pt"
    with pytest.raises(_Killed):
        train(Trainer(cfg, _images()), out, on_checkpoint=kill)
    resumed = Trainer(cfg, _images())
    resumed.restore(torch.load(out, weights_only=True))
    assert resumed.step_count == 2
    steps = []
    train(resumed, out, on_log=lambda s, m: steps.append(s))
    assert steps == [3, 4]
    for k, v in straight.ghn.state_dict().items():
        assert torch.equal(resumed.ghn.state_dict()[k], v), k
    with pytest.raises(ValueError, match=r"other settings .*'lr': \(0\.001, 0\.002\)"):
        Trainer(TrainConfig(**{**TINY, "steps": 4, "checkpoint_every": 2, "lr": 2e-3}),
                _images()).restore(torch.load(out, weights_only=True))
    other = _images()
    other.classes = ["black", "white"]
    with pytest.raises(ValueError, match=r"'classes': \(\['dark', 'bright'\], \['black'"):
        Trainer(cfg, other).restore(torch.load(out, weights_only=True))


def test_held_out_architectures_are_fixed_by_seed_and_never_trained_on():
    a, b = ArchSampler(FAMILIES, held_out=10), ArchSampler(FAMILIES, held_out=10)
    assert a.held_out == b.held_out and len(set(a.held_out)) == 10
    rng = random.Random(0)
    drawn = [a.sample(rng) for _ in range(300)]
    assert not set(drawn) & set(a.held_out)
    assert {s.family for s in drawn} == set(FAMILIES)
    only = ArchSampler(("mobilenet",), held_out=2)
    assert {only.sample(rng).family for _ in range(20)} == {"mobilenet"}
    with pytest.raises(ValueError, match="families must be some of darts"):
        ArchSampler(("vgg",))


def test_held_out_architectures_start_from_the_same_random_init_every_time():
    """Their random-init accuracy is the floor a GHN is compared with: the same in every
    evaluation, and the caller's random state is left alone."""
    config = dataclasses.asdict(TrainConfig(held_out=2, families=("resnet", "mobilenet")))
    torch.manual_seed(1)
    first = held_out_archs(config, num_classes=5)
    after = torch.rand(1)
    torch.manual_seed(2)
    second = held_out_archs(config, num_classes=5)
    for (name_a, a), (name_b, b) in zip(first, second):
        assert name_a == name_b
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                     b.state_dict().values()))
    torch.manual_seed(1)
    assert torch.equal(after, torch.rand(1))  # held_out_archs drew nothing from it


def test_evaluation_batches_mix_the_classes_of_a_class_sorted_test_set():
    """With batch-statistics BatchNorm, a one-class batch normalises the class away: a test set
    sorted by class (as ImageFolder yields it) must be evaluated in mixed batches."""
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            labels = x[:, 0, 0, 0].round().long()  # each image's pixel value is its label
            seen.append(set(labels.tolist()))
            return F.one_hot(labels, 4).float()

    y = torch.arange(4).repeat_interleave(128)  # sorted: 128 of class 0, then 1, ...
    x = y.to(torch.uint8)[:, None, None, None].expand(-1, 8, 8, 3).contiguous()
    zero, one = torch.zeros(1, 3, 1, 1), torch.full((1, 3, 1, 1), 1 / 255)
    assert accuracy(Spy(), x, y, zero, one, 8, batch_size=64) == 1.0
    assert len(seen) == 8 and all(len(classes) >= 3 for classes in seen)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_sampled_family_is_fully_predicted(family):
    rng = random.Random(family)
    for _ in range(4):
        spec = sample_spec(family, rng)
        prepare_arch(build(spec, 2), 8, spec.name)  # raises if not


class _WithConv1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.mix = nn.Conv1d(4, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = self.conv(x).flatten(2)
        return self.fc(self.mix(h).mean(2))


def test_an_architecture_the_ghn_cannot_predict_is_refused_by_name():
    with pytest.raises(ValueError, match=r"architecture with-conv1d: GHN-2 cannot predict "
                                         r"mix\.weight, mix\.bias"):
        prepare_arch(_WithConv1d(), 8, "with-conv1d")
    with pytest.raises(ValueError, match=r"architecture fixed: the GHN's graph builder cannot"):
        prepare_arch(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2)), 8,
                     "fixed")


def test_bad_train_config_names_the_field():
    with pytest.raises(ValueError, match="meta_batch must be >= 1"):
        TrainConfig(meta_batch=0)
    with pytest.raises(ValueError, match="families must be some of"):
        TrainConfig(families=("transformer",))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """Decoded datasets go to a temp dir, not the user cache."""
    monkeypatch.setenv("GHN_SWEEP_CACHE", str(tmp_path / "cache"))
    return tmp_path


TINY_FLAGS = ["--hid", "8", "--max-shape", "32,32,3,3", "--image-size", "8", "--meta-batch", "1",
              "--batch-size", "8", "--held-out", "2", "--families", "resnet",
              "--train-per-class", "10", "--log-every", "1"]


@pytest.mark.slow
def test_cli_trains_resumes_and_evaluates(cifar_jpeg_dir, cache, capsys, caplog, monkeypatch,
                                          new_mlflow_store):
    from ghn.__main__ import main  # `python -m ghn` hands these to ghntrain

    monkeypatch.chdir(cache)  # MLflow's default artifact root is ./mlruns

    caplog.set_level(logging.INFO, logger="ghntrain._train")

    out = cache / "g.pt"
    data = ["--data", str(cifar_jpeg_dir), "--classes", "cat,dog"]
    assert main(["train", *data, "--steps", "1", "--out", str(out), *TINY_FLAGS]) == 0
    assert re.search(r"step 1/1 loss [\d.]+ acc [\d.]+ lr \S+ [\d.]+ steps/s ETA 0:00:00",
                     caplog.text), caplog.text
    assert main(["train", *data, "--steps", "1", "--out", str(out), *TINY_FLAGS]) == 2
    assert "exists: pass --resume" in capsys.readouterr().err
    assert main(["train", *data, "--steps", "2", "--out", str(out), *TINY_FLAGS,
                 "--resume"]) == 2  # another step count is another schedule
    assert "other settings" in capsys.readouterr().err
    assert main(["evaluate", str(out), "--data", str(cifar_jpeg_dir), "--test-per-class",
                 "10"]) == 0
    table = capsys.readouterr().out
    assert "20 test images, 2 classes, 8x8" in table and "chance" in table
    assert table.count("resnet:") == 2  # the two held-out architectures, by name
    assert load_ghn(out).classes == ("cat", "dog")  # trials compare them before using the head
    uri = new_mlflow_store(cache / "mlflow.db")
    assert main(["evaluate", str(out), "--data", str(cifar_jpeg_dir), "--test-per-class",
                 "10", "--tracking-uri", uri]) == 0
    import mlflow

    run = mlflow.MlflowClient(uri).search_runs(
        [mlflow.MlflowClient(uri).get_experiment_by_name("ghn-train").experiment_id])[0]
    assert set(run.data.metrics) == {"eval/mean_acc", "eval/mean_acc_random_init", "eval/chance"}
    logged = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/evaluate.txt")
    assert logged in capsys.readouterr().out


@pytest.mark.slow
def test_cli_bad_input_gets_a_clear_error(cifar_jpeg_dir, cache, capsys):
    from ghntrain import main

    out = str(cache / "g.pt")
    assert main(["train", "--data", str(cifar_jpeg_dir), "--classes", "cat,dgo", "--steps", "1",
                 "--out", out, *TINY_FLAGS]) == 2
    assert "no class 'dgo' (did you mean 'dog'?); known classes" in capsys.readouterr().err
    (cache / "g.pt").write_bytes(b"not a checkpoint")
    assert main(["evaluate", out, "--data", str(cifar_jpeg_dir)]) == 2
    assert "not a readable torch checkpoint" in capsys.readouterr().err
    assert main(["train", "--data", str(cifar_jpeg_dir), "--steps", "1", "--out", out,
                 "--resume", *TINY_FLAGS]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_killed_ray_train_run_resumes_bit_for_bit_in_the_same_mlflow_run(
        cifar_jpeg_dir, cache, monkeypatch, new_mlflow_store):
    """kill -9 a two-worker run (driver, Ray and workers) after a checkpoint; `--resume` must
    end where an uninterrupted run ends, parameter for parameter, and continue its MLflow run
    (a relative sqlite URI, although Ray Train's workers run in directories of their own).

    The uninterrupted run is also the check of data-parallel training: two CPU workers (gloo)
    draw different architectures and images; after the averaged updates their GHNs must agree
    exactly (``check_identical`` fails the run otherwise). It trains a GHN-3, the kind with
    more to carry over (attention layers, redrawn architectures); the loop, its workers and
    its checkpoints are the same code for a GHN-2."""
    import mlflow
    import ray

    from ghntrain import main

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.chdir(cache)
    # Killed at its first checkpoint (a step takes 0.2-1 s here), it resumes for two thirds of
    # the run: both workers' RNGs, the data order and the schedule have to carry over.
    steps = 12
    flags = ["train", "--data", str(cifar_jpeg_dir), "--classes", "cat,dog", "--steps",
             str(steps), "--checkpoint-every", "4", "--num-workers", "2", *TINY_FLAGS,
             "--model", "ghn3", "--heads", "2", "--layers", "1"]
    straight, killed = cache / "straight.pt", cache / "killed.pt"
    assert main([*flags, "--out", str(straight)]) == 0
    ckpt = torch.load(straight, weights_only=True)
    assert ckpt["step"] == steps and len(ckpt["rng"]) == 2
    assert ckpt["rng"][0]["arch"] != ckpt["rng"][1]["arch"]  # the workers drew differently
    ghn = load_ghn(straight)
    assert isinstance(ghn, GHN3) and ghn.num_classes == 2
    assert not ray.is_initialized()  # the Ray it started for itself is gone again

    new_mlflow_store(cache / "mlflow.db")
    flags += ["--tracking-uri", "sqlite:///mlflow.db"]
    with open(cache / "killed.log", "w") as log_file:
        run = subprocess.Popen([sys.executable, "-m", "ghn", *flags, "--out", str(killed)],
                               stdout=log_file, stderr=subprocess.STDOUT,
                               start_new_session=True)  # its own group: Ray dies with it
    try:
        deadline = time.monotonic() + 300
        while not killed.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    at = torch.load(killed, weights_only=True)["step"]
    assert 0 < at < steps, f"the run was killed at step {at} of {steps}; see killed.log"

    assert main([*flags, "--out", str(killed), "--resume"]) == 0
    resumed, expected = (torch.load(p, weights_only=True) for p in (killed, straight))
    assert resumed["step"] == steps
    for k, v in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][k], v), k
    for r, e in zip(resumed["rng"], expected["rng"], strict=True):
        assert r["arch"] == e["arch"] and torch.equal(r["data"], e["data"])

    client = mlflow.MlflowClient(f"sqlite:///{cache / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ghn-train")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    (logged,) = client.search_runs([exp.experiment_id])
    assert logged.info.run_id == resumed["meta"]["mlflow_run_id"]
    assert logged.info.status == "FINISHED" and logged.data.params["num_workers"] == "2"
    assert logged.data.params["model"] == "ghn3"
    history = client.get_metric_history(logged.info.run_id, "train/loss")
    assert {m.step for m in history} == set(range(1, steps + 1))
    assert [a.path for a in client.list_artifacts(logged.info.run_id)] == ["killed.pt"]
    assert str(cache / "mlruns") in logged.info.artifact_uri  # not in a Ray worker's dir
