"""Keep the in-process Ray of a local sweep on this machine's loopback address.

Ray decides where its processes listen when ``ray`` is imported (``ray_constants``): on Linux,
the machine's network address, and its gRPC servers on every interface; on macOS and Windows,
where multi-node clusters are off by default, 127.0.0.1 only.
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` asks for the latter on Linux too. Ray reads it once, at
import, so the sweep's script (and the benchmarks) call ``listen_on_loopback`` before they import
anything that imports Ray; `start_local_ray` checks what Ray chose and keeps token
authentication on where it is not loopback.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import Any

_logger = logging.getLogger(__name__)

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def listen_on_loopback() -> None:
    """For a sweep without ``--address``: call before ``import ray``."""
    os.environ.setdefault(LOOPBACK_ENV, "0")


def start_local_ray(**init_kwargs: Any) -> None:
    """Start a Ray of this process's own (never one that `ray start` left on this machine, which
    ``ray.init()`` would join), on 127.0.0.1 only if Ray was imported after `listen_on_loopback`.

    On loopback nothing off this machine reaches it, and Ray's token authentication would only
    print a note; elsewhere it stays on (Ray's default for a new local cluster), and we say so.
    Workers' logs stay in Ray's session dir; failures still reach the terminal through Tune.
    """
    listen_on_loopback()  # in time only if nothing has imported Ray yet
    import ray

    ip = ray.util.get_node_ip_address()
    if ipaddress.ip_address(ip).is_loopback:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    else:
        off = os.environ.get("RAY_AUTH_MODE") == "disabled"
        _logger.warning("in-process Ray will listen on %s, not only on 127.0.0.1 (ray was "
                        "imported before sweeps._loopback.listen_on_loopback ran); %s", ip,
                        "RAY_AUTH_MODE=disabled: whoever reaches that address can run code "
                        "here" if off else "its token authentication stays on")
    ray.init(**{"address": "local", "logging_level": logging.WARNING, "log_to_driver": False,
                "include_dashboard": False, **init_kwargs})
