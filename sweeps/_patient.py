"""MLflow writes that wait out a tracking-server outage instead of being dropped.

The sweep's tracking runs its writes in order on one thread (`Writer`), so Tune's callback hooks
return at once however slow or absent the server is. Every MLflow call of a write goes through
`PatientClient`: a call that fails transiently (connection refused, a timeout, a 5xx, a locked
SQLite store) is retried with backoff until it succeeds, holding the writes behind it in the queue;
an outage of any length while the sweep runs costs no record. A call MLflow refuses for good (an
invalid value) fails its write only. When the sweep ends with the server still away, `Writer.drain`
gives up after a grace period and hands back the writes not made, which the tracking keeps on disk
and replays on the sweep's next start (`save_journal`, `load_journal`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

log = logging.getLogger("sweeps.tracking")

RETRY_FIRST_S = 1.0  # the first retry's wait; it doubles up to RETRY_MAX_S
RETRY_MAX_S = 30.0
# The durations of the latest writes kept for `Writer.timings` (8 bytes each): a 1,000-trial sweep
# makes about 8,000 writes.
TIMINGS_KEPT = 100_000
# MLflow's own permanent refusals: retrying them cannot help.
PERMANENT_CODES = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "BAD_REQUEST",
                   "RESOURCE_ALREADY_EXISTS", "INVALID_STATE", "PERMISSION_DENIED",
                   "UNAUTHENTICATED", "FEATURE_DISABLED", "NOT_IMPLEMENTED"}


class GaveUp(Exception):
    """The sweep ended while the tracking store was still away: the write is kept for later."""


def transient(error: BaseException) -> bool:
    """Whether ``error`` may pass if the call is made again later (the store is away or busy)."""
    if isinstance(error, MlflowException):
        return error.error_code not in PERMANENT_CODES
    return isinstance(error, (OSError, TimeoutError))  # requests' errors are OSErrors


@dataclasses.dataclass
class TrialRecord:
    """What the tracking needs of a Tune trial, copied when the hook fires (Tune's trial object
    changes meanwhile) and JSON-able, so a write can wait on disk for the next start."""

    trial_id: str
    name: str
    config: dict[str, Any]
    status: str
    last_result: dict[str, Any]
    error_file: str | None = None

    @classmethod
    def of(cls, trial: Any) -> TrialRecord:
        error_file = getattr(trial, "error_file", None)
        return cls(trial.trial_id, str(trial), dict(trial.config), str(trial.status),
                   dict(trial.last_result or {}), str(error_file) if error_file else None)

    def __str__(self) -> str:
        return self.name


@dataclasses.dataclass
class Job:
    """A queued write: ``action`` runs it; ``record`` describes it for the journal (None: it is
    not kept, e.g. connecting, which the next start does anyway)."""

    action: Callable[[], Any]
    record: dict[str, Any] | None
    future: Future = dataclasses.field(default_factory=Future)


class Writer:
    """One thread that runs queued writes in order; `call` retries an MLflow call in them."""

    def __init__(self, target: str) -> None:
        self.target = target  # the tracking URI, for the log lines
        self._queue: collections.deque[Job] = collections.deque()
        self._ready = threading.Condition()
        self._give_up = threading.Event()
        self._current: Job | None = None
        self._abandoned: list[Job] = []
        self.failing_since: float | None = None  # the current outage's start
        self._durations: collections.deque[float] = collections.deque(maxlen=TIMINGS_KEPT)
        self._most_queued = 0
        threading.Thread(target=self._loop, name="mlflow-writer", daemon=True).start()

    def submit(self, action: Callable[[], Any], record: dict[str, Any] | None = None) -> Future:
        job = Job(action, record)
        with self._ready:
            if self._give_up.is_set():
                self._abandoned.append(job)
                job.future.set_exception(GaveUp())
            else:
                self._queue.append(job)
                self._most_queued = max(self._most_queued, len(self._queue))
                self._ready.notify()
        return job.future

    def behind(self) -> tuple[int, float] | None:
        """(writes waiting, seconds the store has been away) during an outage, else None."""
        since = self.failing_since
        if since is None:
            return None
        return len(self._queue) + (self._current is not None), time.time() - since

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, retried with backoff while it fails transiently; raises
        `GaveUp` once `drain` has given up, and a permanent error as it is."""
        delay = RETRY_FIRST_S
        while True:
            try:
                result = fn(*args, **kwargs)
            except Exception as e:
                if not transient(e):
                    raise
                self._note_failure(e)
                if self._give_up.wait(delay):
                    raise GaveUp(str(e)) from e
                delay = min(delay * 2, RETRY_MAX_S)
            else:
                self._note_recovered()
                return result

    def drain(self, grace_s: float) -> list[dict[str, Any]]:
        """Wait for the queue to empty; after ``grace_s`` of waiting give up, and return the
        records of the writes not made (the one in progress included)."""
        deadline = time.time() + grace_s
        with self._ready:
            while (self._queue or self._current) and time.time() < deadline:
                self._ready.wait(min(1.0, max(deadline - time.time(), 0.01)))
            if not (self._queue or self._current):
                return []
            self._give_up.set()
            self._ready.notify_all()
            self._ready.wait_for(lambda: self._current is None, timeout=60)
            left = [*self._abandoned, *([self._current] if self._current else []), *self._queue]
            for job in self._queue:  # nobody waits for them in vain
                job.future.set_exception(GaveUp("the sweep ended"))
            self._queue.clear()
        return [job.record for job in left if job.record is not None]

    def timings(self) -> dict[str, float]:
        """The writes of the record made so far (the hooks' writes: not connecting, nor
        questions): how many, their durations' sum, median, 99th percentile and maximum in seconds
        (retries during an outage included), and the longest the queue has been."""
        durations = sorted(self._durations)  # a copy: the writer thread appends meanwhile
        if not durations:
            return {"writes": 0, "most_queued": self._most_queued}

        def at(q: float) -> float:
            return durations[min(len(durations) - 1, int(q * len(durations)))]

        return {"writes": len(durations), "total_s": sum(durations), "p50_s": at(0.5),
                "p99_s": at(0.99), "max_s": durations[-1], "most_queued": self._most_queued}

    def pending_records(self) -> list[dict[str, Any]]:
        """The records of the writes not made yet (the one in progress first), leaving them
        queued."""
        with self._ready:
            jobs = [*([self._current] if self._current else []), *self._queue]
        return [job.record for job in jobs if job.record is not None]

    def _loop(self) -> None:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: self._queue)
                job = self._current = self._queue.popleft()
            start = time.perf_counter()
            try:
                if self._give_up.is_set():
                    raise GaveUp("the sweep ended")
                result = job.action()
                if job.record is not None:  # a write of the sweep's record, not a question
                    self._durations.append(time.perf_counter() - start)
                job.future.set_result(result)
            except GaveUp as e:
                with self._ready:
                    self._abandoned.append(job)
                job.future.set_exception(e)
            except BaseException as e:  # noqa: BLE001 - reported by the caller, or logged
                job.future.set_exception(e)
            finally:
                with self._ready:
                    self._current = None
                    self._ready.notify_all()

    def _note_failure(self, error: Exception) -> None:
        if self.failing_since is None:
            self.failing_since = time.time()
            log.warning("MLflow tracking at %s is unavailable (%s: %s). Training continues; the "
                        "sweep's MLflow writes are queued and retried until it is back.",
                        self.target, type(error).__name__, str(error)[:300])

    def _note_recovered(self) -> None:
        if self.failing_since is not None:
            away = time.time() - self.failing_since
            self.failing_since = None
            log.warning("MLflow tracking at %s is back after %.0f s; %d queued writes follow.",
                        self.target, away, len(self._queue))


class PatientClient:
    """An ``MlflowClient`` whose every call is made through `Writer.call`."""

    def __init__(self, client: Any, writer: Writer) -> None:
        self._wrapped, self._writer = client, writer

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._wrapped, name)
        if not callable(attribute):
            return attribute
        return lambda *args, **kwargs: self._writer.call(attribute, *args, **kwargs)


def encode(value: Any) -> Any:
    """``value`` as JSON-able data; `TrialRecord` s marked, to be rebuilt by `decode`."""
    if isinstance(value, TrialRecord):
        return {"__trial__": dataclasses.asdict(value)}
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if callable(getattr(value, "item", None)):  # a NumPy or torch scalar
        try:
            return encode(value.item())
        except (TypeError, ValueError):
            pass
    return str(value)


def decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "__trial__" in value:
            return TrialRecord(**value["__trial__"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def save_journal(path: Path, records: list[dict[str, Any]]) -> None:
    """The writes not made, as JSON lines, replacing ``path`` whole (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, path)


def load_journal(path: Path) -> list[dict[str, Any]]:
    """The records `save_journal` kept at ``path``; none if there is no file."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
