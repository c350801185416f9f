"""Plugin libraries: loaded for a recipe's build (serialized into the plan where asked), and loaded
again wherever a plan that needs them is deserialized.

``load: dynamic`` goes through a plugin registry (``IPluginRegistry.load_library``, which needs the
library's ``getCreators`` entry point, as trtexec --dynamicPlugins): the builder's for a build, the
runtime's for a plan (trtexec loads ``--dynamicPlugins`` into ``IRuntime::getPluginRegistry()``
before ``deserializeCudaEngine``). ``load: static`` loads the library into the process so that its
creators register themselves (REGISTER_TENSORRT_PLUGIN, as trtexec --staticPlugins). The bytes
loaded are the bytes the build key (or the artifact's record) holds: each file is hashed again right
before it is loaded.

At run time :func:`load_for_runtime` is the one way a plan's libraries reach a runtime: every
deserialization (verify, refit, selftest, the per-layer engine, deny-list enforcement's inspector)
calls it with what the artifact records (``ArtifactDetails.plugins_needed``); the stage passes those
records, the backend never reads the store.
"""

from __future__ import annotations

import ctypes
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from trtforge.core.errors import BadInputError, BuildError
from trtforge.rules.builder_options import NamedFile
from trtforge.rules.flavors import flavor_name
from trtforge.rules.keys import sha256_file
from trtforge.rules.recipe import Recipe
from trtforge.rules.record import PluginRecord

# sha256 of the dynamic libraries this process holds in a plugin registry (a build's, until it ends; a
# runtime's, for good: its engines run the library's code). A registry refuses a library whose
# creators it already holds ("exists already"); where it is one of these, the plan has what it needs.
_HELD: Counter[str] = Counter()


def _library_files(recipe: Recipe, files: Sequence[NamedFile]) -> list[NamedFile]:
    by_field = {f.field: f for f in files}
    found = []
    for index, _plugin in enumerate(recipe.plugins):
        named = by_field.get(f"plugins[{index}].library")
        if named is None:
            raise BuildError(f"plugins[{index}].library: the build was given no file for it (a bug)")
        found.append(named)
    return found


def _last_error(records: list[dict[str, str]], since: int) -> str:
    errors = [r["message"] for r in records[since:] if r["level"] != "warning"]
    return errors[0].splitlines()[0] if errors else "no error was logged"


_NOT_A_PLUGIN_HINT = (
    "a dynamic plugin library exports getCreators (IPluginRegistry::loadLibrary); "
    "one that registers itself when loaded needs load: static"
)


def _check_bytes(named: NamedFile) -> None:
    if sha256_file(named.path) != named.sha256:
        raise BuildError(
            f"{named.field}: {named.path} changed after its digest was taken for the build key",
            hint="run the build again",
        )


@contextmanager
def plugins_loaded(
    trt: ModuleType, builder: Any, recipe: Recipe, files: Sequence[NamedFile], records: list[dict[str, str]], label: str
) -> Iterator[list[dict[str, Any]]]:
    """Load the recipe's plugin libraries for one build; yield what was loaded, for the record.

    Dynamically loaded libraries are deregistered afterwards, so the next build in this process
    starts from an empty registry; a statically loaded one stays (a process cannot unload it).
    """
    registry = builder.get_plugin_registry()
    handles = []
    loaded: list[dict[str, Any]] = []
    try:
        for plugin, named in zip(recipe.plugins, _library_files(recipe, files), strict=True):
            _check_bytes(named)
            if plugin.load == "static":
                _load_static(named.path, named.field)
            else:
                before = len(records)
                handle = registry.load_library(str(named.path))
                if handle is None:
                    raise BadInputError(
                        f"{named.field}: {label} could not load {named.path.name} as a plugin library: "
                        f"{_last_error(records, before)}",
                        hint=_NOT_A_PLUGIN_HINT,
                    )
                handles.append((handle, named.sha256))
                _HELD[named.sha256] += 1
            loaded.append(record_of(plugin.load, plugin.serialize, named))
        yield loaded
    finally:
        for handle, sha256 in handles:
            registry.deregister_library(handle)
            _HELD[sha256] -= 1


def _load_static(path: Path, what: str) -> None:
    try:
        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        raise BadInputError(
            f"{what}: {path.name} could not be loaded: {exc}",
            hint="a plugin library must be a shared library for this platform and CPU architecture",
        ) from None


def record_of(load: str, serialize: bool, named: NamedFile) -> dict[str, Any]:
    """What an artifact records of one plugin library (``details.plugins``)."""
    return {
        "library": str(named.path),
        "name": named.path.name,
        "sha256": named.sha256,
        "load": load,
        "serialized": serialize,
    }


def set_plugins_to_serialize(config: Any, recipe: Recipe, files: Sequence[NamedFile]) -> list[str] | None:
    """IBuilderConfig.plugins_to_serialize for the libraries marked serialize; what it reads back."""
    libraries = _library_files(recipe, files)
    paths = [str(named.path) for plugin, named in zip(recipe.plugins, libraries, strict=True) if plugin.serialize]
    if not paths:
        return None
    config.plugins_to_serialize = paths
    return list(config.plugins_to_serialize)


# -- at run time: the libraries a plan needs, loaded before it deserializes --------------------------


def register_standard_plugins(trt: ModuleType, logger: Any) -> None:
    """TensorRT's own plugins (libnvinfer_plugin: ROIAlign_TRT, ...), as trtexec registers them before
    it parses or deserializes ("Loading standard plugins"). They ship in the wheel the key names by
    version and CUDA variant; TensorRT-RTX ships none (the call registers nothing there)."""
    init = getattr(trt, "init_libnvinfer_plugins", None)
    if init is not None:
        init(logger, "")


def check_needed(plugins: Sequence[PluginRecord]) -> None:
    """Each plugin library a plan needs is where its record says, with the bytes it recorded; the first
    that is not is refused in one line naming it (exit 2). Nothing is loaded here."""
    for plugin in plugins:
        _check_recorded(plugin)


def _check_recorded(plugin: PluginRecord) -> Path:
    path = Path(plugin.library)
    restore = f"restore the library the engine was built with (sha256 {plugin.sha256}), or rebuild the engine"
    if not path.is_file():
        raise BadInputError(
            f"plugin library {path} is gone: the plan needs {plugin.name} (sha256 {plugin.sha256[:12]}) "
            "loaded before it deserializes",
            hint=restore,
        )
    found = sha256_file(path)
    if found != plugin.sha256:
        raise BadInputError(
            f"plugin library {path} changed since the engine was built "
            f"(sha256 {found[:12]}, the plan needs {plugin.sha256[:12]}); nothing was loaded",
            hint=restore,
        )
    return path


def load_for_runtime(
    trt: ModuleType, runtime: Any, logger: Any, plugins: Sequence[PluginRecord], records: list[dict[str, str]]
) -> None:
    """Make ``runtime`` ready for a plan that needs ``plugins`` (the artifact's ``plugins_needed``):
    every library is checked first (none is loaded if one is gone or changed), then TensorRT's
    standard plugins are registered and each library is loaded in order, hashed again right before
    its load: ``dynamic`` into the runtime's own registry (``IRuntime.get_plugin_registry()``),
    ``static`` into this process (ctypes, RTLD_GLOBAL). Loaded libraries stay loaded: the engine
    runs their code. ``records``: the list ``logger`` writes to, for the loader's own words."""
    check_needed(plugins)
    register_standard_plugins(trt, logger)
    label = flavor_name(trt.__name__)
    for plugin in plugins:
        path = _check_recorded(plugin)
        what = f"plugin library {path}"
        if plugin.load == "static":
            _load_static(path, what)
        else:
            _load_dynamic(runtime.get_plugin_registry(), path, plugin.sha256, records, f"{what}: {label}")


def _load_dynamic(registry: Any, path: Path, sha256: str, records: list[dict[str, str]], label: str) -> None:
    before = len(records)
    if registry.load_library(str(path)) is not None:
        _HELD[sha256] += 1
        return
    if _HELD[sha256] > 0:  # this process already holds these bytes in a registry this one searches
        return
    raise BadInputError(
        f"{label} could not load {path.name} as a plugin library: {_last_error(records, before)}",
        hint=_NOT_A_PLUGIN_HINT,
    )


def plugin_runtime(trt: ModuleType, logger: Any, plugins: Sequence[PluginRecord], records: list[dict[str, str]]) -> Any:
    """A new ``trt.Runtime`` ready for a plan that needs ``plugins`` (:func:`load_for_runtime`)."""
    runtime = trt.Runtime(logger)
    load_for_runtime(trt, runtime, logger, plugins, records)
    return runtime
