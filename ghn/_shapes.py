"""Shape encoder vocabularies of GHN-2: tensor shape -> four embedding indices."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence


def _nearest(values: list[int], v: int) -> int:
    """Index of the value nearest to v in sorted `values`, ties going to the smaller value."""
    hi = bisect.bisect_left(values, v)
    if hi == 0:
        return 0
    if hi == len(values):
        return len(values) - 1
    return hi - 1 if v - values[hi - 1] <= values[hi] - v else hi


def to_4d(shape: Sequence[int]) -> tuple[int, int, int, int]:
    """The 4-D view of a parameter shape that the shape encoder sees."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 1:
        return (shape[0], 1, 1, 1)
    if len(shape) == 2:
        return (shape[0], shape[1], 1, 1)
    if len(shape) == 3:
        a, b, c = shape
        if a == 1 and min(b, c) > 1:
            side = math.isqrt(b)
            return (1, c, side, side)
        return (a, b, c, 1)
    if len(shape) == 4:
        return shape  # type: ignore[return-value]
    raise ValueError(f"cannot encode a {len(shape)}-D shape {shape}")


class ShapeVocab:
    """Channel and spatial vocabularies for one GHN (they depend on its class count and S)."""

    def __init__(self, num_classes: int, spatial: int) -> None:
        channels = {1, 3, num_classes, *range(8, 64, 8), *range(64, 4096, 16)}
        channels |= set(range(4096, 8193, 32))
        self.channels = sorted(channels)
        self.spatial = sorted({*range(1, max(12, spatial), 2), 14, 16})
        self.channel_dummy = len(self.channels)
        self.spatial_dummy = len(self.spatial)
        self._channel_index = {v: i for i, v in enumerate(self.channels)}
        self._spatial_index = {v: i for i, v in enumerate(self.spatial)}

    def channel(self, v: int) -> int:
        if v in self._channel_index:
            return self._channel_index[v]
        if 4 <= v <= 7:
            return self._channel_index[8]
        if 1 <= v < 8192:
            return _nearest(self.channels, v)
        return len(self.channels) - 1

    def spatial_index(self, v: int) -> int:
        if v in self._spatial_index:
            return self._spatial_index[v]
        if v == 2:
            return self._spatial_index[3]
        if 1 <= v < 16:
            return _nearest(self.spatial, v)
        return self._spatial_index[16]

    def encode(self, shape: Sequence[int] | None) -> tuple[int, int, int, int]:
        """Four embedding indices for a node's shape; shapeless nodes get the dummy rows."""
        if shape is None:
            return (self.channel_dummy, self.channel_dummy, self.spatial_dummy, self.spatial_dummy)
        a, b, c, d = to_4d(shape)
        return (self.channel(a), self.channel(b), self.spatial_index(c), self.spatial_index(d))
