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
    out = to_input(x, splits, 16, channels_last=False)
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
