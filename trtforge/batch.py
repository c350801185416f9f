"""Many recipes at once, for CI: glob expansion and a dry-run plan of what a build would do.

``plan_builds`` computes each recipe's BuildKey for one or more targets and asks the catalog
whether it is already built, without building, importing TensorRT or creating the store. A CI
job can turn its JSON into a build matrix (only the ``build`` entries need a runner).
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from trtforge.errors import TrtforgeError
from trtforge.target import BuildTarget, RuntimeTarget, TargetError, build_env, explicit_target, this_platform

PlanStatus = Literal["cached", "build", "failed"]
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class UnmatchedPattern:
    """A glob that matched no file: reported as a failed recipe, not silently dropped."""

    pattern: str


def expand_recipes(arguments: list[str]) -> list[Path | UnmatchedPattern]:
    """Paths and glob patterns (``recipes/*.yaml``, ``**`` allowed) -> recipe paths, deduplicated."""
    seen: set[Path] = set()
    expanded: list[Path | UnmatchedPattern] = []
    for argument in arguments:
        if _GLOB_CHARS & set(argument):
            matches = sorted(Path(p) for p in glob.glob(argument, recursive=True) if Path(p).is_file())
            if not matches:
                expanded.append(UnmatchedPattern(argument))
                continue
        else:
            matches = [Path(argument)]
        for path in matches:
            key = path.absolute()
            if key not in seen:
                seen.add(key)
                expanded.append(path)
    return expanded


def parse_target_spec(spec: str) -> RuntimeTarget:
    """``flavor=tensorrt,trt=10.13.3,cc=8.6,gpu=NVIDIA A10G[,os=linux,arch=x86_64]`` -> a validated target."""
    fields: dict[str, str] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ("flavor", "trt", "cc", "gpu", "os", "arch") or key in fields:
            raise TargetError(
                f"target {spec[:80]!r} is not of the form flavor=F,trt=VERSION,cc=X.Y[,gpu=NAME][,os=OS,arch=ARCH]",
                hint="e.g. --target 'flavor=tensorrt,trt=10.13.3.9,cc=8.6,gpu=NVIDIA A10G'",
            )
        fields[key] = value.strip()
    return explicit_target(
        gpu=fields.get("gpu"),
        cc=fields.get("cc"),
        trt=fields.get("trt"),
        flavor=fields.get("flavor"),
        os=fields.get("os"),
        arch=fields.get("arch"),
    )


def build_target_of(target: RuntimeTarget, compute_capabilities: Sequence[str] | None = None) -> BuildTarget:
    """The BuildTarget a build for ``target`` would record (same rule as ``build_target_for``):
    TensorRT-RTX builds ahead of time for the recipe's compute capabilities, independent of the GPU;
    TensorRT builds on, and for, one GPU. The platform is the target's, else this machine's; the
    CUDA variant is the installed backend's when it is the same release, else unknown; the build
    environment (target.BUILD_ENV) is this process's."""
    from trtforge.backend.loader import installed_backend

    this_os, this_arch = this_platform()
    os_name, arch = target.os or this_os, target.arch or this_arch
    installed = installed_backend(target.flavor)
    cuda = installed.cuda if installed is not None and installed.version == target.trt_version else None
    if target.flavor == "tensorrt_rtx":
        ccs = tuple(compute_capabilities or ())
        return BuildTarget(target.flavor, target.trt_version, None, ccs, os_name, arch, cuda, build_env())
    ccs = (target.compute_capability,)
    return BuildTarget(target.flavor, target.trt_version, target.gpu_name, ccs, os_name, arch, cuda, build_env())


@dataclass
class PlanEntry:
    recipe: str
    name: str | None
    target: dict[str, Any] | None
    status: PlanStatus
    build_key: str | None = None
    artifact_id: str | None = None
    error: str | None = None
    more_errors: list[str] = field(default_factory=list)
    exit_code: int = 0

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("exit_code")
        return data


def plan_builds(
    arguments: list[str],
    targets: list[RuntimeTarget] | None = None,
    *,
    store: str | Path | None = None,
    catalog: str | None = None,
) -> list[PlanEntry]:
    """For every recipe x target: its BuildKey and whether the catalog already has it."""
    from trtforge.backend.capabilities import check_recipe
    from trtforge.backend.denylist_enforce import check_enforceable
    from trtforge.backend.loader import BackendInfo, find_backend
    from trtforge.keys import build_key
    from trtforge.model import model_sha256
    from trtforge.recipe import load_recipe
    from trtforge.store import open_existing_store
    from trtforge.target import build_target_for

    opened = open_existing_store(store, catalog=catalog)
    entries: list[PlanEntry] = []
    try:
        for item in expand_recipes(arguments):
            if isinstance(item, UnmatchedPattern):
                entries.append(
                    PlanEntry(item.pattern, None, None, "failed", error="no recipe file matches", exit_code=2)
                )
                continue
            try:
                loaded = load_recipe(item)
                digest = model_sha256(loaded)
            except TrtforgeError as exc:
                entries.append(
                    PlanEntry(
                        str(item),
                        None,
                        None,
                        "failed",
                        error=exc.message,
                        more_errors=list(exc.more),
                        exit_code=exc.exit_code,
                    )
                )
                continue
            recipe = loaded.recipe
            chosen: list[BuildTarget | None]
            if targets:
                wanted = [t for t in targets if recipe.backend in ("auto", t.flavor)]
                chosen = [build_target_of(t, recipe.compatibility.compute_capabilities) for t in wanted]
                if not chosen:
                    message = f"recipe backend {recipe.backend} matches none of the given targets"
                    entries.append(PlanEntry(str(item), recipe.name, None, "failed", error=message, exit_code=2))
                    continue
            else:
                chosen = [None]
            for build_target in chosen:
                entry = PlanEntry(str(item), recipe.name, None, "build")
                try:
                    if build_target is None:
                        backend: BackendInfo = find_backend(recipe.backend)
                        build_target = build_target_for(backend, recipe.compatibility.compute_capabilities)
                    entry.target = build_target.key_fields()
                    # The same refusals a build gives before it starts (unsupported options, deny
                    # entries the backend cannot enforce): a plan never promises an impossible build.
                    planned_backend = BackendInfo(build_target.flavor, build_target.trt_version)  # type: ignore[arg-type]
                    check_recipe(recipe, planned_backend)
                    check_enforceable(planned_backend, recipe.tactics.deny)
                    entry.build_key = build_key(recipe, digest, build_target)
                except TrtforgeError as exc:
                    entry.status, entry.error, entry.exit_code = "failed", exc.message, exc.exit_code
                    entries.append(entry)
                    continue
                hit = (
                    opened.catalog.find_by_build_key(entry.build_key, intact=opened.blobs.exists)
                    if opened is not None
                    else None
                )
                if hit is not None:
                    entry.status, entry.artifact_id = "cached", hit.id
                entries.append(entry)
    finally:
        if opened is not None:
            opened.close()
    return entries


def exit_code_for(codes: list[int]) -> int:
    """2 if any input was bad, else 1 if anything failed, else 0."""
    failed = {code for code in codes if code}
    if 2 in failed:
        return 2
    return 1 if failed else 0
