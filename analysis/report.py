"""Report on a sweep: tables (parquet), figures (PNG) and report.md, also on the parent run.

    python analysis/report.py --experiment ghn-sweep --out reports/smoke
    python analysis/report.py --parent-run <run id> --tracking-uri http://head:5000
    python analysis/report.py --results ray_results/noise_vs_lr-smoke --out reports/smoke

Works on a finished sweep and on one still running (the report then says "snapshot").
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from analysis._data import ReportError
from analysis._mlflow import read_mlflow
from analysis._ray_results import read_ray_results
from analysis._report import build_report, log_to_mlflow


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python analysis/report.py",
        description="Summarise a GHN sweep: trials.parquet, curves.parquet, heatmaps, accuracy "
                    "vs noise, learning curves, gains over random init, ASHA accounting, "
                    "report.md; logged as artifacts of the sweep's MLflow parent run.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--experiment", help="MLflow experiment (its latest sweep, or --sweep)")
    source.add_argument("--parent-run", help="MLflow run id of the sweep's parent run")
    source.add_argument("--results", type=Path,
                        help="Ray results directory of one sweep (<storage>/<sweep name>), "
                             "instead of MLflow")
    parser.add_argument("--sweep", help="with --experiment: the sweep's name or id (parent run "
                                        "tag ghn_sweep.sweep or ghn_sweep.sweep_id)")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db",
                        help="MLflow tracking store, as given to the sweep (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="output directory (default: reports/<sweep>)")
    parser.add_argument("--no-log", action="store_true",
                        help="do not log the files as artifacts of the parent run")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.results is not None:
            sweep = read_ray_results(args.results)
        else:
            sweep = read_mlflow(tracking_uri=args.tracking_uri, experiment=args.experiment,
                                parent_run_id=args.parent_run, sweep=args.sweep)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = build_report(sweep, args.out or Path("reports") / sweep.name)
    state = "snapshot (running or interrupted)" if sweep.in_progress else "finished"
    print(f"sweep {sweep.name}: {len(sweep.trials)} trials, {state}")
    for sentence in report.sentences:
        print(f"  {sentence}")
    for note in sweep.notes:
        print(f"  note: {note}")
    print(f"report: {report.out / 'report.md'}")
    if sweep.parent_run_id and not args.no_log:
        where = log_to_mlflow(args.tracking_uri, sweep.parent_run_id, report)
        print(f"logged to MLflow run {sweep.parent_run_id}, artifacts/{where}/ "
              f"(mlflow ui --backend-store-uri {args.tracking_uri})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
