"""Build a torchvision model and initialise it: random, GHN-predicted (cached per node), pretrained.

GHN prediction depends only on (arch, image size, class count, GHN checkpoint, predict-classifier
flag) and on the code that computes it (the sources of ``ghn/``, torch's and torchvision's
versions), so its result is cached on disk under that key; parameters the GHN did not predict are
left out of the cache and keep this trial's own seeded initialisation. Post-processing (cheap,
seeded) runs per trial after loading.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from torch import nn

from contract import GHN_CONFIG_TAG, GHN_KIND_TAG

from ._cache import cache_key, cached_torch, source_hash
from ._config import TrialConfig

_logger = logging.getLogger(__name__)


def build_model(cfg: TrialConfig, num_classes: int, *, classes: Sequence[str] = ()
                ) -> tuple[nn.Module, dict[str, str]]:
    """The initialised (and post-processed) model, plus tags describing its init; ``classes``
    (the data's class names, in label order) decide whether a GHN's classifier applies."""
    torch.manual_seed(cfg.seed)  # the model's own random init is part of the trial's identity
    tags = {"arch": cfg.arch, "init": cfg.init}
    if cfg.init == "pretrained":
        model = torchvision.models.get_model(cfg.arch, weights="DEFAULT")
        _replace_head(model, num_classes)
        tags["pretrained_weights"] = "DEFAULT"
    else:
        model = torchvision.models.get_model(cfg.arch, weights=None, num_classes=num_classes)
    if cfg.use_small_stem:
        from ghn import adjust_for_small_images

        model = adjust_for_small_images(model)
    if cfg.init == "ghn":
        tags.update(_ghn_init(model, cfg, num_classes, tuple(classes)))
    if cfg.init != "random":
        from postproc import apply_postproc

        apply_postproc(model, cfg.postproc, seed=cfg.seed)
    return model, tags


def ghn_tags(ghn_net: nn.Module) -> dict[str, str]:
    """What a loaded GHN is (``ghn.kind``: ghn2 or ghn3, and ``ghn.config``), for the tags of
    the runs it initialises: a GHN-3 file and a GHN-2 one predict differently. GHN-2 weights
    published with GHN-3 (run with GHN-3's semantics) are a GHN-2."""
    from ghn import GHN3

    c = ghn_net.config
    kind = "ghn3" if isinstance(ghn_net, GHN3) else "ghn2"
    parts = [f"hid={c.hid}"]
    if kind == "ghn3":
        parts += [f"heads={c.heads}", f"layers={c.layers}"]
    parts += [f"max_shape={'x'.join(map(str, c.max_shape))}", f"classes={c.num_classes}"]
    return {GHN_KIND_TAG: kind, GHN_CONFIG_TAG: ",".join(parts)}


def classifier_applies(ghn_count: int, ghn_classes: tuple[str, ...] | None, count: int,
                       classes: tuple[str, ...]) -> bool:
    """Whether a GHN's predicted classifier means anything for this data. The paper predicts it
    only for a GHN trained on the same class count; a GHN trained here records its class names,
    and a head predicted for airplane..deer is no head for dog..truck, so names must match too."""
    if int(ghn_count) != count:
        return False
    return ghn_classes is None or not classes or tuple(ghn_classes) == tuple(classes)


def _replace_head(model: nn.Module, num_classes: int) -> None:
    """Swap the last Linear layer (the classifier in torchvision models) for a fresh one."""
    name, last = None, None
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            name, last = n, m
    if last is None:
        raise ValueError("arch: no Linear classifier head found to replace for init='pretrained'")
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], nn.Linear(last.in_features, num_classes))


def _ghn_init(model: nn.Module, cfg: TrialConfig, num_classes: int,
              classes: tuple[str, ...]) -> dict[str, str]:
    """Load predicted parameters from the node cache, predicting them on a miss."""
    import ghn
    from ghn import load_ghn, predict_parameters

    ghn_net = load_ghn(cfg.ghn)
    predict_classifier = classifier_applies(ghn_net.num_classes, ghn_net.classes,
                                            num_classes, classes)
    if not predict_classifier:
        _logger.info("classifier not predicted: the GHN's classes %s are not the data's %s",
                     ghn_net.classes or f"({ghn_net.num_classes})", classes or f"({num_classes})")
    key = cache_key(arch=cfg.arch, image_size=cfg.image_size, small_stem=cfg.use_small_stem,
                    num_classes=num_classes, ghn=ghn_net.checkpoint_id,
                    predict_classifier=predict_classifier,
                    code=source_hash(Path(ghn.__file__).parent),
                    torch=torch.__version__, torchvision=torchvision.__version__)

    def predict() -> dict:
        _logger.info("predicting %s parameters with %s", cfg.arch, ghn_net.checkpoint_id)
        fresh = torchvision.models.get_model(cfg.arch, weights=None, num_classes=num_classes)
        if cfg.use_small_stem:
            from ghn import adjust_for_small_images

            fresh = adjust_for_small_images(fresh)
        pred = predict_parameters(fresh, ghn_net, predict_classifier=predict_classifier,
                                  input_size=cfg.image_size)
        skipped = set(pred.not_predicted)
        state = {k: v for k, v in pred.model.state_dict().items() if k not in skipped}
        return {"state": state, "not_predicted": sorted(skipped)}

    entry = cached_torch("ghn-pred", key, predict)
    missing, unexpected = model.load_state_dict(entry["state"], strict=False)
    if unexpected or set(missing) - set(entry["not_predicted"]):
        raise RuntimeError(f"ghn cache entry {key} does not fit {cfg.arch}: "
                           f"missing={missing} unexpected={unexpected}")
    if entry["not_predicted"]:
        _logger.info("not predicted by the GHN (own init kept): %s", entry["not_predicted"])
    return {"ghn": cfg.ghn, "ghn.checkpoint": ghn_net.checkpoint_id,
            "ghn.predict_classifier": str(predict_classifier), **ghn_tags(ghn_net)}
