"""local_storage_filesystem: a copy between two of them is a hard link, or a copy across devices;
everything else behaves as pyarrow's local filesystem."""

import errno
import os
import pickle
import tempfile
from pathlib import Path

import pytest
from pyarrow import fs

from trainable import local_storage_filesystem


def _checkpoint_dir(tmp_path):
    src = tmp_path / "trial-tmp"
    src.mkdir()
    (src / "state.pt").write_bytes(b"weights" * 1000)
    (src / "sub").mkdir()
    (src / "sub" / "extra.json").write_text("{}")
    return src


def test_copy_files_between_two_of_them_links_each_file(tmp_path):
    src = _checkpoint_dir(tmp_path)
    dest = tmp_path / "storage" / "checkpoint_000001"
    storage = local_storage_filesystem()
    storage.create_dir(str(dest), recursive=True)  # as Ray does before it copies
    fs.copy_files(str(src), str(dest), source_filesystem=local_storage_filesystem(),
                  destination_filesystem=storage)
    for name in ("state.pt", "sub/extra.json"):
        assert os.stat(dest / name).st_ino == os.stat(src / name).st_ino
    (src / "state.pt").unlink()  # the trial deletes its temporary directory
    assert (dest / "state.pt").read_bytes() == b"weights" * 1000


def test_across_devices_the_file_is_copied(tmp_path, monkeypatch):
    src = _checkpoint_dir(tmp_path)
    dest = tmp_path / "storage"
    dest.mkdir()

    def cross_device(a, b):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    fs.copy_files(str(src / "state.pt"), str(dest / "state.pt"),
                  source_filesystem=local_storage_filesystem(),
                  destination_filesystem=local_storage_filesystem())
    assert os.stat(dest / "state.pt").st_ino != os.stat(src / "state.pt").st_ino
    assert (dest / "state.pt").read_bytes() == (src / "state.pt").read_bytes()


def test_other_link_errors_are_raised(tmp_path, monkeypatch):
    src = _checkpoint_dir(tmp_path)

    def denied(a, b):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "link", denied)
    with pytest.raises(OSError, match="Permission denied"):
        local_storage_filesystem().copy_file(str(src / "state.pt"), str(tmp_path / "copy.pt"))


def test_a_file_already_at_the_destination_is_replaced(tmp_path):
    src = _checkpoint_dir(tmp_path)
    (tmp_path / "old.pt").write_bytes(b"stale")
    local_storage_filesystem().copy_file(str(src / "state.pt"), str(tmp_path / "old.pt"))
    assert (tmp_path / "old.pt").read_bytes() == b"weights" * 1000


def test_a_file_already_at_the_destination_across_devices_is_replaced_by_a_copy(
        tmp_path, monkeypatch):
    """A resumed trial reports again a checkpoint its killed attempt stored, from a /tmp on
    another device than the storage."""
    src = _checkpoint_dir(tmp_path)
    (tmp_path / "old.pt").write_bytes(b"stale")

    def cross_device(a, b):  # as link(2) answers: an existing name first, then the device
        if os.path.exists(b):
            raise FileExistsError(errno.EEXIST, "File exists")
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    local_storage_filesystem().copy_file(str(src / "state.pt"), str(tmp_path / "old.pt"))
    assert (tmp_path / "old.pt").read_bytes() == b"weights" * 1000
    assert os.stat(tmp_path / "old.pt").st_ino != os.stat(src / "state.pt").st_ino


def test_it_pickles_and_equals_another(tmp_path):
    storage = local_storage_filesystem()
    again = pickle.loads(pickle.dumps(storage))
    assert again.equals(storage) and not again.equals(fs.LocalFileSystem())
    (tmp_path / "a.txt").write_text("x")
    assert again.get_file_info(str(tmp_path / "a.txt")).size == 1


def test_reads_writes_lists_and_deletes_as_the_local_filesystem(tmp_path):
    storage = local_storage_filesystem()
    root = str(tmp_path / "run")
    storage.create_dir(f"{root}/a/b", recursive=True)
    with storage.open_output_stream(f"{root}/a/b/x.json") as out:
        out.write(b'{"epoch": 1}')
    with storage.open_append_stream(f"{root}/a/b/x.json") as out:
        out.write(b"\n")
    with storage.open_input_file(f"{root}/a/b/x.json") as f:
        assert f.read() == b'{"epoch": 1}\n'
    listed = storage.get_file_info(fs.FileSelector(root, recursive=True))
    assert sorted(i.path.removeprefix(root) for i in listed) == ["/a", "/a/b", "/a/b/x.json"]
    storage.move(f"{root}/a/b/x.json", f"{root}/x.json")
    storage.delete_file(f"{root}/x.json")
    storage.delete_dir_contents(f"{root}/a")
    storage.delete_dir(f"{root}/a")
    assert not os.listdir(root)


def test_a_trial_writes_its_checkpoint_in_the_staging_dir_given(tmp_path, monkeypatch):
    """On the storage's filesystem, so that Tune's copy into storage is a link wherever /tmp
    is; the temporary directory is gone once Tune has it."""
    import torch
    from ray import tune

    from trainable import _ray

    seen = []

    def report(metrics, checkpoint=None):
        seen.append(Path(checkpoint.path))
        assert (Path(checkpoint.path) / _ray.STATE_FILE).is_file()

    monkeypatch.setattr(tune, "report", report)
    staging = tmp_path / "sweep" / ".staging"
    _ray._report({"epoch": 1}, {"w": torch.zeros(2)}, staging_dir=str(staging))
    _ray._report({"epoch": 2}, {"w": torch.zeros(2)})
    assert seen[0].parent == staging and not seen[0].exists() and staging.is_dir()
    assert seen[1].parent == Path(tempfile.gettempdir())

