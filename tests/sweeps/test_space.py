"""What a sweep searches and repeats: the paper's recipes, a space where every
sample means something, the repeats' configurations, and what Optuna is told."""

from __future__ import annotations

import optuna
import pytest
import torchvision

from contract import REPEAT_OF
from postproc import apply_postproc, list_layers
from sweeps._config import SweepConfig
from sweeps._grid import GridTrial
from sweeps._repeats import repeat_configs
from sweeps._searchers import PrunedAwareOptunaSearch
from sweeps._space import (
    LAYER_SHARE,
    LR_SCALE,
    MAX_SZ_CHOICES,
    NOISE,
    SearchSpace,
    baseline_configs,
    count_layers,
    layer_rule,
    trial_config,
)
from trainable import RECIPES


@pytest.mark.parametrize("recipe, arch, optim, batch, lr, wd, layer, n_layers, first, last", [
    # The paper's recipe: resnet50 has L = 54, layers 37-53 transformed (37: conv1 1, layer1 2-11,
    # layer2 12-24, layer3's blocks 25-28, 29-31, 32-34, 35-37); convnext_base L = 113,
    # 94-112, from features.5.24.block.0 to the last block's second Linear.
    ("resnet50_paper", "resnet50", "sgd", 96, 0.01, 0.01, 37, 54, "layer3.3.conv3",
     "layer4.2.conv3"),
    ("convnext_paper", "convnext_base", "adamw", 48, 1e-3, 0.1, 94, 113,
     "features.5.24.block.0", "features.7.2.block.5"),
])
@pytest.mark.slow
def test_paper_recipes_are_spec_section_9(recipe, arch, optim, batch, lr, wd, layer, n_layers,
                                          first, last):
    r = RECIPES[recipe]
    assert (r.arch, r.init, r.image_size, r.data.dataset, r.data.n_shots, r.optim.epochs) == (
        arch, "ghn", 32, "cifar10", 100, 300)
    assert (r.optim.name, r.optim.batch_size, r.optim.lr, r.optim.weight_decay) == (
        optim, batch, lr, wd)
    assert (r.postproc.beta, r.postproc.orth, r.postproc.layer, r.postproc.max_sz) == (
        3e-5, True, layer, 0)
    model = torchvision.models.get_model(arch, num_classes=10)
    names = [name for name, _ in list_layers(model)]
    assert len(names) == n_layers == count_layers(arch)
    reports = apply_postproc(model, r.postproc, seed=0)
    transformed = [rep.name for rep in reports]
    assert transformed == names[layer - 1:-1]  # from `layer` on, the classifier never
    assert (transformed[0], transformed[-1]) == (first, last)
    assert all(rep.orthogonalised and rep.noise_std > 0 for rep in reports)


def test_paper_preset_baselines_post_process_the_recipes_layers():
    cfg = SweepConfig(preset="paper", recipe="paper", archs=("resnet50", "convnext_base"))
    paper = {c.arch: c.postproc for c in map(lambda p: trial_config(p, cfg),
                                             baseline_configs(cfg)) if c.postproc.orth}
    assert {a: (p.beta, p.layer) for a, p in paper.items()} == {
        "resnet50": (3e-5, 37), "convnext_base": (3e-5, 94)}


def test_archs_without_a_paper_recipe_take_resnet50s_share_of_layers():
    cfg = SweepConfig(archs=("resnet18", "mobilenet_v2"))
    # resnet50 transforms the last 17 of its 53 eligible layers; resnet18 has 21 layers (20
    # eligible): round(20 * 17 / 53) = 6 from the end -> layers 15-20.
    assert count_layers("resnet18") == 21 and layer_rule(cfg, "resnet18") == 15
    n = count_layers("mobilenet_v2")
    assert layer_rule(cfg, "mobilenet_v2") == n - round((n - 1) * 17 / 53)


def _sample(cfg: SweepConfig, n: int) -> list[dict]:
    """``n`` configs as OptunaSearch builds them: the sampled params plus the returned values."""
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    space, out = SearchSpace(cfg), []
    for _ in range(n):
        trial = study.ask()
        values = space(trial)
        out.append({**trial.params, **values})
        study.tell(trial, 0.5)
    return out


def test_orthogonalisation_is_never_sampled_without_noise():
    configs = _sample(SweepConfig(archs=("resnet18",)), 300)
    orth = [c for c in configs if c.get("postproc.orth")]
    assert orth and all(c[NOISE] and c["postproc.beta"] > 0 for c in orth)
    no_noise = [c for c in configs if c["init"] == "ghn" and not c[NOISE]]
    assert no_noise and all("postproc.orth" not in c for c in no_noise)
    assert all(trial_config(c, SweepConfig()).postproc.layer == 15 for c in orth)
    random = [trial_config(c, SweepConfig()) for c in configs if c["init"] == "random"]
    assert random and all(not c.postproc.enabled for c in random)


def test_learning_rate_is_searched_around_each_recipes_own():
    cfg = SweepConfig(preset="paper", recipe="paper", archs=("resnet50", "convnext_base"),
                      lr_scale_min=0.5, lr_scale_max=2.0)
    for c in _sample(cfg, 100):
        base = 0.01 if c["arch"] == "resnet50" else 1e-3
        assert c["optim.lr"] == pytest.approx(base * c[LR_SCALE])
        assert 0.5 * base <= trial_config(c, cfg).optim.lr <= 2.0 * base


def test_every_sampled_trial_compiles_as_the_sweep_says():
    for mode in ("off", "reduce-overhead"):
        cfg = SweepConfig(archs=("resnet18",), compile=mode)
        configs = _sample(cfg, 20)
        assert {c["compile"] for c in configs} == {mode}
        assert {trial_config(c, cfg).compile for c in configs} == {mode}


def test_layer_share_and_max_sz_are_searched_behind_flags():
    plain = _sample(SweepConfig(), 60)
    assert not any(LAYER_SHARE in c or "postproc.max_sz" in c for c in plain)
    cfg = SweepConfig(search_layer=True, search_max_sz=True)
    noisy = [c for c in _sample(cfg, 200) if c.get(NOISE)]
    layers = {trial_config(c, cfg).postproc.layer for c in noisy}
    assert len(layers) > 5 and min(layers) >= 1 and max(layers) <= 20
    assert {c["postproc.max_sz"] for c in noisy} == set(MAX_SZ_CHOICES)
    (paper,) = [p for p in baseline_configs(cfg) if p.get("postproc.orth")]
    assert trial_config(paper, cfg).postproc.layer == 15  # still the recipe's rule


def _trial(trial_id: str, status: str, val: float | None, **config) -> GridTrial:
    return GridTrial(trial_id, {"arch": "resnet18", **config}, status, val, 1)


def test_repeats_run_each_methods_best_and_every_baseline_with_further_seeds():
    cfg = SweepConfig(repeats=3, repeat_top=1, seed=10)
    base = {p["init"] + str(p.get(NOISE)): p for p in baseline_configs(cfg)}
    trials = [
        _trial("b1", "finished", 0.30, **base["randomNone"]),
        _trial("b2", "finished", 0.32, **base["ghnFalse"]),
        _trial("b3", "stopped_early", 0.50, **base["ghnTrue"]),
        _trial("s1", "finished", 0.40, **{**base["ghnTrue"], "postproc.beta": 1e-4}),
        _trial("s2", "diverged", 0.90, **{**base["ghnTrue"], "postproc.beta": 1e-3}),
        _trial("s3", "finished", 0.35, **{**base["randomNone"], "optim.lr": 0.2}),
        _trial("s4", "finished", 0.31, **{**base["ghnFalse"], "optim.lr": 0.01}),
    ]
    configs = repeat_configs(cfg, trials)
    by_original: dict[str, list[int]] = {}
    for c in configs:
        by_original.setdefault(c[REPEAT_OF], []).append(c["seed"])
    # Best of each (arch, method) -- s3 random, b2 ghn, s1 ghn+pp (b3 was stopped early, s2
    # diverged) -- and the three baselines b1, b2, b3, each with seeds 11, 12, 13.
    assert by_original == {t: [11, 12, 13] for t in ("s3", "b2", "s1", "b1", "b3")}
    s1 = next(c for c in configs if c[REPEAT_OF] == "s1")
    assert {k: v for k, v in s1.items() if k != REPEAT_OF} == {**trials[3].config, "seed": 11}
    top2 = repeat_configs(SweepConfig(repeats=1, repeat_top=2), trials)
    assert {c[REPEAT_OF] for c in top2} == {"s3", "b1", "b2", "s4", "s1", "b3"}
    assert repeat_configs(SweepConfig(repeats=0), trials) == []


def test_stopped_trials_reach_optuna_as_pruned():
    search = PrunedAwareOptunaSearch(space=SearchSpace(SweepConfig()), metric="val/acc",
                                     mode="max", max_epochs=3,
                                     sampler=optuna.samplers.RandomSampler(seed=0))
    search.set_search_properties("val/acc", "max", {})
    for trial_id in ("stopped", "complete", "failed"):
        assert search.suggest(trial_id)
    for epoch in (1, 2):
        search.on_trial_result("stopped", {"val/acc": 0.2 * epoch, "training_iteration": epoch})
    search.on_trial_complete("stopped", {"val/acc": 0.4, "epoch": 2})
    search.on_trial_complete("complete", {"val/acc": 0.5, "epoch": 3})
    search.on_trial_complete("failed", None, error=True)
    states = [t.state for t in search._ot_study.get_trials()]
    assert states == [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE,
                      optuna.trial.TrialState.FAIL]
    assert search._ot_study.get_trials()[0].intermediate_values == {1: 0.2, 2: 0.4}
