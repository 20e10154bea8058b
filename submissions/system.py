"""The system description (``systems/<sut>.json``): detected where possible, the rest from the
user's file; every field the MLPerf checker requires, none empty that it needs filled."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from harness import provenance
from harness.errors import UserError
from harness.files import read_json_object
from harness.machine import machine

REQUIRED_FIELDS = (
    "division",
    "submitter",
    "status",
    "system_name",
    "number_of_nodes",
    "host_processor_model_name",
    "host_processors_per_node",
    "host_processor_core_count",
    "host_memory_capacity",
    "host_storage_capacity",
    "host_storage_type",
    "accelerators_per_node",
    "accelerator_model_name",
    "accelerator_memory_capacity",
    "framework",
    "operating_system",
    "system_type",
    "other_software_stack",
    "host_processor_frequency",
    "host_processor_caches",
    "host_memory_configuration",
    "host_processor_interconnect",
    "host_networking",
    "host_networking_topology",
    "accelerator_frequency",
    "accelerator_host_interconnect",
    "accelerator_interconnect",
    "accelerator_interconnect_topology",
    "accelerator_memory_configuration",
    "accelerator_on-chip_memories",
    "cooling",
    "hw_notes",
    "sw_notes",
    "host_network_card_count",
    "system_type_detail",
)
# The network division's further fields (is_network "true" and how LoadGen reaches the SUT).
NETWORK_FIELDS = (
    "is_network",
    "network_type",
    "network_media",
    "network_rate",
    "nic_loadgen",
    "number_nic_loadgen",
    "net_software_stack_loadgen",
    "network_protocol",
    "number_connections",
    "nic_sut",
    "number_nic_sut",
    "net_software_stack_sut",
    "network_topology",
)
# Fields the checker requires to be non-empty.
MEANINGFUL_FIELDS = frozenset(
    {
        "division",
        "submitter",
        "system_type",
        "status",
        "system_name",
        "number_of_nodes",
        "host_processor_model_name",
        "host_processors_per_node",
        "host_processor_core_count",
        "host_memory_capacity",
        "host_memory_configuration",
        "host_storage_capacity",
        "host_storage_type",
        "host_networking",
        "host_network_card_count",
        "host_networking_topology",
        "accelerators_per_node",
        "accelerator_model_name",
        "accelerator_memory_capacity",
        "accelerator_host_interconnect",
        "accelerator_memory_configuration",
        "accelerator_interconnect",
        "cooling",
        "framework",
        "operating_system",
        "other_software_stack",
    }
)
STATUSES = ("available", "preview", "rdi")
# Under v6.1 ResNet-50 and BERT are edge benchmarks; a datacenter-only system cannot carry them.
SYSTEM_TYPES = ("edge", "datacenter,edge", "edge,datacenter")
SINGLE_NODE = "N/A (single node)"
NO_ACCELERATOR = "N/A (CPU only)"
ONE_SIMULATED = "N/A (one simulated device)"


def _network_cards() -> int:
    """Network interfaces backed by a device (not loopback, bridges or other virtual ones)."""
    return sum(1 for path in Path("/sys/class/net").glob("*") if (path / "device").exists())


def _accelerator(backend: dict[str, str], simulated: bool) -> dict[str, str]:
    """The accelerator fields: none for a CPU-only system; for a simulated one, the modelled
    device as its profile describes it, each field saying that it is simulated."""
    if not simulated:
        return {
            "accelerators_per_node": "0",
            "accelerator_model_name": NO_ACCELERATOR,
            "accelerator_memory_capacity": "0",
            "accelerator_frequency": "",
            "accelerator_host_interconnect": NO_ACCELERATOR,
            "accelerator_interconnect": NO_ACCELERATOR,
            "accelerator_interconnect_topology": "",
            "accelerator_memory_configuration": NO_ACCELERATOR,
            "accelerator_on-chip_memories": "",
        }

    def modelled(key: str, text: str = "{}") -> str:
        value = backend.get(key)
        return f"{text.format(value)} (simulated)" if value else ""

    return {
        "accelerators_per_node": "1",
        "accelerator_model_name": modelled("device_model"),
        "accelerator_memory_capacity": "N/A (simulated: the device model has no memory size)",
        "accelerator_frequency": modelled("device_clock"),
        "accelerator_host_interconnect": modelled("device_host_link", "{} host link"),
        "accelerator_interconnect": ONE_SIMULATED,
        "accelerator_interconnect_topology": ONE_SIMULATED,
        "accelerator_memory_configuration": modelled("device_memory_bandwidth", "{} bandwidth"),
        "accelerator_on-chip_memories": modelled("device_on_chip_memory"),
    }


def detect(backend: dict[str, str], simulated: bool = False) -> dict[str, str]:
    """What this machine and the backend's description tell about the system."""
    found = machine()
    versions = provenance.versions()
    software = ", ".join(
        f"{name} {versions[name]}"
        for name in ("sparseperf", "mlcommons-loadgen", "numpy", "python")
        if name in versions
    )
    return {
        "number_of_nodes": "1",
        "host_processor_model_name": found.cpu_model,
        "host_processors_per_node": str(found.sockets),
        "host_processor_core_count": str(found.cores_per_socket),
        "host_processor_frequency": f"{found.max_mhz:.0f} MHz" if found.max_mhz else "",
        "host_processor_caches": found.caches,
        "host_processor_interconnect": "N/A (single socket)" if found.sockets == 1 else "",
        "host_memory_capacity": f"{found.memory_gib:.0f} GB",
        "host_storage_capacity": f"{shutil.disk_usage(os.getcwd()).total / 1e9:.0f} GB",
        "host_networking": SINGLE_NODE,
        "host_networking_topology": SINGLE_NODE,
        "host_network_card_count": str(_network_cards()),
        **_accelerator(backend, simulated),
        "framework": backend.get("framework", ""),
        "operating_system": found.operating_system,
        "other_software_stack": software,
        "hw_notes": "",
        "sw_notes": f"{backend.get('precision', '')}; weights: {backend.get('sparsity', '')}",
        "system_type": "edge",
        "system_type_detail": "",
        "status": "available",
    }


def network(cluster: dict | None) -> dict[str, str]:
    """The network fields of a cluster run (its run.json record): detected for a local cluster
    on loopback; for another, what the dispatcher's side shows (the rest comes from the user)."""
    ray = f"Ray {cluster['ray_version']} (gRPC over TCP/IP)" if cluster else ""
    fields = {
        "is_network": "true",
        "network_protocol": "gRPC over TCP/IP (Ray actor calls)",
        "number_connections": str(len(cluster["replicas"])) if cluster else "",
        "net_software_stack_loadgen": ray,
        "net_software_stack_sut": ray,
    }
    if cluster and cluster["local"]:
        loopback = "lo (loopback)"
        fields.update(
            network_type="loopback: LoadGen and the replicas on one machine (127.0.0.1)",
            network_media="none (the kernel's loopback interface)",
            network_rate="N/A (loopback)",
            nic_loadgen=loopback,
            number_nic_loadgen="1",
            nic_sut=loopback,
            number_nic_sut="1",
            network_topology=f"one machine: the LoadGen process and {len(cluster['replicas'])} "
            "replica processes over loopback",
        )
    return fields


def read_user_file(path: Path) -> dict[str, str]:
    """The user's system fields: a JSON object whose keys are checker field names."""
    values = read_json_object(path, "system file")
    unknown = sorted(set(values) - set(REQUIRED_FIELDS) - set(NETWORK_FIELDS))
    if unknown:
        raise UserError(f"system file {path}: unknown field(s) {', '.join(unknown)} (misspelt?)")
    bad = sorted(key for key, value in values.items() if not isinstance(value, (str, int, float)))
    if bad:
        raise UserError(f"system file {path}: field(s) {', '.join(bad)} must be text or numbers")
    return {key: str(value) for key, value in values.items()}


def describe_system(
    *,
    division: str,
    submitter: str,
    system_name: str,
    backend: dict[str, str],
    user: dict[str, str],
    simulated: bool,
    cluster: dict | None = None,
) -> dict[str, str]:
    """The complete system description, checked: detected values, then the user's. The
    network division's has the network fields too (``cluster``: a cluster run's record)."""
    system = detect(backend, simulated)
    fields = REQUIRED_FIELDS
    if division == "network":
        fields += NETWORK_FIELDS
        system.update(network(cluster))
        if cluster:
            system["number_of_nodes"] = str(cluster["nodes"])
    system.update(user)
    system.update(division=division, submitter=submitter, system_name=system_name)
    if simulated:
        note = (
            f"simulated accelerator ({backend.get('device_model') or 'a modelled device'}): "
            "results are modelled by sparseperf's timing model, not measured on hardware"
        )
        system["system_name"] += " (simulated)"
        system["hw_notes"] = "; ".join(filter(None, (note, system["hw_notes"])))
    meaningful = MEANINGFUL_FIELDS | (set(NETWORK_FIELDS) if division == "network" else set())
    missing = [key for key in fields if key in meaningful and not system.get(key)]
    if missing:
        raise UserError(
            f"the system description lacks {', '.join(missing)}: give them in a JSON file with "
            "--system-file (they cannot be detected)"
        )
    if system["status"] not in STATUSES:
        raise UserError(f"system status {system['status']!r} must be one of {', '.join(STATUSES)}")
    if system["system_type"] not in SYSTEM_TYPES:
        raise UserError(
            f"system type {system['system_type']!r} cannot carry ResNet-50 or BERT under "
            f"MLPerf v6.1; use one of {', '.join(SYSTEM_TYPES)}"
        )
    if division == "network" and system["is_network"] != "true":
        raise UserError('a network division system has is_network "true"')
    return {key: system[key] for key in fields}
