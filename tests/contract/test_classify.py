"""How a trial ended: one decision, whichever side asks and from whatever it knows."""

from __future__ import annotations

import math

import pytest

from contract import (
    DIVERGED_TAG,
    STOPPED_EARLY_TAG,
    TrialStatus,
    best_of,
    classify,
    rank_key,
    run_status,
    status_of_run,
)


@pytest.mark.parametrize("known, status", [
    ({"epochs_run": 3, "epochs_planned": 3, "ended": True}, TrialStatus.FINISHED),
    ({"epochs_run": 4, "epochs_planned": 3}, TrialStatus.FINISHED),  # a retry re-ran an epoch
    ({"epochs_run": 1, "epochs_planned": 3, "ended": True}, TrialStatus.STOPPED_EARLY),
    ({"epochs_run": 1, "epochs_planned": None, "ended": True}, TrialStatus.STOPPED_EARLY),
    ({"epochs_run": 1, "epochs_planned": 3, "diverged": True, "ended": True},
     TrialStatus.DIVERGED),
    ({"epochs_run": 3, "epochs_planned": 3, "diverged": True}, TrialStatus.DIVERGED),
    ({"errored": True}, TrialStatus.FAILED),
    ({"errored": True, "diverged": True, "epochs_run": 3, "epochs_planned": 3},
     TrialStatus.FAILED),
    ({"epochs_run": 1, "epochs_planned": 3}, TrialStatus.RUNNING),
    ({"epochs_run": 1, "epochs_planned": 3, "live": False}, TrialStatus.INTERRUPTED),
    ({"epochs_run": 0, "epochs_planned": None, "live": False}, TrialStatus.INTERRUPTED),
])
def test_classify(known, status):
    assert classify(**known) is status


@pytest.mark.parametrize("status", list(TrialStatus))
def test_what_the_tracking_writes_to_mlflow_reads_back_as_the_same_status(status):
    tags = {DIVERGED_TAG: "true"} if status is TrialStatus.DIVERGED else {}
    if status is TrialStatus.STOPPED_EARLY:
        tags[STOPPED_EARLY_TAG] = "scheduler at epoch 1/3"
    assert status_of_run(run_status(status), tags) is status


def test_a_diverged_metric_on_a_run_without_the_tag_reads_as_diverged():
    assert status_of_run("FINISHED", {}, diverged=True) is TrialStatus.DIVERGED
    assert status_of_run("RUNNING", {}, diverged=True) is TrialStatus.DIVERGED


def test_statuses_are_their_values_in_tables_and_words():
    assert TrialStatus.STOPPED_EARLY == "stopped_early" and f"{TrialStatus.FAILED}" == "failed"
    assert {"finished": 1}[TrialStatus.FINISHED] == 1
    assert TrialStatus.STOPPED_EARLY.label == "stopped early"


def test_best_a_finished_trial_beats_a_higher_unfinished_one_and_ties_go_to_the_first():
    trials = [("t3", TrialStatus.FINISHED, 0.5), ("t2", TrialStatus.FINISHED, 0.5),
              ("t1", TrialStatus.STOPPED_EARLY, 0.9), ("t0", TrialStatus.DIVERGED, 0.99),
              ("t4", TrialStatus.FAILED, 0.99), ("t5", TrialStatus.FINISHED, math.nan)]
    assert best_of(trials, key=lambda t: rank_key(t[1], t[2], t[0]))[0] == "t2"
    assert best_of(trials[2:], key=lambda t: rank_key(t[1], t[2], t[0]))[0] == "t1"
    assert best_of(trials[3:], key=lambda t: rank_key(t[1], t[2], t[0])) is None
