"""A lost node costs one checkpoint interval, nothing else: the drill with two Ray nodes here.

A head that runs no trials (0 CPUs, as cluster.yaml's head) and a worker node are each a
``ray start --block`` of this test, in a session of their own, with their own temp dir, ports
and auth token, so nothing here can reach or be reached by another Ray on the machine. The
sweep's driver joins with ``--address``; once the driver holds a trial's checkpoint and before
the trial ends, the worker node stops answering (SIGSTOP, which keeps the trial cut off however
short its epochs), then is SIGKILLed whole (raylet, agents, the trials' processes), and a new
worker node joins in its place, as the autoscaler would start one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from contract import RETRIED_TAG, SWEEP_TAG, TRIAL_ID_TAG

SCRIPT = Path(__file__).resolve().parents[2] / "sweeps" / "noise_vs_lr.py"
EPOCHS, EVERY, TRIALS = 6, 3, 2  # checkpoints after epochs 3 and 6; the kill falls in between
COUNTS = re.compile(r"(\d+) running · (\d+) finished · (\d+) stopped early · (\d+) diverged · "
                    r"(\d+) failed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class RayNodes:
    """The Ray nodes this test starts, each a ``ray start --block`` in a session of its own.

    ``kill(name)`` is a lost machine: SIGKILL to all the node's processes, no clean-up by Ray.
    ``close()`` kills every node left (the fixture's finalizer), and only those.
    """

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env
        self.procs: dict[str, subprocess.Popen] = {}
        self.temp_dirs: list[str] = []
        self.address = f"127.0.0.1:{_free_port()}"

    def start(self, name: str, *args: str) -> None:
        """Start node ``name`` (``--num-cpus`` etc. in ``args``); `wait` for it to be up."""
        # Each node its own temp dir, as on its own machine; short, for Ray's socket paths
        # (at most 107 bytes), so not under pytest's tmp_path.
        temp_dir = tempfile.mkdtemp(prefix=f"rn-{name}-", dir="/tmp")
        self.temp_dirs.append(temp_dir)
        head = ["--head", "--port", self.address.rsplit(":", 1)[1], "--include-dashboard",
                "false"] if name == "head" else ["--address", self.address]
        with open(self.root / f"{name}.log", "w") as out:
            # Ports Ray would otherwise take by default (52365), shared with other Rays here.
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", *head,
                 "--temp-dir", temp_dir, "--dashboard-agent-listen-port", str(_free_port()),
                 "--disable-usage-stats", *args],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, name: str, timeout_s: float = 90) -> None:
        log, proc = self.root / f"{name}.log", self.procs[name]
        deadline = time.time() + timeout_s
        while "Ray runtime started" not in log.read_text():
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"ray start ({name}) failed:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    def pids(self, name: str) -> set[int]:
        """Every live process of the node now: its session's (Ray puts each worker process in a
        process group of its own, but not in a session of its own). Zombies are dead already."""
        import psutil

        sid = self.procs[name].pid  # start_new_session: the session's id is ray start's pid
        out = set()
        for proc in psutil.process_iter(["status"]):
            try:
                if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getsid(proc.pid) == sid:
                    out.add(proc.pid)
            except (ProcessLookupError, PermissionError):
                pass
        return out

    def freeze(self, name: str) -> set[int]:
        """SIGSTOP to every process of the node (a machine that stopped answering); its pids."""
        pids = self.pids(name)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        return pids

    def kill(self, name: str) -> None:
        """SIGKILL to every process of the node at once, until none is left."""
        for _ in range(50):
            pids = self.pids(name)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        self.procs[name].wait(timeout=30)

    def close(self) -> None:
        for name in self.procs:
            self.kill(name)
        for temp_dir in self.temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def ray_nodes(tmp_path):
    # Token authentication with a token of this test's own: nothing else reaches these nodes
    # (they listen on the machine's address, as a cluster's do).
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               RAY_USAGE_STATS_ENABLED="0",
               # The head's GCS declares a silent node dead after 3 missed checks 1 s apart,
               # not Ray's default 5 x 3 s: Tune moves a lost node's trials only then.
               RAY_health_check_period_ms="1000", RAY_health_check_failure_threshold="3")
    nodes = RayNodes(tmp_path, env)
    yield nodes
    nodes.close()


def _trial_dirs(sweep_dir: Path) -> list[Path]:
    return [d for d in sweep_dir.glob("sweep_trial_*") if d.is_dir()]


def _reports(trial_dir: Path) -> list[dict]:
    """The trial's reports as Tune's result.json holds them (epoch, pid, checkpoint)."""
    path = trial_dir / "result.json"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _driver_reports(head_temp_dir: str) -> list[list[dict]]:
    """Each trial's reports as the driver holds them: its own result.json, written (and flushed)
    as Tune takes each result, checkpoint included. Only whole lines count."""
    out = []
    for path in Path(head_temp_dir).glob("session_*/artifacts/*/*/driver_artifacts/*/result.json"):
        lines = path.read_text().split("\n")[:-1]  # the last one may be half written
        out.append([json.loads(line) for line in lines if line.strip()])
    return out


def _cut_off(reports: list[dict]) -> bool:
    """Tune holds a checkpoint of this trial, and the trial has epochs to go. A report that
    carries a checkpoint is not enough: Tune takes the checkpoint from the trial's process after
    the report, and asks for the next report only then; so a report after it is the proof."""
    return bool(reports) and reports[-1]["epoch"] < EPOCHS and any(
        r["checkpoint_dir_name"] for r in reports[:-1])


def _freeze_at_kill_moment(nodes: RayNodes, driver: subprocess.Popen, log: Path,
                           timeout_s: float) -> set[int]:
    """Freeze the worker node (SIGSTOP) once Tune holds a trial's checkpoint and that trial has
    epochs to go; return the node's pids. Frozen, the trial stays cut off until the kill,
    however short its epochs (under a second each here, with the data cached)."""
    head_temp_dir = nodes.temp_dirs[0]
    deadline = time.time() + timeout_s
    while time.time() < deadline and driver.poll() is None:
        time.sleep(0.05)
        if any(map(_cut_off, _driver_reports(head_temp_dir))):
            pids = nodes.freeze("worker1")
            time.sleep(1.0)  # a report sent before the freeze still reaches the driver
            if any(map(_cut_off, _driver_reports(head_temp_dir))):
                return pids
            pytest.fail("every trial checkpointed had ended by the freeze: "
                        f"{_driver_reports(head_temp_dir)}")
    pytest.fail(f"no checkpoint within {timeout_s} s (driver exit status {driver.poll()}):\n"
                f"{log.read_text()[-3000:]}")


def _trial_id(trial_dir: Path) -> str:
    return trial_dir.name.split("_")[2]  # sweep_trial_<id>_<n>_...


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_lost_worker_node_costs_one_checkpoint_interval(ray_nodes, tmp_path, reference_dir,
                                                       cifar_jpeg_dir, new_mlflow_store):
    start = time.time()
    ray_nodes.start("head", "--num-cpus", "0")  # runs the driver and no trial, as cluster.yaml's
    ray_nodes.wait("head")
    ray_nodes.start("worker1", "--num-cpus", str(TRIALS))  # up long before the driver's trials
    uri = new_mlflow_store(tmp_path / "mlflow.db")
    argv = [sys.executable, str(SCRIPT), "--dataset", str(cifar_jpeg_dir),
            "--ghn", str(reference_dir / "ghn2_random_imagenet_seed0.pt"),
            "--storage", (tmp_path / "ray_results").as_uri(), "--tracking-uri", uri,
            "--address", ray_nodes.address, "--n-shots", "5", "--repeats", "0",
            "--num-samples", str(TRIALS), "--max-concurrent", str(TRIALS),
            "--max-epochs", str(EPOCHS), "--grace-period", str(EPOCHS),  # ASHA stops none
            "--checkpoint-every", str(EVERY)]
    log = tmp_path / "driver.log"
    with open(log, "w") as out:
        # Unbuffered: a driver killed at the test's timeout still leaves its lines.
        env = {**ray_nodes.env, "PYTHONUNBUFFERED": "1"}
        driver = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ray_nodes.wait("worker1")
        sweep_dir = tmp_path / "ray_results" / "noise_vs_lr-smoke"
        doomed = _freeze_at_kill_moment(ray_nodes, driver, log, timeout_s=480)
        # The replacement starts now (Ray's import alone takes it seconds, so it joins after
        # the kill; had it joined before, the trials would still be on worker1, and move).
        ray_nodes.start("worker2", "--num-cpus", str(TRIALS))
        ray_nodes.kill("worker1")  # the machine is gone: raylet, agents, trials, all at once
        killed_at = time.time() - start
        ray_nodes.wait("worker2")
        driver.wait(timeout=360)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    output = log.read_text()
    print(f"drill: worker killed at {killed_at:.0f} s, sweep done at {time.time() - start:.0f} s")
    assert driver.returncode == 0, output[-3000:]

    # Tune's record: every trial ran all its epochs; the ones cut off resumed after their last
    # checkpoint, and only the epochs since then were reported twice.
    dirs = _trial_dirs(sweep_dir)
    assert len(dirs) == TRIALS
    resumed = {}  # trial id -> the epoch of the checkpoint it resumed from (0: none)
    for d in dirs:
        reports = _reports(d)
        epochs = [int(r["epoch"]) for r in reports]
        assert epochs[-1] == EPOCHS and sorted(set(epochs)) == list(range(1, EPOCHS + 1)), epochs
        before = [r for r in reports if r["pid"] in doomed]  # on the killed node
        after = [r for r in reports if r["pid"] not in doomed]
        if not before or before[-1]["epoch"] == EPOCHS:
            continue  # it had not reported yet (nothing to lose), or it had ended
        # Tune held every checkpoint followed by a report; the last report's, maybe not.
        held = [int(r["epoch"]) for r in before[:-1] if r["checkpoint_dir_name"]]
        kept = int(after[0]["epoch"]) - 1  # where it resumed
        assert kept == max(held, default=0) or (
            before[-1]["checkpoint_dir_name"] and kept == before[-1]["epoch"]), epochs
        redone = {e for e in epochs if epochs.count(e) > 1}
        assert all(kept < e <= kept + EVERY for e in redone), epochs  # lost: one interval
        resumed[_trial_id(d)] = kept
    assert EVERY in resumed.values(), resumed  # the kill hit a trial after its checkpoint
    table = pq.read_table(sweep_dir / "results.parquet").to_pylist()
    assert len(table) == TRIALS and all(r["epochs"] == EPOCHS for r in table)

    # MLflow's record: one run per trial, continued in place, each epoch once.
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("ghn-sweep")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    (parent,) = [r for r in runs if SWEEP_TAG in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert parent.info.status == "FINISHED"
    assert len(children) == len({c.data.tags[TRIAL_ID_TAG] for c in children}) == TRIALS
    assert all(c.info.status == "FINISHED" for c in children)
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "epoch")]
        assert steps == list(range(1, EPOCHS + 1)), steps
    retried = {c.data.tags[TRIAL_ID_TAG] for c in children if RETRIED_TAG in c.data.tags}
    assert set(resumed) <= retried

    # The driver said which trials it retried, and from where.
    for trial_id, kept in resumed.items():
        origin = f"from its checkpoint at epoch {kept}" if kept else "from its start"
        assert re.search(rf"trial sweep_trial_{trial_id} .*stopped unexpectedly; retry 1 of "
                         rf"\d+ \(--max-failures\), {origin}", output), trial_id

    # The counts are an uninterrupted sweep's.
    counts = [tuple(map(int, m.groups())) for m in map(COUNTS.search, output.splitlines()) if m]
    assert counts[-1] == (0, TRIALS, 0, 0, 0), counts[-1]
    metrics = parent.data.metrics
    assert (metrics["trials_finished"], metrics["trials_failed"]) == (TRIALS, 0)
