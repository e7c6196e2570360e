"""Read the official GHN-3 files (a joblib/pickle stream of a state dict) without running code.

An official file is a plain pickle of an ``OrderedDict`` of tensors. Each tensor is a call of
``torch._utils._rebuild_tensor_v2(storage, ...)`` and each storage a call of
``torch.storage._load_from_bytes(blob)``, where ``blob`` is a legacy (non-zip) ``torch.save``
of one storage. ``pickle.load``/``joblib.load`` would run ``_load_from_bytes``, which itself
unpickles the blob with ``weights_only=False``. Here those three names are mapped to our own
functions that only parse bytes and build views; any other global is refused as soon as the
unpickler meets it, so a planted ``os.system`` is never resolved, let alone called.

Memory: each storage's bytes are read once by the unpickler, and the tensor is a view of that
same buffer (``torch.frombuffer``), so loading needs about one copy of the file, not two.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import warnings
from pathlib import Path

import torch

# The legacy torch.save magic number and protocol version that start every storage blob.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# Storage classes a blob may name, with the dtype of its raw data.
_STORAGE_DTYPES = {("torch", "FloatStorage"): torch.float32}
# Callables an official file may reference; everything else is refused.
_ALLOWED = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch.storage", "_load_from_bytes"),
}


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint references a Python global that a GHN state dict never needs."""


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, requires_grad=False,
                    backward_hooks=None, metadata=None) -> torch.Tensor:
    """Stand-in for torch._utils._rebuild_tensor_v2: a view of the 1-D storage tensor."""
    if not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError("a tensor's storage is not a parsed storage blob")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    need = int(offset) + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else 0
    if need > storage.numel():
        raise pickle.UnpicklingError(
            f"a tensor of size {size} reads past its storage ({storage.numel()} elements)")
    return storage.as_strided(size, stride, int(offset))


class _BlobUnpickler(pickle.Unpickler):
    """The pickles inside a storage blob: plain values plus one persistent storage id."""

    def find_class(self, module: str, name: str):
        if (module, name) in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[(module, name)]
        raise UnsafeCheckpointError(f"storage blob references the global {module}.{name}")

    def persistent_load(self, pid):
        if (not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage"
                or not isinstance(pid[1], torch.dtype)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r} in a storage blob")
        return pid


def _load_storage(blob: bytes) -> torch.Tensor:
    """Stand-in for torch.storage._load_from_bytes: parse a one-storage legacy torch.save.

    Layout: five pickles (magic, protocol, sys info, the storage as a persistent id, its
    keys), then per key an 8-byte little-endian element count and the raw little-endian data.
    """
    if not isinstance(blob, (bytes, bytearray)):
        raise pickle.UnpicklingError("a storage blob is not bytes")
    f = io.BytesIO(blob)
    magic = _BlobUnpickler(f).load()
    protocol = _BlobUnpickler(f).load()
    if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL:
        raise pickle.UnpicklingError("a storage blob is not a legacy torch.save of a storage")
    info = _BlobUnpickler(f).load()
    if not isinstance(info, dict) or not info.get("little_endian", True):
        raise pickle.UnpicklingError("a storage blob is not little-endian")
    pid = _BlobUnpickler(f).load()
    keys = _BlobUnpickler(f).load()
    if not isinstance(pid, tuple) or keys != [pid[2]]:
        raise pickle.UnpicklingError("a storage blob must hold exactly one storage")
    dtype, numel = pid[1], int(pid[4])
    (count,) = struct.unpack("<q", f.read(8))
    start = f.tell()
    itemsize = torch.empty((), dtype=dtype).element_size()
    if count != numel or start + count * itemsize > len(blob):
        raise pickle.UnpicklingError("a storage blob is shorter than the storage it declares")
    if count == 0:
        return torch.empty(0, dtype=dtype)
    with warnings.catch_warnings():  # bytes are read-only to Python; the tensor owns the only ref
        warnings.simplefilter("ignore", UserWarning)
        return torch.frombuffer(blob, dtype=dtype, count=count, offset=start)


class _StateDictUnpickler(pickle.Unpickler):
    _STAND_INS = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch.storage", "_load_from_bytes"): _load_storage,
    }

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return self._STAND_INS[(module, name)]
        raise UnsafeCheckpointError(
            f"refusing global {module}.{name}: a GHN-3 checkpoint may only reference "
            f"{', '.join(f'{m}.{n}' for m, n in sorted(_ALLOWED))}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")


def load_pickled_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in an official (joblib-pickled) GHN-3 file, read without running code.

    Raises:
        UnsafeCheckpointError: the file references any other global (named in the message).
        ValueError: the file is truncated, damaged, or not a dict of tensors.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            state = _StateDictUnpickler(f).load()
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, TypeError,
            IndexError, KeyError, AttributeError, RuntimeError, MemoryError) as e:
        raise ValueError(f"{path} is not a readable GHN-3 checkpoint (truncated or damaged?): "
                         f"{type(e).__name__}: {e}") from None
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f"{path} does not hold a state dict (names to tensors)")
    return dict(state)


def is_pickle_stream(path: str | os.PathLike) -> bool:
    """True for a raw pickle (protocol >= 2 starts with PROTO); torch.save files are zips."""
    with open(path, "rb") as f:
        return f.read(1) == pickle.PROTO
