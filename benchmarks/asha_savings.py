"""How many epochs ASHA saves, and whether it still finds the best configuration.

Claim: ASHA spends a fraction of the epochs that the same trials would spend run to the end,
and picks the same best configuration. Runs the smoke sweep with ASHA, then re-runs exactly
the configurations it sampled, each to max epochs with no scheduler, in the same process.
Prints the epochs of both and the best configuration of each, then, last,
`asha_epoch_savings=<epochs if all ran to the end / epochs ASHA spent>`.

    python benchmarks/asha_savings.py --dataset ../shared/data/cifar10-jpeg \
        --ghn ../shared/ghn2/reference/ghn2_random_imagenet_seed0.pt
"""

from __future__ import annotations

from sweeps._loopback import listen_on_loopback, start_local_ray

listen_on_loopback()  # before Ray is imported (below): its processes listen on 127.0.0.1 only

import argparse
import os
import tempfile

import ray
from ray import tune

from contract import METRIC, MODE
from sweeps._config import SweepConfig
from sweeps._trial import sweep_trial
from sweeps._tuner import build_tuner


def _replay(config: dict, sweep: SweepConfig, configs: list[dict]) -> None:
    """Trial `config["point"]` of the ASHA sweep again, with no scheduler to stop it."""
    sweep_trial(configs[config["point"]], sweep)


def _best(grid, configs: list[dict] | None = None) -> tuple[float, dict]:
    best = grid.get_best_result(metric=METRIC, mode=MODE, scope="all")
    keys = ("arch", "init", "optim.lr", "postproc.beta", "postproc.orth")
    config = configs[best.config["point"]] if configs else best.config
    value = float(best.metrics_dataframe[METRIC].max())
    return value, {k: config[k] for k in keys if k in config}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--ghn", required=True)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    start_local_ray(num_cpus=2)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SweepConfig(num_samples=args.trials, max_epochs=args.epochs, grace_period=1,
                          reduction_factor=2, dataset=args.dataset, ghn=args.ghn,
                          storage=f"{tmp}/ray", tracking_uri=f"sqlite:///{tmp}/mlflow.db")
        asha = build_tuner(cfg, []).fit()
        configs = [r.config for r in asha]
        replay = tune.with_parameters(_replay, sweep=cfg, configs=configs)
        full = tune.Tuner(
            tune.with_resources(replay, {"cpu": 1}),
            param_space={"point": tune.grid_search(list(range(len(configs))))},
            tune_config=tune.TuneConfig(reuse_actors=True),
            run_config=tune.RunConfig(name="full", storage_path=f"{tmp}/ray", verbose=0)).fit()
    ray.shutdown()
    spent = sum(len(r.metrics_dataframe) for r in asha)
    everything = sum(len(r.metrics_dataframe) for r in full)
    (asha_value, asha_best), (full_value, full_best) = _best(asha), _best(full, configs)
    print(f"epochs: asha={spent} all_to_max={everything} trials={len(configs)}")
    print(f"best with ASHA:    {METRIC}={asha_value:.3f} {asha_best}")
    print(f"best all to max:   {METRIC}={full_value:.3f} {full_best}")
    print(f"same_best_config={asha_best == full_best}")
    print(f"asha_epoch_savings={everything / spent:.2f}")


if __name__ == "__main__":
    main()
