"""A sweep's identity: an id kept with its Ray experiment and tagged on its parent run.

A fresh sweep gets a new id, written to ``<storage>/<sweep>/ghn_sweep.json`` before Ray
starts with the sweep's configuration; ``--resume`` reads both back (``sweeps._preflight`` compares
the configuration with the flags). The tracking callback finds the parent run by this id, not
by the name, so a fresh sweep never reopens the parent of another sweep that had the same name
(one whose results were deleted, or that used another ``--storage``).
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from typing import Any

import pyarrow.fs

from contract import SWEEP_RECORD_FILE

from ._config import SweepConfig

ID_FILE = SWEEP_RECORD_FILE


def new_sweep_id() -> str:
    return uuid.uuid4().hex


def write_sweep_id(cfg: SweepConfig, sweep_id: str, tags: dict[str, str] | None = None) -> None:
    """Store ``sweep_id``, ``cfg`` and the parent run's class ``tags`` in the sweep's directory
    (local or remote storage)."""
    fs, root = pyarrow.fs.FileSystem.from_uri(cfg.sweep_path)
    fs.create_dir(root, recursive=True)
    record = {"sweep_id": sweep_id, "sweep": cfg.sweep_name,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "config": config_record(cfg), "tags": dict(tags or {})}
    with fs.open_output_stream(f"{root}/{ID_FILE}") as f:
        f.write(json.dumps(record, indent=1).encode())


def config_record(cfg: SweepConfig) -> dict[str, Any]:
    """``cfg``'s fields as JSON keeps them (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def read_sweep_record(cfg: SweepConfig) -> dict[str, Any]:
    """What the sweep's first start stored; FileNotFoundError when there is none."""
    fs, root = pyarrow.fs.FileSystem.from_uri(cfg.sweep_path)
    path = f"{root}/{ID_FILE}"
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        raise FileNotFoundError(f"no {ID_FILE} in {cfg.sweep_path}")
    with fs.open_input_stream(path) as f:
        return json.loads(f.read())


def read_sweep_id(cfg: SweepConfig) -> str:
    """The id stored by the sweep's first start; FileNotFoundError when there is none."""
    return str(read_sweep_record(cfg)["sweep_id"])
