"""Real plugin libraries for tests, and a way to see which libraries a process or a runtime holds.

TensorRT-RTX ships no plugin library, and none that implements a plugin can be built here without
NVIDIA's headers. What a registry needs to *load* a library is smaller: ``getCreators`` handing out
at least one plugin creator (``IPluginRegistry::loadLibrary`` refuses a library with none) and
``setLoggerFinder``. :func:`creator_library` compiles such a library with the C++ compiler: one
``IPluginCreatorV3One`` (TensorRT's documented interface, NvInferRuntime.h: the vtable of
IVersionedInterface, then createPlugin, getFieldNames, getPluginName, getPluginVersion,
getPluginNamespace) for a plugin no model uses. TensorRT-RTX's registry loads it and lists its
creator by name; a model never asks it for a plugin. Copies of Python extension modules serve as
shared libraries that hold no plugin at all (``load: static``, or a refused dynamic load).
"""

from __future__ import annotations

import _json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

CREATOR_NAME = "TrtforgeTestNoop"

# Declarations written for this test from the interface's documented layout (no NVIDIA header here).
_CREATOR_SOURCE = r"""
#include <cstdint>
struct InterfaceInfo { const char* kind; int32_t major; int32_t minor; };
struct FieldCollection { int32_t count; const void* fields; };

class NoopCreator {  // IPluginCreatorV3One: creates no plugin, has no fields
public:
    virtual int32_t getAPILanguage() const noexcept { return 0; }  // APILanguage::kCPP
    virtual InterfaceInfo getInterfaceInfo() const noexcept { return InterfaceInfo{"PLUGIN CREATOR_V3ONE", 1, 0}; }
    virtual ~NoopCreator() noexcept = default;
    virtual void* createPlugin(const char*, const void*, int32_t) noexcept { return nullptr; }
    virtual const void* getFieldNames() noexcept { return &fields; }
    virtual const char* getPluginName() const noexcept { return PLUGIN_NAME; }
    virtual const char* getPluginVersion() const noexcept { return "1"; }
    virtual const char* getPluginNamespace() const noexcept { return ""; }
    FieldCollection fields{0, nullptr};
};

static NoopCreator creator;
static NoopCreator* creators[] = {&creator};
extern "C" void setLoggerFinder(void*) {}
extern "C" NoopCreator* const* getCreators(int32_t& count) { count = 1; return creators; }
"""


def creator_library(target: Path, plugin_name: str = CREATOR_NAME) -> Path:
    """A shared library that TensorRT's plugin registry loads (one creator, ``plugin_name``), compiled
    at ``target``; the test skips here where no C++ compiler is installed."""
    compiler = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("stopped at making a plugin library: no C++ compiler (g++, c++ or clang++) is installed")
    target.parent.mkdir(parents=True, exist_ok=True)
    source = target.with_suffix(".cpp")
    source.write_text(_CREATOR_SOURCE.replace("PLUGIN_NAME", f'"{plugin_name}"'))
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-o", str(target), str(source)], check=True)
    source.unlink()
    return target


def plain_library(target: Path) -> Path:
    """A real shared library of this platform that holds no plugin (a copy of a Python extension)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_json.__file__, target)
    return target


def mapped(path: Path) -> bool:
    """Whether this process has ``path`` loaded (a shared library mapped into its memory)."""
    return str(path) in Path("/proc/self/maps").read_text()


def creators(runtime: Any) -> list[str]:
    """The plugin creators a runtime's own registry holds (not its parents')."""
    return [creator.name for creator in runtime.get_plugin_registry().all_creators]
