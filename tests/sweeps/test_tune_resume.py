"""Real Ray Tune runs on one Ray for the module: a trial killed mid-way, restored with
Tuner.restore, one MLflow run; a trial that fails once is retried from its checkpoint."""

import csv
import json
import logging
import os

import pytest
from mlflow.tracking import MlflowClient

from contract import TRIAL_ID_TAG
from sweeps.tracking import MlflowTrackingCallback

ray = pytest.importorskip("ray")
tune = pytest.importorskip("ray.tune")
pytestmark = pytest.mark.slow  # a real Ray for the module: ~8 s to start, 7-30 s a test


@pytest.fixture(scope="module")
def ray_local(session_cache):
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    cache = session_cache
    # A Ray of the module's own, never one that `ray start` left on the machine (ray.init joins).
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"GHN_SWEEP_CACHE": str(cache), "OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


def _trainable_killed_on_third_report():
    """run_trial, but the first attempt's worker process dies as it reports epoch 3.

    Built in a function so that Ray pickles it by value (workers cannot import test modules).
    """

    def killed_on_third_report(config):
        import os

        from ray import tune

        import trainable

        if tune.get_checkpoint() is None:
            real = tune.report

            def report(metrics, **kwargs):
                if metrics["epoch"] == 3:
                    os._exit(1)  # like an OOM kill or a lost node: no exception, no cleanup
                real(metrics, **kwargs)

            tune.report = report
        trainable.run_trial(config)

    return killed_on_third_report


@pytest.mark.slow
def test_killed_trial_restores_at_next_epoch_with_one_mlflow_run(ray_local, tmp_path,
                                                                 cifar_jpeg_dir,
                                                                 new_mlflow_store):
    uri = new_mlflow_store(tmp_path / "mlflow.db")
    config = {"arch": "resnet18", "small_stem": False, "init": "random", "device": "cpu",
              "data.dataset": str(cifar_jpeg_dir), "data.n_shots": 5, "data.val_per_class": 5,
              "data.test_per_class": 5, "optim.batch_size": 25, "optim.epochs": 4}
    callback = MlflowTrackingCallback(tracking_uri=uri, experiment="exp", sweep="resume")
    flaky = _trainable_killed_on_third_report()
    tuner = tune.Tuner(
        flaky, param_space=config,
        tune_config=tune.TuneConfig(num_samples=1, metric="val/acc", mode="max"),
        run_config=tune.RunConfig(name="resume", storage_path=str(tmp_path / "ray"),
                                  callbacks=[callback], verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0)))
    first = tuner.fit()
    assert first[0].error is not None and first[0].metrics["epoch"] == 2
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("exp").experiment_id],
                                filter_string="tags.`mlflow.parentRunId` != ''")
    assert run.info.status == "FAILED"  # the trial ended (errored): its run is closed

    restored = tune.Tuner.restore(str(tmp_path / "ray" / "resume"), flaky,
                                  resume_errored=True)
    second = restored.fit()
    assert second[0].error is None
    epochs = second[0].metrics_dataframe["epoch"].tolist()
    assert epochs == [1.0, 2.0, 3.0, 4.0]  # continued at epoch 3: no gap, no repeat
    runs = client.search_runs([client.get_experiment_by_name("exp").experiment_id],
                              filter_string="tags.`mlflow.parentRunId` != ''")
    assert len(runs) == 1 and runs[0].info.run_id == run.info.run_id
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.tags[TRIAL_ID_TAG] == second[0].metrics["trial_id"]
    history = client.get_metric_history(run.info.run_id, "val/acc")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]


@pytest.mark.slow
def test_trial_stopped_early_by_tune_closes_its_run_killed(ray_local, tmp_path, cifar_jpeg_dir,
                                                           new_mlflow_store):
    from trainable import run_trial

    uri = new_mlflow_store(tmp_path / "mlflow.db")
    config = {"arch": "resnet18", "small_stem": False, "init": "random", "device": "cpu",
              "data.dataset": str(cifar_jpeg_dir), "data.n_shots": 5, "data.val_per_class": 5,
              "data.test_per_class": 5, "optim.batch_size": 25, "optim.epochs": 4}
    callback = MlflowTrackingCallback(tracking_uri=uri, experiment="exp", sweep="early")
    results = tune.Tuner(
        run_trial, param_space=config,
        tune_config=tune.TuneConfig(num_samples=1, metric="val/acc", mode="max"),
        run_config=tune.RunConfig(name="early", storage_path=str(tmp_path / "ray"), verbose=0,
                                  stop={"epoch": 2}, callbacks=[callback])).fit()
    assert results[0].error is None and results[0].metrics["epoch"] == 2
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("exp").experiment_id],
                                filter_string="tags.`mlflow.parentRunId` != ''")
    assert run.info.status == "KILLED" and "ghn_sweep.stopped_early" in run.data.tags
    assert client.get_run(_parent_run_id(client, "early")).info.status == "FINISHED"


def _parent_run_id(client, sweep):
    exp = client.get_experiment_by_name("exp")
    (parent,) = client.search_runs([exp.experiment_id],
                                   filter_string=f"tags.`ghn_sweep.sweep` = '{sweep}'")
    return parent.info.run_id


def test_sweep_summary_names_the_best_epoch_of_any_trial(ray_local, tmp_path, caplog,
                                                         new_mlflow_store):
    """The end-of-sweep line, the best_config.json and the progress line name one trial, by
    contract.rank_key: the best epoch of any trial (a trial whose val/acc peaked at 0.9 and
    ended at 0.6 beats one that stayed at 0.7: Tune's default compares last epochs), among
    trials that ran to their last epoch (0.95 after 2 of 3 epochs does not count), never a
    diverged one (0.99)."""
    from sweeps._config import SweepConfig
    from sweeps._grid import grid_trials
    from sweeps._outputs import write_outputs
    from sweeps._progress import ProgressCallback

    def curve(config):
        from ray import tune

        for epoch, acc in enumerate(config["accs"], start=1):
            tune.report({"epoch": epoch, "val/acc": acc,
                         "diverged": float(config["diverges"] and epoch == 2)})
            if config["diverges"] and epoch == 2:
                return

    caplog.set_level(logging.INFO, logger="sweeps")
    progress = ProgressCallback("val/acc", max_epochs=3)
    base = {"arch": "resnet18", "init": "ghn", "optim.lr": 0.01}
    accs = [[0.5, 0.9, 0.6], [0.7, 0.7, 0.7], [0.5, 0.95], [0.5, 0.99, 0.99]]
    grid = tune.Tuner(
        curve, param_space={**base, "accs": tune.grid_search(accs),
                            "diverges": tune.sample_from(lambda spec: spec.config.accs[1]
                                                         == 0.99)},
        run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), verbose=0,
                                  callbacks=[progress])).fit()
    statuses = {tuple(t.config["accs"]): t.status for t in grid_trials(grid, 3)}
    assert statuses == {(0.5, 0.9, 0.6): "finished", (0.7, 0.7, 0.7): "finished",
                        (0.5, 0.95): "stopped_early", (0.5, 0.99, 0.99): "diverged"}
    cfg = SweepConfig(tracking_uri=new_mlflow_store(tmp_path / "mlflow.db"))
    write_outputs(cfg, grid, tmp_path / "out")
    assert "best val/acc = 0.9000 (epoch 2, finished) with resnet18 ghn lr=0.01" in caplog.messages
    last_progress = [line for line in caplog.messages if line.startswith("[")][-1]
    assert last_progress.endswith("| best val/acc 0.900 (resnet18 ghn lr=0.01)")
    assert progress.best_trial()[1].config["accs"] == [0.5, 0.9, 0.6]


def _fails_first_if_weak(marker: str):
    """Reports a constant val/acc for 3 epochs; the weak trial (val/acc < 0.2) dies on its first
    attempt before any report, like a trial cut off by a killed driver."""

    def trial(config):
        import os

        from ray import tune

        if config["acc"] < 0.2 and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("cut off")
        for epoch in (1, 2, 3):
            tune.report({"epoch": epoch, "val/acc": config["acc"]})

    return trial


def _asha_tuner(trial, path, accs):
    from ray.tune.schedulers import ASHAScheduler

    from sweeps._resume import SchedulerState

    asha = ASHAScheduler(time_attr="epoch", max_t=3, grace_period=1, reduction_factor=2)
    return tune.Tuner(
        trial, param_space={"acc": tune.grid_search(accs)},
        tune_config=tune.TuneConfig(metric="val/acc", mode="max", scheduler=asha),
        run_config=tune.RunConfig(name=path.name, storage_path=str(path.parent), verbose=0,
                                  callbacks=[SchedulerState(asha)],
                                  failure_config=tune.FailureConfig(max_failures=0)))


def test_restored_asha_stops_a_trial_as_the_uninterrupted_one_would(ray_local, tmp_path, caplog):
    """Tune restores no scheduler: without its saved rungs, a resumed ASHA has nothing to
    compare the weak trial's first epoch with and runs it to the end."""
    caplog.set_level(logging.INFO, logger="sweeps._resume")
    trial = _fails_first_if_weak(str(tmp_path / "cut"))
    first = _asha_tuner(trial, tmp_path / "asha", [0.9, 0.8, 0.7, 0.1]).fit()
    assert sorted(r.metrics.get("val/acc", 0) for r in first if not r.error) == [0.7, 0.8, 0.9]
    resumed = tune.Tuner.restore(str(tmp_path / "asha"), trial, resume_errored=True).fit()
    (weak,) = [r for r in resumed if r.config["acc"] == 0.1]
    assert weak.error is None and weak.metrics["epoch"] == 1  # stopped at the first rung
    assert any(m.startswith("resume: ASHA's rungs restored (") for m in caplog.messages)


def _checkpoints_then_fails_once(marker: str):
    """Checkpoints every epoch of 4; the first attempt fails after epoch 3's checkpoint."""

    def trial(config):
        import json
        import os
        import tempfile

        from ray import tune

        start = 0
        if (checkpoint := tune.get_checkpoint()) is not None:
            with checkpoint.as_directory() as d:
                start = json.load(open(os.path.join(d, "state.json")))["epoch"]
        for epoch in range(start + 1, 5):
            with tempfile.TemporaryDirectory() as d:
                json.dump({"epoch": epoch}, open(os.path.join(d, "state.json"), "w"))
                tune.report({"epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(d))
            if epoch == 3 and not os.path.exists(marker):
                open(marker, "w").close()
                raise RuntimeError("cut off")

    return trial


def test_resume_after_a_checkpoint_was_deleted_ahead_of_tunes_state(ray_local, tmp_path,
                                                                    capfd):
    """A killed driver may have deleted a checkpoint (retention: newest two) that Tune's saved
    state still lists; the restored trial's next checkpoint made Tune delete it again and log a
    FileNotFoundError traceback."""
    from sweeps._resume import heal_checkpoints

    trial = _checkpoints_then_fails_once(str(tmp_path / "cut"))
    run_config = tune.RunConfig(name="ckpt", storage_path=str(tmp_path), verbose=0,
                                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                failure_config=tune.FailureConfig(max_failures=0))
    (first,) = tune.Tuner(trial, run_config=run_config).fit()
    assert first.error is not None and first.metrics["epoch"] == 3
    older = [c for c, _ in first.best_checkpoints if c.path != first.checkpoint.path]
    assert len(older) == 1
    import shutil

    shutil.rmtree(older[0].path)  # what the killed driver's next checkpoint did
    restored = tune.Tuner.restore(str(tmp_path / "ckpt"), trial, resume_errored=True)
    assert heal_checkpoints(restored) == 1
    (second,) = restored.fit()
    assert second.error is None and second.metrics["epoch"] == 4
    err = capfd.readouterr().err
    assert "Error handling checkpoint" not in err and "Traceback" not in err


def test_harmless_flags_reach_the_restored_tuners_searcher_and_tracking(ray_local, tmp_path,
                                                                         new_mlflow_store):
    from sweeps._config import SweepConfig
    from sweeps._resume import apply_harmless
    from sweeps._searchers import FixedConfigs, Limiter

    old, new = (new_mlflow_store(tmp_path / name) for name in ("old.db", "new.db"))
    tune.Tuner(
        lambda config: tune.report({"epoch": 1, "val/acc": 0.5}),
        tune_config=tune.TuneConfig(num_samples=1, search_alg=Limiter(
            FixedConfigs([{"x": 1}]), max_concurrent=2)),
        run_config=tune.RunConfig(name="h", storage_path=str(tmp_path), verbose=0, callbacks=[
            MlflowTrackingCallback(tracking_uri=old, experiment="exp", sweep="h")])).fit()
    restored = tune.Tuner.restore(str(tmp_path / "h"), lambda config: None)
    apply_harmless(restored, SweepConfig(max_concurrent=5, tracking_uri=new))
    restored.fit()
    assert restored._local_tuner._tune_config.search_alg.max_concurrent == 5
    client = MlflowClient(new)  # the restored callback opened its parent run in the new store
    assert client.search_runs([client.get_experiment_by_name("exp").experiment_id])


def test_checkpoints_force_no_snapshots_and_the_newest_stays(ray_local, tmp_path, monkeypatch):
    """Tune's own retention (num_to_keep=2) would save the whole experiment's state every second
    checkpoint of any trial; with the sweep's retention Tune saves it on its clock alone."""
    from sweeps._retention import CheckpointRetention

    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "3600")  # the clock: once, then at the end

    def eight_checkpoints(config):
        import os
        import tempfile

        from ray import tune

        for epoch in range(1, 9):
            with tempfile.TemporaryDirectory() as d:
                open(os.path.join(d, "state"), "w").close()
                tune.report({"epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(d))

    class Snapshots(tune.Callback):
        def __init__(self):
            self.taken = 0

        def get_state(self):
            self.taken += 1
            return {"taken": self.taken}

    snapshots = Snapshots()
    run_config = tune.RunConfig(name="retention", storage_path=str(tmp_path), verbose=0,
                                checkpoint_config=tune.CheckpointConfig(),
                                callbacks=[snapshots, CheckpointRetention()])
    (result,) = tune.Tuner(eight_checkpoints, run_config=run_config).fit()
    assert result.metrics["epoch"] == 8 and snapshots.taken <= 2  # not 4 forced ones more
    left = sorted(p.name for p in (tmp_path / "retention").glob("*/checkpoint_*"))
    assert left[-1] == "checkpoint_000007" and os.path.exists(result.checkpoint.path)


def _fails_once_after_epoch_2(marker: str):
    """The sweep's trial function, raising once right after reporting epoch 2.

    Built in a function so that Ray pickles it by value (workers cannot import test modules).
    """

    def trial(config, sweep):
        import os

        from ray import tune

        from sweeps._trial import sweep_trial

        if not os.path.exists(marker):
            real = tune.report

            def report(metrics, **kwargs):
                real(metrics, **kwargs)
                if metrics["epoch"] == 2:
                    open(marker, "w").close()
                    raise RuntimeError("injected fault after epoch 2")

            tune.report = report
        sweep_trial(config, sweep)

    return trial


def test_failing_trial_is_retried_from_its_checkpoint(ray_local, tmp_path, reference_dir,
                                                      cifar_jpeg_dir, new_mlflow_store):
    from sweeps._config import SweepConfig
    from sweeps._tuner import build_tuner

    uri = new_mlflow_store(tmp_path / "mlflow.db")
    cfg = SweepConfig(num_samples=1, max_epochs=3, grace_period=3, n_shots=10,
                      dataset=str(cifar_jpeg_dir), max_failures=1,
                      ghn=str(reference_dir / "ghn2_random_imagenet_seed0.pt"),
                      storage=str(tmp_path / "ray"), tracking_uri=uri)
    marker = tmp_path / "failed-once"
    tracking = MlflowTrackingCallback(tracking_uri=uri, experiment="faults", sweep="faults")
    grid = build_tuner(cfg, [tracking], trial_fn=_fails_once_after_epoch_2(str(marker))).fit()
    assert marker.exists()  # the fault happened
    (result,) = grid
    assert result.error is None and result.metrics["epoch"] == 3
    # Ray rewrites progress.csv from storage when it restarts a trial, so rows reported after the
    # last storage sync can be missing there; no epoch may appear twice, though.
    epochs = result.metrics_dataframe["epoch"].tolist()
    assert epochs[-1] == 3.0 and len(epochs) == len(set(epochs))
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("faults")
    (run,) = client.search_runs([exp.experiment_id], "tags.`mlflow.parentRunId` != ''")
    assert run.info.status == "FINISHED" and run.data.tags.get("ghn_sweep.retried") == "true"
    # The MLflow run is the complete record: each epoch once, so the retry resumed after epoch 2.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch")] == [1, 2, 3]
    assert os.path.exists(tmp_path / "ray" / cfg.sweep_name)


def _dies_once_after_a_sync(marker: str):
    """Checkpoints epochs 1-4. The first attempt waits after epoch 1 until Tune has copied its
    result.json to storage, then reports epoch 2 and dies, before Tune's next snapshot."""

    def trial(config):
        import glob
        import json
        import os
        import tempfile
        import time

        from ray import tune

        start = 1
        if (checkpoint := tune.get_checkpoint()) is not None:
            with checkpoint.as_directory() as d, open(os.path.join(d, "epoch.json")) as f:
                start = json.load(f) + 1
        for epoch in range(start, 5):
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, "epoch.json"), "w") as f:
                    json.dump(epoch, f)
                tune.report({"epoch": epoch, "val/acc": 0.1 * epoch},
                            checkpoint=tune.Checkpoint.from_directory(d))
            if epoch == 1 and not os.path.exists(marker):
                synced = os.path.join(config["storage"], "*", "result.json")
                while not any(open(f).read().strip() for f in glob.glob(synced)):
                    time.sleep(0.02)
            if epoch == 2 and not os.path.exists(marker):
                open(marker, "w").close()
                raise RuntimeError("lost its node")

    return trial


def test_a_retried_trials_result_files_keep_every_report(ray_local, tmp_path, monkeypatch):
    """Tune copies a retried trial's result.json back from storage over the driver's copy;
    `ReportsKeptOnRetry` puts the driver's there first. Without it the reports
    since Tune's last snapshot are gone (here epoch 2, which this test would miss: Tune
    snapshots every 10 s, far longer than the driver takes from that report to the retry, even
    on a loaded machine)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from sweeps._tuner import ReportsKeptOnRetry

    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "10")
    callbacks = [CSVLoggerCallback(), JsonLoggerCallback(), ReportsKeptOnRetry()]
    storage = tmp_path / "ray" / "retry"
    tune.Tuner(
        _dies_once_after_a_sync(str(tmp_path / "died")), param_space={"storage": str(storage)},
        tune_config=tune.TuneConfig(metric="val/acc", mode="max"),
        run_config=tune.RunConfig(name="retry", storage_path=str(storage.parent), verbose=0,
                                  callbacks=callbacks,
                                  failure_config=tune.FailureConfig(max_failures=1))).fit()
    (trial_dir,) = storage.glob("trial*")
    epochs = [json.loads(line)["epoch"]
              for line in (trial_dir / "result.json").read_text().splitlines()]
    with open(trial_dir / "progress.csv") as f:
        csv_epochs = [int(row["epoch"]) for row in csv.DictReader(f)]
    assert csv_epochs == [1, 2, 3, 4]  # Tune's CSV logger keeps its file open across the retry
    assert epochs == [1, 2, 3, 4]


def test_a_checkpoint_goes_into_local_storage_as_a_hard_link(ray_local, tmp_path):
    """With the sweep's storage filesystem, Tune's copy of a reported checkpoint into storage is
    a link to the file the trial wrote (the same inode), and the checkpoint reads back. The
    trial writes beside the storage, as a link needs one filesystem (``/tmp`` may be another)."""
    from trainable import local_storage_filesystem

    def trial(config):
        import os
        import tempfile

        from ray import tune

        from trainable import local_storage_filesystem

        for epoch in (1, 2):
            with tempfile.TemporaryDirectory(dir=config["tmp"]) as d:
                with open(f"{d}/state.pt", "wb") as f:
                    f.write(bytes([epoch]) * 1_000_000)
                tune.report({"epoch": epoch, "inode": os.stat(f"{d}/state.pt").st_ino},
                            checkpoint=tune.Checkpoint(d, filesystem=local_storage_filesystem()))

    (result,) = tune.Tuner(trial, param_space={"tmp": str(tmp_path)}, run_config=tune.RunConfig(
        name="linked", storage_path=str(tmp_path / "ray"), verbose=0,
        storage_filesystem=local_storage_filesystem())).fit()
    stored = os.path.join(result.checkpoint.path, "state.pt")
    assert os.stat(stored).st_ino == result.metrics["inode"]
    with result.checkpoint.as_directory() as d:
        assert open(os.path.join(d, "state.pt"), "rb").read() == bytes([2]) * 1_000_000
