"""From a `Sweep` to files: parquet tables, PNG figures and report.md, optionally logged to MLflow.

Every figure in report.md is a number computed in `_summary`; the sentences are formatted from
those same numbers, so text and plots cannot disagree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

from . import _plots
from ._data import Sweep
from ._findings import findings
from ._markdown import render
from ._sentences import answers
from ._summary import asha_accounting, comparison, frame, noise_curve, spread
from ._tables import curves_table, trials_table

_logger = logging.getLogger(__name__)

ARTIFACT_DIR = "analysis"  # where the files go under the parent run's artifacts
DPI = 110


@dataclass
class Report:
    """What `build_report` made: paths on disk, the figures (for inspection), the sentences."""

    out: Path
    files: list[Path]
    figures: dict[str, Figure]
    sentences: list[str]
    findings: list[str] = field(default_factory=list)  # the Findings paragraphs, as written
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def build_report(sweep: Sweep, out: Path) -> Report:
    """Write trials.parquet, curves.parquet, the figures and report.md into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trials, curves = trials_table(sweep), curves_table(sweep)
    pq.write_table(trials, out / "trials.parquet")
    pq.write_table(curves, out / "curves.parquet")
    df, cdf = frame(trials), curves.to_pandas()
    comp, acct = comparison(df), asha_accounting(df)
    archs = sorted(df["arch"].dropna().unique())
    noise = {arch: noise_curve(df, arch) for arch in archs}
    betas = df.loc[df["beta"] > 0, "beta"]
    beta_range = (float(betas.min()), float(betas.max())) if not betas.empty else None
    figures = {
        "heatmaps.png": _plots.heatmaps(df),
        "noise_vs_beta.png": _plots.noise_figure(noise, beta_range, spread(df)),
        "learning_curves.png": _plots.learning_curves(df, cdf),
        "gains.png": _plots.gains_figure(comp),
        "asha.png": _plots.asha_figure(acct, df),
    }
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=DPI)
    sentences = answers(comp, noise, df)
    found = findings(comp, df, sweep.tags)
    text = render(sweep, df, comp=comp, noise=noise, acct=acct, sentences=sentences,
                  figures=list(figures), findings=found)
    (out / "report.md").write_text(text)
    files = [out / n for n in ("trials.parquet", "curves.parquet", *figures, "report.md")]
    _logger.info("report of %s written to %s", sweep.name, out)
    return Report(out=out, files=files, figures=figures, sentences=sentences, findings=found,
                  tables={"trials": df, "comparison": comp, "asha": acct})


def log_to_mlflow(tracking_uri: str, run_id: str, report: Report) -> str:
    """Attach the report's files to the sweep's parent run; returns the artifact path."""
    client = MlflowClient(tracking_uri)
    for path in report.files:
        client.log_artifact(run_id, str(path), artifact_path=ARTIFACT_DIR)
    return ARTIFACT_DIR
