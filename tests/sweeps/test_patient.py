"""The tracking's write queue: what it retries, in what order, and what it hands back."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from sweeps import _patient
from sweeps._patient import GaveUp, Writer, transient


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(_patient, "RETRY_FIRST_S", 0.01)
    monkeypatch.setattr(_patient, "RETRY_MAX_S", 0.02)


def test_outages_are_transient_refusals_are_not():
    assert transient(ConnectionError("refused")) and transient(TimeoutError())
    assert transient(MlflowException("API request failed: Max retries exceeded"))
    assert not transient(MlflowException("bad value", error_code=INVALID_PARAMETER_VALUE))
    assert not transient(KeyError("a bug"))


def test_writes_wait_out_failures_in_order():
    writer, done, failures = Writer("test://"), [], [3]

    def flaky(i):
        if i == 1 and failures[0]:
            failures[0] -= 1
            raise ConnectionError("away")
        done.append(i)

    for i in range(4):
        writer.submit(lambda i=i: writer.call(flaky, i), {"i": i})
    assert writer.drain(grace_s=10) == []
    assert done == [0, 1, 2, 3] and writer.behind() is None


def test_drain_hands_back_what_was_not_written():
    writer = Writer("test://")

    def away():
        raise ConnectionError("away")

    futures = [writer.submit(lambda: writer.call(away), {"i": i}) for i in range(3)]
    assert writer.drain(grace_s=0.2) == [{"i": 0}, {"i": 1}, {"i": 2}]
    for future in futures:
        with pytest.raises(GaveUp):
            future.result(timeout=5)


def test_journal_records_round_trip():
    import numpy as np

    from sweeps._patient import TrialRecord, decode, encode

    trial = TrialRecord("t1", "sweep_trial_t1", {"arch": "resnet18"}, "RUNNING", {"epoch": 2.0})
    record = encode([trial, {"epoch": np.int64(3), "acc": np.float32(0.5), "shape": (1, 2)}])
    assert decode(record) == [trial, {"epoch": 3, "acc": 0.5, "shape": [1, 2]}]
