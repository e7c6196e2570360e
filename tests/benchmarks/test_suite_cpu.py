"""benchmarks/suite_cpu.py: a command's CPU, by kind of process it started."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "suite_cpu.py"
BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass"


def test_counts_the_cpu_of_the_processes_the_command_starts():
    # The measured command starts a busy child; both are processes started while it ran.
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {BUSY!r}])"
    done = subprocess.run([sys.executable, str(SCRIPT), "--interval", "0.05", "--",
                           sys.executable, "-c", child], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    rows = [line.split(None, 3) for line in done.stdout.splitlines()[4:]]
    (row,) = [r for r in rows if r[3] == "python -c"]
    assert int(row[2]) == 2 and 0.5 <= float(row[0]) < 5, done.stdout
    assert "exit status 0" in done.stdout and "machine_busy_cpu_s=" in done.stdout


def test_passes_on_the_commands_exit_status_and_asks_for_a_command():
    failed = subprocess.run([sys.executable, str(SCRIPT), "--", sys.executable, "-c",
                             "raise SystemExit(3)"], capture_output=True, text=True, timeout=60)
    assert failed.returncode == 3 and "exit status 3" in failed.stdout
    none = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                          timeout=60)
    assert none.returncode == 2 and "give the command to measure after --" in none.stderr
