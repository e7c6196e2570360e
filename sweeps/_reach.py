"""Whether a sweep can write its storage and talk to its tracking server, asked before Ray starts.

Without these checks a typo in ``--storage`` or ``--tracking-uri`` shows up only once Ray is up
(a storage Ray cannot write fails the experiment on its first save; a tracking URI that answers
but is not MLflow fails inside MLflow's client, after its retries). Each check answers within a
few seconds, and says what to change; it writes nothing but a probe file it deletes at once.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.fs

STORAGE_TIMEOUT_S = 20.0  # an object store that does not answer in this long is not usable
TRACKING_TIMEOUT_S = 5.0
_PROBE = ".ghn-sweep-write-check-"


def resolve_storage(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """The filesystem and path Ray Tune resolves ``uri`` to (pyarrow's ``from_uri``)."""
    return pyarrow.fs.FileSystem.from_uri(uri)


def storage_problem(uri: str, timeout_s: float = STORAGE_TIMEOUT_S) -> str | None:
    """Why the sweep cannot write under ``uri`` (a local path or ``s3://bucket/path``), or None.

    A probe file is written and deleted in the directory, or in its nearest existing parent
    (nothing is created: Ray creates the rest); on an object store the bucket must exist, and
    all of it must answer within ``timeout_s`` (it runs on a daemon thread, so a hung endpoint
    cannot hang the driver).
    """
    error = _within(timeout_s, lambda: _write_probe(uri))
    if error is None:
        return None
    remote = "://" in uri and not uri.startswith("file://")
    if isinstance(error, TimeoutError):
        return (f"--storage {uri}: no answer within {timeout_s:.0f} s; check the endpoint, the "
                "network and the credentials (AWS_* variables), or use a local --storage")
    if remote:
        return (f"--storage {uri} is not usable ({type(error).__name__}: {error}); create the "
                "bucket, or check its name and the credentials that may write it")
    return (f"--storage {uri} is not a directory this user can write ({type(error).__name__}: "
            f"{error}); pick a writable directory, or fix its permissions")


def _write_probe(uri: str) -> None:
    fs, path = resolve_storage(uri)
    path = path.rstrip("/")
    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        path = str(_nearest_existing(Path(path)))  # Ray creates the rest; a refusal leaves none
    else:
        bucket = path.split("/", 1)[0]
        if fs.get_file_info(bucket).type == pyarrow.fs.FileType.NotFound:
            raise FileNotFoundError(f"bucket {bucket!r} does not exist")
    probe = f"{path}/{_PROBE}{uuid.uuid4().hex}"
    with fs.open_output_stream(probe) as out:
        out.write(b"ok")
    fs.delete_file(probe)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _within(timeout_s: float, action: Callable[[], None]) -> BaseException | None:
    """Run ``action`` on a daemon thread; its exception, `TimeoutError` if it outlasts
    ``timeout_s``, or None."""
    outcome: dict[str, BaseException | None] = {}

    def run() -> None:
        try:
            action()
            outcome["error"] = None
        except BaseException as e:  # noqa: BLE001 - reported to the caller, which explains it
            outcome["error"] = e

    thread = threading.Thread(target=run, name="preflight-reach", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return outcome["error"] if "error" in outcome else TimeoutError()


def tracking_problem(uri: str, timeout_s: float = TRACKING_TIMEOUT_S) -> str | None:
    """Why ``--tracking-uri`` (an ``http(s)://`` address) is not an MLflow tracking server this
    driver can use, or None. Other URIs (``sqlite:///``, ``databricks``) are not asked."""
    if not uri.startswith(("http://", "https://")):
        return None
    import requests

    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search"
    try:
        answer = requests.get(url, params={"max_results": 1}, timeout=timeout_s,
                              **_credentials())
    except requests.RequestException as e:
        return (f"--tracking-uri {uri}: no MLflow server answers there ({type(e).__name__}); "
                "start it (mlflow server ...), or check the host, the port and the network")
    if answer.status_code in (401, 403):
        return (f"--tracking-uri {uri}: the server refused this driver ({answer.status_code}); "
                "set MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and _PASSWORD")
    if answer.status_code != 200 or not isinstance(_json(answer), dict):
        kind = answer.headers.get("content-type", "?").split(";")[0]
        return (f"--tracking-uri {uri} answers, but not as an MLflow tracking server (GET "
                f"{url} gave {answer.status_code}, {kind}); give the address of `mlflow server`"
                " (often port 5000), not of another service or of the MLflow UI's proxy path")
    return None


def _json(answer: Any) -> Any:
    try:
        return answer.json()
    except ValueError:
        return None


def _credentials() -> dict[str, Any]:
    """The credentials MLflow's own client would send, from the same environment variables."""
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"headers": {"Authorization": f"Bearer {token}"}}
    user, password = (os.environ.get(f"MLFLOW_TRACKING_{k}") for k in ("USERNAME", "PASSWORD"))
    return {"auth": (user, password)} if user and password else {}
