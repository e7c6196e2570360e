"""The per-node cache: decoded datasets and predicted GHN parameters under one user directory.

Trials that start together on one node race for the same entry: a file lock makes one of them
compute it while the others wait, and the atomic rename means a reader never sees half a file.
Entries are read with ``torch.load(weights_only=True)`` (tensors, dicts, lists and primitives
only), so a planted file cannot run code; one that cannot be read is logged, removed and
computed again instead of failing every later trial on the node.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from filelock import FileLock

_logger = logging.getLogger(__name__)

CACHE_ENV = "GHN_SWEEP_CACHE"


def cache_dir() -> Path:
    """``$GHN_SWEEP_CACHE`` or ``~/.cache/ghn-sweep``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ghn-sweep")


def cache_key(**parts: Any) -> str:
    """A short stable file name for a dict of key parts (order-independent)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def source_hash(package: ModuleType) -> str:
    """Hash of a package's ``.py`` sources: a cache key part that changes with its code."""
    root = Path(package.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cached_torch(kind: str, key: str, compute: Callable[[], Any]) -> Any:
    """Load ``<cache>/<kind>/<key>.pt`` or compute, save atomically, and return it."""
    path = cache_dir() / kind / f"{key}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.exists():
            try:
                value = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - torch.load raises many types on a bad file
                _logger.warning("cache entry %s is unreadable (%s: %s); removing it and "
                                "computing it again", path, type(e).__name__, e)
                path.unlink()
            else:
                _logger.debug("cache hit %s", path)
                return value
        value = compute()
        save_atomic(value, path)
        _logger.info("cached %s", path)
        return value


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same directory, fsync it, rename it over ``path``, and
    fsync the directory: after a crash ``path`` is the old file or the whole new one."""
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
