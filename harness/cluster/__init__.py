"""Scale-out on Ray: what a run needs to know of a cluster before Ray is imported.

``--cluster local:N`` starts a one-node Ray cluster on 127.0.0.1 for the run (``local``);
``--cluster HOST:PORT`` attaches to a running one. Ray itself is imported only by the run
process of a cluster run (``engine``, ``replica``), never by other runs.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

from harness.errors import UserError

LOCAL_PREFIX = "local:"
RAY_HINT = 'pip install "sparseperf[cluster]"'


@dataclass(frozen=True)
class Connection:
    """How the run process reaches a cluster: its GCS address and the environment a Ray driver
    there needs (a local cluster's loopback and token settings; nothing for others)."""

    address: str
    env: dict[str, str] = field(default_factory=dict)
    local: bool = False  # started for this run or by `sparseperf cluster start`


class ReplicaFailed(RuntimeError):
    """A replica's failure as the run's one line, naming the replica."""


def local_size(cluster: str) -> int | None:
    """N of ``local:N`` (None for an address)."""
    if not cluster.startswith(LOCAL_PREFIX):
        return None
    text = cluster[len(LOCAL_PREFIX) :]
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"--cluster {cluster}: local:N needs a whole number N of at least 1")
    return int(text)


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of HOST:PORT."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(
            f"--cluster {address!r} is neither local:N nor a Ray address HOST:PORT "
            "(e.g. 10.0.0.5:6379, as `ray start --head` prints it)"
        )
    return host.strip("[]"), int(port)


def require_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        raise UserError(f"--cluster needs Ray, which is not installed: {RAY_HINT}")


def check_cluster(cluster: str | None, replicas: int | None) -> None:
    """The --cluster and --replicas values, and Ray installed if they are used."""
    if cluster is None:
        if replicas is not None:
            raise UserError("--replicas needs --cluster (local:N or a Ray address)")
        return
    if local_size(cluster) is None:
        split_address(cluster)
    if replicas is not None and replicas < 1:
        raise UserError(f"replicas must be at least 1, got {replicas}")
    require_ray()
