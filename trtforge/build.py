"""The builder stage: recipe -> BuildKey -> catalog hit, or build -> blob -> catalog row.

The hit path reads YAML, hashes the model and queries the catalog; it never imports
tensorrt, polygraphy, onnx or alembic. Bad input is rejected before anything is written to
the store, and a catalog row is added only after its plan blob is complete.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from trtforge.backend.loader import BackendInfo, find_backend
from trtforge.crashpoints import crashpoint, wrap_progress
from trtforge.errors import TrtforgeError
from trtforge.keys import build_key, recipe_fingerprint
from trtforge.model import ModelInfo, check_profiles, model_sha256, read_model
from trtforge.recipe import LoadedRecipe, load_recipe
from trtforge.store import Store, open_existing_store, open_store, resolve_store_root
from trtforge.store.catalog import Artifact, Blob
from trtforge.store.locks import LockDir
from trtforge.store.plans import CORRUPT_STATUS
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
    ) -> None:
        self.store = StoreHandle(store, catalog)
        self.force = force
        self.progress = progress
        self.notify = notify or _to_stderr

    def close(self) -> None:
        self.store.close()

    def build_all(self, recipes: Iterable[str | Path], *, fail_fast: bool = False) -> list[BuildResult]:
        results = []
        for path in recipes:
            result = self.build_one(path)
            results.append(result)
            if fail_fast and not result:
                break
        return results

    def build_one(self, recipe_path: str | Path) -> BuildResult:
        """Build (or find) one recipe; user-caused failures become a failed result."""
        started = time.perf_counter()
        result = BuildResult(recipe=str(recipe_path), name=None, status="failed")
        try:
            loaded = load_recipe(recipe_path)
            result.name = loaded.recipe.name
            self._build(loaded, result)
        except TrtforgeError as exc:
            result.status = "failed"
            result.error = exc.message
            result.hint = exc.hint
            result.exit_code = exc.exit_code
        result.seconds = round(time.perf_counter() - started, 4)
        return result

    def _build(self, loaded: LoadedRecipe, result: BuildResult) -> None:
        recipe = loaded.recipe
        backend = find_backend(recipe.backend)
        target = build_target_for(backend)
        model_digest = model_sha256(loaded)
        key = build_key(recipe, model_digest, target)
        result.build_key = key

        if not self.force and (store := self.store.existing()) is not None and _use_hit(store, key, result):
            return

        model = read_model(loaded.model_path, model_digest)
        check_profiles(loaded, model)
        # Single flight: whoever holds the key's lock builds; the others wait, then find its row.
        # The file lock covers processes sharing this store directory; a PostgreSQL catalog adds
        # an advisory lock for runners on other machines.
        what = f"{recipe.name} ({key[:12]})"
        with self.store.locks().hold(key, what=what, notify=self.notify), self._catalog_lock(key, what):
            if not self.force and (store := self.store.existing()) is not None and _use_hit(store, key, result):
                return
            crashpoint("build-locked")
            self._build_locked(loaded, backend, target, key, model_digest, model, result)

    @contextmanager
    def _catalog_lock(self, key: str, what: str) -> Iterator[None]:
        store = self.store.existing()
        if store is None:  # a new local SQLite catalog: nobody else can be using it yet
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
        from trtforge.backend.build import build_plan  # lazy: imports tensorrt

        output = build_plan(backend, recipe, loaded.model_path, wrap_progress(self.progress))
        store = self.store.ensure()
        blob = store.blobs.put_bytes(output.plan_view)
        crashpoint("blob-stored")
        artifact = Artifact(
            id=uuid.uuid4().hex,
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
                "model": {
                    "path": str(loaded.model_path),
                    "inputs": [t.as_json() for t in model.inputs],
                    "outputs": [t.as_json() for t in model.outputs],
                },
            },
        )
        store.catalog.add_artifact(artifact, Blob(sha256=blob.sha256, size=blob.size, kind="plan"))
        result.status = "built"
        result.artifact_id = artifact.id
        result.plan_sha256 = blob.sha256
        result.plan_path = store.blobs.location(blob.sha256)


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
