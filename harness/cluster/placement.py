"""Which node each replica runs on: by default one per node (a node sparseperf started takes as
many as its replica slots); ``--replicas R`` spreads R over the nodes in turn."""

from __future__ import annotations

from typing import Any

from harness.errors import UserError

SLOTS_RESOURCE = "sparseperf_slots"

Node = dict[str, Any]  # as ray.nodes() lists it


def place(nodes: list[Node], replicas: int | None) -> list[Node]:
    """The node of each replica, in order. Nodes without CPUs (a head kept free of work) take
    none."""
    usable = [node for node in nodes if node.get("Resources", {}).get("CPU", 0) > 0]
    if not usable:
        raise UserError("the Ray cluster has no live node with CPUs to run replicas on")
    if replicas is None:
        return [
            node for node in usable for _ in range(int(node["Resources"].get(SLOTS_RESOURCE, 1)))
        ]
    return [usable[i % len(usable)] for i in range(replicas)]
