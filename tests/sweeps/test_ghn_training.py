"""The transfer preset's GHN: its settings are checked when the configuration is built, its cache
key names exactly what shapes it, and the command it prints trains the same GHN."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import pytest

from ghntrain import add_commands
from sweeps._config import PRESETS, SweepConfig
from sweeps._ghn_training import (
    arch_family,
    cache_key,
    cached_ghn_path,
    planned_ghn,
    train_command,
    training_settings,
)


def _cfg(**fields) -> SweepConfig:
    return SweepConfig(**{"ghn": "", "dataset": "cifar10", **fields})


def test_the_transfer_preset_fine_tunes_on_classes_and_an_architecture_the_ghn_never_saw():
    cfg = SweepConfig(**{**PRESETS["transfer"], "dataset": "cifar10"})
    assert cfg.ghn == ""
    assert not set(cfg.classes) & set(cfg.ghn_train_classes)
    assert "convnext" not in cfg.ghn_train_families
    assert any(a.startswith("convnext") for a in cfg.archs)
    assert any(a.startswith("resnet") for a in cfg.archs)
    assert cfg.n_shots == 100 and cfg.repeats >= 5


@pytest.mark.parametrize(("fields", "flag"), [
    ({"ghn_train_steps": 0}, "--ghn-train-steps"),
    ({"ghn_train_hid": 0}, "--ghn-train-hid"),
    ({"ghn_train_families": ("resnet", "vgg")}, "--ghn-train-families"),
    ({"ghn_train_families": ()}, "--ghn-train-families"),
    ({"ghn_train_model": "ghn4"}, "--ghn-train-model"),
    ({"ghn_train_classes": ("cat",)}, "--ghn-train-classes"),
    ({"ghn_train_classes": ("cat", "unicorn")}, "--ghn-train-classes"),
    ({"ghn_distance_per_class": -1}, "--ghn-distance-per-class"),
])
def test_bad_ghn_training_settings_are_refused_when_the_configuration_is_built(fields, flag):
    with pytest.raises(ValueError, match=flag):
        _cfg(**fields)


def test_the_training_settings_are_not_checked_when_a_ghn_is_given(tmp_path):
    ghn = tmp_path / "g.pt"
    ghn.write_bytes(b"")
    assert SweepConfig(ghn=str(ghn), ghn_train_steps=0).ghn == str(ghn)


def test_the_cache_key_changes_with_each_setting_and_not_with_their_order():
    settings = training_settings(_cfg())
    assert cache_key(settings) == cache_key(dict(reversed(list(settings.items()))))
    changed = {"data": "/elsewhere", "classes": ["cat", "dog"], "families": ["resnet"],
               "steps": 7, "hid": 8, "seed": 1, "model": "ghn3"}
    assert set(changed) == set(settings)
    keys = {cache_key({**settings, k: v}) for k, v in changed.items()}
    assert len(keys) == len(changed) and cache_key(settings) not in keys


def test_the_cache_file_lies_under_the_cache_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("GHN_SWEEP_CACHE", str(tmp_path))
    settings = training_settings(_cfg())
    assert cached_ghn_path(settings) == tmp_path / "ghns" / f"{cache_key(settings)}.pt"


def test_the_printed_command_is_ghntrains_own_with_the_same_settings():
    settings = training_settings(_cfg(ghn_train_steps=9, ghn_train_hid=8,
                                      ghn_train_families=("resnet", "darts")))
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    argv = shlex.split(train_command(settings, Path("/x/g.pt")))
    assert argv[:4] == ["python", "-m", "ghn", "train"]
    args = parser.parse_args(argv[3:])
    assert (args.data, args.classes, args.steps, args.hid, args.seed, args.model) == (
        "cifar10", "airplane,automobile,bird,cat,deer", 9, 8, 0, "ghn2")
    assert tuple(args.families) == ("resnet", "darts") and args.out == "/x/g.pt"


def test_a_dry_run_names_the_ghn_it_would_train():
    planned, plan = planned_ghn(_cfg())
    assert plan is not None and planned.ghn == plan["cache_file"]
    assert plan["command"].endswith(plan["cache_file"])


@pytest.mark.parametrize(("arch", "family"), [("resnet18", "resnet"),
                                              ("convnext_tiny", "convnext"),
                                              ("mobilenet_v3_small", "mobilenet"),
                                              ("vgg11", "")])
def test_architectures_map_to_ghntrains_families(arch, family):
    assert arch_family(arch) == family
