"""Which GHN a sweep uses: its kind and size reach the parent run's tags, the trials' tags
and the report; a GHN-3's predictions are cached apart from a GHN-2's."""

from __future__ import annotations

from analysis._findings import class_paragraph
from contract import GHN_CONFIG_TAG, GHN_KIND_TAG, SWEEP_NUM_CLASSES_TAG
from ghn import load_ghn
from sweeps._classes import class_tags
from sweeps._config import SweepConfig
from trainable import ghn_tags


def test_class_tags_say_a_ghn3_is_a_ghn3(ghn3_reference_dir):
    path = ghn3_reference_dir / "ghn3_h80c10_random_seed0.pt"
    tags = class_tags(SweepConfig(dataset="cifar10", ghn=str(path)))
    assert tags[GHN_KIND_TAG] == "ghn3"
    assert tags[GHN_CONFIG_TAG] == ghn_tags(load_ghn(path))[GHN_CONFIG_TAG]
    assert tags[SWEEP_NUM_CLASSES_TAG] == "10"  # the class tags are still there


def test_ghn_tags_name_kind_and_size(reference_dir, ghn3_reference_dir):
    ghn3 = load_ghn(ghn3_reference_dir / "ghn3_h80c10_random_seed0.pt")
    c = ghn3.config
    assert ghn_tags(ghn3) == {
        GHN_KIND_TAG: "ghn3",
        GHN_CONFIG_TAG: f"hid={c.hid},heads={c.heads},layers={c.layers},"
                        f"max_shape={'x'.join(map(str, c.max_shape))},classes=10"}
    ghn2 = load_ghn(reference_dir / "ghn2_random_imagenet_seed0.pt")
    assert ghn_tags(ghn2)[GHN_KIND_TAG] == "ghn2"
    assert "heads" not in ghn_tags(ghn2)[GHN_CONFIG_TAG]


def test_a_ghn3_gets_its_own_prediction_cache_key(reference_dir, ghn3_reference_dir):
    """The cache key holds the checkpoint id: stem and content hash, so the two kinds (and two
    GHN-3 files) never share cached predictions."""
    ids = {load_ghn(reference_dir / "ghn2_random_imagenet_seed0.pt").checkpoint_id,
           load_ghn(ghn3_reference_dir / "ghn3_h80c10_random_seed0.pt").checkpoint_id,
           load_ghn(ghn3_reference_dir / "ghn3tm8_random_seed0.pt").checkpoint_id}
    assert len(ids) == 3


def test_the_report_says_which_ghn_it_was():
    tags = {GHN_KIND_TAG: "ghn3", GHN_CONFIG_TAG: "hid=64,heads=8,layers=3"}
    assert class_paragraph(tags).startswith(
        "**Classes.** The GHN is a GHN-3 (hid=64, heads=8, layers=3). ")
    assert class_paragraph({}).startswith("**Classes.** This sweep's record")  # older sweeps
