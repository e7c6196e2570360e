"""Loading official-format GHN-2 checkpoints, and refusing everything else clearly."""

from __future__ import annotations

import collections

import pytest
import torch

from ghn import CHECKPOINT_URLS, GHN2, load_ghn, resolve_checkpoint


@pytest.fixture
def imagenet_ckpt(reference_dir):
    return reference_dir / "ghn2_random_imagenet_seed0.pt"


def test_official_layout_loads_unchanged(imagenet_ckpt, reference_dir):
    ghn = load_ghn(imagenet_ckpt)
    assert isinstance(ghn, GHN2) and not ghn.training
    stored = torch.load(imagenet_ckpt, weights_only=True)["state_dict"]
    assert list(ghn.state_dict()) == list(stored)  # same names, same order
    for name, tensor in stored.items():
        assert torch.equal(ghn.state_dict()[name], tensor), name
    assert ghn.num_classes == 1000 and ghn.max_spatial == 16
    cifar = load_ghn(reference_dir / "ghn2_random_cifar10_seed0.pt")
    assert cifar.num_classes == 10 and cifar.max_spatial == 11
    assert ghn.checkpoint_id.startswith("ghn2_random_imagenet_seed0-")


class Evil:
    pass


def test_arbitrary_pickles_are_refused(tmp_path, imagenet_ckpt):
    ckpt = torch.load(imagenet_ckpt, weights_only=True)
    ckpt["extra"] = Evil()
    path = tmp_path / "evil.pt"
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="arbitrary unpickling"):
        load_ghn(path)


def _saved(tmp_path, ckpt, name="bad.pt"):
    path = tmp_path / name
    torch.save(ckpt, path)
    return path


def test_missing_and_misshaped_keys_are_named(tmp_path, imagenet_ckpt):
    ckpt = torch.load(imagenet_ckpt, weights_only=True)
    state = collections.OrderedDict(ckpt["state_dict"])
    del state["gnn.gru.weight_ih"]
    state["ln.weight"] = torch.zeros(7)
    state["surprise"] = torch.zeros(1)
    ckpt["state_dict"] = state
    with pytest.raises(ValueError) as err:
        load_ghn(_saved(tmp_path, ckpt))
    message = str(err.value)
    assert "gnn.gru.weight_ih" in message and "missing" in message
    assert "ln.weight (7,) (expected (32,))" in message
    assert "surprise" in message


def test_non_ghn2_config_is_refused(tmp_path, imagenet_ckpt):
    ckpt = torch.load(imagenet_ckpt, weights_only=True)
    ckpt["config"] = {k: v for k, v in ckpt["config"].items() if k != "ve"}  # ve defaults False
    with pytest.raises(ValueError, match="not a GHN-2 checkpoint.*'ve': False"):
        load_ghn(_saved(tmp_path, ckpt))
    with pytest.raises(ValueError, match="expected a dict with 'state_dict'"):
        load_ghn(_saved(tmp_path, {"weights": torch.zeros(1)}, "plain.pt"))


def test_corrupt_file_is_refused(tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        load_ghn(path)


def test_unknown_name_or_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a file nor a known name"):
        resolve_checkpoint(tmp_path / "nope.pt")


def test_name_is_downloaded_once_into_the_cache(tmp_path, monkeypatch, imagenet_ckpt):
    """The real download code, fed from a local file:// URL instead of GitHub."""
    monkeypatch.setenv("GHN_SWEEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(CHECKPOINT_URLS, "ghn2-imagenet", imagenet_ckpt.as_uri())
    path = resolve_checkpoint("ghn2-imagenet")
    assert path == tmp_path / "cache" / "checkpoints" / imagenet_ckpt.name
    assert path.read_bytes() == imagenet_ckpt.read_bytes()
    assert not list(path.parent.glob("*.partial"))  # written atomically, no leftovers

    def no_network(*args, **kwargs):
        raise AssertionError("a cached checkpoint must not be downloaded again")

    monkeypatch.setattr(torch.hub, "urlopen", no_network)
    assert resolve_checkpoint("ghn2-imagenet") == path
    assert load_ghn("ghn2-imagenet").num_classes == 1000


def test_offline_without_cache_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("GHN_SWEEP_CACHE", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    with pytest.raises(FileNotFoundError) as err:
        resolve_checkpoint("ghn2-cifar10")
    assert str(tmp_path / "checkpoints" / "ghn2_cifar10.pt") in str(err.value)
    assert not (tmp_path / "checkpoints" / "ghn2_cifar10.pt").exists()
    assert not list((tmp_path / "checkpoints").glob("*.partial"))  # no partial file left


def test_recorded_classes_load_and_are_checked(reference_dir, tmp_path):
    ckpt = torch.load(reference_dir / "ghn2_random_cifar10_seed0.pt", weights_only=True)
    assert load_ghn(reference_dir / "ghn2_random_cifar10_seed0.pt").classes is None
    good, bad = tmp_path / "good.pt", tmp_path / "bad.pt"
    torch.save({**ckpt, "classes": [str(i) for i in range(10)]}, good)
    torch.save({**ckpt, "classes": ["cat", "dog"]}, bad)
    assert load_ghn(good).classes == tuple(str(i) for i in range(10))
    with pytest.raises(ValueError, match="records classes"):
        load_ghn(bad)
