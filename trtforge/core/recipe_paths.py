"""Paths written in recipes: ``${VAR}``/``$VAR`` and ``~`` expanded, joined to the recipe's folder.

Apart from :mod:`trtforge.rules.recipe` (no pydantic), so that a cache hit can expand a recipe's paths
again without loading the recipe models (see :mod:`trtforge.resolution.resolved_cache`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ENV_VAR = re.compile(r"\$(?:\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def expand_path(value: str, base: Path, what: str) -> Path:
    """A recipe path made usable: ``${VAR}``/``$VAR`` and ``~`` expanded, relative paths joined to
    ``base`` (the recipe's directory). Absolute paths and ``..`` are the user's call: the model and
    side files are inputs the user chose, and nothing is ever written to them.

    Raises ValueError naming an unset (or malformed) variable, or a path that cannot be resolved
    (UnresolvablePath: a symlink loop, a name too long).
    """

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) if match.group(1) is not None else match.group(2)
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"{what} {value}: ${{{name}}} is not a variable name")
        found = os.environ.get(name)
        if found is None:
            raise ValueError(f"{what} {value}: environment variable {name} is not set")
        return found

    expanded = os.path.expanduser(ENV_VAR.sub(substitute, value))
    try:
        return (base / expanded).resolve()  # an absolute `expanded` replaces base
    except (OSError, RuntimeError) as exc:  # Python < 3.13 raises RuntimeError on a symlink loop
        reason = "a symlink loop" if isinstance(exc, RuntimeError) else (exc.strerror or str(exc))
        raise UnresolvablePath(f"{what} {value}: cannot be resolved ({reason})") from None


class UnresolvablePath(ValueError):
    """A recipe path the file system cannot resolve: the fix is the path, not a variable."""

    hint = "fix the path (or the symlinks along it) so that it names a file"


def path_hint(exc: ValueError) -> str:
    """The way out of an expand_path error: its own for an unresolvable path, else the variable."""
    if isinstance(exc, UnresolvablePath):
        return exc.hint
    return "set the variable, or write the path out in the recipe"


def path_text(value: str) -> str:
    """A path as written in a recipe: any path the user can read (checked when it is resolved)."""
    if not value.strip():
        raise ValueError("must be a path (absolute, ~, ${VAR}, or relative to the recipe file)")
    if "\0" in value:
        raise ValueError("must not contain a NUL character")
    return value
