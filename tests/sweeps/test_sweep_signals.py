"""A sweep's driver stopped three ways, each followed by ``--resume``: Ctrl-C (SIGINT) and SIGTERM
stop it saved, with the runs closed as interrupted and the command that continues it; ``kill -9``
saves nothing more, and the resumed sweep still ends as one uninterrupted sweep would.

One sweep serves the three stops in turn (each resumed driver is the next one stopped), so its
drivers start four times instead of six; each stop asserts what it leaves, and the last resume
asserts the whole sweep's record.
"""

from __future__ import annotations

import os
import pickle
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from contract import SWEEP_TAG, TRIAL_ID_TAG

SCRIPT = Path(__file__).resolve().parents[2] / "sweeps" / "noise_vs_lr.py"
COUNTS = re.compile(r"(\d+) running · (\d+) finished · (\d+) stopped early · (\d+) diverged · "
                    r"(\d+) failed")


def tiny_sweep_argv(tmp_path: Path, reference_dir: Path, data_dir: Path, *extra: str,
                    tracking_uri: str | None = None) -> list[str]:
    """A sweep of 3 trials of 2 epochs on 10 images a class, without repeats, with a progress
    line at every change (the drills act on them)."""
    return [sys.executable, str(SCRIPT), "--dataset", str(data_dir),
            "--ghn", str(reference_dir / "ghn2_random_imagenet_seed0.pt"),
            "--storage", str(tmp_path / "ray_results"),
            "--tracking-uri", tracking_uri or f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--n-shots", "10", "--repeats", "0", "--num-samples", "3", "--max-epochs", "2",
            "--grace-period", "2", "--max-concurrent", "1", "--progress-every", "0", *extra]


def sweep_env() -> dict[str, str]:
    return {**os.environ, "RAY_AUTH_MODE": "disabled"}  # the session's cache


def _ended(line: str) -> int | None:
    """Trials the progress line counts as ended (finished, stopped early, diverged, failed)."""
    counts = COUNTS.search(line)
    return sum(map(int, counts.groups()[1:])) if counts else None


def _last_ended(output: str) -> int:
    return [n for n in map(_ended, output.splitlines()) if n is not None][-1]


def _stop_when(argv: list[str], cwd: Path, ready: Callable[[str], bool],
               stop: Callable[[subprocess.Popen], None]) -> tuple[int, str]:
    """Run the driver, call ``stop`` on it at the first output line ``ready`` accepts (or after
    10 minutes), and return its exit status and output."""
    proc = subprocess.Popen(argv, cwd=cwd, env=sweep_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen, deadline = [], time.time() + 600
    try:
        for line in proc.stdout:
            seen.append(line)
            if ready(line) or time.time() > deadline:
                stop(proc)
                break
        rest, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, "".join(seen) + rest


def _state_files(sweep_dir: Path) -> list[Path]:
    """The callback states Tune saved with the experiment, one file per driver, oldest first
    (named by the driver's start; Tune restores the last)."""
    return sorted(sweep_dir.glob("callback-states-*.pkl"))


def _saved_rungs(sweep_dir: Path) -> dict[tuple, float]:
    """ASHA's rung entries in the callback state Tune restores (none before its first save, or
    while Tune copies the file)."""
    try:
        newest = _state_files(sweep_dir)[-1]
        (state,) = [s for s in pickle.loads(newest.read_bytes()).values()
                    if s and "asha_rungs" in s]
    except (IndexError, ValueError, EOFError, pickle.UnpicklingError):
        return {}
    return {(b, milestone, trial): value for b, bracket in enumerate(state["asha_rungs"])
            for milestone, recorded in bracket for trial, value in recorded.items()}


def _record(tmp_path: Path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ghn-sweep").experiment_id],
                              max_results=1000)
    (parent,) = [r for r in runs if SWEEP_TAG in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, runs, parent, children


def _assert_stopped_and_saved(status: int, output: str, want: int, argv: list[str],
                              tmp_path: Path, n: int) -> None:
    """What Ctrl-C and SIGTERM leave: the exit status, every run closed, the parent closed as
    interrupted, part of the sweep run, and the command that continues it."""
    assert status == want, output[-3000:]
    assert "SIGTERM received" not in output and "Aborted" not in output  # not Ray's handlers
    (line,) = [ln for ln in output.splitlines() if "Continue it: " in ln]
    python, *command = shlex.split(line.split("Continue it: ", 1)[1])
    assert python == "python" and command == [*argv[1:], "--resume"]
    _, runs, parent, children = _record(tmp_path)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert parent.info.status == "KILLED" and "ghn_sweep.interrupted" in parent.data.tags
    assert 1 <= len(children) < n  # interrupted mid-way


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_ctrl_c_sigterm_and_kill_9_each_resume_to_one_whole_sweep(tmp_path, reference_dir,
                                                                 cifar_jpeg_dir,
                                                                 new_mlflow_store):
    """ASHA (grace period 1 of 2 epochs) has rungs when the driver is killed, so its restore
    shows; the whole sweep ends with one run per trial, each epoch logged once."""
    n = 6
    argv = [sys.executable, str(SCRIPT), "--dataset", str(cifar_jpeg_dir),
            "--ghn", str(reference_dir / "ghn2_random_imagenet_seed0.pt"),
            "--storage", str(tmp_path / "ray_results"),
            "--tracking-uri", new_mlflow_store(tmp_path / "mlflow.db"), "--n-shots", "5",
            "--repeats", "0", "--num-samples", str(n), "--max-epochs", "2", "--grace-period", "1",
            "--progress-every", "0"]  # a line at every change: the drill stops on them
    resume = [*argv, "--resume"]
    sweep_dir = tmp_path / "ray_results" / "noise_vs_lr-smoke"

    # Ctrl-C once a trial has ended.
    status, output = _stop_when(argv, tmp_path, lambda ln: (_ended(ln) or 0) >= 1,
                                lambda p: p.send_signal(signal.SIGINT))
    _assert_stopped_and_saved(status, output, 130, argv, tmp_path, n)

    # SIGTERM to the resumed driver once one more trial has ended.
    ended = _last_ended(output)
    status, output = _stop_when(resume, tmp_path, lambda ln: (_ended(ln) or 0) > ended,
                                lambda p: p.send_signal(signal.SIGTERM))
    _assert_stopped_and_saved(status, output, 143, argv, tmp_path, n)

    # kill -9 of the next resumed driver and of the Ray it started, once one more has ended and
    # this driver's own saved state holds rung entries.
    ended, earlier = _last_ended(output), _state_files(sweep_dir)
    status, output = _stop_when(resume, tmp_path,
                                lambda ln: ended < (_ended(ln) or 0) < n
                                and _state_files(sweep_dir) != earlier
                                and bool(_saved_rungs(sweep_dir)),
                                lambda p: os.killpg(p.pid, signal.SIGKILL))
    assert status == -signal.SIGKILL, output[-3000:]
    before = _saved_rungs(sweep_dir)
    assert before

    resumed = subprocess.run(resume, cwd=tmp_path, env=sweep_env(),
                             capture_output=True, text=True, timeout=900)
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-3000:]
    assert "Traceback" not in output and "Cannot tell" not in output, output[-3000:]
    # The restored scheduler held the pre-kill entries, and kept them to the end.
    assert f"resume: ASHA's rungs restored ({len(before)} entries)" in resumed.stdout
    after = _saved_rungs(sweep_dir)
    assert {k: after.get(k) for k in before} == before
    counted = [COUNTS.search(ln) for ln in resumed.stdout.splitlines() if COUNTS.search(ln)]
    assert counted, resumed.stdout
    last = counted[-1]
    running, *ended_by_state = map(int, last.groups())
    assert running == 0 and sum(ended_by_state) == n  # the whole sweep, not since the restart

    client, runs, parent, children = _record(tmp_path)
    assert parent.info.status == "FINISHED" and "ghn_sweep.interrupted" not in parent.data.tags
    assert parent.data.metrics["trials_running"] == 0
    assert sum(parent.data.metrics[f"trials_{k}"] for k in (
        "finished", "stopped_early", "diverged", "failed")) == n
    # The last driver replaced the interrupted ones' snapshots of the results table.
    table = client.download_artifacts(parent.info.run_id, "results.parquet", str(tmp_path))
    epochs = {row["trial_id"]: row["epochs"] for row in pq.read_table(table).to_pylist()}
    assert len(epochs) == n
    # One run per trial, as an uninterrupted sweep has, closed as Ray ended the trial, with each
    # epoch it ran logged once.
    by_trial = {c.data.tags[TRIAL_ID_TAG]: c for c in children}
    assert len(children) == n and sorted(by_trial) == sorted(epochs)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    for trial_id, child in by_trial.items():
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "epoch")]
        assert steps == list(range(1, epochs[trial_id] + 1)), trial_id
        if epochs[trial_id] == 2:
            assert child.info.status == "FINISHED", trial_id
        else:  # stopped at ASHA's first rung
            assert child.info.status == "KILLED", trial_id
            assert "ghn_sweep.stopped_early" in child.data.tags, trial_id
