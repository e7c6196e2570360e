"""The sweep CLI: presets, flags one to one, and bad input refused (exit 2) before Ray starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from postproc import PostProcConfig
from sweeps._config import PRESETS, SweepConfig, parse_args
from sweeps._space import (
    LR_SCALE,
    NOISE,
    baseline_configs,
    fixed_values,
    resolved_values,
    trial_config,
)

REPO = Path(__file__).resolve().parents[2]


def test_preset_then_flags():
    cfg = parse_args(["--preset", "paper", "--num-samples", "5", "--archs", "resnet50",
                      "--gpus-per-trial", "0.25"])
    assert cfg.preset == "paper" and cfg.max_epochs == PRESETS["paper"]["max_epochs"]
    assert cfg.num_samples == 5 and cfg.archs == ("resnet50",) and cfg.gpus_per_trial == 0.25
    assert parse_args([]) == SweepConfig()


@pytest.mark.parametrize("argv, message", [
    (["--archs", "resnet18,resnt50"], "--archs: not a torchvision classification model"),
    (["--beta-min=-1e-5"], "--beta-min: must be > 0"),
    (["--lr-scale-min", "2", "--lr-scale-max", "0.5"],
     "--lr-scale-max: must be > --lr-scale-min=2.0"),
    (["--lr-scale-min", "2"], "--lr-scale-min: the range must contain 1"),
    (["--repeats", "-1"], "--repeats: must be >= 0"),
    (["--repeat-top", "0"], "--repeat-top: must be >= 1"),
    (["--preset", "huge"], "--preset: must be one of"),
    (["--dataset", "/no/such/dir"], "--dataset: must be cifar10, cifar100 or an existing"),
    (["--ghn", "/no/such.pt"], "--ghn: must be a checkpoint file"),
    (["--address", "ray://head:10001"],
     "--storage: a local path cannot be shared by the nodes of a cluster"),
    (["--num-samples", "0"], "--num-samples: must be >= 1"),
    (["--checkpoint-every", "0"], "--checkpoint-every: must be >= 1"),
    (["--test-eval", "never"], "--test-eval: must be one of ('every_epoch', 'on_best_val')"),
    (["--compile", "on"], "--compile: must be one of ('off', 'default', 'reduce-overhead', "
     "'auto')"),
    (["--gpus-per-trial", "1.5"], "above 1 it must be a whole number"),
    (["--preset", "paper", "--archs", "resnet18"], "the paper recipe exists for"),
])
def test_bad_input_exits_2_with_the_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_script_refuses_before_starting_ray(tmp_path, refusal):
    assert "--archs" in refusal("--archs", "nonet", "--storage", str(tmp_path / "ray"),
                                cwd=tmp_path)
    assert not (tmp_path / "ray").exists()


# Runs the script as `python sweeps/noise_vs_lr.py ARGS` would, then lists the heavy packages
# it had loaded by the time it exited.
_LOADED_BY_SCRIPT = """
import runpy, sys
sys.argv = ["noise_vs_lr.py", *sys.argv[1:]]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as e:
    print("exit", e.code)
print("loaded", sorted({"torch", "ray", "mlflow", "optuna"} & set(sys.modules)))
"""


@pytest.mark.parametrize("argv, status", [(["--help"], 0), (["--max-epochs", "0"], 2)])
def test_script_answers_help_and_bad_numbers_before_loading_torch(argv, status):
    proc = subprocess.run([sys.executable, "-c", _LOADED_BY_SCRIPT, *argv],
                          cwd=REPO / "sweeps", capture_output=True, text=True, timeout=120)
    assert f"exit {status}" in proc.stdout, proc.stderr
    assert "loaded []" in proc.stdout


@pytest.mark.parametrize("existing, resume, message", [
    (True, False, "a sweep named 'noise_vs_lr-smoke' already exists"),
    (False, True, "--resume: there is no sweep to resume"),
    (True, True, "has no ghn_sweep.json (the sweep's id"),  # started before sweeps had ids
])
def test_script_refuses_to_merge_or_resume_nothing(tmp_path, reference_dir, cifar_jpeg_dir,
                                                   existing, resume, message, refusal):
    sweep_dir = tmp_path / "ray" / "noise_vs_lr-smoke"
    if existing:  # what an earlier sweep of that name leaves
        sweep_dir.mkdir(parents=True)
        (sweep_dir / "tuner.pkl").write_bytes(b"")
    err = refusal("--storage", str(tmp_path / "ray"), "--dataset", str(cifar_jpeg_dir),
                  "--ghn", str(reference_dir / "ghn2_random_imagenet_seed0.pt"),
                  *(["--resume"] if resume else []), cwd=tmp_path)
    assert message in err, err[-2000:]
    assert not (tmp_path / "mlflow.db").exists()  # refused before tracking or Ray started


def test_script_refuses_an_unreadable_dataset_before_starting_ray(tmp_path, reference_dir,
                                                                  refusal, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("GHN_SWEEP_CACHE", str(tmp_path / "cache"))
    err = refusal("--storage", str(tmp_path / "ray"), "--dataset", str(tmp_path / "empty"),
                  "--ghn", str(reference_dir / "ghn2_random_imagenet_seed0.pt"), cwd=tmp_path)
    assert "error: --dataset" in err, err[-2000:]
    assert not (tmp_path / "mlflow.db").exists()


def test_baselines_cover_random_no_postproc_and_the_paper_recipe(reference_dir):
    cfg = SweepConfig(archs=("resnet18", "mobilenet_v2"),
                      ghn=str(reference_dir / "ghn2_random_imagenet_seed0.pt"))
    points = baseline_configs(cfg)
    assert len(points) == 6
    configs = [trial_config(p, cfg) for p in points]
    kinds = {(c.arch, c.init, c.postproc.beta, c.postproc.orth) for c in configs}
    for arch in cfg.archs:
        assert {(arch, "random", 0.0, False), (arch, "ghn", 0.0, False),
                (arch, "ghn", 3e-5, True)} <= kinds
    assert all(NOISE not in c.to_flat() for c in configs)
    assert all(c.optim.lr == 0.05 for c in configs)  # the smoke recipe's own lr
    # No post-processing on random init, nor on the no-noise GHN baseline: not even a layer.
    assert all(c.postproc == PostProcConfig() for c in configs if c.postproc.beta == 0)


def test_paper_preset_uses_each_architectures_recipe():
    cfg = parse_args(["--preset", "paper"])
    sampled = {LR_SCALE: 2.0, "init": "ghn", NOISE: True, "postproc.beta": 1e-5,
               "postproc.orth": True}
    resnet, convnext = (trial_config({**p, **resolved_values(cfg, p)}, cfg)
                        for p in ({**sampled, "arch": a} for a in ("resnet50", "convnext_base")))
    assert (resnet.optim.name, resnet.optim.batch_size) == ("sgd", 96)
    assert (convnext.optim.name, convnext.optim.batch_size) == ("adamw", 48)
    # The lr is searched around each recipe's own: SGD's 0.01 and AdamW's 1e-3.
    assert (resnet.optim.lr, convnext.optim.lr) == (0.02, 0.002)
    assert (resnet.postproc.layer, convnext.postproc.layer) == (37, 94)
    assert resnet.checkpoint_every == convnext.checkpoint_every == 30  # not every epoch
    assert resnet.test_eval == convnext.test_eval == "on_best_val"
    assert resnet.compile == convnext.compile == "auto"  # reduce-overhead on their GPUs


def test_checkpoint_every_reaches_the_trial():
    cfg = parse_args(["--checkpoint-every", "2"])
    sampled = {"arch": "resnet18", "optim.lr": 0.01, "init": "random"}
    assert trial_config({**sampled, **fixed_values(cfg)}, cfg).checkpoint_every == 2


@pytest.mark.parametrize("argv, want", [([], "off"), (["--compile", "reduce-overhead"],
                                                       "reduce-overhead"),
                                          (["--preset", "paper", "--compile", "off"], "off")])
def test_compile_flag_reaches_every_trial(argv, want):
    cfg = parse_args(argv)
    sampled = {"arch": cfg.archs[0], LR_SCALE: 1.0, "init": "random"}
    assert trial_config({**sampled, **resolved_values(cfg, sampled)}, cfg).compile == want
    assert {c["compile"] for c in baseline_configs(cfg)} == {want}


def test_relative_paths_become_absolute(reference_dir, monkeypatch):
    """Trials run in their own directories: a relative --dataset or --ghn must still work."""
    monkeypatch.chdir(reference_dir.parent)
    cfg = parse_args(["--ghn", "reference/ghn2_random_imagenet_seed0.pt"])
    assert cfg.ghn == str((reference_dir / "ghn2_random_imagenet_seed0.pt").resolve())
    assert Path(cfg.ghn).is_absolute()


@pytest.mark.parametrize("storage", ["/tmp/sweeps", "file:///tmp/sweeps", "s3://bucket/sweeps"])
def test_local_storage_takes_checkpoints_as_links_remote_storage_as_ray_does(storage):
    from sweeps._tuner import _run_config
    from trainable import local_storage_filesystem

    cfg = SweepConfig(storage=storage)
    run = _run_config(cfg, cfg.sweep_path, [])
    if storage.startswith("s3://"):
        assert run.storage_path == storage and run.storage_filesystem is None
    else:
        assert run.storage_path == "/tmp/sweeps"
        assert run.storage_filesystem.equals(local_storage_filesystem())


def test_trial_directories_are_named_by_their_sampled_values():
    from ray.tune.experiment import Trial

    from analysis._ray_results import trial_id_of
    from sweeps._tuner import trial_dirname

    sweep = SweepConfig(archs=("resnet18",))
    config = {**fixed_values(sweep), "arch": "resnet18", "optim.lr": 0.00151234, "init": "ghn",
              "postproc.orth": True, NOISE: True, "postproc.beta": 3e-5}
    trial = Trial("sweep_trial", config=config, trial_id="06bb0f35", stub=True,
                  experiment_tag="4_arch=resnet18,checkpoint_every=1,data_dataset=cifar10",
                  trial_dirname_creator=trial_dirname)
    name = trial.custom_dirname
    assert name == "sweep_trial_06bb0f35_4_resnet18_ghn_lr=0.00151_beta=3e-05_orth=True"
    assert trial_id_of(name) == "06bb0f35"  # the report still finds the trial's id


@pytest.mark.parametrize("name, text", [
    ("sweep.yaml", "preset: paper\nnum_samples: 12\narchs: [resnet50]\nlr_scale_max: 4\n"
                   "search_layer: true\n"),
    ("sweep.toml", 'preset = "paper"\nnum_samples = 12\narchs = ["resnet50"]\n'
                   "lr_scale_max = 4\nsearch_layer = true\n"),
])
def test_config_file_sets_fields_and_flags_override_it(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    cfg = parse_args(["--config", str(path), "--num-samples", "5"])
    assert cfg.preset == "paper" and cfg.max_epochs == 300  # the file's preset applies
    assert (cfg.num_samples, cfg.archs, cfg.lr_scale_max, cfg.search_layer) == (
        5, ("resnet50",), 4.0, True)


@pytest.mark.parametrize("text, message", [
    ("num_sample: 3\n", "unknown key 'num_sample'"),
    ("num_samples: three\n", "num_samples must be int, got 'three'"),
    ("num_samples: 2.5\n", "num_samples must be int"),
    ("search_layer: 1\n", "search_layer must be bool"),
    ("archs: 5\n", "archs must be a list of strings"),
    ("- just\n- a list\n", "must be a mapping"),
    ("num_samples: [\n", "not valid YAML"),
])
def test_config_file_errors_exit_2_naming_the_key(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--config", str(path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_dry_run_prints_the_paper_recipes_before_ray(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", _LOADED_BY_SCRIPT.replace('"optuna"}', '"optuna", "mlflow"}'),
         "--preset", "paper", "--dry-run"], cwd=REPO / "sweeps", capture_output=True,
        text=True, timeout=300)
    assert "exit 0" in proc.stdout, proc.stderr[-2000:]
    plan = json.loads(proc.stdout[:proc.stdout.index("\nexit 0")])
    assert "ray" not in proc.stdout.rsplit("loaded", 1)[1]  # Ray never started (nor imported)
    assert plan["sweep"]["repeats"] == 3 and plan["sweep"]["archs"] == ["resnet50",
                                                                         "convnext_base"]
    assert plan["archs"]["resnet50"]["lr_range"] == pytest.approx([1e-3, 0.1])
    assert plan["archs"]["convnext_base"]["lr_range"] == pytest.approx([1e-4, 1e-2])
    paper = {b["arch"]: b for b in plan["baselines"] if b["postproc.orth"]}
    assert {a: (b["optim.name"], b["optim.lr"], b["optim.weight_decay"], b["optim.batch_size"],
                b["optim.epochs"], b["postproc.beta"], b["postproc.layer"], b["data.n_shots"],
                b["image_size"]) for a, b in paper.items()} == {
        "resnet50": ("sgd", 0.01, 0.01, 96, 300, 3e-5, 37, 100, 32),
        "convnext_base": ("adamw", 1e-3, 0.1, 48, 300, 3e-5, 94, 100, 32)}
    assert len(plan["baselines"]) == 6 and all(b["device"] == "cuda" for b in plan["baselines"])


def test_script_refuses_a_name_another_sweep_has_in_mlflow(tmp_path, reference_dir,
                                                          cifar_jpeg_dir, new_mlflow_store,
                                                          refusal, monkeypatch):
    """Its Ray results are gone (or elsewhere), its MLflow parent run is not: a fresh sweep of
    that name would mix with it, so it is refused before Ray starts."""
    from mlflow.tracking import MlflowClient

    from contract import SWEEP_ID_TAG, SWEEP_TAG

    client = MlflowClient(new_mlflow_store(tmp_path / "mlflow.db"))
    exp_id = client.create_experiment("ghn-sweep")
    old = client.create_run(exp_id, run_name="noise_vs_lr-smoke",
                            tags={SWEEP_TAG: "noise_vs_lr-smoke", SWEEP_ID_TAG: "old-id"})
    monkeypatch.setenv("GHN_SWEEP_CACHE", str(tmp_path / "cache"))
    err = refusal("--storage", str(tmp_path / "ray"), "--dataset", str(cifar_jpeg_dir),
                  "--ghn", str(reference_dir / "ghn2_random_imagenet_seed0.pt"), cwd=tmp_path)
    assert "already holds a sweep named 'noise_vs_lr-smoke'" in err
    assert old.info.run_id in err and "--name NEW_NAME" in err
    assert not (tmp_path / "ray").exists()  # no Ray experiment, no sweep id written
    assert len(client.search_runs([exp_id])) == 1  # and no second parent run
