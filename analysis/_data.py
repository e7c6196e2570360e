"""What the report reads, whatever the source: one `Sweep` holding its `Trial`s.

The MLflow reader (`_mlflow.py`) and the Ray results reader (`_ray_results.py`) both fill these
classes, so tables, plots and the report never know where the numbers came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contract import TrialStatus


class ReportError(ValueError):
    """Input the report cannot work from (no such sweep, an empty directory); says what to do."""


@dataclass
class Trial:
    """One trial: its flat config (dotted keys), how it ended and its metric histories."""

    trial_id: str
    name: str
    status: TrialStatus
    config: dict[str, object]
    history: dict[str, dict[int, float]] = field(default_factory=dict)  # metric -> epoch -> value
    init: dict[str, float] = field(default_factory=dict)  # init/... diagnostics
    run_id: str | None = None
    wall_time_s: float | None = None
    repeat_of: str | None = None  # a repeat (a further seed): the search trial it repeats
    provenance: dict[str, str] = field(default_factory=dict)  # code.*, version.*, device.* tags


@dataclass
class Sweep:
    """A sweep as read from its source; `in_progress` makes the report a snapshot."""

    name: str
    source: str
    in_progress: bool
    trials: list[Trial]
    params: dict[str, str] = field(default_factory=dict)  # the parent run's sweep.* params
    parent_run_id: str | None = None
    notes: list[str] = field(default_factory=list)  # data problems met while reading
    provenance: dict[str, str] = field(default_factory=dict)  # the driver's, from the parent run
    # The parent run's tags (from Ray results: those the sweep's record keeps): the class tags
    # of `contract` say which classes the trials fine-tuned on and which the GHN saw.
    tags: dict[str, str] = field(default_factory=dict)
