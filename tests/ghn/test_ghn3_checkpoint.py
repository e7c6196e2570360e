"""Loading GHN-3 checkpoints: the official pickled layout, safety, damage, our own format."""

from __future__ import annotations

import io
import os
import pickle
import urllib.error
import warnings
from collections import OrderedDict

import pytest
import torch

from ghn import GHN2, GHN3, GHN3Config, load_ghn, resolve_checkpoint, save_ghn3
from ghn._checkpoint3 import save_official_format
from ghn._ghn3 import infer_config
from ghn._unpickle import UnsafeCheckpointError, _load_storage, load_pickled_state_dict

SMALL = GHN3Config(hid=16, heads=2, layers=2, max_shape=(16, 16, 11, 11), num_classes=10)


def _random_ghn3(config: GHN3Config = SMALL) -> GHN3:
    torch.manual_seed(0)
    ghn = GHN3(config)
    with torch.no_grad():
        for p in ghn.parameters():
            p.normal_()
    return ghn


@pytest.fixture(scope="module")
def official_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ghn3") / "ghn3small.pt"
    state = _random_ghn3().state_dict()  # carries _metadata, as the official files do
    save_official_format(state, path)
    return path


def test_official_format_loads_with_inferred_config(official_file):
    ghn = load_ghn(official_file)
    assert isinstance(ghn, GHN3)
    assert ghn.config == SMALL
    for k, v in _random_ghn3().state_dict().items():
        assert torch.equal(ghn.state_dict()[k], v), k
    assert ghn.num_classes == 10
    assert repr(ghn).startswith("GHN3(hid=16, heads=2, layers=2")


def test_official_reference_file_loads(ghn3_reference_dir):
    ghn = load_ghn(ghn3_reference_dir / "ghn3tm8_random_seed0.pt")
    assert ghn.config == GHN3Config(hid=64, heads=8, layers=3, max_shape=(64, 64, 16, 16),
                                    num_classes=1000)
    assert sum(p.numel() for p in ghn.parameters()) == 6_906_632  # the published tm8 count


def test_embeddings_under_layer_zero_are_accepted(tmp_path):
    """Files written by ghn3's training code keep the structural embeddings in gnn.0."""
    state = _random_ghn3().state_dict()
    moved = OrderedDict((f"gnn.0.{k}" if k.startswith(("centrality", "input_dist")) else k, v)
                        for k, v in state.items())
    save_official_format(moved, tmp_path / "trainer_layout.pt")
    ghn = load_ghn(tmp_path / "trainer_layout.pt")
    assert torch.equal(ghn.input_dist_embed.weight, state["input_dist_embed.weight"])


class _WritesFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_any_other_global_is_refused_before_it_runs(tmp_path):
    planted = tmp_path / "planted"
    state = OrderedDict(w=torch.zeros(2))
    payload = pickle.dumps(OrderedDict(state, evil=_WritesFile(str(planted))), protocol=4)
    path = tmp_path / "evil.pt"
    path.write_bytes(payload)
    with pytest.raises(UnsafeCheckpointError, match="builtins.open|io.open"):
        load_pickled_state_dict(path)
    with pytest.raises(UnsafeCheckpointError):
        load_ghn(path)
    assert not planted.exists()


def test_a_storage_blob_with_another_global_is_refused():
    """The legacy blob inside may only name torch.FloatStorage, and is parsed, not loaded."""
    good, bad = io.BytesIO(), io.BytesIO()
    with warnings.catch_warnings():  # TypedStorage is deprecated; the official files use it
        warnings.simplefilter("ignore", UserWarning)
        torch.save(torch.arange(3.0).storage(), good, _use_new_zipfile_serialization=False)
        torch.save(torch.zeros(3, dtype=torch.float64).storage(), bad,
                   _use_new_zipfile_serialization=False)
    assert b"FloatStorage" in good.getvalue()
    assert torch.equal(_load_storage(good.getvalue()), torch.arange(3.0))
    with pytest.raises(UnsafeCheckpointError, match="torch.DoubleStorage"):
        _load_storage(bad.getvalue())


def test_truncated_file_gets_a_clear_error(official_file, tmp_path):
    data = official_file.read_bytes()
    for cut in (len(data) // 2, len(data) - 3, 20):
        path = tmp_path / f"cut{cut}.pt"
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated or damaged"):
            load_ghn(path)


def test_wrong_shapes_are_named(tmp_path):
    state = _random_ghn3().state_dict()
    state["gnn.1.ff.net.0.weight"] = torch.zeros(3, 3)
    save_official_format(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="gnn.1.ff.net.0.weight"):
        load_ghn(tmp_path / "bad.pt")


def test_project_format_round_trips(tmp_path):
    ghn = _random_ghn3(GHN3Config(hid=32, heads=4, layers=1, max_shape=(24, 24, 16, 16),
                                  num_classes=7))
    ghn.classes = tuple("abcdefg")
    path = tmp_path / "own.pt"
    save_ghn3(ghn, path)
    ckpt = torch.load(path, weights_only=True)  # no arbitrary unpickling needed
    assert ckpt["config"]["ghn"] == "ghn3"
    back = load_ghn(path)
    assert isinstance(back, GHN3) and back.config == ghn.config  # heads 4: not inferable
    assert back.classes == ghn.classes
    for k, v in ghn.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    assert back.checkpoint_id.startswith("own-") and back.checkpoint_id != "random-init"


def test_identity_differs_between_ghns(official_file, tmp_path, ghn3_reference_dir):
    """trainable/ keys its prediction cache on checkpoint_id: distinct files, distinct ids."""
    a = load_ghn(official_file)
    b = load_ghn(ghn3_reference_dir / "ghn3tm8_random_seed0.pt")
    assert a.checkpoint_id != b.checkpoint_id
    assert load_ghn(official_file).checkpoint_id == a.checkpoint_id


def test_ghn2_files_still_load_as_ghn2(reference_dir):
    assert isinstance(load_ghn(reference_dir / "ghn2_random_imagenet_seed0.pt"), GHN2)


def test_infer_config_names_what_is_missing():
    state = _random_ghn3().state_dict()
    del state["decoder.conv.2.weight"]
    with pytest.raises(ValueError, match="decoder.conv.2.weight"):
        infer_config(state)


def test_known_names_download_once_with_a_clear_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GHN_SWEEP_CACHE", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    with pytest.raises(FileNotFoundError, match="ghn3tm8.pt") as err:
        resolve_checkpoint("ghn3-tm8")
    assert "huggingface.co/SamsungSAILMontreal/ghn3/resolve/" in str(err.value)
    assert not any(p.suffix == ".partial" for p in tmp_path.rglob("*"))
    cached = tmp_path / "checkpoints" / "ghn3tm8.pt"
    save_official_format(_random_ghn3().state_dict(), cached)
    assert resolve_checkpoint("ghn3-tm8") == cached  # already there: no download attempted
    assert isinstance(load_ghn("ghn3-tm8"), GHN3)


def test_loading_keeps_one_copy_of_each_tensor(official_file):
    """Parameters are views of the storages the unpickler read, not copies of them."""
    ghn = load_ghn(official_file)
    ptrs = {p.untyped_storage().data_ptr() for p in ghn.parameters()}
    assert len(ptrs) == len(list(ghn.parameters()))
    assert os.path.getsize(official_file) >= 4 * sum(p.numel() for p in ghn.parameters())
