"""Packing arithmetic, and every GPU preset against the worker node type of cluster.yaml."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from sweeps._config import PRESETS, SweepConfig
from sweeps._packing import trials_per_node

CLUSTER = Path(__file__).resolve().parents[2] / "cluster.yaml"
G5 = {"node_cpus": 4, "node_gpus": 1}  # g5.xlarge


@pytest.mark.parametrize(("cpus", "gpus", "node", "expect"), [
    (1, 0.25, G5, 4),
    (4, 0.25, G5, 1),  # the CPUs run out first: a quarter GPU packs nothing
    (2, 0.25, G5, 2),
    (1, 0.3, G5, 3),  # shares of one card: 3 x 0.3, not 3.33
    (1, 1, G5, 1),
    (1, 0, G5, 4),
    (0.5, 0.5, {"node_cpus": 16, "node_gpus": 2}, 4),
    (1, 2, {"node_cpus": 16, "node_gpus": 8}, 4),
    (1, 1, {"node_cpus": 4, "node_gpus": 0}, 0),
])
def test_trials_per_node(cpus, gpus, node, expect):
    assert trials_per_node(**node, cpus_per_trial=cpus, gpus_per_trial=gpus) == expect


def test_bad_resources_are_refused():
    with pytest.raises(ValueError, match="cpus_per_trial > 0"):
        trials_per_node(node_cpus=4, node_gpus=1, cpus_per_trial=0, gpus_per_trial=0.25)


def _preset(name):
    defaults = {f.name: f.default for f in dataclasses.fields(SweepConfig)}
    return {**defaults, **PRESETS[name]}


def _gpu_workers():
    types = yaml.safe_load(CLUSTER.read_text())["available_node_types"]
    return {k: t for k, t in types.items() if t.get("resources", {}).get("GPU", 0) > 0}


@pytest.mark.parametrize("name", [n for n in PRESETS if _preset(n)["gpus_per_trial"] > 0])
def test_gpu_presets_fill_the_cluster_workers(name):
    preset, workers = _preset(name), _gpu_workers()
    assert workers, "cluster.yaml has no GPU worker type"
    slots = 0
    for node_type in workers.values():
        res = node_type["resources"]
        per_node = trials_per_node(
            node_cpus=res["CPU"], node_gpus=res["GPU"], cpus_per_trial=preset["cpus_per_trial"],
            gpus_per_trial=preset["gpus_per_trial"])
        # Every GPU share of a node is used: no card idles for want of CPUs.
        assert per_node == res["GPU"] * round(1 / min(1, preset["gpus_per_trial"])), name
        slots += per_node * node_type["max_workers"]
    assert preset["max_concurrent"] == slots  # the sweep runs as many trials as the cluster holds
