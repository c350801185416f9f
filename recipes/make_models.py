"""Generate the small, deterministic ONNX models the example recipes use.

Run from anywhere: ``python recipes/make_models.py``. Weights come from a seeded
generator, so the output is byte-for-byte reproducible and small enough to commit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
OPSET = 17


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array.astype(np.float32), name)


def example_cnn(seed: int = 0) -> onnx.ModelProto:
    """conv -> bn -> relu -> maxpool -> conv -> relu -> global pool -> flatten -> gemm.

    Input ``images`` is [N, 3, 32, 32] with a dynamic batch; output ``logits`` is [N, 10].
    """
    rng = np.random.default_rng(seed)
    inits = [
        _init("conv1.w", rng.normal(0, 0.2, (16, 3, 3, 3))),
        _init("conv1.b", rng.normal(0, 0.05, (16,))),
        _init("bn1.scale", rng.uniform(0.5, 1.5, (16,))),
        _init("bn1.bias", rng.normal(0, 0.1, (16,))),
        _init("bn1.mean", rng.normal(0, 0.1, (16,))),
        _init("bn1.var", rng.uniform(0.5, 1.5, (16,))),
        _init("conv2.w", rng.normal(0, 0.1, (32, 16, 3, 3))),
        _init("conv2.b", rng.normal(0, 0.05, (32,))),
        _init("fc.w", rng.normal(0, 0.1, (10, 32))),
        _init("fc.b", rng.normal(0, 0.05, (10,))),
    ]
    nodes = [
        helper.make_node("Conv", ["images", "conv1.w", "conv1.b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization",
            ["c1", "bn1.scale", "bn1.bias", "bn1.mean", "bn1.var"],
            ["b1"],
            name="bn1",
        ),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2.w", "conv2.b"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "example_cnn",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="trtforge-make-models"
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> None:
    out = HERE / "models"
    out.mkdir(exist_ok=True)
    onnx.save(example_cnn(), out / "example_cnn.onnx")
    print(f"wrote {out / 'example_cnn.onnx'}")


if __name__ == "__main__":
    main()
