"""Optional dependencies: which extra of the package brings which module, and one error when one is missing.

Every lazy import of an optional dependency goes through :func:`require` (a check that imports
nothing) or :func:`needs` (around the import itself), and the CLI turns any ModuleNotFoundError of
these modules that still escapes into the same error: one line naming the missing module and a
hint naming the extra to install (``pip install 'trtforge[s3]'``), exit 2, never a traceback.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager

from trtforge.core.errors import MissingExtraError

# extra -> the top-level modules it installs (pyproject.toml, [project.optional-dependencies]);
# the first extra naming a module is the one suggested when nothing more specific is known.
EXTRAS: dict[str, tuple[str, ...]] = {
    "s3": ("boto3", "botocore"),
    "postgres": ("psycopg",),
    "verify": ("polygraphy", "onnxruntime", "numpy"),
    "denylist": ("polygraphy", "numpy"),
    "rtx": ("tensorrt_rtx", "numpy", "pynvml"),
    "tensorrt": ("tensorrt", "numpy", "pynvml"),
    "ray": ("ray",),
}


def missing_extra(extra: str, what: str, modules: list[str] | tuple[str, ...]) -> MissingExtraError:
    names = " and ".join(modules)
    verb = "is" if len(modules) == 1 else "are"
    return MissingExtraError(
        f"{what} needs {names}, which {verb} not installed (the '{extra}' extra)",
        hint=f"pip install 'trtforge[{extra}]'",
    )


def require(extra: str, what: str) -> None:
    """Refuse ``what`` when a module of ``extra`` is not installed (found without importing it)."""
    missing = [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]
    if missing:
        raise missing_extra(extra, what, missing)


def as_missing_extra(exc: ImportError, extra: str | None = None, what: str | None = None) -> MissingExtraError | None:
    """The error to show for a failed import of an optional module; None for any other import."""
    module = (getattr(exc, "name", None) or "").partition(".")[0]
    if extra is None or module not in EXTRAS[extra]:
        extra = next((name for name, modules in EXTRAS.items() if module in modules), None)
    if extra is None or not isinstance(exc, ModuleNotFoundError):
        return None
    return missing_extra(extra, what or "this command", [module])


@contextmanager
def needs(extra: str, what: str) -> Iterator[None]:
    """Run the block that imports ``extra``'s modules; a missing one becomes MissingExtraError."""
    try:
        yield
    except ModuleNotFoundError as exc:
        error = as_missing_extra(exc, extra, what)
        if error is None:
            raise
        raise error from None
