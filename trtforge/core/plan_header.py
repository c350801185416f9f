"""What a serialized plan's first bytes say about the runtime it needs, where we can tell.

NVIDIA does not document the plan format. For TensorRT-RTX we read only what plans built here
show consistently, and tests check it against real builds of the installed version: the magic
``vtrt`` at offset 0 and the release (major, minor, patch) as three bytes at offset 24. Any other
plan (full TensorRT included) returns None, and the caller must be told the target explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RTX_MAGIC = b"vtrt"
RTX_SIZE_OFFSET = 16
RTX_VERSION_OFFSET = 24
HEADER_BYTES = 32


@dataclass(frozen=True)
class PlanHeader:
    flavor: str
    version: str


def read_plan_header(path: Path) -> PlanHeader | None:
    with open(path, "rb") as handle:
        head = handle.read(HEADER_BYTES)
    if len(head) < HEADER_BYTES or head[:4] != RTX_MAGIC:
        return None
    major, minor, patch = head[RTX_VERSION_OFFSET : RTX_VERSION_OFFSET + 3]
    if major == 0 and minor == 0:
        return None
    return PlanHeader("tensorrt_rtx", f"{major}.{minor}.{patch}")


def plan_problem(path: Path, flavor: str | None) -> str | None:
    """Why ``path`` is recognisably not a (whole) plan of ``flavor``, or None where nothing we know
    of the format says so. Full-TensorRT plans are opaque here: only the obvious is refused."""
    size = path.stat().st_size
    if size == 0:
        return "is empty"
    with open(path, "rb") as handle:
        head = handle.read(HEADER_BYTES)
    if head[:4] == RTX_MAGIC:
        if len(head) < HEADER_BYTES:
            return f"has {size} bytes, fewer than a TensorRT-RTX plan header"
        recorded = int.from_bytes(head[RTX_SIZE_OFFSET : RTX_SIZE_OFFSET + 8], "little")
        if recorded != size:
            return f"has {size} bytes but its TensorRT-RTX header says {recorded} (truncated or damaged)"
        return None
    if flavor == "tensorrt_rtx":
        return "has no TensorRT-RTX plan header (magic 'vtrt')"
    if head[:1] == b"\x08" and _is_onnx_model(path):  # ModelProto.ir_version, the field exporters write first
        return "is an ONNX model, not a serialized engine"
    return None


def _is_onnx_model(path: Path) -> bool:
    from trtforge.core.errors import ModelError
    from trtforge.core.onnx_reader import parse_model, read_model_bytes

    try:
        return parse_model(read_model_bytes(path), path).has_graph
    except ModelError:
        return False
