"""Many recipes at once, for CI: glob expansion and the combined exit code (targets: :mod:`.targets`).

The dry run of a build (``plan``) is :func:`trtforge.stages.build.plan_builds`.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_GLOB_CHARS = set("*?[")


# A folder given as a recipe argument means the recipe files directly in it (not its subfolders:
# `'DIR/**/*.yaml'` says that), in sorted order.
FOLDER_PATTERNS = ("*.yaml", "*.yml")


@dataclass(frozen=True)
class UnmatchedPattern:
    """A glob (or a folder) that matched no recipe file: reported as a failed recipe, not silently dropped."""

    pattern: str
    folder: bool = False

    @property
    def hint(self) -> str:
        if self.folder:
            return (
                f"a folder means the {' and '.join(FOLDER_PATTERNS)} files directly in it; "
                f"for its subfolders too, give '{Path(self.pattern) / '**' / '*.yaml'}'"
            )
        return "a pattern is matched from the working directory (quote it, so the shell leaves it to trtforge)"


def folder_recipes(folder: Path) -> list[Path]:
    """The recipe files directly in ``folder`` (:data:`FOLDER_PATTERNS`), sorted."""
    return sorted({p for pattern in FOLDER_PATTERNS for p in folder.glob(pattern) if p.is_file()})


def expand_recipes(arguments: list[str]) -> list[Path | UnmatchedPattern]:
    """Paths, folders (their ``*.yaml``/``*.yml`` files) and glob patterns (``recipes/*.yaml``,
    ``**`` allowed) -> recipe paths, deduplicated."""
    seen: set[Path] = set()
    expanded: list[Path | UnmatchedPattern] = []
    for argument in arguments:
        if is_pattern(argument):
            matches = sorted(Path(p) for p in glob.glob(argument, recursive=True) if Path(p).is_file())
        elif Path(argument).is_dir():
            matches = folder_recipes(Path(argument))
        else:
            matches = [Path(argument)]
        if not matches:
            expanded.append(UnmatchedPattern(argument, folder=Path(argument).is_dir()))
            continue
        for path in matches:
            key = path.absolute()
            if key not in seen:
                seen.add(key)
                expanded.append(path)
    return expanded


def names_many(arguments: Sequence[str]) -> bool:
    """Whether recipe arguments may name several recipes: more than one, a glob pattern or a folder
    (a command over many items prints a list for them, even when one recipe matched)."""
    return len(arguments) != 1 or is_pattern(arguments[0]) or Path(arguments[0]).is_dir()


def is_pattern(argument: str) -> bool:
    """Whether a recipe argument is a glob pattern: it has ``*``/``?``/``[`` and names no existing
    file or folder (a file called ``x[1].yaml`` is that file, not a pattern matching ``x1.yaml``)."""
    return bool(_GLOB_CHARS & set(argument)) and not Path(argument).exists()


def exit_code_for(codes: list[int]) -> int:
    """2 if any input was bad, else 1 if anything failed, else 0."""
    failed = {code for code in codes if code}
    if 2 in failed:
        return 2
    return 1 if failed else 0
