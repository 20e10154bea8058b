"""The built-in devices' submitted configurations, read from their MLPerf submissions.

Paths are inside github.com/mlcommons/inference_results_v<round>. NVIDIA's closed-division
configurations (configs/<benchmark>/<scenario>/__init__.py) state the batch sizes, the Server
batching timeout (deque_timeout_usec) and the precision; its BERT harness runs variable
sequence lengths (padding removed). Moffett's open-division submission states the precision and
that BERT sequences are packed, not the weight density: that, and its batch sizes, are assumed.
"""

from __future__ import annotations

from backends.simaccel.submitted import Fact, Submission

V30 = "inference_results_v3.0/closed/NVIDIA"
V41 = "inference_results_v4.1/closed/NVIDIA"
CLOSED = "published: closed division, the reference model's dense weights"
OVERLAP = "assumed: 2 batches in flight, so a transfer overlaps compute (gpu_copy_streams >= 2)"
VARSEQ = f"published: variable sequence lengths, {V30}/code/bert/tensorrt/bert_var_seqlen.py"


def _nvidia(
    root: str, system: str, resnet_server: tuple[int, float], bert_server: int, server: str = ""
) -> dict[str, Submission]:
    """NVIDIA's configuration for one GPU; ``system`` is its class in the config files
    (``server``: the class whose Server figures are used, if another)."""
    server = server or system
    resnet = f"{root}/configs/resnet50"
    bert = f"{root}/configs/bert"
    batch, timeout_ms = resnet_server
    return {
        "resnet50": Submission(
            precision=Fact("int8", f"published: {resnet}/__init__.py"),
            density=Fact(1.0, CLOSED),
            offline_batch=Fact(2048, f"published: {resnet}/Offline/__init__.py, {system}"),
            server_batch=Fact(batch, f"published: {resnet}/Server/__init__.py, {server}"),
            server_timeout_ms=Fact(
                timeout_ms, f"published: deque_timeout_usec, {resnet}/Server/__init__.py"
            ),
            workers=Fact(2, OVERLAP),
        ),
        "bert": Submission(
            precision=Fact("int8", f"published: {bert}/__init__.py (bert-99)"),
            density=Fact(1.0, CLOSED),
            offline_batch=Fact(1280, f"published: {bert}/Offline/__init__.py, {system}"),
            server_batch=Fact(bert_server, f"published: {bert}/Server/__init__.py, {server}"),
            server_timeout_ms=Fact(0.0, "assumed: the BERT harness states no batching timeout"),
            workers=Fact(2, OVERLAP),
            tokens=Fact("real", VARSEQ),
        ),
    }


MOFFETT = "inference_results_v3.0/open/Moffett"
DENSITY = (
    "assumed: Moffett publishes no density; 1/32 is the most the Antoum chip exploits "
    "(inference_results_v2.1/open/Moffett/README.md: 'natively supports up to 32x weight "
    "sparsity models') and the sparsity behind its datasheet's sparse TOPS"
)
PACKED = (
    f"published: up to 3 sequences packed per row, {MOFFETT}/code/harness/common/utils.hpp "
    "(BertMaxSeqPerBatch)"
)


def _moffett(system: str) -> dict[str, Submission]:
    measured = f"{MOFFETT}/measurements/{system}"
    common = dict(
        density=Fact(1 / 32, DENSITY),
        pattern=Fact("unstructured", "assumed: the chip skips zeros anywhere"),
        server_timeout_ms=Fact(0.0, "assumed: no batching timeout is stated"),
        workers=Fact(2, "assumed: 2 batches in flight, so a transfer overlaps compute"),
    )
    return {
        "resnet50": Submission(
            precision=Fact("int8", f"published: {measured}/resnet50/Offline/*.json"),
            offline_batch=Fact(
                128, "assumed: the largest batch whose activations stay on the chip"
            ),
            server_batch=Fact(128, "assumed: as Offline"),
            **common,
        ),
        "bert": Submission(
            precision=Fact("int8", f"published: {measured}/bert-99.9/Offline/*.json"),
            offline_batch=Fact(64, "assumed"),
            server_batch=Fact(64, "assumed: as Offline"),
            tokens=Fact("real", PACKED),
            **common,
        ),
    }


SUBMITTED: dict[str, dict[str, Submission]] = {
    "a100-sxm": _nvidia(V30, "A100_SXM_80GBx1", (128, 4.0), 48, server="A100_SXM_80GBx8"),
    "h100-sxm": _nvidia(V30, "H100_SXM_80GBx1", (256, 2.0), 128),
    "h100-pcie": _nvidia(V30, "H100_PCIe_80GBx1", (128, 2.0), 256),
    "h200-sxm": _nvidia(V41, "H200_SXM_141GBx1", (256, 3.0), 128),
    "moffett-s30": _moffett("Moffett_S30_Inspur"),
    "moffett-s40": _moffett("Moffett_S40_Inspur"),
}
