"""--classes: checked before Ray, passed to every trial, and set against the GHN's own classes."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from contract import (
    GHN_CLASS_OVERLAP_TAG,
    GHN_TRAIN_CLASSES_TAG,
    SWEEP_CLASSES_TAG,
    SWEEP_NUM_CLASSES_TAG,
    UNRECORDED,
)
from sweeps._classes import class_tags, joined
from sweeps._config import SweepConfig, parse_args
from sweeps._repeats import repeat_configs
from sweeps._space import baseline_configs, plan, trial_config
from sweeps.tracking import tracking_for
from trainable import dataset_classes

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


def _ghn_with_classes(reference_dir: Path, tmp_path: Path, classes: list[str] | None) -> str:
    """The reference 10-class GHN-2, saved as `python -m ghn train` saves one: with its
    classes."""
    ckpt = torch.load(reference_dir / "ghn2_random_cifar10_seed0.pt", weights_only=True)
    if classes is not None:
        ckpt["classes"] = classes
    path = tmp_path / "ghn.pt"
    torch.save(ckpt, path)
    return str(path)


def test_classes_reach_every_trials_data():
    cfg = parse_args(["--dataset", "cifar10", "--classes", "cat, dog,ship", "--repeats", "1"])
    assert cfg.classes == ("cat", "dog", "ship")
    points = baseline_configs(cfg)
    assert {trial_config(p, cfg).data.classes for p in points} == {("cat", "dog", "ship")}
    repeats = repeat_configs(cfg, [])  # the repeats re-run the baselines' own configs
    assert all(trial_config(r, cfg).data.classes == ("cat", "dog", "ship") for r in repeats)
    shown = plan(cfg)
    assert shown["sweep"]["classes"] == ("cat", "dog", "ship")
    assert shown["classes"] == ["cat", "dog", "ship"]
    assert all(b["data.classes"] == ("cat", "dog", "ship") for b in shown["baselines"])


def test_no_classes_means_all_and_leaves_trial_configs_as_they_were():
    cfg = SweepConfig(dataset="cifar10")
    assert "data.classes" not in baseline_configs(cfg)[0]
    assert trial_config(baseline_configs(cfg)[0], cfg).data.classes == ()
    assert plan(cfg)["classes"] == CIFAR10


@pytest.mark.parametrize("classes, message", [
    ("cat,dgo", "--classes: 'cifar10' has no class 'dgo' (did you mean 'dog'?); known classes: "
                "['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', "
                "'ship', 'truck']"),
    ("cat,cat", "names a class twice"),
])
def test_unknown_cifar10_class_exits_2_listing_the_classes(classes, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--dataset", "cifar10", "--classes", classes])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_image_folder_class_exits_2_listing_its_folders(cifar_jpeg_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--dataset", str(cifar_jpeg_dir), "--classes", "cat,zebra"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--classes:" in err and "no class 'zebra'" in err
    assert str(sorted(p.name for p in (cifar_jpeg_dir / "train").iterdir())) in err


def test_cifar100_classes_are_checked_once_its_data_is_here(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GHN_SWEEP_CACHE", str(tmp_path))
    assert dataset_classes("cifar100") is None  # not downloaded: the sweep's preflight checks
    assert parse_args(["--dataset", "cifar100", "--classes", "apple,zebra"]).classes
    meta = tmp_path / "data" / "cifar-100-python" / "meta"
    meta.parent.mkdir(parents=True)
    meta.write_bytes(pickle.dumps({"fine_label_names": ["apple", "aquarium_fish", "baby"]}))
    with pytest.raises(SystemExit):
        parse_args(["--dataset", "cifar100", "--classes", "apple,zebra"])
    assert "known classes: ['apple', 'aquarium_fish', 'baby']" in capsys.readouterr().err


def test_cifar10_classes_match_the_image_folder_tree(cifar_jpeg_dir):
    assert dataset_classes("cifar10") == CIFAR10 == dataset_classes(str(cifar_jpeg_dir))


@pytest.mark.parametrize("ghn_classes, sweep_classes, overlap", [
    (CIFAR10[:5], ("ship", "truck", "dog"), "0"),
    (CIFAR10[:5], ("bird", "cat", "frog", "airplane", "truck"), "3"),
    (CIFAR10, (), "10"),
])
def test_class_tags_count_the_classes_the_ghn_saw(reference_dir, tmp_path, ghn_classes,
                                                  sweep_classes, overlap):
    # a 10-class GHN must name 10 classes: pad the list with names of no dataset
    names = [*ghn_classes, *(f"other{i}" for i in range(10 - len(ghn_classes)))]
    cfg = SweepConfig(dataset="cifar10", classes=sweep_classes,
                      ghn=_ghn_with_classes(reference_dir, tmp_path, names))
    tags = class_tags(cfg)
    assert tags[GHN_CLASS_OVERLAP_TAG] == overlap
    assert tags[GHN_TRAIN_CLASSES_TAG] == ",".join(names)
    assert tags[SWEEP_NUM_CLASSES_TAG] == str(len(sweep_classes) or 10)
    assert tags[SWEEP_CLASSES_TAG] == ",".join(sweep_classes or CIFAR10)


def test_a_checkpoint_without_classes_is_said_to_record_none(reference_dir, tmp_path):
    cfg = SweepConfig(dataset="cifar10", classes=("cat",),
                      ghn=_ghn_with_classes(reference_dir, tmp_path, None))
    tags = class_tags(cfg)
    assert tags[GHN_TRAIN_CLASSES_TAG] == UNRECORDED and GHN_CLASS_OVERLAP_TAG not in tags


def test_overlap_is_tagged_on_the_parent_run(reference_dir, tmp_path, new_mlflow_store):
    cfg = SweepConfig(dataset="cifar10", classes=("cat", "dog", "ship"),
                      ghn=_ghn_with_classes(reference_dir, tmp_path, CIFAR10[:5] + ["x"] * 5),
                      tracking_uri=new_mlflow_store(tmp_path / "mlflow.db"), experiment="exp")
    cb = tracking_for(cfg, "sweep-id", final=True, parent_tags=class_tags(cfg))
    cb.setup()
    tags = MlflowClient(cfg.tracking_uri).get_run(cb.parent_run_id).data.tags
    assert tags[GHN_CLASS_OVERLAP_TAG] == "1" and tags[SWEEP_NUM_CLASSES_TAG] == "3"
    assert tags[SWEEP_CLASSES_TAG] == "cat,dog,ship"


def test_long_name_lists_are_cut_to_fit_an_mlflow_tag():
    names = [f"n{i:08d}" for i in range(1000)]
    text = joined(names)
    assert len(text) <= 4000 and text.endswith("in all)") and "1000 in all" in text
    assert joined(names[:3]) == "n00000000,n00000001,n00000002"


def test_resuming_a_sweep_from_before_classes_existed_is_no_change():
    from sweeps._identity import config_record
    from sweeps._preflight import config_changes

    cfg = SweepConfig(dataset="cifar10")
    stored = {k: v for k, v in config_record(cfg).items() if k != "classes"}
    assert config_changes(stored, cfg) == ([], [])
    harmful, _ = config_changes(config_record(cfg), SweepConfig(dataset="cifar10",
                                                                classes=("cat",)))
    assert harmful == [("classes", [], ["cat"])]


def test_preflight_tags_the_parent_run_and_keeps_the_tags_with_the_results(
        reference_dir, tmp_path, monkeypatch, new_mlflow_store):
    import json

    import sweeps._preflight as preflight_module
    from contract import SWEEP_RECORD_FILE

    monkeypatch.setattr(preflight_module, "prepare_inputs", lambda cfg: None)  # no data work
    cfg = SweepConfig(dataset="cifar10", classes=("cat", "dog"), storage=str(tmp_path / "ray"),
                      ghn=_ghn_with_classes(reference_dir, tmp_path, ["cat"] + ["x"] * 9),
                      tracking_uri=new_mlflow_store(tmp_path / "mlflow.db"), experiment="exp")
    cleared = preflight_module.preflight(cfg)
    cleared.tracking.setup()
    tags = MlflowClient(cfg.tracking_uri).get_run(cleared.tracking.parent_run_id).data.tags
    assert (tags[GHN_CLASS_OVERLAP_TAG], tags[SWEEP_NUM_CLASSES_TAG]) == ("1", "2")
    record = json.loads((Path(cfg.sweep_path) / SWEEP_RECORD_FILE).read_text())
    assert record["tags"][GHN_CLASS_OVERLAP_TAG] == "1"


@pytest.mark.parametrize("name, text", [("s.yaml", "classes: [cat, dog]\n"),
                                        ("s.toml", 'classes = "cat,dog"\n')])
def test_classes_from_a_config_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    assert parse_args(["--config", str(path), "--dataset", "cifar10"]).classes == ("cat", "dog")
