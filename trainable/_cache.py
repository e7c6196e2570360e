"""The per-node cache: decoded datasets, predicted GHN parameters and init diagnostics under one
user directory.

An entry is written once, atomically (temp file, fsync, rename), so a reader never sees half a
file and needs no lock: trials that start together on a node read an existing entry at the same
time. Only creating a missing entry takes the file lock, so one trial computes it while the
others wait for it instead of computing it too. Entries are read with ``torch.load(mmap=True,
weights_only=True)``: tensors are mapped from the file, not copied, so the trials on a node share
one copy in the page cache, and only tensors, dicts, lists and primitives load, so a planted file
cannot run code. One that cannot be read is logged, removed and computed again instead of
failing every later trial on the node.
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
    """Load ``<cache>/<kind>/<key>.pt`` or compute, save atomically, and return it.

    Tensors of a loaded entry are memory-mapped from the file (copy-on-write): read them, or
    copy what you change.
    """
    path = cache_dir() / kind / f"{key}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    found, value = _read(path, remove_bad=False)  # lock-free: the file is whole or absent
    if found:
        return value
    with FileLock(str(path) + ".lock"):
        found, value = _read(path, remove_bad=True)  # another trial may have written it
        if found:
            return value
        value = compute()
        save_atomic(value, path)
        _logger.info("cached %s", path)
    found, mapped = _read(path, remove_bad=False)  # the mapped copy, shared with other trials
    return mapped if found else value


def _read(path: Path, *, remove_bad: bool) -> tuple[bool, Any]:
    """(True, entry) or (False, None) when ``path`` is absent or unreadable; an unreadable one
    is removed when ``remove_bad`` (only under the lock: a writer may be about to replace it)."""
    try:
        value = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except FileNotFoundError:
        return False, None
    except Exception as e:  # noqa: BLE001 - torch.load raises many types on a bad file
        if remove_bad:
            _logger.warning("cache entry %s is unreadable (%s: %s); removing it and "
                            "computing it again", path, type(e).__name__, e)
            path.unlink(missing_ok=True)
        return False, None
    _logger.debug("cache hit %s", path)
    return True, value


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
