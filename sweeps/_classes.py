"""Which classes a sweep fine-tunes on, against those its GHN was trained on; and which GHN.

A gain from GHN init on classes the GHN has seen is not transfer: the report says which it is,
from the parent run's tags written here (names in `contract`). A GHN trained here
(``python -m ghn train``) records its classes in the checkpoint; the official GHN-2 checkpoints
record none, and the tags say so rather than guess. The same tags say whether the GHN is a
GHN-2 or a GHN-3 (``ghn.kind``, ``ghn.config``).
"""

from __future__ import annotations

import logging

from contract import (
    GHN_CLASS_OVERLAP_TAG,
    GHN_TRAIN_CLASSES_TAG,
    SWEEP_CLASSES_TAG,
    SWEEP_NUM_CLASSES_TAG,
    UNRECORDED,
)

from ._config import SweepConfig
from ._ghn_training import arch_distance_tags

log = logging.getLogger(__name__)

# MLflow refuses a tag value over 5,000 characters (and the tracking would switch itself off):
# longer name lists are cut, with a count of what was left out; the counts are tags of their own.
TAG_LIMIT = 4000


def sweep_classes(cfg: SweepConfig) -> list[str] | None:
    """The class names the sweep's trials fine-tune on, in label order; None when the dataset's
    names are not known on this machine (CIFAR-100 before its download)."""
    from trainable import dataset_classes, resolve_classes

    known = dataset_classes(cfg.dataset)
    if known is None:
        return list(cfg.classes) or None
    return resolve_classes(cfg.classes, known, cfg.dataset)


def class_tags(cfg: SweepConfig) -> dict[str, str]:
    """The parent run's tags of sweep ``cfg`` on its classes and its GHN (run after its data
    and checkpoint are in place): the GHN's kind and size, the sweep's classes, the GHN's, and
    how many of the sweep's the GHN saw. A checkpoint that cannot be read here leaves the GHN's
    unsaid (its trials will fail and say why)."""
    from ghn import load_ghn
    from trainable import ghn_tags

    used = sweep_classes(cfg)
    tags = {} if used is None else {SWEEP_CLASSES_TAG: joined(used),
                                     SWEEP_NUM_CLASSES_TAG: str(len(used))}
    try:
        ghn_net = load_ghn(cfg.ghn)
    except (OSError, ValueError, RuntimeError) as e:
        log.warning("could not read GHN %s (%s); the report will not say which GHN it is or "
                    "whether it saw this sweep's classes", cfg.ghn, e)
        return tags
    tags.update(ghn_tags(ghn_net))
    tags.update(arch_distance_tags(cfg, ghn_net))
    if used is None:
        return tags
    trained = getattr(ghn_net, "classes", None)
    if trained is None:
        tags[GHN_TRAIN_CLASSES_TAG] = UNRECORDED
        log.info("classes: %d; the GHN checkpoint does not record its training classes",
                 len(used))
        return tags
    overlap = len(set(trained) & set(used))
    tags.update({GHN_TRAIN_CLASSES_TAG: joined(trained), GHN_CLASS_OVERLAP_TAG: str(overlap)})
    log.info("classes: %d, of which the GHN was trained on %d", len(used), overlap)
    return tags


def joined(names: list[str] | tuple[str, ...], limit: int = TAG_LIMIT) -> str:
    """Comma-separated ``names``, cut to ``limit`` characters with a count of the rest."""
    text = ",".join(names)
    if len(text) <= limit:
        return text
    kept: list[str] = []
    for name in names:
        if len(",".join([*kept, name])) > limit - 40:
            break
        kept.append(name)
    return ",".join(kept) + f",... ({len(names) - len(kept)} more, {len(names)} in all)"
