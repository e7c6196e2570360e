"""One trial's configuration: frozen dataclasses, validated at construction, flattened.

The flat form (Ray param space, MLflow params) uses dotted keys (``optim.lr``, ``data.n_shots``,
``postproc.beta``); top-level fields keep their names (``arch``, ``seed``). ``from_flat`` rejects
unknown keys and wrong types, so a typo in a search space fails before any training starts.
"""

from __future__ import annotations

import dataclasses
import numbers
import typing
from dataclasses import dataclass, field
from typing import Any

from postproc import PostProcConfig

__all__ = ["COMPILE_MODES", "DataConfig", "OptimConfig", "TrialConfig", "RECIPES", "TEST_EVALS",
           "get_recipe"]

INITS = ("random", "ghn", "pretrained")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
# every_epoch: test accuracy each epoch. on_best_val: only at epochs where validation accuracy
# beats the trial's best so far, and at its last epoch -- all that "test accuracy at the best
# validation epoch" needs, for a fraction of the cost when the test split is large (10k images
# against 1k training images in the paper's setting).
TEST_EVALS = ("every_epoch", "on_best_val")
# Capture of the train step (forward, loss and backward) with torch.compile: off (eager);
# default (torch.compile's default mode: fused kernels, Python still launches each one);
# reduce-overhead (the same, replayed as CUDA graphs: one launch a step; on CPU, where there are
# no CUDA graphs, it is the default mode); auto (reduce-overhead on CUDA, off on CPU, where
# compiling costs tens of seconds and gains little). A step that fails to compile runs eagerly,
# with one warning saying why.
COMPILE_MODES = ("off", "default", "reduce-overhead", "auto")


def _check(ok: bool, name: str, value: Any, why: str) -> None:
    if not ok:
        raise ValueError(f"{name}: {why}, got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    """Which images a trial sees. ``dataset`` is cifar10 | cifar100 | a path to an ImageFolder tree
    with train/ and test/ subfolders."""

    dataset: str = "cifar10"
    root: str | None = None  # download dir for cifar10/100; None: <cache>/data
    n_shots: int | None = 100  # training images per class (the paper: 100); None: all the rest
    val_per_class: int = 50  # held-out validation images per class, taken from the train part
    test_per_class: int | None = None  # None: the full test split
    split_seed: int = 0  # fixes the validation and test images; the shots are drawn by `seed`
    # Class names or indices (of the dataset's sorted class list) to keep, relabelled 0..k-1 in
    # this order; empty: all. E.g. a GHN trained on 5 classes, fine-tuned on the other 5.
    classes: tuple[str | int, ...] = ()

    def __post_init__(self) -> None:
        _check(bool(self.dataset), "data.dataset", self.dataset, "must be non-empty")
        _check(isinstance(self.classes, tuple), "data.classes", self.classes, "must be a tuple")
        for c in self.classes:
            ok = isinstance(c, str) and bool(c) or (
                isinstance(c, int) and not isinstance(c, bool) and c >= 0)
            _check(ok, "data.classes", self.classes,
                   "entries must be class names or indices >= 0")
        _check(len(set(self.classes)) == len(self.classes), "data.classes", self.classes,
               "has duplicates")
        shots = self.n_shots
        _check(shots is None or shots >= 1, "data.n_shots", shots, "must be >= 1")
        _check(self.val_per_class >= 1, "data.val_per_class", self.val_per_class, "must be >= 1")
        tpc = self.test_per_class
        _check(tpc is None or tpc >= 1, "data.test_per_class", tpc, "must be >= 1")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser recipe. ``lr`` is the peak learning rate of the per-step schedule."""

    name: str = "sgd"  # sgd (momentum) | adamw
    lr: float = 0.01
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.01
    batch_size: int = 96
    epochs: int = 300
    schedule: str = "cosine"  # cosine (to 0 at the last step) | constant
    warmup_epochs: float = 0.0  # linear warm-up, in epochs (fractions allowed)
    label_smoothing: float = 0.0
    grad_clip: float = 0.0  # max global grad norm; 0 = off

    def __post_init__(self) -> None:
        _check(self.name in OPTIMIZERS, "optim.name", self.name, f"must be one of {OPTIMIZERS}")
        _check(self.lr > 0, "optim.lr", self.lr, "must be > 0")
        _check(0 <= self.momentum < 1, "optim.momentum", self.momentum, "must be in [0, 1)")
        _check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "must be >= 0")
        _check(self.batch_size >= 1, "optim.batch_size", self.batch_size, "must be >= 1")
        _check(self.epochs >= 1, "optim.epochs", self.epochs, "must be >= 1")
        _check(self.schedule in SCHEDULES, "optim.schedule", self.schedule, f"one of {SCHEDULES}")
        _check(self.warmup_epochs >= 0, "optim.warmup_epochs", self.warmup_epochs, "must be >= 0")
        ls = self.label_smoothing
        _check(0 <= ls < 1, "optim.label_smoothing", ls, "must be in [0, 1)")
        _check(self.grad_clip >= 0, "optim.grad_clip", self.grad_clip, "must be >= 0")


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs; the checkpoint and the tracking run store its flat form."""

    arch: str = "resnet50"  # any torchvision classification model name
    image_size: int = 32  # 32 as in the paper; other sizes resize batches on the device
    small_stem: bool | None = None  # adapt the stem for small inputs; None: when image_size <= 32
    init: str = "ghn"  # random | ghn | pretrained (torchvision ImageNet weights, new head)
    ghn: str = "ghn2-imagenet"  # GHN checkpoint name or path, used when init == "ghn"
    seed: int = 0  # model init, post-processing noise, which n shots, batch order, augmentation
    device: str = "auto"  # auto: cuda when present
    checkpoint_every: int = 1  # epochs between checkpoints (the last epoch always checkpoints)
    test_eval: str = "every_epoch"  # every_epoch | on_best_val (see TEST_EVALS)
    compile: str = "off"  # off | default | reduce-overhead | auto (see COMPILE_MODES)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    postproc: PostProcConfig = field(default_factory=PostProcConfig)

    def __post_init__(self) -> None:
        _check(bool(self.arch), "arch", self.arch, "must be a torchvision model name")
        _check(self.image_size >= 8, "image_size", self.image_size, "must be >= 8")
        _check(self.init in INITS, "init", self.init, f"must be one of {INITS}")
        _check(self.init != "ghn" or bool(self.ghn), "ghn", self.ghn, "needed when init='ghn'")
        _check(self.device in DEVICES, "device", self.device, f"must be one of {DEVICES}")
        every = self.checkpoint_every
        _check(every >= 1, "checkpoint_every", every, "must be >= 1")
        _check(self.test_eval in TEST_EVALS, "test_eval", self.test_eval,
               f"must be one of {TEST_EVALS}")
        _check(self.compile in COMPILE_MODES, "compile", self.compile,
               f"must be one of {COMPILE_MODES}")
        # Post-processing perturbs predicted / pretrained parameters; on a random init it would
        # silently mean something else, so it is refused rather than ignored.
        touched = self.postproc != PostProcConfig()
        _check(not (touched and self.init == "random"), "postproc", self.postproc,
               "applies only to init='ghn' or 'pretrained'")

    @property
    def use_small_stem(self) -> bool:
        return self.image_size <= 32 if self.small_stem is None else self.small_stem

    def to_flat(self) -> dict[str, Any]:
        """Dotted-key dict of every field (Ray param space, MLflow params, checkpoints)."""
        flat: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                for sub in dataclasses.fields(value):
                    flat[f"{f.name}.{sub.name}"] = getattr(value, sub.name)
            else:
                flat[f.name] = value
        return flat

    @classmethod
    def from_flat(cls, flat: dict[str, Any], *, base: TrialConfig | None = None) -> TrialConfig:
        """Inverse of ``to_flat``; keys missing from ``flat`` keep ``base``'s (default) values."""
        merged = (base or cls()).to_flat()
        unknown = sorted(set(flat) - set(merged))
        if unknown:
            raise ValueError(f"unknown TrialConfig keys: {unknown}")
        merged.update(flat)
        top: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        for key, value in merged.items():
            if "." in key:
                group, name = key.split(".", 1)
                nested.setdefault(group, {})[name] = value
            else:
                top[key] = value
        hints = typing.get_type_hints(cls)
        for group, values in nested.items():
            top[group] = _build(hints[group], values, prefix=f"{group}.")
        return _build(cls, top, prefix="")


def _build(cls: type, values: dict[str, Any], *, prefix: str) -> Any:
    """Construct ``cls`` after coercing each value to its annotated type (naming the field)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = value if dataclasses.is_dataclass(value) else _coerce(
            value, hints[name], f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Accept what Ray/Optuna samplers produce (numpy scalars, ints for floats), refuse the rest."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy / torch scalar
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise ValueError(f"{name}: must not be None")
    if typing.get_origin(hint) is tuple:
        return _coerce_tuple(value, args[0], name)
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif base is str:
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        raise ValueError(f"{name}: expected {base.__name__}, got {value!r}")
    return int(value) if base is int else value


def _coerce_tuple(value: Any, item: Any, name: str) -> tuple:
    """A list or tuple (Ray and JSON turn tuples into lists) whose entries match ``item``."""
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name}: expected a list or tuple, got {value!r}")
    allowed = typing.get_args(item) or (item,)
    out = []
    for v in value:
        if hasattr(v, "item") and not isinstance(v, (str, bytes)):
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, allowed):
            kinds = " or ".join(a.__name__ for a in allowed)
            raise ValueError(f"{name}: entries must be {kinds}, got {v!r} in {value!r}")
        out.append(v)
    return tuple(out)


# A few seconds per epoch on a laptop CPU: the default stem keeps resnet18 at 32x32 cheap.
_SMOKE = TrialConfig(
    arch="resnet18",
    small_stem=False,
    init="random",
    device="cpu",
    data=DataConfig(n_shots=100, val_per_class=10, test_per_class=20),
    optim=OptimConfig(lr=0.05, weight_decay=5e-4, batch_size=64, epochs=2),
)

# Named recipes. They list only what differs from defaults. The paper's two (ppuda's
# README): 100-shot CIFAR-10 at 32x32, 300 epochs, GHN init, noise beta 3e-5 then
# orthogonalisation of the later layers only (resnet50: layers 37-53 of L = 54; convnext_base:
# layers 94-112 of L = 113, the README's correction of the report's "layer 100").
RECIPES: dict[str, TrialConfig] = {
    "resnet50_paper": TrialConfig(
        arch="resnet50",
        optim=OptimConfig(name="sgd", lr=0.01, weight_decay=0.01, batch_size=96, epochs=300),
        postproc=PostProcConfig(beta=3e-5, orth=True, layer=37),
    ),
    "convnext_paper": TrialConfig(
        arch="convnext_base",
        optim=OptimConfig(name="adamw", lr=1e-3, weight_decay=0.1, batch_size=48, epochs=300),
        postproc=PostProcConfig(beta=3e-5, orth=True, layer=94),
    ),
    "smoke": _SMOKE,
    # The smoke recipe with evaluation sets large enough to tell methods apart: 50 validation
    # images per class to choose by, 200 test images per class (a paired gain over 20 test
    # images per class moves in 1-point steps with a seed-to-seed spread of several points).
    "transfer": dataclasses.replace(_SMOKE, data=dataclasses.replace(
        _SMOKE.data, val_per_class=50, test_per_class=200)),
}


def get_recipe(name: str, **overrides: Any) -> TrialConfig:
    """A named recipe with flat (dotted-key) overrides.

    Example: ``get_recipe("smoke", **{"optim.lr": 0.1})``.
    """
    if name not in RECIPES:
        raise ValueError(f"recipe: unknown {name!r}; known: {sorted(RECIPES)}")
    return TrialConfig.from_flat(overrides, base=RECIPES[name])
