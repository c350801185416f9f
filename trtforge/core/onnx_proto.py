"""Read an ONNX model's graph inputs and outputs straight from its protobuf bytes.

A build needs only the names, element types and shapes of the graph's inputs and outputs to
check the recipe's profiles. ``onnx.load`` parses every weight and importing ``onnx`` costs
about 0.1 s; this reader walks the protobuf wire format over a memory map, steps over
initializer payloads by their length prefix, and imports nothing. Field numbers are those of
onnx/onnx.proto3, which ONNX keeps stable across IR versions.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

ParsedT = TypeVar("ParsedT")

# onnx.proto field numbers
MODEL_GRAPH = 7
GRAPH_INITIALIZER = 5
GRAPH_INPUT = 11
GRAPH_OUTPUT = 12
TENSOR_NAME = 8
VALUE_INFO_NAME = 1
VALUE_INFO_TYPE = 2
TYPE_TENSOR = 1
TENSOR_TYPE_ELEM = 1
TENSOR_TYPE_SHAPE = 2
SHAPE_DIM = 1
DIM_VALUE = 1
DIM_PARAM = 2
# where tensors (and so external data references) can live
MODEL_FUNCTIONS = 25
GRAPH_NODE = 1
GRAPH_SPARSE_INITIALIZER = 15
NODE_ATTRIBUTE = 5
FUNCTION_NODE = 7
FUNCTION_ATTRIBUTE_PROTO = 11
ATTR_T, ATTR_G, ATTR_TENSORS, ATTR_GRAPHS, ATTR_SPARSE_TENSOR, ATTR_SPARSE_TENSORS = 5, 6, 10, 11, 22, 23
SPARSE_VALUES, SPARSE_INDICES = 1, 2
TENSOR_EXTERNAL_DATA = 13
TENSOR_DATA_LOCATION = 14
DATA_LOCATION_EXTERNAL = 1
ENTRY_KEY, ENTRY_VALUE = 1, 2
MAX_NESTING = 64  # subgraphs inside subgraphs; a deeper model is refused rather than recursed into

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5

# TensorProto.DataType, lowercased as onnx.TensorProto.DataType.Name(n).lower() spells them.
DATA_TYPES = (
    "undefined float uint8 int8 uint16 int16 int32 int64 string bool float16 double uint32 uint64 "
    "complex64 complex128 bfloat16 float8e4m3fn float8e4m3fnuz float8e5m2 float8e5m2fnuz uint4 int4 "
    "float4e2m1 float8e8m0 uint2 int2 float6e2m3 float6e3m2"
).split()

Dim = int | str | None


class ProtoError(ValueError):
    """The bytes are not a well-formed protobuf message of the expected shape."""


@dataclass(frozen=True)
class ValueInfo:
    name: str
    dtype: str
    shape: tuple[Dim, ...]


@dataclass(frozen=True)
class GraphIO:
    inputs: tuple[ValueInfo, ...]  # graph inputs that are not initializers
    outputs: tuple[ValueInfo, ...]
    has_graph: bool


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ProtoError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int | tuple[int, int]]]:
    """(field number, wire type, varint value or (start, end) of the payload) for one message."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ProtoError("field number 0")
        if wire == VARINT:
            value, pos = _varint(buf, pos, end)
            yield field, wire, value
        elif wire == LENGTH:
            size, pos = _varint(buf, pos, end)
            if pos + size > end:
                raise ProtoError("length-delimited field runs past its message")
            yield field, wire, (pos, pos + size)
            pos += size
        elif wire in (FIXED64, FIXED32):
            width = 8 if wire == FIXED64 else 4
            if pos + width > end:
                raise ProtoError("truncated fixed-width field")
            yield field, wire, (pos, pos + width)
            pos += width
        else:  # groups (3, 4) do not occur in onnx.proto
            raise ProtoError(f"unsupported wire type {wire}")


def _span(value: int | tuple[int, int]) -> tuple[int, int]:
    if not isinstance(value, tuple):
        raise ProtoError("expected a length-delimited field")
    return value


def _text(buf: memoryview, value: int | tuple[int, int]) -> str:
    start, end = _span(value)
    try:
        return bytes(buf[start:end]).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtoError("a name is not UTF-8") from None


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _dim(buf: memoryview, start: int, end: int) -> Dim:
    dim: Dim = None
    for field, wire, value in _fields(buf, start, end):
        if field == DIM_VALUE and wire == VARINT:
            dim = _signed64(int(value))  # type: ignore[arg-type]
        elif field == DIM_PARAM and wire == LENGTH:
            dim = _text(buf, value) or None
    return dim


def _tensor_type(buf: memoryview, start: int, end: int) -> tuple[str, tuple[Dim, ...]]:
    elem = 0
    dims: list[Dim] = []
    for field, wire, value in _fields(buf, start, end):
        if field == TENSOR_TYPE_ELEM and wire == VARINT:
            elem = int(value)  # type: ignore[arg-type]
        elif field == TENSOR_TYPE_SHAPE and wire == LENGTH:
            dims = [
                _dim(buf, *_span(dim_value))
                for dim_field, dim_wire, dim_value in _fields(buf, *_span(value))
                if dim_field == SHAPE_DIM and dim_wire == LENGTH
            ]
    dtype = DATA_TYPES[elem] if 0 <= elem < len(DATA_TYPES) else f"type{elem}"
    return dtype, tuple(dims)


def _value_info(buf: memoryview, start: int, end: int) -> ValueInfo:
    name = ""
    dtype, shape = DATA_TYPES[0], ()
    for field, wire, value in _fields(buf, start, end):
        if field == VALUE_INFO_NAME and wire == LENGTH:
            name = _text(buf, value)
        elif field == VALUE_INFO_TYPE and wire == LENGTH:
            for type_field, type_wire, type_value in _fields(buf, *_span(value)):
                if type_field == TYPE_TENSOR and type_wire == LENGTH:
                    dtype, shape = _tensor_type(buf, *_span(type_value))
    return ValueInfo(name, dtype, shape)


def _initializer_name(buf: memoryview, start: int, end: int) -> str:
    for field, wire, value in _fields(buf, start, end):  # payloads are stepped over, not read
        if field == TENSOR_NAME and wire == LENGTH:
            return _text(buf, value)
    return ""


def _graph_io(buf: memoryview) -> GraphIO:
    graph: tuple[int, int] | None = None
    for field, wire, value in _fields(buf, 0, len(buf)):
        if field == MODEL_GRAPH and wire == LENGTH:
            graph = _span(value)  # the last occurrence wins, as in protobuf's own parser
    if graph is None:
        return GraphIO((), (), has_graph=False)
    inputs: list[ValueInfo] = []
    outputs: list[ValueInfo] = []
    initializers: set[str] = set()
    for field, wire, value in _fields(buf, *graph):
        if wire != LENGTH:
            continue
        if field == GRAPH_INPUT:
            inputs.append(_value_info(buf, *_span(value)))
        elif field == GRAPH_OUTPUT:
            outputs.append(_value_info(buf, *_span(value)))
        elif field == GRAPH_INITIALIZER:
            initializers.add(_initializer_name(buf, *_span(value)))
    kept = tuple(v for v in inputs if v.name not in initializers)
    return GraphIO(kept, tuple(outputs), has_graph=True)


def _tensor_location(buf: memoryview, start: int, end: int) -> str | None:
    """The external-data ``location`` of a TensorProto whose data_location is EXTERNAL, else None."""
    external = False
    location: str | None = None
    for field, wire, value in _fields(buf, start, end):  # raw_data and *_data are stepped over
        if field == TENSOR_DATA_LOCATION and wire == VARINT:
            external = value == DATA_LOCATION_EXTERNAL
        elif field == TENSOR_EXTERNAL_DATA and wire == LENGTH:
            key = text = None
            for entry_field, entry_wire, entry_value in _fields(buf, *_span(value)):
                if entry_field == ENTRY_KEY and entry_wire == LENGTH:
                    key = _text(buf, entry_value)
                elif entry_field == ENTRY_VALUE and entry_wire == LENGTH:
                    text = _text(buf, entry_value)
            if key == "location":
                location = text
    if not external:
        return None
    if not location:
        raise ProtoError(f"tensor {_initializer_name(buf, start, end)!r} has external data without a location")
    return location


def _sparse_locations(buf: memoryview, start: int, end: int, found: set[str]) -> None:
    for field, wire, value in _fields(buf, start, end):
        if field in (SPARSE_VALUES, SPARSE_INDICES) and wire == LENGTH:
            if (location := _tensor_location(buf, *_span(value))) is not None:
                found.add(location)


def _attribute_locations(buf: memoryview, start: int, end: int, found: set[str], depth: int) -> None:
    for field, wire, value in _fields(buf, start, end):
        if wire != LENGTH:
            continue
        if field in (ATTR_T, ATTR_TENSORS):
            if (location := _tensor_location(buf, *_span(value))) is not None:
                found.add(location)
        elif field in (ATTR_SPARSE_TENSOR, ATTR_SPARSE_TENSORS):
            _sparse_locations(buf, *_span(value), found)
        elif field in (ATTR_G, ATTR_GRAPHS):
            _graph_locations(buf, *_span(value), found, depth + 1)


def _nodes_locations(
    buf: memoryview, start: int, end: int, found: set[str], depth: int, node_field: int, attribute_field: int
) -> None:
    """Tensors in the attributes of a graph's (or a function's) nodes."""
    if depth > MAX_NESTING:
        raise ProtoError(f"subgraphs nested deeper than {MAX_NESTING} levels")
    for field, wire, value in _fields(buf, start, end):
        if field == node_field and wire == LENGTH:
            for node_field_no, node_wire, node_value in _fields(buf, *_span(value)):
                if node_field_no == NODE_ATTRIBUTE and node_wire == LENGTH:
                    _attribute_locations(buf, *_span(node_value), found, depth)
        elif field == attribute_field and wire == LENGTH:  # FunctionProto.attribute_proto defaults
            _attribute_locations(buf, *_span(value), found, depth)


def _graph_locations(buf: memoryview, start: int, end: int, found: set[str], depth: int) -> None:
    _nodes_locations(buf, start, end, found, depth, GRAPH_NODE, -1)
    for field, wire, value in _fields(buf, start, end):
        if field == GRAPH_INITIALIZER and wire == LENGTH:
            if (location := _tensor_location(buf, *_span(value))) is not None:
                found.add(location)
        elif field == GRAPH_SPARSE_INITIALIZER and wire == LENGTH:
            _sparse_locations(buf, *_span(value), found)


def _external_locations(buf: memoryview) -> tuple[str, ...]:
    found: set[str] = set()
    graph: tuple[int, int] | None = None
    for field, wire, value in _fields(buf, 0, len(buf)):
        if field == MODEL_GRAPH and wire == LENGTH:
            graph = _span(value)  # the last occurrence wins, as in protobuf's own parser
        elif field == MODEL_FUNCTIONS and wire == LENGTH:
            _nodes_locations(buf, *_span(value), found, 0, FUNCTION_NODE, FUNCTION_ATTRIBUTE_PROTO)
    if graph is not None:
        _graph_locations(buf, *graph, found, 0)
    return tuple(sorted(found))


def external_data_locations(path: Path) -> tuple[str, ...]:
    """Every external-data ``location`` the ONNX file at ``path`` refers to, sorted, each once.

    Covers what ``onnx.load`` and the TensorRT ONNX parser read from outside the file: tensors
    with ``data_location: EXTERNAL`` among graph initializers, sparse initializers and node
    attributes (subgraphs included) and in model-local functions. Locations are as written in
    the model (relative to its directory). Raises ProtoError / OSError like read_graph_io.
    """
    return _parse_mapped(path, _external_locations)


def read_graph_io(path: Path) -> GraphIO:
    """The graph inputs (initializers excluded) and outputs of the ONNX file at ``path``.

    Raises ProtoError for bytes that are not a well-formed ONNX ModelProto, OSError for I/O.
    """
    return _parse_mapped(path, _graph_io)


def _parse_mapped(path: Path, parse: Callable[[memoryview], ParsedT]) -> ParsedT:
    """``parse`` over the file's bytes, memory-mapped (weights are stepped over, never copied)."""
    with open(path, "rb") as handle:
        if handle.seek(0, 2) == 0:
            raise ProtoError("empty file")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                return parse(view)
            finally:
                view.release()
