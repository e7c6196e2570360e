"""Files every layer writes: the user cache directory and atomic, durable saves; and the one
check of a checkpoint's tensors against a network's layout.

Here, at the bottom, so that checkpoint downloads, the trials' cache and GHN training agree on
one cache location and one way of writing a file a crash cannot leave half-written.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

CACHE_ENV = "GHN_SWEEP_CACHE"


def cache_dir() -> Path:
    """``$GHN_SWEEP_CACHE``, or ``~/.cache/ghn-sweep`` when it is unset or empty (an empty
    value would otherwise mean the current directory, wherever a worker happens to run)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ghn-sweep")


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same directory, fsync it, rename it over ``path``, and
    fsync the directory: after a crash ``path`` is the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def layout_problems(state: dict[str, torch.Tensor],
                    expected: dict[str, torch.Size]) -> list[str]:
    """How a checkpoint's tensors differ from the layout its network expects, in words (missing,
    unexpected and misshaped keys); empty when they match."""
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k])})"
                 for k in expected if k in state and state[k].shape != expected[k]]
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if misshaped:
        problems.append(f"misshaped: {'; '.join(misshaped)}")
    return problems
