"""The progress view: counts by state, best so far, and their mirror on the parent run."""

import logging

from mlflow.tracking import MlflowClient

from sweeps._outputs import parent_run_url
from sweeps._progress import ProgressCallback
from sweeps.tracking import MlflowTrackingCallback


class FakeTrial:
    """The attributes of ray.tune.experiment.Trial the callbacks read."""

    def __init__(self, trial_id, **config):
        self.trial_id, self.config, self.status = trial_id, config, "RUNNING"
        self.last_result, self.error_file = {}, None

    def __str__(self):
        return f"sweep_trial_{self.trial_id}"


def _report(cb, trials, trial, epoch, acc):
    trial.last_result = {"epoch": float(epoch), "val/acc": acc}
    cb.on_trial_result(0, trials, trial, trial.last_result)


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sweeps._progress"]


def test_a_starting_trial_shows_as_running(caplog):
    caplog.set_level(logging.INFO, logger="sweeps._progress")
    cb = ProgressCallback("val/acc", max_epochs=3, every_s=0)
    a, b = FakeTrial("a"), FakeTrial("b")
    cb.on_trial_start(0, [a, b], a)
    b.status = "PENDING"  # Tune calls on_trial_start before it marks the trial RUNNING
    cb.on_trial_start(0, [a, b], b)
    assert _lines(caplog)[-1].endswith(
        "2 running · 0 finished · 0 stopped early · 0 diverged · 0 failed")


def test_counts_best_and_parent_run(tmp_path, caplog, new_mlflow_store):
    caplog.set_level(logging.INFO, logger="sweeps._progress")
    uri = new_mlflow_store(tmp_path / "mlflow.db")
    tracking = MlflowTrackingCallback(tracking_uri=uri, experiment="exp", sweep="s")
    tracking.setup()
    cb = ProgressCallback("val/acc", max_epochs=3, tracking=tracking, every_s=0)
    a = FakeTrial("a", arch="resnet18", init="ghn", **{"optim.lr": 0.01, "postproc.beta": 3e-5})
    b = FakeTrial("b", arch="resnet18", init="random", **{"optim.lr": 0.1})
    c = FakeTrial("c", arch="resnet18", init="random", **{"optim.lr": 0.5})
    trials = [a, b, c]
    _report(cb, trials, a, 1, 0.30)
    _report(cb, trials, b, 1, 0.40)
    _report(cb, trials, a, 2, 0.35)  # not better than b: best stays b
    cb.on_trial_complete(0, trials, b)  # ended after epoch 1 of 3: stopped early
    _report(cb, trials, a, 3, 0.50)
    cb.on_trial_complete(0, trials, a)
    cb.on_trial_error(0, trials, c)
    for t in trials:
        t.status = "TERMINATED"

    assert cb.counts() == {"running": 0, "finished": 1, "stopped early": 1,
                                 "diverged": 0, "failed": 1}
    last = _lines(caplog)[-1]
    assert "0 running · 1 finished · 1 stopped early · 0 diverged · 1 failed" in last
    assert "best val/acc 0.500 (resnet18 ghn lr=0.01 beta=3e-05)" in last

    parent = MlflowClient(uri).get_run(tracking.parent_run_id)
    tags, metrics = parent.data.tags, parent.data.metrics
    assert tags["best.trial"] == "sweep_trial_a" and tags["best.val/acc"] == "0.5"
    assert (tags["best.init"], tags["best.optim.lr"]) == ("ghn", "0.01")
    assert metrics["best_val/acc"] == 0.5
    assert (metrics["trials_finished"], metrics["trials_stopped_early"],
            metrics["trials_failed"]) == (1, 1, 1)
    history = MlflowClient(uri).get_metric_history(tracking.parent_run_id, "best_val/acc")
    assert {m.value for m in history} == {0.3, 0.4, 0.5}  # each improvement, as it came



def test_best_is_contract_best_a_complete_trial_beats_a_higher_stopped_or_diverged_one(caplog):
    caplog.set_level(logging.INFO, logger="sweeps._progress")
    cb = ProgressCallback("val/acc", max_epochs=2, every_s=0)
    high, done, wild = (FakeTrial(t, arch="resnet18", init="ghn", **{"optim.lr": lr})
                        for t, lr in (("a", 0.01), ("b", 0.02), ("c", 0.5)))
    trials = [high, done, wild]
    _report(cb, trials, high, 1, 0.60)
    cb.on_trial_complete(0, trials, high)  # stopped by ASHA after epoch 1 of 2
    _report(cb, trials, wild, 1, 0.90)
    wild.last_result = {"epoch": 2.0, "val/acc": 0.1, "diverged": 1.0}
    cb.on_trial_result(0, trials, wild, wild.last_result)
    cb.on_trial_complete(0, trials, wild)
    assert cb.best_trial()[0] == "a"  # diverged c never counts, whatever it reached
    _report(cb, trials, done, 1, 0.40)
    _report(cb, trials, done, 2, 0.50)
    assert cb.best_trial()[0] == "a"  # b still running: not complete, and lower
    cb.on_trial_complete(0, trials, done)
    assert cb.best_trial()[0] == "b"  # ran to its last epoch: beats a's higher early stop
    assert _lines(caplog)[-1].endswith(
        "| best val/acc 0.500 (resnet18 ghn lr=0.02)")
    assert cb.counts()["diverged"] == 1


def test_the_parent_runs_page_is_on_the_tracking_server_or_on_mlflow_uis_default_address():
    assert parent_run_url("http://head:5000/", "3", "abc") == "http://head:5000/#/experiments/3/runs/abc"
    assert parent_run_url("sqlite:///mlflow.db", "1", "r") == \
        "http://127.0.0.1:5000/#/experiments/1/runs/r"


def test_a_retried_trial_says_from_which_checkpoint(caplog):
    """A lost node (or a killed process): Tune retries the trial from the last checkpoint it
    holds, and the view says which, after the traceback Tune logs. A checkpoint reported but not
    yet taken by Tune (its node lost before Tune asked for it) is not one."""
    caplog.set_level(logging.INFO, logger="sweeps._progress")
    cb = ProgressCallback("val/acc", max_epochs=4)
    a, b = FakeTrial("a", arch="resnet18", init="ghn"), FakeTrial("b", arch="resnet18")
    for t in (a, b):
        t.num_failures, t.max_failures = 1, 2
    for epoch, saved in ((1, None), (2, "checkpoint_000000"), (3, None)):
        a.last_result = {"epoch": float(epoch), "val/acc": 0.1, "checkpoint_dir_name": saved}
        cb.on_trial_result(0, [a, b], a, a.last_result)
        if saved:  # Tune takes it before it asks for the next report
            cb.on_checkpoint(0, [a, b], a, checkpoint=object())
    b.last_result = {"epoch": 1.0, "val/acc": 0.1, "checkpoint_dir_name": "checkpoint_000000"}
    cb.on_trial_result(0, [a, b], b, b.last_result)  # its node lost before Tune took it
    a.status = b.status = "PENDING"
    cb.on_trial_recover(0, [a, b], a)
    cb.on_trial_recover(0, [a, b], b)
    retries = [line for line in _lines(caplog) if "stopped unexpectedly" in line]
    assert len(retries) == 2
    assert ("trial sweep_trial_a (resnet18 ghn) stopped unexpectedly; retry 1 of 2 "
            "(--max-failures), from its checkpoint at epoch 2") in retries[0]
    assert "sweep_trial_b (resnet18) stopped unexpectedly; retry 1 of 2 (--max-failures), " \
           "from its start (it had no checkpoint yet)" in retries[1]
    assert cb.counts()["running"] == 0  # waiting for a node, not running


def test_lines_come_at_most_every_few_seconds_and_the_last_at_the_end(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="sweeps._progress")
    now = [0.0]
    monkeypatch.setattr("sweeps._progress.time.monotonic", lambda: now[0])
    cb = ProgressCallback("val/acc", max_epochs=1, every_s=10)
    trials = [FakeTrial(f"t{i:04d}", arch="resnet18", init="random") for i in range(200)]
    for i, trial in enumerate(trials):  # 200 trials, one a second, each lower than the first
        now[0] = float(i)
        cb.on_trial_start(0, trials, trial)
        _report(cb, trials, trial, 1, 0.5 - i / 1000)
        cb.on_trial_complete(0, trials, trial)
        cb.on_step(0, trials)
    assert len(_lines(caplog)) <= 200 // 10 + 2  # not 3 a trial: one per 10 s, and the best
    cb.on_experiment_end(trials)
    assert _lines(caplog)[-1].endswith("0 running · 200 finished · 0 stopped early · 0 diverged "
                                       "· 0 failed | best val/acc 0.500 (resnet18 random)")


def test_a_resumed_sweep_with_nothing_left_to_run_still_shows_its_counts(caplog):
    """Its killed driver had seen every trial end: the restored view prints one line at the end,
    counting the whole sweep."""
    first = ProgressCallback("val/acc", max_epochs=1, every_s=0)
    trials = [FakeTrial(f"t{i}", arch="resnet18", init="random") for i in range(3)]
    for i, trial in enumerate(trials):
        first.on_trial_start(0, trials, trial)
        _report(first, trials, trial, 1, 0.3 + i / 10)
        first.on_trial_complete(0, trials, trial)
    resumed = ProgressCallback("val/acc", max_epochs=1, every_s=0)
    resumed.set_state(first.get_state())  # as Tune restores it
    caplog.set_level(logging.INFO, logger="sweeps._progress")
    resumed.on_experiment_end(trials)
    (line,) = _lines(caplog)
    assert line.endswith("0 running · 3 finished · 0 stopped early · 0 diverged · 0 failed | "
                         "best val/acc 0.500 (resnet18 random)")


class CountingTrials(dict):
    """A ``trials`` dict that counts how often it is read."""

    reads = 0

    def items(self):
        CountingTrials.reads += 1
        return super().items()

    def values(self):
        CountingTrials.reads += 1
        return super().values()


def test_a_hook_does_not_look_at_every_trial():
    """The counts and the best are kept as trials change: a hook's cost does not grow with the
    sweep (only the best trial's divergence looks at all of them again)."""
    cb = ProgressCallback("val/acc", max_epochs=2, every_s=0)
    cb.trials = CountingTrials()
    trials = [FakeTrial(f"t{i:04d}") for i in range(50)]
    for trial in trials:
        cb.on_trial_start(0, trials, trial)
        _report(cb, trials, trial, 1, 0.4)
        _report(cb, trials, trial, 2, 0.45)
        cb.on_trial_complete(0, trials, trial)
    assert CountingTrials.reads == 0
    assert cb.counts()["finished"] == 50 and cb.best_trial()[0] == "t0000"
