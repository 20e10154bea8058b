"""A local Ray cluster on 127.0.0.1: one Ray node (``ray start --head --block``) whose
replicas are actor processes on this machine.

Every Ray process binds to and talks over 127.0.0.1: Ray resolves "127.0.0.1" to the machine's
outward address unless told that the cluster stays on this machine
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), which also rules out further nodes joining it. The
cluster authenticates with a token of its own, kept in its folder. A cluster started for one
run dies with the command that started it; one started by ``sparseperf cluster start``
lives on until ``sparseperf cluster stop``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.cache import cache_dir
from harness.cluster import Connection, local_size, split_address
from harness.cluster.placement import SLOTS_RESOURCE
from harness.cluster.processes import alive, command_line, end_tree
from harness.errors import UserError
from harness.interrupts import parent_death_signal

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 120.0  # a busy 2-core machine needs about 5-10 s
STOP_GRACE_S = 15.0
ANSWER_TIMEOUT_S = 3.0
OBJECT_STORE_BYTES = 200_000_000  # requests and responses only: replicas load their own samples
STATE_FILE = "cluster.json"


@dataclass(frozen=True)
class LocalCluster:
    address: str  # 127.0.0.1:PORT of the cluster's GCS
    pid: int  # the `ray start --block` process; everything else of the cluster is below it
    folder: str  # Ray's temp folder: session logs, sockets, the token
    slots: int

    @property
    def env(self) -> dict[str, str]:
        """What every Ray process of this cluster, drivers included, runs with."""
        return cluster_env(Path(self.folder))

    def connection(self) -> Connection:
        return Connection(self.address, self.env, local=True)


def cluster_env(folder: Path) -> dict[str, str]:
    return {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # "127.0.0.1" means loopback, not eth0
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(folder / "auth_token"),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # nothing to drain: stop at once
    }


def _die_with_parent() -> None:
    """In the `ray start` child: SIGTERM when the command that started it dies (it then stops
    what it started)."""
    parent_death_signal(signal.SIGTERM)


def start(slots: int, detach: bool = False) -> LocalCluster:
    """Start a one-node cluster with ``slots`` replica slots; with ``detach`` it outlives this
    command (its own session), else it dies with it."""
    folder = Path(tempfile.mkdtemp(prefix="sparseperf-ray-"))  # short: Ray puts sockets there
    token = folder / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    command = [
        sys.executable, "-c", "from ray.scripts.scripts import main; main()",
        "start", "--head", "--block", f"--node-ip-address={LOOPBACK}", "--port=0",
        "--include-dashboard=false", f"--dashboard-host={LOOPBACK}",
        "--include-log-monitor=false", "--disable-usage-stats", f"--temp-dir={folder}",
        f"--object-store-memory={OBJECT_STORE_BYTES}",
        f"--resources={json.dumps({SLOTS_RESOURCE: slots})}",
    ]  # fmt: skip
    log = (folder / "ray-start.log").open("wb")
    process = subprocess.Popen(
        command,
        env={**os.environ, **cluster_env(folder)},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=detach,
        preexec_fn=None if detach else _die_with_parent,
        cwd=folder,
    )
    log.close()
    ready = folder / "ray_current_cluster"  # written by `ray start` once the node is up
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready.is_file() or not ready.read_text().strip():
        if process.poll() is not None or time.monotonic() > deadline:
            reason = _log_tail(folder)
            end_tree(process.pid, STOP_GRACE_S)
            process.wait()
            shutil.rmtree(folder, ignore_errors=True)
            raise UserError(f"the local Ray cluster did not start: {reason}")
        time.sleep(0.1)
    return LocalCluster(ready.read_text().strip(), process.pid, str(folder), slots)


def _log_tail(folder: Path) -> str:
    try:
        lines = (folder / "ray-start.log").read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return lines[-1].strip() if lines else f"no output (timed out after {START_TIMEOUT_S:g} s)"


def stop(cluster: LocalCluster) -> None:
    """Stop every process of the cluster (by the ids below its `ray start`) and remove its
    folder. A pid that no longer runs this cluster's `ray start` is left alone."""
    if alive(cluster.pid) and cluster.folder in command_line(cluster.pid):
        end_tree(cluster.pid, STOP_GRACE_S)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(cluster.pid, 0)  # reaps it when this process started it
    shutil.rmtree(cluster.folder, ignore_errors=True)


def running(cluster: LocalCluster) -> bool:
    return alive(cluster.pid) and cluster.folder in command_line(cluster.pid)


# The cluster `sparseperf cluster start` left running, for later commands.


def state_path() -> Path:
    return cache_dir("cluster") / STATE_FILE


def saved() -> LocalCluster | None:
    """The cluster `cluster start` recorded, if its processes still run (else the record is
    dropped)."""
    path = state_path()
    try:
        cluster = LocalCluster(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if not running(cluster):
        path.unlink(missing_ok=True)
        return None
    return cluster


def save(cluster: LocalCluster) -> None:
    partial = state_path().with_suffix(f".partial-{os.getpid()}")
    partial.write_text(json.dumps(asdict(cluster)) + "\n")
    os.replace(partial, state_path())


def forget() -> None:
    state_path().unlink(missing_ok=True)


def connect_to(address: str) -> Connection:
    """How to reach ``address``: the saved local cluster's settings if it is that one; any
    other address must answer (a clear error within seconds, not Ray's long retries)."""
    host, port = split_address(address)
    cluster = saved()
    if cluster is not None and cluster.address == f"{host}:{port}":
        return cluster.connection()
    try:
        socket.create_connection((host, port), timeout=ANSWER_TIMEOUT_S).close()
    except OSError as exc:
        raise UserError(
            f"the Ray cluster at {address} does not answer ({exc.strerror or exc}); start it "
            "with `ray start --head` there, or use --cluster local:N"
        ) from None
    return Connection(f"{host}:{port}", {"RAY_USAGE_STATS_ENABLED": "0"})


@contextmanager
def cluster_for_run(cluster: str | None, say: Callable[[str], None]) -> Iterator[Connection | None]:
    """The run's cluster: none, a local one started for it (and stopped after it, whatever
    happens), or the address given, checked to answer."""
    if cluster is None:
        yield None
        return
    slots = local_size(cluster)
    if slots is None:
        yield connect_to(cluster)
        return
    say(f"starting a local Ray cluster on {LOOPBACK} ({slots} replica slot(s))")
    started = start(slots)
    try:
        yield started.connection()
    finally:
        stop(started)
        say("local Ray cluster stopped")
