"""Targets: the backend and hardware an engine is built for.

A TensorRT engine is specific to the TensorRT version and (by default) to the GPU's compute
capability it was built on; TensorRT-RTX builds ahead of time, on any machine, for a list of
compute capabilities. The target is part of the BuildKey.
"""

from __future__ import annotations

import os as _os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from typing import Any

from trtforge.core.errors import TARGET_HINT, BackendUnavailableError, TargetError
from trtforge.rules.flavors import (
    FLAVORS,
    RTX_DEFAULT_COMPUTE_CAPABILITIES,
    SAME_RELEASE,
    BackendInfo,
    Flavor,
    flavor_name,
    installed_backend,
    installed_backends,
    parse_version,
    release,
    same_release,
)
from trtforge.rules.gpus import UnknownGpuError, find_gpu


@dataclass(frozen=True)
class BuildTarget:
    """What an engine is built for.

    ``compute_capabilities``: the GPU's for TensorRT, the ahead-of-time list for TensorRT-RTX
    (empty only in rows recorded before trtforge set it explicitly); ``gpu_name`` is None when
    the build does not depend on a GPU.
    ``os``/``arch`` are the build machine's platform (full TensorRT plans do not move across
    either) and ``cuda`` the backend wheel's CUDA variant (cu12/cu13); all three are keyed, None
    where unknown (targets planned for another machine). ``env`` holds the BUILD_ENV variables
    that are set, by name and value.
    """

    flavor: str
    trt_version: str
    gpu_name: str | None = None
    compute_capabilities: tuple[str, ...] = field(default_factory=tuple)
    os: str | None = None
    arch: str | None = None
    cuda: str | None = None
    env: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_key_fields(cls, data: dict[str, Any]) -> BuildTarget:
        """The target a record's ``details.target`` (``key_fields()``) names; KeyError/TypeError if malformed."""
        return cls(
            data["flavor"],
            data["trt_version"],
            data.get("gpu_name"),
            tuple(data.get("compute_capabilities") or ()),
            data.get("os"),
            data.get("arch"),
            data.get("cuda"),
            tuple(sorted((data.get("env") or {}).items())),
        )

    def key_fields(self) -> dict[str, Any]:
        data = asdict(self)
        data["compute_capabilities"] = sorted(self.compute_capabilities)
        data["env"] = dict(sorted(self.env))
        return data

    def describe(self) -> str:
        ccs = ",".join(self.compute_capabilities) or "default"
        gpu = f" on {self.gpu_name}" if self.gpu_name else ""
        where = f", {self.os}/{self.arch}" if self.os and self.arch else ""
        return f"{self.flavor} {self.trt_version}{gpu} (cc {ccs}{where})"


# Platform names as recorded in targets and given to `lookup --os/--arch`.
_OS_ALIASES = {"linux": "linux", "win32": "windows", "windows": "windows", "cygwin": "windows", "darwin": "macos"}
_ARCH_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "x64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def normalize_os(name: str) -> str:
    """``win32``/``Windows`` -> ``windows``, ``Linux`` -> ``linux``; other names lowercased."""
    lowered = name.strip().lower()
    return _OS_ALIASES.get(lowered, lowered)


def normalize_arch(name: str) -> str:
    """``AMD64`` -> ``x86_64``, ``arm64`` -> ``aarch64``; other names lowercased."""
    lowered = name.strip().lower()
    return _ARCH_ALIASES.get(lowered, lowered)


@dataclass(frozen=True)
class KeyedVariable:
    """An environment variable known to change the engine a build produces, and who says so."""

    name: str
    effect: str
    source: str


# The one list of environment variables that change TensorRT / TensorRT-RTX code generation: each
# is part of the build target (so of the build key) by value when set, and docs/cache-hits-and-keys.md
# names them. Not keyed: variables that change loading only (CUDA_MODULE_LOADING, CUDA_CACHE_*,
# CUDA_ENABLE_MODULE_LAZY_LOADING), where libraries are found (CUDA_HOME, CUDA_PATH: the builder's
# version and CUDA variant are keyed) and which GPU is used (CUDA_VISIBLE_DEVICES: its name and
# compute capability are keyed).
BUILD_ENV_VARIABLES = (
    KeyedVariable(
        "NVIDIA_TF32_OVERRIDE",
        "0 forbids TF32 math whatever BuilderFlag.TF32 says: other kernels, another plan",
        "TensorRT Developer Guide, Reduced Precision, TF32 (NVIDIA_TF32_OVERRIDE=0 when building an engine "
        "disables TF32); cuBLAS docs (cublasMath_t) and cuDNN docs (cudnnMathType_t); read by libtensorrt_rtx",
    ),
    KeyedVariable(
        "NVRTC_APPEND_FLAGS",
        "options appended to the runtime compilation (NVRTC) of generated kernels",
        "named in libtensorrt_rtx's strings, not documented by NVIDIA: keyed conservatively",
    ),
    KeyedVariable(
        "TRT_INTERNAL_OPTIONS",
        "internal builder options",
        "named in libtensorrt_rtx's strings, not documented by NVIDIA: keyed conservatively",
    ),
)
BUILD_ENV = tuple(variable.name for variable in BUILD_ENV_VARIABLES)


def build_env() -> tuple[tuple[str, str], ...]:
    """The BUILD_ENV variables set in this process, by name and value (set but empty counts)."""
    return tuple((name, _os.environ[name]) for name in BUILD_ENV if name in _os.environ)


def this_platform() -> tuple[str, str]:
    """(os, arch) of this machine, normalized: e.g. ("linux", "x86_64")."""
    return normalize_os(sys.platform), normalize_arch(_machine())


def _machine() -> str:
    """platform.machine() without importing platform (~2 ms, on lookup's and a hit's path)."""
    if hasattr(_os, "uname"):
        return _os.uname().machine
    import platform

    return platform.machine()


@dataclass(frozen=True)
class LocalGpu:
    """One CUDA device as this process sees it (``CUDA_VISIBLE_DEVICES`` and CUDA's order applied).

    ``index`` is its CUDA ordinal in this process; ``uuid`` NVML's id (``GPU-...`` or, for a MIG
    slice, ``MIG-...``); ``mig`` the slice's profile (e.g. ``1g.10gb``) when the device is a MIG
    slice, whose ``name`` then says so too (NVML names slices "<GPU> MIG 1g.10gb").
    """

    name: str
    compute_capability: str
    driver_version: str | None = None
    index: int = 0
    uuid: str | None = None
    pci_bus_id: str | None = None
    mig: str | None = None


# Selecting a device: `--device N` (index among the visible devices) rewrites CUDA_VISIBLE_DEVICES
# to that one device before CUDA starts, so the build, the runtime and the key all name it.
VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"


def parse_visible_devices(value: str | None) -> list[str] | None:
    """CUDA's reading of ``CUDA_VISIBLE_DEVICES``: None when unset (every device), else its entries.

    CUDA stops at the first entry that is neither an ordinal nor a ``GPU-``/``MIG-`` UUID (prefix),
    so ``"0,1,-1,2"`` means devices 0 and 1 and ``""`` (or ``"-1"``) means no device at all
    (CUDA C Programming Guide, "CUDA Environment Variables").
    """
    if value is None:
        return None
    entries: list[str] = []
    for raw in value.split(","):
        entry = raw.strip()
        if entry.isdigit() or re.fullmatch(r"(GPU|MIG)-[0-9A-Za-z/-]+", entry):
            entries.append(entry)
        else:
            break
    return entries


def apply_visible_devices(physical: Sequence[LocalGpu], value: str | None) -> list[LocalGpu]:
    """The devices of ``physical`` (NVML order, MIG slices included) that CUDA shows for ``value``,
    in the order it names them, renumbered from 0 (CUDA ordinals in this process).

    Fallback where the CUDA driver cannot be asked for its order: an ordinal counts the whole GPUs
    in ``physical``'s order (correct with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``).
    """
    whole = [g for g in physical if g.mig is None]
    entries = parse_visible_devices(value)
    if entries is None:
        chosen = whole
    else:
        chosen = []
        for entry in entries:
            if entry.isdigit():
                found = whole[int(entry)] if int(entry) < len(whole) else None
            else:
                found = next((g for g in physical if g.uuid is not None and g.uuid.startswith(entry)), None)
            if found is None:  # CUDA ignores the rest of the list after a device it cannot find
                break
            if found not in chosen:
                chosen.append(found)
    return [LocalGpu(g.name, g.compute_capability, g.driver_version, i, g.uuid, g.pci_bus_id, g.mig)
            for i, g in enumerate(chosen)]  # fmt: skip


def _nvml_devices(pynvml: Any) -> list[LocalGpu]:
    """Every GPU NVML lists (PCI order), each followed by its MIG slices when MIG is on."""
    driver = _text(pynvml.nvmlSystemGetDriverVersion())
    found: list[LocalGpu] = []
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        cc = f"{major}.{minor}"
        uuid = _nvml_try(lambda h=handle: _text(pynvml.nvmlDeviceGetUUID(h)))
        pci = _nvml_try(lambda h=handle: _text(pynvml.nvmlDeviceGetPciInfo(h).busId))
        found.append(LocalGpu(_text(pynvml.nvmlDeviceGetName(handle)), cc, driver, index, uuid, pci))
        mode = _nvml_try(lambda h=handle: pynvml.nvmlDeviceGetMigMode(h)[0])
        if not mode:
            continue
        for slot in range(_nvml_try(lambda h=handle: pynvml.nvmlDeviceGetMaxMigDeviceCount(h)) or 0):
            mig = _nvml_try(lambda h=handle, s=slot: pynvml.nvmlDeviceGetMigDeviceHandleByIndex(h, s))
            if mig is None:
                continue
            name = _text(pynvml.nvmlDeviceGetName(mig))
            profile = name.rsplit(" MIG ", 1)[1] if " MIG " in name else "slice"
            mig_uuid = _nvml_try(lambda m=mig: _text(pynvml.nvmlDeviceGetUUID(m)))
            found.append(LocalGpu(name if " MIG " in name else f"{name} MIG {profile}", cc, driver, index,
                                  mig_uuid, pci, profile))  # fmt: skip
    return found


def _text(value: Any) -> str:
    return value if isinstance(value, str) else bytes(value).decode(errors="replace")


def _nvml_try(call: Any) -> Any:
    try:
        return call()
    except Exception:  # an NVML call this driver or GPU does not support
        return None


# Asks the CUDA driver for its device order in a child process: cuInit in trtforge's own process
# would fix CUDA_VISIBLE_DEVICES for good (`--device` narrows it later) and break CUDA in any child
# forked afterwards. Only ctypes and libcuda: no trtforge import, a few tens of milliseconds.
_CUDA_ORDER_SCRIPT = """
import ctypes, ctypes.util, json
cuda = ctypes.CDLL(ctypes.util.find_library("cuda") or "libcuda.so.1")
assert cuda.cuInit(0) == 0
count = ctypes.c_int()
assert cuda.cuDeviceGetCount(ctypes.byref(count)) == 0
get_uuid = getattr(cuda, "cuDeviceGetUuid_v2", None) or cuda.cuDeviceGetUuid
devices = []
for ordinal in range(count.value):
    device = ctypes.c_int()
    assert cuda.cuDeviceGet(ctypes.byref(device), ordinal) == 0
    raw = (ctypes.c_ubyte * 16)()
    bus = ctypes.create_string_buffer(64)
    devices.append([bytes(raw).hex() if get_uuid(raw, device) == 0 else None,
                    bus.value.decode() if cuda.cuDeviceGetPCIBusId(bus, 64, device) == 0 else None])
print(json.dumps(devices))
"""


def _cuda_order() -> list[tuple[str | None, str | None]] | None:
    """(UUID hex, PCI bus id) of each CUDA device in this process's CUDA order (CUDA_VISIBLE_DEVICES
    and CUDA_DEVICE_ORDER applied by the driver itself); None where the driver cannot say."""
    import json
    import subprocess

    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CUDA_ORDER_SCRIPT], capture_output=True, text=True, timeout=60, check=False
        )
        if proc.returncode != 0:
            return None
        return [(uuid, pci) for uuid, pci in json.loads(proc.stdout)]
    except (OSError, ValueError, TypeError, subprocess.SubprocessError):
        return None


def _match_cuda_order(physical: Sequence[LocalGpu], order: Sequence[tuple[str | None, str | None]]) -> list[LocalGpu]:
    """Physical devices in CUDA's order, matched by UUID (hex digits), else by PCI bus id."""

    def digits(uuid: str | None) -> str:
        return re.sub(r"[^0-9a-f]", "", (uuid or "").lower().split("-", 1)[-1])

    result = []
    for ordinal, (uuid, pci) in enumerate(order):
        found = next((g for g in physical if uuid and digits(g.uuid) == uuid), None)
        if found is None and pci:
            found = next((g for g in physical if g.mig is None and (g.pci_bus_id or "").lower().endswith(
                pci.lower()[-12:])), None)  # fmt: skip
        if found is None:
            continue
        result.append(LocalGpu(found.name, found.compute_capability, found.driver_version, ordinal, found.uuid,
                               found.pci_bus_id, found.mig))  # fmt: skip
    return result


def detect_gpus() -> list[LocalGpu]:
    """The CUDA devices this process can use, in CUDA's order: ``CUDA_VISIBLE_DEVICES`` honoured,
    MIG slices recorded as such. Empty when there is no driver or no NVML binding.

    NVML alone lists every GPU of the host in PCI order, whatever the process may use; on a host
    with several GPUs (or MIG slices) the CUDA driver, asked in a child process, says which of them
    this process sees and in which order, so device 0 here is the device a build runs on.
    """
    try:
        import pynvml  # lazy: only builds for full TensorRT and `doctor` need it
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        physical = _nvml_devices(pynvml)
    finally:
        pynvml.nvmlShutdown()
    # One whole GPU and no MIG: NVML's answer is CUDA's. Otherwise CUDA's order (fastest first by
    # default) and its MIG enumeration decide which device is which; only the driver knows them.
    if len(physical) > 1:
        order = _cuda_order()
        if order is not None:
            return _match_cuda_order(physical, order)
    return apply_visible_devices(physical, _os.environ.get(VISIBLE_DEVICES))


def select_device(device: int | None) -> None:
    """``--device N``: make the N-th visible CUDA device the only one this process uses (before CUDA
    starts), so builds, runs, detection and the recorded target all name the same GPU."""
    if device is None:
        return
    gpus = detect_gpus()
    if not 0 <= device < len(gpus):
        seen = ", ".join(f"{g.index}: {g.name}" for g in gpus) or "none"
        raise TargetError(f"--device {device}: no such CUDA device here (visible: {seen})",
                          hint="give an index among the visible devices (see `trtforge doctor`)")  # fmt: skip
    chosen = gpus[device]
    if chosen.uuid is not None:
        _os.environ[VISIBLE_DEVICES] = chosen.uuid
    else:
        entries = parse_visible_devices(_os.environ.get(VISIBLE_DEVICES))
        _os.environ[VISIBLE_DEVICES] = entries[device] if entries else str(device)


def current_gpu() -> LocalGpu | None:
    """The device work in this process runs on (CUDA device 0 of this process), or None."""
    gpus = detect_gpus()
    return gpus[0] if gpus else None


def build_target_for(
    backend: BackendInfo, compute_capabilities: Sequence[str] | None = None, runtime: RuntimeTarget | None = None
) -> BuildTarget:
    """The target a build with ``backend`` produces an engine for.

    TensorRT-RTX builds ahead of time, on any machine, for ``compute_capabilities`` (the explicit
    list :mod:`trtforge.resolution.resolve` always gives). TensorRT builds on, and for, one GPU: the
    ``runtime`` target's when given (``plan --target``), else this machine's.
    """
    os_name, arch = this_platform()
    os_name, arch = (runtime.os, runtime.arch) if runtime is not None else (None, None)
    if os_name is None or arch is None:  # a runtime target without a platform: this machine's
        this_os, this_arch = this_platform()
        os_name, arch = os_name or this_os, arch or this_arch
    if backend.flavor == "tensorrt_rtx":
        ccs = tuple(compute_capabilities or ())
        return BuildTarget(backend.flavor, backend.version, None, ccs, os_name, arch, backend.cuda, build_env())
    if runtime is not None:
        gpu, ccs = runtime.gpu_name, (runtime.compute_capability,)
        return BuildTarget(backend.flavor, backend.version, gpu, ccs, os_name, arch, backend.cuda, build_env())
    gpu = current_gpu()
    if gpu is None:
        raise BackendUnavailableError(
            f"{backend.label} builds engines on a GPU, and no NVIDIA GPU was found",
            hint="build on a GPU machine, or use `backend: tensorrt_rtx` for CPU ahead-of-time builds",
        )
    return BuildTarget(
        backend.flavor, backend.version, gpu.name, (gpu.compute_capability,), os_name, arch, backend.cuda, build_env()
    )


# -- runtime targets: where an engine is meant to run (lookup, adopt, plan) ------------------

_CC = re.compile(r"(\d{1,2})\.(\d)")
_PLATFORM_NAME = re.compile(r"[a-z0-9_]{1,32}")




@lru_cache(maxsize=256)
def parse_compute_capability(text: str) -> tuple[int, int]:
    """``"8.6"`` -> ``(8, 6)``; raises TargetError for anything else."""
    match = _CC.fullmatch(text.strip())
    if match is None:
        raise TargetError(f"compute capability {text[:40]!r} is not of the form MAJOR.MINOR (e.g. 8.6)")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class RuntimeTarget:
    """Where an engine should run: runtime flavor and version, GPU model and compute capability.

    ``gpu_name`` may be None for an explicit target that only names a compute capability; then
    no GPU-model preference or per-model verification status applies. ``detected`` is True when
    the target describes this machine, which is the only case where the runtime's own validity
    check can be asked. ``os``/``arch`` (this machine's when detected) are None when not given:
    lookup's platform rule then does not apply. ``cuda`` is the CUDA variant of the target's
    runtime wheel (cu12/cu13; keyed by builds, so `plan` needs it for another machine), None
    where unknown. ``label`` is the operator's name for the machine type (a fleet entry's name).
    """

    flavor: Flavor
    trt_version: str
    compute_capability: str
    gpu_name: str | None = None
    driver_version: str | None = None
    detected: bool = False
    os: str | None = None
    arch: str | None = None
    cuda: str | None = None
    label: str | None = None

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return parse_version(self.trt_version)

    @property
    def cc_tuple(self) -> tuple[int, int]:
        return parse_compute_capability(self.compute_capability)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """``NVIDIA L4 (cc 8.9) with TensorRT 10.13.3``; without a GPU model ``a GPU of compute capability 8.9 ...``."""
        if self.gpu_name:
            gpu = f"{self.gpu_name} (cc {self.compute_capability})"
        else:
            gpu = f"a GPU of compute capability {self.compute_capability}"
        where = f" on {self.os or '?'}/{self.arch or '?'}" if self.os or self.arch else ""
        return f"{gpu} with {flavor_name(self.flavor)} {self.trt_version}{where}"


@dataclass(frozen=True)
class TargetRequest:
    """A target as given: ``--target SPEC``, the shorthand flags ``--gpu/--cc/--flavor/--trt/--cuda/
    --os/--arch``, or a fleet entry (whose name is ``label``). :meth:`checked` validates and
    normalizes each field; :meth:`resolve` makes it a RuntimeTarget once the store's releases are
    known (``--flavor`` is inferred from them)."""

    gpu: str | None = None
    cc: str | None = None
    trt: str | None = None
    flavor: str | None = None
    os: str | None = None
    arch: str | None = None
    cuda: str | None = None
    label: str | None = None

    @property
    def infers_flavor(self) -> bool:
        """Whether resolving reads the store's releases (a ``--trt`` without ``--flavor``)."""
        return self.trt is not None and self.flavor is None

    @property
    def is_empty(self) -> bool:
        """No field given: the target is this machine (detected)."""
        return all(getattr(self, f) is None for f in ("gpu", "cc", "trt", "flavor", "os", "arch", "cuda"))

    def checked(self) -> TargetRequest:
        """Every given field validated on its own, as every command does it: the GPU through the
        table (its NVML name, and its compute capability filled in), ``cc``, ``trt``, ``flavor``,
        ``cuda``, ``os``/``arch`` normalized. Raises TargetError (exit 2)."""
        gpu, cc = target_gpu(self.gpu, self.cc)
        if self.trt is not None:
            parse_version(self.trt.strip())
        if self.flavor is not None and self.flavor not in FLAVORS:
            raise TargetError(f"flavor {self.flavor[:40]!r} is not one of {', '.join(FLAVORS)}")
        os_name, arch = parse_platform(self.os, self.arch)
        trt = self.trt.strip() if self.trt is not None else None
        return replace(self, gpu=gpu, cc=cc, trt=trt, os=os_name, arch=arch, cuda=parse_cuda(self.cuda))

    def resolve(self, stored: Iterable[tuple[str, str]] = ()) -> RuntimeTarget:
        target = resolve_target(
            gpu=self.gpu, cc=self.cc, trt=self.trt, flavor=self.flavor, os=self.os, arch=self.arch, stored=stored
        )
        return replace(target, cuda=parse_cuda(self.cuda) or target.cuda, label=self.label)


_CUDA_VARIANT = re.compile(r"cu\d{2}")


def parse_cuda(value: str | None) -> str | None:
    """A CUDA variant as the backend wheels name it (``cu12``, ``cu13``); None stays None (unknown)."""
    if value is None:
        return None
    text = value.strip().lower()
    if not _CUDA_VARIANT.fullmatch(text):
        raise TargetError(
            f"CUDA variant {value[:40]!r} is not of the form cuNN (e.g. cu12, cu13)",
            hint="the variant of the runner's TensorRT wheel, as `trtforge doctor` prints it (tensorrt-cu12 -> cu12)",
        )
    return text


@dataclass(frozen=True, order=True)
class TargetGroup:
    """Engines that serve the same machines, for retention: flavor, runtime release (MAJOR.MINOR.PATCH),
    the GPU model (TensorRT engines built on a named GPU) or the compute capabilities (TensorRT-RTX:
    the list built for, one target however long), the OS and CPU architecture it runs on ("" where
    not recorded), and for TensorRT the envelope: the hardware compatibility level and which runtime
    releases load it (``rules.flavors.runtime_releases``). Engines one of these tells apart serve
    different machines, so one never counts against the other."""

    flavor: str
    release: str
    gpu: str
    compute_capabilities: tuple[str, ...]
    os: str
    arch: str
    hardware: str = ""  # TensorRT: none | same_compute_capability | ampere_plus; "" for TensorRT-RTX
    runtimes: str = SAME_RELEASE

    @classmethod
    def of(
        cls,
        flavor: str,
        trt_version: str,
        gpu_name: str | None,
        ccs: Sequence[str],
        os: str | None,
        arch: str | None,
        *,
        hardware: str = "none",
        runtimes: str = SAME_RELEASE,
    ) -> TargetGroup:
        parts = (*release(trt_version), 0, 0, 0)[:3]
        capabilities = tuple(sorted(map(str, ccs), key=parse_compute_capability))
        if flavor == "tensorrt_rtx" and not capabilities:  # recorded before trtforge set the list
            capabilities = RTX_DEFAULT_COMPUTE_CAPABILITIES
        trt = flavor == "tensorrt"
        gpu = (gpu_name or "") if trt else ""
        envelope = (hardware, runtimes) if trt else ("", SAME_RELEASE)  # TensorRT-RTX: its list says it all
        return cls(flavor, ".".join(map(str, parts)), gpu, capabilities, os or "", arch or "", *envelope)

    def describe(self) -> str:
        where = self.gpu or "cc " + ",".join(self.compute_capabilities)
        wider = [f"hardware {self.hardware}"] if self.hardware not in ("", "none") else []
        if self.runtimes != SAME_RELEASE:
            wider.append("version-compatible")
        envelope = f" ({', '.join(wider)})" if wider else ""
        platform = f", {self.os}/{self.arch}" if self.os and self.arch else ""
        return f"{flavor_name(self.flavor)} {self.release} on {where}{envelope}{platform}"

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "compute_capabilities": list(self.compute_capabilities), "describe": self.describe()}


def parse_platform(os: str | None, arch: str | None) -> tuple[str | None, str | None]:
    """Validated, normalized ``--os``/``--arch`` values (None stays None: unknown)."""
    names: list[str | None] = []
    for label, value, normalize in (("OS", os, normalize_os), ("architecture", arch, normalize_arch)):
        if value is not None and not _PLATFORM_NAME.fullmatch(normalize(value)):
            raise TargetError(f"{label} {value[:40]!r} is not a platform name (e.g. linux, windows, x86_64, aarch64)")
        names.append(normalize(value) if value is not None else None)
    return names[0], names[1]


def target_gpu(gpu: str | None, cc: str | None) -> tuple[str | None, str | None]:
    """(GPU name, compute capability) from ``--gpu``/``--cc``, through the GPU table (rules/gpus.py).

    A GPU the table knows gets its NVML name (``L4`` -> ``NVIDIA L4``, the name its verifications
    are recorded under) and its compute capability; a ``--cc`` that disagrees is refused. A name
    the table does not know is refused with the closest known names, unless ``--cc`` comes with
    it (a GPU newer than this table): then both are taken as given.
    """
    capability = None
    if cc is not None:
        major, minor = parse_compute_capability(cc)
        capability = f"{major}.{minor}"
    if gpu is None:
        return None, capability
    name = gpu.strip()
    if not (0 < len(name) <= 128 and name.isprintable()):
        raise TargetError("GPU name must be 1-128 printable characters")
    try:
        named = find_gpu(name)
    except UnknownGpuError:
        if capability is None:
            raise
        return name, capability
    known = named.model.compute_capability
    if capability is not None and capability != known:
        raise TargetError(
            f"--gpu {name[:60]!r} is {named.model.name}, compute capability {known}, but --cc says {capability}",
            hint=f"leave --cc out (the GPU gives it: {known}), or name the GPU you mean",
        )
    return named.name, known


def infer_flavor(trt: str, stored: Iterable[tuple[str, str]] = ()) -> str:
    """The flavor a ``--trt`` release means when ``--flavor`` is not given: the one flavor that the
    installed runtimes or the store's engines (``stored``: (flavor, version) pairs) have that release
    of; ``tensorrt`` when none has it. Both having it is refused."""
    releases = [(b.flavor, b.version) for b in installed_backends()] + list(stored)
    flavors = sorted({flavor for flavor, version in releases if flavor in FLAVORS and same_release(version, trt)})
    if len(flavors) > 1:
        raise TargetError(
            f"both TensorRT and TensorRT-RTX have a release {trt[:40]} here",
            hint="say which runtime the target has: --flavor tensorrt or --flavor tensorrt_rtx",
        )
    return flavors[0] if flavors else "tensorrt"


def _runtime_release(trt: str | None, flavor: str | None, stored: Iterable[tuple[str, str]]) -> tuple[str, str]:
    """(flavor, version) of an explicit target: ``--trt`` as given (its flavor inferred when not
    given), else the installed runtime's, which then must exist."""
    if flavor is not None and flavor not in FLAVORS:
        raise TargetError(f"flavor {flavor[:40]!r} is not one of {', '.join(FLAVORS)}")
    if trt is not None:
        parse_version(trt)
        return flavor or infer_flavor(trt.strip(), stored), trt.strip()
    backends = [b for b in installed_backends() if flavor in (None, b.flavor)]
    if not backends:
        which = flavor_name(flavor) if flavor is not None else "TensorRT or TensorRT-RTX"
        raise TargetError(
            f"no {which} runtime is installed here to take the target's version from: give --trt",
            hint="e.g. --trt 10.13.3 (TensorRT) or --trt 1.7.1 --flavor tensorrt_rtx",
        )
    return backends[0].flavor, backends[0].version


def explicit_target(
    *,
    gpu: str | None,
    cc: str | None,
    trt: str | None,
    flavor: str | None = None,
    os: str | None = None,
    arch: str | None = None,
    stored: Iterable[tuple[str, str]] = (),
) -> RuntimeTarget:
    """A target from command-line values, validated.

    ``--gpu`` alone gives the compute capability (rules/gpus.py); otherwise ``--cc`` is needed.
    Without ``--trt`` the runtime is the installed one; ``--flavor`` defaults to the one flavor
    that has the ``--trt`` release among the installed runtimes and ``stored`` (the store's
    (flavor, version) pairs), else ``tensorrt``. ``--os``/``--arch`` are optional (unknown when left out).
    """
    name, capability = target_gpu(gpu, cc)
    if capability is None:
        raise TargetError(
            "an explicit target needs --cc, or a --gpu trtforge knows",
            hint='e.g. --gpu "NVIDIA L4" (compute capability 8.9), or --cc 8.9',
        )
    chosen, version = _runtime_release(trt, flavor, stored)
    platform_names = parse_platform(os, arch)
    installed = installed_backend(chosen) if trt is None else None  # type: ignore[arg-type]
    return RuntimeTarget(
        chosen,  # type: ignore[arg-type]
        version,
        capability,
        name,
        os=platform_names[0],
        arch=platform_names[1],
        cuda=installed.cuda if installed is not None else None,
    )


def detect_target(flavor: str | None = None) -> RuntimeTarget:
    """This machine as a target: the GPU work runs on (CUDA device 0 of this process) plus the
    installed runtime (not imported)."""
    gpu = current_gpu()
    if gpu is None:
        raise TargetError("no NVIDIA GPU detected on this machine (NVML found no driver or device)")
    backends = [b for b in installed_backends() if flavor in (None, b.flavor)]
    if not backends:
        raise TargetError(
            f"no {flavor or 'TensorRT'} runtime is installed here",
            hint="install one, or " + TARGET_HINT,
        )
    backend = backends[0]
    os_name, arch = this_platform()
    return RuntimeTarget(
        backend.flavor,
        backend.version,
        gpu.compute_capability,
        gpu.name,
        gpu.driver_version,
        True,
        os_name,
        arch,
        backend.cuda,
    )


def resolve_target(
    *,
    gpu: str | None = None,
    cc: str | None = None,
    trt: str | None = None,
    flavor: str | None = None,
    os: str | None = None,
    arch: str | None = None,
    stored: Iterable[tuple[str, str]] = (),
) -> RuntimeTarget:
    """Explicit when any of gpu/cc/trt is given (see explicit_target; ``stored``: the store's
    (flavor, version) pairs, for inferring the flavor), else detected on this machine (whose
    platform ``os``/``arch`` must then not contradict)."""
    if gpu is not None or cc is not None or trt is not None:
        return explicit_target(gpu=gpu, cc=cc, trt=trt, flavor=flavor, os=os, arch=arch, stored=stored)
    mine_os, mine_arch = this_platform()
    for label, value, normalize, mine in (("os", os, normalize_os, mine_os), ("arch", arch, normalize_arch, mine_arch)):
        if value is not None and normalize(value) != mine:
            raise TargetError(
                f"--{label} {value[:40]} is not this machine ({mine})",
                hint="give the whole target for another machine: --gpu/--cc/--trt with --os/--arch",
            )
    if flavor is not None and flavor not in FLAVORS:
        raise TargetError(f"flavor {flavor[:40]!r} is not one of {', '.join(FLAVORS)}")
    return detect_target(flavor)
