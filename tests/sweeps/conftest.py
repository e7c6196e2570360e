"""Fixtures of the sweep tests."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "sweeps" / "noise_vs_lr.py"


@pytest.fixture
def refusal(monkeypatch, capsys) -> Iterator[Callable[..., str]]:
    """``refusal(*argv, cwd=path)``: runs the sweep command's ``main`` in this process, as
    ``python sweeps/noise_vs_lr.py ARGV`` does in ``cwd``, asserts that it refused (exit status
    2) before Ray started, and returns what it wrote to stderr.

    In this process rather than a fresh interpreter: a refusal takes well under a second here,
    against ~4 s of imports there. What the command sets up for a sweep (its log handlers, Tune's
    environment variables) is put back afterwards.
    """
    import ray

    from sweeps import noise_vs_lr

    loggers = [logging.getLogger(name) for name in ("sweeps", "sweeps.tracking")]
    saved_loggers = [(list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    saved_env = dict(os.environ)

    def refuse(*argv: str, cwd: Path) -> str:
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", [str(SCRIPT), *argv])
        try:
            status = noise_vs_lr.main()
        except SystemExit as e:  # argparse's refusals
            status = e.code
        err = capsys.readouterr().err
        assert status == 2, err[-2000:]
        assert not ray.is_initialized()  # refused before Ray started
        return err

    yield refuse
    for lg, (handlers, level, propagate) in zip(loggers, saved_loggers, strict=True):
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate
    os.environ.clear()
    os.environ.update(saved_env)
