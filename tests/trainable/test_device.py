"""A trial meant for CUDA trains on CUDA or fails saying why; it never falls back to the CPU."""

import pytest
import torch

from trainable._loop import resolve_device


def test_cuda_without_working_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"'cuda' was asked for, but CUDA does not work") as e:
        resolve_device("cuda")
    assert "--gpus-per-trial 0" in str(e.value)  # says how to fix it
    assert resolve_device("auto") == torch.device("cpu")  # auto may still choose the CPU


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a node without working CUDA")
@pytest.mark.slow
def test_trial_given_a_gpu_by_ray_fails_without_cuda(tmp_path, cifar_jpeg_dir, monkeypatch):
    """Ray believes the node has a GPU (as on a node whose driver broke): the trial, device
    'auto' as a sweep with --gpus-per-trial > 0 sends it, must fail, not train on the CPU."""
    import ray
    from ray import tune

    import trainable

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=1, num_gpus=1, include_dashboard=False,
             log_to_driver=False)
    try:
        config = {"arch": "resnet18", "small_stem": False, "init": "random", "device": "auto",
                  "data.dataset": str(cifar_jpeg_dir), "data.n_shots": 2,
                  "data.val_per_class": 2, "data.test_per_class": 2, "optim.epochs": 1}
        (result,) = tune.Tuner(
            tune.with_resources(trainable.run_trial, {"cpu": 1, "gpu": 1}), param_space=config,
            run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0)).fit()
    finally:
        ray.shutdown()
    assert "'cuda' was asked for, but CUDA does not work" in str(result.error)
    assert (result.metrics or {}).get("epoch") is None  # not one epoch ran on the CPU
