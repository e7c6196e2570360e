"""What the sweep's driver costs per trial, at 10, 100 and 1,000 trials.

Claim: the driver's cost per trial does not grow with the number of trials. Each sweep runs the
sweep's own path (`sweeps._run.run`: preflight, Optuna TPE under ASHA, the MLflow tracking
callback and its write queue, the progress line, the parquet outputs), then
``analysis/report.py`` on its MLflow record, as a user would. The trials are tiny, so the driver's
share shows: shufflenet_v2_x0_5 on 2 CIFAR-10 classes, 2 shots a class, 2 epochs (under a second
each on one core), one core per trial, as many at once as Ray has cores.

Printed per sweep of N trials:
- ``driver_cpu_s_per_trial``: this process's own CPU (all its threads, not Ray's workers or
  raylet) over the whole sweep, per trial; ``window_cpu_s_per_trial``: the same between the first
  trial's start and the last one's end (no start-up, no outputs);
- ``trials_per_min``: trials ended per minute over that window, with every core busy;
- ``log_lines_per_trial``: lines the sweep's loggers wrote (the terminal's view);
- ``mlflow_write_p50_ms`` / ``p99``: the tracking writes' durations (`sweeps._patient`), and
  ``mlflow_db_mb``, the SQLite store's size;
- ``report_s``: ``python analysis/report.py`` on the sweep, in a fresh process;
- ``peak_rss_mb``: the driver's peak resident memory during the sweep.

    python benchmarks/sweep_scale.py --trials 10,100,1000

Ray starts once and serves every sweep; the data is decoded and the GHN's prediction cached by a
2-trial warm-up first (not printed). ``--keep DIR`` keeps the stores and results.
"""

from __future__ import annotations

from sweeps._loopback import listen_on_loopback, start_local_ray

listen_on_loopback()  # before Ray is imported (below): its processes listen on 127.0.0.1 only

import argparse
import bisect
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from contract import PARENT_TAG
from ghn import CACHE_ENV
from sweeps import _preflight
from sweeps._config import SweepConfig
from sweeps._run import run

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GHN_SWEEP_SHARED", REPO.parent / "shared"))
EXPERIMENT = "scale"


class CpuClock:
    """This process's CPU seconds, sampled every ``every_s`` on a thread, to read off between
    two wall-clock times."""

    def __init__(self, every_s: float = 0.2) -> None:
        self.walls: list[float] = []
        self.cpus: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(every_s,), daemon=True)
        self._thread.start()

    def _sample(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            self.walls.append(time.time())
            self.cpus.append(time.process_time())

    def at(self, wall: float) -> float:
        """CPU seconds used by ``wall`` (the nearest earlier sample)."""
        i = bisect.bisect_right(self.walls, wall) - 1
        return self.cpus[max(i, 0)] if self.cpus else 0.0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class LineCounter(logging.Handler):
    """Counts the sweep's log lines, and writes them to a file instead of the terminal."""

    def __init__(self, path: Path) -> None:
        super().__init__(logging.INFO)
        self.lines = 0
        self._file = open(path, "w")  # noqa: SIM115 - closed by `close`

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        self.lines += text.count("\n") + 1
        self._file.write(text + "\n")

    def close(self) -> None:
        self._file.close()
        super().close()


def reset_peak_rss() -> bool:
    """Let /proc's VmHWM count from now (Linux: ``5`` into clear_refs); whether it could."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sweep_config(args: argparse.Namespace, n: int, workdir: Path) -> SweepConfig:
    return SweepConfig(
        num_samples=n, max_epochs=2, grace_period=1, archs=(args.arch,), n_shots=2,
        classes=tuple(args.classes.split(",")), dataset=str(args.dataset), ghn=str(args.ghn),
        repeats=0, cpus_per_trial=1, max_concurrent=args.concurrency, name=f"scale-{n}",
        experiment=EXPERIMENT, storage=str(workdir / "ray_results"),
        tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")


def trial_window(cfg: SweepConfig, parent_run_id: str) -> tuple[float, float, int]:
    """(first start, last end, runs) of the sweep's child runs, in seconds since the epoch."""
    client = MlflowClient(cfg.tracking_uri)
    exp = client.get_experiment_by_name(cfg.experiment)
    starts, ends, token = [], [], None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token,
                                  filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'")
        starts += [r.info.start_time / 1000 for r in page]
        ends += [r.info.end_time / 1000 for r in page if r.info.end_time]
        token = page.token
        if not token:
            return min(starts), max(ends), len(starts)


def time_report(cfg: SweepConfig, workdir: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "analysis/report.py", "--experiment", cfg.experiment,
                    "--sweep", cfg.sweep_name, "--tracking-uri", cfg.tracking_uri,
                    "--out", str(workdir / "report")], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def one_sweep(args: argparse.Namespace, n: int, workdir: Path) -> dict[str, float]:
    """Run a sweep of ``n`` trials in ``workdir``; its figures."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = sweep_config(args, n, workdir)
    trackers = []

    def tracking_for(*a, **kw):  # the sweep's tracking callback, kept to read its timings
        trackers.append(_tracking_for(*a, **kw))
        return trackers[-1]

    _tracking_for, _preflight.tracking_for = _preflight.tracking_for, tracking_for
    lines = LineCounter(workdir / "sweep.log")
    sweep_logger = logging.getLogger("sweeps")
    sweep_logger.addHandler(lines)
    clock = CpuClock()
    measured_peak = reset_peak_rss()
    cpu0, wall0 = time.process_time(), time.time()
    try:
        status = run(cfg, argv=[])
    finally:
        _preflight.tracking_for = _tracking_for
        sweep_logger.removeHandler(lines)
        lines.close()
    cpu, wall = time.process_time() - cpu0, time.time() - wall0
    clock.stop()
    peak = peak_rss_mb() if measured_peak else float("nan")
    if status != 0:
        raise SystemExit(f"the sweep of {n} trials exited {status}; see {workdir}/sweep.log")
    (tracking,) = trackers
    first, last, runs = trial_window(cfg, tracking.parent_run_id)
    writes = tracking.write_timings()
    db = Path(cfg.tracking_uri.removeprefix("sqlite:///"))
    return {"trials": runs, "wall_s": wall, "driver_cpu_s": cpu,
            "driver_cpu_s_per_trial": cpu / runs,
            "window_cpu_s_per_trial": (clock.at(last) - clock.at(first)) / runs,
            "trials_per_min": runs / (last - first) * 60,
            "log_lines_per_trial": lines.lines / runs,
            "mlflow_writes": writes["writes"],
            "mlflow_write_p50_ms": writes.get("p50_s", float("nan")) * 1000,
            "mlflow_write_p99_ms": writes.get("p99_s", float("nan")) * 1000,
            "mlflow_db_mb": sum(p.stat().st_size for p in db.parent.glob(db.name + "*")) / 1e6,
            "report_s": time_report(cfg, workdir), "peak_rss_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", default="10,100,1000",
                        help="sweep sizes, comma-separated (default: %(default)s)")
    parser.add_argument("--dataset", type=Path, default=SHARED / "data" / "cifar10-jpeg")
    parser.add_argument("--ghn", type=Path,
                        default=SHARED / "ghn2" / "reference" / "ghn2_random_imagenet_seed0.pt")
    parser.add_argument("--arch", default="shufflenet_v2_x0_5",
                        help="a small model: its checkpoint is 3 MB")
    parser.add_argument("--classes", default="airplane,automobile")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2,
                        help="trials at once, one core each (default: this machine's cores)")
    parser.add_argument("--keep", type=Path, help="keep each sweep's stores and results here")
    args = parser.parse_args()
    sizes = [int(n) for n in args.trials.split(",")]
    root = Path(args.keep or tempfile.mkdtemp(prefix="sweep-scale-")).resolve()
    os.environ.setdefault(CACHE_ENV, str(root / "cache"))  # data and GHN prediction, warmed once
    logging.getLogger("sweeps").setLevel(logging.INFO)
    logging.getLogger("sweeps").propagate = False
    start = time.perf_counter()
    start_local_ray()
    print(f"ray_start_s={time.perf_counter() - start:.1f} concurrency={args.concurrency} "
          f"arch={args.arch}", flush=True)
    one_sweep(args, 2, root / "warmup")
    try:
        for n in sizes:
            figures = one_sweep(args, n, root / f"n{n}")
            print(f"N={n}: " + " ".join(f"{k}={v:.4g}" for k, v in figures.items()), flush=True)
            if not args.keep:  # 3 MB of checkpoints a trial: don't hold 1,000 sweeps' worth
                shutil.rmtree(root / f"n{n}" / "ray_results", ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
