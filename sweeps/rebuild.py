"""Rebuild or complete a sweep's MLflow record from Ray Tune's results on disk.

    python -m sweeps.rebuild ./ray_results/noise_vs_lr-smoke --tracking-uri http://head:5000

For a record that an outage, a lost journal or a wiped tracking store left short. Ray's results
(``<storage>/<name>/``: one directory per trial with ``params.json`` and ``result.json``, and the
sweep's ``ghn_sweep.json``) hold every epoch each trial reported; each is played through the
sweep's own tracking callback, which finds a trial's run by its ``ray.trial_id`` tag and logs only
the epochs the run lacks. So running it twice, or on a complete record, changes nothing. The
repeats (``<name>-repeats/``), when there, are rebuilt after the search. Local storage only.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ._identity import ID_FILE
from ._patient import TrialRecord
from ._reach import tracking_problem
from .tracking import MlflowTrackingCallback, sweep_interrupted

log = logging.getLogger(__name__)


def trial_records(sweep_dir: Path) -> list[tuple[TrialRecord, list[dict[str, Any]]]]:
    """Each trial of Ray's results at ``sweep_dir``, with its reports in order."""
    out = []
    for params in sorted(sweep_dir.glob("*/params.json")):
        trial_dir = params.parent
        results = [json.loads(line) for line in _lines(trial_dir / "result.json")]
        if not results:
            continue  # never reported: nothing to rebuild, and no id Ray wrote
        trial_id = str(results[-1]["trial_id"])
        name = trial_dir.name[: trial_dir.name.find(trial_id) + len(trial_id)]
        errored = (trial_dir / "error.txt").exists()
        record = TrialRecord(trial_id, name, json.loads(params.read_text()),
                             "ERROR" if errored else "TERMINATED", results[-1])
        out.append((record, results))
    return out


def _lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [line for line in lines if line.strip().endswith("}")]  # not a half-written last one


def rebuild_phase(sweep_dir: Path, tracking: MlflowTrackingCallback) -> int:
    """Play the trials of ``sweep_dir`` through ``tracking``; returns how many there were."""
    trials = trial_records(sweep_dir)
    tracking.setup()
    for record, results in trials:
        tracking._start(record)
        for result in results:
            tracking._result(record, result)
        if record.status == "ERROR":
            tracking._errored(record)
        elif record.last_result.get("done"):
            tracking._completed(record)
    records = [record for record, _ in trials]
    ended = [r.status == "ERROR" or bool(r.last_result.get("done")) for r in records]
    tracking._end_sweep(sweep_interrupted(ended, None), records)
    tracking.flush()
    return len(trials)


def rebuild(sweep_dir: Path, tracking_uri: str, experiment: str | None = None) -> int:
    """Rebuild the record of the sweep at ``sweep_dir`` (its search, then its repeats) in the
    store at ``tracking_uri``; returns the trials played."""
    stored = json.loads((sweep_dir / ID_FILE).read_text())
    config = stored.get("config", {})
    repeats_dir = sweep_dir.with_name(sweep_dir.name + "-repeats")
    played = 0
    for path, phase in ((sweep_dir, "search"), (repeats_dir, "repeats")):
        if not path.is_dir():
            continue
        tracking = MlflowTrackingCallback(
            tracking_uri=tracking_uri, experiment=experiment or config.get("experiment",
                                                                           "ghn-sweep"),
            sweep=stored.get("sweep", sweep_dir.name), sweep_id=stored["sweep_id"],
            sweep_params={f"sweep.{k}": v for k, v in config.items()},
            final=phase == "repeats" or not repeats_dir.is_dir(), phase=phase)
        count = rebuild_phase(path, tracking)
        log.info("%s: %d trials played into %s", path, count, tracking_uri)
        played += count
    return played


def main(argv: list[str] | None = None) -> int:
    """The command: exit 0 when the record was rebuilt, 2 on bad input."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="<storage>/<sweep name>, as Ray wrote it")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", help="default: the sweep's own (from ghn_sweep.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    problem = tracking_problem(args.tracking_uri)
    if not (args.sweep_dir / ID_FILE).exists():
        problem = f"{args.sweep_dir} holds no {ID_FILE}: not a sweep's Ray results"
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    rebuild(args.sweep_dir, args.tracking_uri, args.experiment)
    return 0


if __name__ == "__main__":
    sys.exit(main())
