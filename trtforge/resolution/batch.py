"""Many recipes at once, for CI: glob expansion and the combined exit code (targets: :mod:`.targets`).

The dry run of a build (``plan``) is :func:`trtforge.stages.build.plan_builds`.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

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


def exit_code_for(codes: list[int]) -> int:
    """2 if any input was bad, else 1 if anything failed, else 0."""
    failed = {code for code in codes if code}
    if 2 in failed:
        return 2
    return 1 if failed else 0
