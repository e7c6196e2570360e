"""The command lines: `python -m ghntrain train|evaluate`, the same commands under
`python -m ghn`, and a Ray Train worker that loads no command line."""

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def _help(monkeypatch, capsys, module: str, *argv: str) -> str:
    """What ``python -m MODULE ARGV`` prints for ``--help`` (run here: no interpreter start)."""
    monkeypatch.setattr(sys, "argv", [module, *argv])
    with pytest.raises(SystemExit) as done:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert done.value.code in (0, None)
    return capsys.readouterr().out


def test_both_entry_points_offer_train_and_evaluate(monkeypatch, capsys):
    assert "{predict,verify,train,evaluate}" in _help(monkeypatch, capsys, "ghn", "--help")
    assert "{train,evaluate}" in _help(monkeypatch, capsys, "ghntrain", "--help")
    assert "--max-shape" in _help(monkeypatch, capsys, "ghntrain", "train", "--help")


def test_a_ray_train_worker_imports_library_modules_only():
    """What unpickling the worker function loads: ghntrain's library, no CLI, no __main__."""
    code = ("import sys; from ghntrain._distributed import _worker; "
            "print(sorted(m for m in sys.modules if m.endswith(('_cli', '__main__')) "
            "and m.split('.')[0] in ('ghn', 'ghntrain', 'trainable')))")
    proc = _run("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
