"""What the sweep machinery costs on top of the trials themselves.

Claim: a sweep of 8 trials x 3 epochs on CPU (the smoke preset's trials: resnet18, 100-shot
CIFAR-10) spends <= 10% of its wall time outside its trials. Trials run one at a time (each gets
both cores), so the sweep's wall time (Tuner.fit, after Ray has started) is comparable with the
sum of the trials' own time: the time spent in the trial's code (data and model set-up, training,
evaluation, writing its checkpoint), measured inside the trial between its reports.
Overhead = wall / own - 1: scheduling, Optuna, checkpoint syncing, result logging, MLflow. Ray's
`time_total_s` also counts Ray's work in the trial's process (putting each checkpoint into the
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

The overhead is broken down (medians, in seconds and as a share of the trials' own time), from the
driver's and the trials' clocks (one machine): ``startup_s`` (Tuner.fit until the first trial's
function runs: Tune's and Optuna's set-up, the first suggestion, the worker process and its imports
-- those, ``worker_imports_s``, timed apart in a fresh process), ``between_trials_s`` (a trial's
end until the next one's function runs, in the same worker: reuse_actors), ``in_trial_ray_s`` (in a
trial, outside its code: putting each checkpoint into the sweep's storage, a hard link on local
storage, handing each result to the driver and waiting for it), ``tail_s`` (the last trial's end
until Tuner.fit returns: Tune's last snapshot, the MLflow writes drained), and ``driver_end_s``
(after Tuner.fit, as `sweeps._run`: the results table and its MLflow artifacts, the best trial, the
repeats' choice). The parts in Tuner.fit add up to its wall time less the trials' own. Inside the
trials' own time it also shows the ``torch.save`` of the checkpoints and the time to each trial's
first report; alongside, the MLflow writes, which the writer thread makes while trials run.

The sweep runs `--repeats` times in one Ray session, each a new sweep with a new worker process;
prints each, then the medians and the breakdown, and, last, `sweep_overhead=<median fraction>`.

    python benchmarks/sweep_overhead.py --dataset ../shared/data/cifar10-jpeg \
        --ghn ../shared/ghn2/reference/ghn2_random_imagenet_seed0.pt
"""

from __future__ import annotations

from sweeps._loopback import listen_on_loopback, start_local_ray

listen_on_loopback()  # before Ray is imported (below): its processes listen on 127.0.0.1 only

import argparse
import dataclasses
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
from sweeps._grid import grid_trials
from sweeps._identity import write_sweep_id
from sweeps._outputs import write_outputs
from sweeps._preflight import prepare_inputs
from sweeps._progress import ProgressCallback
from sweeps._repeats import repeat_configs
from sweeps._space import trial_config
from sweeps._trial import sweep_trial
from sweeps._tuner import build_tuner
from sweeps.tracking import MlflowTrackingCallback

OWN_TIME = "own_time_s"
SAVE_TIME = "checkpoint_save_s"
ENTERED = "trial_entered"
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
    previous report returned (so not Ray's checkpoint upload, nor the wait for the driver), and
    of that the time in ``torch.save`` (the checkpoint); the first also when this function was
    entered (wall clock: the driver's, on one machine)."""
    import torch

    entered = time.time()
    ray_report, torch_save = tune.report, torch.save
    last, saving = time.perf_counter(), [0.0]
    first = {ENTERED: entered}

    def report(metrics: dict[str, Any], **kwargs: Any) -> None:
        nonlocal last, first
        metrics.update({OWN_TIME: time.perf_counter() - last, SAVE_TIME: saving[0], **first})
        first, saving[0] = {}, 0.0
        ray_report(metrics, **kwargs)
        last = time.perf_counter()

    def save(*args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        torch_save(*args, **kwargs)
        saving[0] += time.perf_counter() - start

    # trainable._ray calls them as `tune.report` and `torch.save`, looked up at each call
    tune.report, torch.save = report, save
    try:
        sweep_trial(config, sweep)
    finally:
        tune.report, torch.save = ray_report, torch_save


class Timeline(tune.Callback):
    """When the driver started and ended each trial, and when its function was entered in its
    worker (time.time())."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.first: dict[str, dict[str, float]] = {}

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started[trial.trial_id] = time.time()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if ENTERED in result:
            self.first[trial.trial_id] = {ENTERED: result[ENTERED]}

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.ended[trial.trial_id] = time.time()

    on_trial_error = on_trial_complete

    def breakdown(self, fit_start: float, fit_end: float, own: dict[str, float]) -> dict:
        """The sweep's wall time (one trial at a time) less the trials' own, split where it
        went, in seconds. Tune calls on_trial_start once the trial's actor is up, so a trial's
        start is taken from its worker: when its function was entered."""
        order = sorted(self.started, key=self.started.get)
        entered = [self.first[t][ENTERED] for t in order]
        ended = [self.ended[t] for t in order]
        return {"startup_s": entered[0] - fit_start,
                "between_trials_s": sum(e - x for e, x in zip(entered[1:], ended[:-1])),
                "in_trial_ray_s": sum(x - e - own[t] for t, e, x in zip(order, entered, ended)),
                "tail_s": fit_end - ended[-1]}


def import_time() -> float:
    """Seconds a fresh Python process takes to import what a trial's worker imports to run
    the trial function (Ray Tune, then sweeps._trial: torch, torchvision, trainable)."""
    code = ("import time; t = time.perf_counter(); import ray.tune, sweeps._trial; "
            "print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, text=True,
                         capture_output=True).stdout
    return float(out.split()[-1])


def run_bare(trials: list[dict[str, Any]], workdir: str) -> float:
    """Wall time of ``trials`` (flat TrialConfigs) run bare in a fresh Python process."""
    Path(workdir).mkdir()
    configs = f"{workdir}/trials.json"
    Path(configs).write_text(json.dumps(trials))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", BARE_TRIALS, configs, f"{workdir}/checkpoints"],
                   cwd=REPO, check=True)
    return time.perf_counter() - start


def run_sweep(cfg: SweepConfig, tracking: MlflowTrackingCallback, workdir: str,
              bare: bool = True) -> dict[str, float]:
    """One sweep, then (``bare``) its trials bare; their figures."""
    timeline = Timeline()
    write_sweep_id(cfg, tracking.sweep_id)  # as preflight: write_outputs finds the parent by it
    callbacks = [ProgressCallback(METRIC, cfg.max_epochs, tracking), tracking, timeline]
    start = time.time()
    grid = build_tuner(cfg, callbacks, trial_fn=timed_trial).fit()
    fit_end = time.time()
    wall = fit_end - start
    # The driver's end, as sweeps._run's: the results table, the best trial, the repeats' plan.
    write_outputs(cfg, grid, Path(f"{workdir}-outputs"))
    repeat_configs(dataclasses.replace(cfg, repeats=2), grid_trials(grid, cfg.max_epochs))
    end = time.time() - fit_end
    frames = {r.metrics["trial_id"]: r.metrics_dataframe for r in grid}
    own = {t: float(df[OWN_TIME].sum()) for t, df in frames.items()}
    total_own = sum(own.values())
    ray_time = sum(float(df["time_this_iter_s"].sum()) for df in frames.values())
    parts = timeline.breakdown(start, fit_end, own)
    startup = parts["startup_s"]
    writes = tracking.write_timings()
    bare = run_bare([trial_config(r.config, cfg).to_flat() for r in grid], workdir) if bare \
        else float("nan")
    return {"sweep_wall_s": wall, "bare_wall_s": bare, "trials_own_s": total_own,
            "trials_ray_s": ray_time, "epochs": sum(len(df) for df in frames.values()),
            **parts, "worker_imports_s": import_time(),
            "checkpoint_save_s": sum(float(df[SAVE_TIME].sum()) for df in frames.values()),
            "first_report_s": sum(float(df[OWN_TIME].iloc[0]) for df in frames.values()),
            "mlflow_writes": writes["writes"],
            "mlflow_write_s": writes.get("total_s", 0.0),
            "driver_end_s": end,
            "per_trial_overhead_s": (wall - total_own - startup) / len(grid),
            "overhead_after_startup": (wall - startup) / total_own - 1,
            "overhead_vs_ray_time": wall / ray_time - 1,
            "overhead_vs_bare_run": wall / bare - 1,
            "overhead_with_driver_end": (wall + end) / total_own - 1,
            "sweep_overhead": wall / total_own - 1}


BREAKDOWN = ("startup_s", "between_trials_s", "in_trial_ray_s", "tail_s", "driver_end_s")


def print_breakdown(median: dict[str, float]) -> None:
    """Where the overhead seconds went (medians), each also as a share of the trials' own
    time; the parts before driver_end_s add up to Tuner.fit's wall time less the trials' own."""
    own = median["trials_own_s"]
    print(f"overhead breakdown (median seconds, and / trials' own {own:.1f} s):")
    for key in BREAKDOWN:
        print(f"  {key:<18} {median[key]:7.2f}  {median[key] / own:6.3f}")
    print(f"  of startup_s: a worker's imports, timed apart, {median['worker_imports_s']:.2f} s")
    print(f"  inside the trials' own time: checkpoint_save_s "
          f"{median['checkpoint_save_s']:.2f}, first_report_s {median['first_report_s']:.2f}")
    print(f"  alongside (the writer thread): {median['mlflow_writes']:.0f} MLflow writes, "
          f"~{median['mlflow_write_s']:.2f} s")


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
    parser.add_argument("--no-bare", action="store_true",
                        help="skip the bare-loop baseline (overhead_vs_bare_run), half the time")
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
                               experiment="bench",
                               tracking_uri=f"sqlite:///{tmp}/mlflow.db")
                   for i in range(args.repeats)]
        for i, cfg in enumerate(configs):
            tracking = MlflowTrackingCallback(tracking_uri=cfg.tracking_uri,
                                              experiment=cfg.experiment, sweep=cfg.sweep_name)
            if i == 0:  # as the sweep's command does: data decoded and cached ahead of the
                prepare_inputs(cfg)  # trials, MLflow's store created while Ray starts
                start = time.perf_counter()
                tracking.connect()
                start_local_ray(num_cpus=2)
                print(f"ray_start_s={time.perf_counter() - start:.1f}")
            else:
                tracking.connect()
                tracking.flush()
            runs.append(run_sweep(cfg, tracking, workdir=f"{tmp}/bare-{i}",
                                  bare=not args.no_bare))
            print(f"sweep {i + 1}/{args.repeats}: "
                  + " ".join(f"{k}={v:.3g}" for k, v in runs[-1].items()), flush=True)
        ray.shutdown()
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"medians of {len(runs)} sweeps of {args.trials} trials x {args.epochs} epochs: "
          + " ".join(f"{k}={v:.3g}" for k, v in median.items() if k != "sweep_overhead"))
    print_breakdown(median)
    print(f"sweep_overhead={median['sweep_overhead']:.3f}")


if __name__ == "__main__":
    main()
