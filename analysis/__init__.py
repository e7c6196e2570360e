"""Answers from a sweep: tables, figures and report.md from MLflow or Ray Tune's results.

    from analysis import read_mlflow, build_report
    report = build_report(read_mlflow(tracking_uri="sqlite:///mlflow.db",
                                      experiment="ghn-sweep"), "reports/smoke")

The command line is ``python analysis/report.py`` (see its ``--help``).
"""

from analysis._data import ReportError, Sweep, Trial
from analysis._mlflow import read_mlflow
from analysis._ray_results import read_ray_results
from analysis._report import Report, build_report, log_to_mlflow
from analysis._tables import CURVES_SCHEMA, TRIALS_SCHEMA, curves_table, trials_table

__all__ = [
    "CURVES_SCHEMA",
    "TRIALS_SCHEMA",
    "Report",
    "ReportError",
    "Sweep",
    "Trial",
    "build_report",
    "curves_table",
    "log_to_mlflow",
    "read_mlflow",
    "read_ray_results",
    "trials_table",
]
