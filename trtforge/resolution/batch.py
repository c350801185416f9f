"""Many recipes at once, for CI: glob expansion, ``--target`` specs and the combined exit code.

The dry run of a build (``plan``) is :func:`trtforge.stages.build.plan_builds`.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trtforge.core.errors import TargetError
from trtforge.rules.target import RuntimeTarget, explicit_target

PlanStatus = Literal["cached", "build", "failed"]
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class UnmatchedPattern:
    """A glob that matched no file: reported as a failed recipe, not silently dropped."""

    pattern: str


def expand_recipes(arguments: list[str]) -> list[Path | UnmatchedPattern]:
    """Paths and glob patterns (``recipes/*.yaml``, ``**`` allowed) -> recipe paths, deduplicated."""
    seen: set[Path] = set()
    expanded: list[Path | UnmatchedPattern] = []
    for argument in arguments:
        if _GLOB_CHARS & set(argument):
            matches = sorted(Path(p) for p in glob.glob(argument, recursive=True) if Path(p).is_file())
            if not matches:
                expanded.append(UnmatchedPattern(argument))
                continue
        else:
            matches = [Path(argument)]
        for path in matches:
            key = path.absolute()
            if key not in seen:
                seen.add(key)
                expanded.append(path)
    return expanded


def parse_target_spec(spec: str) -> RuntimeTarget:
    """``flavor=tensorrt,trt=10.13.3,cc=8.6,gpu=NVIDIA A10G[,os=linux,arch=x86_64]`` -> a validated target."""
    fields: dict[str, str] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ("flavor", "trt", "cc", "gpu", "os", "arch") or key in fields:
            raise TargetError(
                f"target {spec[:80]!r} is not of the form flavor=F,trt=VERSION,cc=X.Y[,gpu=NAME][,os=OS,arch=ARCH]",
                hint="e.g. --target 'flavor=tensorrt,trt=10.13.3.9,cc=8.6,gpu=NVIDIA A10G'",
            )
        fields[key] = value.strip()
    if not fields.get("trt"):  # a spec describes another machine: its runtime is never this one's
        raise TargetError(
            f"target {spec[:80]!r} needs trt=VERSION", hint="e.g. --target 'flavor=tensorrt,trt=10.13.3.9,cc=8.6'"
        )
    return explicit_target(
        gpu=fields.get("gpu"),
        cc=fields.get("cc"),
        trt=fields.get("trt"),
        flavor=fields.get("flavor"),
        os=fields.get("os"),
        arch=fields.get("arch"),
    )


def exit_code_for(codes: list[int]) -> int:
    """2 if any input was bad, else 1 if anything failed, else 0."""
    failed = {code for code in codes if code}
    if 2 in failed:
        return 2
    return 1 if failed else 0
