"""BERT for SQuAD question answering as an ONNX graph with the official MLPerf interface.

The built model is a drop-in replacement for the official MLPerf BERT-Large ``model.onnx``: same
input and output names, types and shapes, same encoder architecture and compute. Its weights are
random but scaled so that it behaves like a usable QA model for benchmarking: the predicted answer
positions depend on the input, spread over the sequence, avoid the padding, and mostly survive int8
dynamic quantization. The graph is kept unfused (plain MatMul and Add): onnxruntime's dynamic
quantization runs faster on that form, and every weight MatMul takes its weight as a 2-D
initializer [in, out] in the second input, which is what the quantizer and sparse kernels look for.

Built with a pruning ``Recipe``, every weight MatMul is pruned as it is drawn (magnitude, in the
recipe's pattern, the layers it keeps dense aside) and its kept weights rescaled so that each
output keeps the spread it had dense: the pruned encoder is recalibrated, not just thinned. The
file carries the recipe and its kept counts (``harness.models.pruning``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from harness.datasets.synthetic_squad import END_WORD_IDS, START_WORD_IDS
from harness.models.pruning import LayerRecord, PruningRecord, prune_weight, record_props
from harness.models.recipe import Recipe

INPUT_IDS = "input_ids"
INPUT_MASK = "input_mask"
SEGMENT_IDS = "segment_ids"
START_LOGITS = "output_start_logits"
END_LOGITS = "output_end_logits"
SEQUENCE_LENGTH = 384
BATCH_DIM = "batch_size"
OPSET = 17  # the first opset with LayerNormalization
IR_VERSION = 8  # the IR that opset 17 shipped with; loads in every onnxruntime >= 1.18
GRAPH_FIELD = 7  # field number of ModelProto.graph in onnx.proto

PAD_ID = 0  # [PAD] in the BERT uncased vocabulary, the id the SQuAD features pad with
LAYER_NORM_EPSILON = 1e-12
MASK_PENALTY = -10000.0  # added to the attention scores of masked keys, as BERT does

# Every dense weight has std 1/sqrt(fan_in) times a gain, so a unit-variance input (as every
# LayerNorm output is) gives outputs of about gain in std, whatever the width.
# Relative sizes of the three embeddings (LayerNorm removes the overall scale): the token is the
# main signal, so that predictions follow the input rather than fixed favourite positions.
WORD_STD = 1.0
POSITION_STD = 0.5
TYPE_STD = 0.5
# Residual branches (attention output and feed-forward output) enter each sum at this gain. In a
# post-LayerNorm encoder each sum is renormalised, so a branch as large as the stream would wash
# out the token signal within a few of the 24 layers, and the rounding noise of int8 matmuls would
# build up with depth; at this gain the stream keeps its token information through all layers.
RESIDUAL_GAIN = 0.3
# Gain of the query and key projections: attention scores of std ~1, so attention mixes context
# smoothly instead of locking onto single tokens, which int8 rounding of the scores could flip.
ATTENTION_GAIN = 1.0
# Biases are drawn like BERT's initial weights. Larger ones add the same vector at every position,
# and such shared parts pile up over the layers, crowding out what tells the positions apart.
BIAS_STD = 0.02
QA_GAIN = 3.0  # start and end logits of std ~3 over the positions, a typical range for SQuAD
# The [PAD] embedding points against the QA head's read-out direction, so padding positions, which
# the mask hides only as keys (they are still scored), fall well below the real tokens. Its size
# relative to the word embeddings makes it dominate the padding positions' embedding sum.
PAD_GAIN = 2.0


@dataclass(frozen=True)
class BertConfig:
    name: str  # "bert-large" or "bert-tiny" (used in messages)
    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab_size: int = 30522
    max_positions: int = 512
    type_vocab_size: int = 2
    # The synthetic vocabulary's answer-start and answer-end words (synthetic_squad) point
    # along the start and end read-outs of the QA head with this norm against a word's, so the
    # span they enclose wins by a trained-like margin (a median of about 5 logits on the
    # built-in set). The signal grows with depth: two layers need a larger gain than 24.
    answer_gain: float = 0.3


BERT_LARGE = BertConfig("bert-large", 24, 1024, 16, 4096)
BERT_TINY = BertConfig("bert-tiny", 2, 128, 2, 512, answer_gain=0.5)


def parameter_count(config: BertConfig) -> int:
    """Number of float weights of ``config``: embeddings, encoder layers and the QA head."""
    hidden, inner = config.hidden, config.intermediate
    embeddings = (config.vocab_size + config.max_positions + config.type_vocab_size) * hidden
    embeddings += 2 * hidden  # LayerNorm
    attention = 4 * (hidden * hidden + hidden) + 2 * hidden
    feed_forward = hidden * inner + inner + inner * hidden + hidden + 2 * hidden
    return embeddings + config.layers * (attention + feed_forward) + 2 * hidden + 2


def build_bert(
    path: Path, config: BertConfig = BERT_LARGE, seed: int = 0, recipe: Recipe | None = None
) -> None:
    """Write the model to path, pruned by ``recipe`` if given; same arguments -> byte-identical
    file."""
    if config.hidden % config.heads:
        raise ValueError(f"{config.name}: hidden size {config.hidden} is not a multiple of heads")
    builder = _Builder(config, np.random.default_rng(seed), recipe)
    builder.network()
    record = None
    if recipe is not None:
        source = f"built-in synthetic {config.name} (seed {seed}), pruned when built and rescaled"
        record = PruningRecord(recipe.density, recipe.pattern, recipe.keep_dense, source,
                               tuple(builder.layers))  # fmt: skip
    builder.write(path, record)


class _Builder:
    """Collects the nodes, and each weight already serialised, then writes the file piece by piece.

    Serialising a whole ModelProto holds the proto plus two copies of its bytes (protobuf's buffer
    and the Python bytes), ~3x the model. Each weight is instead serialised as soon as it is drawn
    and written out in turn, so the builder peaks at ~1x the model plus the largest table.
    """

    def __init__(self, config: BertConfig, rng: np.random.Generator, recipe: Recipe | None) -> None:
        self.config = config
        self.rng = rng
        self.recipe = recipe
        self.layers: list[LayerRecord] = []  # each weight MatMul's kept count, in graph order
        self.graph = onnx.GraphProto(name=config.name.replace("-", "_"))
        self.weights: list[bytes] = []  # serialised GraphProto fields: one initializer each
        self.constants: set[str] = set()

    def network(self) -> None:
        config = self.config
        # The QA head is drawn first: the [PAD] embedding is defined against it.
        qa_weight = self.rng.standard_normal((config.hidden, 2), dtype=np.float32)
        qa_weight *= QA_GAIN / math.sqrt(config.hidden)
        qa_bias = self.rng.standard_normal(2, dtype=np.float32) * np.float32(BIAS_STD)
        hidden = self.embeddings(qa_weight)
        mask_bias = self.mask_bias()
        for layer in range(config.layers):
            hidden = self.encoder_layer(f"encoder.layer.{layer}", hidden, mask_bias)
        self.qa_head(hidden, qa_weight, qa_bias)
        self.interface()

    def embeddings(self, qa_weight: np.ndarray) -> str:
        config = self.config
        words = self.rng.standard_normal((config.vocab_size, config.hidden), dtype=np.float32)
        words *= np.float32(WORD_STD)
        word_norm = WORD_STD * math.sqrt(config.hidden)
        # Anti-aligned with both logits' read-out, with a norm of PAD_GAIN x a typical word's.
        read_out = qa_weight.sum(axis=1)
        words[PAD_ID] = read_out * np.float32(-PAD_GAIN * word_norm / np.linalg.norm(read_out))
        gain = np.float32(config.answer_gain * word_norm)
        for ids, column in ((START_WORD_IDS, 0), (END_WORD_IDS, 1)):
            if ids.stop <= config.vocab_size:
                direction = qa_weight[:, column] / np.linalg.norm(qa_weight[:, column])
                words[ids.start : ids.stop] += gain * direction
        word_table = self.initializer("embeddings.word_embeddings", words)
        del words
        position_table = self.random(
            "embeddings.position_embeddings", (config.max_positions, config.hidden), POSITION_STD
        )
        type_table = self.random(
            "embeddings.token_type_embeddings", (config.type_vocab_size, config.hidden), TYPE_STD
        )
        positions = self.constant(
            "embeddings.position_ids", np.arange(SEQUENCE_LENGTH, dtype=np.int64)[None, :]
        )
        words_out = self.node("Gather", [word_table, INPUT_IDS], "embeddings.word")
        positions_out = self.node("Gather", [position_table, positions], "embeddings.position")
        types_out = self.node("Gather", [type_table, SEGMENT_IDS], "embeddings.token_type")
        total = self.node("Add", [words_out, positions_out], "embeddings.add")
        total = self.node("Add", [total, types_out], "embeddings.add_type")
        return self.layer_norm("embeddings.LayerNorm", total)

    def mask_bias(self) -> str:
        """[N, 1, 1, S] additive attention mask: 0 for real tokens, MASK_PENALTY for padding."""
        mask = self.node("Cast", [INPUT_MASK], "mask.cast", to=TensorProto.FLOAT)
        inverted = self.node("Sub", [self.scalar("mask.one", 1.0), mask], "mask.invert")
        bias = self.node("Mul", [inverted, self.scalar("mask.penalty", MASK_PENALTY)], "mask.bias")
        axes = self.constant("mask.axes", np.array([1, 2], dtype=np.int64))
        return self.node("Unsqueeze", [bias, axes], "mask.unsqueeze")

    def encoder_layer(self, prefix: str, hidden: str, mask_bias: str) -> str:
        config = self.config
        attended = self.attention(f"{prefix}.attention.self", hidden, mask_bias)
        branch = self.dense(
            f"{prefix}.attention.output.dense",
            attended,
            config.hidden,
            config.hidden,
            RESIDUAL_GAIN,
        )
        total = self.node("Add", [hidden, branch], f"{prefix}.attention.output.add")
        hidden = self.layer_norm(f"{prefix}.attention.output.LayerNorm", total)
        inner = self.dense(
            f"{prefix}.intermediate.dense", hidden, config.hidden, config.intermediate
        )
        inner = self.gelu(f"{prefix}.intermediate.gelu", inner)
        branch = self.dense(
            f"{prefix}.output.dense", inner, config.intermediate, config.hidden, RESIDUAL_GAIN
        )
        total = self.node("Add", [hidden, branch], f"{prefix}.output.add")
        return self.layer_norm(f"{prefix}.output.LayerNorm", total)

    def attention(self, prefix: str, hidden: str, mask_bias: str) -> str:
        config = self.config
        head_dim = config.hidden // config.heads
        # Reshape [N, S, hidden] <-> [N, S, heads, head_dim]; 0 copies the batch and length dims.
        split = self.constant(
            "attention.split_shape", np.array([0, 0, config.heads, head_dim], dtype=np.int64)
        )
        merge = self.constant("attention.merge_shape", np.array([0, 0, -1], dtype=np.int64))
        heads = {}
        for role, gain, perm in (
            ("query", ATTENTION_GAIN, [0, 2, 1, 3]),  # [N, heads, S, head_dim]
            ("key", ATTENTION_GAIN, [0, 2, 3, 1]),  # [N, heads, head_dim, S]
            ("value", 1.0, [0, 2, 1, 3]),
        ):
            projected = self.dense(f"{prefix}.{role}", hidden, config.hidden, config.hidden, gain)
            shaped = self.node("Reshape", [projected, split], f"{prefix}.{role}.reshape")
            heads[role] = self.node("Transpose", [shaped], f"{prefix}.{role}.transpose", perm=perm)
        scores = self.node("MatMul", [heads["query"], heads["key"]], f"{prefix}.scores")
        scale = self.scalar("attention.scale", 1.0 / math.sqrt(head_dim))
        scores = self.node("Mul", [scores, scale], f"{prefix}.scores.scale")
        scores = self.node("Add", [scores, mask_bias], f"{prefix}.scores.mask")
        probabilities = self.node("Softmax", [scores], f"{prefix}.softmax", axis=-1)
        context = self.node("MatMul", [probabilities, heads["value"]], f"{prefix}.context")
        context = self.node(
            "Transpose", [context], f"{prefix}.context.transpose", perm=[0, 2, 1, 3]
        )
        return self.node("Reshape", [context, merge], f"{prefix}.context.reshape")

    def gelu(self, prefix: str, x: str) -> str:
        """x * 0.5 * (1 + erf(x / sqrt 2)), the exact GELU of BERT, in basic ops."""
        scaled = self.node("Div", [x, self.scalar("gelu.sqrt2", math.sqrt(2.0))], f"{prefix}.div")
        erf = self.node("Erf", [scaled], f"{prefix}.erf")
        shifted = self.node("Add", [erf, self.scalar("gelu.one", 1.0)], f"{prefix}.add")
        product = self.node("Mul", [x, shifted], f"{prefix}.mul")
        return self.node("Mul", [product, self.scalar("gelu.half", 0.5)], f"{prefix}.half_mul")

    def qa_head(self, hidden: str, weight: np.ndarray, bias: np.ndarray) -> None:
        weight_name = self.initializer("qa_outputs.weight", self.prune("qa_outputs", weight, True))
        bias_name = self.initializer("qa_outputs.bias", bias)
        logits = self.node("MatMul", [hidden, weight_name], "qa_outputs.matmul")
        logits = self.node("Add", [logits, bias_name], "qa_outputs.add")  # [N, S, 2]
        self.graph.node.append(
            helper.make_node(
                "Split",
                [logits],
                ["qa_outputs.start", "qa_outputs.end"],
                name="qa_outputs.split",
                axis=2,
            )
        )
        axes = self.constant("qa_outputs.axes", np.array([2], dtype=np.int64))
        for part, output in (("start", START_LOGITS), ("end", END_LOGITS)):
            self.graph.node.append(
                helper.make_node(
                    "Squeeze", [f"qa_outputs.{part}", axes], [output], name=f"qa_outputs.{part}"
                )
            )

    def interface(self) -> None:
        shape = [BATCH_DIM, SEQUENCE_LENGTH]
        self.graph.input.extend(
            helper.make_tensor_value_info(name, TensorProto.INT64, shape)
            for name in (INPUT_IDS, INPUT_MASK, SEGMENT_IDS)
        )
        self.graph.output.extend(
            helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
            for name in (START_LOGITS, END_LOGITS)
        )

    # --- graph pieces -------------------------------------------------------------------------

    def dense(self, prefix: str, x: str, fan_in: int, out: int, gain: float = 1.0) -> str:
        """x @ W + b with W [in, out] as a 2-D initializer, the form int8 quantizers recognise."""
        value = self.rng.standard_normal((fan_in, out), dtype=np.float32)
        value *= np.float32(gain / math.sqrt(fan_in))
        weight = self.initializer(f"{prefix}.weight", self.prune(prefix, value, False))
        del value
        bias = self.random(f"{prefix}.bias", (out,), BIAS_STD)
        product = self.node("MatMul", [x, weight], f"{prefix}.matmul")
        return self.node("Add", [product, bias], f"{prefix}.bias_add")

    def prune(self, prefix: str, weight: np.ndarray, last: bool) -> np.ndarray:
        """A weight MatMul's weight [in, out] as the recipe prunes it, each output's kept
        weights scaled up to the spread the dense output had; its kept count is recorded."""
        recipe = self.recipe
        if recipe is not None:
            end = "last" if last else "first" if not self.layers else ""
            pruned = end not in recipe.keep_dense
            if pruned:
                kept = prune_weight(weight, "MatMul", recipe, prefix)
                dense_energy = np.square(weight).sum(axis=0)
                kept_energy = np.maximum(np.square(kept).sum(axis=0), np.float32(1e-30))
                weight = kept * np.sqrt(dense_energy / kept_energy)[None, :]
            kept_count = int(np.count_nonzero(weight))
            record = LayerRecord(
                f"{prefix}.matmul", f"{prefix}.weight", kept_count, int(weight.size), pruned
            )
            self.layers.append(record)
        return weight

    def layer_norm(self, prefix: str, x: str) -> str:
        hidden = self.config.hidden
        scale = self.initializer(f"{prefix}.weight", np.ones(hidden, dtype=np.float32))
        shift = self.initializer(f"{prefix}.bias", np.zeros(hidden, dtype=np.float32))
        return self.node(
            "LayerNormalization", [x, scale, shift], prefix, axis=-1, epsilon=LAYER_NORM_EPSILON
        )

    def node(self, op: str, inputs: list[str], name: str, **attributes: object) -> str:
        """Append one node with a single output named after the node; return the output name."""
        self.graph.node.append(helper.make_node(op, inputs, [name], name=name, **attributes))
        return name

    def random(self, name: str, shape: tuple[int, ...], std: float) -> str:
        # Drawn in float32 and serialised at once: no float64 copy, no array kept.
        value = self.rng.standard_normal(shape, dtype=np.float32)
        value *= np.float32(std)
        return self.initializer(name, value)

    def initializer(self, name: str, value: np.ndarray) -> str:
        # A graph holding just this tensor encodes to exactly one initializer field of the graph.
        holder = onnx.GraphProto()
        tensor = holder.initializer.add()
        tensor.name = name
        tensor.data_type = TensorProto.FLOAT
        tensor.dims.extend(value.shape)
        tensor.raw_data = np.ascontiguousarray(value, dtype="<f4").tobytes()
        self.weights.append(holder.SerializeToString())
        return name

    def write(self, path: Path, record: PruningRecord | None) -> None:
        """Write the same bytes ``onnx.save`` would, without ever serialising the whole model.

        Protobuf writes fields in field-number order, and a message's encoding is the concatenation
        of its fields' encodings, so the file is assembled from the pieces before the graph, the
        graph (nodes and name, initializers, inputs and outputs) and the pieces after it.
        """
        before = onnx.ModelProto(ir_version=IR_VERSION, producer_name="sparseperf")
        after = onnx.ModelProto(opset_import=[helper.make_opsetid("", OPSET)])
        if record is not None:
            after.metadata_props.extend(record_props(record))
        head = onnx.GraphProto(node=self.graph.node, name=self.graph.name)
        tail = onnx.GraphProto(input=self.graph.input, output=self.graph.output)
        graph = [head.SerializeToString(), *self.weights, tail.SerializeToString()]
        with path.open("wb") as file:
            file.write(before.SerializeToString())
            file.write(_field_header(GRAPH_FIELD, sum(len(part) for part in graph)))
            for part in graph:
                file.write(part)
            file.write(after.SerializeToString())

    def scalar(self, name: str, value: float) -> str:
        return self.constant(name, np.array(value, dtype=np.float32))

    def constant(self, name: str, value: np.ndarray) -> str:
        """A Constant node, not an initializer: initializers are exactly the model's weights.

        Made once per name; the layers share them.
        """
        if name in self.constants:
            return name
        self.constants.add(name)
        self.graph.node.append(
            helper.make_node(
                "Constant", [], [name], name=name, value=onnx.numpy_helper.from_array(value, name)
            )
        )
        return name


def _field_header(number: int, length: int) -> bytes:
    """Protobuf key and varint length of a length-delimited field (wire type 2)."""
    out = bytearray()
    for value in (number << 3 | 2, length):
        while value >= 0x80:
            out.append(value & 0x7F | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out)
