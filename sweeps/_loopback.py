"""Keep the in-process Ray of a local sweep on this machine's loopback address.

Ray decides where its processes listen when ``ray`` is imported (``ray_constants``): on Linux,
the machine's network address, and its gRPC servers on every interface; on macOS and Windows,
where multi-node clusters are off by default, 127.0.0.1 only.
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` asks for the latter on Linux too. Ray reads it once, at
import, so the sweep's script calls ``listen_on_loopback`` before it imports anything that
imports Ray; ``sweeps._run.start_ray`` checks what Ray chose and keeps token authentication on
where it is not loopback.
"""

from __future__ import annotations

import os

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def listen_on_loopback() -> None:
    """For a sweep without ``--address``: call before ``import ray``."""
    os.environ.setdefault(LOOPBACK_ENV, "0")
