"""Connecting to a Ray cluster for ``--ray ADDRESS`` (shared by every stage that can run on Ray).

``ADDRESS`` is one of:

- ``auto``: the cluster ``ray start`` left on this machine (or the one ``RAY_ADDRESS`` names, as under
  ``ray job submit``);
- ``ray://host:port``: a remote cluster through Ray Client;
- ``host:port``: the head node's GCS address, from a machine inside the cluster;
- ``local``: a throwaway cluster on this machine, stopped when the stage ends.

Ray is imported only here and only when ``--ray`` is given, so the rest of the engine neither needs it
installed nor pays its import time. When the process is already connected (a test's session cluster, a
notebook), that connection is used as it is and left open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

from ipt_engine.errors import UserError

RAY_PIN = "ray[data]==2.60.0"
_HOST_PORT = re.compile(r"^[A-Za-z0-9_.-]+:\d+$")


def import_ray() -> Any:
    """``import ray``, or one line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(f"--ray needs Ray in this environment: pip install '{RAY_PIN}'") from None
    return ray


def check_address(address: str) -> str:
    """Validate ``--ray ADDRESS`` before any work starts."""
    if address in ("auto", "local") or address.startswith("ray://") or _HOST_PORT.match(address):
        return address
    raise UserError(f"--ray {address!r}: expected auto, local, ray://HOST:PORT or HOST:PORT")


@contextlib.contextmanager
def ray_session(address: str, *, num_cpus: int | None = None) -> Iterator[Any]:
    """Connect to (or start) the cluster ``address`` names for the length of the block; yield ``ray``.

    ``num_cpus`` sizes a ``local`` cluster only (default: this machine's cores).
    """
    check_address(address)
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                              "log_to_driver": True}
    if address == "local":
        kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = " (start one with `ray start --head`, or use --ray local)" if address == "auto" else ""
        raise UserError(f"--ray {address}: cannot connect: {first}{hint}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def cluster_cpus(ray: Any) -> int:
    """CPUs the cluster offers now (at least 1), to size how much work is kept in flight."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
