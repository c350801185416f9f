"""Reading ONNX models: protobuf through onnx's classes, checked against onnx.load as the oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests import onnx_models
from trtforge.core.errors import ModelError
from trtforge.rules.digests import model_digest
from trtforge.rules.onnx_model import TensorInfo, read_model


def oracle(path: Path) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    """Inputs (initializers excluded) and outputs as the onnx package reads them."""
    model = onnx.load(str(path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}

    def info(value: onnx.ValueInfoProto) -> TensorInfo:
        ttype = value.type.tensor_type
        dims = tuple(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None) for d in ttype.shape.dim)
        return TensorInfo(value.name, TensorProto.DataType.Name(ttype.elem_type).lower(), dims)

    inputs = tuple(info(v) for v in model.graph.input if v.name not in initializers)
    return inputs, tuple(info(v) for v in model.graph.output)


def every_dtype_model() -> onnx.ModelProto:
    """One Identity per element type, with fixed, named, unnamed and negative dims."""
    inputs, outputs, nodes = [], [], []
    for name, code in TensorProto.DataType.items():
        if code == 0:
            continue
        name = name.lower()
        shape: list[int | str | None] = [2, f"dyn_{name}", None, -1]
        inputs.append(helper.make_tensor_value_info(f"in_{name}", code, shape))
        outputs.append(helper.make_tensor_value_info(f"out_{name}", code, shape))
        nodes.append(helper.make_node("Identity", [f"in_{name}"], [f"out_{name}"]))
    return helper.make_model(helper.make_graph(nodes, "dtypes", inputs, outputs))


def initializer_as_input_model() -> onnx.ModelProto:
    """IR < 4 style: weights are listed as graph inputs too; only x is a real input."""
    weight = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "legacy",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[weight],
    )
    return helper.make_model(graph)


def sequence_input_model() -> onnx.ModelProto:
    """A non-tensor input: no tensor type, so dtype 'undefined' and no shape (as before)."""
    seq = helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None)
    graph = helper.make_graph(
        [helper.make_node("SequenceLength", ["seq"], ["n"])],
        "seq",
        [seq],
        [helper.make_tensor_value_info("n", TensorProto.INT64, [])],
    )
    return helper.make_model(graph)


MODELS = {
    "example_cnn": onnx_models.example_cnn,
    "mlp": lambda: onnx_models.mlp(3, batch="N"),
    "mlp_fixed": lambda: onnx_models.mlp(3, batch=7),
    "two_heads": onnx_models.two_heads,
    "every_dtype": every_dtype_model,
    "initializer_as_input": initializer_as_input_model,
    "sequence_input": sequence_input_model,
}


@pytest.mark.parametrize("which", sorted(MODELS))
def test_reads_what_onnx_reads(which: str, tmp_path: Path) -> None:
    path = onnx_models.save(MODELS[which](), tmp_path / f"{which}.onnx")
    info = read_model(path, "0" * 64)
    assert (info.inputs, info.outputs) == oracle(path)
    assert info.outputs  # every model here has outputs; the comparison is not vacuous


def test_external_data_is_not_touched(tmp_path: Path) -> None:
    """Weights kept outside the model file are neither needed nor opened."""
    model = onnx_models.mlp(1, width=512, features=512)
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin")
    (tmp_path / "w.bin").unlink()
    assert (read_model(path, "0" * 64).inputs, read_model(path, "0" * 64).outputs) == oracle(path)


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a protobuf",
        b"\x3a\xff\xff\xff\xff\x0f",  # graph field claiming 4 GiB
        b"\x3a\x02\x62",  # graph with a truncated output field
        b"\x3a\x01\x0b",  # a group that never ends, inside the graph
        b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # an 11-byte varint
    ],
)
def test_malformed_bytes_are_one_clear_error(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        read_model(path, "0" * 64)
    with pytest.raises(ModelError, match="not a readable ONNX model"):  # fail closed: never "no external data"
        model_digest(path)


def test_an_empty_file_is_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(ModelError, match="no graph outputs"):
        read_model(path, "0" * 64)


def test_truncated_real_model_is_refused(tmp_path: Path) -> None:
    whole = onnx_models.save(onnx_models.example_cnn(), tmp_path / "whole.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        read_model(cut, "0" * 64)


def test_a_model_without_outputs_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nothing.onnx"
    path.write_bytes(helper.make_model(helper.make_graph([], "empty", [], [])).SerializeToString())
    with pytest.raises(ModelError, match="no graph outputs"):
        read_model(path, "0" * 64)


@pytest.mark.parametrize("location", ["../w.bin", "/tmp/w.bin", "a/../../w.bin", "C:\\\\w.bin", "w\x1b[2J.bin"])
def test_external_data_must_stay_in_the_models_folder(location: str, tmp_path: Path) -> None:
    """onnx.load refuses these too; a build copies the model's files privately, below its folder."""
    tensor = numpy_helper.from_array(np.zeros(4, dtype=np.float32), "w")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [], [output], initializer=[tensor])
    path = tmp_path / "m.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(ModelError, match="external data location"):
        model_digest(path)
