"""The per-node cache: decoded datasets and predicted GHN parameters under one user directory.

Trials that start together on one node race for the same entry: a file lock makes one of them
compute it while the others wait, and the atomic rename means a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
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


def cached_torch(kind: str, key: str, compute: Callable[[], Any]) -> Any:
    """Load ``<cache>/<kind>/<key>.pt`` or compute, save atomically, and return it."""
    path = cache_dir() / kind / f"{key}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.exists():
            _logger.debug("cache hit %s", path)
            return torch.load(path, map_location="cpu", weights_only=False)
        value = compute()
        save_atomic(value, path)
        _logger.info("cached %s", path)
        return value


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same directory, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
