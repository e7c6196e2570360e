"""Find, download and load GHN checkpoints (official GHN-2 and GHN-3 files, and this project's
own), refusing anything that would need arbitrary code to unpickle."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from pathlib import Path

import torch
from filelock import FileLock

from ghn._checkpoint3 import (
    GHN3_URLS,
    build_ghn3,
    config_from_checkpoint,
    is_ghn3_state,
    is_official_ghn3_file,
    load_official,
    normalise_keys,
)
from ghn._files import cache_dir, layout_problems
from ghn._ghn3 import GHN3
from ghn._model import GHN2, GHN2Config, expected_state_shapes

log = logging.getLogger(__name__)

# The official files, in the checkpoints/ folder of facebookresearch/ppuda at the commit whose
# GHN-2 this package reproduces (a commit, not a branch: the file behind the URL cannot move).
PPUDA_COMMIT = "4673a42"
CHECKPOINT_URLS = {
    name: f"https://github.com/facebookresearch/ppuda/raw/{PPUDA_COMMIT}/checkpoints/{file}"
    for name, file in [("ghn2-imagenet", "ghn2_imagenet.pt"), ("ghn2-cifar10", "ghn2_cifar10.pt")]
} | GHN3_URLS
# What ppuda assumes for keys a checkpoint's config leaves out; only GHN-2's values are accepted.
_CONFIG_DEFAULTS = {"hypernet": "gatedgnn", "decoder": "conv", "weight_norm": False, "ve": False,
                    "layernorm": False, "hid": 32}
# The hidden size is free (GHN-2 is published with 32; `python -m ghn train --hid` picks others).
GHN2_SETTINGS = {"hypernet": "gatedgnn", "decoder": "conv", "weight_norm": True, "ve": True,
                 "layernorm": True}


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A local path as is; a known name downloaded once into the cache (atomically)."""
    key = str(name_or_path)
    if key not in CHECKPOINT_URLS:
        path = Path(key).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"GHN checkpoint {key!r} is neither a file nor a known name "
                f"({', '.join(CHECKPOINT_URLS)})"
            )
        return path
    url = CHECKPOINT_URLS[key]
    target = cache_dir() / "checkpoints" / url.rsplit("/", 1)[1]
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not target.is_file():
            _download(url, target, key)
    return target


def _download(url: str, target: Path, name: str) -> None:
    """torch.hub's downloader, which writes a temporary file and renames it when complete. The
    file's sha256 is logged, for a machine with network access to record beside the URL."""
    log.info("downloading %s from %s", name, url)
    try:
        torch.hub.download_url_to_file(url, str(target), progress=False)
    except OSError as e:
        raise FileNotFoundError(
            f"could not download GHN checkpoint {name!r} from {url} ({e}). On a machine without "
            f"network access, download that file elsewhere and put it at {target}, "
            "or pass a local path instead of the name."
        ) from e
    log.info("downloaded %s to %s (sha256 %s)", name, target, _sha256(target))


def load_ghn(name_or_path: str | os.PathLike, device: str | torch.device = "cpu"
             ) -> GHN2 | GHN3:
    """Load a GHN-2 or a GHN-3, whichever the file holds, from a known name (CHECKPOINT_URLS:
    'ghn2-imagenet', 'ghn2-cifar10', 'ghn3-tm8', 'ghn3-sm8', 'ghn3-lm8', 'ghn3-xlm16') or a
    path: an official file or one written by this project."""
    path = resolve_checkpoint(name_or_path)
    if is_official_ghn3_file(path):
        ghn = load_official(path)
        ghn.checkpoint_id = f"{path.stem}-{_sha256(path)[:12]}" + (
            "+ghn3" if isinstance(ghn, GHN2) else "")
        return ghn.to(device).eval()
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):  # a damaged file, not one of unsafe types
            raise ValueError(f"{path} is not a readable torch checkpoint: {e!r}") from e
        raise ValueError(
            f"{path} needs arbitrary unpickling to load, which is refused for safety: a GHN-2 "
            f"checkpoint holds only tensors, numbers and strings ({str(e).splitlines()[0]})"
        ) from e
    except Exception as e:  # torch.load raises many types on a damaged file
        raise ValueError(f"{path} is not a readable torch checkpoint: {e!r}") from e
    if _holds_ghn3(ckpt):
        config3 = config_from_checkpoint(ckpt, path)
        ghn = build_ghn3(normalise_keys(ckpt["state_dict"]), config3, path)
        ghn.checkpoint_id = f"{path.stem}-{_sha256(path)[:12]}"
        ghn.classes = _classes(ckpt, config3, path)
        return ghn.to(device).eval()
    config = _check_config(ckpt, path)
    state = ckpt["state_dict"]
    _check_state(state, config, path)
    ghn = GHN2(config)
    ghn.load_state_dict(state, strict=True)
    ghn.checkpoint_id = f"{path.stem}-{_sha256(path)[:12]}"
    ghn.classes = _classes(ckpt, config, path)
    return ghn.to(device).eval()


def _holds_ghn3(ckpt) -> bool:
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        return False
    config = ckpt.get("config")
    return (isinstance(config, dict) and config.get("ghn") == "ghn3") or \
        is_ghn3_state(ckpt["state_dict"])


def _classes(ckpt: dict, config, path: Path) -> tuple[str, ...] | None:
    """The class names a GHN trained here recorded (``python -m ghn train``), in label order;
    None for official checkpoints, which name none."""
    names = ckpt.get("classes")
    if not names:
        return None
    if not all(isinstance(n, str) for n in names) or len(names) != config.num_classes:
        raise ValueError(f"{path} records classes {names!r}, expected {config.num_classes} names")
    return tuple(names)


def _check_config(ckpt, path: Path) -> GHN2Config:
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path} is not a GHN checkpoint: expected a dict with 'state_dict' "
                         "and 'config'")
    config = {**_CONFIG_DEFAULTS, **ckpt["config"]}
    wrong = {k: config[k] for k, v in GHN2_SETTINGS.items() if config[k] != v}
    if wrong:
        raise ValueError(f"{path} is not a GHN-2 checkpoint: config has {wrong}, "
                         f"GHN-2 needs {dict((k, GHN2_SETTINGS[k]) for k in wrong)}")
    try:
        return GHN2Config(max_shape=tuple(int(d) for d in config["max_shape"]),
                          num_classes=int(config["num_classes"]), hid=int(config["hid"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path} has an invalid GHN-2 config {ckpt['config']}: {e}") from e


def _check_state(state, config: GHN2Config, path: Path) -> None:
    expected = expected_state_shapes(config)
    problems = layout_problems(state, expected)
    if problems:
        raise ValueError(f"{path} does not match the GHN-2 layout: {'. '.join(problems)}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
