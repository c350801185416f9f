"""The JSON Schemas of `--json` output (docs/schemas/*.json), for tests: validators that resolve the
schemas' references to each other (`common.json#/$defs/envelope`) from the repository's files.

``conftest.CliResult.json()`` checks every `--json` (and `--json-lines`) output a test reads
against its command's schema, so every CLI test is also a test of the documented shapes.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schemas"


@cache
def registry() -> Registry:
    resources = []
    for path in sorted(SCHEMAS.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        resources.append((document["$id"], Resource.from_contents(document)))
    return Registry().with_resources(resources)


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.json").read_text(encoding="utf-8"))


@cache
def validator(name: str, part: str = "") -> jsonschema.Draft202012Validator:
    """A validator of docs/schemas/<name>.json (``part``: a JSON pointer into it, e.g. ``/$defs/result``)."""
    document = schema(name)
    return jsonschema.Draft202012Validator({"$ref": document["$id"] + "#" + part}, registry=registry())


def errors(name: str, data: Any, part: str = "") -> list[str]:
    """Every way ``data`` breaks the schema, one line each (empty: it conforms)."""
    found = validator(name, part).iter_errors(data)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in found]


def item_part(name: str) -> str:
    """Where one item of a command's list (one line of its `--json-lines`) is defined."""
    return "/$defs/report" if name == "verify" else "/$defs/result"


def output_errors(argv: list[str], stdout: str) -> list[str]:
    """How a command's `--json`/`--json-lines` stdout breaks its documented schema (empty: it conforms,
    or the command prints no JSON envelope: `schema`, `--help`)."""
    from trtforge.cli._shapes import NO_ENVELOPE, SHAPES, command_of

    command = command_of(argv)
    if command is None or command in NO_ENVELOPE or "--help" in argv or command not in SHAPES:
        return []
    name = SHAPES[command].name
    if "--json-lines" in argv:
        lines = stdout.splitlines()
        if not lines:
            return ["--json-lines printed nothing"]
        part = item_part(name)
        return [f"line {i}: {e}" for i, line in enumerate(lines) for e in errors(name, json.loads(line), part)]
    if "--json" in argv:
        return errors(name, json.loads(stdout))
    return []
