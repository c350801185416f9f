"""Plugin libraries a recipe names: loaded for its build, serialized into the plan where asked.

``load: dynamic`` goes through the builder's plugin registry (``IPluginRegistry.load_library``, which
needs the library's ``getCreators`` entry point, as trtexec --dynamicPlugins); ``load: static`` loads
the library into the building process so that its creators register themselves
(REGISTER_TENSORRT_PLUGIN, as trtexec --staticPlugins). The bytes loaded are the bytes the build key
holds: each file is hashed again right before it is loaded.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from trtforge.core.errors import BadInputError, BuildError
from trtforge.rules.builder_options import NamedFile
from trtforge.rules.keys import sha256_file
from trtforge.rules.recipe import Recipe


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
                _load_static(named)
            else:
                before = len(records)
                handle = registry.load_library(str(named.path))
                if handle is None:
                    raise BadInputError(
                        f"{named.field}: {label} could not load {named.path.name} as a plugin library: "
                        f"{_last_error(records, before)}",
                        hint="a dynamic plugin library exports getCreators (IPluginRegistry::loadLibrary); "
                        "one that registers itself when loaded needs load: static",
                    )
                handles.append(handle)
            loaded.append(record_of(plugin.load, plugin.serialize, named))
        yield loaded
    finally:
        for handle in handles:
            registry.deregister_library(handle)


def _load_static(named: NamedFile) -> None:
    try:
        ctypes.CDLL(str(named.path), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        raise BadInputError(
            f"{named.field}: {named.path.name} could not be loaded: {exc}",
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
