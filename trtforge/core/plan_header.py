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
