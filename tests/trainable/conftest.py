"""Fixtures for trial tests: tiny CPU trial configs, and a look at which files a tensor is
memory-mapped from."""

import os

import pytest


@pytest.fixture
def tiny(cifar_jpeg_dir):
    """A flat config for a trial that takes about a second an epoch on one CPU core."""

    def make(**overrides):
        flat = {
            "arch": "resnet18", "small_stem": False, "init": "random", "device": "cpu",
            "data.dataset": str(cifar_jpeg_dir), "data.n_shots": 10, "data.val_per_class": 5,
            "data.test_per_class": 5, "optim.batch_size": 32, "optim.epochs": 3,
            "optim.lr": 0.05, "optim.weight_decay": 5e-4,
        }
        flat.update(overrides)
        return flat

    return make


@pytest.fixture
def mapped_files():
    """``f(tensor)``: the files whose memory mappings (/proc/self/maps) hold the tensor's data."""
    if not os.path.exists("/proc/self/maps"):
        pytest.skip("needs Linux /proc")

    def files(tensor):
        ptr, found = tensor.data_ptr(), set()
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                start, end = (int(a, 16) for a in fields[0].split("-"))
                if start <= ptr < end and len(fields) > 5:
                    found.add(fields[5])
        return found

    return files
