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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from trtforge.backend.capabilities import check_recipe, compatibility_envelope
from trtforge.backend.denylist_enforce import check_enforceable
from trtforge.backend.loader import BackendInfo, find_backend
from trtforge.batch import UnmatchedPattern
from trtforge.crashpoints import crashpoint, wrap_progress
from trtforge.denylist import with_deny_file
from trtforge.digests import DigestCache
from trtforge.errors import StoreError, TrtforgeError
from trtforge.keys import build_key, recipe_fingerprint
from trtforge.model import ModelInfo, check_profiles, model_sha256, read_model
from trtforge.recipe import LoadedRecipe, load_recipe
from trtforge.store import (
    CORRUPT_STATUS,
    DIGESTS_FILE,
    Store,
    open_existing_store,
    open_store,
    preload_catalog_modules,
    resolve_store_root,
    sqlite_catalog_path,
)
from trtforge.store.blobs import BlobStore
from trtforge.store.locks import LockDir
from trtforge.store.sqlite_hits import UNANSWERED, Probe, probe_cached_plan
from trtforge.target import BuildTarget, build_target_for

BuildStatus = Literal["built", "cached", "failed"]


@dataclass
class BuildResult:
    """One recipe's outcome; ``as_json`` is the `build --json` contract."""

    recipe: str
    name: str | None
    status: BuildStatus
    artifact_id: str | None = None
    build_key: str | None = None
    plan_path: str | None = None
    plan_sha256: str | None = None
    seconds: float = 0.0
    error: str | None = None
    more_errors: list[str] = field(default_factory=list)  # further problems of the same recipe
    error_detail: list[dict[str, Any]] = field(default_factory=list)  # all TensorRT said (parser errors, log)
    hint: str | None = None
    exit_code: int = 0

    def __bool__(self) -> bool:
        return self.status != "failed"

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("hint")
        data.pop("exit_code")
        return data


class StoreHandle:
    """Opens the store only when needed, so bad input never creates or touches it."""

    def __init__(self, store: str | Path | None, catalog: str | None) -> None:
        self._location = store
        self._catalog = catalog
        self._store: Store | None = None

    def digests(self) -> DigestCache:
        """Model digests remembered in this store (nothing is written until the store exists)."""
        try:
            return DigestCache(resolve_store_root(self._location) / DIGESTS_FILE)
        except StoreError:
            return DigestCache(None)  # an unusable store is reported where the store is opened

    def blobs(self) -> BlobStore:
        return BlobStore(resolve_store_root(self._location))

    def quick_probe(self, build_key: str) -> Probe:
        """Hit or certain miss, found without SQLAlchemy (local SQLite catalog and local blobs only).

        UNANSWERED sends the caller to the full catalog path: other catalogs, an unknown schema,
        or a row whose blob is not in the local blob directory (an S3 store, a missing blob).
        """
        db_path = sqlite_catalog_path(self._location, catalog=self._catalog)
        if db_path is None:
            return UNANSWERED
        probe = probe_cached_plan(db_path, build_key)
        if probe.plan is not None and not self.blobs().exists(probe.plan.plan_sha256):
            return UNANSWERED
        return probe

    def is_local_sqlite(self) -> bool:
        return sqlite_catalog_path(self._location, catalog=self._catalog) is not None

    def existing(self) -> Store | None:
        if self._store is None:
            self._store = open_existing_store(self._location, catalog=self._catalog)
        return self._store

    def ensure(self) -> Store:
        if self._store is None:
            self._store = open_store(self._location, catalog=self._catalog)
        return self._store

    def locks(self) -> LockDir:
        """The store's build locks, usable before (and without) opening the catalog."""
        return LockDir(resolve_store_root(self._location) / "locks")

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


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

    def close(self) -> None:
        if self._digests is not None:
            self._digests.save()
        self.store.close()

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
                result = BuildResult(item.pattern, None, "failed", error="no recipe file matches", exit_code=2)
            else:
                if on_start is not None:
                    on_start(Path(item).name)
                result = self.build_one(item)
            results.append(result)
            if fail_fast and not result:
                break
        return results

    def build_one(self, recipe_path: str | Path) -> BuildResult:
        """Build (or find) one recipe; user-caused failures become a failed result."""
        started = time.perf_counter()
        result = BuildResult(recipe=str(recipe_path), name=None, status="failed")
        try:
            loaded = load_recipe(recipe_path, name=self.name)
            result.name = loaded.recipe.name
            loaded = with_deny_file(loaded)  # sidecar deny entries count like inline ones
            self._build(loaded, result)
        except TrtforgeError as exc:
            result.status = "failed"
            result.error = exc.message
            result.more_errors = list(exc.more)
            result.error_detail = list(getattr(exc, "detail", []))
            result.hint = exc.hint
            result.exit_code = exc.exit_code
        result.seconds = round(time.perf_counter() - started, 4)
        return result

    def _build(self, loaded: LoadedRecipe, result: BuildResult) -> None:
        recipe = loaded.recipe
        backend = find_backend(recipe.backend)
        for note in check_recipe(recipe, backend):
            if note not in self.notes:
                self.notes.append(note)
        check_enforceable(backend, recipe.tactics.deny)  # e.g. TensorRT-RTX: refused before any build
        target = build_target_for(backend, recipe.compatibility.compute_capabilities)
        if self._digests is None:
            self._digests = self.store.digests()
        model_digest = model_sha256(loaded, self._digests)
        key = build_key(recipe, model_digest, target)
        result.build_key = key

        if not self.force and self._find_hit(key, result):
            return

        model = read_model(loaded.model_path, model_digest)
        check_profiles(loaded, model)
        preload_catalog_modules()  # a build will happen: import the catalog side behind it
        # Single flight: whoever holds the key's lock builds; the others wait, then find its row.
        # The file lock covers processes sharing this store directory; a PostgreSQL catalog adds
        # an advisory lock for runners on other machines.
        what = f"{recipe.name} ({key[:12]})"
        with self.store.locks().hold(key, what=what, notify=self.notify), self._catalog_lock(key, what):
            if not self.force and self._find_hit(key, result):  # built while we waited
                return
            crashpoint("build-locked")
            self._build_locked(loaded, backend, target, key, model_digest, model, result)

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

    def _build_locked(
        self,
        loaded: LoadedRecipe,
        backend: BackendInfo,
        target: BuildTarget,
        key: str,
        model_digest: str,
        model: ModelInfo,
        result: BuildResult,
    ) -> None:
        recipe = loaded.recipe
        from trtforge import timing_cache
        from trtforge.backend.build import build_plan  # lazy: imports tensorrt

        cache_start = timing_cache.start(self.store.existing, recipe, target)
        output = build_plan(
            backend,
            recipe,
            loaded.model_path,
            wrap_progress(self.progress),
            use_timing_cache=cache_start.active,
            timing_cache=cache_start.data,
        )
        from trtforge.store.catalog import Artifact, Blob  # after the build: see preload_catalog_modules

        store = self.store.ensure()
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
            model_sha256=model_digest,
            flavor=target.flavor,
            trt_version=target.trt_version,
            gpu_name=target.gpu_name,
            compute_capabilities=list(target.compute_capabilities),
            plan_sha256=blob.sha256,
            plan_size=blob.size,
            io_tensors=output.io_tensors,
            profiles=[{n: s.model_dump() for n, s in p.items()} for p in recipe.profiles],
            recipe=recipe.model_dump(mode="json"),
            recipe_path=str(loaded.path),
            build_seconds=round(output.seconds, 4),
            build_log=output.log,
            details={
                "backend": backend.label,
                "target": target.key_fields(),
                "settings": output.settings,
                "refit": recipe.refit,
                "weightless": recipe.refit == "strip_weights",  # must be refitted before use
                "timing_cache": cache_record,
                "compatibility": compatibility_envelope(recipe, target),
                **({"denylist": output.denylist} if output.denylist is not None else {}),
                **({"layer_info": output.layer_info} if output.layer_info is not None else {}),
                "model": model.as_json(),
            },
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
    """Fill ``result`` from a usable catalog hit (row present, blob present, not corrupt)."""
    hit = store.catalog.find_by_build_key(key)
    if hit is None or hit.status == CORRUPT_STATUS or not store.blobs.exists(hit.plan_sha256):
        return False
    result.status = "cached"
    result.artifact_id = hit.id
    result.plan_sha256 = hit.plan_sha256
    result.plan_path = store.blobs.location(hit.plan_sha256)
    return True


def _to_stderr(message: str) -> None:
    print(f"trtforge: {message}", file=sys.stderr, flush=True)
