"""Output a pipeline can use (issue 23, item 2): regression tests for what the issue found in
`build --json` and its neighbours, tried as a CI job would.

- `build --json` said less than the text output: no hint (neither in the JSON nor on stderr), both
  kinds of failure just "failed", a top-level error an object where results are a list;
- without a terminal nothing was printed until every build had finished (now `--json-lines`);
- `trtforge build DIR` was refused ("is a directory") with an unrelated schema hint;
- `lookup --json` on exit 1 and a command line Click refuses said less than the text.

Each uses only what any trtforge has (the `cli` fixture, real TensorRT-RTX builds), so it runs
against the code before the fix too; tests/test_json_output.py checks every command's shapes.
"""

from __future__ import annotations

import json
import select
from pathlib import Path

import pytest

from tests import onnx_models
from tests.conftest import MLP_RECIPE
from tests.procs import CrashPoint, start_build

TRT = "10.13.3"


@pytest.fixture
def adopted(cli, tmp_path: Path, store: Path) -> str:
    """A full TensorRT plan adopted for an A10G (placeholder bytes): lookup ranks it, nothing loads it."""
    plan = tmp_path / "trtexec.plan"
    plan.write_bytes(b"a full TensorRT plan built by trtexec (placeholder bytes)")
    model = onnx_models.save(onnx_models.mlp(0), tmp_path / "models" / "cnn.onnx")
    done = cli("adopt", plan, "--name", "cnn", "--model", model, "--trt", TRT, "--gpu", "NVIDIA A10G",
               "--store", store, "--json")  # fmt: skip
    assert done.code == 0, done
    return done.json()["artifact_id"]


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
    refused, failed = by_name["refit"], by_name["broken"]
    assert refused["hint"] and f"hint: {refused['hint']}" in result.stderr  # in the JSON and for people
    assert (by_name["good"]["exit_code"], by_name["good"]["error_kind"], by_name["good"]["hint"]) == (0, None, None)
    assert (refused["exit_code"], refused["error_kind"]) == (2, "bad_input"), refused
    assert (failed["exit_code"], failed["error_kind"]) == (1, "build_failed"), failed
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
    point = CrashPoint(tmp_path / "points", "build-locked")  # fails, not hangs, if the build exits first
    buffered = {"PYTHONUNBUFFERED": ""}  # as in a CI job: stdout a pipe, block-buffered unless flushed
    proc = start_build(done, held, "--store", store, "--jobs", "1", "--json-lines", env={**point.env, **buffered})
    try:
        point.wait_reached(proc)  # the held build stopped there
        ready, _, _ = select.select([proc.stdout], [], [], 60)  # a bound on a broken build, not a wait
        assert ready, "no line while the second build was held: results are not streamed"
        first = json.loads(proc.stdout.readline())
        assert (first["name"], first["status"]) == ("done", "cached")
        assert proc.poll() is None  # still held: the line came before the batch ended
        point.resume()
        out, err = proc.communicate(timeout=300)
    finally:
        point.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    [second] = [json.loads(line) for line in out.splitlines()]
    assert (second["name"], second["status"]) == ("held", "built")
    assert first["exit_code"] == second["exit_code"] == 0 and first["error"] is second["error"] is None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["build", "{recipe}", "--bogus"], "No such option: --bogus"),
        (["plan", "{recipe}", "--json-line"], "No such option: --json-line"),
        (["show"], "Missing argument"),
        (["cache", "list", "--all", "--bogus"], "No such option: --bogus"),
    ],
)
def test_a_command_line_click_refuses_is_a_stopped_result(args: list[str], expected: str, mlp_recipe, cli) -> None:
    """Before: `--json` printed nothing on stdout for a usage error (a pipeline read an empty file)."""
    argv = [str(mlp_recipe()) if a == "{recipe}" else a for a in args]
    refused = cli(*argv, "--json")
    assert refused.code == 2, refused
    data = refused.json()
    stopped = data[-1] if isinstance(data, list) else data
    assert expected in stopped["error"] and stopped["error_kind"] == "bad_input", stopped
    assert "--help" in stopped["hint"]
    envelope = ("exit_code", "error", "error_kind", "hint", "more_errors", "error_detail", "status")
    assert all(v is None for k, v in stopped.items() if k not in envelope), stopped


def test_lookup_json_failure_carries_the_hint(adopted: str, cli, store: Path) -> None:
    """Before: `lookup --json` exit 1 printed the rejections and the error, but not the hint the text gives."""
    refused = cli("lookup", "cnn", "--trt", TRT, "--cc", "9.0", "--store", store, "--json")
    assert refused.code == 1, refused
    data = refused.json()
    assert data["best"] is None and data["error_kind"] == "failed" and data["exit_code"] == 1
    assert data["hint"] and data["hint"] in refused.stderr
    human = cli("lookup", "cnn", "--trt", TRT, "--cc", "9.0", "--store", store)
    assert f"hint: {data['hint']}" in human.stderr
