"""The generated model and recipes the checks build: a small MLP with two optimization profiles."""

from __future__ import annotations

from pathlib import Path

from trtforge.core.errors import SelftestFailure


def write_mlp(path: Path, seed: int) -> Path:
    """x[N, 4] -> MatMul -> Add -> Relu -> y[N, 8]: fast to build, weights from ``seed``."""
    try:
        import numpy as np
        from onnx import TensorProto, helper, numpy_helper, save
    except ImportError as exc:
        raise SelftestFailure(f"selftest generates ONNX models with onnx and numpy: {exc}") from None
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 0.5, (4, 8)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mm"], name="matmul"),
        helper.make_node("Add", ["mm", "b"], ["pre"], name="bias"),
        helper.make_node("Relu", ["pre"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    save(model, str(path))
    return path


def write_recipe(folder: Path, name: str, flavor: str, extra: str = "", ccs: list[str] | None = None) -> Path:
    """A recipe for the generated MLP, with two optimization profiles (for streams on distinct profiles)."""
    model = folder / "models" / f"{name}.onnx"
    if not model.exists():
        write_mlp(model, seed=0)
    lines = [
        f"name: {name}",
        f"model: {{onnx: models/{name}.onnx}}",
        f"backend: {flavor}",
        "profiles:",
        "  - x: {min: [1, 4], opt: [2, 4], max: [4, 4]}",
        "  - x: {min: [1, 4], opt: [4, 4], max: [8, 4]}",
        "verify: {iterations: 5, warmup: 1, atol: 0.001, rtol: 0.001}",
    ]
    if ccs:
        lines.append(f"compatibility: {{compute_capabilities: [{', '.join(ccs)}]}}")
    path = folder / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


