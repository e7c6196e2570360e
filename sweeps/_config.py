"""The sweep's configuration: one frozen dataclass, presets, and a CLI generated from its fields.

A preset fills every field; flags given on the command line override it one to one
(`--num-samples 16` sets `num_samples`). Everything that can be checked without Ray is checked
here, so bad input exits with status 2 before any trial starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract.flags import add_dataclass_flags


def _f(default: Any, help: str) -> Any:
    """A field whose help text becomes its command-line flag's help."""
    return dataclasses.field(default=default, metadata={"help": help})


PAPER_RECIPES = {"resnet50": "resnet50_paper", "convnext_base": "convnext_paper"}


@dataclass(frozen=True)
class SweepConfig:
    """One sweep of post-processing strength x learning rate x architecture."""

    preset: str = _f("smoke", "smoke (CPU, minutes) | transfer (CPU, a GHN trained here, unseen "
                              "classes, about an hour) | paper (GPUs, the paper's scale)")
    num_samples: int = _f(8, "trials in all, baselines included")
    max_epochs: int = _f(3, "epochs of a trial that ASHA never stops")
    archs: tuple[str, ...] = _f(("resnet18",), "torchvision model names, comma-separated")
    dataset: str = _f(os.environ.get("GHN_SWEEP_DATASET", "cifar10"),
                      "cifar10 | cifar100 (downloaded) | an ImageFolder tree with train/, test/")
    n_shots: int = _f(100, "training images per class (as in the paper)")
    classes: tuple[str, ...] = _f((), "the dataset's classes to fine-tune on, comma-separated "
                                      "names (none given: all); e.g. the classes a GHN trained "
                                      "here did not see")
    ghn: str = _f(os.environ.get("GHN_CHECKPOINT", "ghn2-imagenet"),
                  "GHN-2 or GHN-3 checkpoint: a name (ghn2-imagenet, ghn3-tm8, ...) or a path; "
                  "empty: train one here first with the --ghn-train-* settings (cached)")
    ghn_train_classes: tuple[str, ...] = _f(
        ("airplane", "automobile", "bird", "cat", "deer"),
        "with an empty --ghn: the dataset's classes the GHN trains on, comma-separated")
    ghn_train_families: tuple[str, ...] = _f(
        ("darts", "resnet", "mobilenet", "densenet"),
        "with an empty --ghn: the architecture families it trains on (ghntrain.FAMILIES); "
        "leaving convnext out makes ConvNeXt a novel architecture")
    ghn_train_steps: int = _f(1500, "with an empty --ghn: its training steps")
    ghn_train_hid: int = _f(32, "with an empty --ghn: its hidden size")
    ghn_train_seed: int = _f(0, "with an empty --ghn: its training seed")
    ghn_train_model: str = _f("ghn2", "with an empty --ghn: ghn2 | ghn3")
    ghn_distance_per_class: int = _f(50, "for a GHN trained here: test images per class of its "
                                         "own classes on which each arch's predicted "
                                         "parameters are scored, the arch's distance from the "
                                         "GHN's (0: not measured)")
    lr_scale_min: float = _f(0.1, "learning rate searched as a multiple of each arch's recipe "
                                  "lr (log-uniform): low end (must be <= 1: the recipe's lr is "
                                  "a baseline)")
    lr_scale_max: float = _f(10.0, "learning-rate multiple: high end (must be >= 1)")
    beta_min: float = _f(1e-6, "noise strength range (log-uniform): low end; beta = 0 is "
                               "always a baseline")
    beta_max: float = _f(1e-3, "noise strength range: high end")
    search_layer: bool = _f(False, "also search which layers are post-processed: a share of "
                                   "the layers from the end (else each recipe's layers)")
    search_max_sz: bool = _f(False, "also search postproc.max_sz in {0, 64, 128}")
    repeats: int = _f(2, "after the search, run each method's best configuration(s) and every "
                         "baseline again with this many further seeds (0: none)")
    repeat_top: int = _f(1, "configurations repeated per architecture and init method")
    recipe: str = _f("smoke", "trainable recipe of the fixed values; 'paper': one per arch")
    gpus_per_trial: float = _f(0.0, "GPUs per trial; fractions pack trials, 0.25 = 4 per GPU")
    cpus_per_trial: float = _f(1.0, "CPUs per trial")
    max_concurrent: int = _f(2, "trials running at once (also how far TPE runs ahead)")
    grace_period: int = _f(1, "epochs before ASHA may stop a trial")
    reduction_factor: int = _f(2, "ASHA keeps 1/reduction_factor of the trials at each rung")
    max_failures: int = _f(2, "retries of a failing trial, each from its last checkpoint")
    checkpoint_every: int = _f(1, "epochs between a trial's checkpoints (its last epoch always "
                                  "checkpoints); a retried or resumed trial redoes at most "
                                  "checkpoint_every - 1 epochs")
    test_eval: str = _f("every_epoch", "every_epoch | on_best_val: test accuracy each epoch, or "
                                       "only where validation accuracy improves (and at the "
                                       "last epoch), all the analysis needs")
    compile: str = _f("off", "torch.compile of each trial's train step: off | default | "
                             "reduce-overhead (CUDA graphs on GPUs) | auto (reduce-overhead on "
                             "GPU trials, off on CPU ones)")
    seed: int = _f(0, "seed of Optuna's TPE sampler and of the trials")
    storage: str = _f("./ray_results", "results: local path, or s3://bucket/path on a cluster")
    tracking_uri: str = _f("sqlite:///mlflow.db",
                           "MLflow: sqlite:///file locally, http://<head>:5000 on a cluster")
    experiment: str = _f("ghn-sweep", "MLflow experiment")
    name: str = _f("", "sweep name (Ray experiment, MLflow parent run); default "
                       "noise_vs_lr-<preset>")
    progress_every: float = _f(10.0, "seconds between progress lines at most (a new best trial "
                                     "shows at once); 0: a line at every change")
    address: str = _f(os.environ.get("RAY_ADDRESS", ""),
                      "Ray cluster to join ('auto', 'ray://host:10001'; `ray job submit` sets "
                      "RAY_ADDRESS); default: in-process Ray")
    resume: bool = _f(False, "continue the interrupted sweep of this name")

    def __post_init__(self) -> None:
        _validate(self)
        _validate_names(self)
        from ghn import CHECKPOINT_URLS  # imported by _validate_names already

        # Trials run in their own directories, so paths are made absolute here.
        if self.dataset not in ("cifar10", "cifar100"):
            object.__setattr__(self, "dataset", str(Path(self.dataset).resolve()))
        if self.ghn and self.ghn not in CHECKPOINT_URLS:
            object.__setattr__(self, "ghn", str(Path(self.ghn).expanduser().resolve()))

    @property
    def sweep_name(self) -> str:
        return self.name or f"noise_vs_lr-{self.preset}"

    @property
    def storage_path(self) -> str:
        """Ray needs an absolute local path; URIs are passed through."""
        return self.storage if "://" in self.storage else str(Path(self.storage).resolve())

    @property
    def sweep_path(self) -> str:
        """Where Ray keeps this sweep: ``<storage>/<sweep name>``."""
        return f"{self.storage_path.rstrip('/')}/{self.sweep_name}"

    @property
    def repeats_path(self) -> str:
        """Where Ray keeps the sweep's repeats, its second experiment: ``<sweep path>-repeats``."""
        return self.sweep_path + "-repeats"

    @property
    def results_dir(self) -> Path | None:
        """This sweep's results directory when it is on a filesystem of this machine."""
        if "://" in self.storage and not self.storage.startswith("file://"):
            return None
        return Path(self.storage.removeprefix("file://")).resolve() / self.sweep_name


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {},
    # Transfer on 2 CPU cores: a GHN trained here (the ghn_train_* defaults: five CIFAR-10
    # classes, no ConvNeXt) initialises a ResNet and a ConvNeXt fine-tuned on the five classes
    # it never saw; 6 epochs leave the first-epoch regime; 17 seeds repeat the best of each, as
    # many as a paired gain needs for a 95% interval of about +-2 points (docs/results.md).
    "transfer": {"ghn": "", "classes": ("dog", "frog", "horse", "ship", "truck"),
                 "archs": ("resnet18", "convnext_tiny"), "n_shots": 100, "num_samples": 12,
                 "max_epochs": 6, "grace_period": 2, "repeats": 17, "repeat_top": 1,
                 "test_eval": "on_best_val", "checkpoint_every": 3, "recipe": "transfer"},
    "paper": {"num_samples": 64, "max_epochs": 300, "archs": ("resnet50", "convnext_base"),
              "n_shots": 100, "recipe": "paper", "repeats": 3,
              # Four trials share each GPU (MPS runs their kernels side by side; see
              # cluster.yaml), each with one of the g5.xlarge's 4 CPUs: 8 workers x 4 = 32 at once
              # (sweeps/_packing.py; tests/sweeps/test_packing.py checks it against cluster.yaml).
              "gpus_per_trial": 0.25, "cpus_per_trial": 1.0, "max_concurrent": 32,
              "grace_period": 30, "reduction_factor": 3,
              # A checkpoint is the model and optimiser state (~1 GB for convnext_base with
              # AdamW), written to shared storage: every 30 epochs, not after each GPU epoch.
              "checkpoint_every": 30,
              # The 10k test images cost ~4x an epoch's training on 1k: test only when needed.
              "test_eval": "on_best_val",
              # An 11-step epoch of a 32x32 model is launch-bound on a GPU: capture the step.
              "compile": "auto"},
}


def _fail(field: str, value: Any, why: str) -> None:
    raise ValueError(f"--{field.replace('_', '-')}: {why} (got {value!r})")


def _validate(cfg: SweepConfig) -> None:
    """The checks that need no torch: they answer at once."""
    if cfg.preset not in PRESETS:
        _fail("preset", cfg.preset, f"must be one of {sorted(PRESETS)}")
    if not cfg.archs:
        _fail("archs", cfg.archs, "needs at least one architecture")
    for arch in cfg.archs:
        if cfg.recipe == "paper" and arch not in PAPER_RECIPES:
            _fail("archs", arch, f"the paper recipe exists for {sorted(PAPER_RECIPES)} only")
    for lo, hi in (("lr_scale_min", "lr_scale_max"), ("beta_min", "beta_max")):
        a, b = getattr(cfg, lo), getattr(cfg, hi)
        if not a > 0:
            _fail(lo, a, "must be > 0 (the range is log-uniform)")
        if not b > a:
            _fail(hi, b, f"must be > --{lo.replace('_', '-')}={a}: the range is empty")
    if not cfg.lr_scale_min <= 1 <= cfg.lr_scale_max:
        _fail("lr_scale_min", (cfg.lr_scale_min, cfg.lr_scale_max), "the range must contain 1: "
              "the baselines run at each recipe's own learning rate")
    for field in ("repeats", "ghn_distance_per_class"):
        if getattr(cfg, field) < 0:
            _fail(field, getattr(cfg, field), "must be >= 0")
    for field in ("num_samples", "max_epochs", "n_shots", "max_concurrent", "grace_period",
                  "checkpoint_every", "repeat_top"):
        if getattr(cfg, field) < 1:
            _fail(field, getattr(cfg, field), "must be >= 1")
    if cfg.reduction_factor < 2:
        _fail("reduction_factor", cfg.reduction_factor, "must be >= 2")
    if cfg.grace_period > cfg.max_epochs:
        _fail("grace_period", cfg.grace_period, f"must be <= --max-epochs={cfg.max_epochs}")
    if not cfg.progress_every >= 0:
        _fail("progress_every", cfg.progress_every, "must be >= 0 seconds")
    if cfg.gpus_per_trial < 0 or cfg.cpus_per_trial <= 0 or cfg.max_failures < 0:
        _fail("gpus_per_trial/cpus_per_trial/max_failures",
              (cfg.gpus_per_trial, cfg.cpus_per_trial, cfg.max_failures), "out of range")
    if cfg.gpus_per_trial > 1 and cfg.gpus_per_trial != int(cfg.gpus_per_trial):
        _fail("gpus_per_trial", cfg.gpus_per_trial, "above 1 it must be a whole number")
    if cfg.dataset not in ("cifar10", "cifar100") and not Path(cfg.dataset).is_dir():
        _fail("dataset", cfg.dataset, "must be cifar10, cifar100 or an existing ImageFolder "
              "directory with train/ and test/")
    # Trials checkpoint to storage from every node; MLflow is written by the driver only, so a
    # SQLite tracking URI is fine anywhere (the UI then reads that file).
    if cfg.address and "://" not in cfg.storage:
        _fail("storage", cfg.storage, "a local path cannot be shared by the nodes of a cluster: "
              "use s3://bucket/path, or file:///path on a filesystem every node mounts")


def _validate_names(cfg: SweepConfig) -> None:
    """The checks against torchvision's and our packages' names. They import torch (seconds),
    so they come last and are imported here: `--help` and a mistyped number need not wait."""
    import torchvision

    from ghn import CHECKPOINT_URLS
    from trainable import COMPILE_MODES, TEST_EVALS

    known = set(torchvision.models.list_models(module=torchvision.models))
    for arch in cfg.archs:
        if arch not in known:
            _fail("archs", arch, "not a torchvision classification model (see "
                  "torchvision.models.list_models())")
    if cfg.test_eval not in TEST_EVALS:
        _fail("test_eval", cfg.test_eval, f"must be one of {TEST_EVALS}")
    if cfg.compile not in COMPILE_MODES:
        _fail("compile", cfg.compile, f"must be one of {COMPILE_MODES}")
    if not cfg.ghn:
        _validate_ghn_training(cfg)
    elif cfg.ghn not in CHECKPOINT_URLS and not Path(cfg.ghn).expanduser().is_file():
        _fail("ghn", cfg.ghn, f"must be a checkpoint file or one of {sorted(CHECKPOINT_URLS)}, "
              "or empty to train one here")
    _validate_classes(cfg)


def _validate_ghn_training(cfg: SweepConfig) -> None:
    """The settings of the GHN an empty ``--ghn`` trains, checked now rather than after Ray
    has started and the training task has failed."""
    from ghntrain import FAMILIES, TrainConfig
    from trainable import dataset_classes, resolve_classes

    for field in ("ghn_train_steps", "ghn_train_hid"):
        if getattr(cfg, field) < 1:
            _fail(field, getattr(cfg, field), "must be >= 1")
    unknown = [f for f in cfg.ghn_train_families if f not in FAMILIES]
    if not cfg.ghn_train_families or unknown:
        _fail("ghn_train_families", ",".join(cfg.ghn_train_families),
              f"needs one or more of {', '.join(FAMILIES)}")
    try:  # the training's own checks (the model kind, and GHN-3's hid against its heads)
        TrainConfig(steps=cfg.ghn_train_steps, hid=cfg.ghn_train_hid,
                    families=cfg.ghn_train_families, model=cfg.ghn_train_model)
    except ValueError as e:
        _fail("ghn_train_model", cfg.ghn_train_model, str(e))
    if len(cfg.ghn_train_classes) < 2:
        _fail("ghn_train_classes", cfg.ghn_train_classes, "needs at least two classes")
    known = dataset_classes(cfg.dataset)
    if known is not None:
        try:
            resolve_classes(cfg.ghn_train_classes, known, cfg.dataset)
        except ValueError as e:
            _fail("ghn_train_classes", ",".join(cfg.ghn_train_classes),
                  str(e).removeprefix("data.classes: "))


def _validate_classes(cfg: SweepConfig) -> None:
    """``--classes`` against the dataset's class names where they are known without a download
    (CIFAR-10's, an ImageFolder tree's); CIFAR-100's are checked once the sweep has its data."""
    from trainable import dataset_classes, resolve_classes

    if not cfg.classes:
        return
    known = dataset_classes(cfg.dataset)
    if known is None:
        return
    try:
        resolve_classes(cfg.classes, known, cfg.dataset)
    except ValueError as e:
        _fail("classes", ",".join(cfg.classes), str(e).removeprefix("data.classes: "))


def build_parser() -> argparse.ArgumentParser:
    """One flag per SweepConfig field; every default is None so presets can fill them."""
    parser = argparse.ArgumentParser(
        prog="python sweeps/noise_vs_lr.py",
        description="Sweep the post-processing strength of a GHN-2's or GHN-3's predicted "
                    "parameters, the learning rate and the architecture with Ray Tune (Optuna "
                    "TPE + ASHA), tracked in MLflow.")
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="a YAML or TOML file of SweepConfig fields (as the flags, with "
                             "underscores); flags given too override it")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resolved configuration and every baseline trial's "
                             "full TrialConfig as JSON, then exit before Ray starts")
    add_dataclass_flags(parser, SweepConfig, unset=True, default_label="smoke default")
    return parser


def read_config_file(path: Path) -> dict[str, Any]:
    """SweepConfig fields from YAML (.yaml/.yml) or TOML (.toml); unknown keys and values of the
    wrong type raise ValueError naming the key."""
    if not path.is_file():
        raise ValueError(f"--config: no such file {str(path)!r}")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ValueError(f"--config: {path.name} must end in .yaml, .yml or .toml")
    except (ValueError, ImportError) as e:
        raise ValueError(f"--config {path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - yaml's parse errors have no common public base
        raise ValueError(f"--config {path}: not valid {path.suffix[1:].upper()}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: must be a mapping of field names to values")
    hints = typing.get_type_hints(SweepConfig)
    out = {}
    for key, value in data.items():
        if key not in hints:
            raise ValueError(f"--config {path}: unknown key {key!r}; the keys are SweepConfig's "
                             f"fields: {', '.join(hints)}")
        out[key] = _typed(key, value, hints[key], path)
    return out


def _typed(key: str, value: Any, hint: Any, path: Path) -> Any:
    """``value`` as the field's type; ints are accepted for floats, lists or a comma-separated
    string for tuples."""
    if typing.get_origin(hint) is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if isinstance(items, list) and all(isinstance(v, str) for v in items):
            return tuple(v.strip() for v in items if v.strip())
    elif hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif isinstance(value, hint) and (hint is bool or not isinstance(value, bool)):
        return value
    wanted = "a list of strings" if typing.get_origin(hint) is tuple else hint.__name__
    raise ValueError(f"--config {path}: {key} must be {wanted}, got {value!r}")


def parse_command(argv: list[str] | None = None) -> tuple[SweepConfig, bool]:
    """(config, dry_run): preset, then the config file, then flags; invalid input exits with
    status 2 and says why."""
    parser = build_parser()
    ns = vars(parser.parse_args(argv))
    path, dry_run = ns.pop("config"), ns.pop("dry_run")
    args = {k: v for k, v in ns.items() if v is not None}
    try:
        from_file = read_config_file(path) if path is not None else {}
    except ValueError as e:
        parser.error(str(e))
    preset = args.get("preset", from_file.get("preset", SweepConfig.preset))
    if preset not in PRESETS:
        parser.error(f"--preset: must be one of {sorted(PRESETS)} (got {preset!r})")
    try:
        return SweepConfig(**{**PRESETS[preset], **from_file, **args}), dry_run
    except ValueError as e:
        parser.error(str(e))
    raise AssertionError("unreachable")


def parse_args(argv: list[str] | None = None) -> SweepConfig:
    """The SweepConfig of a command line (see `parse_command`)."""
    return parse_command(argv)[0]
