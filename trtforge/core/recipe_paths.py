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

    Raises ValueError naming an unset (or malformed) variable.
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
    return (base / expanded).resolve()  # an absolute `expanded` replaces base


