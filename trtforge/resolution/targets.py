"""One way to name a target in every command: ``--target SPEC``, the shorthand flags, ``--fleet``.

:class:`TargetOptions` is what a command line gave; :meth:`TargetOptions.requests` turns it into
validated :class:`~trtforge.rules.target.TargetRequest` s, the same way for every command:

- ``--target SPEC`` (repeatable): ``gpu=NAME,cc=X.Y,flavor=F,trt=VERSION,cuda=cuNN,os=OS,arch=ARCH``
  (``trt=`` required: a spec describes another machine), or the name of a ``--fleet`` entry;
- the shorthand flags ``--gpu --cc --flavor --trt --cuda --os --arch``: one target;
- ``--fleet fleet.yaml``: every entry (or those ``--target NAME`` selects).

Also here: which target a build *here* for a target resolves with (:func:`build_request`: plan and
build agree on it) and whether this machine can build it at all (:func:`why_not_here`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from trtforge.core.errors import TargetError
from trtforge.rules.flavors import BackendInfo, flavor_name, installed_backend, same_release
from trtforge.rules.gpus import known_gpu
from trtforge.rules.target import RuntimeTarget, TargetRequest, current_gpu, this_platform

if TYPE_CHECKING:  # pydantic and YAML only where a --fleet is read
    from trtforge.rules.fleet import Fleet

SPEC_KEYS = ("gpu", "cc", "flavor", "trt", "cuda", "os", "arch")
SPEC_FORM = "gpu=NAME,cc=X.Y,flavor=F,trt=VERSION,cuda=cuNN,os=OS,arch=ARCH (trt= required, the rest optional)"
SPEC_HINT = "e.g. --target 'gpu=NVIDIA A10G,trt=10.13.3.9,cuda=cu12', or the name of a --fleet entry"


def parse_target_spec(spec: str) -> TargetRequest:
    """``gpu=NVIDIA A10G,trt=10.13.3.9[,cc=8.6][,flavor=tensorrt][,cuda=cu12][,os=linux,arch=x86_64]`` -> a
    validated request (not yet resolved: the flavor may still be inferred from the store)."""
    fields: dict[str, str] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in SPEC_KEYS or key in fields:
            raise TargetError(f"target {spec[:80]!r} is not of the form {SPEC_FORM}", hint=SPEC_HINT)
        fields[key] = value.strip()
    if not fields.get("trt"):  # a spec describes another machine: its runtime is never this one's
        raise TargetError(f"target {spec[:80]!r} needs trt=VERSION", hint=SPEC_HINT)
    return TargetRequest(**fields).checked()


@dataclass(frozen=True)
class TargetOptions:
    """The target options of one command line, as given (each command's help lists the same ones)."""

    specs: tuple[str, ...] = ()
    gpu: str | None = None
    cc: str | None = None
    flavor: str | None = None
    trt: str | None = None
    cuda: str | None = None
    os: str | None = None
    arch: str | None = None
    fleet: Path | None = None
    repeated: tuple[str, ...] = ()  # flags given more than once: refused (they name one target)

    @property
    def shorthand(self) -> TargetRequest:
        return TargetRequest(
            gpu=self.gpu, cc=self.cc, trt=self.trt, flavor=self.flavor, os=self.os, arch=self.arch, cuda=self.cuda
        )

    @property
    def given(self) -> bool:
        return bool(self.specs) or self.fleet is not None or not self.shorthand.is_empty

    def requests(self) -> list[TargetRequest]:
        """Every target named, validated; empty when none was given (the command's default applies).

        The shorthand flags are one target: they do not mix with ``--target`` or ``--fleet``.
        """
        if self.repeated:
            raise TargetError(
                f"{', '.join(self.repeated)} given more than once: the --gpu/--cc/... flags name one target",
                hint="give several targets as --target SPEC each (e.g. --target 'cc=8.6,trt=10.13.3' "
                "--target 'cc=8.9,trt=10.13.3'), or a --fleet",
            )
        short = self.shorthand
        if not short.is_empty and (self.specs or self.fleet is not None):
            other = "--target" if self.specs else "--fleet"
            raise TargetError(
                f"the --gpu/--cc/--flavor/--trt/--cuda/--os/--arch flags name one target, and {other} names others",
                hint="give the target one way: the flags, or --target SPEC / --fleet FILE [--target NAME]",
            )
        if not short.is_empty:
            return [short.checked()]
        fleet = None
        if self.fleet is not None:
            from trtforge.rules.fleet import load_fleet

            fleet = load_fleet(self.fleet)
        named = [spec for spec in self.specs if "=" not in spec]
        requests = [_fleet_entry(fleet, name) for name in named]
        if fleet is not None and not named:
            requests = fleet.requests()
        requests += [parse_target_spec(spec) for spec in self.specs if "=" in spec]
        return requests

    def single(self) -> TargetRequest:
        """The one target of a command that takes one (an empty request: this machine, detected)."""
        requests = self.requests()
        if len(requests) > 1:
            labels = [r.label for r in requests if r.label]
            choose = f" (fleet targets: {', '.join(labels)})" if labels else ""
            raise TargetError(
                f"this command takes one target; {len(requests)} were given{choose}",
                hint="choose one: --target NAME of a --fleet entry, or one --target SPEC",
            )
        return requests[0] if requests else TargetRequest()


def _fleet_entry(fleet: Fleet | None, name: str) -> TargetRequest:
    if fleet is None:
        raise TargetError(
            f"target {name[:80]!r} is neither a spec ({SPEC_FORM}) nor a fleet entry: no --fleet was given",
            hint=SPEC_HINT,
        )
    return fleet.entry(name.strip()).request()


def resolve_all(requests: Iterable[TargetRequest], stored: Iterable[tuple[str, str]] = ()) -> list[RuntimeTarget]:
    """Resolve validated requests (``stored``: the store's (flavor, version) pairs, for ``--flavor``)."""
    releases = list(stored)
    return [request.resolve(releases) for request in requests]


def cuda_known(target: RuntimeTarget) -> bool:
    """Whether a build's key for ``target`` can name the right CUDA variant: given, or the installed
    backend's (same flavor and release)."""
    installed = installed_backend(target.flavor)
    return target.cuda is not None or (installed is not None and same_release(installed.version, target.trt_version))


def build_request(target: RuntimeTarget) -> RuntimeTarget:
    """The target a build here for ``target`` resolves with, so `plan` and `build` compute one key.

    Of the installed backend's release (same flavor, same MAJOR.MINOR.PATCH, the CUDA variant not
    contradicting): its exact version and CUDA variant, as a plain build records them. A
    TensorRT-RTX target's OS and architecture say where the engine runs, not where it is built (its
    engines run on any OS; the key names the building machine's platform): left to this machine.
    """
    installed = installed_backend(target.flavor)
    if installed is not None and _same_runtime(installed, target):
        target = replace(target, trt_version=installed.version, cuda=installed.cuda)
    if target.flavor == "tensorrt_rtx":
        target = replace(target, os=None, arch=None)
    return target


def _same_runtime(installed: BackendInfo, target: RuntimeTarget) -> bool:
    return same_release(installed.version, target.trt_version) and target.cuda in (None, installed.cuda)


def why_not_here(target: RuntimeTarget) -> str | None:
    """Why this machine cannot build ``target`` (None: it can).

    TensorRT-RTX builds for any compute capability on any machine, with the installed release.
    Full TensorRT builds on, and for, the GPU it runs on: the target's GPU model (or, without one,
    its compute capability) must be this machine's, with the target's release installed, on the
    target's OS and architecture.
    """
    installed = installed_backend(target.flavor)
    wanted = f"{flavor_name(target.flavor)} {target.trt_version}" + (f" ({target.cuda})" if target.cuda else "")
    if installed is None or not _same_runtime(installed, target):
        have = f"{installed.label}" + (f" ({installed.cuda})" if installed.cuda else "") if installed else "none"
        return f"needs {wanted}; installed here: {have}"
    if target.flavor == "tensorrt_rtx":
        return None
    return _gpu_mismatch(target) or _platform_mismatch(target)


def _gpu_mismatch(target: RuntimeTarget) -> str | None:
    gpu = current_gpu()
    wanted = target.gpu_name or f"a GPU of compute capability {target.compute_capability}"
    if gpu is None:
        return f"full TensorRT builds on the GPU it targets ({wanted}); this machine has no NVIDIA GPU"
    if target.gpu_name is not None:
        here, there = known_gpu(gpu.name), known_gpu(target.gpu_name)
        same = here == there if here is not None and there is not None else gpu.name == target.gpu_name
    else:
        same = gpu.compute_capability == target.compute_capability
    if not same:
        return f"full TensorRT builds on the GPU it targets ({wanted}); this machine's is {gpu.name}"
    return None


def _platform_mismatch(target: RuntimeTarget) -> str | None:
    os_name, arch = this_platform()
    for label, wanted, here in (("OS", target.os, os_name), ("architecture", target.arch, arch)):
        if wanted is not None and wanted != here:
            return f"full TensorRT plans do not move across {label}s: the target's is {wanted}, this machine's {here}"
    return None


def labels(targets: Sequence[RuntimeTarget]) -> list[str]:
    """What each target is called in a table: its fleet name, else its description."""
    return [t.label or t.describe() for t in targets]


def one_target(given: TargetOptions | TargetRequest | RuntimeTarget | None) -> TargetRequest | RuntimeTarget:
    """What a one-target command was given, checked: command-line options become their one request
    (nothing given: an empty request, this machine); a request or a resolved target passes through."""
    if isinstance(given, TargetOptions):
        return given.single()
    return given if given is not None else TargetRequest()


def many_targets(given: TargetOptions | Sequence[TargetRequest] | None) -> list[TargetRequest]:
    """What a many-target command was given, checked (empty: none)."""
    if isinstance(given, TargetOptions):
        return given.requests()
    return [request.checked() for request in given or ()]
