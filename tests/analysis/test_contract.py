"""The report reads what the sweep's real tracking callback writes (not only our synthetic copy)."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from analysis import read_mlflow, trials_table
from contract import CONFIG_KEY, TAGS_KEY
from sweeps.tracking import MlflowTrackingCallback
from trainable import TrialConfig


class Trial:
    """What the callback reads of a ray.tune Trial."""

    def __init__(self, trial_id: str, **config):
        self.trial_id, self.error_file = trial_id, None
        self.status, self.last_result = "RUNNING", {}
        self.config = {"optim.epochs": 3, **config}
        self.resolved = TrialConfig.from_flat(
            {k: v for k, v in self.config.items()
             if not k.startswith(("search.", "repeat."))}).to_flat()

    def __str__(self) -> str:
        return f"sweep_trial_{self.trial_id}"


def _report(cb, trial, epoch: int, val: float, diverged: float = 0.0) -> None:
    result = {"epoch": float(epoch), "train/loss": 1.0, "train/acc": val, "val/loss": 1.0,
              "val/acc": val, "test/acc": val - 0.01, "lr": 0.01, "epoch_time_s": 1.5,
              "images_per_s": 10.0, "diverged": diverged, "training_iteration": epoch}
    if epoch == 1:
        result.update({CONFIG_KEY: trial.resolved, TAGS_KEY: {"device": "cpu"},
                       "init/mean_abs_cos": 0.1})
    cb.on_trial_result(0, [], trial, result)


def test_report_reads_the_callbacks_runs(tmp_path, new_mlflow_store):
    uri = new_mlflow_store(tmp_path / "mlflow.db")
    MlflowClient(uri).create_experiment("ghn-sweep", artifact_location=(tmp_path / "a").as_uri())
    cb = MlflowTrackingCallback(tracking_uri=uri, experiment="ghn-sweep", sweep="s1",
                                sweep_params={"sweep.max_epochs": 3})
    cb.setup()
    done = Trial("t1", arch="resnet18", init="ghn", **{"optim.lr": 0.02, "postproc.beta": 3e-5,
                                                       "postproc.orth": True})
    stopped = Trial("t2", arch="resnet18", init="random", **{"optim.lr": 0.1})
    diverged = Trial("t3", arch="resnet18", init="ghn", **{"optim.lr": 1.0})
    failed = Trial("t4", arch="resnet18", init="ghn", **{"optim.lr": 0.05, "search.noise": False})
    for t in (done, stopped, diverged, failed):
        cb.on_trial_start(0, [], t)
    for epoch, val in enumerate([0.3, 0.5, 0.4], start=1):
        _report(cb, done, epoch, val)
    _report(cb, stopped, 1, 0.2)
    _report(cb, diverged, 1, 0.1, diverged=1.0)
    for t in (done, stopped, diverged):
        cb.on_trial_complete(0, [], t)
    cb.on_trial_error(0, [], failed)

    cb.flush()
    sweep = read_mlflow(tracking_uri=uri, experiment="ghn-sweep")
    assert sweep.in_progress  # the parent run is open until the experiment ends
    cb.on_experiment_end([])
    sweep = read_mlflow(tracking_uri=uri, experiment="ghn-sweep")
    assert not sweep.in_progress and sweep.name == "s1"
    rows = {r["trial_id"]: r for r in trials_table(sweep).to_pylist()}
    assert {k: r["status"] for k, r in rows.items()} == {
        "t1": "finished", "t2": "stopped_early", "t3": "diverged", "t4": "failed"}
    t1 = rows["t1"]
    assert (t1["method"], t1["beta"], t1["orth"], t1["lr"], t1["epochs_planned"]) == (
        "ghn+pp", 3e-5, True, 0.02, 3)
    assert (t1["best_val_acc"], t1["best_epoch"], t1["test_acc_at_best"]) == (0.5, 2, 0.49)
    assert t1["train_time_s"] == 4.5 and t1["init_mean_abs_cos"] == 0.1
    assert (rows["t4"]["lr"], rows["t4"]["beta"], rows["t4"]["method"]) == (0.05, 0.0, "ghn")


def test_an_interrupted_sweep_reads_as_a_snapshot(tmp_path, new_mlflow_store):
    uri = new_mlflow_store(tmp_path / "mlflow.db")
    MlflowClient(uri).create_experiment("ghn-sweep", artifact_location=(tmp_path / "a").as_uri())
    cb = MlflowTrackingCallback(tracking_uri=uri, experiment="ghn-sweep", sweep="s1")
    cb.setup()
    done, cut = Trial("t1", arch="resnet18", init="random"), Trial("t2", arch="resnet18")
    for t in (done, cut):
        cb.on_trial_start(0, [], t)
    for epoch in (1, 2, 3):
        _report(cb, done, epoch, 0.3)
    _report(cb, cut, 1, 0.2)
    cb.on_trial_complete(0, [], done)
    done.status = cut.status = "TERMINATED"  # Tune stops t2 at Ctrl-C: no `done`, no complete
    done.last_result, cut.last_result = {"done": True}, {"done": False}
    cb.on_experiment_end([done, cut])
    sweep = read_mlflow(tracking_uri=uri, experiment="ghn-sweep")
    assert sweep.in_progress  # not "finished": it can be resumed
    rows = {r["trial_id"]: r["status"] for r in trials_table(sweep).to_pylist()}
    assert rows == {"t1": "finished", "t2": "interrupted"}


def _one_trial_experiment(cb, trial, val: float) -> None:
    """A Tune experiment of one trial that runs its 3 epochs, as the callback sees it."""
    cb.on_trial_start(0, [], trial)
    for epoch in (1, 2, 3):
        _report(cb, trial, epoch, val)
    cb.on_trial_complete(0, [], trial)
    trial.status, trial.last_result = "TERMINATED", {"done": True}
    cb.on_experiment_end([trial])


def test_repeats_are_read_as_repeats_and_the_search_leaves_the_parent_open(tmp_path,
                                                                          new_mlflow_store):
    uri = new_mlflow_store(tmp_path / "mlflow.db")
    MlflowClient(uri).create_experiment("ghn-sweep", artifact_location=(tmp_path / "a").as_uri())
    search = MlflowTrackingCallback(tracking_uri=uri, experiment="ghn-sweep", sweep="s1",
                                    final=False)
    search.setup()
    _one_trial_experiment(search, Trial("t1", arch="resnet18", init="random",
                                        **{"optim.lr": 0.1}), 0.3)
    assert read_mlflow(tracking_uri=uri, experiment="ghn-sweep").in_progress  # repeats to come

    repeats = MlflowTrackingCallback(tracking_uri=uri, experiment="ghn-sweep", sweep="s1",
                                     sweep_id=search.sweep_id)  # the same sweep's next phase
    repeats.setup()
    _one_trial_experiment(repeats, Trial("t9", arch="resnet18", init="random", seed=1,
                                         **{"optim.lr": 0.1, "repeat.of": "t1"}), 0.4)
    sweep = read_mlflow(tracking_uri=uri, experiment="ghn-sweep")
    assert not sweep.in_progress
    rows = {r["trial_id"]: r for r in trials_table(sweep).to_pylist()}
    assert (rows["t1"]["repeat_of"], rows["t9"]["repeat_of"], rows["t9"]["seed"]) == (
        None, "t1", 1)


def test_report_prints_the_provenance_of_parent_and_trials(tmp_path, new_mlflow_store):
    import torch

    from analysis import build_report
    from trainable import provenance

    uri = new_mlflow_store(tmp_path / "mlflow.db")
    MlflowClient(uri).create_experiment("ghn-sweep", artifact_location=(tmp_path / "a").as_uri())
    cb = MlflowTrackingCallback(tracking_uri=uri, experiment="ghn-sweep", sweep="s1")
    cb.setup()
    trials = [Trial("t1", arch="resnet18", init="random"), Trial("t2", arch="resnet18")]
    for i, t in enumerate(trials):
        cb.on_trial_start(0, [], t)
        tags = {**provenance(torch.device("cpu")), "device.name": f"node-{i} gpu"}
        cb.on_trial_result(0, [], t, {"epoch": 1.0, "val/acc": 0.3, "training_iteration": 1,
                                      CONFIG_KEY: t.resolved, TAGS_KEY: tags})
        cb.on_trial_complete(0, [], t)
    cb.on_experiment_end([])
    sweep = read_mlflow(tracking_uri=uri, experiment="ghn-sweep")
    assert sweep.provenance["version.torch"] == torch.__version__  # the driver's
    assert {t.provenance["device.name"] for t in sweep.trials} == {"node-0 gpu", "node-1 gpu"}
    text = (build_report(sweep, tmp_path / "out").out / "report.md").read_text()
    section = text.split("## Provenance", 1)[1].split("\n## ", 1)[0]
    assert f"| `version.torch` | {torch.__version__} | {torch.__version__} (all) |" in section
    assert "node-0 gpu (1)" in section and "node-1 gpu (1)" in section  # differing: counted
    for key in ("code.commit", "version.ray", "version.optuna", "version.mlflow", "device.cuda"):
        assert f"`{key}`" in section


def test_same_named_sweeps_never_mix_and_the_id_chooses(tmp_path, new_mlflow_store):
    uri = new_mlflow_store(tmp_path / "mlflow.db")
    MlflowClient(uri).create_experiment("ghn-sweep", artifact_location=(tmp_path / "a").as_uri())
    sweeps = []
    for trial_id in ("old", "new"):  # e.g. a sweep from before sweep ids, then a new one
        cb = MlflowTrackingCallback(tracking_uri=uri, experiment="ghn-sweep", sweep="s1")
        cb.setup()
        t = Trial(trial_id, arch="resnet18", init="random")
        cb.on_trial_start(0, [], t)
        _report(cb, t, 1, 0.3)
        cb.on_trial_complete(0, [], t)
        cb.on_experiment_end([])
        sweeps.append(cb)
    newest = read_mlflow(tracking_uri=uri, experiment="ghn-sweep", sweep="s1")
    assert [t.trial_id for t in newest.trials] == ["new"]
    assert any(sweeps[0].parent_run_id in note for note in newest.notes)  # says which to pick
    older = read_mlflow(tracking_uri=uri, experiment="ghn-sweep", sweep=sweeps[0].sweep_id)
    assert [t.trial_id for t in older.trials] == ["old"]
