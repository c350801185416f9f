"""An ONNX model read the way ONNX and TensorRT read it: by protobuf, through onnx's own classes.

The build key must cover every byte the builder reads, so trtforge reads a model with the parser
the builder's side uses: protobuf's rules decide what the model says (a repeated embedded message
such as ``graph`` is merged, unknown fields of any wire type are skipped, an enum varint is
truncated to int32). A hand-written reader disagreed with protobuf on valid encodings (issue 20),
which let a model name external data the digest did not cover; one parser remains.

Only the model file is parsed; external data is named, never read (``load_external_data=False``
in onnx's words). Importing onnx costs ~0.15 s, paid when a model is read in full: a cache hit
takes the model digest from the stat-keyed digest cache (``rules/digests.py``) and never comes here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

from trtforge.core.errors import ModelError

if TYPE_CHECKING:
    from onnx import AttributeProto, FunctionProto, GraphProto, ModelProto, SparseTensorProto, TensorProto

Dim = int | str | None


@dataclass(frozen=True)
class ValueInfo:
    name: str
    dtype: str  # TensorProto.DataType's name, lowercased ("float", "int64", "float8e4m3fn")
    shape: tuple[Dim, ...]


@dataclass(frozen=True)
class ModelFile:
    """What trtforge needs of a parsed model: its graph's I/O and the external data it names."""

    inputs: tuple[ValueInfo, ...]  # graph inputs that are not initializers
    outputs: tuple[ValueInfo, ...]
    has_graph: bool
    external_locations: tuple[str, ...]  # sorted, each once, as written in the model


def read_model_bytes(path: Path) -> bytes:
    """The model file's bytes, read once (what is parsed is what is hashed and built)."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model ({exc.strerror or exc})") from None


def parse_model(data: bytes, shown: str | Path) -> ModelFile:
    """Parse ONNX ``ModelProto`` bytes; anything protobuf refuses is a ModelError (fail closed)."""
    import onnx  # lazy: see the module docstring
    from google.protobuf.message import DecodeError

    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"{shown}: not a readable ONNX model ({detail})") from None
    inputs, outputs = _graph_io(model)
    return ModelFile(inputs, outputs, model.HasField("graph"), _external_locations(model, shown))


def _dtype(elem_type: int) -> str:
    from onnx import TensorProto

    try:
        return TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"type{elem_type}"


def _value_info(value: Any) -> ValueInfo:
    if not value.type.HasField("tensor_type"):  # sequence, map, optional: no tensor type
        return ValueInfo(value.name, "undefined", ())
    tensor_type = value.type.tensor_type
    dims: list[Dim] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or None)
    return ValueInfo(value.name, _dtype(tensor_type.elem_type), tuple(dims))


def _graph_io(model: ModelProto) -> tuple[tuple[ValueInfo, ...], tuple[ValueInfo, ...]]:
    graph = model.graph
    initializers = {tensor.name for tensor in graph.initializer}
    inputs = tuple(_value_info(v) for v in graph.input if v.name not in initializers)
    return inputs, tuple(_value_info(v) for v in graph.output)


# -- external data: every tensor TensorRT's ONNX parser (and onnx.load) may read from a file ----


def _sparse(sparse: SparseTensorProto) -> Iterator[TensorProto]:
    yield sparse.values
    yield sparse.indices


def _attribute_tensors(attribute: AttributeProto) -> Iterator[TensorProto]:
    if attribute.HasField("t"):
        yield attribute.t
    yield from attribute.tensors
    if attribute.HasField("sparse_tensor"):
        yield from _sparse(attribute.sparse_tensor)
    for sparse in attribute.sparse_tensors:
        yield from _sparse(sparse)
    if attribute.HasField("g"):
        yield from _graph_tensors(attribute.g)
    for graph in attribute.graphs:
        yield from _graph_tensors(graph)


def _graph_tensors(graph: GraphProto | FunctionProto) -> Iterator[TensorProto]:
    """Initializers, sparse initializers and node attributes, subgraphs included (protobuf bounds
    the nesting depth while parsing, so this recursion is bounded too)."""
    yield from getattr(graph, "initializer", ())
    for sparse in getattr(graph, "sparse_initializer", ()):
        yield from _sparse(sparse)
    for node in graph.node:
        for attribute in node.attribute:
            yield from _attribute_tensors(attribute)
    for attribute in getattr(graph, "attribute_proto", ()):  # a function's attribute defaults
        yield from _attribute_tensors(attribute)


def _model_tensors(model: ModelProto) -> Iterator[TensorProto]:
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        yield from _graph_tensors(function)


def _external_locations(model: ModelProto, shown: str | Path) -> tuple[str, ...]:
    from onnx import TensorProto

    found: set[str] = set()
    for tensor in _model_tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}  # the last one wins, as in onnx
        location = entries.get("location", "")
        check_location(location, tensor.name, shown)
        found.add(location)
    return tuple(sorted(found))


def check_location(location: str, tensor: str, shown: str | Path) -> None:
    """An external data location must be a relative path below the model's folder (onnx.load's
    rule too), printable, so that it names one file next to the model and can be copied privately."""
    if not location:
        raise ModelError(f"{shown}: tensor {tensor[:80]!r} has external data without a location")
    if not location.isprintable():
        raise ModelError(f"{shown}: external data location {location[:80]!r} has control characters")
    posix, windows = PurePosixPath(location), PureWindowsPath(location)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in posix.parts or ".." in windows.parts:
        raise ModelError(
            f"{shown}: external data location {location[:80]!r} is not a relative path inside the model's folder",
            hint="save the model with its external data next to it (onnx.save(..., location='weights.bin'))",
        )
