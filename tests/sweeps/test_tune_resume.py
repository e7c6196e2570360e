"""A real Ray Tune run: a trial killed mid-way, restored with Tuner.restore, one MLflow run."""

import os

import pytest
from mlflow.tracking import MlflowClient

from sweeps.tracking import TRIAL_ID_TAG, MlflowTrackingCallback

ray = pytest.importorskip("ray")
tune = pytest.importorskip("ray.tune")


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    cache = tmp_path_factory.mktemp("ghn-sweep-cache")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
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
                                                                 cifar_jpeg_dir):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
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
def test_trial_stopped_early_by_tune_closes_its_run_killed(ray_local, tmp_path, cifar_jpeg_dir):
    from trainable import run_trial

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
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


def test_sweep_summary_names_the_best_epoch_of_any_trial(ray_local, tmp_path, capsys):
    """The end-of-sweep line, the best_config.json and the progress line name one trial, by
    analysis.best's rule: the best epoch of any trial (a trial whose val/acc peaked at 0.9 and
    ended at 0.6 beats one that stayed at 0.7: Tune's default compares last epochs), among
    trials that ran to their last epoch (0.95 after 2 of 3 epochs does not count), never a
    diverged one (0.99)."""
    from sweeps._config import SweepConfig
    from sweeps._progress import ProgressCallback
    from sweeps._run import _finish, grid_trials

    def curve(config):
        from ray import tune

        for epoch, acc in enumerate(config["accs"], start=1):
            tune.report({"epoch": epoch, "val/acc": acc,
                         "diverged": float(config["diverges"] and epoch == 2)})
            if config["diverges"] and epoch == 2:
                return

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
    cfg = SweepConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    _finish(cfg, grid, tmp_path / "out")
    out = capsys.readouterr().out
    assert "best val/acc = 0.9000 (epoch 2, finished) with resnet18 ghn lr=0.01" in out
    last_progress = [line for line in out.splitlines() if line.startswith("[")][-1]
    assert last_progress.endswith("| best val/acc 0.900 (resnet18 ghn lr=0.01)")
    assert progress.best_trial()[1].config["accs"] == [0.5, 0.9, 0.6]
