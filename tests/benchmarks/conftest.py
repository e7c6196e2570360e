"""Fixtures of the benchmarks' smoke runs."""

from __future__ import annotations

import runpy
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def run_benchmark(monkeypatch, capsys) -> Callable[..., str]:
    """``run_benchmark(name, *argv, cwd=path)``: ``python benchmarks/NAME.py ARGV`` run in this
    process, in ``cwd``; returns what it printed. A fresh interpreter would only add its imports
    (~4 s); a script that fails raises here."""

    def run(name: str, *argv: str, cwd: Path) -> str:
        script = BENCHMARKS / f"{name}.py"
        monkeypatch.chdir(cwd)
        monkeypatch.syspath_prepend(str(BENCHMARKS))  # as for a script: its siblings import
        monkeypatch.setattr(sys, "argv", [str(script), *argv])
        runpy.run_path(str(script), run_name="__main__")
        return capsys.readouterr().out

    return run
