"""Machine output (issue 23, item 2): every command's `--json` on success and on failure, against the
JSON Schemas under docs/schemas/ (docs/json-output.md).

Every result carries the envelope (exit_code, error, error_kind, hint, more_errors, error_detail).
Commands over many items print a list, always, an error that stops them being one more item; the
others print one object with the same keys whether or not they fail. The `cli` fixture checks every
`--json` output any test reads against its command's schema (tests/json_schemas.py); this file runs
each command both ways and checks what the schemas cannot say: which keys a stopped result has,
that the exit code is the result's, that the hint is the text output's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main

from tests import json_schemas, onnx_models
from tests.cli_server import CliServer
from tests.conftest import MLP_RECIPE
from tests.test_fleet import module_cli
from trtforge.cli._shapes import ENVELOPE, NO_ENVELOPE, SHAPES
from trtforge.core.errors import ERROR_KINDS

pytestmark = pytest.mark.slow  # every command's JSON on success and failure against its schema (.ci/run: -m slow)

TRT = "10.13.3"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, cli_server: CliServer | None) -> dict[str, Any]:
    """A store with a TensorRT-RTX build of a tiny MLP (`mlp`) and a full TensorRT plan adopted for an
    A10G (`cnn`, placeholder bytes: deploy triton reads its I/O from the model)."""
    root = tmp_path_factory.mktemp("json")
    run = module_cli(cli_server, root)
    onnx_models.save(onnx_models.mlp(0), root / "models" / "mlp.onnx")
    recipe = root / "mlp.yaml"
    recipe.write_text(MLP_RECIPE.format(name="mlp", model="models/mlp.onnx", level=0))
    store = root / "store"
    built = run("build", recipe, "--store", store, "--json")
    assert built.code == 0, built
    [item] = built.json()
    version = item["target"]["trt_version"]
    plan = root / "trtexec.plan"
    plan.write_bytes(b"a full TensorRT plan built by trtexec (placeholder bytes)")
    adopted = run("adopt", plan, "--name", "cnn", "--model", root / "models" / "mlp.onnx", "--trt", TRT,
                  "--gpu", "NVIDIA A10G", "--store", store, "--json")  # fmt: skip
    assert adopted.code == 0, adopted
    return {"root": root, "recipe": recipe, "store": store, "id": item["artifact_id"], "version": version, "plan": plan}


def rtx(made: dict[str, Any]) -> tuple[str, ...]:
    return ("--flavor", "tensorrt_rtx", "--trt", made["version"], "--cc", "8.6")


# command -> the arguments of a run that succeeds here (None: needs a GPU or full TensorRT; its own
# tests read its `--json`, which the `cli` fixture checks against the schema), and of one that fails
# with bad input. {root}: a fresh folder of the test.
def success_args(command: str, made: dict[str, Any], tmp: Path) -> list[Any] | None:
    store, recipe, artifact, model = made["store"], made["recipe"], made["id"], made["root"] / "models" / "mlp.onnx"
    table: dict[str, list[Any] | None] = {
        "build": ["build", recipe],
        "build --reproduce": ["build", "--reproduce", artifact],
        "plan": ["plan", recipe],
        "coverage": ["coverage", recipe, *rtx(made), "--engines-only"],
        "verify": ["verify", recipe, "--reference-only"],
        "list": ["list"],
        "show": ["show", artifact],
        "lookup": ["lookup", "mlp", *rtx(made), "--explain"],
        "export": ["export", artifact, "-o", tmp / "b.tar"],
        "import": None,  # below: needs a bundle first
        "keygen": ["keygen", tmp / "k.pem"],
        "adopt": ["adopt", made["plan"], "--name", "cnn", "--model", model, "--trt", TRT, "--gpu", "NVIDIA A10G"],
        "doctor": ["doctor"],
        "refit": None,  # a refittable engine on a GPU (tests/test_gpu.py)
        "denylist derive": None,  # polygraphy results of an engine (tests/test_denylist_derive.py)
        "cache list": ["cache", "list"],
        "cache export": None,  # full TensorRT's timing caches (tests/test_timing_caches.py, test_gpu.py)
        "cache import": None,
        "cache prune": ["cache", "prune", "--dry-run"],
        "fsck": ["fsck"],
        "gc": ["gc", "--dry-run", "--keep-last", "1"],
        "pin": ["pin", artifact],
        "unpin": ["unpin", artifact],
        "deploy triton": ["deploy", "triton", "cnn", "-o", tmp / "repo", "--trt", TRT, "--cc", "8.6"],
        "deploy epcontext": ["deploy", "epcontext", "mlp", "-o", tmp / "m.onnx", *rtx(made)],
        "selftest": None,  # runs every GPU check where a GPU is (tests/test_selftest.py)
    }
    args = table[command]
    return None if args is None else [*args, "--store", store] if command not in ("keygen",) else args


def failure_args(command: str, made: dict[str, Any], tmp: Path) -> list[Any]:
    store, missing = made["store"], "ffffffffffff"
    table: dict[str, list[Any]] = {
        "build": ["build"],  # no recipe
        "build --reproduce": ["build", "--reproduce", missing],
        "plan": ["plan", made["recipe"], "--target", "not a spec"],
        "coverage": ["coverage"],  # no target
        "verify": ["verify", missing],
        "list": ["list", "--catalog", "nosuchdriver://x"],
        "show": ["show", missing],
        "lookup": ["lookup", "nope", *rtx(made)],
        "export": ["export", missing, "-o", tmp / "b.tar"],
        "import": ["import", tmp / "missing.tar"],
        "keygen": ["keygen", made["root"] / "mlp.yaml"],  # exists
        "adopt": ["adopt", tmp / "missing.plan", "--name", "x", "--model", made["root"] / "models" / "mlp.onnx"],
        "doctor": ["doctor", "--device", "99"],
        "refit": ["refit", missing, "--weights", made["root"] / "models" / "mlp.onnx"],
        "denylist derive": ["denylist", "derive", tmp / "missing.json", "--artifact", missing],
        "cache list": ["cache", "list", "--catalog", "nosuchdriver://x"],
        "cache export": ["cache", "export", missing, "-o", tmp / "c.cache"],
        "cache import": ["cache", "import", tmp / "missing.cache"],
        "cache prune": ["cache", "prune", "--catalog", "nosuchdriver://x"],
        "fsck": ["fsck", "--catalog", "nosuchdriver://x"],
        "gc": ["gc", "--keep-last", "1", "--cc", "99"],
        "pin": ["pin", missing],
        "unpin": ["unpin", missing],
        "deploy triton": ["deploy", "triton", "nope", "-o", tmp / "repo"],
        "deploy epcontext": ["deploy", "epcontext", "nope", "-o", tmp / "m.onnx"],
        "selftest": ["selftest", "--keep", made["recipe"]],  # a file, not a folder (was a traceback)
    }
    args = table[command]
    return args if command in ("keygen", "doctor", "selftest") else [*args, "--store", store]


def own_keys(command: str, data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in ENVELOPE}


def test_every_command_has_a_documented_shape() -> None:
    """Each command of the real command line has a shape, and its schema's required keys are the
    shape's keys and the envelope's: code and docs cannot drift apart."""
    from trtforge.cli import app

    root = typer.main.get_command(app)
    ctx = typer.Context(root, info_name="trtforge")
    commands = []
    for name in root.list_commands(ctx):
        command = root.get_command(ctx, name)
        if hasattr(command, "list_commands"):
            commands += [f"{name} {sub}" for sub in command.list_commands(typer.Context(command, parent=ctx))]
        else:
            commands.append(name)
    assert set(commands) - NO_ENVELOPE <= set(SHAPES), set(commands) - NO_ENVELOPE - set(SHAPES)
    assert "build --reproduce" in SHAPES
    for command, shape in SHAPES.items():
        document = json_schemas.schema(shape.name)
        if shape.many:
            document = document["$defs"]["result"]
        elif shape.name == "verify":
            document = document["$defs"]["report"]
        assert set(document["required"]) == set(shape.keys), command
        envelope = json_schemas.schema("common")["$defs"]["envelope"]["required"]
        assert set(envelope) == set(ENVELOPE)
        assert document["allOf"] == [{"$ref": "common.json#/$defs/envelope"}], command


def test_every_error_kind_is_documented() -> None:
    documented = json_schemas.schema("common")["$defs"]["error_kind"]["enum"]
    assert set(ERROR_KINDS) <= set(documented)


@pytest.mark.parametrize("command", sorted(SHAPES))
def test_each_command_on_success_and_on_failure(command: str, made: dict[str, Any], tmp_path: Path, cli) -> None:
    shape = SHAPES[command]
    args = success_args(command, made, tmp_path)
    if command == "import":
        assert cli("export", made["id"], "-o", tmp_path / "b.tar", "--store", made["store"]).code == 0
        args = ["import", tmp_path / "b.tar", "--store", tmp_path / "other"]
    if args is not None:
        done = cli(*args, "--json")
        assert done.code in (0, 1), done  # reproduce may differ (1): a result either way
        data = done.json()  # checked against the schema
        results = data if shape.many else [data]
        assert isinstance(data, list) == shape.many, data
        assert all(r["error"] is None for r in results if r["exit_code"] == 0), data
        assert all(r["error"] and r["error_kind"] for r in results if r["exit_code"] != 0), data
        assert max((r["exit_code"] for r in results), default=0) == done.code

    failed = cli(*failure_args(command, made, tmp_path), "--json")
    assert failed.code == 2, failed
    data = failed.json()
    if shape.many:  # a list: the error that stopped the command is its last item
        assert isinstance(data, list), data
        stopped = data[-1]
    else:
        assert isinstance(data, dict), data
        stopped = data
    assert (stopped["exit_code"], stopped["error_kind"]) == (2, "bad_input"), stopped
    assert stopped["error"] and "\n" not in stopped["error"], stopped
    assert stopped["error"] in failed.stderr and (stopped["hint"] or "") in failed.stderr  # what the text says
    assert set(own_keys(command, stopped)) >= set(shape.keys)


def test_a_stopped_object_has_every_key_null(made, cli, tmp_path: Path) -> None:
    """One object with the same keys whether or not the command fails: a failure that left no
    result has the success's keys, null."""
    ok = cli("show", made["id"], "--store", made["store"], "--json").json()
    refused = cli("show", "ffffffffffff", "--store", made["store"], "--json")
    assert refused.code == 2 and set(refused.json()) == set(ok)
    assert all(v is None for v in own_keys("show", refused.json()).values())


@pytest.mark.parametrize("command", ["plan", "coverage", "verify"])
def test_json_lines_are_the_items_of_the_json_list(command: str, made: dict[str, Any], cli) -> None:
    """`--json-lines` prints one item per line: the same items `--json` prints as a list."""
    args = {
        "plan": ["plan", made["recipe"], made["recipe"].parent],
        "coverage": ["coverage", made["recipe"], *rtx(made), "--engines-only"],
        "verify": ["verify", made["recipe"], made["recipe"].parent, "--reference-only"],
    }[command]
    listed = cli(*args, "--store", made["store"], "--json")
    lines = cli(*args, "--store", made["store"], "--json-lines")
    assert listed.code == lines.code == 0, (listed, lines)
    assert len(listed.stdout.splitlines()) > len(lines.stdout.splitlines())  # one line per item, no indent
    assert [_comparable(i) for i in lines.lines()] == [_comparable(i) for i in listed.json()]


def _comparable(item: dict[str, Any]) -> dict[str, Any]:
    """An item without what differs from run to run: timings, and whether reference outputs were reused."""
    return {k: v for k, v in item.items() if k not in ("seconds", "perf", "points")}


# -- verify of several ---------------------------------------------------------------------------


def test_verify_of_several_prints_a_list_with_each_subjects_exit_code(made: dict[str, Any], cli) -> None:
    """One report per subject, in order, the worst exit code for the command; one subject alone
    prints the report itself."""
    result = cli("verify", made["recipe"], "ffffffffffff", "--reference-only", "--store", made["store"], "--json")
    assert result.code == 2, result
    ok, missing = result.json()
    assert (ok["status"], ok["exit_code"], ok["error"]) == ("reference-only", 0, None)
    assert (missing["subject"], missing["status"], missing["exit_code"]) == ("ffffffffffff", "failed", 2), missing
    assert missing["error_kind"] == "bad_input" and missing["points"] is None
    one = cli("verify", made["recipe"], "--reference-only", "--store", made["store"], "--json").json()
    assert isinstance(one, dict) and one["status"] == "reference-only"
    glob = cli("verify", str(made["recipe"].parent / "*.yaml"), "--reference-only", "--store", made["store"], "--json")
    assert isinstance(glob.json(), list) and len(glob.json()) == 1  # a pattern names many: a list
