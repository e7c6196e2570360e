"""Post-processing of predicted parameters (Knyazev 2022) and diversity diagnostics."""

from postproc._apply import LayerReport, apply_postproc, corr_std, list_layers
from postproc._config import PostProcConfig
from postproc._diversity import LayerDiversity, diversity, diversity_summary

__all__ = [
    "LayerDiversity",
    "LayerReport",
    "PostProcConfig",
    "apply_postproc",
    "corr_std",
    "diversity",
    "diversity_summary",
    "list_layers",
]
