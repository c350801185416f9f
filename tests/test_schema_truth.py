"""The recipe schema tells the truth (issue 23, item 3).

Every recipe in the repository and every YAML recipe shown in README.md and docs/ validates both
against the JSON Schema `trtforge schema` prints (with the `jsonschema` package, reading YAML as
PyYAML does, i.e. YAML 1.1) and with trtforge itself. And for the YAML spellings trtforge converts
(numbers written as numbers, a bare ``off``, exponents YAML 1.1 reads as text, tactic ids read as
integers), the schema and trtforge give the same verdict.

In the docs, a fenced ``yaml`` block whose top level has ``name:`` and ``model:`` is a whole
recipe. A block that is part of a recipe is marked with the line ``<!-- recipe fragment -->``
right above its fence; it is checked as the fields of a recipe that has a name and a model. An
unmarked block whose top-level keys are all recipe fields fails the test (mark it or complete it);
other YAML (workflows, deny files) is left alone.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import REPO, subprocess_env
from trtforge.core.errors import RecipeError
from trtforge.rules.recipe import Recipe, load_recipe, parse_recipe

FRAGMENT_MARK = "<!-- recipe fragment -->"
FRAGMENT_HEAD = "name: doc-fragment\nmodel: {onnx: model.onnx}\n"
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
SKIPPED_DIRS = {".git", ".ci", "cache_store", "node_modules", ".venv", "venv"}


@pytest.fixture(scope="module")
def validator(tmp_path_factory: pytest.TempPathFactory) -> jsonschema.Draft202012Validator:
    """The schema as `trtforge schema` prints it, checked as a schema first."""
    out = subprocess.run(
        [sys.executable, "-m", "trtforge", "schema"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path_factory.mktemp("schema"),
        env=subprocess_env(),
    ).stdout
    schema = json.loads(out)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(validator: jsonschema.Draft202012Validator, text: str) -> list[str]:
    data = yaml.safe_load(text)  # YAML 1.1, as most CI validators read it
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)]


def trtforge_error(text: str) -> str | None:
    try:
        parse_recipe(text, "<doc>")
    except RecipeError as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------------------------------------
# Which YAML is a recipe


def is_recipe(data: Any) -> bool:
    return isinstance(data, dict) and "name" in data and "model" in data


def repository_recipes() -> list[Path]:
    """Every YAML file in the repository whose top level has name and model."""
    found = []
    for path in sorted([*REPO.rglob("*.yaml"), *REPO.rglob("*.yml")]):
        if SKIPPED_DIRS & set(path.relative_to(REPO).parts):
            continue
        if is_recipe(yaml.safe_load(path.read_text(encoding="utf-8"))):
            found.append(path)
    return found


@dataclass(frozen=True)
class DocBlock:
    where: str  # file:line of the fence
    text: str
    fragment: bool  # marked as part of a recipe


_FENCE = re.compile(r"^(`{3,}|~{3,})\s*(\S*)")


def yaml_blocks(path: Path) -> list[DocBlock]:
    """Fenced yaml blocks of a Markdown file, with whether the line above marks a fragment."""
    blocks: list[DocBlock] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    fence: str | None = None
    start, body, kind = 0, [], ""
    for number, line in enumerate(lines, start=1):
        match = _FENCE.match(line.strip())
        if fence is None and match:
            fence, kind, start, body = match.group(1), match.group(2).lower(), number, []
        elif fence is not None and match and line.strip().rstrip(fence[0]) == "" and line.strip()[0] == fence[0]:
            if kind in ("yaml", "yml"):
                marked = start >= 2 and lines[start - 2].strip() == FRAGMENT_MARK
                blocks.append(DocBlock(f"{path.relative_to(REPO)}:{start}", "\n".join(body) + "\n", marked))
            fence = None
        elif fence is not None:
            body.append(line)
    return blocks


def doc_recipes() -> list[DocBlock]:
    """The docs' yaml blocks that are recipes, marked fragments, or recipe parts left unmarked."""
    fields = set(Recipe.model_fields)
    chosen = []
    for path in DOC_FILES:
        for block in yaml_blocks(path):
            data = yaml.safe_load(block.text)
            if block.fragment or is_recipe(data) or (isinstance(data, dict) and data and set(data) <= fields):
                chosen.append(block)
    return chosen


# ---------------------------------------------------------------------------------------------
# The checks


def test_the_repository_recipes_are_found() -> None:
    """The scan is not vacuous: every file under recipes/ with a .yaml name is found as a recipe."""
    found = set(repository_recipes())
    assert set((REPO / "recipes").glob("*.yaml")) <= found and found


@pytest.mark.parametrize("path", repository_recipes(), ids=lambda p: str(p.relative_to(REPO)))
def test_repository_recipe_is_valid_for_the_schema_and_for_trtforge(
    path: Path, validator: jsonschema.Draft202012Validator
) -> None:
    text = path.read_text(encoding="utf-8")
    assert schema_errors(validator, text) == []
    load_recipe(path)  # raises RecipeError naming file:line field


@pytest.mark.parametrize("path", repository_recipes(), ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_recipes_quote_off(path: Path) -> None:
    """A YAML 1.1 parser reads a bare ``off`` as false: shipped recipes write "off"."""
    build = yaml.safe_load(path.read_text(encoding="utf-8")).get("build") or {}
    assert build.get("timing_cache", "shared") is not False, f'{path.name}: write timing_cache: "off"'


def test_docs_show_recipes() -> None:
    """The docs' scan is not vacuous: README's recipe and at least one fragment are found."""
    blocks = doc_recipes()
    assert any(b.where.startswith("README.md:") and not b.fragment for b in blocks)
    assert any(b.fragment for b in blocks)


@pytest.mark.parametrize("block", doc_recipes(), ids=lambda b: b.where)
def test_doc_recipe_is_valid_for_the_schema_and_for_trtforge(
    block: DocBlock, validator: jsonschema.Draft202012Validator
) -> None:
    if not block.fragment and not is_recipe(yaml.safe_load(block.text)):
        pytest.fail(f"{block.where}: part of a recipe, not a whole one: put {FRAGMENT_MARK} above its fence")
    text = FRAGMENT_HEAD + block.text if block.fragment else block.text
    assert schema_errors(validator, text) == [], block.where
    assert trtforge_error(text) is None, block.where


# The YAML spellings trtforge converts (and neighbours it refuses): the schema's verdict must be
# trtforge's. Each line is a recipe's tail after name and model.
SPELLINGS = [
    "build: {timing_cache: off}",  # YAML 1.1: false
    'build: {timing_cache: "off"}',
    "build: {timing_cache: private}",
    "build: {timing_cache: true}",
    "build: {timing_cache: no}",
    "compatibility: {compute_capabilities: [8.6, 8.9, 12.0]}",
    "compatibility: {compute_capabilities: [12, 8.6]}",
    'compatibility: {compute_capabilities: ["8.6", 12.0]}',
    "compatibility: {compute_capabilities: [true]}",
    "compatibility: {compute_capabilities: []}",
    "verify: {atol: 1e-5, rtol: 1.0e-3}",  # YAML 1.1 reads 1e-5 as text
    "verify: {atol: abc}",
    "verify: {outputs: {y: {rtol: 2e-4}}}",
    "verify: {inputs: {x: {distribution: normal, mean: -1e2, std: 1e1}}}",
    "tactics: {deny: [{layer: conv1, tactic: 0x1f, reason: drifts}]}",  # YAML 1.1: 31
    "tactics: {deny: [{layer: conv1, tactic: 31, reason: drifts}]}",
    "tactics: {deny: [{layer: conv1, tactic: 1.5, reason: drifts}]}",
]


@pytest.mark.parametrize("tail", SPELLINGS)
def test_schema_and_trtforge_agree_on_yaml_spellings(tail: str, validator: jsonschema.Draft202012Validator) -> None:
    text = FRAGMENT_HEAD + tail + "\n"
    by_schema = schema_errors(validator, text) == []
    error = trtforge_error(text)
    assert by_schema == (error is None), (tail, schema_errors(validator, text), error)


def test_the_schema_says_which_spellings_it_accepts(validator: jsonschema.Draft202012Validator) -> None:
    """Each accepted spelling is described where an editor shows it, not only allowed."""
    defs = validator.schema["$defs"]

    def described(prop: dict[str, Any], check: Callable[[dict[str, Any]], bool]) -> bool:
        return any(check(option) and option.get("description") for option in prop["anyOf"])

    timing = defs["BuildOptions"]["properties"]["timing_cache"]
    assert described(timing, lambda o: o.get("const") is False)
    capabilities = defs["Compatibility"]["properties"]["compute_capabilities"]
    assert described(capabilities, lambda o: "number" in json.dumps(o.get("items", {})))
