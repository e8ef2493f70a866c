"""Connecting to Ray, and sizing the pool of embedding actors to the cluster.

Ray and pyarrow are optional (the `distributed` extra): every module of this
package imports them through `require_ray` (and bertonnx.io.shards.require_pyarrow), which name the
extra to install when they are missing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bertonnx.errors import OptionError, missing_extra

EXTRA = "distributed"


def require_ray() -> Any:
    """The `ray` module with Ray Data, or a MissingExtraError naming the extra."""
    try:
        import ray
        import ray.data  # noqa: F401 - ray.data is a separate import, and needs the [data] extra
    except ImportError as error:
        raise missing_extra("distributed embedding", EXTRA, error) from error
    return ray


@contextmanager
def ray_session(address: str = "local", verbose: bool = False) -> Iterator[None]:
    """Connect to Ray for the duration of a job, unless this process already is.

    Args:
        address: "local" starts a Ray instance on this machine, with all its CPUs;
            "auto" joins the cluster this machine belongs to, "host:6379" the one
            whose head is there (this process is then the job's driver).
        verbose: show Ray's own INFO lines and the workers' logs (also with BERTONNX_DEBUG=1);
            otherwise only its errors reach stderr.
    """
    ray = require_ray()
    if ray.is_initialized():
        yield
        return
    loud = verbose or bool(os.environ.get("BERTONNX_DEBUG"))
    if not loud:
        for name in ("ray", "ray.data", "ray.train", "ray.tune"):
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        ray.init(
            address=address,
            logging_level=logging.INFO if loud else logging.ERROR,
            log_to_driver=loud,
        )
    except ConnectionError as error:
        if address == "local":
            raise
        raise ConnectionError(f"could not join the Ray cluster at {address}: {error}{_auth_hint()}") from error
    try:
        yield
    finally:
        ray.shutdown()


def _auth_hint() -> str:
    """Ray >= 2.59 starts clusters with token authentication, but a driver joining one sends no token unless told."""
    if os.environ.get("RAY_AUTH_MODE") == "token":
        return "; is it running, and is RAY_AUTH_TOKEN (or ~/.ray/auth_token) the cluster's token?"
    return "; is it running? If it uses token authentication, set RAY_AUTH_MODE=token (and its token)"


@dataclass(frozen=True)
class Workers:
    """How many embedding actors run, and the ONNX Runtime threads (and CPUs) each takes."""

    count: int
    threads: int


def plan_workers(num_workers: int | None, threads: int | None, cluster_cpus: int, node_cpus: int) -> Workers:
    """The actor pool: by default it fills the cluster, workers x threads = CPUs, no worker wider than a node.

    Defaults: one single-threaded worker per CPU, since independent workers
    need no synchronisation between threads and a slow one delays only its own
    batches; or, given only the worker count, as many threads each as fit.
    Ray places each worker on a node with `threads` free CPUs; what does not
    fit waits.

    Raises:
        OptionError: a count or thread number below 1.
    """
    count = num_workers
    for name, value in (("num_workers", count), ("threads", threads)):
        if value is not None and value < 1:
            raise OptionError(f"{name} must be at least 1, got {value}")
    if threads is None:
        threads = 1 if count is None else max(1, min(node_cpus, cluster_cpus // count))
    if count is None:
        count = max(1, cluster_cpus // threads)
    return Workers(count=count, threads=threads)


def cluster_cpus() -> tuple[int, int]:
    """(CPUs in the cluster, CPUs of its biggest node), of the connected Ray."""
    ray = require_ray()
    nodes = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")]
    return int(sum(nodes)), int(max(nodes, default=0))
