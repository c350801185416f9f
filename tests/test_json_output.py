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

import json
import os
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main

from tests import json_schemas, onnx_models
from tests.cli_server import CliServer
from tests.conftest import MLP_RECIPE, subprocess_env
from tests.test_fleet import module_cli
from trtforge.cli._shapes import ENVELOPE, NO_ENVELOPE, SHAPES
from trtforge.core.crashpoints import CRASHPOINT_ENV, RESUME
from trtforge.core.errors import ERROR_KINDS

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


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["build", "{recipe}", "--bogus"], "No such option: --bogus"),
        (["plan", "{recipe}", "--json-line"], "No such option: --json-line"),
        (["show"], "Missing argument"),
        (["cache", "list", "--all", "--bogus"], "No such option: --bogus"),
    ],
)
def test_a_command_line_click_refuses_is_a_stopped_result(args: list[str], expected: str, made, cli) -> None:
    """Before: `--json` printed nothing on stdout for a usage error (a pipeline read an empty file)."""
    argv = [str(made["recipe"]) if a == "{recipe}" else a for a in args]
    refused = cli(*argv, "--json")
    assert refused.code == 2, refused
    data = refused.json()
    stopped = data[-1] if isinstance(data, list) else data
    assert expected in stopped["error"] and stopped["error_kind"] == "bad_input", stopped
    assert "--help" in stopped["hint"]
    assert all(v is None for k, v in own_keys("", stopped).items() if k != "status"), stopped


def test_a_stopped_object_has_every_key_null(made, cli, tmp_path: Path) -> None:
    """One object with the same keys whether or not the command fails: a failure that left no
    result has the success's keys, null."""
    ok = cli("show", made["id"], "--store", made["store"], "--json").json()
    refused = cli("show", "ffffffffffff", "--store", made["store"], "--json")
    assert refused.code == 2 and set(refused.json()) == set(ok)
    assert all(v is None for v in own_keys("show", refused.json()).values())


# -- issue 23's findings on `build --json` ------------------------------------------------------


def test_build_json_carries_the_hint_the_kind_and_the_exit_code_of_each_recipe(cli, mlp_recipe, store: Path) -> None:
    """Before: the hint was dropped (neither in the JSON nor on stderr) and both kinds of failure
    were just "failed"."""
    good = mlp_recipe("good")
    bad_input = mlp_recipe("refit", text=MLP_RECIPE + "refit: refittable\n")  # refused before the build here
    broken = mlp_recipe("broken")
    onnx_models.save(onnx_models.unsupported_op(), broken.parent / "models" / "broken.onnx")
    result = cli("build", good, bad_input, broken, "--store", store, "--json", env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.code == 2, result
    by_name = {r["name"]: r for r in result.json()}
    assert (by_name["good"]["exit_code"], by_name["good"]["error_kind"], by_name["good"]["hint"]) == (0, None, None)
    refused, failed = by_name["refit"], by_name["broken"]
    assert (refused["exit_code"], refused["error_kind"]) == (2, "bad_input"), refused
    assert (failed["exit_code"], failed["error_kind"]) == (1, "build_failed"), failed
    assert refused["hint"] and f"hint: {refused['hint']}" in result.stderr  # in the JSON and for people
    human = cli("build", bad_input, "--store", store, env={"CUDA_VISIBLE_DEVICES": ""})
    assert f"hint: {refused['hint']}" in human.stderr  # the same hint the text output gives


def test_build_json_is_a_list_even_when_the_command_stops(cli, mlp_recipe, store: Path) -> None:
    """Before: an error that stopped `build --json` printed an object where results are a list."""
    recipe = mlp_recipe()
    for args in ((), (recipe, "--target", "flavor=tensorrt_rtx"), (recipe, "--fleet", store / "none.yaml")):
        stopped = cli("build", *args, "--store", store, "--json")
        assert stopped.code == 2, stopped
        [item] = stopped.json()
        assert (item["status"], item["error_kind"], item["recipe"]) == ("failed", "bad_input", None), item
        lines = cli("build", *args, "--store", store, "--json-lines")
        assert [json.loads(line) for line in lines.stdout.splitlines()] == [item]


def test_build_a_folder_builds_the_recipes_directly_in_it(cli, mlp_recipe, store: Path, tmp_path: Path) -> None:
    """Before: `trtforge build DIR` was refused ("is a directory") with an unrelated schema hint."""
    first, second = mlp_recipe("a", seed=1), mlp_recipe("b", seed=2)
    second.rename(second.with_suffix(".yml"))
    nested = tmp_path / "recipes" / "nested"
    nested.mkdir()
    (nested / "c.yaml").write_text(first.read_text().replace("name: a", "name: c"))  # not built: a subfolder
    result = cli("build", first.parent, "--store", store, "--json")
    assert result.code == 0, result
    assert [(Path(r["recipe"]).name, r["status"]) for r in result.json()] == [("a.yaml", "built"), ("b.yml", "built")]
    planned = cli("plan", first.parent, "--store", store, "--json").json()
    assert [(Path(p["recipe"]).name, p["status"]) for p in planned] == [("a.yaml", "cached"), ("b.yml", "cached")]
    empty = tmp_path / "empty"
    empty.mkdir()
    [item] = (refused := cli("build", empty, "--store", store, "--json")).json()
    assert refused.code == 2 and item["error"] == "no recipe file matches" and "*.yaml" in item["hint"], item


# -- --json-lines: each result as it finishes ----------------------------------------------------


def test_build_json_lines_prints_each_result_as_it_finishes(mlp_recipe, store: Path, tmp_path: Path, cli) -> None:
    """Before: without a terminal nothing was printed until every build had finished. Here the
    second recipe's build is held at a crash point (after its lock, before TensorRT): the first
    recipe's line must be on the pipe while the build process is still held."""
    done, held = mlp_recipe("done", seed=1), mlp_recipe("held", seed=2)
    assert cli("build", done, "--store", store).code == 0  # a cache hit now
    points = tmp_path / "points"
    points.mkdir()
    for fifo in ("reached", "hold"):
        os.mkfifo(points / fifo)
    env = {**subprocess_env(), CRASHPOINT_ENV: f"build-locked:{points}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trtforge", "build", done, held, "--store", store, "--jobs", "1", "--json-lines"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        with open(points / "reached") as reached:  # blocks until the held build stops there
            assert reached.read().startswith("build-locked ")
        ready, _, _ = select.select([proc.stdout], [], [], 60)  # a bound on a broken build, not a wait
        assert ready, "no line while the second build was held: results are not streamed"
        first = json.loads(proc.stdout.readline())
        assert (first["name"], first["status"]) == ("done", "cached")
        assert proc.poll() is None  # still held: the line came before the batch ended
        with open(points / "hold", "w") as hold:
            hold.write(RESUME)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    [second] = [json.loads(line) for line in out.splitlines()]
    assert (second["name"], second["status"]) == ("held", "built")
    assert [e for item in (first, second) for e in json_schemas.errors("build", item, "/$defs/result")] == []


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


def test_lookup_json_failure_carries_the_hint(made: dict[str, Any], cli) -> None:
    """Before: `lookup --json` exit 1 printed the rejections and the error, but not the hint the text gives."""
    refused = cli("lookup", "cnn", "--trt", TRT, "--cc", "9.0", "--store", made["store"], "--json")
    assert refused.code == 1, refused
    data = refused.json()
    assert data["best"] is None and data["error_kind"] == "failed" and data["exit_code"] == 1
    assert data["hint"] and data["hint"] in refused.stderr
    human = cli("lookup", "cnn", "--trt", TRT, "--cc", "9.0", "--store", made["store"])
    assert f"hint: {data['hint']}" in human.stderr
