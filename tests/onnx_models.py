"""Small deterministic ONNX models for tests (built with onnx.helper; no torch)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "recipes"))
from make_models import example_cnn  # noqa: E402

__all__ = [
    "example_cnn",
    "initializer_inputs_only",
    "mlp",
    "no_graph_inputs",
    "perturbed",
    "save",
    "scalar_input",
    "shape_tensor_input",
    "static_cnn",
    "two_heads",
    "uint32_input",
    "unsupported_op",
    "zero_sized_input",
]


def mlp(seed: int = 0, width: int = 8, features: int = 4, batch: str | int = "N") -> onnx.ModelProto:
    """x[N, features] -> MatMul -> Add -> Relu -> y[N, width]."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 0.5, (features, width)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(0, 0.1, (width,)).astype(np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mm"], name="matmul"),
        helper.make_node("Add", ["mm", "b"], ["pre"], name="bias"),
        helper.make_node("Relu", ["pre"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, width])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def two_heads(seed: int = 0, features: int = 4) -> onnx.ModelProto:
    """x[N, features] -> MatMul(w1) -> y1[N, 3]  and  x -> MatMul(w2) -> Add(b2) -> Relu -> y2[N, 5].

    Two outputs with separate weights, so perturbing one initializer changes exactly one output.
    """
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (features, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.5, (features, 5)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(0, 0.1, (5,)).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["y1"], name="head1"),
        helper.make_node("MatMul", ["x", "w2"], ["h2"], name="head2_matmul"),
        helper.make_node("Add", ["h2", "b2"], ["h2b"], name="head2_bias"),
        helper.make_node("Relu", ["h2b"], ["y2"], name="head2_relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "two_heads",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [
            helper.make_tensor_value_info("y1", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("y2", TensorProto.FLOAT, ["N", 5]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def perturbed(model: onnx.ModelProto, initializer: str, delta: float = 0.5, index: int = 0) -> onnx.ModelProto:
    """A copy of ``model`` with one element of one initializer shifted by ``delta``."""
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    for position, init in enumerate(changed.graph.initializer):
        if init.name == initializer:
            values = numpy_helper.to_array(init).copy()
            values.flat[index] += delta
            changed.graph.initializer[position].CopyFrom(numpy_helper.from_array(values, initializer))
            return changed
    raise KeyError(initializer)


def unsupported_op() -> onnx.ModelProto:
    """A model TensorRT cannot parse: one node of an unknown operator named 'mystery_node'."""
    node = helper.make_node("MysteryOp", ["x"], ["y"], name="mystery_node")
    graph = helper.make_graph(
        [node],
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _model(
    nodes: list[onnx.NodeProto], inputs: list, outputs: list, initializer: list | None = None
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializer or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def static_cnn(seed: int = 0) -> onnx.ModelProto:
    """A classic CNN export: images[1, 3, 16, 16] (every dimension fixed) -> Conv -> Relu -> GAP -> y."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "conv_w")
    nodes = [
        helper.make_node("Conv", ["images", "conv_w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["y"], name="gap"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1, 1])],
        [w],
    )


def scalar_input() -> onnx.ModelProto:
    """x[] (rank 0) -> Mul(2) -> y[]."""
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    return _model(
        [helper.make_node("Mul", ["x", "two"], ["y"], name="double")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        [two],
    )


def initializer_inputs_only() -> onnx.ModelProto:
    """Every graph input is an initializer: no runtime input at all."""
    w = numpy_helper.from_array(np.arange(-2, 2, dtype=np.float32), "w")
    return _model(
        [helper.make_node("Relu", ["w"], ["y"], name="relu")],
        [helper.make_tensor_value_info("w", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [w],
    )


def no_graph_inputs() -> onnx.ModelProto:
    """The graph takes no input: Constant -> Relu -> y."""
    value = numpy_helper.from_array(np.arange(-2, 2, dtype=np.float32), "value")
    return _model(
        [
            helper.make_node("Constant", [], ["c"], name="const", value=value),
            helper.make_node("Relu", ["c"], ["y"], name="relu"),
        ],
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )


def zero_sized_input() -> onnx.ModelProto:
    """x[0, 4]: a fixed, empty dimension (not a dynamic one) -> Relu -> y[0, 4]."""
    return _model(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [0, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [0, 4])],
    )


def shape_tensor_input() -> onnx.ModelProto:
    """data[2, 3] reshaped by the runtime input shape[2] (int64): a shape-tensor input."""
    return _model(
        [helper.make_node("Reshape", ["data", "shape"], ["y"], name="reshape")],
        [
            helper.make_tensor_value_info("data", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])],
    )


def uint32_input() -> onnx.ModelProto:
    """x[4] of element type uint32 (which TensorRT does not take) -> Identity -> y."""
    return _model(
        [helper.make_node("Identity", ["x"], ["y"], name="identity")],
        [helper.make_tensor_value_info("x", TensorProto.UINT32, [4])],
        [helper.make_tensor_value_info("y", TensorProto.UINT32, [4])],
    )
