"""The architecture is enforced, not only described: the import-linter contracts in pyproject.toml
hold, and no two trtforge modules import each other, directly or around a loop.

Regression for issue 11: on 55eb6bf three cycles existed (backend/run <-> verify <-> refit,
recipe <-> denylist, store/catalog <-> store/timing_caches) and the backend read plans through the store.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

from tests.conftest import REPO


def import_cycles(package: str) -> list[list[str]]:
    """Strongly connected groups of modules (Tarjan), counting every import, TYPE_CHECKING ones too."""
    graph = grimp.build_graph(package)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return groups


def test_no_module_imports_itself_around_a_loop() -> None:
    assert import_cycles("trtforge") == []


def test_the_layer_contracts_hold() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def _package_face_imports(path: Path) -> list[str]:
    """Lines of ``path`` that import the package face (``import trtforge``, ``from trtforge import X``
    where X is not a layer folder): only the CLI may stand on the public API."""
    layers = {p.name for p in (REPO / "trtforge").iterdir() if (p / "__init__.py").is_file()}
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import) and any(alias.name == "trtforge" for alias in node.names):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: import trtforge")
        elif isinstance(node, ast.ImportFrom) and node.module == "trtforge" and node.level == 0:
            faces = [alias.name for alias in node.names if alias.name not in layers]
            if faces:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: from trtforge import {', '.join(faces)}")
    return found


def test_only_the_cli_stands_on_the_public_api() -> None:
    """Regression for issue 19: stages/selftest.py did `import trtforge` and called trtforge.lookup."""
    package = REPO / "trtforge"
    offenders = [
        line
        for path in sorted(package.rglob("*.py"))
        if path.parent != package and "cli" not in path.relative_to(package).parts
        for line in _package_face_imports(path)
    ]
    assert offenders == []


def test_the_package_shows_its_layers() -> None:
    """Folders are the layers: at most six modules directly under trtforge/ besides __init__ and __main__."""
    loose = sorted(p.name for p in (REPO / "trtforge").glob("*.py") if p.name not in {"__init__.py", "__main__.py"})
    assert len(loose) <= 6, loose


def test_every_user_error_is_part_of_the_public_api() -> None:
    """A caller of the Python API catches what the CLI reports: every TrtforgeError subclass of
    core/errors.py is importable from `trtforge` and listed in its __all__ (14 were missing)."""
    import inspect

    import trtforge
    from trtforge.core import errors

    defined = {
        name
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.TrtforgeError) and cls.__module__ == errors.__name__
    }
    assert defined - set(trtforge.__all__) == set()
    assert all(getattr(trtforge, name) is getattr(errors, name) for name in defined)
