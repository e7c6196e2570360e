"""The node cache: lock-free mapped reads, safe loading, recomputation of unreadable entries,
durable writes, keys."""

import logging
import threading

import pytest
import torch
from filelock import FileLock, Timeout

from ghn import cache_dir
from trainable import _model
from trainable._cache import cached_torch, source_hash
from trainable._config import TrialConfig


def _entry_path(kind, key):
    return cache_dir() / kind / f"{key}.pt"


def _counting(value):
    calls = []

    def compute():
        calls.append(1)
        return value

    return calls, compute


def test_corrupt_entry_is_logged_removed_and_recomputed(caplog):
    calls, compute = _counting({"x": torch.arange(3)})
    path = _entry_path("test-corrupt", "k1")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a torch file, e.g. cut short by a full disk")
    with caplog.at_level(logging.WARNING, logger="trainable._cache"):
        got = cached_torch("test-corrupt", "k1", compute)
    assert torch.equal(got["x"], torch.arange(3)) and calls == [1]
    assert "unreadable" in caplog.text and str(path) in caplog.text
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.arange(3))  # rewritten
    cached_torch("test-corrupt", "k1", compute)
    assert calls == [1]  # the good entry is now a hit


def test_entry_tensors_are_mapped_from_the_file_and_equal_the_computed_ones(mapped_files):
    decoded = {"x": torch.randint(0, 256, (50, 8, 8, 3), dtype=torch.uint8), "y": torch.arange(50)}
    calls, compute = _counting({k: v.clone() for k, v in decoded.items()})
    path = _entry_path("test-mmap", "k3")
    for _ in range(2):  # the computing trial and a later one both get the mapped copy
        got = cached_torch("test-mmap", "k3", compute)
        assert torch.equal(got["x"], decoded["x"]) and torch.equal(got["y"], decoded["y"])
        assert mapped_files(got["x"]) == {str(path)}, "not memory-mapped from the entry"
    assert calls == [1]


def test_existing_entry_is_read_while_another_trial_holds_the_lock():
    calls, compute = _counting({"x": torch.arange(4)})
    cached_torch("test-lockfree", "k4", compute)
    lock = str(_entry_path("test-lockfree", "k4")) + ".lock"
    got = []
    reader = threading.Thread(
        target=lambda: got.append(cached_torch("test-lockfree", "k4", compute)), daemon=True)
    with FileLock(lock):  # a trial creating another entry, or stuck: readers must not queue
        with pytest.raises(Timeout):  # the lock does exclude other holders in this process
            FileLock(lock, timeout=0).acquire()
        reader.start()
        reader.join(timeout=20)
        finished = not reader.is_alive()
    reader.join()
    assert finished, "the read waited for the lock"
    assert torch.equal(got[0]["x"], torch.arange(4)) and calls == [1]


class Planted:
    """A pickled object whose loading would run code (here: create a marker file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_entry_that_would_run_code_is_refused_not_run(tmp_path):
    marker = tmp_path / "code-ran"
    path = _entry_path("test-planted", "k2")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": Planted(str(marker))}, path)
    calls, compute = _counting({"state": {}})
    assert cached_torch("test-planted", "k2", compute) == {"state": {}}
    assert calls == [1] and not marker.exists()


def test_source_hash_changes_with_the_code(tmp_path):
    pkg = tmp_path / "fakepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("X = 1\n")

    before = source_hash(pkg)
    assert source_hash(pkg) == before
    (pkg / "_sub.py").write_text("Y = 2\n")
    assert source_hash(pkg) != before


def test_prediction_key_changes_with_ghn_code_and_torchvision(reference_dir, monkeypatch):
    import torchvision

    keys = []

    def record(kind, key, compute):
        keys.append(key)
        return compute()

    monkeypatch.setattr(_model, "cached_torch", record)
    cfg = TrialConfig.from_flat({"arch": "resnet18", "init": "ghn", "device": "cpu",
                                 "ghn": str(reference_dir / "ghn2_random_cifar10_seed0.pt")})
    _model.build_model(cfg, num_classes=10)
    monkeypatch.setattr(torchvision, "__version__", "0.0.0-other")
    _model.build_model(cfg, num_classes=10)
    monkeypatch.setattr(_model, "source_hash", lambda *packages: "edited-ghn-code")
    _model.build_model(cfg, num_classes=10)
    assert len(set(keys)) == 3, keys
