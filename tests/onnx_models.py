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

__all__ = ["example_cnn", "mlp", "perturbed", "save", "two_heads", "unsupported_op"]


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
