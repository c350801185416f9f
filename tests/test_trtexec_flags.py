"""docs/trtexec.md against trtexec's own option list and the recipe schema (issue 26, item 4).

The option list is tests/data/trtexec_build_flags.txt, taken from NVIDIA/TensorRT's
samples/common/sampleOptions.cpp (10.0.1 to 11.1). Every flag there has exactly one row; a row names
recipe fields that exist in `trtforge schema` (with the values it gives them valid), or says why
trtforge leaves the flag out; and what a row says of TensorRT 11 and TensorRT-RTX agrees with the
capability table.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import REPO
from trtforge.rules.capabilities import RULES

FLAGS_FILE = REPO / "tests" / "data" / "trtexec_build_flags.txt"
DOC = REPO / "docs" / "trtexec.md"
LEFT_OUT = "left out"


@dataclass(frozen=True)
class Row:
    line: int
    flag: str
    fields: list[str]
    tensorrt_10: str
    tensorrt_11: str
    rtx: str
    notes: str


def option_list() -> list[str]:
    flags = []
    for line in FLAGS_FILE.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        flag, _alias, _first, _last, kind = (part.strip() for part in line.split("|"))
        assert flag.startswith("--") and kind in ("help", "hidden"), line
        flags.append(flag)
    return flags


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def doc_rows() -> list[Row]:
    rows = []
    for number, line in enumerate(DOC.read_text().splitlines(), start=1):
        if not line.startswith("| `--"):
            continue
        cells = _cells(line)
        assert len(cells) == 6, f"docs/trtexec.md:{number}: {len(cells)} cells"
        flag = cells[0].strip("`")
        fields = [] if cells[1] == LEFT_OUT else re.findall(r"`([^`]+)`", cells[1])
        rows.append(Row(number, flag, fields, cells[2], cells[3], cells[4], cells[5]))
    return rows


def test_the_option_list_is_trtexecs() -> None:
    flags = option_list()
    assert len(flags) == len(set(flags)) >= 80
    # flags from both majors and both kinds: the list is not one release's help text
    assert {"--fp16", "--calib", "--setBuildRoute", "--distributiveIndependence", "--staticPlugins"} <= set(flags)


def test_every_flag_has_one_row_and_every_row_a_flag() -> None:
    documented = [row.flag for row in doc_rows()]
    assert sorted(documented) == sorted(set(documented)), "a flag has two rows"
    assert set(documented) == set(option_list())


def test_every_row_names_a_field_or_says_why_not() -> None:
    for row in doc_rows():
        where = f"docs/trtexec.md:{row.line} {row.flag}"
        if not row.fields:
            assert len(row.notes) > 20, f"{where}: left out without a reason"
            assert (row.tensorrt_10, row.tensorrt_11, row.rtx) == ("-", "-", "-"), where


def _resolve(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """The schema node of a dotted field path (``plugins[].library``, ``io.inputs.<name>.dtype``)."""
    defs = schema["$defs"]

    def deref(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node or "allOf" in node or "anyOf" in node:
            if "$ref" in node:
                node = defs[node["$ref"].rsplit("/", 1)[-1]]
            elif "allOf" in node:
                node = node["allOf"][0]
            else:
                node = next(n for n in node["anyOf"] if n.get("type") != "null")
        return node

    node = deref(schema)
    for part in path.split("."):
        if part.startswith("<"):
            node = deref(node["additionalProperties"])
            continue
        name = part.removesuffix("[]")
        assert name in node.get("properties", {}), f"{path}: no field {name!r}"
        node = deref(node["properties"][name])
        if part.endswith("[]"):
            assert node.get("type") == "array", f"{path}: {name} is not a list"
            node = deref(node["items"])
    return node


def _accepts(node: dict[str, Any], value: str) -> bool:
    if "enum" in node:
        return value in node["enum"]
    if node.get("type") == "boolean":
        return value in ("true", "false")
    return True


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import subprocess
    import sys

    from tests.conftest import subprocess_env

    out = subprocess.run(
        [sys.executable, "-m", "trtforge", "schema"], capture_output=True, text=True, env=subprocess_env(), check=True
    )
    return json.loads(out.stdout)


def test_every_field_named_exists_in_trtforge_schema(schema: dict[str, Any]) -> None:
    named = 0
    for row in doc_rows():
        for field in row.fields:
            path, _, value = field.partition(": ")
            if path.startswith("build.config") and value == "":
                path = "build.config"
            node = _resolve(schema, path)
            assert not value or _accepts(node, value), f"docs/trtexec.md:{row.line}: {field}: {value!r} not valid"
            named += 1
    assert named >= 70


def _rule_for(field: str) -> Any:
    by_option = {rule.option: rule for rule in RULES}
    return by_option.get(field) or by_option.get(field.split(": ")[0].replace("[]", "").replace(".load", ""))


def _refused_11(rule: Any) -> bool:
    return rule.tensorrt is None or rule.tensorrt.removed == "11.0"


def test_rows_agree_with_the_capability_table() -> None:
    """A column says "no" exactly when the table refuses every field of the row there (a row whose
    fields differ says which part is missing), and "10.X+" is the release the table has it from."""
    checked = 0
    for row in doc_rows():
        rules = [rule for rule in map(_rule_for, row.fields) if rule is not None]
        if not rules:
            continue
        checked += len(rules)
        where = f"docs/trtexec.md:{row.line} {row.flag}"
        rtx_refused = [r.tensorrt_rtx is None for r in rules]
        columns = ((row.rtx, rtx_refused), (row.tensorrt_11, [_refused_11(r) for r in rules]))
        for column, refused in columns:
            assert (column == "no") == all(refused), f"{where}: {column!r} but the table refuses {refused}"
        since = row.tensorrt_10.removesuffix("+") if row.tensorrt_10.endswith("+") else None
        if since is not None:
            assert since in {r.tensorrt.since for r in rules if r.tensorrt is not None}, f"{where}: TensorRT 10 since"
    assert checked >= 40
