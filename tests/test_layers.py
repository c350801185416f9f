"""The architecture is enforced, not only described: the import-linter contracts in pyproject.toml
hold, and no two trtforge modules import each other, directly or around a loop.

Regression for issue 11: on 55eb6bf three cycles existed (backend/run <-> verify <-> refit,
recipe <-> denylist, store/catalog <-> store/timing_caches) and the backend read plans through the store.
"""

from __future__ import annotations

import subprocess
import sys

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
