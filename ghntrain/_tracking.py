"""MLflow for GHN training and evaluation: one run per training run, continued on resume (its
id travels in the checkpoint), and one run per evaluation.

MLflow is imported inside the functions: a run without ``--tracking-uri`` never loads it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from contract import EXPERIMENT_KIND
from ghntrain._evaluate import ArchResult
from ghntrain._train import Trainer

OnLog = Callable[[int, dict[str, float]], None]
OnCheckpoint = Callable[[Path], None]


def absolute_sqlite(uri: str | None) -> str | None:
    """A relative ``sqlite:///file`` made absolute: Ray Train workers run in their own dirs."""
    if uri and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return uri


def use_experiment(uri: str, name: str) -> None:
    """Point MLflow at ``uri`` and experiment ``name``, created if new: where it is created
    fixes its artifact root (``./mlruns`` of the current directory with a sqlite store)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(name)
    mlflow.set_experiment_tag(*EXPERIMENT_KIND)


def training_callbacks(trainer: Trainer, uri: str | None, experiment: str, *, run_name: str,
                       data: str, init: str | None
                       ) -> tuple[OnLog | None, OnCheckpoint | None, Callable[[], None]]:
    """``(on_log, on_checkpoint, finish)`` for ``train``: MLflow logging when ``uri`` is
    given, nothing otherwise. The run continues on resume (its id is in the checkpoint)."""
    if not uri:
        return None, None, lambda: None
    import mlflow

    use_experiment(uri, experiment)
    run_id = trainer.meta.get("mlflow_run_id")
    run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name)
    trainer.meta["mlflow_run_id"] = run.info.run_id
    if trainer.step_count == 0:
        mlflow.log_params({**dataclasses.asdict(trainer.cfg), "data": data,
                           "classes": ",".join(trainer.images.classes), "init": init,
                           "num_workers": trainer.world})

    def on_log(step: int, metrics: dict[str, float]) -> None:
        mlflow.log_metrics({f"train/{k}": v for k, v in metrics.items()}, step=step)

    def on_checkpoint(path: Path) -> None:
        mlflow.log_artifact(str(path))

    return on_log, on_checkpoint, mlflow.end_run


def log_evaluation(uri: str, experiment: str, *, checkpoint: str, archs: str,
                   results: list[ArchResult], num_classes: int, table: str) -> None:
    """One MLflow run of an evaluation: its mean accuracies, chance, and the table."""
    import mlflow

    use_experiment(uri, experiment)
    with mlflow.start_run(run_name=f"evaluate {Path(checkpoint).stem}"):
        mlflow.log_params({"checkpoint": checkpoint, "archs": archs})
        n = len(results)
        mlflow.log_metrics({
            "eval/mean_acc": sum(r.predicted for r in results) / n,
            "eval/mean_acc_random_init": sum(r.random_init for r in results) / n,
            "eval/chance": 1 / num_classes})
        mlflow.log_text(table, "evaluate.txt")
