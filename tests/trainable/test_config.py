import numpy as np
import pytest

from trainable import RECIPES, TrialConfig, get_recipe


def test_flat_roundtrip_uses_dotted_keys():
    cfg = get_recipe("resnet50_paper", **{"postproc.beta": 3e-5, "data.n_shots": 100})
    flat = cfg.to_flat()
    assert flat["optim.lr"] == 0.01 and flat["postproc.beta"] == 3e-5 and flat["arch"] == "resnet50"
    assert TrialConfig.from_flat(flat) == cfg


def test_paper_recipes():
    r50, cnx = RECIPES["resnet50_paper"], RECIPES["convnext_paper"]
    assert (r50.optim.name, r50.optim.lr, r50.optim.weight_decay, r50.optim.batch_size,
            r50.optim.epochs, r50.optim.schedule) == ("sgd", 0.01, 0.01, 96, 300, "cosine")
    assert (cnx.optim.name, cnx.optim.lr, cnx.optim.weight_decay, cnx.optim.batch_size,
            cnx.optim.epochs) == ("adamw", 1e-3, 0.1, 48, 300)
    assert (r50.arch, cnx.arch) == ("resnet50", "convnext_base")
    for cfg in (r50, cnx):
        assert cfg.image_size == 32 and cfg.use_small_stem and cfg.data.n_shots == 100


def test_unknown_keys_are_named():
    with pytest.raises(ValueError, match=r"optim\.learning_rate.*optim\.wd|optim\.wd"):
        TrialConfig.from_flat({"optim.learning_rate": 0.1, "optim.wd": 0.0})


@pytest.mark.parametrize(("key", "value"), [
    ("optim.lr", -1.0), ("optim.lr", 0), ("optim.name", "rmsprop"), ("optim.batch_size", 0),
    ("optim.epochs", 0), ("optim.momentum", 1.0), ("optim.schedule", "step"),
    ("optim.label_smoothing", 1.0), ("data.n_shots", 0), ("data.val_per_class", 0),
    ("init", "xavier"), ("image_size", 4), ("device", "tpu"), ("checkpoint_every", 0),
    ("test_eval", "never"),
    ("optim.batch_size", 3.5), ("optim.lr", "0.1"), ("small_stem", 1), ("seed", True),
])
def test_bad_values_name_the_field(key, value):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        TrialConfig.from_flat({key: value})


def test_postproc_refused_on_random_init():
    with pytest.raises(ValueError, match="postproc"):
        TrialConfig.from_flat({"init": "random", "postproc.beta": 1e-5})
    with pytest.raises(ValueError, match="beta"):
        TrialConfig.from_flat({"postproc.beta": -1.0})


def test_sampler_values_are_coerced():
    cfg = TrialConfig.from_flat({"optim.lr": np.float64(0.1), "optim.batch_size": np.int64(64),
                                 "optim.weight_decay": 0, "data.n_shots": None})
    assert cfg.optim.lr == 0.1 and type(cfg.optim.batch_size) is int
    assert type(cfg.optim.weight_decay) is float and cfg.data.n_shots is None


def test_unknown_recipe_is_refused():
    with pytest.raises(ValueError, match="recipe"):
        get_recipe("resnet9000")


def test_data_classes_from_flat_lists_and_tuples():
    cfg = TrialConfig.from_flat({"data.classes": ["cat", np.int64(3)]})
    assert cfg.data.classes == ("cat", 3)
    assert TrialConfig.from_flat(cfg.to_flat()) == cfg
    assert TrialConfig().data.classes == ()  # empty: all classes


@pytest.mark.parametrize("value", ["cat", ["cat", 1.5], [True], ["cat", "cat"], [-1], [""]])
def test_bad_data_classes_are_refused(value):
    with pytest.raises(ValueError, match=r"data\.classes"):
        TrialConfig.from_flat({"data.classes": value})
