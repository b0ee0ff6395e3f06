"""The Ray a collection analysis runs on: one started on this machine, bound to loopback, or a cluster joined."""

import logging
import os
import tempfile
from pathlib import Path


def prepare_local_ray() -> None:
    """Env vars for a Ray started here, read when `ray` is imported and by every process it starts: loopback only
    (as `imgserve serve` starts one), no usage stats, malloc arenas capped (serving.memory)."""
    from serving.memory import arena_cap
    from serving.server import LOOPBACK, prepare_ray_network

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if arena_cap() > 0:
        os.environ.setdefault("MALLOC_ARENA_MAX", str(arena_cap()))
    prepare_ray_network(False, LOOPBACK, Path(tempfile.gettempdir()))


def init_ray(address: str | None) -> None:
    """Join `address`, or start a Ray on this machine (never an existing local one: `address="local"`), bound to
    loopback; a Ray that would listen beyond it (imported before the env was set) is refused."""
    import ray

    if address is not None:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        return
    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    from serving.server import LOOPBACK

    if ray.util.get_node_ip_address() != LOOPBACK:
        ray.shutdown()
        raise RuntimeError("the local Ray would listen beyond loopback: start the analysis in a fresh process")
