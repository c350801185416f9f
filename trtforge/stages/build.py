"""The builder stage: recipe -> BuildKey -> catalog hit, or build -> blob -> catalog row.

The hit path reads YAML, hashes the model (or takes its digest from the stat-keyed digest
cache) and queries the catalog; it never imports tensorrt, polygraphy, onnx or alembic, and
with a local SQLite catalog not even SQLAlchemy (see ``store/sqlite_hits.py``). Bad input is
rejected before anything is written to the store, and a catalog row is added only after its
plan blob is complete.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from trtforge.core.crashpoints import crashpoint, wrap_progress
from trtforge.core.errors import TrtforgeError
from trtforge.resolution.batch import UnmatchedPattern, expand_recipes
from trtforge.resolution.resolved_cache import ResolvedCache
from trtforge.rules.digests import DigestCache
from trtforge.rules.keys import recipe_fingerprint
from trtforge.store import preload_catalog_modules
from trtforge.store.handle import StoreHandle

if TYPE_CHECKING:  # the recipe models (pydantic) are imported only when a recipe is resolved in full
    from trtforge.resolution.resolve import Resolution
    from trtforge.rules.flavors import BackendInfo
    from trtforge.rules.onnx_model import ModelInfo
    from trtforge.rules.recipe import LoadedRecipe
    from trtforge.rules.target import RuntimeTarget
    from trtforge.store import Store

NO_MATCH = "no recipe file matches"
BuildStatus = Literal["built", "cached", "build", "failed"]  # "build": a dry run (plan) would build


@dataclass
class BuildResult:
    """One recipe's outcome; ``as_json`` is the `build --json` contract."""

    recipe: str
    name: str | None
    status: BuildStatus
    artifact_id: str | None = None
    build_key: str | None = None
    target: dict[str, Any] | None = None  # the build target's key fields, once resolved
    plan_path: str | None = None
    plan_sha256: str | None = None
    seconds: float = 0.0
    error: str | None = None
    more_errors: list[str] = field(default_factory=list)  # further problems of the same recipe
    error_detail: list[Any] | dict[str, Any] = field(default_factory=list)  # all TensorRT said (parser errors, log)
    hint: str | None = None
    exit_code: int = 0

    def __bool__(self) -> bool:
        return self.status != "failed"

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("hint")
        data.pop("exit_code")
        return data


class BuildStage:
    """Builds recipes into one store; create it once per invocation."""

    def __init__(
        self,
        store: str | Path | None = None,
        *,
        catalog: str | None = None,
        force: bool = False,
        progress: Any = None,
        notify: Callable[[str], None] | None = None,
        name: str | None = None,
    ) -> None:
        self.store = StoreHandle(store, catalog)
        self.name = name  # artifact name of an ONNX file given instead of a recipe (`--name`)
        self.force = force
        self.progress = progress
        self.notify = notify or _to_stderr
        self.notes: list[str] = []  # capability notes, each said once per stage
        self._digests: DigestCache | None = None
        self._resolved: ResolvedCache | None = None

    def close(self) -> None:
        if self._digests is not None:
            self._digests.save()
        if self._resolved is not None:
            self._resolved.save()
        self.store.close()

    def _remembered(self) -> ResolvedCache:
        if self._resolved is None:
            self._resolved = ResolvedCache(self.store.resolved_dir())
        return self._resolved

    def build_all(
        self,
        items: Iterable[str | Path | UnmatchedPattern],
        *,
        fail_fast: bool = False,
        on_start: Callable[[str], None] | None = None,
    ) -> list[BuildResult]:
        """Build recipes in order (the rest after a failure unless ``fail_fast``).

        A glob that matched no file is a failed result (bad input), not silently dropped;
        ``on_start`` hears each recipe's file name before it builds (the progress bar).
        """
        results = []
        for item in items:
            if isinstance(item, UnmatchedPattern):
                result = BuildResult(item.pattern, None, "failed", error=NO_MATCH, exit_code=2)
            else:
                if on_start is not None:
                    on_start(Path(item).name)
                result = self.build_one(item)
            results.append(result)
            if fail_fast and not result:
                break
        return results

    def build_one(self, recipe_path: str | Path) -> BuildResult:
        """Build (or find) one recipe on this machine; user-caused failures become a failed result."""
        return self.run(recipe_path)[0]

    def run(
        self, recipe_path: str | Path, targets: Sequence[RuntimeTarget | None] = (None,), *, dry_run: bool = False
    ) -> list[BuildResult]:
        """One result per target (None: this machine). ``dry_run`` stops before building: `plan`.

        A target whose flavor the recipe's ``backend`` excludes is skipped; when that leaves none,
        the recipe fails with that reason.
        """
        started = time.perf_counter()
        if not self.force and self.name is None and list(targets) == [None]:
            quick = self._quick_hit(recipe_path, started)
            if quick is not None:
                return [quick]
        from trtforge.resolution.resolve import load_effective

        try:
            loaded = load_effective(recipe_path, name=self.name)
        except TrtforgeError as exc:
            return [_failed(BuildResult(str(recipe_path), None, "failed"), exc, started)]
        wanted = [t for t in targets if t is None or loaded.recipe.backend in ("auto", t.flavor)]
        if not wanted:
            message = f"recipe backend {loaded.recipe.backend} matches none of the given targets"
            failed = BuildResult(str(recipe_path), loaded.recipe.name, "failed", error=message, exit_code=2)
            return [failed]
        results = []
        for target in wanted:
            result = BuildResult(recipe=str(recipe_path), name=loaded.recipe.name, status="failed")
            try:
                self._build(loaded, target, result, dry_run=dry_run)
            except TrtforgeError as exc:
                _failed(result, exc, started)
            result.seconds = round(time.perf_counter() - started, 4)
            results.append(result)
            started = time.perf_counter()
        return results

    def _quick_hit(self, recipe_path: str | Path, started: float) -> BuildResult | None:
        """A hit found through a remembered resolution (trtforge.resolution.resolved_cache): no recipe models, no
        capability table. None sends the recipe down the full path (a miss, or anything changed)."""
        if self._digests is None:
            self._digests = self.store.digests()
        quick = self._remembered().lookup(recipe_path, self._digests)
        if quick is None:
            return None
        result = BuildResult(
            recipe=str(recipe_path), name=quick.name, status="failed", build_key=quick.build_key, target=quick.target
        )
        try:
            if not self._find_hit(quick.build_key, result):
                return None
        except TrtforgeError:
            return None  # e.g. a catalog newer than this trtforge: the full path reports it per recipe
        for note in quick.notes:
            if note not in self.notes:
                self.notes.append(note)
        result.seconds = round(time.perf_counter() - started, 4)
        return result

    def _build(self, loaded: LoadedRecipe, target: RuntimeTarget | None, result: BuildResult, *, dry_run: bool) -> None:
        from trtforge.resolution.resolve import resolve

        if self._digests is None:
            self._digests = self.store.digests()
        resolution = resolve(loaded, target=target, digests=self._digests)
        result.build_key = resolution.build_key  # reported even when the recipe is refused below
        result.target = resolution.target.key_fields()
        notes = resolution.check_buildable(target)
        for note in notes:
            if note not in self.notes:
                self.notes.append(note)
        if target is None:
            self._remembered().remember(resolution, notes)
        key = resolution.build_key

        if not self.force and self._find_hit(key, result):
            return
        if target is None:  # built here: what this machine cannot complete is refused now, not attempted
            resolution.check_build_here()
        if dry_run:
            result.status = "build"
            return

        from trtforge.rules.onnx_model import check_profiles, read_model

        model = read_model(resolution.loaded.model_path, resolution.model_sha256)
        check_profiles(resolution.loaded, model)
        preload_catalog_modules()  # a build will happen: import the catalog side behind it
        # Single flight: whoever holds the key's lock builds; the others wait, then find its row.
        # The file lock covers processes sharing this store directory; a PostgreSQL catalog adds
        # an advisory lock for runners on other machines.
        what = f"{resolution.recipe.name} ({key[:12]})"
        with self.store.locks().hold(key, what=what, notify=self.notify), self._catalog_lock(key, what):
            if not self.force and self._find_hit(key, result):  # built while we waited
                return
            crashpoint("build-locked")
            self._build_locked(resolution, model, result)

    def _find_hit(self, key: str, result: BuildResult) -> bool:
        """Fill ``result`` from a usable hit; a certain answer from SQLite skips the ORM (~0.15 s)."""
        probe = self.store.quick_probe(key)
        if probe.plan is not None:
            result.status = "cached"
            result.artifact_id = probe.plan.artifact_id
            result.plan_sha256 = probe.plan.plan_sha256
            result.plan_path = str(self.store.blobs().path_for(probe.plan.plan_sha256))
            return True
        if probe.answered:
            return False
        store = self.store.existing()
        return store is not None and _use_hit(store, key, result)

    @contextmanager
    def _catalog_lock(self, key: str, what: str) -> Iterator[None]:
        # A local SQLite catalog has only local users, whom the store's file lock already covers.
        store = None if self.store.is_local_sqlite() else self.store.existing()
        if store is None:
            yield
            return
        with store.catalog.single_flight(key, what=what, notify=self.notify):
            yield

    def _build_locked(self, resolution: Resolution, model: ModelInfo, result: BuildResult) -> None:
        recipe, backend, target, key = resolution.recipe, resolution.backend, resolution.target, resolution.build_key
        from trtforge.backend.build import build_plan  # lazy: imports tensorrt
        from trtforge.resolution import timing_cache_policy as timing_cache

        cache_start = timing_cache.start(self.store.existing, recipe, target)
        output = build_plan(
            backend,
            recipe,
            resolution.loaded.model_path,
            wrap_progress(self.progress),
            use_timing_cache=cache_start.active,
            timing_cache=cache_start.data,
        )
        from trtforge.rules.compatibility import Envelope
        from trtforge.rules.record import ArtifactDetails
        from trtforge.store.catalog import Artifact, Blob  # after the build: see preload_catalog_modules

        store = self.store.ensure()
        # From writing (or reusing) the plan blob until its row commits, gc must not delete it.
        with store.recording_blobs(self.notify):
            blob = store.blobs.put_bytes(output.plan_view)
            crashpoint("blob-stored")
            artifact_id = uuid.uuid4().hex
            cache_record = timing_cache.finish(
                store, cache_start, output.timing_cache, output.timing_cache_used, artifact_id, _combine_with(backend)
            )
            artifact = Artifact(
                id=artifact_id,
                name=recipe.name,
                build_key=key,
                recipe_fingerprint=recipe_fingerprint(recipe),
                model_sha256=resolution.model_sha256,
                flavor=target.flavor,
                trt_version=target.trt_version,
                gpu_name=target.gpu_name,
                compute_capabilities=list(target.compute_capabilities),
                plan_sha256=blob.sha256,
                plan_size=blob.size,
                io_tensors=output.io_tensors,
                profiles=[{n: s.model_dump() for n, s in p.items()} for p in recipe.profiles],
                recipe=recipe.model_dump(mode="json"),
                recipe_path=str(resolution.loaded.path),
                build_seconds=round(output.seconds, 4),
                build_log=output.log,
                details=ArtifactDetails(
                    backend=backend.label,
                    target=target.key_fields(),
                    settings=output.settings,
                    refit=recipe.refit,
                    weightless=recipe.refit == "strip_weights",  # must be refitted before use
                    timing_cache=cache_record,
                    compatibility=Envelope.of(recipe.compatibility).record(target),
                    denylist=output.denylist,
                    layer_info=output.layer_info,
                    model=model.record(),
                ),
            )
            store.catalog.add_artifact(artifact, Blob(sha256=blob.sha256, size=blob.size, kind="plan"))
        result.status = "built"
        result.artifact_id = artifact.id
        result.plan_sha256 = blob.sha256
        result.plan_path = store.blobs.location(blob.sha256)


def _combine_with(backend: BackendInfo) -> Callable[[bytes | None, bytes], bytes]:
    """ITimingCache.combine of the backend (imported only when a merge happens)."""

    def merge(base: bytes | None, new: bytes) -> bytes:
        from trtforge.backend.loader import import_backend
        from trtforge.backend.timing_cache import combine

        return combine(import_backend(backend), base, new)

    return merge


def _use_hit(store: Store, key: str, result: BuildResult) -> bool:
    """Fill ``result`` from a usable catalog hit: the newest artifact of the key that is not
    quarantined and whose blob is present."""
    hit = store.catalog.find_by_build_key(key, intact=store.blobs.exists)
    if hit is None:
        return False
    result.status = "cached"
    result.artifact_id = hit.id
    result.plan_sha256 = hit.plan_sha256
    result.plan_path = store.blobs.location(hit.plan_sha256)
    return True


@dataclass
class PlanEntry:
    """One recipe x target of `plan --json`: what `build` would do there."""

    recipe: str
    name: str | None
    target: dict[str, Any] | None
    status: Literal["cached", "build", "failed"]
    build_key: str | None = None
    artifact_id: str | None = None
    error: str | None = None
    more_errors: list[str] = field(default_factory=list)
    hint: str | None = None  # the way out of a refusal
    exit_code: int = 0

    @classmethod
    def of(cls, result: BuildResult) -> PlanEntry:
        status = result.status if result.status != "built" else "build"
        return cls(
            result.recipe,
            result.name,
            result.target,
            status,
            result.build_key,
            result.artifact_id,
            result.error,
            result.more_errors,
            result.hint,
            result.exit_code,
        )

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("exit_code")
        return data


def plan_builds(
    arguments: list[str],
    targets: Sequence[RuntimeTarget] | None = None,
    *,
    store: str | Path | None = None,
    catalog: str | None = None,
) -> list[PlanEntry]:
    """For every recipe x target: the build key and whether the store has it (``build`` stopped early).

    Nothing is built, TensorRT is not imported and no store is created: a CI job can turn the
    JSON into a build matrix (only the ``build`` entries need a runner).
    """
    stage = BuildStage(store, catalog=catalog)
    entries: list[PlanEntry] = []
    try:
        for item in expand_recipes(arguments):
            if isinstance(item, UnmatchedPattern):
                entries.append(PlanEntry(item.pattern, None, None, "failed", error=NO_MATCH, exit_code=2))
                continue
            chosen: Sequence[RuntimeTarget | None] = targets or (None,)
            entries.extend(PlanEntry.of(r) for r in stage.run(item, chosen, dry_run=True))
    finally:
        stage.close()
    return entries


def _failed(result: BuildResult, exc: TrtforgeError, started: float) -> BuildResult:
    result.status = "failed"
    result.error = exc.message
    result.more_errors = list(exc.more)
    result.error_detail = exc.detail or []
    result.hint = exc.hint
    result.exit_code = exc.exit_code
    result.seconds = round(time.perf_counter() - started, 4)
    return result


def _to_stderr(message: str) -> None:
    print(f"trtforge: {message}", file=sys.stderr, flush=True)
