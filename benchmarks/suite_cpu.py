"""Where a command's CPU goes, by kind of process: for keeping the test suite short.

With two xdist workers the suite is CPU-bound, so only less CPU shortens it; this says which
processes spend it. It runs the command, reads every process's CPU time from
``/proc/<pid>/stat`` every ``--interval`` seconds, and prints the wall time, the CPU time of the
whole machine (``/proc/stat``, both cores' busy time), and the CPU of the processes started
while it ran, grouped by kind (Ray's trial workers, sweep drivers, Ray's own processes, MLflow
servers, compilers, ...) with how many there were. A process's last sample before it exits is
what is counted: at 0.2 s, a short-lived process's last ~0.2 s is missed.

    python benchmarks/suite_cpu.py -- python -m pytest -n 2 --dist loadfile
    python benchmarks/suite_cpu.py --top 40 -- python -m pytest tests/sweeps/test_sweep_signals.py

Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

TICK = os.sysconf("SC_CLK_TCK")

# (kind, test): the first whose test accepts a process's command line names its kind.
KINDS: list[tuple[str, Callable[[str, str], bool]]] = [
    ("ray trial worker", lambda cmd, comm: cmd.startswith("ray::ImplicitFunc")),
    ("ray train worker", lambda cmd, comm: cmd.startswith("ray::RayTrainWorker")),
    ("ray task or actor", lambda cmd, comm: cmd.startswith("ray::")),
    ("sweep driver", lambda cmd, comm: "noise_vs_lr" in cmd.split(" -", 1)[0]),
    ("pytest", lambda cmd, comm: "pytest" in cmd.split(" ", 3)[:3] or "execnet" in cmd
     or "exec(eval(sys.stdin.readline()))" in cmd),
    ("ray idle worker", lambda cmd, comm: "default_worker.py" in cmd),
    ("ray servers and monitors", lambda cmd, comm: comm in ("raylet", "gcs_server")
     or any(s in cmd for s in ("dashboard", "log_monitor", "monitor.py", "runtime_env"))),
    ("mlflow server", lambda cmd, comm: "mlflow" in cmd and "server" in cmd
     or "uvicorn" in cmd or "gunicorn" in cmd),
    ("compiler", lambda cmd, comm: comm in ("cc1plus", "cc1", "as", "ld", "collect2", "g++",
                                            "gcc")),
    ("python -c", lambda cmd, comm: " -c " in cmd[:80]),
    ("other python", lambda cmd, comm: comm.startswith("python")),
]


@dataclass
class Process:
    cmd: str
    comm: str
    cpu_s: float


def _read(pid: str) -> tuple[str, str, float, str] | None:
    """(command line, comm, CPU seconds, start time) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline") as f:
            cmd = f.read().replace("\0", " ").strip()
    except OSError:
        return None
    comm, rest = stat.split("(", 1)[1].rsplit(")", 1)
    fields = rest.split()
    return cmd, comm, (int(fields[11]) + int(fields[12])) / TICK, fields[19]


def _busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot (user, nice, system, irq, softirq)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = map(int, f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / TICK


def kind_of(cmd: str, comm: str) -> str:
    return next((kind for kind, test in KINDS if test(cmd, comm)), "other: " + comm)


def sample(argv: list[str], interval: float) -> tuple[int, float, float, list[Process]]:
    """Run ``argv``; return its exit status, wall seconds, the machine's busy CPU seconds, and
    the processes started while it ran."""
    before = {(pid, info[3]) for pid in os.listdir("/proc") if pid.isdigit()
              and (info := _read(pid)) is not None}
    seen: dict[tuple[str, str], Process] = {}
    busy0, t0 = _busy_s(), time.monotonic()
    proc = subprocess.Popen(argv)
    while True:
        done = proc.poll() is not None
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            info = _read(pid)
            if info is None or (pid, info[3]) in before:
                continue
            cmd, comm, cpu, start = info
            entry = seen.setdefault((pid, start), Process(cmd, comm, cpu))
            entry.cpu_s = max(entry.cpu_s, cpu)
            if cmd and "IDLE" not in cmd:  # Ray renames a worker once it runs something
                entry.cmd = cmd
        if done:
            break
        time.sleep(interval)
    return proc.returncode, time.monotonic() - t0, _busy_s() - busy0, list(seen.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    parser.add_argument("--top", type=int, default=20, help="kinds printed, most CPU first")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --, e.g. -- python -m pytest -x")
    if not os.path.isdir("/proc/self"):
        parser.error("needs Linux's /proc")
    status, wall, busy, processes = sample(command, args.interval)
    by_kind: dict[str, list[float]] = collections.defaultdict(list)
    for p in processes:
        by_kind[kind_of(p.cmd, p.comm)].append(p.cpu_s)
    print(f"command: {' '.join(command)} (exit status {status})")
    print(f"wall_s={wall:.1f} machine_busy_cpu_s={busy:.1f} cores={os.cpu_count()} "
          f"busy_share={busy / (wall * (os.cpu_count() or 1)):.2f}")
    counted = sum(sum(v) for v in by_kind.values())
    print(f"processes started: {len(processes)}, their CPU: {counted:.1f} s")
    print(f"{'cpu_s':>8} {'share':>6} {'count':>6}  kind")
    for kind, cpus in sorted(by_kind.items(), key=lambda kv: -sum(kv[1]))[:args.top]:
        print(f"{sum(cpus):8.1f} {sum(cpus) / max(counted, 1e-9):6.1%} {len(cpus):6d}  {kind}")
    return status


if __name__ == "__main__":
    sys.exit(main())
