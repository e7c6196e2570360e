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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from ghn import cache_dir, save_atomic

_logger = logging.getLogger(__name__)


def cache_key(**parts: Any) -> str:
    """A short stable file name for a dict of key parts (order-independent)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def source_hash(*packages: Path) -> str:
    """Hash of the ``.py`` sources under the package directories ``packages`` (each file named
    relative to its package's parent): it changes with their code, whatever git knows of it, so
    it keys cache entries computed by that code and names the code a run used."""
    digest = hashlib.sha256()
    for root in packages:
        for path in sorted(root.rglob("*.py")):
            digest.update(path.relative_to(root.parent).as_posix().encode() + b"\0")
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
