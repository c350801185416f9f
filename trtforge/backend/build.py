"""Parse an ONNX model and build a serialized engine with TensorRT or TensorRT-RTX.

Why raw TensorRT calls instead of polygraphy's ``NetworkFromOnnxPath``/``CreateConfig`` here:
parser failures must name the ONNX node (polygraphy only logs them and raises a generic
error), the builder's log is kept per artifact (polygraphy routes it to its global logger and
stdout), and builder settings are driven by one table of recipe field -> builder call.
Polygraphy is used where it fits: running and comparing engines (``backend/run.py``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from trtforge.backend.config import CONFIG_RULES, ConfigRule, check_api, make_config, network_flags
from trtforge.backend.loader import import_backend
from trtforge.backend.network_settings import apply_network_settings, parser_flags_read, set_parser_flags
from trtforge.backend.plugins import (
    plugin_runtime,
    plugins_loaded,
    register_standard_plugins,
    set_plugins_to_serialize,
)
from trtforge.backend.timing_cache import attach as attach_timing_cache
from trtforge.backend.timing_cache import serialized as serialized_timing_cache
from trtforge.core.errors import BuildError
from trtforge.rules.builder_options import NamedFile
from trtforge.rules.capabilities import cpu_build_fails
from trtforge.rules.flavors import BackendInfo
from trtforge.rules.recipe import Recipe
from trtforge.rules.record import PluginRecord

# CONFIG_RULES and make_config live in backend/config.py; re-exported for existing imports.
__all__ = [
    "CONFIG_RULES",
    "BuildOutput",
    "ConfigRule",
    "ProgressSink",
    "build_plan",
    "make_config",
    "parse_network",
    "register_standard_plugins",
]


class ProgressSink(Protocol):
    """Receives TensorRT's build phases; the CLI draws a progress bar from them."""

    def phase_start(self, name: str, parent: str | None, steps: int) -> None: ...
    def step(self, name: str, step: int) -> None: ...
    def phase_finish(self, name: str) -> None: ...


@dataclass
class BuildOutput:
    plan: Any  # IHostMemory (supports the buffer protocol) or bytes
    seconds: float
    log: list[dict[str, str]]
    io_tensors: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)
    timing_cache: bytes | None = None  # serialized after the build (full TensorRT only)
    timing_cache_used: bool = False  # the stored cache given to the build was accepted
    denylist: dict[str, Any] | None = None  # enforcement report when the recipe has deny entries
    layer_info: dict[str, Any] | None = None  # engine inspector JSON, where an engine can be loaded (GPU)
    plugins: list[dict[str, Any]] = field(default_factory=list)  # the plugin libraries the build loaded

    @property
    def plan_view(self) -> memoryview:
        return memoryview(self.plan).cast("B")


LogEcho = Callable[[str, str], None]  # (level, message): TensorRT's log as it happens (a build worker's log file)


def _make_logger(
    trt: ModuleType, records: list[dict[str, str]], verbose: list[str] | None = None, echo: LogEcho | None = None
) -> Any:
    severities = {
        trt.Logger.INTERNAL_ERROR: "internal_error",
        trt.Logger.ERROR: "error",
        trt.Logger.WARNING: "warning",
    }
    info = trt.Logger.INFO

    class CapturingLogger(trt.ILogger):  # type: ignore[name-defined,misc]
        """Keeps warnings and errors for the artifact's build log; prints nothing."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            level = severities.get(severity)
            if echo is not None and (level is not None or severity == info):
                echo(level or "info", msg)  # kept outside this process: it may die next
            if level is not None:
                records.append({"level": level, "message": msg})
            elif verbose is not None:
                verbose.append(msg)  # deny-list enforcement parses the autotuning log

    return CapturingLogger()


def _make_progress_monitor(trt: ModuleType, sink: ProgressSink) -> Any:
    class Monitor(trt.IProgressMonitor):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            sink.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            sink.step(phase_name, step)
            return True

        def phase_finish(self, phase_name: str) -> None:
            sink.phase_finish(phase_name)

    return Monitor()


def parser_errors(parser: Any) -> list[dict[str, Any]]:
    """Every error the ONNX parser recorded, as plain data (``error_detail`` of `build --json`)."""
    errors = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        errors.append(
            {
                "node": error.node(),  # -1: not a node (a graph input, the model itself)
                "node_name": error.node_name(),
                "operator": error.node_operator(),
                "message": error.desc(),
                "code": str(error.code()).rsplit(".", 1)[-1],
                "function": error.func(),
                "file": error.file(),
                "line": error.line(),
            }
        )
    return errors


def _error_text(error: dict[str, Any], dtypes: dict[str, str]) -> str:
    message = " ".join(str(error["message"]).split())  # one line
    if error["node"] < 0:
        if error["function"] != "importInput":
            return f"the model: {message}"
        # graph inputs are rejected in importInput, which reports the input's name as its "file"
        name = str(error["file"])
        if "convertDtype" in message and name in dtypes:
            return f"input {name!r}: element type {dtypes[name]} is not supported by TensorRT"
        return f"input {name!r}: {message}"
    name = error["node_name"] or f"#{error['node']}"
    return f"node {name!r} ({error['operator']}): {message}"


def _input_dtypes(onnx_path: Path) -> dict[str, str]:
    """Element types of the model's inputs, to name the one the parser could not convert."""
    from trtforge.core.errors import ModelError
    from trtforge.core.onnx_reader import parse_model, read_model_bytes

    try:
        return {value.name: value.dtype for value in parse_model(read_model_bytes(onnx_path), onnx_path).inputs}
    except ModelError:
        return {}


def parse_error_line(errors: list[dict[str, Any]], dtypes: dict[str, str] | None = None) -> str:
    """The first parser error in one line, and how many other distinct ones there are."""
    texts = list(dict.fromkeys(_error_text(error, dtypes or {}) for error in errors))
    if not texts:
        return "the parser gave no details"
    more = f" (and {len(texts) - 1} more)" if len(texts) > 1 else ""
    return texts[0] + more


def _dims(dims: Any) -> list[int]:
    return [int(d) for d in dims]


def parse_network(
    trt: ModuleType,
    builder: Any,
    logger: Any,
    onnx_path: Path,
    flags: int = 0,
    recipe: Recipe | None = None,
    *,
    shown: Path | None = None,
) -> tuple[Any, Any]:
    """Network and parser for an ONNX file (with the recipe's parser flags); parser errors name the
    failing node (and ``shown``, the user's model, when ``onnx_path`` is a private copy of it)."""
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if recipe is not None:
        set_parser_flags(trt, parser, recipe)
    if not parser.parse_from_file(str(onnx_path)):
        errors = parser_errors(parser)
        raise BuildError(
            f"ONNX parse failed at {parse_error_line(errors, _input_dtypes(onnx_path))}",
            hint=_parse_hint(errors, shown or onnx_path),
            detail=errors,
        )
    return network, parser


# The ONNX parser's fallback for an operator it does not know: a plugin of the operator's name.
_PLUGIN_NOT_FOUND = "checkFallbackPluginImporter"


def _parse_hint(errors: list[dict[str, Any]], onnx_path: Path) -> str:
    missing = [e for e in errors if e["function"] == _PLUGIN_NOT_FOUND]
    if missing:
        ops = ", ".join(dict.fromkeys(str(e["operator"]) for e in missing))
        return (
            f"no plugin implements {ops}: name the plugin library that does in the recipe's plugins "
            "(docs/trtexec.md, Plugins)"
        )
    return f"model: {onnx_path}; `--json` lists every parser error (error_detail)"


def check_builder_version(trt: ModuleType, backend: BackendInfo) -> None:
    """The imported builder must be the release the build key names (package metadata), in full.

    The key is computed without importing TensorRT; a second copy of the module on sys.path or
    a stale install could otherwise build a plan under another release's key.
    """
    loaded = str(getattr(trt, "__version__", "") or "unknown")
    if loaded != backend.version:
        raise BuildError(
            f"the imported {backend.module_name} module is version {loaded}, "
            f"but its package metadata (the build key) says {backend.version}",
            hint=f"reinstall {backend.module_name} so that one copy is installed (check sys.path)",
        )


def _refuse_shape_tensor_inputs(network: Any) -> None:
    """A shape-tensor input (its values decide other tensors' shapes, e.g. Reshape's `shape`) needs
    an optimization profile that gives its values (``set_shape_input``), which recipes cannot
    express; say so instead of TensorRT's "no optimization profile has been defined"."""
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    shape_inputs = [t for t in inputs if t.is_shape_tensor]
    if not shape_inputs:
        return
    shown = ", ".join(f"{t.name!r} {list(t.shape)}" for t in shape_inputs)
    one = len(shape_inputs) == 1
    raise BuildError(
        f"{'input' if one else 'inputs'} {shown} {'is a shape tensor' if one else 'are shape tensors'}: "
        f"TensorRT needs {'its' if one else 'their'} values in an optimization profile, which a recipe cannot give",
        hint="make the values part of the model (an initializer or Constant) if they are fixed",
    )


def _io_tensors(network: Any) -> list[dict[str, Any]]:
    return [
        {"name": t.name, "mode": mode, "dtype": str(t.dtype).rsplit(".", 1)[-1].lower(), "shape": _dims(t.shape)}
        for mode, tensors in (
            ("input", [network.get_input(i) for i in range(network.num_inputs)]),
            ("output", [network.get_output(i) for i in range(network.num_outputs)]),
        )
        for t in tensors
    ]


def _build_failed(records: list[dict[str, str]], recipe: Recipe, backend: BackendInfo) -> BuildError:
    errors = [r["message"] for r in records if r["level"] != "warning"]
    detail = errors[-1] if errors else "no error was logged"
    gpu_only = cpu_build_fails(recipe, backend)
    hint = None
    if gpu_only:
        hint = (
            f"{', '.join(gpu_only)} cannot be built on a CPU-only machine with {backend.label} "
            "(REFIT/STRIP_PLAN need CUDA, VERSION_COMPATIBLE the lean runtime); build on a GPU machine"
        )
    elif "HW-specific datatypes" in detail:  # e.g. fp8 for the Ampere targets of the default list
        hint = (
            "the model uses a data type some of the targets lack: set compatibility.compute_capabilities "
            "to targets that have it (fp8: 8.9, 12.0, 12.1)"
        )
    return BuildError(
        f"{backend.label} failed to build the engine: {detail.splitlines()[0]}",
        hint=hint,
        detail=[r for r in records if r["level"] != "warning"],
    )


def _check_version_compatible_plugins(parser: Any, recipe: Recipe, files: Sequence[NamedFile]) -> None:
    """trtexec adds the plugin libraries the parser says a version-compatible engine needs
    (IParser::getUsedVCPluginLibraries) to the build behind the user's back; trtforge asks for them
    in the recipe instead, so the key and the record name every library (= --ignoreParsedPluginLibs
    plus an error where trtexec would have added one)."""
    if not recipe.compatibility.version_compatible or not hasattr(parser, "get_used_vc_plugin_libraries"):
        return
    named = {Path(f.path).name for f in files if f.field.startswith("plugins[")}
    missing = [lib for lib in parser.get_used_vc_plugin_libraries() if Path(lib).name not in named]
    if missing:
        from trtforge.core.errors import BadInputError

        raise BadInputError(
            f"the ONNX parser says this version-compatible engine needs plugin libraries {', '.join(missing)}",
            hint="list them under plugins (serialize: true embeds them in the plan)",
        )


def _check_before_build(trt: ModuleType, builder: Any, recipe: Recipe, backend: BackendInfo) -> None:
    """What the capability table cannot know without the module: every API the recipe's options
    need, and build.config's names and values, refused (exit 2) before any work."""
    check_api(trt, recipe, backend.label)
    if recipe.build.config:
        from trtforge.backend.config_overrides import check_overrides

        check_overrides(trt, builder.create_builder_config(), recipe.build.config, backend.label)


def _calibration_cache(recipe: Recipe, files: Sequence[NamedFile]) -> bytes | None:
    """The calibration cache's bytes, checked against the digest the build key holds."""
    calibration = recipe.precision.calibration
    if calibration is None:
        return None
    named = next((f for f in files if f.field == "precision.calibration.cache"), None)
    if named is None:
        raise BuildError("precision.calibration.cache: the build was given no file for it (a bug)")
    data = named.path.read_bytes()
    if hashlib.sha256(data).hexdigest() != named.sha256:
        raise BuildError(f"{named.field}: {named.path} changed after its digest was taken for the build key")
    return data


@dataclass
class _Builder:
    """One build's TensorRT objects: the module, the builder, its logger and what the logger keeps."""

    trt: ModuleType
    backend: BackendInfo
    builder: Any
    logger: Any
    records: list[dict[str, str]]
    verbose: list[str] | None  # VERBOSE/INFO lines, kept for deny-list enforcement
    # the plugin libraries a runtime needs for this build's plans (loaded, not embedded): the
    # inspector's deserialization loads them as every deserialization does
    runtime_plugins: list[PluginRecord] = field(default_factory=list)


def build_plan(
    backend: BackendInfo,
    recipe: Recipe,
    onnx_path: Path,
    progress: ProgressSink | None = None,
    *,
    use_timing_cache: bool = False,
    timing_cache: bytes | None = None,
    files: Sequence[NamedFile] = (),
    shown: Path | None = None,
    log_echo: LogEcho | None = None,
    layerwise: bool = False,
) -> BuildOutput:
    """Build the recipe's engine; raises BuildError with the builder's last error on failure.

    With ``use_timing_cache`` the build starts from ``timing_cache`` (or an empty cache) and the
    output carries the cache with the entries this build added. ``files`` are the plugin libraries
    and calibration cache resolution found and keyed (resolve.Resolution.files). ``shown``: the
    model's path as the user knows it, when ``onnx_path`` is the build's private copy. ``log_echo``
    hears every log line of severity info and above as TensorRT emits it (a build worker writes
    them to its log). ``layerwise``: `verify --per-layer`'s diagnostic engine, this very build with
    every tensor marked as an output (its one difference).
    """
    trt = import_backend(backend)
    check_builder_version(trt, backend)
    records: list[dict[str, str]] = []
    verbose: list[str] | None = [] if recipe.tactics.deny else None
    logger = _make_logger(trt, records, verbose, log_echo)
    register_standard_plugins(trt, logger)
    session = _Builder(trt, backend, trt.Builder(logger), logger, records, verbose)
    _check_before_build(trt, session.builder, recipe, backend)
    with plugins_loaded(trt, session.builder, recipe, files, records, backend.label) as plugins:
        session.runtime_plugins = [PluginRecord(**p) for p in plugins if not p["serialized"]]
        started = time.perf_counter()
        network, config, settings = _configured(session, recipe, onnx_path, files, shown, layerwise)
        configured = (network, config, settings)
        output = _build_configured(session, recipe, configured, progress, use_timing_cache, timing_cache)
        output.seconds = time.perf_counter() - started  # parsing included
    output.plugins = plugins
    return output


def _configured(
    session: _Builder,
    recipe: Recipe,
    onnx_path: Path,
    files: Sequence[NamedFile],
    shown: Path | None,
    layerwise: bool,
) -> tuple[Any, Any, dict[str, Any]]:
    """The network and the builder config of the recipe's build, and the settings read back from them:
    the builder config (calibration cache, build.config overrides), the plugin libraries to embed,
    the parsed network (with the parser flags) and the network-side fields. With ``layerwise``
    every tensor is then marked as an output (polygraphy's mark-all), for the per-layer diagnostic."""
    trt, builder, logger = session.trt, session.builder, session.logger
    config, settings = make_config(trt, builder, None, recipe, calibration_cache=_calibration_cache(recipe, files))
    serialized = set_plugins_to_serialize(config, recipe, files)
    if serialized is not None:
        settings["plugins.serialize"] = serialized
    network, parser = parse_network(trt, builder, logger, onnx_path, network_flags(trt, recipe), recipe, shown=shown)
    _refuse_shape_tensor_inputs(network)
    _check_version_compatible_plugins(parser, recipe, files)
    settings["strongly_typed"] = bool(network.get_flag(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    settings.update(parser_flags_read(trt, parser, recipe))
    settings.update(apply_network_settings(trt, network, config, recipe))
    if layerwise:
        from polygraphy.backend.trt import util as trt_util  # bound to the flavor by import_backend

        from trtforge.backend.compare import quiet

        with quiet():
            trt_util.mark_layerwise(network)
    if session.backend.flavor == "tensorrt" and recipe.build.profiling_verbosity is None:
        # Layer information (tactic per layer) is what deny lists are derived from and checked against.
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        settings["build.profiling_verbosity"] = "detailed"
    return network, config, settings


def _build_configured(
    session: _Builder,
    recipe: Recipe,
    configured: tuple[Any, Any, dict[str, Any]],
    progress: ProgressSink | None,
    use_timing_cache: bool,
    timing_cache: bytes | None,
) -> BuildOutput:
    """Build the configured network: progress, timing cache, deny-list enforcement, layer information."""
    trt, backend, builder = session.trt, session.backend, session.builder
    network, config, settings = configured
    records, verbose, deny = session.records, session.verbose, recipe.tactics.deny
    if progress is not None:
        config.progress_monitor = _make_progress_monitor(trt, progress)
    cache_used = attach_timing_cache(trt, config, timing_cache, records) if use_timing_cache else False
    io_tensors = _io_tensors(network)
    report = None
    # what deserializes this build's plans for their layer information: a runtime with the plugins they need
    inspector = partial(plugin_runtime, trt, session.logger, session.runtime_plugins, records)
    if verbose is not None:
        from trtforge.backend.denylist_enforce import build_with_denylist

        plan, enforcement = build_with_denylist(
            trt, backend, builder, network, config, deny, verbose, runtime=inspector
        )
        report = enforcement.as_json()
    else:
        plan = builder.build_serialized_network(network, config)
    if plan is None or plan.nbytes == 0:
        raise _build_failed(records, recipe, backend)
    layer_info = None
    if backend.flavor == "tensorrt":
        from trtforge.backend.denylist_enforce import engine_layer_info

        layer_info = engine_layer_info(trt, plan, runtime=inspector)
    return BuildOutput(
        plan,
        0.0,  # build_plan times the whole build
        records,
        io_tensors,
        settings,
        timing_cache=serialized_timing_cache(config) if use_timing_cache else None,
        timing_cache_used=cache_used,
        denylist=report,
        layer_info=layer_info,
    )
