"""benchmarks/gpu_check.py at its CPU sizes: every section runs and prints its figure."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # 30-60 s on 2 cores: trials, bare loop and two spawned trial processes
def test_gpu_check_runs_every_section_at_tiny_sizes():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--tiny", "--device", "cpu"],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for line in ("torch 2.", "trial resnet18 compile=off:", "trial_vs_bare=",
                 "resnet18 evaluation:", "paper resnet18 trial, compile=off:",
                 "no MPS: 1 x resnet18 at once:", "no MPS: 2 x resnet18 at once:",
                 "MPS: CUDA only, skipped", "capture resnet18: off ",
                 "compile cache: no compiled trial was measured",
                 "target resnet18 trial_vs_bare, compile=off (>= 2.0): ",
                 "target paper resnet18 trial seconds, compile=off (<= 20 s): ",
                 "not judged at CPU sizes", "gpu_check done"):
        assert line in out, f"{line!r} missing from:\n{out}"
    assert "stopped:" not in out, out  # no concurrent worker died
