"""An engine's inputs, outputs and optimization profiles, as its catalog record holds them.

A build records the network's I/O as TensorRT saw it (``io_tensors``: name, mode, TensorRT data
type, shape with -1 for dynamic dims) and the recipe's ``profiles``; every record also keeps the
ONNX model's graph I/O (``details.model``, with the model's names for dynamic dims). An adopted
plan has only the latter, and no profiles. Servers need all of it; a record without I/O is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trtforge.core.errors import DeployError
from trtforge.rules.record import read_details

# TensorRT DataType names as a build records them (str(trt.DataType.X) lowercased) -> ONNX's
# TensorProto.DataType names (lowercased), the one spelling used below.
_TRT_TO_ONNX = {
    "float": "float",
    "half": "float16",
    "bf16": "bfloat16",
    "int8": "int8",
    "int32": "int32",
    "int64": "int64",
    "bool": "bool",
    "uint8": "uint8",
    "fp8": "float8e4m3fn",
    "int4": "int4",
    "fp4": "float4e2m1",
    "e8m0": "float8e8m0",
}


@dataclass(frozen=True)
class IoTensor:
    """One engine input or output: ONNX-style element type name, shape (-1 dynamic), dim names."""

    name: str
    mode: str  # "input" | "output"
    dtype: str
    shape: tuple[int, ...]
    dim_names: tuple[str | None, ...]  # the model's name for each dynamic dim, where it has one

    @property
    def dynamic(self) -> bool:
        return any(d < 0 for d in self.shape)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "mode": self.mode, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class EngineIO:
    inputs: tuple[IoTensor, ...]
    outputs: tuple[IoTensor, ...]
    profiles: tuple[dict[str, Any], ...]  # per profile: input -> {min, opt, max}
    profiles_known: bool  # False for adopted plans: the record does not say what they were built with
    source: str  # "engine" (recorded at build) | "model" (the ONNX graph I/O only)

    def signature(self) -> dict[str, Any]:
        """What must agree between plans served under one config: I/O and profiles."""
        return {
            "inputs": [t.as_json() for t in self.inputs],
            "outputs": [t.as_json() for t in self.outputs],
            "profiles": list(self.profiles) if self.profiles_known else None,
        }


def _dim(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else -1


def _dtype(value: Any) -> str:
    text = str(value).lower()
    return _TRT_TO_ONNX.get(text, text)


def engine_io(artifact: Any) -> EngineIO:
    """The record's I/O (engine first, else the model's graph I/O); DeployError when it has none."""
    details = read_details(artifact.details)
    model_dims: dict[str, list[Any]] = {}
    for tensor in [*details.model.inputs, *details.model.outputs]:
        if isinstance(tensor, dict) and isinstance(tensor.get("name"), str):
            model_dims[tensor["name"]] = list(tensor.get("shape") or [])

    def names_for(name: str, shape: tuple[int, ...]) -> tuple[str | None, ...]:
        dims = model_dims.get(name)
        if dims is None or len(dims) != len(shape):
            return (None,) * len(shape)
        return tuple(d if isinstance(d, str) and d and shape[i] < 0 else None for i, d in enumerate(dims))

    tensors: list[IoTensor] = []
    recorded = [t for t in artifact.io_tensors or [] if isinstance(t, dict)]
    if recorded:
        source = "engine"
        for t in recorded:
            shape = tuple(_dim(d) for d in t.get("shape") or [])
            name = str(t.get("name"))
            tensors.append(IoTensor(name, str(t.get("mode")), _dtype(t.get("dtype")), shape, names_for(name, shape)))
    else:
        source = "model"
        for mode, group in (("input", details.model.inputs), ("output", details.model.outputs)):
            for t in group:
                shape = tuple(_dim(d) for d in t.get("shape") or [])
                name = str(t.get("name"))
                tensors.append(IoTensor(name, mode, _dtype(t.get("dtype")), shape, names_for(name, shape)))
    inputs = tuple(t for t in tensors if t.mode == "input")
    outputs = tuple(t for t in tensors if t.mode == "output")
    if not outputs:
        raise DeployError(
            f"artifact {artifact.id[:12]} ({artifact.name}) records no engine inputs and outputs",
            hint="rebuild it with `trtforge build`, or adopt the plan with the ONNX model it came from (--model)",
        )
    origin_known = details.origin != "adopted"
    profiles = tuple(p for p in artifact.profiles or [] if isinstance(p, dict))
    return EngineIO(inputs, outputs, profiles, origin_known, source)
