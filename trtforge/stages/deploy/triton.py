"""`trtforge deploy triton`: a Triton Inference Server model repository from the catalog.

Writes ``REPO/NAME/config.pbtxt`` (the ``inference.ModelConfig`` protobuf in text format) and
``REPO/NAME/<version>/`` holding one hash-checked plan per requested compute capability, chosen by
lookup's rules (:mod:`trtforge.rules.compatibility`) for a full-TensorRT target of that capability.

What Triton reads, from its sources (triton-inference-server/common ``protobuf/model_config.proto``,
triton-inference-server/tensorrt_backend ``src/model_state.cc`` and ``src/loader.cc``, and
triton-inference-server/core ``src/model_repository_manager/model_lifecycle.cc``):

- ``platform: "tensorrt_plan"``; ``cc_model_filenames`` maps the GPU's ``"<major>.<minor>"`` (the
  backend formats ``cudaDeviceProp`` so) to a file inside the version directory; without an entry
  it loads ``model.plan``, which trtforge never writes, so an unlisted GPU fails loudly.
- ``max_batch_size: 0`` means the dims are the whole tensor shape (explicit batch); ``N > 0`` means
  the first dimension is the batch, left out of ``dims``, and the backend refuses ``N`` above the
  largest max batch of the engine's profiles.
- ``instance_group.profile`` selects optimization profiles by index (default: profile 0).
- ``input``/``output`` ``data_type`` are ``TYPE_*`` values; ``-1`` marks a dynamic dim; a scalar is
  ``dims: [ 1 ]`` with ``reshape: { shape: [ ] }``.
- version directories are the subdirectories whose names are integers without leading zeros;
  others (our ``.tmp-*`` work directories) are ignored with a warning while they exist.
- the backend links full TensorRT (``libnvinfer``, ``createInferRuntime``) and has no TensorRT-RTX
  counterpart in any release we could find, so TensorRT-RTX plans are refused here (exit 2).
- version-compatible plans load only with ``--backend-config=tensorrt,version-compatible=true``
  (it then sets ``engine_host_code_allowed``); plugin libraries with ``plugins=...``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trtforge.core.errors import BadInputError, DeployError, NoCompatibleEngineError, NotFoundError
from trtforge.core.fsutil import (
    atomic_write,
    checked_copy,
    child_path,
    fsync_dir,
    in_the_way,
    make_temp,
    owner_prefix,
    same_file,
)
from trtforge.resolution.targets import TargetOptions, many_targets
from trtforge.rules.compatibility import (
    Candidate,
    Match,
    ModelChoice,
    Rejection,
    rank,
    rule_lean_runtime,
    rule_trt_version,
)
from trtforge.rules.flavors import parse_version
from trtforge.rules.record import read_details
from trtforge.rules.target import TargetRequest, explicit_target, parse_compute_capability
from trtforge.stages.deploy import default_mode
from trtforge.stages.deploy.engine_io import EngineIO, IoTensor, engine_io
from trtforge.stages.deploy.selection import read_ref, refuse_target_with_id
from trtforge.stages.lookup import choose_model, load_candidates
from trtforge.store import Store, require_existing_store
from trtforge.store.catalog import COUNTED_TRUST

FORMAT = "trtforge-triton/1"
CONFIG_NAME = "config.pbtxt"
RECORD_NAME = "trtforge.json"
LOCK_NAME = ".trtforge.lock"
# A Triton model name is a directory name in the repository; keep it to what every file system takes.
_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_VERSION_DIR = re.compile(r"[1-9][0-9]*")

# ONNX element type names (trtforge.stages.deploy.engine_io) -> model_config.proto DataType.
TRITON_TYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float": "TYPE_FP32",
    "double": "TYPE_FP64",
    "string": "TYPE_STRING",
    "bfloat16": "TYPE_BF16",
}

RTX_REFUSAL = (
    "Triton's TensorRT backend (platform tensorrt_plan) loads full-TensorRT plans only; "
    "it has no backend for TensorRT-RTX plans"
)


@dataclass(frozen=True)
class TritonRequest:
    """What to export: REF (a catalog name, also the Triton model name; or one artifact's id) and
    the serving targets (``targets``: the command line's target options, or the fields below)."""

    repository: Path
    name: str
    trt_version: str | None = None  # the TensorRT release Triton runs; default: the newest build's
    compute_capabilities: tuple[str, ...] = ()  # default: those the chosen model's plans were built on
    verified_only: bool = False
    max_batch_size: int = 0
    model_sha256: str | None = None
    os: str | None = None
    arch: str | None = None
    targets: TargetOptions | tuple[TargetRequest, ...] | None = None
    artifact_id: str | None = None  # REF was this artifact's id: its plan alone is exported


@dataclass
class TritonResult:
    repository: Path
    name: str
    version: int
    model_dir: Path
    config_status: str  # "written" | "unchanged"
    trt_version: str
    files: dict[str, dict[str, Any]]  # compute capability -> file, artifact and what it needs
    runtime: dict[str, Any]
    model: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "repository": str(self.repository),
            "name": self.name,
            "version": self.version,
            "model_dir": str(self.model_dir),
            "version_dir": str(self.model_dir / str(self.version)),
            "config": str(self.model_dir / CONFIG_NAME),
            "config_status": self.config_status,
            "trt_version": self.trt_version,
            "files": self.files,
            "runtime": self.runtime,
            "model": self.model,
            "notes": self.notes,
        }


def plan_file_name(cc: str) -> str:
    """Fixed per capability (``model_cc86.plan``), so one config.pbtxt serves every version."""
    major, minor = parse_compute_capability(cc)
    return f"model_cc{major}{minor}.plan"


# -- choosing the plans -----------------------------------------------------------------------


def _verifications_by_cc(store: Store, artifact_id: str) -> dict[str, set[str]]:
    """Compute capability -> statuses of the newest counted verification per GPU model there."""
    newest: dict[str, tuple[str, str | None]] = {}
    for v in store.catalog.verifications(artifact_id):  # newest first
        if v.trust in COUNTED_TRUST and v.gpu_name not in newest:
            newest[v.gpu_name] = (v.status, v.compute_capability)
    by_cc: dict[str, set[str]] = {}
    for status, cc in newest.values():
        if cc:
            major, minor = parse_compute_capability(str(cc))
            by_cc.setdefault(f"{major}.{minor}", set()).add(status)
    return by_cc


def _apply_cc_verification(
    matches: list[Match], cc: str, statuses: dict[str, dict[str, set[str]]], verified_only: bool
) -> tuple[list[Match], list[Rejection]]:
    """Per capability (Triton serves every GPU of it): a failure on any GPU model of the capability
    rejects the plan; ``verified_only`` keeps plans that passed on one; passed plans rank first."""
    kept: list[tuple[bool, Match]] = []
    rejected: list[Rejection] = []
    for match in matches:
        seen = statuses.get(match.candidate.artifact_id, {}).get(cc, set())
        if "failed" in seen:
            rejected.append(Rejection(match.candidate, "verification", f"failed verification on a GPU of cc {cc}"))
        elif verified_only and "passed" not in seen:
            rejected.append(Rejection(match.candidate, "verified_only", f"not verified on a GPU of cc {cc}"))
        else:
            kept.append(("passed" not in seen, match))
    kept.sort(key=lambda item: item[0])  # stable: lookup's order within each group
    return [m for _, m in kept], rejected


@dataclass
class _Choice:
    cc: str
    match: Match
    artifact: Any
    io: EngineIO


def _choose(store: Store, request: TritonRequest, ccs: list[str] | None) -> tuple[str, list[_Choice], ModelChoice]:
    candidates = load_candidates(store, name=request.name, model_sha256=request.model_sha256)
    if request.artifact_id is not None:
        candidates = [c for c in candidates if c.artifact_id == request.artifact_id]
    if not candidates:
        raise NotFoundError(f"no intact artifact named {request.name!r} in the catalog", hint="see `trtforge list`")
    model = _model(store, request, candidates)
    of_model = [c for c in candidates if model.admits(c)]
    full = [c for c in of_model if c.flavor == "tensorrt"]
    if not full:
        rtx = [c.artifact_id[:12] for c in of_model if c.flavor == "tensorrt_rtx"]
        one = rtx[0] if rtx else "ID"
        raise DeployError(
            f"{RTX_REFUSAL}: the newest model of {request.name!r} has only TensorRT-RTX engines ({', '.join(rtx)})",
            hint=f"serve them through ONNX Runtime instead: `trtforge deploy epcontext {one} -o OUT.onnx` "
            "(an id, or the name with a target), or build the recipe with full TensorRT (backend: tensorrt)",
        )
    trt = request.trt_version or max(full, key=lambda c: (c.learned, c.artifact_id)).trt_version
    parse_version(trt)
    if not ccs:
        ccs = sorted(
            {cc for c in full for cc in c.compute_capabilities if _runs_with(c, cc, trt)},
            key=parse_compute_capability,
        )
        if not ccs:
            raise DeployError(
                f"no full-TensorRT engine of {request.name!r} was built with TensorRT {trt}",
                hint="name the capabilities to serve with --cc (e.g. --cc 8.6 --cc 8.9)",
            )
    statuses = {c.artifact_id: _verifications_by_cc(store, c.artifact_id) for c in full}
    chosen: list[_Choice] = []
    failures: list[tuple[str, list[Rejection]]] = []
    for cc in ccs:
        target = explicit_target(gpu=None, cc=cc, trt=trt, flavor="tensorrt", os=request.os, arch=request.arch)
        ranking = rank(candidates, target, model=model)
        matches, rejected = _apply_cc_verification(ranking.matches, cc, statuses, request.verified_only)
        if not matches:
            failures.append((cc, [*ranking.rejected, *rejected]))
            continue
        artifact = store.catalog.get_artifact(matches[0].candidate.artifact_id)
        chosen.append(_Choice(cc, matches[0], artifact, engine_io(artifact)))
    if failures:
        _refuse(request.name, trt, failures)
    return trt, chosen, model


def _model(store: Store, request: TritonRequest, candidates: list[Candidate]) -> ModelChoice:
    """The name's model lookup means, or (REF an artifact id) that artifact's own."""
    if request.artifact_id is not None:
        [only] = candidates
        why = f"artifact {only.artifact_id}"
        return ModelChoice(only.model_sha256, only.recipe_fingerprint, why, only.recipe_variant)
    model = choose_model(store, name=request.name, model_sha256=request.model_sha256)
    if model is None:  # pragma: no cover - load_candidates found intact rows
        raise NotFoundError(f"no intact artifact named {request.name!r}")
    return model


def _runs_with(candidate: Candidate, cc: str, trt: str) -> bool:
    """The plan loads on TensorRT ``trt`` (same release, or version-compatible): lookup's own rules."""
    target = explicit_target(gpu=None, cc=cc, trt=trt, flavor="tensorrt")
    return rule_trt_version(candidate, target) is None and rule_lean_runtime(candidate, target) is None


def _refuse(name: str, trt: str, failures: list[tuple[str, list[Rejection]]]) -> None:
    """Exit 1 with lookup's --explain reasons, per capability."""
    more: list[str] = []
    detail: dict[str, Any] = {"rejected": {}}
    for cc, rejected in failures:
        detail["rejected"][cc] = [r.as_json() for r in rejected]
        if not rejected:
            more.append(f"cc {cc}: no full-TensorRT artifact of the model")
        for r in rejected:
            more.append(f"cc {cc}: {r.candidate.artifact_id[:12]} rejected by {r.rule}: {r.reason}")
    where = ", ".join(cc for cc, _ in failures)
    raise NoCompatibleEngineError(
        f"no engine of {name!r} runs on compute capability {where} with TensorRT {trt}; nothing was written",
        more=tuple(more),
        detail=detail,
        hint=_refusal_hint(failures),
    )


def _refusal_hint(failures: list[tuple[str, list[Rejection]]]) -> str:
    """The way out: where compatible engines exist but none passed verification (--verified-only), a
    verification on a GPU of that capability; else a build."""
    unverified = {cc: next((r for r in rejected if r.rule == "verified_only"), None) for cc, rejected in failures}
    if all(unverified.values()):
        runs = ", ".join(
            f"`trtforge verify {r.candidate.artifact_id}` on a GPU of compute capability {cc}"
            for cc, r in unverified.items()
            if r is not None
        )
        return f"engines exist but none passed verification there: run {runs}; or deploy without --verified-only"
    return "build the recipe on a GPU of that capability, or leave the capability out (--cc)"


# -- the config -------------------------------------------------------------------------------


def _quote(text: str) -> str:
    """A protobuf text-format string literal (octal escapes for anything but printable ASCII)."""
    out = []
    for byte in text.encode():
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _tensor_entry(tensor: IoTensor, batching: bool) -> list[str]:
    data_type = TRITON_TYPES.get(tensor.dtype)
    if data_type is None:
        raise DeployError(
            f"{tensor.mode} {tensor.name!r} has element type {tensor.dtype}, which Triton's config has no type for",
            hint=f"Triton data types: {', '.join(sorted(TRITON_TYPES))}",
        )
    dims = list(tensor.shape[1:] if batching else tensor.shape)
    lines = ["  {", f"    name: {_quote(tensor.name)}", f"    data_type: {data_type}"]
    if not dims:  # a scalar: Triton wants dims [1] reshaped to []
        lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
    else:
        lines.append("    dims: [ " + ", ".join(str(d) for d in dims) + " ]")
    lines.append("  }")
    return lines


def _profile_groups(io: EngineIO) -> list[int] | None:
    """Profile indices to give one instance group each, or None for one group (profiles alike)."""
    if not io.profiles_known or len(io.profiles) < 2:
        return None
    first: dict[str, int] = {}
    for index, profile in enumerate(io.profiles):
        first.setdefault(json.dumps(profile, sort_keys=True), index)
    indices = sorted(first.values())
    return indices if len(indices) > 1 else None


def _check_batching(io: EngineIO, max_batch_size: int) -> None:
    """--max-batch-size N: every tensor's first dim is the (dynamic) batch, and some profile reaches N."""
    if max_batch_size == 0:
        return
    for tensor in (*io.inputs, *io.outputs):
        if not tensor.shape or tensor.shape[0] >= 0:
            raise DeployError(
                f"--max-batch-size {max_batch_size}: {tensor.mode} {tensor.name!r} {list(tensor.shape)} has no "
                "dynamic first (batch) dimension",
                hint="leave --max-batch-size out (max_batch_size 0: requests give whole shapes)",
            )
    if not io.profiles_known:
        raise DeployError(
            f"--max-batch-size {max_batch_size}: the record does not hold the plan's optimization profiles (adopted)",
            hint="leave --max-batch-size out; Triton reads the batch range from the engine",
        )
    # tensorrt_backend GetMaxSupportedBatchSize: max over profiles of min over inputs of max[0].
    best = 0
    for profile in io.profiles:
        limits = [int(shapes["max"][0]) for shapes in profile.values() if shapes.get("max")]
        best = max(best, min(limits) if limits else 0)
    if best < max_batch_size:
        raise DeployError(
            f"--max-batch-size {max_batch_size} exceeds the largest batch the engine's profiles allow ({best})",
            hint=f"use --max-batch-size {best} or less, or widen the recipe's profiles",
        )


def render_config(name: str, io: EngineIO, ccs: list[str], max_batch_size: int, runtime: dict[str, Any]) -> str:
    """config.pbtxt text; every field a version shares, nothing that differs between versions."""
    _check_batching(io, max_batch_size)
    batching = max_batch_size > 0
    lines = [
        f"# Triton model configuration written by trtforge for {name}: TensorRT {runtime['tensorrt']} plans,",
        "# one per compute capability. Shared by every version directory; trtforge.json beside it names",
        "# the artifact behind each plan and what it needs at run time.",
    ]
    if runtime.get("backend_config"):
        lines.append(f"# Start tritonserver with --backend-config={runtime['backend_config']}")
    lines += [
        f"name: {_quote(name)}",
        'platform: "tensorrt_plan"',
        f"max_batch_size: {max_batch_size}",
    ]
    for label, tensors in (("input", io.inputs), ("output", io.outputs)):
        if tensors:  # a model without runtime inputs has no input section
            entries = ["\n".join(_tensor_entry(t, batching)) for t in tensors]
            lines += [f"{label} [", ",\n".join(entries), "]"]
    groups = _profile_groups(io)
    lines.append("instance_group [")
    if groups is None:
        lines.append("  { kind: KIND_GPU, count: 1 }")
    else:
        entries = [f'  {{ kind: KIND_GPU, count: 1, profile: [ "{index}" ] }}' for index in groups]
        lines.append(",\n".join(entries))
    lines.append("]")
    entries = [f"  {{ key: {_quote(cc)}, value: {_quote(plan_file_name(cc))} }}" for cc in ccs]
    lines += ["cc_model_filenames [", ",\n".join(entries), "]"]
    params = [("trtforge.tensorrt", runtime["tensorrt"])]
    if runtime.get("backend_config"):
        params.append(("trtforge.backend_config", runtime["backend_config"]))
    entries = [f"  {{ key: {_quote(k)}, value: {{ string_value: {_quote(v)} }} }}" for k, v in params]
    lines += ["parameters [", ",\n".join(entries), "]"]
    return "\n".join(lines) + "\n"


def _needs(choice: _Choice) -> dict[str, Any]:
    """What one plan needs at run time, as far as its record knows."""
    details = read_details(choice.artifact.details)
    envelope = choice.match.candidate.envelope
    built = details.target or {}
    adopted = details.origin == "adopted"
    return {
        "file": plan_file_name(choice.cc),
        "artifact_id": choice.artifact.id,
        "plan_sha256": choice.artifact.plan_sha256,
        "plan_size": choice.artifact.plan_size,
        "flavor": choice.artifact.flavor,
        "trt_version": choice.artifact.trt_version,
        "cuda": built.get("cuda"),
        "built_on": {
            "gpu_name": choice.artifact.gpu_name,
            "compute_capabilities": list(choice.artifact.compute_capabilities or []),
            "os": built.get("os"),
            "arch": built.get("arch"),
        },
        "hardware": envelope.hardware,
        "version_compatible": envelope.version_compatible,
        "lean_runtime_in_plan": envelope.version_compatible and not envelope.exclude_lean_runtime,
        "host_code": envelope.version_compatible and not envelope.exclude_lean_runtime,
        "origin": details.origin,
        # The plugin libraries the build loaded and did not embed in the plan (the recipe's plugins);
        # TensorRT's own (libnvinfer_plugin) are registered by the Triton backend. An adopted plan may
        # need others: its record cannot say.
        "plugins": "unknown (adopted plan)" if adopted else [p.model_dump() for p in details.plugins_needed],
        "notes": [*choice.match.notes, *_lean_runtime_note(envelope)],
    }


def _lean_runtime_note(envelope: Any) -> list[str]:
    # TensorRT Developer Guide, "Version Compatibility": a plan built with kEXCLUDE_LEAN_RUNTIME
    # needs its lean runtime loaded through IRuntime::loadRuntime, which the Triton TensorRT backend
    # (src/loader.cc) never calls; it only allows host code.
    if envelope.version_compatible and envelope.exclude_lean_runtime:
        return ["plan excludes the lean runtime: Triton's TensorRT backend does not load one (IRuntime::loadRuntime)"]
    return []


def _runtime(trt: str, choices: list[_Choice], needs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    version_compatible = any(n["version_compatible"] for n in needs.values())
    unknown = any(isinstance(n["plugins"], str) for n in needs.values())
    listed = [n["plugins"] for n in needs.values() if not isinstance(n["plugins"], str)]
    libraries = sorted({plugin["library"] for plugins in listed for plugin in plugins})
    runtime: dict[str, Any] = {
        "server": "Triton Inference Server, TensorRT backend (platform tensorrt_plan)",
        "tensorrt": trt,
        "cuda": sorted({n["cuda"] for n in needs.values() if n["cuda"]}),
        "backend_config": "tensorrt,version-compatible=true" if version_compatible else None,
        "plugins": "unknown (adopted plans)" if unknown else libraries,
    }
    if libraries:
        # Triton TensorRT backend README, "Command-line Options": --backend-config=tensorrt,plugins=
        # "a.so;b.so" loads plugin libraries before the backend's models deserialize.
        runtime["plugins_backend_config"] = "tensorrt,plugins=" + ";".join(libraries)
    return runtime


# -- writing the repository -------------------------------------------------------------------


@contextmanager
def _locked(model_dir: Path) -> Iterator[bool]:
    """One writer per model directory: version numbers are read and taken under this lock. Yields
    whether this call created the directory (so it can take it back if it publishes nothing); a lock
    whose file was removed by the holder before us is retaken on the directory as it now is."""
    while True:
        created = not model_dir.exists()
        try:
            model_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInputError(f"cannot create {model_dir}: {exc.strerror or exc}") from None
        lock = model_dir / LOCK_NAME
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise BadInputError(
                f"cannot lock {lock}: {exc.strerror or exc}", hint="it must be a writable file (or absent)"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if same_file(fd, lock):
                yield created
                return
        finally:
            os.close(fd)


def existing_versions(model_dir: Path) -> list[int]:
    """Version directories as Triton counts them (integers without leading zeros)."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and _VERSION_DIR.fullmatch(p.name))


def _read_record(model_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((model_dir / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("format") == FORMAT else {}


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [key for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def deploy_triton(
    request: TritonRequest, store: str | Path | None = None, *, catalog: str | None = None
) -> TritonResult:
    """Export the plans of ``request.name`` as a new version of a Triton model; see the module docstring."""
    if not _MODEL_NAME.fullmatch(request.name):
        raise BadInputError(f"model name {request.name[:60]!r} is not a plain directory name ({_MODEL_NAME.pattern})")
    if request.max_batch_size < 0:
        raise BadInputError(f"--max-batch-size must be 0 or more, not {request.max_batch_size}")
    targets = many_targets(request.targets)  # checked before the store is opened
    request, skipped = serving_targets(request, targets)
    ccs: list[str] = []
    for cc in request.compute_capabilities:
        major, minor = parse_compute_capability(cc)
        if f"{major}.{minor}" not in ccs:
            ccs.append(f"{major}.{minor}")
    if request.trt_version is not None:
        parse_version(request.trt_version)
    if request.repository.exists() and not request.repository.is_dir():
        raise BadInputError(f"model repository {request.repository} exists and is not a directory")
    opened = require_existing_store(store, catalog=catalog, missing=f"no artifact named {request.name!r} (empty store)")
    try:
        request, ccs = _read_ref(opened, request, ccs, given=bool(targets))
        trt, chosen, model = _choose(opened, request, ccs)
        signatures = {json.dumps(c.io.signature(), sort_keys=True) for c in chosen}
        if len(signatures) > 1 or len({c.match.candidate.model_key for c in chosen}) > 1:
            ids = ", ".join(c.artifact.id[:12] for c in chosen)
            raise DeployError(
                f"the plans chosen for {request.name!r} ({ids}) differ in their inputs, outputs or profiles",
                hint="one config.pbtxt serves every plan: export capabilities with matching plans separately",
            )
        io = chosen[0].io
        needs = {c.cc: _needs(c) for c in chosen}
        runtime = _runtime(trt, chosen, needs)
        config_text = render_config(request.name, io, [c.cc for c in chosen], request.max_batch_size, runtime)
        shared = {
            "name": request.name,
            "max_batch_size": request.max_batch_size,
            "io": io.signature(),
            "compute_capabilities": [c.cc for c in chosen],
            "tensorrt": trt,
            "backend_config": runtime["backend_config"],
        }
        result = TritonResult(
            repository=request.repository,
            name=request.name,
            version=0,
            model_dir=child_path(request.repository, request.name, "model name"),
            config_status="written",
            trt_version=trt,
            files=needs,
            runtime=runtime,
            model={
                "model_sha256": model.model_sha256,
                "recipe_fingerprint": model.recipe_fingerprint,
                "why": model.why,
            },
        )
        result.notes += [f"cc {cc}: {note}" for cc, need in needs.items() for note in need["notes"]] + skipped
        if io.source == "model":
            result.notes.append("I/O taken from the ONNX model's graph (the record holds no engine I/O)")
        if not io.profiles_known:
            result.notes.append("profiles not recorded (adopted plan): one instance group, Triton uses profile 0")
        with _all_or_nothing(result.model_dir) as written:
            _write_version(opened, request, chosen, config_text, shared, result, written)
        return result
    finally:
        opened.close()


def serving_targets(request: TritonRequest, targets: list[TargetRequest]) -> tuple[TritonRequest, list[str]]:
    """The targets' serving fields in the request: their TensorRT release (one: a Triton model serves
    one), compute capabilities, OS and architecture. TensorRT-RTX entries of a fleet are left out
    with a note (Triton has no backend for them); a TensorRT-RTX target given alone is refused."""
    if not targets:
        return request, []
    full = [t for t in targets if t.flavor in (None, "tensorrt")]
    rtx = [t for t in targets if t.flavor == "tensorrt_rtx"]
    alone = [t for t in rtx if t.label is None]
    if alone or not full:
        which = f"target {alone[0].gpu or alone[0].cc} with TensorRT-RTX {alone[0].trt}" if alone else "fleet"
        raise DeployError(f"{RTX_REFUSAL}: the {which} names TensorRT-RTX", hint=_RTX_HINT)
    skipped = [f"fleet target {t.label}: TensorRT-RTX, not served by Triton ({_RTX_HINT})" for t in rtx]
    fields: dict[str, Any] = {"compute_capabilities": tuple(dict.fromkeys(t.cc for t in full if t.cc))}
    for field_name, values, label in (
        ("trt_version", {t.trt for t in full if t.trt}, "TensorRT releases"),
        ("os", {t.os for t in full if t.os}, "OSes"),
        ("arch", {t.arch for t in full if t.arch}, "CPU architectures"),
    ):
        if len(values) > 1:
            raise DeployError(
                f"a Triton model serves one TensorRT plan per compute capability; the targets name {len(values)} "
                f"{label} ({', '.join(sorted(values))})",
                hint="deploy each under its own model repository: select its targets with --target NAME",
            )
        if values:
            fields[field_name] = values.pop()
    return replace(request, **fields), skipped


_RTX_HINT = "serve TensorRT-RTX engines through ONNX Runtime: `trtforge deploy epcontext NAME -o OUT.onnx --target ...`"


def _read_ref(store: Store, request: TritonRequest, ccs: list[str], *, given: bool) -> tuple[TritonRequest, list[str]]:
    """REF as a name (as given), or an artifact id: that artifact's name, release and capability."""
    ref = read_ref(store, request.name)
    if ref.artifact is None:
        return request, ccs
    artifact = ref.artifact
    refuse_target_with_id(given or bool(ccs) or request.trt_version is not None, request.model_sha256)
    request = replace(
        request, name=artifact.name, artifact_id=artifact.id, trt_version=artifact.trt_version, model_sha256=None
    )
    return request, [str(cc) for cc in artifact.compute_capabilities or []]


@contextmanager
def _all_or_nothing(model_dir: Path) -> Iterator[list[Path]]:
    """Around writing a new version (under the model directory's lock): yields the list the writer
    adds what it put there to. On any failure that is taken back, the model directory is left as it
    was (one this call created is removed again), and an OSError becomes one line."""
    with _locked(model_dir) as created:
        written: list[Path] = []
        try:
            yield written
        except BaseException as exc:
            _take_back(written, model_dir if created else None)
            if isinstance(exc, OSError):
                where = exc.filename or model_dir
                raise DeployError(
                    f"cannot write {where}: {exc.strerror or exc}; nothing was written",
                    hint="free space or fix permissions in the model repository, then deploy again",
                ) from None
            raise


def _check_writable_files(model_dir: Path) -> None:
    """The files trtforge keeps beside the versions must be files, else the repository is not ours to fix."""
    path = in_the_way(model_dir / CONFIG_NAME, model_dir / RECORD_NAME)
    if path is not None:
        raise BadInputError(
            f"{path} exists and is not a file; nothing was written",
            hint="move it away, or export under a new model name",
        )


def _write_version(
    store: Store,
    request: TritonRequest,
    chosen: list[_Choice],
    config_text: str,
    shared: dict[str, Any],
    result: TritonResult,
    written: list[Path],
) -> None:
    model_dir = result.model_dir
    _check_writable_files(model_dir)
    record = _read_record(model_dir)
    config_path = model_dir / CONFIG_NAME
    if config_path.exists():
        if config_path.read_text(errors="replace") != config_text:
            changed = _differences(record.get("shared", {}), shared) if record else ["config.pbtxt"]
            raise DeployError(
                f"{config_path} is shared by every version and this export would change it "
                f"({', '.join(changed) or 'edited by hand'}); nothing was written",
                hint="export under a new model name, or move the existing model directory away",
            )
        result.config_status = "unchanged"
    version = max(existing_versions(model_dir), default=0) + 1
    fd, work = make_temp(model_dir, directory=True)  # Triton ignores it: not an integer name
    try:
        for choice in chosen:
            source = store.blobs.local_file(choice.artifact.plan_sha256, verify=False)
            checked_copy(
                source, work / plan_file_name(choice.cc), choice.artifact.plan_sha256, temp_prefix=owner_prefix()
            )
        os.chmod(work, default_mode(directory=True))
        fsync_dir(work)
        if result.config_status == "written":
            written.append(config_path)
            with atomic_write(config_path) as handle:  # before the version appears: Triton polls
                os.fchmod(handle.fileno(), default_mode())
                handle.write(config_text.encode())
        os.rename(work, model_dir / str(version))  # the version appears whole
        written.append(model_dir / str(version))
        fsync_dir(model_dir)
    finally:
        os.close(fd)
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    result.version = version
    versions = dict(record.get("versions", {}))
    versions[str(version)] = {
        "created_at": datetime.now(timezone.utc).isoformat(),
        "model": result.model,
        "files": result.files,
        "runtime": result.runtime,
    }
    document = {"format": FORMAT, "name": request.name, "shared": shared, "versions": versions}
    with atomic_write(model_dir / RECORD_NAME) as handle:
        os.fchmod(handle.fileno(), default_mode())
        handle.write((json.dumps(document, indent=2, sort_keys=True) + "\n").encode())


def _take_back(written: list[Path], created_dir: Path | None) -> None:
    """Undo a failed export, newest first: the version (moved to a name Triton ignores before it is
    removed, so it never sees half of it), a config nobody shared yet, and a model directory this
    call created (with its lock; held, so no other writer is inside)."""
    for path in reversed(written):
        try:
            if path.is_dir():
                fd, hidden = make_temp(path.parent, directory=True)
                try:
                    os.rename(path, hidden)  # onto the empty temp directory: atomic
                finally:
                    os.close(fd)
                shutil.rmtree(hidden, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        except OSError:
            pass  # best effort: the error being reported matters more
    if created_dir is not None:
        try:
            (created_dir / LOCK_NAME).unlink(missing_ok=True)
            created_dir.rmdir()  # only if empty: anything else is not ours
        except OSError:
            pass
