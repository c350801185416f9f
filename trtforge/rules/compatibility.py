"""Which engines can run on a target, and which of them to prefer: pure functions over rows.

Nothing here touches the catalog, the blob store or TensorRT; :mod:`trtforge.stages.lookup`
feeds rows in. (The module is not called ``lookup`` because ``trtforge.lookup`` is the public
function; a submodule of that name would replace it on import.)

The compatibility envelope of an artifact is read from ``details["compatibility"]``, with safe
(most restrictive) defaults when a key is absent, so rows written before recipes carried these
fields still answer correctly:

- ``hardware``: ``none`` (default) | ``ampere_plus`` | ``same_compute_capability``
- ``version_compatible``: bool, default False
- ``exclude_lean_runtime``: bool, default False

The GPUs it was built for are the row's ``compute_capabilities``. For TensorRT-RTX that is the
list given to the builder, which trtforge always sets explicitly; rows recorded before it did
(an empty list) are read as :data:`trtforge.rules.flavors.RTX_DEFAULT_COMPUTE_CAPABILITIES`, and
``--explain`` says so.
The platform it was built on is ``details["target"]["os"/"arch"]``; rows written before key
schema 2 do not record it, and an unknown platform (on either side) passes the platform rule
with a note, so older artifacts stay reachable (see rule_platform).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from trtforge.rules.flavors import (
    RTX_DEFAULT_COMPUTE_CAPABILITIES,
    SAME_MAJOR_OR_NEWER,
    SAME_RELEASE,
    parse_version,
    runtime_releases,
    same_release,
)
from trtforge.rules.target import RuntimeTarget, TargetGroup, parse_compute_capability

if TYPE_CHECKING:
    from trtforge.rules.recipe import Compatibility
    from trtforge.rules.record import ArtifactDetails
    from trtforge.rules.target import BuildTarget

HARDWARE_LEVELS = ("none", "ampere_plus", "same_compute_capability")
RUNTIME_PLATFORMS = ("same_as_build", "windows_amd64")

# TensorRT-RTX Support Matrix: data-center Hopper (9.0) is not a supported device, whatever the
# engine's list says.
RTX_UNSUPPORTED_CCS = ("9.0",)
# TensorRT Developer Guide, "Hardware Compatibility": kAMPERE_PLUS engines run on Ampere
# (compute capability 8.0) and later.
AMPERE_CC = (8, 0)
# TensorRT Developer Guide, "Version Compatibility": supported from TensorRT 8.6 (build and run).
VERSION_COMPATIBLE_SINCE = (8, 6)


_LAX_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_LAX_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
_DAMAGED = object()


@dataclass(frozen=True)
class RecordView:
    """The fields of an artifact's record (``artifacts.details``) that lookup's rules read.

    Read from the stored JSON without building :mod:`trtforge.rules.record`'s pydantic models,
    which cost every `lookup` (a service's start) about as much as the rest of its work. The
    reading is ``read_details``'s: a missing value, or one that does not validate, reads as the
    model's default (tests/test_record.py holds the two readers to the same answers).
    """

    origin: str = "built"
    target: dict[str, Any] | None = None
    compatibility: dict[str, Any] = field(default_factory=dict)
    weightless: bool = False
    refit: str | None = None
    # (name, sha256) of the plugin libraries a runtime must load first (``ArtifactDetails.plugins_needed``)
    plugins_needed: tuple[tuple[str, str], ...] = ()

    @property
    def needs_weights(self) -> bool:
        """A weight-stripped plan (as ``ArtifactDetails.needs_weights``)."""
        return self.weightless or self.refit in ("strip_weights", "strip_all_weights")

    @classmethod
    def of(cls, details: Any) -> RecordView:
        """From a stored record (a JSON object) or an ``ArtifactDetails`` (an ORM row's)."""
        if not isinstance(details, dict):
            if details is None or not hasattr(details, "compatibility"):
                return cls()
            needed = tuple((p.name, p.sha256) for p in details.plugins_needed)
            return cls(details.origin, details.target, details.compatibility, details.weightless, details.refit, needed)
        origin = details.get("origin", "built")
        target = details.get("target")
        compatibility = details.get("compatibility", {})
        weightless = _lax_bool(details.get("weightless", False))
        refit = details.get("refit")
        return cls(
            origin=origin if origin in ("built", "adopted") else "built",
            target=target if isinstance(target, dict) else None,
            compatibility=compatibility if isinstance(compatibility, dict) else {},
            weightless=weightless if isinstance(weightless, bool) else False,
            refit=refit if isinstance(refit, str) else None,
            plugins_needed=_plugins_needed(details.get("plugins")),
        )


def _plugins_needed(plugins: Any) -> tuple[tuple[str, str], ...]:
    """Plugin records not embedded in the plan, read as ``read_details`` reads them: a list with any
    entry that does not validate reads as its default (none)."""
    if plugins is None:
        return ()
    if not isinstance(plugins, list) or not all(_plugin_valid(p) for p in plugins):
        return ()
    return tuple((p["name"], p["sha256"]) for p in plugins if _lax_bool(p.get("serialized", False)) is False)


def _plugin_valid(plugin: Any) -> bool:
    """What ``record.PluginRecord`` accepts: text library, name, sha256 and load; a lax boolean."""
    return (
        isinstance(plugin, dict)
        and all(isinstance(plugin.get(key), str) for key in ("library", "name", "sha256"))
        and isinstance(plugin.get("load", "dynamic"), str)
        and isinstance(_lax_bool(plugin.get("serialized", False)), bool)
    )


def _lax_bool(value: Any) -> object:
    """A boolean as pydantic's lax mode reads one (bools, 0/1, yes/no words), else _DAMAGED."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _LAX_TRUE | _LAX_FALSE:
        return value.lower() in _LAX_TRUE
    return _DAMAGED


@dataclass(frozen=True)
class Envelope:
    """Which targets may load an engine beyond the one it was built for.

    The one definition of the envelope: builds, refits and adopted plans write it with
    :meth:`record`, lookup reads it back with :meth:`from_details`.
    """

    hardware: str = "none"
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    # IBuilderConfig::setRuntimePlatform (TensorRT 10.2+, "Cross-Platform Compatibility"): an engine
    # built on Linux x86-64 for kWINDOWS_AMD64 runs on Windows x86-64 only.
    runtime_platform: str = "same_as_build"

    @classmethod
    def of(cls, compatibility: Compatibility) -> Envelope:
        return cls(
            compatibility.hardware,
            compatibility.version_compatible,
            compatibility.exclude_lean_runtime,
            compatibility.runtime_platform,
        )

    def runs_on(self, built_os: str | None, built_arch: str | None) -> tuple[str | None, str | None]:
        """The (os, arch) the engine runs on: where it was built, unless built for another platform."""
        if self.runtime_platform == "windows_amd64":
            return "windows", "x86_64"
        return built_os, built_arch

    def record(self, target: BuildTarget) -> dict[str, Any]:
        """``details["compatibility"]`` of an artifact: the envelope plus where it was built, for people.

        TensorRT: the build GPU's compute capability, widened by the hardware level (AMPERE_PLUS:
        cc >= 8.0; SAME_COMPUTE_CAPABILITY: any GPU of that cc), and by version compatibility to
        newer runtimes of the same major version (TensorRT Developer Guide, "Version Compatibility").
        TensorRT-RTX: the compute capabilities built for (always an explicit list, see resolve).
        """
        return {
            "hardware": self.hardware,
            "version_compatible": self.version_compatible,
            "exclude_lean_runtime": self.exclude_lean_runtime,
            "flavor": target.flavor,
            "trt_version": target.trt_version,
            "gpu_name": target.gpu_name,
            "compute_capabilities": list(target.compute_capabilities),
            "runtime_versions": self.runtime_versions(target.flavor),
            "lean_runtime_in_plan": self.version_compatible and not self.exclude_lean_runtime,
            **({"runtime_platform": self.runtime_platform} if self.runtime_platform != "same_as_build" else {}),
        }

    def runtime_versions(self, flavor: str) -> str:
        """Which runtime releases load the plan (the rule lives in trtforge.rules.flavors)."""
        return runtime_releases(flavor, self.version_compatible)

    def loading_releases(self, flavor: str) -> str:
        """Which runtime releases can load the plan, every rule applied: a version-compatible plan
        without its lean runtime loads on its own release only (rule_lean_runtime)."""
        return runtime_releases(flavor, self.version_compatible and not self.exclude_lean_runtime)

    @classmethod
    def from_details(cls, details: ArtifactDetails | RecordView) -> Envelope:
        """The most restrictive reading wherever a value is absent (rows written by older versions)."""
        raw = details.compatibility
        hardware = raw.get("hardware", "none")
        version_compatible = raw.get("version_compatible") is True
        if "version_compatible" not in raw:  # written by builds before the envelope had one writer
            version_compatible = raw.get("runtime_versions") == SAME_MAJOR_OR_NEWER
        exclude_lean = raw.get("exclude_lean_runtime") is True
        if "exclude_lean_runtime" not in raw and "lean_runtime_in_plan" in raw:  # idem
            exclude_lean = version_compatible and raw.get("lean_runtime_in_plan") is not True
        platform = raw.get("runtime_platform", "same_as_build")
        return cls(
            hardware=hardware if hardware in HARDWARE_LEVELS else "none",
            version_compatible=version_compatible,
            exclude_lean_runtime=exclude_lean,
            runtime_platform=platform if platform in RUNTIME_PLATFORMS else "same_as_build",
        )


@dataclass(frozen=True)
class Candidate:
    """The catalog fields lookup needs about one artifact."""

    artifact_id: str
    name: str
    flavor: str
    trt_version: str
    compute_capabilities: tuple[str, ...]
    plan_sha256: str
    created_at: datetime
    gpu_name: str | None = None
    model_sha256: str = ""
    plan_size: int = 0
    envelope: Envelope = field(default_factory=Envelope)
    origin: str = "built"
    os: str | None = None  # build platform; None for rows that predate recording it
    arch: str | None = None
    # GPU model name -> "passed" | "failed" (verification results on that model).
    verified_on: Mapping[str, str] = field(default_factory=dict)
    recipe_fingerprint: str = ""
    # A weight-stripped plan (refit: strip_weights): it computes nothing useful until refitted.
    weightless: bool = False
    # Plugin libraries (name, sha256) a runtime must load before it deserializes the plan.
    plugins_needed: tuple[tuple[str, str], ...] = ()
    # The recipe without its target fields (rules.keys.recipe_variant); None: no recipe (adopted).
    recipe_variant: str | None = None
    # When this store learned of it (None: only created_at is known, as in tests of the rules alone).
    learned_at: datetime | None = None
    imported: bool = False  # came in a bundle (a local artifact of the same build key ranks first)
    build_key: str = ""
    cuda: str | None = None  # the CUDA variant of the wheel that built it (cu12/cu13); None: not recorded

    @property
    def model_key(self) -> tuple[str, str | None]:
        """What "one model" means for lookup: the model digest and the recipe minus its target fields."""
        return (self.model_sha256, self.recipe_variant)

    @property
    def learned(self) -> datetime:
        """This store's order: when it learned of the artifact (``created_at`` only where unknown)."""
        return self.learned_at if self.learned_at is not None else self.created_at

    def as_json(self) -> dict[str, Any]:
        return {
            "artifact_id": self.artifact_id,
            "name": self.name,
            "flavor": self.flavor,
            "trt_version": self.trt_version,
            "gpu_name": self.gpu_name,
            "compute_capabilities": list(self.compute_capabilities),
            "plan_sha256": self.plan_sha256,
            "plan_size": self.plan_size,
            "model_sha256": self.model_sha256,
            "recipe_fingerprint": self.recipe_fingerprint,
            "created_at": self.created_at.isoformat(),
            "learned_at": self.learned.isoformat(),
            "imported": self.imported,
            "origin": self.origin,
            "weightless": self.weightless,
            "plugins_needed": [{"name": name, "sha256": sha256} for name, sha256 in self.plugins_needed],
            "os": self.os,
            "arch": self.arch,
            "cuda": self.cuda,
            "compatibility": {
                "hardware": self.envelope.hardware,
                "version_compatible": self.envelope.version_compatible,
                "exclude_lean_runtime": self.envelope.exclude_lean_runtime,
            },
            "verified_on": dict(self.verified_on),
        }


@dataclass(frozen=True)
class Rejection:
    """The one rule that rejected an artifact, and why in words."""

    candidate: Candidate
    rule: str
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"artifact_id": self.candidate.artifact_id, "rule": self.rule, "reason": self.reason}


@dataclass(frozen=True)
class Match:
    """An artifact that can run on the target, with what made it rank where it did."""

    candidate: Candidate
    verified_here: bool
    exact_version: bool
    same_gpu_model: bool
    envelope_width: int
    notes: tuple[str, ...] = ()
    # (when this store learned of it, 1 if it is an imported artifact ranked behind a local one of
    # its build key); set by rank() from all the candidates
    recency: tuple[float, int] = (0.0, 0)

    def sort_key(self) -> tuple[Any, ...]:
        # Ranking (DESIGN.md): verified on this GPU model > exact build match > wider envelopes;
        # ties go to the artifact this store learned of last (within one build key a local one
        # first), then the id keeps the order total.
        return (
            not self.verified_here,
            not self.exact_version,
            not self.same_gpu_model,
            self.envelope_width,
            -self.recency[0],
            self.recency[1],
            self.candidate.artifact_id,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            **self.candidate.as_json(),
            "verified_here": self.verified_here,
            "exact_version": self.exact_version,
            "same_gpu_model": self.same_gpu_model,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class ModelChoice:
    """The one model a lookup considers, and why that one: a model digest and the recipe without its
    target fields (``recipe_variant``; None: any, when the model's newest row is an adopted plan
    with no recipe-built sibling). ``recipe_fingerprint`` is that of the row it was chosen from."""

    model_sha256: str
    recipe_fingerprint: str
    why: str
    recipe_variant: str | None = None

    def admits(self, candidate: Candidate) -> bool:
        """Whether ``candidate`` is an engine of this model: same digest, and the same recipe up to
        target fields (an adopted plan has no recipe and belongs to whichever built its model)."""
        if candidate.model_sha256 != self.model_sha256:
            return False
        mine, theirs = self.recipe_variant, candidate.recipe_variant
        return mine is None or theirs is None or mine == theirs

    def describe(self) -> str:
        return f"model sha256 {self.model_sha256[:12]} with recipe {self.recipe_fingerprint[:12]}"

    def as_json(self) -> dict[str, Any]:
        return {
            "model_sha256": self.model_sha256,
            "recipe_fingerprint": self.recipe_fingerprint,
            "recipe_variant": self.recipe_variant,
            "why": self.why,
        }


@dataclass(frozen=True)
class Ranking:
    """All compatible artifacts, best first, and every rejected one with its rule."""

    target: RuntimeTarget
    matches: list[Match]
    rejected: list[Rejection]
    model: ModelChoice | None = None  # None: every model (--any-model)
    warnings: tuple[str, ...] = ()

    @property
    def best(self) -> Match | None:
        return self.matches[0] if self.matches else None

    def __bool__(self) -> bool:
        return bool(self.matches)


# -- rules: each returns None (passes) or the reason it rejects -------------------------------

Rule = Callable[[Candidate, RuntimeTarget], str | None]



def _cc_set(candidate: Candidate) -> tuple[str, ...]:
    """The recorded list; old TensorRT-RTX rows without one fall back to the documented default."""
    return candidate.compute_capabilities or RTX_DEFAULT_COMPUTE_CAPABILITIES


UNRECORDED_CCS_NOTE = (
    "compute capabilities not recorded (built before trtforge set them explicitly); "
    "assumed TensorRT-RTX's default " + ", ".join(RTX_DEFAULT_COMPUTE_CAPABILITIES)
)


def rule_flavor(c: Candidate, t: RuntimeTarget) -> str | None:
    # TensorRT Developer Guide, "Version Compatibility" and TensorRT-RTX "Porting Guide for TensorRT
    # Applications": a plan is read only by the runtime family that serialized it.
    if c.flavor != t.flavor:
        return f"built with {c.flavor}, the target runs {t.flavor}"
    return None


def rule_rtx_version(c: Candidate, t: RuntimeTarget) -> str | None:
    # TensorRT-RTX documentation, "Engine Compatibility" > "Version Compatibility": engines are not
    # compatible between different TensorRT-RTX releases; a new runtime needs a rebuilt engine.
    # The rule (runtime_releases) says so whatever version_compatible asked for.
    if c.flavor != "tensorrt_rtx" or same_release(c.trt_version, t.trt_version):
        return None
    if c.envelope.runtime_versions(c.flavor) == SAME_RELEASE:
        flag = " (version_compatible does not change that for TensorRT-RTX)" if c.envelope.version_compatible else ""
        return f"TensorRT-RTX {c.trt_version} engine; runtime {t.trt_version} is a different release{flag}"
    return None


def rule_rtx_compute_capability(c: Candidate, t: RuntimeTarget) -> str | None:
    # TensorRT-RTX documentation, "CPU-Only AOT and TensorRT-RTX Engines" > "Compute Capability":
    # an engine runs on the compute capabilities it was built for (default 8.0, 8.6, 8.9, 12.x);
    # the Support Matrix lists no 9.0 device, and the runtime refuses it.
    if c.flavor != "tensorrt_rtx":
        return None
    if t.compute_capability in RTX_UNSUPPORTED_CCS:
        return f"TensorRT-RTX does not support compute capability {t.compute_capability}"
    ccs = _cc_set(c)
    if t.compute_capability not in ccs:
        which = "assumed default set, not recorded" if not c.compute_capabilities else "recorded list"
        return f"built for compute capability {', '.join(ccs)} ({which}); target is {t.compute_capability}"
    return None


def rule_trt_version(c: Candidate, t: RuntimeTarget) -> str | None:
    # TensorRT Developer Guide, "Version Compatibility": by default an engine runs only with the
    # TensorRT version that built it. With kVERSION_COMPATIBLE (from 8.6) it also runs on later
    # runtimes. The guide allows later major versions too, while the Support Matrix says "within
    # the same major version"; majors remove APIs (TensorRT 11 dropped weak typing), so we keep
    # to the same major and a runtime at least as new as the builder.
    if c.flavor != "tensorrt":
        return None
    if same_release(c.trt_version, t.trt_version):
        return None
    if c.envelope.runtime_versions(c.flavor) == SAME_RELEASE:
        return f"built with TensorRT {c.trt_version} without version compatibility; target runs {t.trt_version}"
    built, running = parse_version(c.trt_version), parse_version(t.trt_version)
    if built[:2] < VERSION_COMPATIBLE_SINCE or running[:2] < VERSION_COMPATIBLE_SINCE:
        return "version compatibility needs TensorRT 8.6 or newer to build and to run"
    if running[0] != built[0]:
        return f"version-compatible within TensorRT {built[0]}.x only; target runs {t.trt_version}"
    if running < built:
        return f"version-compatible engines run on newer runtimes only: built {c.trt_version} > {t.trt_version}"
    return None


def rule_lean_runtime(c: Candidate, t: RuntimeTarget) -> str | None:
    # TensorRT Developer Guide, "Version Compatibility" > "Manually Loading the Runtime", and the
    # IRuntime::loadRuntime API: a plan built with kEXCLUDE_LEAN_RUNTIME carries no lean runtime,
    # and the runtime loaded for it must be the TensorRT version that built it. A target names
    # one runtime version, so only that exact release can load such a plan.
    if c.flavor == "tensorrt" and c.envelope.version_compatible and c.envelope.exclude_lean_runtime:
        if not same_release(c.trt_version, t.trt_version):
            return f"plan excludes the lean runtime: it needs the TensorRT {c.trt_version} lean runtime"
    return None


def rule_hardware(c: Candidate, t: RuntimeTarget) -> str | None:
    # TensorRT Developer Guide, "Hardware Compatibility": by default (kNONE) an engine runs only on
    # the device type (compute capability) it was built on; kAMPERE_PLUS on any Ampere or newer
    # GPU; kSAME_COMPUTE_CAPABILITY (TensorRT 10.9+) on any GPU of the build GPU's capability.
    if c.flavor != "tensorrt":
        return None
    target_cc = parse_compute_capability(t.compute_capability)
    if c.envelope.hardware == "ampere_plus":
        if target_cc < AMPERE_CC:
            return f"Ampere+ engines need compute capability >= 8.0; target is {t.compute_capability}"
        return None
    if not c.compute_capabilities:
        return "the compute capability this engine was built on is not recorded"
    if t.compute_capability not in c.compute_capabilities:
        built = ", ".join(c.compute_capabilities)
        level = c.envelope.hardware
        return f"built on compute capability {built} (hardware level {level}); target is {t.compute_capability}"
    return None


def rule_platform(c: Candidate, t: RuntimeTarget) -> str | None:
    # TensorRT Support Matrix, "Engine Portability": serialized engines are not portable across
    # platforms (Linux, Windows) nor, being native code for one CPU, across CPU architectures. The
    # TensorRT-RTX product page: its engines are portable across OS (and it ships for x86-64 only).
    # Where either side's platform is unknown (rows from before key schema 2, a target given
    # without --os/--arch) the rule passes and the match carries a note.
    if c.flavor != "tensorrt":
        return None
    for label, built, running in (("OS", c.os, t.os), ("CPU architecture", c.arch, t.arch)):
        if built is not None and running is not None and built != running:
            return f"built on {label} {built}; the target runs {running}"
    return None


def rule_verification(c: Candidate, t: RuntimeTarget) -> str | None:
    # trtforge's own rule: an engine that failed verification on this GPU model is never offered.
    if t.gpu_name is not None and c.verified_on.get(t.gpu_name) == "failed":
        return f"failed verification on {t.gpu_name}"
    return None


RULES: tuple[tuple[str, Rule], ...] = (
    ("flavor", rule_flavor),
    ("rtx_version", rule_rtx_version),
    ("rtx_compute_capability", rule_rtx_compute_capability),
    ("trt_version", rule_trt_version),
    ("lean_runtime", rule_lean_runtime),
    ("hardware", rule_hardware),
    ("platform", rule_platform),
    ("verification", rule_verification),
)


def first_failing_rule(candidate: Candidate, target: RuntimeTarget) -> tuple[str, str] | None:
    """The first rule that rejects ``candidate`` on ``target`` (rule name, reason), or None."""
    for name, rule in RULES:
        reason = rule(candidate, target)
        if reason is not None:
            return name, reason
    return None


def serving_group(c: Candidate) -> TargetGroup:
    """The machines an engine serves, as retention (gc) counts them: read as the rules above read
    the candidate (its envelope widens the GPUs and runtime releases; a plan built for another
    platform runs there), so two engines of one group are never loaded by different targets."""
    return TargetGroup.of(
        c.flavor,
        c.trt_version,
        c.gpu_name,
        c.compute_capabilities,
        c.os,
        c.arch,
        hardware=c.envelope.hardware,
        runtimes=c.envelope.loading_releases(c.flavor),
    )


def _envelope_width(c: Candidate) -> int:
    """How many targets the engine admits, coarsely: narrower (more specialised) ranks first."""
    if c.flavor == "tensorrt_rtx":
        return len(_cc_set(c))
    hardware = {"none": 0, "same_compute_capability": 1, "ampere_plus": 2}[c.envelope.hardware]
    return hardware + (1 if c.envelope.version_compatible else 0)


def _match(c: Candidate, t: RuntimeTarget) -> Match:
    same_gpu = t.gpu_name is not None and c.gpu_name == t.gpu_name
    exact_version = same_release(c.trt_version, t.trt_version)
    notes = []
    if c.flavor == "tensorrt" and not same_gpu and c.gpu_name:
        # TensorRT Developer Guide, "Hardware Compatibility": tactics are tuned on the build GPU;
        # another model of the same capability runs the engine, possibly slower.
        notes.append(f"built on {c.gpu_name}; may run slower on another GPU model")
    if c.flavor == "tensorrt" and c.envelope.version_compatible and not c.envelope.exclude_lean_runtime:
        # TensorRT Developer Guide, "Version Compatibility": the plan embeds the lean runtime (host
        # code), so loading it needs engine_host_code_allowed = True; only for trusted plans.
        notes.append("version-compatible plan: load with engine_host_code_allowed (it embeds host code)")
    if c.origin == "adopted":
        notes.append("adopted: built outside trtforge")
    if c.flavor == "tensorrt_rtx" and not c.compute_capabilities:
        notes.append(UNRECORDED_CCS_NOTE)
    if c.weightless:
        notes.append("weight-stripped plan: refit it with the model's weights before use")
    if c.plugins_needed:
        shown = ", ".join(f"{name} (sha256 {sha256[:12]})" for name, sha256 in c.plugins_needed)
        notes.append(f"needs plugin libraries loaded before the plan deserializes: {shown}")
    if c.flavor == "tensorrt" and None in (c.os, c.arch, t.os, t.arch):
        built = f"{c.os}/{c.arch}" if c.os and c.arch else "not recorded"
        notes.append(f"platform not checked (built on: {built}; target: {t.os or '?'}/{t.arch or '?'})")
    if t.cuda is not None and c.cuda is not None and c.cuda != t.cuda:
        # Not a rule: NVIDIA documents no compatibility of plans across the CUDA variants of one
        # release either way; builds key the variant, lookup says what it knows.
        notes.append(f"built with the {c.cuda} wheel; the target runs {t.cuda}")
    verified_here = t.gpu_name is not None and c.verified_on.get(t.gpu_name) == "passed"
    return Match(c, verified_here, exact_version, same_gpu, _envelope_width(c), tuple(notes))


Reach = Callable[[str], ModelChoice | None]  # --model-sha256 DIGEST -> the model it would choose


def rank(
    candidates: Iterable[Candidate],
    target: RuntimeTarget,
    *,
    verified_only: bool = False,
    allow_weightless: bool = False,
    model: ModelChoice | None = None,
    reach: Reach | None = None,
) -> Ranking:
    """Split candidates into ranked matches and rejections (each with its one rule).

    With ``model``, artifacts of any other model are rejected first (rule ``other_model``): a
    GPU-model verification of an old model must never outrank the model a name now means.
    Weight-stripped plans are rejected (rule ``weightless``) unless ``allow_weightless``.
    ``reach(digest)`` is the model ``--model-sha256 digest`` would choose: when another model has
    the engine the chosen one lacks, the warning suggests that flag only where it reaches it.
    """
    candidates = list(candidates)
    recency = _recency(candidates)
    matches: list[Match] = []
    rejected: list[Rejection] = []
    for candidate in candidates:
        if model is not None and not model.admits(candidate):
            other = f"model sha256 {candidate.model_sha256[:12]} with recipe {candidate.recipe_fingerprint[:12]}"
            rejected.append(Rejection(candidate, "other_model", f"{other} is not the chosen model ({model.why})"))
            continue
        failing = first_failing_rule(candidate, target)
        if failing is not None:
            rejected.append(Rejection(candidate, *failing))
            continue
        if candidate.weightless and not allow_weightless:
            reason = "weight-stripped plan: it runs only after a refit with the model's weights (--allow-weightless)"
            rejected.append(Rejection(candidate, "weightless", reason))
            continue
        match = replace(_match(candidate, target), recency=recency[candidate.artifact_id])
        if verified_only and not match.verified_here:
            where = target.gpu_name or f"compute capability {target.compute_capability} (no GPU model given)"
            rejected.append(Rejection(candidate, "verified_only", f"not verified on {where}"))
            continue
        matches.append(match)
    matches.sort(key=Match.sort_key)
    return Ranking(target, matches, rejected, model, _model_warnings(candidates, target, matches, model, reach))


def _recency(candidates: list[Candidate]) -> dict[str, tuple[float, int]]:
    """Each candidate's place in this store's order (see Match.recency): when it was learned; an
    imported one learned after a local artifact of its build key is placed just behind that one."""
    local: dict[str, float] = {}
    for c in candidates:
        if not c.imported and c.build_key:
            local[c.build_key] = max(local.get(c.build_key, float("-inf")), c.learned.timestamp())
    order = {}
    for c in candidates:
        learned = c.learned.timestamp()
        behind = c.imported and c.build_key in local and learned >= local[c.build_key]
        order[c.artifact_id] = (local[c.build_key], 1) if behind else (learned, 0)
    return order


def _newest(candidates: Iterable[Candidate]) -> Candidate:
    return max(candidates, key=lambda c: (c.learned, c.artifact_id))


def model_count(candidates: Iterable[Candidate]) -> int:
    """How many models the candidates are of; an adopted plan (no recipe) counts with its digest's."""
    listed = list(candidates)
    keys = {c.model_key for c in listed if c.recipe_variant is not None}
    digests = {sha for sha, _variant in keys}
    return len(keys) + len({c.model_sha256 for c in listed if c.recipe_variant is None} - digests)


def _model_warnings(
    candidates: list[Candidate],
    target: RuntimeTarget,
    matches: list[Match],
    model: ModelChoice | None,
    reach: Reach | None,
) -> tuple[str, ...]:
    """One warning when the candidates span several models, naming what was done about it."""
    count = model_count(candidates)
    if count < 2:
        return ()
    if model is None:
        spanned = model_count(m.candidate for m in matches)
        if spanned < 2:
            return ()
        best, newest = matches[0].candidate, _newest(candidates)
        text = (
            f"compatible engines span {spanned} models (--any-model); "
            f"the best is of model sha256 {best.model_sha256[:12]}"
        )
        if best.model_key != newest.model_key:
            text += f", not of the newest (model sha256 {newest.model_sha256[:12]})"
        return (text,)
    text = f"the candidates span {count} models; only the chosen one is considered: {model.describe()}"
    others = [c for c in candidates if not model.admits(c) and first_failing_rule(c, target) is None]
    if not matches and others:
        other = _newest(others)
        text += f"; model sha256 {other.model_sha256[:12]} has an engine for this target ({_ask_for(other, reach)})"
    return (text,)


def _ask_for(other: Candidate, reach: Reach | None) -> str:
    """The flags that rank ``other``'s model: --model-sha256 only where it chooses that model."""
    chosen = reach(other.model_sha256) if reach is not None else None
    if chosen is not None and chosen.admits(other):
        return f"--model-sha256 {other.model_sha256} or --any-model"
    return "--any-model"
