"""Bad input on a cluster exits 2 before Ray starts, naming the fix: storage that cannot be
written, a bucket that does not exist, a tracking URI that is not MLflow, a broken dataset."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path

import pyarrow.fs
import pytest

from sweeps import _reach
from sweeps._config import SweepConfig
from sweeps._preflight import BadInput, preflight

ray = pytest.importorskip("ray")


def _cfg(tmp_path: Path, **kwargs) -> SweepConfig:
    fields = {"storage": str(tmp_path / "ray"), "tracking_uri": f"sqlite:///{tmp_path / 'm.db'}",
              **kwargs}
    return SweepConfig(**fields)


def test_storage_that_is_not_writable_exits_before_ray(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(BadInput, match="--storage .*a-file/sub is not a directory this user can "
                                       "write.*pick a writable directory"):
        preflight(_cfg(tmp_path, storage=str(tmp_path / "a-file" / "sub")))
    assert not ray.is_initialized()


def test_writable_storage_keeps_only_what_was_there(tmp_path):
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "results.parquet").write_text("computed")
    assert _reach.storage_problem(str(tmp_path / "ray")) is None
    assert [p.name for p in (tmp_path / "ray").iterdir()] == ["results.parquet"]


class _NoBucketFS:
    """An object store without the bucket: what pyarrow's S3 filesystem answers."""

    def get_file_info(self, path: str) -> pyarrow.fs.FileInfo:
        return pyarrow.fs.FileInfo(path, pyarrow.fs.FileType.NotFound)


def test_missing_bucket_is_named(monkeypatch):
    monkeypatch.setattr(_reach, "resolve_storage", lambda uri: (_NoBucketFS(), "nobucket/sweeps"))
    problem = _reach.storage_problem("s3://nobucket/sweeps")
    assert "s3://nobucket/sweeps is not usable" in problem
    assert "bucket 'nobucket' does not exist" in problem and "create the bucket" in problem


def test_storage_that_hangs_answers_within_the_timeout(monkeypatch):
    monkeypatch.setattr(_reach, "resolve_storage", lambda uri: time.sleep(30))
    start = time.time()
    problem = _reach.storage_problem("s3://slow/sweeps", timeout_s=0.5)
    assert time.time() - start < 5 and "no answer within 0 s" in problem


class _NotMlflow(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b"<html><body>Not Found</body></html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def not_mlflow():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotMlflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_tracking_uri_that_is_not_mlflow_exits_2(tmp_path, not_mlflow, refusal):
    err = refusal("--storage", str(tmp_path / "ray"), "--tracking-uri", not_mlflow,
                  cwd=tmp_path)
    assert f"--tracking-uri {not_mlflow} answers, but not as an MLflow tracking server" in \
        err and "404, text/html" in err
    assert not (tmp_path / "ray").exists() or not any((tmp_path / "ray").iterdir())


def test_tracking_uri_that_is_not_mlflow_is_named(not_mlflow):
    problem = _reach.tracking_problem(not_mlflow)
    assert "answers, but not as an MLflow tracking server" in problem and "404" in problem


def test_unreachable_tracking_server_is_named():
    problem = _reach.tracking_problem("http://127.0.0.1:9", timeout_s=2)
    assert "no MLflow server answers there" in problem


def _image_folder(root: Path, empty: str | None = None) -> Path:
    from PIL import Image

    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            if name != empty:
                for i in range(2):
                    Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(root / split / name / f"{i}.jpg")
    return root


@pytest.fixture
def data_cfg(tmp_path, reference_dir, monkeypatch):
    monkeypatch.setenv("GHN_SWEEP_CACHE", str(tmp_path / "cache"))
    return lambda data: _cfg(tmp_path, dataset=str(data), n_shots=1,
                             ghn=str(reference_dir / "ghn2_random_imagenet_seed0.pt"))


def test_empty_class_folder_is_named(tmp_path, data_cfg):
    data = _image_folder(tmp_path / "data", empty="dog")
    with pytest.raises(BadInput, match=r"class folder .*train/dog holds no images"):
        preflight(data_cfg(data))


def test_corrupt_jpeg_is_named(tmp_path, data_cfg):
    data = _image_folder(tmp_path / "data")
    bad = data / "test" / "cat" / "1.jpg"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated mid-header
    with pytest.raises(BadInput, match=rf"cannot decode {bad} .*replace or delete the file"):
        preflight(data_cfg(data))
    assert not ray.is_initialized()
