"""Plugin libraries at run time (issue 26): every deserialization of a plan loads the libraries it needs.

Artifacts are real TensorRT-RTX builds with real shared libraries (tests/plugin_libraries.py: one a
plugin registry loads, one that holds no plugin and loads statically); the libraries are loaded into
a real TensorRT-RTX runtime. On a machine without a GPU the runtime supports, the one step that
cannot run is ``deserialize_cuda_engine``: the tests do everything before it and skip there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import onnx_models
from tests.gpu_steps import kept_results, runtime_up_to_loading, stopped
from tests.plugin_libraries import CREATOR_NAME, creator_library, creators, mapped, plain_library
from tests.test_refit import refittable_copy
from trtforge.backend.loader import import_backend, run_in_flavor
from trtforge.core.errors import BadInputError, VerificationUnavailableError
from trtforge.rules.flavors import find_backend
from trtforge.rules.record import PluginRecord
from trtforge.store import open_existing_store

pytestmark = pytest.mark.slow  # compiles a real plugin library with g++ (.ci/run: pytest -m slow)

RECIPE = """\
name: mlp
model: {{onnx: models/mlp.onnx}}
backend: tensorrt_rtx
profiles:
  - x: {{min: [1, 4], opt: [2, 4], max: [4, 4]}}
build: {{optimization_level: 0}}
plugins:
{plugins}"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Built:
    artifact_id: str
    static: Path  # load: static, holds no plugin
    dynamic: Path | None  # load: dynamic, a library the registry loads (one creator)


@pytest.fixture
def built(cli: Callable, tmp_path: Path, store: Path) -> Callable[..., Built]:
    """Factory: the MLP built with a static library, and with ``dynamic`` also a plugin library."""

    def make(*, dynamic: bool) -> Built:
        folder = tmp_path / "recipe"
        onnx_models.save(onnx_models.mlp(), folder / "models" / "mlp.onnx")
        static = plain_library(folder / "libs" / "libstatic_ops.so")
        plugins = "  - {library: libs/libstatic_ops.so, load: static}\n"
        library = None
        if dynamic:
            library = creator_library(folder / "libs" / "libnoop_plugins.so")
            plugins = "  - {library: libs/libnoop_plugins.so}\n" + plugins
        recipe = folder / "mlp.yaml"
        recipe.write_text(RECIPE.format(plugins=plugins))
        result = cli("build", recipe, "--store", store, "--json")
        assert result.code == 0, result
        return Built(result.json()[0]["artifact_id"], static, library)

    return make


def _needed(store: Path, artifact_id: str) -> tuple[bytes, list[PluginRecord]]:
    opened = open_existing_store(store)
    assert opened is not None
    try:
        artifact = opened.catalog.get_artifact(artifact_id)
        return opened.blobs.read_verified(artifact.plan_sha256), artifact.details.plugins_needed
    finally:
        opened.close()


def test_verify_and_refit_refuse_a_changed_or_missing_library_in_one_line(
    cli: Callable, tmp_path: Path, store: Path, built: Callable[..., Built]
) -> None:
    """Checked against the recorded sha256 before anything loads (and before any GPU is looked for):
    exit 2, one line naming the library. Fails on integration (c1e1ac4): nothing checked or loaded the libraries
    (the answer was "verification needs a CUDA GPU", and on a GPU a plan without its plugins)."""
    made = built(dynamic=False)
    recorded = sha256(made.static)
    refittable = refittable_copy(store, made.artifact_id)
    weights = onnx_models.save(onnx_models.mlp(seed=1), tmp_path / "new.onnx")
    with open(made.static, "ab") as handle:  # another build of the library
        handle.write(b"\0")
    changed = (
        f"plugin library {made.static} changed since the engine was built "
        f"(sha256 {sha256(made.static)[:12]}, the plan needs {recorded[:12]}); nothing was loaded"
    )
    for command in (("verify", made.artifact_id), ("refit", refittable, "--weights", weights)):
        result = cli(*command, "--store", store, "--json")
        assert result.code == 2, result
        assert result.json()["error"] == changed, result
        assert recorded in result.json()["hint"]
    human = cli("verify", made.artifact_id, "--store", store)
    assert human.code == 2 and "Traceback" not in human.stderr
    assert [line for line in human.stderr.splitlines() if line.startswith("error: ")] == [f"error: {changed}"]
    made.static.unlink()
    gone = cli("verify", made.artifact_id, "--store", store, "--json")
    assert gone.code == 2, gone
    assert gone.json()["error"].startswith(f"plugin library {made.static} is gone: the plan needs libstatic_ops.so")
    assert len(cli("list", "--store", store, "--json").json()) == 2  # nothing was refitted


@dataclass
class VerifyRun:
    """What `verify` loaded as far as this machine goes."""

    creators: list[list[str]]  # per runtime made to deserialize a plan: the creators in its own registry
    static_loaded: bool  # the static library is loaded into the verifying process
    error: str | None  # why the engine could not load here (None: it loaded and the verification ran)
    status: str | None = None


def verify_run(artifact_id: str, store: str, static: Path) -> VerifyRun:
    """`verify` of an artifact in a process whose polygraphy is bound to TensorRT-RTX."""
    from trtforge.backend import run
    from trtforge.stages.verify import verify

    with runtime_up_to_loading(), kept_results(run, "runtime_for") as runtimes:
        try:
            status, error = verify(artifact_id, store=store).status, None
        except VerificationUnavailableError as exc:
            status, error = None, str(exc)
    return VerifyRun([creators(runtime) for runtime in runtimes], mapped(static), error, status)


def test_verify_loads_the_recorded_libraries_into_the_runtime_before_deserializing(
    store: Path, built: Callable[..., Built]
) -> None:
    """The verify stage hands the record's libraries to the runtime that deserializes the plan: the
    dynamic one is in that runtime's own registry, the static one in the process. Fails on integration (c1e1ac4):
    the runtime's registry was empty and the static library never loaded."""
    made = built(dynamic=True)
    ran = run_in_flavor("tensorrt_rtx", verify_run, made.artifact_id, str(store), made.static)
    assert ran.creators == [[CREATOR_NAME]]
    assert ran.static_loaded
    if ran.error is not None:
        stopped(ran.error)
    assert ran.status == "passed"


def _records(*libraries: tuple[Path, str]) -> list[PluginRecord]:
    return [PluginRecord(library=str(p), name=p.name, sha256=sha256(p), load=load) for p, load in libraries]


def test_every_library_is_checked_before_any_is_loaded(tmp_path: Path) -> None:
    """check, load, deserialize: a library changed since the build is refused before the first
    library loads and before the plan is looked at."""
    from trtforge.backend.run import deserialize

    trt = import_backend(find_backend("tensorrt_rtx"))
    first = plain_library(tmp_path / "first" / "libfirst.so")
    second = plain_library(tmp_path / "second" / "libsecond.so")
    plugins = _records((first, "static"), (second, "static"))
    second.write_bytes(second.read_bytes() + b"\0")
    logs: list[dict[str, str]] = []
    with pytest.raises(BadInputError, match=f"plugin library {second} changed since the engine was built"):
        deserialize(trt, b"not a plan", trt.Logger(), plugins=plugins, records=logs)
    assert not mapped(first) and not mapped(second)


def test_a_library_the_runtime_cannot_load_is_refused_before_the_plan_deserializes(tmp_path: Path) -> None:
    """A dynamic library goes through the runtime's own registry: one without getCreators is refused
    there, in TensorRT-RTX's words, and the plan is never handed to the runtime."""
    from trtforge.backend.run import _logger, deserialize

    trt = import_backend(find_backend("tensorrt_rtx"))
    library = plain_library(tmp_path / "libs" / "libnot_a_plugin.so")
    logs: list[dict[str, str]] = []
    with pytest.raises(BadInputError) as refused:
        deserialize(trt, b"not a plan", _logger(trt, logs), plugins=_records((library, "dynamic")), records=logs)
    assert str(refused.value).startswith(
        f"plugin library {library}: TensorRT-RTX could not load libnot_a_plugin.so as a plugin library: "
    )
    assert "getCreators" in str(refused.value)
    assert not any("deserializ" in record["message"].lower() for record in logs), logs


def test_the_plan_deserializes_in_a_runtime_that_holds_its_libraries(store: Path, built: Callable[..., Built]) -> None:
    from trtforge.backend.plugins import load_for_runtime
    from trtforge.backend.run import _logger, runtime_for

    made = built(dynamic=True)
    plan, needed = _needed(store, made.artifact_id)
    assert [(p.name, p.load) for p in needed] == [("libnoop_plugins.so", "dynamic"), ("libstatic_ops.so", "static")]
    trt = import_backend(find_backend("tensorrt_rtx"))
    logs: list[dict[str, str]] = []
    logger = _logger(trt, logs)
    runtime = runtime_for(trt, logger, plugins=needed, records=logs)
    assert creators(runtime) == [CREATOR_NAME] and mapped(made.static)
    load_for_runtime(trt, runtime, logger, needed, logs)  # a second engine of the plan, same registry
    assert creators(runtime) == [CREATOR_NAME]
    assert creators(runtime_for(trt, logger, records=logs)) == []  # another runtime: its own registry
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        stopped(logs[-1]["message"] if logs else "no engine")
    assert engine.num_io_tensors == 2


def test_the_deny_list_inspector_deserializes_in_a_runtime_with_the_libraries(
    store: Path, built: Callable[..., Built]
) -> None:
    """Deny-list enforcement confirms its work from the built engine's layer information: the plan is
    deserialized in the build's process, in a runtime made by the build with the libraries it needs."""
    from functools import partial

    from trtforge.backend.denylist_enforce import inspect_engine
    from trtforge.backend.plugins import plugin_runtime

    made = built(dynamic=True)
    plan, needed = _needed(store, made.artifact_id)
    trt = import_backend(find_backend("tensorrt_rtx"))
    runtimes: list[Any] = []
    make = partial(plugin_runtime, trt, trt.Logger(trt.Logger.ERROR), needed, [])

    def made_runtime() -> Any:
        runtimes.append(make())
        return runtimes[-1]

    info = inspect_engine(trt, plan, runtime=made_runtime)
    [runtime] = runtimes
    assert creators(runtime) == [CREATOR_NAME]
    if info is None:
        stopped("the runtime could not deserialize the plan here")
    assert info["Layers"]
