"""Synthetic sweeps with known numbers, written as the sweep writes them (no training).

`write_mlflow` fills an MLflow store the way `sweeps.tracking` does (parent run tagged
`ghn_sweep.sweep`, one child per trial, params as strings, metrics with step = epoch, init
diagnostics at step 0); `write_ray_results` writes a Ray results directory with params.json,
result.json and results.parquet. Both take the same `TrialSpec`s.

Run as a script to regenerate the example plot under docs/:
    python tests/analysis/synthetic_sweep.py docs
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

EPOCHS = 4


@dataclass
class TrialSpec:
    """One synthetic trial. `end`: finished | stopped | diverged | failed | running."""

    trial_id: str
    arch: str
    init: str
    lr: float
    val: list[float]
    test: list[float]
    beta: float = 0.0
    orth: bool = False
    end: str = "finished"
    extra_tags: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    repeat_of: str | None = None  # a repeat: the search trial whose config it runs again
    diag: dict[str, float] | None = None  # its init diagnostics; None: INIT_DIAG

    def resolved(self) -> dict[str, object]:
        """The trial's flat config, as TrialConfig.to_flat() gives it (a subset)."""
        return {"arch": self.arch, "init": self.init, "ghn": "ghn2-imagenet", "seed": self.seed,
                "image_size": 32, "optim.lr": self.lr, "optim.epochs": EPOCHS,
                "optim.name": "sgd", "postproc.beta": self.beta, "postproc.orth": self.orth,
                "postproc.layer": 0, "data.n_shots": 100, "data.dataset": "cifar10"}

    def sampled(self) -> dict[str, object]:
        """Tune's config: sampled keys plus fixed values, with the sweep-only noise switch."""
        config = {"arch": self.arch, "optim.lr": self.lr, "init": self.init, "ghn":
                  "ghn2-imagenet", "optim.epochs": EPOCHS, "data.n_shots": 100,
                  "seed": self.seed}
        if self.repeat_of is not None:
            config["repeat.of"] = self.repeat_of
        if self.init == "ghn":
            config.update({"postproc.orth": self.orth, "search.noise": self.beta > 0})
            if self.beta > 0:
                config["postproc.beta"] = self.beta
        return config

    def epoch_metrics(self, epoch: int) -> dict[str, float]:
        i = epoch - 1
        diverged = self.end == "diverged" and epoch == len(self.val)
        return {"epoch": float(epoch), "train/loss": math.nan if diverged else 2.0 / epoch,
                "train/acc": self.val[i] + 0.1, "val/loss": 1.0 / epoch, "val/acc": self.val[i],
                "test/acc": self.test[i], "lr": self.lr * (1 - i / EPOCHS),
                "epoch_time_s": 2.0, "images_per_s": 500.0, "diverged": float(diverged)}


INIT_DIAG = {"init/mean_abs_cos": 0.05, "init/repeat_share": 0.0, "init/eff_rank_ratio": 0.9,
             "init/n_layers": 53.0}


def specs() -> list[TrialSpec]:
    """The test sweep: numbers chosen so every expected figure is easy to compute by hand.

    resnet50: random 52.0% test (r1), GHN 54.5% (g1), GHN + noise 3e-5 + orth 56.1% (p1):
    +4.1 and +2.5 points. convnext_base: random 38%, GHN 39%, GHN + pp 40%: +1.0 and +2.0.
    """
    return [
        TrialSpec("r1", "resnet50", "random", 0.01, [.30, .40, .50, .55], [.28, .38, .48, .52]),
        TrialSpec("r2", "resnet50", "random", 0.1, [.20, .25], [.19, .24], end="stopped"),
        TrialSpec("g1", "resnet50", "ghn", 0.01, [.40, .50, .58, .57], [.40, .50, .545, .55]),
        TrialSpec("p1", "resnet50", "ghn", 0.012, [.50, .60, .62, .61], [.50, .58, .561, .60],
                  beta=3e-5, orth=True),
        TrialSpec("p2", "resnet50", "ghn", 0.009, [.45, .50, .55, .56], [.44, .49, .53, .54],
                  beta=1e-4),
        TrialSpec("p3", "resnet50", "ghn", 0.3, [.10, .10], [.10, .10], beta=1e-3,
                  end="diverged"),
        TrialSpec("p4", "resnet50", "ghn", 0.05, [], [], beta=1e-5, end="failed"),
        TrialSpec("p5", "resnet50", "ghn", 0.011, [.35, .40], [.30, .38], beta=5e-6, orth=True,
                  end="stopped"),
        TrialSpec("c1", "convnext_base", "random", 0.001, [.2, .3, .35, .40],
                  [.2, .3, .33, .38]),
        TrialSpec("c2", "convnext_base", "ghn", 0.002, [.2, .3, .36, .41], [.2, .3, .35, .39]),
        TrialSpec("c3", "convnext_base", "ghn", 0.002, [.2, .3, .40, .42], [.2, .3, .38, .40],
                  beta=3e-5, orth=True),
    ]


def repeat_specs() -> list[TrialSpec]:
    """Repeats of resnet50's chosen r1, g1 and p1 with seeds 1-3 (test accuracy at the best
    validation epoch, the last, in the comments), and of no convnext_base trial.

    random: 50, 52, 54 (mean 52.0, std 2.0). GHN + pp: 56, 57, 58: paired gains +6, +5, +4,
    mean +5.0, std 1.0, 95% interval 5 ± t(0.975, 2) / sqrt(3) = 5 ± 2.48. GHN: 51, 55, 52:
    gains +1, +3, -2, mean +0.67, std 2.52, interval +0.67 ± 6.25: holds 0. Post-processing
    over GHN: +5, +2, +6, mean +4.33, std 2.08, interval 4.33 ± 5.17: holds 0.

    Init diagnostics (effective-rank ratio, mean |cos|) per seed: random 0.90, 0.91, 0.92 and
    0.05; GHN 0.40 and 0.30 (its prediction has no seed); GHN + pp 0.60, 0.62, 0.64 and 0.20,
    0.21, 0.22.
    """
    out = []
    for original, init, lr, beta, orth, tests, ranks, coss in (
            ("r1", "random", 0.01, 0.0, False, (.50, .52, .54), (.90, .91, .92), (.05,) * 3),
            ("g1", "ghn", 0.01, 0.0, False, (.51, .55, .52), (.40,) * 3, (.30,) * 3),
            ("p1", "ghn", 0.012, 3e-5, True, (.56, .57, .58), (.60, .62, .64),
             (.20, .21, .22))):
        for seed, (test, rank, cos) in enumerate(zip(tests, ranks, coss), start=1):
            out.append(TrialSpec(f"{original}s{seed}", "resnet50", init, lr,
                                 [.3, .4, .5, test + .05], [.3, .4, .5, test], beta=beta,
                                 orth=orth, seed=seed, repeat_of=original,
                                 diag={**INIT_DIAG, "init/eff_rank_ratio": rank,
                                       "init/mean_abs_cos": cos}))
    return out


def _run(client: MlflowClient, exp_id: str, parent_id: str, spec: TrialSpec) -> str:
    tags = {"mlflow.parentRunId": parent_id, "ray.trial_id": spec.trial_id,
            "ray.trial_name": f"sweep_trial_{spec.trial_id}", "arch": spec.arch,
            "init": spec.init, "ghn": "ghn2-imagenet", **spec.extra_tags}
    if spec.repeat_of is not None:
        tags["ghn_sweep.repeat_of"] = spec.repeat_of
    run_id = client.create_run(exp_id, run_name=tags["ray.trial_name"], tags=tags).info.run_id
    if spec.end == "failed":  # failed before its first report: the raw Tune config as params
        params = spec.sampled()
    else:
        params = spec.resolved()
    now = int(time.time() * 1000)
    diag = spec.diag or INIT_DIAG
    metrics = [Metric(k, v, now, 0) for k, v in diag.items()] if spec.val else []
    for epoch in range(1, len(spec.val) + 1):
        metrics += [Metric(k, v, now, epoch) for k, v in spec.epoch_metrics(epoch).items()]
    client.log_batch(run_id, metrics=metrics,
                     params=[Param(k, str(v)) for k, v in sorted(params.items())])
    status = {"finished": "FINISHED", "stopped": "KILLED", "diverged": "FINISHED",
              "failed": "FAILED", "running": "RUNNING"}[spec.end]
    end_tags = {"stopped": ("ghn_sweep.stopped_early", f"scheduler at epoch {len(spec.val)}/4"),
                "diverged": ("ghn_sweep.diverged", "true"),
                "failed": ("ghn_sweep.error_file", "/tmp/ray/error.txt")}
    if spec.end in end_tags:
        client.log_batch(run_id, tags=[RunTag(*end_tags[spec.end])])
    if status != "RUNNING":
        client.set_terminated(run_id, status=status)
    return run_id


def write_mlflow(uri: str, artifacts: Path, trials: list[TrialSpec], *, sweep: str = "sweepA",
                 experiment: str = "ghn-sweep", parent_status: str = "FINISHED",
                 parent_tags: dict[str, str] | None = None) -> str:
    """A parent run for `sweep` with one child per trial (and `parent_tags`, the class tags the
    sweep sets); returns the parent run id."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(
        experiment, artifact_location=artifacts.as_uri(),
        tags={"mlflow.experimentKind": "custom_model_development"})
    parent = client.create_run(exp_id, run_name=sweep,
                               tags={"ghn_sweep.sweep": sweep, **(parent_tags or {})})
    parent_id = parent.info.run_id
    client.log_batch(parent_id, params=[Param("sweep.max_epochs", str(EPOCHS)),
                                        Param("sweep.archs", "('resnet50', 'convnext_base')")])
    for spec in trials:
        _run(client, exp_id, parent_id, spec)
    if parent_status != "RUNNING":
        client.set_terminated(parent_id, status=parent_status)
    return parent_id


def write_ray_results(root: Path, trials: list[TrialSpec], *, ended: bool = True) -> Path:
    """`<root>/sweepA/` as Ray Tune leaves it (the files the report reads)."""
    sweep_dir = root / "sweepA"
    for n, spec in enumerate(trials):
        d = sweep_dir / f"sweep_trial_{spec.trial_id}_{n}_arch={spec.arch}"
        d.mkdir(parents=True)
        (d / "params.json").write_text(json.dumps(spec.sampled()))
        lines = []
        for epoch in range(1, len(spec.val) + 1):
            rec = {**spec.epoch_metrics(epoch), "trial_id": spec.trial_id,
                   "training_iteration": epoch, "time_total_s": 2.0 * epoch,
                   "config": spec.sampled()}
            if epoch == 1:
                rec.update(spec.diag or INIT_DIAG, trial_config=spec.resolved(),
                           trial_tags={"device": "cpu"})
            lines.append(json.dumps(rec))
        (d / "result.json").write_text("".join(line + "\n" for line in lines))
        if spec.end == "failed":
            (d / "error.txt").write_text("Failure # 1\nRuntimeError: boom\n")
    if ended:
        pq.write_table(pa.table({"trial_id": [s.trial_id for s in trials]}),
                       sweep_dir / "results.parquet")
    return sweep_dir


def example_specs(seed: int = 0, n: int = 96) -> list[TrialSpec]:
    """A bigger, TPE-like sweep for the README's example picture (a made-up response surface):
    learning rates cluster around each arch's best, as TPE's do after its first trials."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        arch = ("resnet50", "convnext_base")[i % 2]
        init = rng.choice(("random", "ghn", "ghn", "ghn"))
        best_lr = 0.01 if arch == "resnet50" else 0.001
        lr = best_lr * 10 ** (rng.gauss(0, 0.25) if i >= 16 else rng.uniform(-1, 1))
        beta = 10 ** rng.uniform(-6, -3) if init == "ghn" and rng.random() < 0.75 else 0.0
        base = 0.60 - 0.08 * math.log10(lr / best_lr) ** 2 + (0.05 if init == "ghn" else 0)
        base += 0.03 * math.exp(-math.log10(beta / 3e-5) ** 2) if beta else 0
        base -= 0.08 if arch == "convnext_base" else 0
        stop = EPOCHS if rng.random() < 0.5 else rng.choice((1, 2))
        val = [max(0.1, base - 0.1 * (EPOCHS - e) + rng.gauss(0, 0.01)) for e in range(stop)]
        out.append(TrialSpec(f"t{i:02d}", arch, init, lr, val, [v - 0.01 for v in val],
                             beta=beta, orth=beta > 0 and rng.random() < 0.5,
                             end="finished" if stop == EPOCHS else "stopped"))
    return out


if __name__ == "__main__":  # the made-up sweep's noise_vs_beta plot: DIR/noise_vs_lr.png
    import tempfile

    from analysis._ray_results import read_ray_results
    from analysis._report import build_report

    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    with tempfile.TemporaryDirectory() as tmp:
        sweep = read_ray_results(write_ray_results(Path(tmp), example_specs()))
        report = build_report(sweep, Path(tmp) / "report")
        report.figures["noise_vs_beta.png"].savefig(out / "noise_vs_lr.png", dpi=100)
    print(f"wrote {out / 'noise_vs_lr.png'}")
