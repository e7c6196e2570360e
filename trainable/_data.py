"""Data on the device: decode once into uint8 tensors, split per class, augment whole batches.

100-shot CIFAR is 3 MB and full CIFAR-10 150 MB as uint8, so everything stays on the training
device and an epoch is a ``randperm`` plus one gather per batch (random 4-pixel-padded crop and
horizontal flip folded into the gather indices): no per-image Python work, no DataLoader workers.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ghn import cache_dir

from ._cache import cache_key, cached_torch
from ._config import DataConfig

_logger = logging.getLogger(__name__)

PAD = 4  # pixels of zero padding for the random crop (the usual CIFAR augmentation)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
# CIFAR-10's classes in label order, as torchvision reads them from the archive's batches.meta:
# fixed since 2009, so a class selection is checked without downloading the 170 MB archive.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


@dataclass
class Splits:
    """uint8 NHWC images and int64 labels on one device; ``train_x`` is stored padded by PAD."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: torch.Tensor  # (1, C, 1, 1) float, of the training images, in [0, 1] units
    std: torch.Tensor
    num_classes: int
    classes: tuple[str, ...] = ()  # names in label order (a GHN predicts a head only for its own)


def load_splits(cfg: DataConfig, device: torch.device, seed: int = 0) -> Splits:
    """Decoded dataset (cached on disk) -> seeded per-class shots / val / test on ``device``.

    ``cfg.split_seed`` fixes the validation and test images, so every trial of a sweep is
    selected and scored on the same ones; the n-shot training images are drawn from the rest by
    the trial's ``seed``, since which 100 images a class gets moves accuracy as much as a model's
    init does, and repeats over seeds should measure both.
    """
    raw = _decoded(cfg)
    g = torch.Generator().manual_seed(cfg.split_seed)
    val_idx, rest = _per_class(raw["train_y"], g, cfg.val_per_class, None, "train")
    test_idx = _per_class(raw["test_y"], g, 0, cfg.test_per_class, "test")[1]
    shots = torch.Generator().manual_seed(seed)
    train_idx = rest[_per_class(raw["train_y"][rest], shots, 0, cfg.n_shots, "train")[1]]
    train_x = raw["train_x"][train_idx]
    as_float = train_x.float().div_(255)
    mean = as_float.mean(dim=(0, 1, 2)).view(1, -1, 1, 1)
    std = as_float.std(dim=(0, 1, 2)).view(1, -1, 1, 1)
    splits = Splits(
        train_x=pad_for_crop(train_x), train_y=raw["train_y"][train_idx],
        val_x=raw["train_x"][val_idx], val_y=raw["train_y"][val_idx],
        test_x=raw["test_x"][test_idx], test_y=raw["test_y"][test_idx],
        mean=mean, std=std, num_classes=len(raw["classes"]), classes=tuple(raw["classes"]),
    )
    for name, value in vars(splits).items():
        if isinstance(value, torch.Tensor):
            setattr(splits, name, value.to(device))
    _logger.info("data %s: %d train / %d val / %d test images, %d classes", cfg.dataset,
                 len(train_idx), len(val_idx), len(test_idx), splits.num_classes)
    return splits


def _per_class(
    labels: torch.Tensor, g: torch.Generator, first: int, second: int | None, split: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, a seeded shuffle cut into ``first`` then ``second`` (None: the rest) indices."""
    a, b = [], []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        need = first + (second or 0)
        if len(idx) < need or len(idx) <= first:
            raise ValueError(f"data: class {c} has {len(idx)} {split} images, needs {need}")
        a.append(idx[:first])
        b.append(idx[first:] if second is None else idx[first:need])
    return torch.cat(a), torch.cat(b)


def prepare_data(cfg: DataConfig) -> int:
    """Download and decode once, ahead of the trials (a sweep's driver calls this, so a bad
    dataset fails before any trial starts); returns the class count."""
    return len(_decoded(cfg)["classes"])


def _decoded(cfg: DataConfig) -> dict:
    """The dataset (its ``data.classes``, relabelled 0..k-1) as uint8 NHWC tensors, decoded once
    per node and cached on disk."""
    if cfg.dataset in ("cifar10", "cifar100"):
        root = Path(cfg.root) if cfg.root else cache_dir() / "data"
        key = cache_key(dataset=cfg.dataset)
        raw = cached_torch("datasets", key, lambda: _torchvision_cifar(cfg.dataset, root))
        # One cached copy of the whole arrays; a class subset is a cheap gather of it.
        return _select(raw, resolve_classes(cfg.classes, raw["classes"], cfg.dataset))
    path = Path(cfg.dataset).expanduser().resolve()
    if not (path / "train").is_dir() or not (path / "test").is_dir():
        raise ValueError(f"data.dataset: expected cifar10, cifar100 or a folder with train/ and "
                         f"test/ subfolders, got {cfg.dataset!r}")
    classes = resolve_classes(cfg.classes, _folder_classes(path), cfg.dataset)
    files = sorted(f for c in classes for split in ("train", "test")
                   for f in (path / split / c).glob("*"))
    _require_images(path, classes)
    # The key changes when files are added, removed or touched, and with the class selection.
    stamp = (len(files), max((f.stat().st_mtime_ns for f in files), default=0))
    parts = {"classes": classes} if cfg.classes else {}
    key = cache_key(dataset=str(path), stamp=stamp, **parts)
    return cached_torch("datasets", key, lambda: _image_folder(path, classes))


def dataset_classes(dataset: str, root: str | None = None) -> list[str] | None:
    """The class names of ``dataset`` in label order, found cheaply, so a sweep can check a class
    selection before anything is downloaded or decoded: CIFAR-10's fixed list, an ImageFolder
    tree's class folders, CIFAR-100's from its metadata when the archive is already extracted
    under ``root`` (default ``<cache>/data``); None when they are not known without a download."""
    if dataset == "cifar10":
        return list(CIFAR10_CLASSES)
    if dataset == "cifar100":
        meta = (Path(root) if root else cache_dir() / "data") / "cifar-100-python" / "meta"
        if not meta.is_file():
            return None
        import pickle

        with open(meta, "rb") as f:  # torchvision's own file, as torchvision reads it
            return list(pickle.load(f, encoding="latin1")["fine_label_names"])
    path = Path(dataset).expanduser()
    return _folder_classes(path) if (path / "train").is_dir() else None


def _folder_classes(path: Path) -> list[str]:
    """An ImageFolder tree's classes: the folders under train/, sorted (ImageFolder's order)."""
    return sorted(d.name for d in (path / "train").iterdir() if d.is_dir())


def resolve_classes(requested: tuple[str | int, ...], known: list[str], dataset: str) -> list[str]:
    """``data.classes`` (names or indices into ``known``) -> class names in the order given;
    empty: all of ``known``. Unknown names and out-of-range indices name the known classes."""
    if not requested:
        return list(known)
    names = []
    for c in requested:
        if isinstance(c, int):
            if not 0 <= c < len(known):
                raise ValueError(f"data.classes: index {c} is out of range for {dataset!r}, "
                                 f"which has {len(known)} classes: {known}")
            names.append(known[c])
        elif c in known:
            names.append(c)
        else:
            close = difflib.get_close_matches(c, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"data.classes: {dataset!r} has no class {c!r}{hint}; "
                             f"known classes: {known}")
    if len(set(names)) != len(names):
        raise ValueError(f"data.classes: {list(requested)} names a class twice: {names}")
    return names


def _select(raw: dict, classes: list[str]) -> dict:
    """Keep ``classes`` of a decoded dataset, relabelled 0..k-1 in the order given."""
    if classes == raw["classes"]:
        return raw
    lut = torch.full((len(raw["classes"]),), -1, dtype=torch.long)
    lut[[raw["classes"].index(c) for c in classes]] = torch.arange(len(classes))
    out: dict = {"classes": list(classes)}
    for split in ("train", "test"):
        y = lut[raw[f"{split}_y"]]
        keep = y >= 0
        out[f"{split}_x"], out[f"{split}_y"] = raw[f"{split}_x"][keep], y[keep]
    return out


def _torchvision_cifar(name: str, root: Path) -> dict:
    """Download (under a lock, once per node) and convert torchvision's CIFAR arrays."""
    from filelock import FileLock
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{name}.lock")):
        train, test = cls(root, train=True, download=True), cls(root, train=False, download=True)
    return {
        "train_x": torch.from_numpy(train.data), "train_y": torch.tensor(train.targets),
        "test_x": torch.from_numpy(test.data), "test_y": torch.tensor(test.targets),
        "classes": list(train.classes),
    }


def _image_folder(path: Path, classes: list[str]) -> dict:
    """Decode ``classes`` of an ImageFolder tree (class subfolders under train/ and test/) into
    uint8 NHWC, labelled by their position in ``classes``."""
    out: dict = {"classes": classes}
    for split in ("train", "test"):
        images, labels = [], []
        for label, name in enumerate(classes):
            for f in sorted((path / split / name).iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    images.append(torch.from_numpy(_decode(f)))
                    labels.append(label)
        shapes = {tuple(im.shape) for im in images}
        if len(shapes) != 1:
            raise ValueError(f"data.dataset: images in {path / split} differ in size: {shapes}")
        out[f"{split}_x"] = torch.stack(images)  # already NHWC
        out[f"{split}_y"] = torch.tensor(labels)
    _logger.info("decoded %s: %d train, %d test images", path, len(out["train_y"]),
                 len(out["test_y"]))
    return out


def _require_images(path: Path, classes: list[str]) -> None:
    """Every class has images in train/ and test/: an empty class folder would silently train a
    classifier with a class it never sees."""
    for split in ("train", "test"):
        for name in classes:
            folder = path / split / name
            if not folder.is_dir() or not any(f.suffix.lower() in IMAGE_SUFFIXES
                                               for f in folder.iterdir()):
                raise ValueError(f"data.dataset: class folder {folder} holds no images "
                                 f"({', '.join(sorted(IMAGE_SUFFIXES))}); add its images, or "
                                 "leave the class out (data.classes)")


def _decode(f: Path) -> Any:
    """One image as uint8 HWC RGB; a file that does not decode is named, with what to do."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(f) as im:
            return np.array(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as e:  # PIL's errors for corrupt/truncated files
        raise ValueError(f"data.dataset: cannot decode {f} ({type(e).__name__}: {e}); replace "
                         "or delete the file") from None


def pad_for_crop(x: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC images with PAD zero pixels around H and W, as ``crop_flip`` reads them."""
    return F.pad(x, (0, 0, PAD, PAD, PAD, PAD))  # NHWC: pad H and W, not C


def crop_flip(padded: torch.Tensor, idx: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
              flip: torch.Tensor) -> torch.Tensor:
    """The images ``idx`` of ``padded`` (``pad_for_crop``'s), each cropped at its offset
    (``dy``, ``dx`` in 0..2*PAD) and mirrored where ``flip``: the usual CIFAR augmentation in
    one gather, with no per-image Python work."""
    h, w, dev = padded.shape[1] - 2 * PAD, padded.shape[2] - 2 * PAD, padded.device
    ar_h, ar_w = torch.arange(h, device=dev), torch.arange(w, device=dev)
    rows = dy[:, None] + ar_h
    cols = dx[:, None] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)
    return padded[idx[:, None, None], rows[:, :, None], cols[:, None, :]]


def to_input(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, size: int,
             channels_last: bool = False) -> torch.Tensor:
    """uint8 NHWC batch -> float NCHW normalised by ``mean`` and ``std`` (1, C, 1, 1) at
    ``size`` (resized on the device if needed)."""
    x = x.permute(0, 3, 1, 2).float().div_(255).sub_(mean).div_(std)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Batches ``train_batches`` yields: enough full batches to show every image once."""
    return max(1, math.ceil(n / batch_size))


def train_batches(
    splits: Splits, batch_size: int, g: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of augmented uint8 NHWC batches: shuffled, random crop + flip in one gather.

    Every batch has the same size (a static shape, so a captured step replays): the shuffled
    order is topped up with the first images of the same order until the last batch is full
    (1,000 images in batches of 96: 11 batches, 56 images seen twice, each with its own crop).
    With fewer images than ``batch_size``, one batch of all of them.
    """
    x, y = splits.train_x, splits.train_y
    n = len(y)
    bs = min(batch_size, n)
    m = steps_per_epoch(n, bs) * bs
    dev = x.device
    order = torch.randperm(n, generator=g, device=dev)
    order = torch.cat([order, order[: m - n]])  # the top-up never repeats within the last batch
    dy = torch.randint(0, 2 * PAD + 1, (m,), generator=g, device=dev)
    dx = torch.randint(0, 2 * PAD + 1, (m,), generator=g, device=dev)
    flip = torch.rand(m, generator=g, device=dev) < 0.5
    for i in range(0, m, bs):
        b = slice(i, i + bs)
        idx = order[b]
        yield crop_flip(x, idx, dy[b], dx[b], flip[b]), y[idx]


def eval_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """In order, ``(images, labels, real)`` batches of one size, ``min(batch_size, len(y))``: the
    last is padded with the split's first images, and only its first ``real`` rows count."""
    bs = min(batch_size, len(y))
    for i in range(0, len(y), bs):
        real = min(bs, len(y) - i)
        xb, yb = x[i : i + real], y[i : i + real]
        if real < bs:
            xb, yb = torch.cat([xb, x[: bs - real]]), torch.cat([yb, y[: bs - real]])
        yield xb, yb, real
