from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from trainable import DataConfig, _data
from trainable._data import (
    PAD,
    Splits,
    eval_batches,
    load_splits,
    steps_per_epoch,
    to_input,
    train_batches,
)


def _per_class_counts(y):
    return torch.bincount(y, minlength=10).tolist()


def test_splits_are_per_class_seeded_and_disjoint(cifar_jpeg_dir):
    cfg = DataConfig(dataset=str(cifar_jpeg_dir), n_shots=20, val_per_class=10, test_per_class=30)
    s = load_splits(cfg, torch.device("cpu"))
    assert s.num_classes == 10 and s.train_x.dtype == torch.uint8
    assert s.train_x.shape == (200, 32 + 2 * PAD, 32 + 2 * PAD, 3)
    assert _per_class_counts(s.train_y) == [20] * 10
    assert _per_class_counts(s.val_y) == [10] * 10
    assert _per_class_counts(s.test_y) == [30] * 10
    train = {bytes(x.numpy()) for x in s.train_x[:, PAD:-PAD, PAD:-PAD]}
    assert not train & {bytes(x.numpy()) for x in s.val_x}  # validation never trains
    again = load_splits(cfg, torch.device("cpu"))
    assert torch.equal(again.train_x, s.train_x) and torch.equal(again.val_y, s.val_y)
    other = load_splits(DataConfig(dataset=cfg.dataset, n_shots=20, val_per_class=10,
                                   test_per_class=30, split_seed=1), torch.device("cpu"))
    assert not torch.equal(other.train_x, s.train_x)


def test_the_trial_seed_draws_the_shots_but_not_validation_or_test(cifar_jpeg_dir):
    cfg = DataConfig(dataset=str(cifar_jpeg_dir), n_shots=20, val_per_class=10, test_per_class=30)
    a, b = (load_splits(cfg, torch.device("cpu"), seed=s) for s in (0, 1))
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.test_x, b.test_x)
    assert not torch.equal(a.train_x, b.train_x)
    assert _per_class_counts(b.train_y) == [20] * 10
    shots_b = {bytes(x.numpy()) for x in b.train_x[:, PAD:-PAD, PAD:-PAD]}
    assert not shots_b & {bytes(x.numpy()) for x in a.val_x}  # still never a validation image


def test_decoded_dataset_is_cached(cifar_jpeg_dir, monkeypatch):
    cfg = DataConfig(dataset=str(cifar_jpeg_dir), n_shots=5, val_per_class=5, test_per_class=5)
    load_splits(cfg, torch.device("cpu"))

    def boom(path):
        raise AssertionError("decoded twice")

    monkeypatch.setattr(_data, "_image_folder", boom)
    assert len(load_splits(cfg, torch.device("cpu")).train_y) == 50


def test_decoded_dataset_is_read_mapped_and_equals_a_fresh_decode(cifar_jpeg_dir, mapped_files):
    cfg = DataConfig(dataset=str(cifar_jpeg_dir))
    cached = _data._decoded(cfg)  # decoded by an earlier test or now, then read back mapped
    fresh = _data._image_folder(cifar_jpeg_dir.resolve(), cached["classes"])
    for key in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(cached[key], fresh[key]), key
    # The images are the cache file's pages, which the trials of a node share, not a copy.
    assert {Path(f).parent.name for f in mapped_files(cached["train_x"])} == {"datasets"}


def test_batched_crop_and_flip_match_per_image_ops():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 6, 6, 3), dtype=torch.uint8, generator=g)
    padded = F.pad(images, (0, 0, PAD, PAD, PAD, PAD))
    splits = Splits(padded, torch.arange(8), images, torch.arange(8), images, torch.arange(8),
                    torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1), 8)
    seen_flip = set()
    for _ in range(5):
        for xb, yb in train_batches(splits, 3, g):
            for x, y in zip(xb, yb, strict=True):
                src = padded[y]
                crops = {(dy, dx, f): (src[dy:dy + 6, dx:dx + 6].flip(1) if f else
                                       src[dy:dy + 6, dx:dx + 6])
                         for dy in range(2 * PAD + 1) for dx in range(2 * PAD + 1)
                         for f in (0, 1)}
                hits = [k for k, c in crops.items() if torch.equal(c, x)]
                assert hits, "batch image is no crop of its source"
                seen_flip.update(k[2] for k in hits)
    assert seen_flip == {0, 1}


def test_to_input_normalises_and_resizes():
    x = torch.full((2, 8, 8, 3), 255, dtype=torch.uint8)
    splits = Splits(x, None, x, None, x, None, torch.full((1, 3, 1, 1), 0.5),
                    torch.full((1, 3, 1, 1), 0.25), 2)
    out = to_input(x, splits.mean, splits.std, 16, channels_last=False)
    assert out.shape == (2, 3, 16, 16) and torch.allclose(out, torch.full_like(out, 2.0))


def _index_splits(n):
    """Splits whose image i holds the value i everywhere, so a batch says which images it has."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 4, 4, 3).contiguous()
    padded = F.pad(images, (0, 0, PAD, PAD, PAD, PAD), value=255)
    return Splits(padded, torch.arange(n), images, torch.arange(n), images, torch.arange(n),
                  torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1), n)


def test_train_batches_are_full_and_show_every_image():
    splits = _index_splits(10)
    batches = list(train_batches(splits, 4, torch.Generator().manual_seed(0)))
    assert [len(yb) for _, yb in batches] == [4, 4, 4] == [4] * steps_per_epoch(10, 4)
    seen = torch.cat([yb for _, yb in batches])
    assert sorted(set(seen.tolist())) == list(range(10))  # every image, 2 of them twice
    last = batches[-1][1].tolist()
    assert len(set(last)) == len(last)  # the top-up never repeats an image within a batch
    one = list(train_batches(splits, 32, torch.Generator().manual_seed(0)))
    assert len(one) == 1 == steps_per_epoch(10, 32)
    assert sorted(one[0][1].tolist()) == list(range(10))


def test_eval_batches_have_one_shape_and_count_each_image_once():
    x, y = torch.arange(7).view(7, 1), torch.arange(7)
    batches = list(eval_batches(x, y, 3))
    assert [len(yb) for _, yb, _ in batches] == [3, 3, 3]
    counted = torch.cat([yb[:real] for _, yb, real in batches])
    assert counted.tolist() == list(range(7))
    assert [len(yb) for _, yb, _ in eval_batches(x, y, 100)] == [7]


def test_class_filter_relabels_in_the_given_order(cifar_jpeg_dir):
    full = DataConfig(dataset=str(cifar_jpeg_dir), n_shots=5, val_per_class=5, test_per_class=5)
    sub = DataConfig(dataset=full.dataset, n_shots=5, val_per_class=5, test_per_class=5,
                     classes=("truck", 1))  # a name and an index, in this order
    s, s_full = load_splits(sub, torch.device("cpu")), load_splits(full, torch.device("cpu"))
    assert s.num_classes == 2 and _data.prepare_data(sub) == 2
    assert torch.bincount(s.train_y).tolist() == [5, 5]
    raw, raw_full = _data._decoded(sub), _data._decoded(full)
    assert raw["classes"] == ["truck", "automobile"]
    truck, auto = raw_full["classes"].index("truck"), raw_full["classes"].index("automobile")
    for new, old in ((0, truck), (1, auto)):
        assert torch.equal(raw["test_x"][raw["test_y"] == new],
                           raw_full["test_x"][raw_full["test_y"] == old])
    assert s_full.num_classes == 10  # the subset did not overwrite the full tree's cache entry


@pytest.mark.parametrize(("classes", "match"), [
    (("airplane", "dgo"), r"no class 'dgo' \(did you mean 'dog'\?\); known classes: \['airplane'"),
    ((10,), r"index 10 is out of range .* 10 classes: \['airplane'"),
    (("cat", 3), r"names a class twice"),
])
def test_class_filter_bad_classes_name_the_known_ones(cifar_jpeg_dir, classes, match):
    cfg = DataConfig(dataset=str(cifar_jpeg_dir), classes=classes)
    with pytest.raises(ValueError, match=match):
        _data.prepare_data(cfg)


def test_class_filter_on_torchvision_arrays():
    raw = {"classes": ["a", "b", "c"], "train_x": torch.arange(6).view(6, 1, 1, 1),
           "train_y": torch.tensor([0, 1, 2, 0, 1, 2]), "test_x": torch.arange(3).view(3, 1, 1, 1),
           "test_y": torch.tensor([2, 1, 0])}
    out = _data._select(raw, _data.resolve_classes((2, "a"), raw["classes"], "toy"))
    assert out["classes"] == ["c", "a"]
    assert out["train_y"].tolist() == [1, 0, 1, 0]
    assert out["train_x"].flatten().tolist() == [0, 2, 3, 5]
    assert out["test_y"].tolist() == [0, 1] and out["test_x"].flatten().tolist() == [0, 2]


def test_trial_model_gets_the_filtered_class_count(tiny, monkeypatch):
    from trainable import TrialConfig, _loop, train

    heads = []

    def spy(cfg, num_classes, *, classes):
        model, tags = build(cfg, num_classes, classes=classes)
        heads.append((model.fc.out_features, classes))
        return model, tags

    build = _loop.build_model
    monkeypatch.setattr(_loop, "build_model", spy)
    flat = tiny(**{"optim.epochs": 1, "data.classes": ["dog", "frog", "horse"]})
    last = train(TrialConfig.from_flat(flat), report=lambda m: None)
    assert heads == [(3, ("dog", "frog", "horse"))] and 0.0 <= last["test/acc"] <= 1.0
