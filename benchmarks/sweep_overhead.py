"""What the sweep machinery costs on top of the trials themselves.

Claim: a sweep of 8 trials x 3 epochs on CPU (the smoke preset's trials: resnet18, 100-shot
CIFAR-10) spends <= 10% of its wall time outside its trials. Trials run one at a time (each gets
both cores), so the sweep's wall time (Tuner.fit, after Ray has started) is comparable with the
sum of the trials' own time: the time spent in the trial's code (data and model set-up, training,
evaluation, writing its checkpoint), measured inside the trial between its reports.
Overhead = wall / own - 1: scheduling, Optuna, checkpoint syncing, result logging, MLflow. Ray's
`time_total_s` also counts Ray's work in the trial's process (copying each checkpoint into the
sweep's storage); the overhead against it is printed apart, as `overhead_vs_ray_time`. As in the
sweep's command, the data is decoded and cached first and MLflow's store is created while Ray
starts; that start-up, once per session, is printed apart. The overhead is split into the one-off
start-up (Tuner.fit until the first trial's code ran: Optuna set-up, the worker process importing
ray.tune, torch and torchvision) and the rest, per trial.

A second baseline, `overhead_vs_bare_run`: after each sweep the same trial configs run back to
back in a fresh Python process (`trainable.train`, checkpoints to local disk at the same epochs),
the loop a user would otherwise write; it pays the torch and torchvision import once, and shows
whether the trial's code runs slower inside Ray. It runs minutes after the sweep, so on a machine
whose speed drifts it is the noisier of the two.

The sweep runs `--repeats` times in one Ray session, each a new sweep with a new worker process;
prints each, then the medians, and, last, `sweep_overhead=<median fraction>`.

    python benchmarks/sweep_overhead.py --dataset ../shared/data/cifar10-jpeg \
        --ghn ../shared/ghn2/reference/ghn2_random_imagenet_seed0.pt
"""

from __future__ import annotations

from sweeps._loopback import listen_on_loopback, start_local_ray

listen_on_loopback()  # before Ray is imported (below): its processes listen on 127.0.0.1 only

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from contract import METRIC
from sweeps._config import SweepConfig
from sweeps._preflight import prepare_inputs
from sweeps._progress import ProgressCallback
from sweeps._space import trial_config
from sweeps._trial import sweep_trial
from sweeps._tuner import build_tuner
from sweeps.tracking import MlflowTrackingCallback

OWN_TIME = "own_time_s"
REPO = Path(__file__).resolve().parents[1]

# The baseline: the same trials, one after the other, in one plain Python process.
BARE_TRIALS = """
import json, sys
from trainable import TrialConfig, train
for i, flat in enumerate(json.load(open(sys.argv[1]))):
    train(TrialConfig.from_flat(flat), checkpoint_dir=f"{sys.argv[2]}/{i}")
"""


def timed_trial(config: dict[str, Any], sweep: SweepConfig) -> None:
    """`sweep_trial`, each of whose reports carries the time the trial's code spent since the
    previous report returned (so not Ray's checkpoint upload, nor the wait for the driver)."""
    ray_report = tune.report
    last = time.perf_counter()

    def report(metrics: dict[str, Any], **kwargs: Any) -> None:
        nonlocal last
        metrics[OWN_TIME] = time.perf_counter() - last
        ray_report(metrics, **kwargs)
        last = time.perf_counter()

    tune.report = report  # trainable._ray calls it as `tune.report`, looked up at each call
    try:
        sweep_trial(config, sweep)
    finally:
        tune.report = ray_report


class FirstResult(tune.Callback):
    """When the driver saw the first result, less that result's own time: when the first trial's
    code started."""

    def __init__(self) -> None:
        self.first_trial_start: float | None = None

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if self.first_trial_start is None:
            self.first_trial_start = time.perf_counter() - result[OWN_TIME]


def run_bare(trials: list[dict[str, Any]], workdir: str) -> float:
    """Wall time of ``trials`` (flat TrialConfigs) run bare in a fresh Python process."""
    Path(workdir).mkdir()
    configs = f"{workdir}/trials.json"
    Path(configs).write_text(json.dumps(trials))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", BARE_TRIALS, configs, f"{workdir}/checkpoints"],
                   cwd=REPO, check=True)
    return time.perf_counter() - start


def run_sweep(cfg: SweepConfig, tracking: MlflowTrackingCallback,
              workdir: str) -> dict[str, float]:
    """One sweep, then its trials bare; their figures."""
    first = FirstResult()
    callbacks = [ProgressCallback(METRIC, cfg.max_epochs, tracking), tracking, first]
    start = time.perf_counter()
    grid = build_tuner(cfg, callbacks, trial_fn=timed_trial).fit()
    wall = time.perf_counter() - start
    frames = [r.metrics_dataframe for r in grid]
    own = sum(float(df[OWN_TIME].sum()) for df in frames)
    ray_time = sum(float(df["time_this_iter_s"].sum()) for df in frames)
    startup = first.first_trial_start - start
    bare = run_bare([trial_config(r.config, cfg).to_flat() for r in grid], workdir)
    return {"sweep_wall_s": wall, "bare_wall_s": bare, "trials_own_s": own,
            "trials_ray_s": ray_time, "epochs": sum(len(df) for df in frames),
            "startup_s": startup, "per_trial_overhead_s": (wall - own - startup) / len(grid),
            "overhead_after_startup": (wall - startup) / own - 1,
            "overhead_vs_ray_time": wall / ray_time - 1,
            "overhead_vs_bare_run": wall / bare - 1,
            "sweep_overhead": wall / own - 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--ghn", required=True)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-shots", type=int, default=SweepConfig.n_shots,
                        help="training images per class (default: the smoke preset's)")
    parser.add_argument("--checkpoint-every", type=int, default=SweepConfig.checkpoint_every,
                        help="epochs between a trial's checkpoints (default: the smoke preset's)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # as the sweep's command
    # The figure is a ratio: a faster CPU shortens the trials more than Ray's fixed costs.
    print(f"cpu={torch.backends.cpu.get_cpu_capability()} cores={os.cpu_count()}")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        # Two CPUs a trial on two cores: one runs at a time; max_concurrent as the preset's, so
        # TPE suggests the next trial while one runs.
        configs = [SweepConfig(num_samples=args.trials, max_epochs=args.epochs,
                               grace_period=args.epochs, n_shots=args.n_shots,
                               checkpoint_every=args.checkpoint_every,
                               dataset=args.dataset, ghn=args.ghn, cpus_per_trial=2,
                               max_concurrent=2, storage=f"{tmp}/ray", name=f"bench-{i}",
                               tracking_uri=f"sqlite:///{tmp}/mlflow.db")
                   for i in range(args.repeats)]
        for i, cfg in enumerate(configs):
            tracking = MlflowTrackingCallback(tracking_uri=cfg.tracking_uri, experiment="bench",
                                              sweep=cfg.sweep_name)
            if i == 0:  # as the sweep's command does: data decoded and cached ahead of the
                prepare_inputs(cfg)  # trials, MLflow's store created while Ray starts
                start = time.perf_counter()
                tracking.connect()
                start_local_ray(num_cpus=2)
                print(f"ray_start_s={time.perf_counter() - start:.1f}")
            else:
                tracking.connect()
                tracking.flush()
            runs.append(run_sweep(cfg, tracking, workdir=f"{tmp}/bare-{i}"))
            print(f"sweep {i + 1}/{args.repeats}: "
                  + " ".join(f"{k}={v:.3g}" for k, v in runs[-1].items()), flush=True)
        ray.shutdown()
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"medians of {len(runs)} sweeps of {args.trials} trials x {args.epochs} epochs: "
          + " ".join(f"{k}={v:.3g}" for k, v in median.items() if k != "sweep_overhead"))
    print(f"sweep_overhead={median['sweep_overhead']:.3f}")


if __name__ == "__main__":
    main()
