"""Read a sweep from Ray Tune's results directory, for a sweep tracked nowhere else.

`<storage>/<sweep>/` holds one directory per trial with `params.json` (the sampled config) and
`result.json` (one JSON line per epoch; the first also carries the trial's resolved config under
`trial_config`). The sweep writes `results.parquet` when it ends, so its absence means the sweep
is still running (or was interrupted): the report is then a snapshot.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from contract import (
    CONFIG_KEY,
    EPOCH_METRICS,
    INIT_PREFIX,
    REPEAT_OF,
    SWEEP_RECORD_FILE,
    TrialStatus,
    classify,
)

from ._data import ReportError, Sweep, Trial

_logger = logging.getLogger(__name__)

# Ray names a trial's directory <trainable>_<trial id>_<n>_<params>_<date>; ids are abcde_00012,
# or 8 hex digits when a searcher (our OptunaSearch) creates the trials.
TRIAL_DIR = re.compile(r"_(?P<id>[0-9a-f]{5}_\d{5}|[0-9a-f]{8})_\d+_")


def read_ray_results(path: Path) -> Sweep:
    """The sweep whose Ray results directory is `path` (`<storage>/<sweep name>`)."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"--results {path}: no such directory")
    dirs = sorted(p.parent for p in path.glob("*/params.json"))
    if not dirs:
        nested = sorted({p.parent.parent.name for p in path.glob("*/*/params.json")})
        if nested:
            raise ReportError(f"--results {path} holds {len(nested)} sweep(s) {nested}: pass one "
                              f"of them, e.g. --results {path / nested[0]}")
        raise ReportError(f"--results {path}: no trial directories (*/params.json) yet")
    ended = (path / "results.parquet").exists()
    notes: list[str] = []
    trials = [_trial(d, notes) for d in dirs]
    for trial in trials:
        trial.status = _status(trial, path / trial.name, ended)
    if not ended:
        notes.append("Ray results without results.parquet: the sweep is running or was "
                     "interrupted; trials short of their last epoch are shown as running.")
    return Sweep(name=path.name, source=f"Ray results {path}", in_progress=not ended,
                 trials=trials, notes=notes, tags=_record_tags(path, notes))


def _record_tags(path: Path, notes: list[str]) -> dict[str, str]:
    """The parent run's class tags as the sweep's record keeps them; none for a sweep started
    before the record held them."""
    file = path / SWEEP_RECORD_FILE
    if not file.is_file():
        return {}
    try:
        tags = json.loads(file.read_text()).get("tags") or {}
    except (json.JSONDecodeError, AttributeError):
        notes.append(f"{file} is not a JSON object; the sweep's class record is a gap.")
        return {}
    return {str(k): str(v) for k, v in tags.items()}


def _lines(file: Path, notes: list[str]) -> list[dict[str, Any]]:
    """result.json's records; a half-written last line (a live sweep) is skipped."""
    out = []
    if not file.exists():
        return out
    for i, line in enumerate(file.read_text().splitlines()):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            notes.append(f"{file}: line {i + 1} is not JSON (still being written?); skipped.")
    return out


def _trial(trial_dir: Path, notes: list[str]) -> Trial:
    try:
        params = json.loads((trial_dir / "params.json").read_text())
    except json.JSONDecodeError:
        notes.append(f"{trial_dir / 'params.json'} is not JSON; its config is a gap.")
        params = {}
    records = _lines(trial_dir / "result.json", notes)
    resolved = next((r[CONFIG_KEY] for r in records if isinstance(r.get(CONFIG_KEY), dict)), {})
    config = {**params, **resolved}
    history: dict[str, dict[int, float]] = {}
    init: dict[str, float] = {}
    for rec in records:  # a retried trial repeats epochs: the last report of an epoch wins
        epoch = int(rec.get("epoch", rec.get("training_iteration", 0)))
        for key, value in rec.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if key in EPOCH_METRICS and epoch >= 1:
                history.setdefault(key, {})[epoch] = float(value)
            elif key.startswith(INIT_PREFIX):
                init[key] = float(value)
    last = records[-1] if records else {}
    return Trial(trial_id=str(last.get("trial_id") or trial_id_of(trial_dir.name)),
                 name=trial_dir.name,
                 status=TrialStatus.RUNNING, config=config, history=history, init=init,
                 wall_time_s=last.get("time_total_s"),
                 repeat_of=config.get(REPEAT_OF))


def trial_id_of(dirname: str) -> str:
    """The trial id in Ray's directory name (for a trial that never reported); else the name."""
    match = TRIAL_DIR.search(dirname)
    return match["id"] if match else dirname


def _status(trial: Trial, trial_dir: Path, ended: bool) -> TrialStatus:
    """``ended``: the sweep wrote its results table, so a trial short of its epochs was stopped."""
    planned = trial.config.get("optim.epochs")
    return classify(errored=(trial_dir / "error.txt").exists(),
                    diverged=any(v > 0 for v in trial.history.get("diverged", {}).values()),
                    epochs_run=max((max(h) for h in trial.history.values() if h), default=0),
                    epochs_planned=None if planned is None else int(planned),
                    ended=ended, live=True)
