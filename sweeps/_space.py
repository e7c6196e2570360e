"""What a sweep searches: the Optuna space, the baselines, and sampled values -> TrialConfig.

The space is what the paper's question needs, no more:

- the learning rate as a log-uniform multiplier of the architecture's recipe lr
  (``search.lr_scale``), so an SGD recipe (lr 0.01) and an AdamW one (lr 1e-3) in one sweep
  each search around their own value;
- init: random, or GHN with or without noise (``search.noise``: Optuna cannot put beta = 0 on a
  log axis); orthogonalisation only on top of noise, as in the paper's recipes -- tiled GHN
  weights are rank-deficient, so QR without noise is floating-point noise;
- the post-processed layers: the recipe's (``layer_rule``), or with ``--search-layer`` a share of
  the layers counted from the end (``search.layer_share``); with ``--search-max-sz``,
  ``postproc.max_sz``.

The define-by-run function returns the resolved values (``optim.lr``, ``postproc.layer``) as
constants of the trial's config, so Tune's config, the progress line and MLflow all show the
numbers the trial really uses. Keys under ``search.`` and ``repeat.`` are the sweep's own and
never reach the trial.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

from postproc import PostProcConfig
from trainable import RECIPES, TrialConfig, get_recipe

from ._config import PAPER_RECIPES, SweepConfig

NOISE = "search.noise"  # is the noise strength sampled (else beta = 0, and no orth)
LR_SCALE = "search.lr_scale"  # optim.lr = recipe lr x this
LAYER_SHARE = "search.layer_share"  # share of the 2-D layers (classifier excluded) transformed
SWEEP_ONLY = ("search.", "repeat.")
PAPER_BETA = 3e-5  # the paper's recipes: beta 3e-5, then orthogonalisation
MAX_SZ_CHOICES = (0, 64, 128)  # 64: the GHN's tile, so the first tile of each layer is kept
LAYER_SHARE_RANGE = (0.1, 1.0)
# Architectures without a paper recipe post-process the same share of their layers, from the
# end, as ResNet-50's recipe: layers 37-53 of its 53 eligible ones (the classifier, 54, never).
REFERENCE_RECIPE = "resnet50_paper"


@functools.cache
def count_layers(arch: str) -> int:
    """L, the 2-D layers of ``arch`` (classifier included), counted on a weightless
    meta-device model (milliseconds, no memory)."""
    import torch
    import torchvision

    from postproc import list_layers

    with torch.device("meta"):
        return len(list_layers(torchvision.models.get_model(arch, weights=None)))


def first_layer(arch: str, share: float) -> int:
    """``postproc.layer`` that transforms the last ``share`` of the L - 1 eligible layers."""
    n = count_layers(arch)
    return max(1, n - round(share * (n - 1)))


def share_of(arch: str, layer: int) -> float:
    """Inverse of `first_layer`: the share of eligible layers that ``layer`` transforms."""
    n = count_layers(arch)
    return (n - layer) / (n - 1)


def recipe_name(cfg: SweepConfig, arch: str) -> str:
    return PAPER_RECIPES[arch] if cfg.recipe == "paper" else cfg.recipe


def recipe(cfg: SweepConfig, arch: str) -> TrialConfig:
    """The trainable recipe that fixes everything ``arch``'s trials do not search."""
    return get_recipe(recipe_name(cfg, arch), arch=arch)


def layer_rule(cfg: SweepConfig, arch: str) -> int:
    """The recipe's first post-processed layer: its own where it sets one (the paper's
    recipes), else ResNet-50's share of the layers from the end."""
    own = recipe(cfg, arch).postproc.layer
    if own:
        return own
    reference = RECIPES[REFERENCE_RECIPE]
    return first_layer(arch, share_of(reference.arch, reference.postproc.layer))


def fixed_values(cfg: SweepConfig) -> dict[str, Any]:
    """Values every trial shares, as flat TrialConfig keys."""
    values = {"ghn": cfg.ghn, "data.dataset": cfg.dataset, "data.n_shots": cfg.n_shots,
              "optim.epochs": cfg.max_epochs, "checkpoint_every": cfg.checkpoint_every,
              "test_eval": cfg.test_eval, "compile": cfg.compile,
              "seed": cfg.seed,
              # A trial that asked for a GPU runs on one or fails: never silently on the CPU.
              "device": "cuda" if cfg.gpus_per_trial > 0 else "cpu"}
    if cfg.classes:  # else the recipe's (all): a sweep of every class keeps its configs as before
        values["data.classes"] = cfg.classes
    return values


def resolved_values(cfg: SweepConfig, params: dict[str, Any]) -> dict[str, Any]:
    """The TrialConfig values that follow from sampled ``params``: lr and post-processed layer."""
    arch = params["arch"]
    values = {**fixed_values(cfg),
              "optim.lr": recipe(cfg, arch).optim.lr * float(params[LR_SCALE])}
    if params.get("init") == "ghn" and params.get(NOISE):
        share = params.get(LAYER_SHARE)
        values["postproc.layer"] = (layer_rule(cfg, arch) if share is None
                                    else first_layer(arch, float(share)))
    return values


@dataclass(frozen=True)
class SearchSpace:
    """Optuna define-by-run space (a class, not a closure: Tune pickles the searcher)."""

    sweep: SweepConfig

    def __call__(self, trial) -> dict[str, Any]:
        """Suggest one trial's values; returns the values they resolve to as constants."""
        cfg = self.sweep
        p = {"arch": trial.suggest_categorical("arch", list(cfg.archs)),
             LR_SCALE: trial.suggest_float(LR_SCALE, cfg.lr_scale_min, cfg.lr_scale_max,
                                           log=True),
             "init": trial.suggest_categorical("init", ["ghn", "random"])}
        if p["init"] == "ghn":
            p[NOISE] = trial.suggest_categorical(NOISE, [True, False])
            if p[NOISE]:
                trial.suggest_float("postproc.beta", cfg.beta_min, cfg.beta_max, log=True)
                trial.suggest_categorical("postproc.orth", [True, False])
                if cfg.search_layer:
                    p[LAYER_SHARE] = trial.suggest_float(LAYER_SHARE, *LAYER_SHARE_RANGE)
                if cfg.search_max_sz:
                    trial.suggest_categorical("postproc.max_sz", list(MAX_SZ_CHOICES))
        return resolved_values(cfg, p)


def baselines(cfg: SweepConfig) -> list[dict[str, Any]]:
    """Trials every sweep runs first, so it always answers "does it help?": per architecture,
    at the recipe's learning rate, random init, GHN without post-processing, and the paper's
    post-processing (beta 3e-5 + orthogonalisation of the recipe's layers)."""
    points = []
    for arch in cfg.archs:
        common = {"arch": arch, LR_SCALE: 1.0}
        points += [{**common, "init": "random"}, {**common, "init": "ghn", NOISE: False}]
        if cfg.beta_min <= PAPER_BETA <= cfg.beta_max:
            paper = {**common, "init": "ghn", NOISE: True, "postproc.beta": PAPER_BETA,
                     "postproc.orth": True}
            if cfg.search_layer:
                paper[LAYER_SHARE] = share_of(arch, layer_rule(cfg, arch))
            if cfg.search_max_sz:
                paper["postproc.max_sz"] = 0
            points.append(paper)
    return points


def baseline_configs(cfg: SweepConfig) -> list[dict[str, Any]]:
    """The baselines as Tune will run them: sampled keys plus their resolved values."""
    return [{**point, **resolved_values(cfg, point)} for point in baselines(cfg)]


_NO_POSTPROC = {f"postproc.{f.name}": f.default for f in dataclasses.fields(PostProcConfig)}


def trial_config(config: dict[str, Any], sweep: SweepConfig) -> TrialConfig:
    """A Tune config -> the trial's TrialConfig: its arch's recipe, then the config's values.

    Post-processing comes from the config alone (a paper recipe's own is the paper baseline),
    so a random-init trial never inherits it.
    """
    flat = {k: v for k, v in config.items() if not k.startswith(SWEEP_ONLY)}
    return TrialConfig.from_flat({**_NO_POSTPROC, **flat}, base=recipe(sweep, flat["arch"]))


def plan(cfg: SweepConfig) -> dict[str, Any]:
    """What ``--dry-run`` prints: the sweep's configuration, the classes its trials fine-tune on
    (names where known without a download), what each architecture searches, and every baseline
    trial's full TrialConfig (flat dotted keys)."""
    from trainable import dataset_classes

    from ._ghn_training import planned_ghn

    planned, ghn_plan = planned_ghn(cfg)
    archs = {}
    for arch in cfg.archs:
        base = recipe(cfg, arch)
        archs[arch] = {"recipe": recipe_name(cfg, arch), "optimizer": base.optim.name,
                       "recipe_lr": base.optim.lr,
                       "lr_range": [base.optim.lr * cfg.lr_scale_min,
                                    base.optim.lr * cfg.lr_scale_max],
                       "layers": count_layers(arch),
                       "postproc.layer": "searched" if cfg.search_layer
                       else layer_rule(cfg, arch)}
    return {"sweep": {**dataclasses.asdict(cfg), "sweep_name": cfg.sweep_name,
                      "sweep_path": cfg.sweep_path},
            "classes": list(cfg.classes) or dataset_classes(cfg.dataset) or "all",
            "archs": archs,
            "ghn_training": ghn_plan,
            "baselines": [trial_config(c, planned).to_flat()
                          for c in baseline_configs(planned)]}
