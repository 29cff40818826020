"""Small ONNX models built with the ``onnx`` package, for the tests and the benchmark.

Nothing is downloaded: each function writes a model file with fixed, seeded weights and
returns its path, and :func:`mlp_reference` computes what the MLP must answer with numpy.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _save(graph: onnx.GraphProto, path: Path, ml: bool = False) -> Path:
    opsets = [helper.make_opsetid("", OPSET)]
    if ml:
        opsets.append(helper.make_opsetid("ai.onnx.ml", 3))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="mlkube-tests")
    # The IR version every onnxruntime this project supports reads.
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def mlp_weights(sizes: tuple[int, ...], seed: int = 0) -> list[tuple[np.ndarray[Any, Any], ...]]:
    rng = np.random.default_rng(seed)
    return [
        (
            (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32),
            (rng.standard_normal(b) * 0.1).astype(np.float32),
        )
        for a, b in itertools.pairwise(sizes)
    ]


def mlp(path: Path, sizes: tuple[int, ...] = (4, 8, 3), seed: int = 0) -> Path:
    """An MLP: input ``x`` FP32 [batch, sizes[0]], ReLU between layers, output ``y`` FP32
    [batch, sizes[-1]]; the batch dimension is dynamic."""
    nodes = []
    inits = []
    current = "x"
    layers = mlp_weights(sizes, seed)
    for i, (w, b) in enumerate(layers):
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = "y" if i == len(layers) - 1 else f"h{i}"
        gemm = f"g{i}" if out != "y" else "y"
        nodes.append(helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [gemm]))
        if out != "y":
            nodes.append(helper.make_node("Relu", [gemm], [out]))
        current = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", sizes[-1]])],
        inits,
    )
    return _save(graph, path)


def mlp_reference(
    x: np.ndarray[Any, Any], sizes: tuple[int, ...] = (4, 8, 3), seed: int = 0
) -> Any:
    """What :func:`mlp` answers for ``x``, computed with numpy."""
    layers = mlp_weights(sizes, seed)
    h = x.astype(np.float32)
    for i, (w, b) in enumerate(layers):
        h = h @ w + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0)
    return h


def two_inputs(path: Path) -> Path:
    """``a`` FP32 [batch, 3] and ``b`` INT64 [batch, 3]: ``sum`` = a + b (FP32) and
    ``scaled`` = a * 2 (FP32), both [batch, 3]."""
    nodes = [
        helper.make_node("Cast", ["b"], ["b_float"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["a", "b_float"], ["sum"]),
        helper.make_node("Mul", ["a", "two"], ["scaled"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["batch", 3]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("scaled", TensorProto.FLOAT, ["batch", 3]),
        ],
        [numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")],
    )
    return _save(graph, path)


LABELS = ("cat", "dog", "bird")


def labeller(path: Path) -> Path:
    """A string-output classifier: ``x`` FP32 [batch, 3] -> ``label`` BYTES [batch], the
    name in :data:`LABELS` of each row's largest element."""
    nodes = [
        helper.make_node("ArgMax", ["x"], ["index"], axis=1, keepdims=0),
        helper.make_node(
            "LabelEncoder",
            ["index"],
            ["label"],
            domain="ai.onnx.ml",
            keys_int64s=list(range(len(LABELS))),
            values_strings=list(LABELS),
            default_string="unknown",
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "labeller",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("label", TensorProto.STRING, ["batch"])],
    )
    return _save(graph, path, ml=True)


def fixed_batch(path: Path) -> Path:
    """An MLP-like model whose batch dimension is fixed at 1 (cannot be merged)."""
    w = np.eye(2, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(w, "w")],
    )
    return _save(graph, path)


def lookup(path: Path) -> Path:
    """``i`` INT64 [batch] -> ``v`` FP32 [batch, 2]: rows of a 3-row table. An index
    outside 0-2 passes every shape and type check and fails in onnxruntime (Gather)."""
    table = np.arange(6, dtype=np.float32).reshape(3, 2)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "i"], ["v"], axis=0)],
        "lookup",
        [helper.make_tensor_value_info("i", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("v", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(table, "table")],
    )
    return _save(graph, path)
