"""Runs through a local Ray cluster on 127.0.0.1: every scenario's smoke run on two replicas,
what run.json records, the faults (a killed replica, one that raises, an address that does not
answer), bad input, and the cluster's processes gone after every run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from harness.cluster import local
from harness.cluster.processes import command_line, descendants
from harness.errors import UserError
from submissions.build import BuildRequest, build
from submissions.check import check_tree
from submissions.rules import division_problem
from submissions.system import NETWORK_FIELDS, describe_system
from tests.conftest import run_cli
from tests.official import ENV
from tests.test_bad_input import assert_one_line_error, no_complete_run
from tests.test_submissions import (
    SHORTFALLS,
    SYSTEM_FIELDS,
    VETTED,
    copy_run,
    official_checker_errors,
)

pytest.importorskip("ray", reason="the cluster tests need Ray: pip install -e '.[test]'")

INSTANT = "tests.fakes:InstantBackend"


@pytest.fixture(scope="module")
def cluster(session_cache):
    """A local cluster for the module, by ``sparseperf cluster start`` (2 replica slots)."""
    from harness.cli import main

    main(["cluster", "start", "--slots", "2"])
    started = local.saved()
    assert started is not None
    yield started
    main(["cluster", "stop"])
    assert not local.running(started) and not Path(started.folder).exists()


def ray_processes() -> set[int]:
    """Processes of any local sparseperf cluster on this machine."""
    return {
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and "sparseperf-ray-" in command_line(int(p.name))
    }


def replica_pids(cluster: local.LocalCluster) -> list[int]:
    return [pid for pid in descendants(cluster.pid) if command_line(pid).startswith("ray::Replica")]


def cluster_run(tmp_path: Path, dataset: Path, capfd, *extra: str) -> tuple[int, str, Path]:
    runs = tmp_path / "runs"
    code, out, err = run_cli(
        ["run", "--preset", "smoke", "--dataset-path", str(dataset), "--runs-dir", str(runs),
         *extra],
        capfd,
    )  # fmt: skip
    return code, out + err, runs


def listening_addresses(pids: set[int]) -> set[str]:
    """Local addresses (hex, as /proc/net shows them) of the TCP sockets these processes
    listen on."""
    inodes = set()
    for pid in pids:
        try:
            links = [os.readlink(f) for f in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        inodes |= {link[8:-1] for link in links if link.startswith("socket:[")}
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                found.add(fields[1].split(":")[0])
    return found


LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1, as v4 and v4-in-v6


@pytest.mark.parametrize("scenario", ["Offline", "Server"])
def test_a_smoke_run_on_two_replicas(scenario, cluster, small_dataset, tmp_path, capfd):
    listening: list[set[str]] = []

    def look() -> None:  # while the run's replicas are up
        deadline = time.monotonic() + 120
        while len(replica_pids(cluster)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        listening.append(listening_addresses(descendants(cluster.pid) | {cluster.pid}))

    watcher = threading.Thread(target=look)
    watcher.start()
    code, output, runs = cluster_run(
        tmp_path, small_dataset, capfd, "--scenario", scenario, "--backend", INSTANT,
        "--cluster", cluster.address,
    )  # fmt: skip
    watcher.join()
    assert code == 0, output
    assert "VALID" in output and "2 of 2 replica(s) served it on 1 node(s)" in output
    (folder,) = runs.iterdir()
    record = json.loads((folder / "run.json").read_text())["cluster"]
    result = json.loads((folder / "result.json").read_text())
    assert record == result["cluster"] and record["address"] == cluster.address
    assert record["nodes"] == 1 and record["replicas_per_node"] == {"127.0.0.1": 2}
    assert "Network SUT" in record["sut_name"]
    served = [replica["samples"] for replica in record["replicas"]]
    assert all(served) and all(r["busy_s"] > 0 and r["died"] is None for r in record["replicas"])
    detail = (folder / "mlperf_log_detail.txt").read_text()
    assert f'"value": "{record["sut_name"]}"' in detail
    if scenario == "Server":  # every query LoadGen issued came back from one replica
        assert sum(served) == result["query_count"]
        assert result["server_timeline"]["samples"] == sum(served)
    # Every Ray process listens on 127.0.0.1 only, replicas and all.
    assert listening and listening[0] and listening[0] <= LOOPBACK, listening


def long_conf(tmp_path: Path, duration_ms: int) -> Path:
    conf = tmp_path / "long.conf"
    conf.write_text(f"*.*.min_duration = {duration_ms}\n")
    return conf


def kill_a_replica_when_running(cluster: local.LocalCluster, after_s: float) -> threading.Thread:
    def kill() -> None:
        deadline = time.monotonic() + 120
        while not replica_pids(cluster) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(after_s)  # past the replicas' set-up and warm-up, into the LoadGen test
        os.kill(replica_pids(cluster)[0], signal.SIGKILL)

    thread = threading.Thread(target=kill)
    thread.start()
    return thread


def test_a_killed_replicas_queries_go_to_the_other(cluster, small_dataset, tmp_path, capfd):
    killer = kill_a_replica_when_running(cluster, after_s=5.0)
    code, output, runs = cluster_run(
        tmp_path, small_dataset, capfd, "--backend", "tests.fakes:FixedTimeBackend",
        "-o", "service_ms=10", "--cluster", cluster.address,
        "--user-conf", str(long_conf(tmp_path, 10000)),
    )  # fmt: skip
    killer.join()
    assert code == 0, output
    assert "VALID" in output and "1 died" in output  # LoadGen had every response
    (folder,) = runs.iterdir()
    record = json.loads((folder / "result.json").read_text())["cluster"]
    assert [r["died"] is not None for r in record["replicas"]].count(True) == 1


def test_the_last_replica_killed_fails_the_run_at_once(cluster, small_dataset, tmp_path, capfd):
    killer = kill_a_replica_when_running(cluster, after_s=5.0)
    started = time.monotonic()
    code, output, runs = cluster_run(
        tmp_path, small_dataset, capfd, "--backend", "tests.fakes:FixedTimeBackend",
        "-o", "service_ms=10", "--cluster", cluster.address, "--replicas", "1",
        "--user-conf", str(long_conf(tmp_path, 600000)),
    )  # fmt: skip
    killer.join()
    line = assert_one_line_error(code, output, "replica 1 (node 127.0.0.1) died")
    assert "no live replica is left" in line
    assert time.monotonic() - started < 120  # not the 10 minutes the run was to last
    no_complete_run(runs)


def test_a_replica_that_raises_fails_the_run(cluster, small_dataset, tmp_path, capfd):
    code, output, runs = cluster_run(
        tmp_path, small_dataset, capfd, "--backend", "tests.fakes:FailingBackend",
        "--cluster", cluster.address,
    )  # fmt: skip
    assert_one_line_error(
        code, output, "backend FailingBackend failed on replica", "RuntimeError: device lost"
    )
    no_complete_run(runs)


def test_cluster_status_and_a_second_start(cluster, capfd):
    code, out, _ = run_cli(["cluster", "status"], capfd)
    assert code == 0 and f"local Ray cluster at {cluster.address}: 2 replica slot(s)" in out
    code, _, err = run_cli(["cluster", "start"], capfd)
    assert_one_line_error(code, err, f"already running at {cluster.address}")
    assert local.saved() == cluster


def test_compare_and_tune_check_the_cluster_flags_too(tmp_path, capfd):
    out = str(tmp_path / "out")
    code, _, err = run_cli(["compare", "--cluster", "local:x", "--out", out], capfd)
    assert_one_line_error(code, err, "local:N needs a whole number N")
    code, _, err = run_cli(["tune", "--replicas", "0", "--cluster", "local:1"], capfd)
    assert_one_line_error(code, err, "replicas must be at least 1")


def test_an_address_that_does_not_answer_fails_within_seconds(small_dataset, tmp_path, capfd):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    code, output, runs = cluster_run(
        tmp_path, small_dataset, capfd, "--backend", INSTANT, "--cluster", f"127.0.0.1:{port}"
    )
    assert_one_line_error(code, output, f"127.0.0.1:{port} does not answer")
    assert time.monotonic() - started < 30
    assert not runs.exists()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--cluster", "local:0"], "local:N needs a whole number N of at least 1"),
        (["--cluster", "somewhere"], "neither local:N nor a Ray address HOST:PORT"),
        (["--cluster", "local:2", "--replicas", "0"], "replicas must be at least 1"),
        (["--replicas", "2"], "--replicas needs --cluster"),
    ],
)
def test_bad_cluster_flags(extra, needle, small_dataset, tmp_path, capfd):
    before = ray_processes()
    code, output, runs = cluster_run(tmp_path, small_dataset, capfd, "--backend", INSTANT, *extra)
    assert_one_line_error(code, output, needle)
    assert not runs.exists() and ray_processes() <= before


def test_without_ray_the_cluster_flag_says_how_to_get_it(small_dataset, tmp_path, capfd,
                                                        monkeypatch):  # fmt: skip
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    code, output, runs = cluster_run(
        tmp_path, small_dataset, capfd, "--backend", INSTANT, "--cluster", "local:1"
    )
    assert_one_line_error(code, output, 'pip install "sparseperf[cluster]"')
    assert not runs.exists()


@pytest.mark.parametrize(("backend", "code"), [(INSTANT, 0), ("tests.fakes:FailingBackend", 2)])
def test_a_cluster_started_for_a_run_is_stopped_after_it(
    backend, code, small_dataset, tmp_path, capfd
):
    before = ray_processes()
    folders = set(Path(tempfile.gettempdir()).glob("sparseperf-ray-*"))
    got, output, _ = cluster_run(
        tmp_path, small_dataset, capfd, "--backend", backend, "--cluster", "local:2"
    )
    assert got == code, output
    assert "local Ray cluster stopped" in output
    assert ray_processes() <= before  # nothing of it is left running
    assert set(Path(tempfile.gettempdir()).glob("sparseperf-ray-*")) <= folders


# --- the network division ---------------------------------------------------------------


def test_a_network_system_description_from_a_local_cluster_run():
    record = {"local": True, "ray_version": "2.60.0", "nodes": 1, "replicas": [{}, {}]}
    system = describe_system(division="network", submitter="Org", system_name="ray-2r",
                             backend={"framework": "tests"}, user=SYSTEM_FIELDS,
                             simulated=False, cluster=record)  # fmt: skip
    assert system["is_network"] == "true" and system["number_connections"] == "2"
    assert all(system[key] for key in NETWORK_FIELDS)
    assert "network_type" not in describe_system(
        division="open", submitter="Org", system_name="one", backend={"framework": "tests"},
        user=SYSTEM_FIELDS, simulated=False,
    )  # fmt: skip
    remote = dict(record, local=False)
    with pytest.raises(UserError, match="lacks network_type, network_media"):
        describe_system(division="network", submitter="Org", system_name="ray-2r",
                        backend={"framework": "tests"}, user=SYSTEM_FIELDS, simulated=False,
                        cluster=remote)  # fmt: skip
    assert division_problem("network", cluster_run=False)
    assert division_problem("closed", cluster_run=True)
    assert division_problem("open", cluster_run=True) is None


@pytest.fixture(scope="module")
def network_tree(cluster, small_dataset, tmp_path_factory) -> tuple[Path, Path]:
    """A network-division ResNet-50 smoke rehearsal through the cluster: (tree, runs)."""
    from harness.cli import main

    work = tmp_path_factory.mktemp("network")
    system = work / "system.json"
    system.write_text(json.dumps(SYSTEM_FIELDS))
    # A MultiStream query's round trip through the cluster takes a few ms: enough queries for
    # early stopping, which 2 smoke seconds alone may not give.
    conf = work / "user.conf"
    conf.write_text("*.MultiStream.min_query_count = 662\n")
    main(["submission", "run", "--user-conf", str(conf), "--model", "resnet50",
          "--backend", VETTED, "--preset", "smoke",
          "--dataset-path", str(small_dataset), "--runs-dir", str(work / "runs"),
          "--cluster", cluster.address, "--submitter", "Org", "--system", "ray-2r",
          "--division", "network", "--system-file", str(system),
          "--out", str(work / "tree")])  # fmt: skip
    return work / "tree", work / "runs"


@pytest.mark.heavy  # twelve runs through the cluster: a few minutes
def test_network_tree_passes_the_check_but_for_smoke_shortfalls(network_tree, capfd):
    tree, _ = network_tree
    root = tree / "network" / "Org"
    system = json.loads((root / "systems" / "ray-2r.json").read_text())
    assert system["is_network"] == "true" and system["number_of_nodes"] == "1"
    assert all(system[key] for key in NETWORK_FIELDS)
    assert system["number_connections"] == "2" and "loopback" in system["network_type"]
    scenarios = sorted(p.name for p in (root / "results" / "ray-2r" / "resnet50").iterdir())
    assert scenarios == ["MultiStream", "Offline", "SingleStream"]
    code, out, err = run_cli(["submission", "check", str(tree)], capfd)
    problems = out.strip().splitlines()
    assert code == 2 and "problem(s) in 3 result folder(s)" in err
    assert [p for p in problems if not SHORTFALLS.search(p)] == []


@pytest.mark.heavy  # twelve runs through the cluster: a few minutes
def test_check_wants_the_network_sut_and_its_fields(network_tree, tmp_path):
    tree = shutil.copytree(network_tree[0], tmp_path / "tree")
    system = tree / "network" / "Org" / "systems" / "ray-2r.json"
    body = json.loads(system.read_text())
    del body["nic_sut"]
    system.write_text(json.dumps(body))
    offline = tree / "network" / "Org" / "results" / "ray-2r" / "resnet50" / "Offline"
    detail = offline / "performance" / "run_1" / "mlperf_log_detail.txt"
    detail.write_text(detail.read_text().replace("Network SUT", "SUT"))
    problems, _ = check_tree(tree)
    assert any(p.startswith(f"{system}: field nic_sut is missing") for p in problems)
    assert any(p.startswith(str(detail)) and "lacks 'Network SUT'" in p for p in problems)


@pytest.mark.heavy  # twelve runs through the cluster: a few minutes
def test_cluster_runs_go_to_the_network_division_and_only_they(network_tree, small_dataset,
                                                              tmp_path):  # fmt: skip
    runs = sorted(p for p in network_tree[1].iterdir() if p.is_dir())
    system = tmp_path / "system.json"
    system.write_text(json.dumps(SYSTEM_FIELDS))
    closed = BuildRequest("Org", "ray-2r", "closed", tmp_path / "closed", tuple(runs), system)
    with pytest.raises(UserError, match="goes to the network division, not closed"):
        build(closed)
    one_process = copy_run(runs[0], tmp_path / "one", edit_run=lambda run: run.pop("cluster"))
    network = BuildRequest("Org", "ray-2r", "network", tmp_path / "net", (one_process,), system)
    with pytest.raises(UserError, match="takes runs through the cluster dispatcher"):
        build(network)


@pytest.mark.heavy
@pytest.mark.skipif(
    not (os.environ.get("SPARSEPERF_OFFICIAL_CHECKER") or os.environ.get(ENV)),
    reason=f"set SPARSEPERF_OFFICIAL_CHECKER to a copy of inference/tools/submission, or {ENV}",
)
def test_official_checker_takes_the_network_tree_but_for_smoke_shortfalls(network_tree):
    assert official_checker_errors(network_tree[0]) == []
