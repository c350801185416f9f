"""TensorRT timing caches through the documented ITimingCache API (full TensorRT only).

TensorRT-RTX accepts these calls and does nothing (its API reference marks them as no-ops
since 1.2), so the build stage skips them there. ``ignore_mismatch`` is never set: a cache
from another device or version is reported and the build starts without it.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)


def attach(trt: ModuleType, config: Any, data: bytes | None, records: list[dict[str, str]]) -> bool:
    """Give ``config`` a timing cache built from ``data`` (or empty); True if ``data`` was used."""
    before = len(records)
    cache = config.create_timing_cache(data or b"")
    rejected = any("timing cache" in r["message"].lower() for r in records[before:])
    if data and (cache is None or rejected):
        _report(records, "stored timing cache could not be read by TensorRT; building without it")
        cache = config.create_timing_cache(b"")
        data = None
    if not config.set_timing_cache(cache, False):
        _report(records, "stored timing cache does not match this device or TensorRT version; building without it")
        config.set_timing_cache(config.create_timing_cache(b""), False)
        return False
    return bool(data)


def serialized(config: Any) -> bytes | None:
    """The config's timing cache after a build, with the entries the build added."""
    cache = config.get_timing_cache()
    if cache is None:
        return None
    return bytes(memoryview(cache.serialize()).cast("B"))


def combine(trt: ModuleType, base: bytes | None, new: bytes) -> bytes:
    """``base`` with ``new``'s entries added (ITimingCache.combine); ``new`` alone if base is unusable."""
    if not base:
        return new
    builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    config = builder.create_builder_config()
    merged = config.create_timing_cache(base)
    incoming = config.create_timing_cache(new)
    if merged is None or incoming is None or not merged.combine(incoming, False):
        log.warning("timing caches could not be combined; keeping the new cache only")
        return new
    return bytes(memoryview(merged.serialize()).cast("B"))


def _report(records: list[dict[str, str]], message: str) -> None:
    log.warning(message)
    records.append({"level": "warning", "message": f"trtforge: {message}"})
