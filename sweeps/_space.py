"""What a sweep searches: the Optuna space, the baselines, and sampled values -> TrialConfig.

Optuna cannot put beta = 0 on a log-uniform axis, so noise is a switch (`search.noise`) with the
strength sampled only when it is on; the same goes for post-processing on random init, which
has none. The sampled keys are otherwise TrialConfig's own dotted keys (`optim.lr`,
`postproc.beta`), and `trial_config` turns a sampled config into the trial's TrialConfig.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainable import TrialConfig, get_recipe

from ._config import PAPER_RECIPES, SweepConfig

NOISE = "search.noise"  # sweep-only key: is the noise strength sampled (else beta = 0)
PAPER_BETA = 3e-5  # the paper's recipe: beta 3e-5 + orthogonalisation


def fixed_values(cfg: SweepConfig) -> dict[str, Any]:
    """Values every trial shares, as flat TrialConfig keys."""
    return {"ghn": cfg.ghn, "data.dataset": cfg.dataset, "data.n_shots": cfg.n_shots,
            "optim.epochs": cfg.max_epochs, "checkpoint_every": cfg.checkpoint_every,
            "test_eval": cfg.test_eval,
            "seed": cfg.seed,
            "device": "auto" if cfg.gpus_per_trial > 0 else "cpu"}


@dataclass(frozen=True)
class SearchSpace:
    """Optuna define-by-run space (a class, not a closure: Tune pickles the searcher)."""

    sweep: SweepConfig

    def __call__(self, trial) -> dict[str, Any]:
        """Suggest one trial's values; returns the fixed values as constants of its config."""
        cfg = self.sweep
        trial.suggest_categorical("arch", list(cfg.archs))
        trial.suggest_float("optim.lr", cfg.lr_min, cfg.lr_max, log=True)
        if trial.suggest_categorical("init", ["ghn", "random"]) == "ghn":
            trial.suggest_categorical("postproc.orth", [True, False])
            if trial.suggest_categorical(NOISE, [True, False]):
                trial.suggest_float("postproc.beta", cfg.beta_min, cfg.beta_max, log=True)
        return fixed_values(cfg)


def baselines(cfg: SweepConfig) -> list[dict[str, Any]]:
    """Trials every sweep runs first, so it always answers "does it help?": per architecture,
    random init and GHN without post-processing at the recipe's learning rate, and the
    paper's post-processing (beta 3e-5 + orthogonalisation)."""
    points = []
    for arch in cfg.archs:
        lr = min(max(_recipe(cfg, arch).optim.lr, cfg.lr_min), cfg.lr_max)
        points += [
            {"arch": arch, "optim.lr": lr, "init": "random"},
            {"arch": arch, "optim.lr": lr, "init": "ghn", "postproc.orth": False, NOISE: False},
        ]
        if cfg.beta_min <= PAPER_BETA <= cfg.beta_max:
            points.append({"arch": arch, "optim.lr": lr, "init": "ghn", "postproc.orth": True,
                           NOISE: True, "postproc.beta": PAPER_BETA})
    return points


def _recipe(cfg: SweepConfig, arch: str) -> TrialConfig:
    name = PAPER_RECIPES[arch] if cfg.recipe == "paper" else cfg.recipe
    return get_recipe(name, arch=arch)


def trial_config(config: dict[str, Any], sweep: SweepConfig) -> TrialConfig:
    """A sampled Tune config -> the trial's TrialConfig (recipe of its arch, then samples)."""
    flat = {k: v for k, v in config.items() if k != NOISE}
    return TrialConfig.from_flat(flat, base=_recipe(sweep, flat["arch"]))
