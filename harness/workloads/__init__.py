"""Workloads: a model, its dataset, its response layout and accuracy rule."""

from __future__ import annotations

from harness.errors import UserError
from harness.workloads.base import Workload
from harness.workloads.bert import BERT_LARGE, BERT_TINY
from harness.workloads.resnet50 import RESNET50

WORKLOADS: dict[str, Workload] = {w.name: w for w in (RESNET50, BERT_LARGE, BERT_TINY)}


def get_workload(name: str) -> Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(WORKLOADS)}") from None
