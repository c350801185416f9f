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

__all__ = ["example_cnn", "mlp", "save", "unsupported_op"]


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
