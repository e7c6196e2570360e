"""Run postproc tests on one torch thread.

These tests multiply and factorise small matrices; on the shared 2-core CI box a second
intra-op thread buys little and, when the other core is busy, OpenMP spin-waiting made the
same test 10-30x slower. The previous setting is restored afterwards.
"""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
