"""The GHN a sweep fine-tunes from, trained here when ``--ghn`` names none (the transfer preset).

Transfer is only measured from a GHN whose training data is known: the sweep trains one with
``ghntrain`` on the ``--ghn-train-*`` settings, as a Ray task on the sweep's own Ray, before its
preflight (which reads the GHN). The task's checkpoint is cached under
``ghn.cache_dir()/ghns/<key>.pt``, keyed by a hash of the settings that shape it, written
atomically under a file lock: the next sweep with the same settings reuses it, and two sweeps
started together train it once. The settings are logged as the equivalent
``python -m ghn train`` command, so the GHN can be rebuilt or inspected without a sweep.

Also here: how far each fine-tuned architecture is from those the GHN learned on (tags on the
parent run, names in ``contract``).
"""

from __future__ import annotations

import copy
import dataclasses
import fcntl
import hashlib
import json
import logging
import shlex
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from contract import GHN_ARCH_FAMILY_SEEN_PREFIX, GHN_ARCH_TOP1_PREFIX
from ghn import cache_dir, save_atomic

from ._config import SweepConfig

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0  # the driver says the training is alive this often
STEPS_PER_S = 1.19  # GHN-2, hid 32, 2 CPU cores (docs/results.md): for the time estimate only


def training_settings(cfg: SweepConfig) -> dict[str, Any]:
    """What shapes the GHN an empty ``--ghn`` trains: the cache key's contents."""
    return {"data": cfg.dataset, "classes": list(cfg.ghn_train_classes),
            "families": list(cfg.ghn_train_families), "steps": cfg.ghn_train_steps,
            "hid": cfg.ghn_train_hid, "seed": cfg.ghn_train_seed, "model": cfg.ghn_train_model}


def cache_key(settings: dict[str, Any]) -> str:
    """A stable short hash of ``settings``: equal settings, equal file, whatever their order."""
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_ghn_path(settings: dict[str, Any]) -> Path:
    """Where the GHN of ``settings`` is cached."""
    return cache_dir() / "ghns" / f"{cache_key(settings)}.pt"


def train_command(settings: dict[str, Any], out: Path) -> str:
    """The `python -m ghn train` command line that trains the same GHN outside a sweep."""
    args = ["python", "-m", "ghn", "train", "--data", settings["data"],
            "--classes", ",".join(settings["classes"]),
            "--families", ",".join(settings["families"]), "--steps", str(settings["steps"]),
            "--hid", str(settings["hid"]), "--seed", str(settings["seed"]),
            "--model", settings["model"], "--out", str(out)]
    return shlex.join(args)


def with_ghn(cfg: SweepConfig, start_ray: Callable[[SweepConfig], None]) -> SweepConfig:
    """``cfg`` with ``ghn`` set to a checkpoint file: as given, or, for an empty ``--ghn``, the
    cached GHN of its training settings, trained first as a Ray task (``start_ray`` starts the
    sweep's Ray) when the cache lacks it."""
    if cfg.ghn:
        return cfg
    settings = training_settings(cfg)
    path = cached_ghn_path(settings)
    with _locked(path):
        if path.is_file():
            log.info("reusing the GHN trained with: %s", train_command(settings, path))
        else:
            minutes = settings["steps"] / STEPS_PER_S / 60
            log.info("training the GHN first (about %.0f min, estimated at %.2f steps/s on 2 "
                     "cores), as: %s", minutes, STEPS_PER_S, train_command(settings, path))
            start_ray(cfg)
            save_atomic(_train_on_ray(settings, _task_cpus(cfg)), path)
            log.info("GHN cached at %s", path)
    return dataclasses.replace(cfg, ghn=str(path))


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside ``path``: one sweep trains, a second one waits and reuses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _task_cpus(cfg: SweepConfig) -> float:
    """The CPUs the trials would use at once, at most what Ray has: the training runs alone."""
    import ray

    return max(1.0, min(cfg.max_concurrent * cfg.cpus_per_trial,
                        ray.cluster_resources().get("CPU", 1.0)))


def _train_on_ray(settings: dict[str, Any], cpus: float) -> dict[str, Any]:
    """The trained GHN's checkpoint, from a Ray task; logs a heartbeat while it runs, since the
    task's own log lines stay in Ray's session directory."""
    import ray

    ref = ray.remote(num_cpus=cpus, max_retries=0)(train_ghn).remote(settings, int(cpus))
    start, total = time.time(), settings["steps"] / STEPS_PER_S
    while not ray.wait([ref], timeout=HEARTBEAT_S)[0]:
        elapsed = time.time() - start
        log.info("training the GHN: %.0f s so far, about %.0f s left (estimate)", elapsed,
                 max(0.0, total - elapsed))
    ckpt = ray.get(ref)
    log.info("GHN trained in %.0f s", time.time() - start)
    return ckpt


def train_ghn(settings: dict[str, Any], threads: int) -> dict[str, Any]:
    """Train the GHN of ``settings`` with ``ghntrain`` (run as a Ray task) and return its
    checkpoint, which the driver caches: the task's node need not share the driver's disk."""
    import torch

    from ghntrain import TrainConfig, Trainer, load_images, read_checkpoint, train

    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(max(1, threads))
    cfg = TrainConfig(steps=settings["steps"], hid=settings["hid"], seed=settings["seed"],
                      families=tuple(settings["families"]), model=settings["model"])
    images = load_images(settings["data"], tuple(settings["classes"]), "train", None)
    trainer = Trainer(cfg, images)
    trainer.meta["data"] = settings["data"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ghn.pt"
        train(trainer, out)
        return read_checkpoint(out)


def arch_family(arch: str) -> str:
    """The ``ghntrain`` family a torchvision name belongs to ('' if none): resnet18 -> resnet,
    convnext_tiny -> convnext, mobilenet_v2 -> mobilenet."""
    from ghntrain import FAMILIES

    return next((f for f in FAMILIES if arch.startswith(f)), "")


def arch_distance_tags(cfg: SweepConfig, ghn_net: Any) -> dict[str, str]:
    """Per fine-tuned architecture, how far it is from those the GHN trained on: whether its
    family was a training family, and the GHN's top-1 on its own classes' test images with the
    parameters it predicts for it, without fine-tuning (near chance: the GHN has little to
    offer it). Only for a GHN trained here, whose checkpoint names its classes and families;
    empty otherwise. The top-1s are cached beside the GHN: on 50 images per class they cost
    about 40 s on 2 cores."""
    from ghntrain import read_checkpoint

    try:
        ckpt = read_checkpoint(Path(cfg.ghn))
    except ValueError:
        return {}
    train_config, classes = ckpt.get("train_config"), ckpt.get("classes")
    if not train_config or not classes:
        return {}
    tags = {}
    top1 = _ghn_top1(cfg, ghn_net, ckpt)
    for arch in cfg.archs:
        seen = str(arch_family(arch) in train_config["families"]).lower()
        tags[GHN_ARCH_FAMILY_SEEN_PREFIX + arch] = seen
        if arch in top1:
            tags[GHN_ARCH_TOP1_PREFIX + arch] = f"{top1[arch]:.4f}"
            log.info("%s: the GHN's own top-1 on its %d classes, without fine-tuning: %.3f "
                     "(chance %.3f; family seen: %s)", arch, len(classes), top1[arch],
                     1 / len(classes), seen)
    return tags


def _ghn_top1(cfg: SweepConfig, ghn_net: Any, ckpt: dict[str, Any]) -> dict[str, float]:
    """arch -> the GHN's top-1 with its predicted parameters, from the cache file beside the
    GHN where it has them; measured (and cached) for the others. Empty when the GHN's data
    cannot be read here."""
    from ghntrain import evaluate, load_images, named_archs

    per_class = cfg.ghn_distance_per_class
    cache = Path(cfg.ghn).with_suffix(f".top1-{per_class}.json")
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    missing = [a for a in cfg.archs if a not in known]
    if not missing or not per_class:
        return known
    data, classes = ckpt.get("meta", {}).get("data", cfg.dataset), ckpt["classes"]
    try:
        images = load_images(data, tuple(classes), "test", per_class)
    except (OSError, RuntimeError, ValueError) as e:
        log.warning("the GHN's distance to the architectures is not measured: its data %s: %s",
                    data, e)
        return known
    results = evaluate(ghn_net, named_archs(missing, len(classes)), images.x, images.y,
                       images.mean, images.std, image_size=ckpt["train_config"]["image_size"])
    known.update({a: r.predicted for a, r in zip(missing, results, strict=True)})
    with _locked(cache):
        tmp = cache.with_name(cache.name + ".tmp")
        tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
        tmp.replace(cache)
    return known


def planned_ghn(cfg: SweepConfig) -> tuple[SweepConfig, dict[str, Any] | None]:
    """For ``--dry-run``: ``cfg`` with the GHN it will use, and for an empty ``--ghn`` what the
    sweep would train (the command, the cache file, whether it is there). The copy is made
    without SweepConfig's checks, which would refuse a cache file not yet trained."""
    if cfg.ghn:
        return cfg, None
    settings = training_settings(cfg)
    path = cached_ghn_path(settings)
    planned = copy.copy(cfg)
    object.__setattr__(planned, "ghn", str(path))
    return planned, {"command": train_command(settings, path), "cache_file": str(path),
                     "cached": path.is_file()}
