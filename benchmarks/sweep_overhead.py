"""What the sweep machinery costs on top of the trials themselves.

Claim: a sweep of 8 trials x 3 epochs on CPU (the smoke preset's trials: resnet18, 100-shot
CIFAR-10) spends <= 10% of its wall time outside its trials. Trials run one at a time (each gets
both cores), so the sweep's wall time (Tuner.fit, after Ray has started) is comparable with the
sum of the trials' own time (Ray's `time_total_s`, which includes each trial's data and model
setup). Overhead = wall / sum - 1: scheduling, Optuna, checkpoint syncing, MLflow logging. As in
the sweep's command, MLflow's store is created while Ray starts; that start-up, once per
session, is printed apart. The overhead is split into the one-off start-up (Tuner.fit until the
first trial's code runs: Optuna set-up, the first worker process importing ray.tune, torch and
torchvision) and the rest, per trial.
Prints, last, `sweep_overhead=<fraction>`.

    python benchmarks/sweep_overhead.py --dataset ../shared/data/cifar10-jpeg \
        --ghn ../shared/ghn2/reference/ghn2_random_imagenet_seed0.pt
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import ray
from ray import tune

from sweeps._config import SweepConfig
from sweeps._progress import ProgressCallback
from sweeps._run import METRIC, build_tuner
from sweeps.tracking import MlflowTrackingCallback


class FirstResult(tune.Callback):
    """When the driver saw the first result, and that result's own time (the trial's set-up and
    first epoch): their difference is when the first trial's code started."""

    def __init__(self) -> None:
        self.first_trial_start: float | None = None

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if self.first_trial_start is None:
            self.first_trial_start = time.perf_counter() - result["time_this_iter_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--ghn", required=True)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-shots", type=int, default=SweepConfig.n_shots,
                        help="training images per class (default: the smoke preset's)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SweepConfig(num_samples=args.trials, max_epochs=args.epochs,
                          grace_period=args.epochs, n_shots=args.n_shots, dataset=args.dataset,
                          ghn=args.ghn, cpus_per_trial=2, max_concurrent=1,
                          storage=f"{tmp}/ray", tracking_uri=f"sqlite:///{tmp}/mlflow.db")
        # As the sweep's command does: MLflow's store is created while Ray starts.
        tracking = MlflowTrackingCallback(tracking_uri=cfg.tracking_uri, experiment="bench",
                                          sweep=cfg.sweep_name)
        start = time.perf_counter()
        tracking.connect()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - start
        first = FirstResult()
        callbacks = [tracking, ProgressCallback(METRIC, cfg.max_epochs, tracking), first]
        start = time.perf_counter()
        grid = build_tuner(cfg, callbacks).fit()
        wall = time.perf_counter() - start
        ray.shutdown()
    frames = [r.metrics_dataframe for r in grid]
    trials = sum(float(df["time_this_iter_s"].sum()) for df in frames)
    epochs = sum(len(df) for df in frames)
    startup = first.first_trial_start - start
    per_trial = (wall - trials - startup) / len(grid)
    print(f"ray_start_s={ray_start:.1f} sweep_wall_s={wall:.1f} trials_sum_s={trials:.1f} "
          f"trials={len(grid)} epochs={epochs:.0f}")
    print(f"startup_s={startup:.1f} per_trial_overhead_s={per_trial:.2f} "
          f"overhead_after_startup={(wall - startup) / trials - 1:.3f}")
    print(f"sweep_overhead={wall / trials - 1:.3f}")


if __name__ == "__main__":
    main()
