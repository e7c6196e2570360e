"""What a sweep leaves when a phase ends: its results table, on disk and on the parent run, the
best trial's line, and the closing lines that say where to look next."""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient
from ray import tune

from contract import METRIC, best_of

from ._config import SweepConfig
from ._grid import grid_trials
from ._identity import read_sweep_id
from ._progress import short_config
from .tracking import find_parent_run, probe

log = logging.getLogger(__name__)

SHOWN_METRICS = ("val/acc", "test/acc", "train/loss", "diverged")  # last values in the table


def results_table(result_grid: tune.ResultGrid) -> pa.Table:
    """One row per trial: its sampled config, status and last/best metrics."""
    rows = []
    for result in result_grid:
        config = {f"config/{k}": v for k, v in (result.config or {}).items()
                  if isinstance(v, (int, float, str, bool))}
        df = result.metrics_dataframe
        best = float(df[METRIC].max()) if df is not None and METRIC in df else float("nan")
        last = result.metrics or {}
        rows.append({**config, "trial_id": last.get("trial_id", ""),
                     "error": str(result.error) if result.error else "",
                     "epochs": int(last.get("epoch", 0)), f"best_{METRIC}": best,
                     **{k: last.get(k) for k in SHOWN_METRICS}})
    return pa.Table.from_pylist(rows)


def write_outputs(cfg: SweepConfig, result_grid: tune.ResultGrid, out: Path,
                  phase: str = "search") -> None:
    """The phase's results table on disk and on the parent run; the search's best trial."""
    table = results_table(result_grid)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("results.parquet" if phase == "search" else f"{phase}.parquet")
    pq.write_table(table, path)
    log.info("\n%d trials (%s); results table: %s", len(table), phase, path)
    best_config = None
    if phase == "search":  # the best trial as the progress line and the report have it
        best = best_of(grid_trials(result_grid, cfg.max_epochs), key=lambda t: t.rank)
        if best is None:
            log.info("no trial has a finite %s yet", METRIC)
        else:
            best_config = best.config
            log.info("best %s = %.4f (epoch %d, %s) with %s", METRIC, best.best_val,
                     best.best_epoch, best.status.label, short_config(best_config))
    _log_to_parent(cfg, path, best_config)


def _log_to_parent(cfg: SweepConfig, table: Path, best_config: dict | None) -> None:
    """The results table and best config as artifacts of the sweep's parent run.

    The run is looked up in MLflow, not taken from this driver's tracking callback: after
    ``--resume``, Tune runs the callbacks it restored from the sweep's state, not new ones.
    """
    try:
        probe(cfg.tracking_uri)
        client = MlflowClient(cfg.tracking_uri)
        exp = client.get_experiment_by_name(cfg.experiment)
        parent = exp and find_parent_run(client, exp.experiment_id, cfg.sweep_name,
                                         read_sweep_id(cfg))
        if not parent:
            return
        client.log_artifact(parent.info.run_id, str(table))
        if best_config is not None:
            client.log_dict(parent.info.run_id, dict(best_config), "best_config.json")
    except Exception as e:  # noqa: BLE001 - the results are on disk either way
        log.warning("could not log the results to MLflow at %s (%s); they are in %s",
                    cfg.tracking_uri, e, table)


def parent_run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The page of the sweep's parent run in the MLflow UI. MLflow 3's UI opens an experiment on
    its GenAI overview, so the closing lines link the run itself: for a local store, on the
    address `mlflow ui` serves by default."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) \
        else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def log_closing_lines(cfg: SweepConfig, seconds: float,
                      parent: tuple[str, str] | None = None) -> None:
    """How long the sweep took, the commands that browse and report it, and the address of its
    parent run's page (``parent``: experiment id and run id, when tracking is on)."""
    log.info("sweep took %.0f s. Browse it: mlflow ui --backend-store-uri %s", seconds,
             cfg.tracking_uri)
    if parent is not None:
        log.info("The sweep's parent run: %s", parent_run_url(cfg.tracking_uri, *parent))
    log.info("Report it: python -m analysis.report --experiment %s --sweep %s --tracking-uri %s",
             shlex.quote(cfg.experiment), shlex.quote(cfg.sweep_name),
             shlex.quote(cfg.tracking_uri))


def log_resume_hint(cfg: SweepConfig, argv: list[str] | None = None) -> None:
    """The command that continues an interrupted sweep: ``argv`` (default ``sys.argv[1:]``)
    with ``--resume``."""
    args = list(sys.argv[1:] if argv is None else argv)
    again = shlex.join(["python", sys.argv[0], *args, *([] if cfg.resume else ["--resume"])])
    log.info("interrupted before all trials ended. Continue it: %s", again)
