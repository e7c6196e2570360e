"""The cache directory every layer shares, and atomic durable writes."""

import os
from pathlib import Path

import torch

from ghn import cache_dir, save_atomic


def test_cache_dir_is_the_variable_or_the_default_when_unset_or_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("GHN_SWEEP_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    default = Path.home() / ".cache" / "ghn-sweep"
    monkeypatch.setenv("GHN_SWEEP_CACHE", "")  # e.g. `GHN_SWEEP_CACHE= python ...`
    assert cache_dir() == default
    monkeypatch.delenv("GHN_SWEEP_CACHE")
    assert cache_dir() == default


def test_save_atomic_fsyncs_file_before_rename_and_directory_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", "dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file"))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save_atomic({"w": torch.ones(2)}, tmp_path / "entry.pt")
    assert events == [("fsync", "file"), ("replace", "entry.pt"), ("fsync", "dir")]
    assert [p.name for p in tmp_path.iterdir()] == ["entry.pt"]  # no temp file left


def test_save_atomic_creates_the_directory_and_replaces_an_old_file(tmp_path):
    path = tmp_path / "runs" / "ghn.pt"
    save_atomic({"step": 1}, path)
    save_atomic({"step": 2}, path)
    assert torch.load(path, weights_only=True) == {"step": 2}
    assert [p.name for p in path.parent.iterdir()] == ["ghn.pt"]
