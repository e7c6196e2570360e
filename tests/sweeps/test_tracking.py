"""The driver-side MLflow callback: run lifecycle, restore without duplicates, dead server."""

import json
import logging
import pickle
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from contract import (
    CONFIG_KEY,
    DIVERGED_TAG,
    INTERRUPTED_TAG,
    STOPPED_EARLY_TAG,
    SWEEP_ID_TAG,
    SWEEP_TAG,
    TAGS_KEY,
    TRIAL_ID_TAG,
)
from sweeps import _patient
from sweeps.tracking import MlflowTrackingCallback, find_parent_run
from trainable import TrialConfig


class FakeTrial:
    """The attributes of ray.tune.experiment.Trial the callback reads.

    ``config`` is Tune's (partial, maybe with sweep-only keys); ``resolved`` is what the trial
    itself runs with and sends in its first report.
    """

    def __init__(self, trial_id, config):
        self.trial_id, self.config, self.error_file = trial_id, config, None
        self.status, self.last_result = "RUNNING", {}
        known = TrialConfig().to_flat()
        self.resolved = TrialConfig.from_flat({k: v for k, v in config.items() if k in known})

    def __str__(self):
        return f"run_trial_{self.trial_id}"


def _result(epoch, trial=None, **extra):
    r = {"epoch": float(epoch), "train/loss": 2.0 / epoch, "train/acc": 0.1 * epoch,
         "val/loss": 2.1, "val/acc": 0.1 * epoch, "test/acc": 0.1, "lr": 0.01,
         "epoch_time_s": 1.0, "images_per_s": 100.0, "diverged": 0.0,
         "training_iteration": epoch, "trial_id": "ignored", "done": False}
    if epoch == 1 and trial is not None:
        cfg = trial.resolved
        r.update({"init/mean_abs_cos": 0.2, CONFIG_KEY: cfg.to_flat(),
                  TAGS_KEY: {"arch": cfg.arch, "init": cfg.init, "ghn.checkpoint": "g-abc"}})
    r.update(extra)
    return r


@pytest.fixture
def uri(tmp_path, new_mlflow_store):
    return new_mlflow_store(tmp_path / "mlflow.db")


def _callback(uri, sweep="s1"):
    cb = MlflowTrackingCallback(tracking_uri=uri, experiment="exp", sweep=sweep,
                                sweep_params={"num_samples": 4})
    cb.setup()
    cb.flush()  # MLflow calls run on the callback's writer thread
    return cb


def _play(cb, trial, epochs, end="complete"):
    cb.on_trial_start(0, [], trial)
    for e in epochs:
        cb.on_trial_result(0, [], trial, _result(e, trial) if not isinstance(e, dict) else e)
    if end == "complete":
        cb.on_trial_complete(0, [], trial)
    elif end == "error":
        cb.on_trial_error(0, [], trial)
    cb.flush()


def _children(uri, status=None):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("exp")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`mlflow.parentRunId` != ''")
    return [r for r in runs if status is None or r.info.status == status]


def _history(uri, run_id, key):
    return [(m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key)]


def test_finished_trial_is_one_child_run_with_params_tags_and_epoch_steps(uri):
    cb = _callback(uri)
    config = {"arch": "resnet18", "init": "ghn", "optim.lr": 0.01, "optim.epochs": 3,
              "noise": True}  # a sweep-only key: params come from the trial's resolved config
    _play(cb, FakeTrial("t1", config), [1, 2, 3])
    cb.on_experiment_end([])
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("exp")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    (run,) = _children(uri)
    parent = client.get_run(cb.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags[SWEEP_TAG] == "s1"
    assert parent.data.params["num_samples"] == "4"
    assert run.info.status == "FINISHED" and run.info.run_name == "run_trial_t1"
    tags, params = run.data.tags, run.data.params
    assert tags["mlflow.parentRunId"] == cb.parent_run_id and tags[TRIAL_ID_TAG] == "t1"
    assert (tags["arch"], tags["init"], tags["ghn.checkpoint"]) == ("resnet18", "ghn", "g-abc")
    assert params["optim.lr"] == "0.01" and params["optim.batch_size"] == "96"  # defaults filled
    assert "noise" not in params
    assert [s for s, _ in _history(uri, run.info.run_id, "val/acc")] == [1, 2, 3]
    assert _history(uri, run.info.run_id, "init/mean_abs_cos") == [(0, 0.2)]
    assert "training_iteration" not in run.data.metrics and "done" not in run.data.metrics


def test_connect_before_the_sweep_creates_the_store_but_no_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # no store yet
    cb = MlflowTrackingCallback(tracking_uri=uri, experiment="exp", sweep="s1")
    cb.connect()  # as the sweep's command does, before ray.init
    cb.connect()  # idempotent: one connection
    cb.flush()
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("exp")
    assert exp is not None and client.search_runs([exp.experiment_id]) == []
    cb.setup()  # Tune's hook opens the parent run on that connection
    cb.flush()
    (parent,) = client.search_runs([exp.experiment_id])
    assert parent.info.run_id == cb.parent_run_id and parent.data.tags[SWEEP_TAG] == "s1"


def test_hooks_return_without_waiting_for_the_store(uri, monkeypatch):
    """Tune holds a trial back until the driver's callbacks return: a slow store must not."""
    cb = _callback(uri)
    trial = FakeTrial("t1", {"optim.epochs": 1})
    release = threading.Event()
    store_log_batch = cb._client.log_batch

    def slow_log_batch(*args, **kwargs):
        assert release.wait(10), "a hook waited for the store"
        return store_log_batch(*args, **kwargs)

    monkeypatch.setattr(cb._client, "log_batch", slow_log_batch)
    cb.on_trial_start(0, [], trial)
    cb.on_trial_result(0, [], trial, _result(1, trial))  # returns while the store is blocked
    release.set()
    cb.on_trial_complete(0, [], trial)
    cb.flush()
    (run,) = _children(uri)
    assert run.info.status == "FINISHED"
    assert _history(uri, run.info.run_id, "val/acc") == [(1, 0.1)]


def test_scheduler_stop_failure_and_divergence_close_runs(uri):
    cb = _callback(uri)
    _play(cb, FakeTrial("early", {"optim.epochs": 5}), [1, 2])
    _play(cb, FakeTrial("bad", {"optim.epochs": 5}), [1], end="error")
    diverged = _result(2, diverged=1.0, **{"train/loss": float("nan")})
    _play(cb, FakeTrial("nan", {"optim.epochs": 5}), [1, diverged])
    runs = {r.data.tags[TRIAL_ID_TAG]: r for r in _children(uri)}
    assert runs["early"].info.status == "KILLED"
    assert "scheduler" in runs["early"].data.tags[STOPPED_EARLY_TAG]
    assert runs["bad"].info.status == "FAILED"
    assert runs["nan"].info.status == "FINISHED" and runs["nan"].data.tags[DIVERGED_TAG] == "true"
    assert not _children(uri, "RUNNING")


def test_restored_trial_continues_its_run_without_duplicate_epochs(uri):
    cb = _callback(uri)
    trial = FakeTrial("t1", {"optim.epochs": 4})
    _play(cb, trial, [1, 2, 3], end=None)  # the driver dies here, epoch 3 never checkpointed
    restored = pickle.loads(pickle.dumps(cb))  # what Tuner.restore hands back
    restored.setup()
    assert restored.parent_run_id == cb.parent_run_id
    _play(restored, trial, [3, 4])  # epoch 3 re-run from the epoch-2 checkpoint
    (run,) = _children(uri)
    assert run.info.status == "FINISHED"
    assert [s for s, _ in _history(uri, run.info.run_id, "val/acc")] == [1, 2, 3, 4]


def test_interrupted_sweep_is_killed_and_tagged_until_resumed(uri):
    cb = _callback(uri)
    done, running = FakeTrial("done", {"optim.epochs": 2}), FakeTrial("open", {"optim.epochs": 2})
    _play(cb, done, [1, 2])
    done.status, done.last_result = "TERMINATED", {"done": True}
    _play(cb, running, [1], end=None)
    # Ctrl-C: Tune marks the trials it stops TERMINATED too, but without `done`, and never
    # calls on_trial_complete for them.
    running.status, running.last_result = "TERMINATED", {"done": False}
    cb.on_experiment_end([done, running])
    client = MlflowClient(uri)
    parent = client.get_run(cb.parent_run_id)
    assert parent.info.status == "KILLED" and parent.data.tags[INTERRUPTED_TAG] == "true"
    runs = {r.data.tags[TRIAL_ID_TAG]: r for r in _children(uri)}
    assert runs["done"].info.status == "FINISHED" and INTERRUPTED_TAG not in runs["done"].data.tags
    assert runs["open"].info.status == "KILLED" and runs["open"].data.tags[INTERRUPTED_TAG]

    resumed = pickle.loads(pickle.dumps(cb))  # --resume
    resumed.setup()
    parent = client.get_run(resumed.parent_run_id)
    assert parent.info.status == "RUNNING" and INTERRUPTED_TAG not in parent.data.tags
    _play(resumed, running, [2])
    running.last_result = {"done": True}
    resumed.on_experiment_end([done, running])
    assert client.get_run(resumed.parent_run_id).info.status == "FINISHED"
    runs = {r.data.tags[TRIAL_ID_TAG]: r for r in _children(uri)}
    assert runs["open"].info.status == "FINISHED" and INTERRUPTED_TAG not in runs["open"].data.tags


@pytest.fixture
def quick_retries(monkeypatch):
    """Retries every 50 ms, and a 1 s grace at the experiment's end."""
    monkeypatch.setattr(_patient, "RETRY_FIRST_S", 0.05)
    monkeypatch.setattr(_patient, "RETRY_MAX_S", 0.1)
    monkeypatch.setenv("GHN_SWEEP_TRACKING_GRACE_S", "1")


def _hooks(cb, trial, epochs):
    """A trial's hooks, without waiting for their writes."""
    cb.on_trial_start(0, [], trial)
    for e in epochs:
        cb.on_trial_result(0, [], trial, _result(e, trial))
    cb.on_trial_complete(0, [], trial)


def test_unreachable_server_warns_once_never_raises_and_keeps_the_writes(tmp_path, caplog,
                                                                         quick_retries):
    cb = MlflowTrackingCallback(tracking_uri="http://127.0.0.1:9", experiment="exp", sweep="s",
                                journal_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="sweeps.tracking"):
        cb.setup()
        _hooks(cb, FakeTrial("t1", {}), [1, 2])
        cb.on_experiment_end([])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "unavailable" in w]) == 1
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "writes were not made" in error and str(cb.journal) in error
    ops = [json.loads(line)["op"] for line in cb.journal.read_text().splitlines()]
    assert ops == ["_start", "_result", "_result", "_completed", "_end_sweep"]


def _failing(cb, monkeypatch, times):
    """The store behind ``cb`` refuses connections for its next ``times`` log_batch calls."""
    real, calls = cb._client._wrapped.log_batch, []

    def log_batch(*args, **kwargs):
        calls.append(1)
        if times is None or len(calls) <= times:
            raise ConnectionError("tracking server went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(cb._client._wrapped, "log_batch", log_batch)


def test_store_away_mid_sweep_is_waited_out(uri, caplog, monkeypatch, quick_retries):
    cb = _callback(uri)
    trial = FakeTrial("t1", {})
    cb.on_trial_start(0, [], trial)
    cb.flush()
    _failing(cb, monkeypatch, times=6)
    with caplog.at_level(logging.WARNING, logger="sweeps.tracking"):
        for e in (1, 2, 3):
            cb.on_trial_result(0, [], trial, _result(e, trial))
        cb.on_trial_complete(0, [], trial)
        cb.flush()
    assert cb.behind() is None
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "unavailable" in m]) == 1
    assert len([m for m in messages if "is back after" in m]) == 1
    (run,) = _children(uri)  # closed as without the outage: 3 of its planned epochs
    assert run.info.status == "KILLED" and STOPPED_EARLY_TAG in run.data.tags
    assert [s for s, _ in _history(uri, run.info.run_id, "val/acc")] == [1, 2, 3]


def test_writes_kept_on_disk_are_made_at_the_next_start(uri, tmp_path, monkeypatch,
                                                        quick_retries):
    cb = MlflowTrackingCallback(tracking_uri=uri, experiment="exp", sweep="s1",
                                journal_dir=str(tmp_path / "sweep"))
    cb.setup()
    trial = FakeTrial("t1", {})
    cb.on_trial_start(0, [], trial)
    cb.on_trial_result(0, [], trial, _result(1, trial))
    cb.flush()
    _failing(cb, monkeypatch, times=None)
    for e in (2, 3):
        cb.on_trial_result(0, [], trial, _result(e, trial))
    trial.last_result = {"done": True}
    cb.on_trial_complete(0, [], trial)
    cb.on_experiment_end([trial])
    assert cb.journal.exists()
    resumed = pickle.loads(pickle.dumps(cb))  # as Tune restores it with --resume
    resumed.setup()
    resumed.on_experiment_end([trial])
    assert not resumed.journal.exists()
    (run,) = _children(uri)  # closed as without the outage: 3 of its planned epochs
    assert run.info.status == "KILLED" and STOPPED_EARLY_TAG in run.data.tags
    assert [s for s, _ in _history(uri, run.info.run_id, "val/acc")] == [1, 2, 3]
    parent = MlflowClient(uri).get_run(resumed.parent_run_id)
    assert parent.info.status == "FINISHED" and INTERRUPTED_TAG not in parent.data.tags


def test_trial_failing_before_its_first_report_logs_tune_config(uri):
    cb = _callback(uri)
    _play(cb, FakeTrial("t1", {"optim.lr": 0.5, "noise": True}), [], end="error")
    (run,) = _children(uri)
    assert run.info.status == "FAILED" and run.data.params["noise"] == "True"


def test_retried_trial_keeps_one_run(uri):
    cb = _callback(uri)
    trial = FakeTrial("t1", {"optim.epochs": 2})
    _play(cb, trial, [1], end=None)
    cb.on_trial_recover(0, [], trial)
    _play(cb, trial, [1, 2])  # restarted from scratch: epoch 1 again, same params
    (run,) = _children(uri)
    assert run.info.status == "FINISHED" and run.data.tags["ghn_sweep.retried"] == "true"
    assert [s for s, _ in _history(uri, run.info.run_id, "val/acc")] == [1, 2]


def test_a_resumed_sweeps_end_settles_what_a_killed_driver_left_open(uri, caplog):
    """kill -9 of the driver can leave a started trial out of Tune's saved state (the resumed
    sweep samples a new trial instead): its run is deleted, with or without epochs, open or run
    to its end and closed by the killed driver. And a trial
    Tune recorded as ended whose run the driver never closed (its last MLflow calls were still
    queued) is closed as it ended, its last result logged."""
    first = _callback(uri)
    lost, lost_later = FakeTrial("lost1", {"arch": "resnet18"}), FakeTrial("lost2", {})
    first.on_trial_start(0, [], lost)
    _play(first, lost_later, [1], end=None)
    _play(first, FakeTrial("lost3", {"optim.epochs": 1}), [1])  # started and ended unsaved
    assert {r.info.status for r in _children(uri)} == {"RUNNING", "FINISHED"}
    ended = FakeTrial("ended", {"optim.epochs": 2})
    _play(first, ended, [1], end=None)  # then the driver dies: no end hook runs
    resumed = pickle.loads(pickle.dumps(first))  # the callback Tuner.restore hands back
    resumed.setup()
    kept = FakeTrial("kept1", {"arch": "resnet18", "optim.epochs": 1})
    _play(resumed, kept, epochs=[1])
    kept.status, kept.last_result = "TERMINATED", _result(1, done=True)
    ended.status, ended.last_result = "TERMINATED", _result(2, done=True)  # Tune's saved state
    with caplog.at_level(logging.INFO, logger="sweeps.tracking"):
        resumed.on_experiment_end([kept, ended])
    runs = {r.data.tags[TRIAL_ID_TAG]: r for r in _children(uri)}
    assert set(runs) == {"kept1", "ended"}  # the lost trials' runs are deleted
    assert runs["kept1"].info.status == "FINISHED" and runs["ended"].info.status == "FINISHED"
    assert [s for s, _ in _history(uri, runs["ended"].info.run_id, "val/acc")] == [1, 2]
    deleted = {r.levelname: r.getMessage() for r in caplog.records if "deleting" in r.msg}
    assert set(deleted) == {"INFO", "WARNING"}  # a run with epochs loses data: a warning
    assert "the 1 epoch(s) it logged are not part of the sweep" in deleted["WARNING"]
    assert MlflowClient(uri).get_run(resumed.parent_run_id).info.status == "FINISHED"


def test_a_resumed_trial_stopped_sooner_keeps_only_the_epochs_it_ran(uri, caplog):
    """The killed driver logged epochs 1 and 2; the resumed sweep re-ran the trial from Tune's
    older saved state and ASHA stopped it at epoch 1: its run holds epoch 1 only, closed as
    stopped early, with the params and tags it had, and no other run of the trial is left."""
    trial = FakeTrial("t1", {"arch": "resnet18", "init": "ghn", "optim.epochs": 3})
    first = _callback(uri)
    _play(first, trial, [1, 2], end=None)  # then kill -9
    (killed,) = _children(uri)
    resumed = pickle.loads(pickle.dumps(first))
    resumed.setup()
    resumed.on_trial_start(0, [], trial)
    resumed.on_trial_result(0, [], trial, _result(1, trial))
    trial.status, trial.last_result = "TERMINATED", _result(1, done=True)  # ASHA's stop
    with caplog.at_level(logging.WARNING, logger="sweeps.tracking"):
        resumed.on_trial_complete(0, [], trial)
        resumed.on_experiment_end([trial])
    (run,) = _children(uri)
    assert run.info.run_id != killed.info.run_id
    assert MlflowClient(uri).get_run(killed.info.run_id).info.lifecycle_stage == "deleted"
    assert run.info.status == "KILLED" and STOPPED_EARLY_TAG in run.data.tags
    assert [s for s, _ in _history(uri, run.info.run_id, "val/acc")] == [1]
    assert run.data.metrics["init/mean_abs_cos"] == 0.2
    assert run.data.params == killed.data.params and run.data.params["optim.epochs"] == "3"
    assert run.data.tags[TRIAL_ID_TAG] == "t1" and run.data.tags["arch"] == "resnet18"
    assert any("replaced" in r.getMessage() for r in caplog.records)


def test_best_tags_are_not_overwritten_by_an_older_state_after_a_resume(uri):
    """The killed driver logged a best after Tune's last saved state; the resumed sweep's view,
    restored from that state, knows fewer ended trials until it catches up."""
    cb = _callback(uri)
    cb.log_sweep_progress({"trials_finished": 3}, step=3, best={"trial": "t3", "val/acc": 0.7})
    cb.flush()
    resumed = pickle.loads(pickle.dumps(cb))
    resumed.setup()
    resumed.log_sweep_progress({"trials_finished": 2}, step=2, best={"trial": "t1", "val/acc": 0.5})
    resumed.flush()
    parent = MlflowClient(uri).get_run(cb.parent_run_id)
    assert parent.data.tags["best.trial"] == "t3" and parent.data.metrics["trials_finished"] == 3
    resumed.log_sweep_progress({"trials_finished": 3}, step=3, best={"trial": "t2", "val/acc": 0.6})
    resumed.flush()
    parent = MlflowClient(uri).get_run(cb.parent_run_id)
    assert parent.data.tags["best.trial"] == "t2" and parent.data.tags["best.step"] == "3"


def test_a_sweep_with_another_sweeps_name_never_reopens_its_parent(uri):
    """After ray_results/ was deleted (or with another --storage) a fresh sweep of the same name
    is another sweep: it sees the clash, and its runs never mix with the first one's."""
    first = _callback(uri)
    _play(first, FakeTrial("a1", {"optim.epochs": 1}), [1])
    first.on_experiment_end([])
    second = MlflowTrackingCallback(tracking_uri=uri, experiment="exp", sweep="s1")
    clash = second.other_parent_run()  # what the sweep checks before Ray starts (exit 2)
    assert clash is not None and clash.info.run_id == first.parent_run_id
    assert first.other_parent_run() is None  # its own parent is no clash
    second.setup()
    _play(second, FakeTrial("b1", {"optim.epochs": 1}), [1])
    assert second.parent_run_id != first.parent_run_id
    client = MlflowClient(uri)
    assert client.get_run(second.parent_run_id).data.tags[SWEEP_ID_TAG] == second.sweep_id
    by_parent = {r.data.tags[TRIAL_ID_TAG]: r.data.tags["mlflow.parentRunId"]
                 for r in _children(uri)}
    assert by_parent == {"a1": first.parent_run_id, "b1": second.parent_run_id}


def test_a_resumed_sweep_reopens_its_own_parent_not_the_newest_of_its_name(uri):
    first = _callback(uri)
    first.on_experiment_end([])
    newer = _callback(uri)  # a later sweep with the same name (its id differs)
    newer.on_experiment_end([])
    restored = pickle.loads(pickle.dumps(first))  # the id travels with Tune's saved state
    restored.setup()
    assert restored.parent_run_id == first.parent_run_id != newer.parent_run_id
    exp_id = MlflowClient(uri).get_experiment_by_name("exp").experiment_id
    newest = find_parent_run(MlflowClient(uri), exp_id, "s1")
    assert newest.info.run_id == newer.parent_run_id  # without an id: the newest by name
    found = find_parent_run(MlflowClient(uri), exp_id, "s1", first.sweep_id)
    assert found.info.run_id == first.parent_run_id


def test_parent_run_carries_the_drivers_provenance(uri):
    import torch

    cb = _callback(uri)
    tags = MlflowClient(uri).get_run(cb.parent_run_id).data.tags
    assert tags["version.torch"] == torch.__version__
    for key in ("version.torchvision", "version.ray", "version.optuna", "version.mlflow",
                "code.commit", "code.sources", "code.version", "device.name", "device.cuda"):
        assert tags.get(key), key


def test_writes_are_on_disk_before_the_grace_period_ends(uri, tmp_path, monkeypatch,
                                                         quick_retries):
    monkeypatch.setenv("GHN_SWEEP_TRACKING_GRACE_S", "20")  # a SIGKILL may come before it ends
    cb = MlflowTrackingCallback(tracking_uri=uri, experiment="exp", sweep="s1",
                                journal_dir=str(tmp_path / "sweep"))
    cb.setup()
    trial = FakeTrial("t1", {})
    cb.on_trial_start(0, [], trial)
    cb.flush()
    _failing(cb, monkeypatch, times=None)
    cb.on_trial_result(0, [], trial, _result(1, trial))
    while cb.behind() is None:
        time.sleep(0.01)
    ending = threading.Thread(target=cb.on_experiment_end, args=([trial],), daemon=True)
    ending.start()
    deadline = time.time() + 5
    while not cb.journal.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert ending.is_alive()  # still within its grace period
    ops = [json.loads(line)["op"] for line in cb.journal.read_text().splitlines()]
    assert ops == ["_result", "_end_sweep"]


def test_a_new_sweeps_trials_get_runs_without_searching_the_store(uri, monkeypatch):
    """A parent run this driver opened has only the children it made: starting a trial makes
    no search of the store, whose cost would be paid once per trial."""
    cb = _callback(uri)
    searches = []
    real = MlflowClient.search_runs
    monkeypatch.setattr(MlflowClient, "search_runs",
                        lambda self, *a, **kw: searches.append(kw.get("filter_string", ""))
                        or real(self, *a, **kw))
    for i in range(3):
        _play(cb, FakeTrial(f"t{i}", {"optim.epochs": 1}), [1])
    assert searches == []
    cb.on_trial_recover(0, [], FakeTrial("t0", {}))  # a run it closed: looked up again
    cb.flush()
    assert len(searches) == 1 and TRIAL_ID_TAG in searches[0]
    assert len(_children(uri)) == 3
