"""What differs between two serialized plans of one recipe, and whether it is a known benign difference.

NVIDIA does not document the plan format, so this compares bytes only. What it reports: the sizes,
how many bytes differ, and the regions where they do (differing bytes less than ``REGION_GAP``
apart form one region). A region is *known benign* when it is proved to be one:

- ``io_tensor_order``: the plan lists its I/O tensors in another order. Measured with TensorRT-RTX
  1.7.1 (CPU-only builds, docs/timing-caches.md): a plan with several outputs lists them in an
  order that changes from build to build, in two tables (near the start and near the end of the
  plan); everything else is byte-identical. The proof: cut the region of one plan into blocks, each
  starting a fixed distance before the length-prefixed name of one I/O tensor; the blocks put in
  the order the other plan names the tensors give the other plan's bytes exactly. Code that
  addresses tensors by name (TensorRT 10's API, trtforge, Triton, polygraphy) sees the same engine;
  code that walks tensors by index sees them in another order.

Anything else is reported as an unknown difference, with its offsets.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

IO_TENSOR_ORDER = "io_tensor_order"
REGION_GAP = 512  # equal bytes that still join two differing runs into one region
_BLOCK = 4096
_MAX_PREAMBLE = 64  # how far before a tensor's name its record may start


@dataclass(frozen=True)
class Region:
    """Bytes ``[offset, offset + length)`` hold every difference of one region."""

    offset: int
    length: int
    differing: int  # bytes that differ inside the region
    known: str | None  # IO_TENSOR_ORDER, or None: not a known benign difference
    detail: str


@dataclass(frozen=True)
class PlanDifference:
    recorded_size: int
    rebuilt_size: int
    differing_bytes: int
    regions: list[Region]

    @property
    def benign(self) -> bool:
        """Same size, and every region a known benign difference."""
        return self.recorded_size == self.rebuilt_size and all(r.known for r in self.regions)

    def describe(self) -> str:
        """One line for people."""
        if self.recorded_size != self.rebuilt_size:
            return f"sizes differ: {self.recorded_size} recorded, {self.rebuilt_size} rebuilt bytes"
        where = "; ".join(f"at {r.offset}: {r.detail}" for r in self.regions)
        verdict = "known benign" if self.benign else "not a known benign difference"
        return f"{self.differing_bytes} bytes differ in {len(self.regions)} regions ({verdict}): {where}"

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "benign": self.benign}


def compare_plans(recorded: bytes, rebuilt: bytes, io_names: Sequence[str]) -> PlanDifference | None:
    """None when the plans are identical; else what differs (``io_names``: the engine's I/O tensors)."""
    if recorded == rebuilt:
        return None
    if len(recorded) != len(rebuilt):
        return PlanDifference(len(recorded), len(rebuilt), 0, [])
    runs = _differing_runs(recorded, rebuilt)
    regions = [_region(recorded, rebuilt, group, io_names) for group in _group(runs)]
    return PlanDifference(len(recorded), len(rebuilt), sum(end - start for start, end in runs), regions)


def _differing_runs(a: bytes, b: bytes) -> list[tuple[int, int]]:
    """Maximal ``[start, end)`` runs of differing bytes (equal-length inputs), skipping equal blocks."""
    runs: list[tuple[int, int]] = []
    for block in range(0, len(a), _BLOCK):
        if a[block : block + _BLOCK] == b[block : block + _BLOCK]:
            continue
        for i in range(block, min(block + _BLOCK, len(a))):
            if a[i] == b[i]:
                continue
            if runs and runs[-1][1] == i:
                runs[-1] = (runs[-1][0], i + 1)
            else:
                runs.append((i, i + 1))
    return runs


def _group(runs: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    groups: list[list[tuple[int, int]]] = []
    for run in runs:
        if groups and run[0] - groups[-1][-1][1] < REGION_GAP:
            groups[-1].append(run)
        else:
            groups.append([run])
    return groups


def _region(a: bytes, b: bytes, runs: list[tuple[int, int]], io_names: Sequence[str]) -> Region:
    lo, hi = runs[0][0], runs[-1][1]
    differing = sum(end - start for start, end in runs)
    orders = _reordered_records(a, b, lo, hi, io_names)
    if orders is None:
        return Region(lo, hi - lo, differing, None, f"{differing} of {hi - lo} bytes differ, not a known difference")
    before, after = orders
    detail = f"I/O tensors listed as {', '.join(after)} instead of {', '.join(before)}"
    return Region(lo, hi - lo, differing, IO_TENSOR_ORDER, detail)


def _name_at(buf: bytes, name: str, lo: int, hi: int) -> int | None:
    """Offset of ``name`` stored with its 8-byte little-endian length, first one in [lo - 64, hi)."""
    found = buf.find(struct.pack("<Q", len(name.encode())) + name.encode(), max(0, lo - _MAX_PREAMBLE), hi)
    return None if found == -1 else found


def _reordered_records(
    a: bytes, b: bytes, lo: int, hi: int, io_names: Sequence[str]
) -> tuple[list[str], list[str]] | None:
    """The tensor orders (a's, b's) when ``b[lo:hi]`` is ``a``'s tensor records in another order."""
    in_a = {n: _name_at(a, n, lo, hi) for n in dict.fromkeys(io_names)}
    in_b = {n: _name_at(b, n, lo, hi) for n in dict.fromkeys(io_names)}
    names = [n for n in in_a if in_a[n] is not None and in_b[n] is not None]
    order_a = sorted(names, key=lambda n: in_a[n] or 0)
    order_b = sorted(names, key=lambda n: in_b[n] or 0)
    if len(names) < 2 or order_a == order_b:
        return None
    for preamble in range(_MAX_PREAMBLE + 1):
        starts_a = {n: (in_a[n] or 0) - preamble for n in names}
        starts_b = {n: (in_b[n] or 0) - preamble for n in names}
        first = starts_a[order_a[0]]
        if first > lo or first != starts_b[order_b[0]]:
            continue
        for end in _candidate_ends(order_a, order_b, starts_a, starts_b, hi):
            if _permuted(a, b, order_a, order_b, starts_a, first, end):
                return order_a, order_b
    return None


def _candidate_ends(
    order_a: list[str], order_b: list[str], starts_a: dict[str, int], starts_b: dict[str, int], hi: int
) -> list[int]:
    """Where the last record may end: the last differing byte, or where b's length of a's last record puts it."""
    last = order_a[-1]
    index = order_b.index(last)
    ends = [hi]
    if index + 1 < len(order_b):
        ends.append(starts_a[last] + starts_b[order_b[index + 1]] - starts_b[last])
    return [end for end in ends if end >= hi]


def _permuted(
    a: bytes, b: bytes, order_a: list[str], order_b: list[str], starts_a: dict[str, int], first: int, end: int
) -> bool:
    bounds = [starts_a[n] for n in order_a] + [end]
    if any(x >= y for x, y in pairwise(bounds)):
        return False
    records = {n: a[bounds[i] : bounds[i + 1]] for i, n in enumerate(order_a)}
    return b"".join(records[n] for n in order_b) == b[first:end]
