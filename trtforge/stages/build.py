"""The builder stage: recipe -> BuildKey -> catalog hit, or build -> blob -> catalog row.

The hit path reads YAML, hashes the model (or takes its digest from the stat-keyed digest
cache) and queries the catalog; it never imports tensorrt, polygraphy, onnx or alembic, and
with a local SQLite catalog not even SQLAlchemy (see ``store/sqlite_hits.py``). Bad input is
rejected before anything is written to the store, and a catalog row is added only after its
plan blob is complete.

A miss is built in a worker process (``backend/pool.py``), never here: TensorRT's crashes, hangs
past ``timeout`` and OOM kills cost that recipe's result, not the batch. This process keeps the
lock, the blob and the catalog row, so a dead worker leaves nothing behind. With ``jobs`` > 1,
recipes are worked on by that many threads at once (each hit stays here, each build has a worker),
or, as `trtforge build` does it, by that many build processes, each running this stage for one
recipe at a time (:mod:`trtforge.stages.build_processes`).

A catalog or a blob store that stops answering costs the recipes that needed it then (their
results are ``failed`` with ``error_kind`` ``catalog_unavailable`` or ``blobs_unavailable``), not
the batch. SIGINT or SIGTERM (:class:`trtforge.core.interrupts.Interrupted`) stops the batch:
running builds' workers are killed, nothing more starts, and :class:`BatchInterrupted` carries
every recipe's result (those not recorded: ``interrupted``); what was recorded stays.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from trtforge.core.crashpoints import crashpoint
from trtforge.core.errors import BadInputError, BuildInterruptedError, TrtforgeError, kind_of
from trtforge.core.interrupts import Interrupted, deferred
from trtforge.resolution.batch import UnmatchedPattern, expand_recipes
from trtforge.resolution.resolved_cache import ResolvedCache
from trtforge.rules.digests import DigestCache
from trtforge.rules.keys import recipe_fingerprint
from trtforge.store import preload_catalog_modules
from trtforge.store.handle import StoreHandle

if TYPE_CHECKING:  # the recipe models (pydantic) are imported only when a recipe is resolved in full
    from trtforge.backend.build import BuildOutput
    from trtforge.backend.pool import WorkerPool
    from trtforge.resolution.resolve import Resolution
    from trtforge.resolution.targets import TargetOptions
    from trtforge.rules.flavors import BackendInfo
    from trtforge.rules.onnx_model import ModelInfo
    from trtforge.rules.recipe import LoadedRecipe, Recipe
    from trtforge.rules.target import RuntimeTarget
    from trtforge.store import Store
    from trtforge.store.catalog import Artifact
    from trtforge.store.locks import HeldLock

NO_MATCH = "no recipe file matches"
# "build": a dry run (plan) would build; "unknown": it would, for a key it cannot compute (CUDA
# variant unknown); "skipped": a target this recipe or this machine does not build for (the reason).
BuildStatus = Literal["built", "cached", "build", "unknown", "skipped", "failed"]
UNAVAILABLE_KINDS = ("catalog_unavailable", "blobs_unavailable")
STOP_WAIT_S = 1.5  # after SIGINT/SIGTERM, the most a catalog commit under way is waited for


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
    unchecked: list[str] = field(default_factory=list)  # a dry run: options only a build can check
    error_kind: str | None = None  # a failure's kind: bad_input | build_failed | crashed | timed_out
    cost: dict[str, Any] | None = None  # a build's wall, CPU time and peak memory (BuildCost.as_json)
    target_request: dict[str, Any] | None = None  # the target asked for (--target, --fleet); None: this machine
    reason: str | None = None  # why "skipped" or "unknown"
    notes: list[str] = field(default_factory=list)  # what the capability table says of this recipe here
    node: dict[str, Any] | None = None  # where another executor built it (Ray: node_id, node_ip, pid); None: here

    def __bool__(self) -> bool:
        return self.status != "failed"

    def as_json(self) -> dict[str, Any]:
        """Everything the text output says of this recipe: the error, its hint and kind, the exit code.
        A shallow view (the result is final once it is reported): asdict's deep copy of a failed
        build's log cost the parent ~0.27 ms per recipe."""
        data = {name: getattr(self, name) for name in _RESULT_FIELDS}
        data.pop("unchecked")
        return data


_RESULT_FIELDS = tuple(f.name for f in fields(BuildResult))


class BatchInterrupted(Interrupted):
    """SIGINT or SIGTERM stopped ``build_all``: ``results`` has one result per recipe, in order (those
    recorded before the signal as they were, the others ``failed`` with ``error_kind: interrupted``)."""

    def __init__(self, signum: int, results: list[BuildResult]) -> None:
        super().__init__(signum)
        self.results = results


class Executor(Protocol):
    """How a stage's recipes are worked on, when not by this process's threads: in build processes
    of their own (`build --jobs N`: :class:`trtforge.stages.build_processes.LocalProcesses`), or on
    a Ray cluster (``build --executor ray``: :class:`trtforge.stages.ray_builds.RayExecutor`). It
    answers hits through ``stage`` first."""

    def build_all(
        self,
        stage: BuildStage,
        items: list[str | Path | UnmatchedPattern],
        *,
        fail_fast: bool,
        on_start: Callable[[str], None] | None,
        on_done: Callable[[BuildResult], None] | None,
    ) -> list[BuildResult]: ...


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
        jobs: int | None = None,
        timeout: float | None = None,
        targets: Sequence[RuntimeTarget] = (),
        executor: Executor | None = None,
    ) -> None:
        """``jobs``: builds at once (None: ``core.resources.default_jobs()``); ``timeout``: seconds a
        build may run before its worker is stopped (None: no limit). Neither is part of a build key.
        ``executor``: where misses are built (None: here, in worker processes)."""
        if jobs is not None and jobs < 1:
            raise BadInputError(f"jobs must be at least 1, not {jobs}")
        if timeout is not None and not timeout > 0:
            raise BadInputError(f"timeout must be a positive number of seconds, not {timeout}")
        self.store = StoreHandle(store, catalog)
        self.targets = tuple(targets)  # `build --target/--fleet`: each recipe for each of them
        self.name = name  # artifact name of an ONNX file given instead of a recipe (`--name`)
        self.force = force
        self.progress = progress
        self.notify = notify or _to_stderr
        self.jobs = jobs
        self.timeout = timeout
        self.executor = executor
        self.notes: list[str] = []  # capability notes, each said once per stage
        self._digests: DigestCache | None = None
        self._resolved: ResolvedCache | None = None
        self._pool: WorkerPool | None = None
        self._lock = threading.Lock()  # the lazily made parts above, when recipes run on threads
        self._callbacks = threading.Lock()  # on_start / on_done are never called twice at once
        self._on_start: Callable[[str], None] | None = None
        self._builds: int | None = None  # builds at once, as build_all decided for its recipes
        self._stopping = threading.Event()  # set by SIGINT/SIGTERM: nothing more starts or waits
        self._stop_reason = "stopped"
        # Each recipe's results so far, the last one under way (what a signal interrupts), by recipe.
        self._partial: dict[str, list[BuildResult]] = {}
        # Commits of built artifacts pass this gate; once a stop closes it, nothing more is recorded.
        self._gate = threading.Lock()
        self._gate_closed = False
        self._heard_all = False  # a stop gave on_done every result left: builds ending later are not heard

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        self.save_caches()
        self.store.close()

    def save_caches(self) -> None:
        """Save what this stage learned for the next command (model digests, resolved recipes);
        the store stays open (a Ray worker's stage serves its next tasks)."""
        if self._digests is not None:
            self._digests.save()
        if self._resolved is not None:
            self._resolved.save()

    def _remembered(self) -> ResolvedCache:
        with self._lock:
            if self._resolved is None:
                self._resolved = ResolvedCache(self.store.resolved_dir())
            return self._resolved

    def _digest_cache(self) -> DigestCache:
        with self._lock:
            if self._digests is None:
                self._digests = self.store.digests()
            return self._digests

    def note(self, notes: Iterable[str]) -> None:
        with self._lock:
            self.notes.extend(note for note in notes if note not in self.notes)

    def workers(self) -> WorkerPool:
        """The pool of build workers (started process by process, as builds need them)."""
        with self._lock:
            if self._pool is None:
                from trtforge.backend.pool import WorkerPool

                self._pool = WorkerPool(self._builds or self.jobs or 1)
                if self._stopping.is_set():  # the batch was stopped before its first build
                    self._pool.stop(self._stop_reason)
            return self._pool

    def build_all(
        self,
        items: Iterable[str | Path | UnmatchedPattern],
        *,
        fail_fast: bool = False,
        on_start: Callable[[str], None] | None = None,
        on_done: Callable[[BuildResult], None] | None = None,
    ) -> list[BuildResult]:
        """Build recipes (the rest after a failure unless ``fail_fast``, which builds one at a time);
        results in recipe order.

        A glob that matched no file is a failed result (bad input), not silently dropped;
        ``on_start`` hears a recipe's file name when its build starts in a worker (the progress
        bar; hits never start one), ``on_done`` each result as it is ready, in the order they
        finish, once per result (a stop makes the rest ready at once). Neither is called twice at
        once.

        Without an executor, up to ``jobs`` builds run at once, on ``jobs + 1`` threads of this process:
        one more than the builds, so that while the workers build, it resolves the next recipe or
        stores a plan. `trtforge build` and :func:`trtforge.build` give the stage
        :class:`~trtforge.stages.build_processes.LocalProcesses`, which does the same with one process
        per build when more than one runs at once: one interpreter's lock paces 16 builds.
        """
        items = list(items)
        if self.executor is not None:
            return self.executor.build_all(self, items, fail_fast=fail_fast, on_start=on_start, on_done=on_done)
        return self.build_here(items, fail_fast=fail_fast, on_start=on_start, on_done=on_done)

    def builds_at_once(self, items: Sequence[object], fail_fast: bool) -> int:
        """How many of ``items`` are built at once: ``jobs`` (else chosen from cores and memory), at most
        one per item; --fail-fast builds one recipe at a time, in order (nothing after the first failure starts)."""
        if fail_fast:
            return 1
        return max(1, min(self.jobs or (_default_jobs() if len(items) > 1 else 1), len(items)))

    def build_here(
        self,
        items: list[str | Path | UnmatchedPattern],
        *,
        fail_fast: bool = False,
        on_start: Callable[[str], None] | None = None,
        on_done: Callable[[BuildResult], None] | None = None,
    ) -> list[BuildResult]:
        """:meth:`build_all` on this process's threads (see there)."""
        self._on_start = on_start
        builds = self.builds_at_once(items, fail_fast)
        self._builds = builds
        threads = min(builds + 1, len(items))
        if threads <= 1 or (fail_fast and builds == 1):
            return self._build_in_turn(items, fail_fast, on_done)
        return self._build_threaded(items, threads, fail_fast, on_done)

    def _build_in_turn(
        self,
        items: list[str | Path | UnmatchedPattern],
        fail_fast: bool,
        on_done: Callable[[BuildResult], None] | None,
    ) -> list[BuildResult]:
        """One recipe after the other on this thread (a signal lands here: the build under way unwinds,
        its worker killed on the way out)."""
        results: list[BuildResult] = []
        done = 0
        try:
            for item in items:
                batch = self._one(item, on_done)
                results.extend(batch)
                done += 1
                if fail_fast and not all(batch):
                    break
        except Interrupted as stop:
            self.stop(f"interrupted by {stop.name}")
            ended = [r for item in items[done:] for r in self.unfinished(item, stop)]
            self._hear_the_rest(ended, on_done)
            raise BatchInterrupted(stop.signum, results + ended) from None
        return results

    def unfinished(self, item: str | Path | UnmatchedPattern, stop: Interrupted) -> list[BuildResult]:
        """The results of a recipe the stop caught: those it recorded (or found) stay, the rest are
        ``interrupted``."""
        partial = self._partial.get(item.pattern if isinstance(item, UnmatchedPattern) else str(item), [])
        return [interrupted_result(item, stop, r) for r in partial] or [interrupted_result(item, stop)]

    @contextmanager
    def _committing(self) -> Iterator[None]:
        """Around a built artifact's catalog commit and the result that reports it: a signal never
        lands between the two (deferred, on the main thread), and once a stop closed the gate
        (other threads) nothing more is recorded, so the results a stop reports are the truth."""
        with deferred(), self._gate:
            if self._gate_closed:
                raise BuildInterruptedError(f"{self._stop_reason} before it was recorded")
            yield

    def close_gate(self) -> None:
        """Wait (a little) for a commit under way, then let none pass."""
        if self._gate.acquire(timeout=STOP_WAIT_S):
            self._gate_closed = True
            self._gate.release()

    def stop(self, reason: str) -> None:
        """Nothing more starts: running builds' workers are killed, lock waits end (a pool made
        after this is stopped as it is made: see workers)."""
        with self._lock:
            self._stopping.set()
            self._stop_reason = reason
            pool = self._pool
        if pool is not None:
            pool.stop(self._stop_reason)

    def _one(
        self, item: str | Path | UnmatchedPattern, on_done: Callable[[BuildResult], None] | None
    ) -> list[BuildResult]:
        """One recipe's results: one per target asked for (this machine's when none was)."""
        if isinstance(item, UnmatchedPattern):
            batch = [unmatched(item, BuildResult(item.pattern, None, "failed"))]
        else:
            batch = self.run(item, self.targets or (None,))
        if self._stopping.is_set():  # a worker killed by the stop: its recipe was interrupted, not crashed
            batch = [interrupted_result(item, None, r) if r.error_kind == "crashed" else r for r in batch]
        if on_done is not None:
            with self._callbacks:
                if not self._heard_all:
                    for result in batch:
                        on_done(result)
        return batch

    def _build_threaded(
        self,
        items: list[str | Path | UnmatchedPattern],
        threads: int,
        fail_fast: bool,
        on_done: Callable[[BuildResult], None] | None,
    ) -> list[BuildResult]:
        """``threads`` threads take the recipes in order; each hit stays on its thread, each build has a worker."""
        from concurrent.futures import ThreadPoolExecutor

        self._digest_cache()
        self._remembered()
        stop = threading.Event()

        def work(item: str | Path | UnmatchedPattern) -> list[BuildResult]:
            if stop.is_set():
                return []  # --fail-fast: not started after a failure
            batch = self._one(item, on_done)
            if fail_fast and not all(batch):
                stop.set()
            return batch

        executor = ThreadPoolExecutor(threads, thread_name_prefix="trtforge-build")
        futures = []
        try:
            futures = [executor.submit(work, item) for item in items]
            batches = [future.result() for future in futures]
        except Interrupted as interrupted:  # SIGINT/SIGTERM: stop the builds under way, keep what is recorded
            stop.set()
            self.stop(f"interrupted by {interrupted.name}")
            executor.shutdown(wait=False, cancel_futures=True)
            settled = self._settled(items, futures, interrupted, on_done)
            raise BatchInterrupted(interrupted.signum, settled) from None
        except BaseException:  # a bug: stop the builds under way instead of waiting them out
            stop.set()
            self.stop("stopped by an error in trtforge")
            executor.shutdown(wait=True, cancel_futures=True)
            raise
        executor.shutdown()
        return [result for batch in batches for result in batch]

    def _settled(
        self,
        items: list[str | Path | UnmatchedPattern],
        futures: list[Any],
        stop: Interrupted,
        on_done: Callable[[BuildResult], None] | None,
    ) -> list[BuildResult]:
        """Every recipe's result once no commit is under way: what finished, what was recorded, and
        the rest ``interrupted`` (the gate is closed: they will record nothing)."""
        self.close_gate()
        settled: list[BuildResult] = []
        unheard: list[BuildResult] = []
        for index, item in enumerate(items):
            future = futures[index] if index < len(futures) else None
            done = future is not None and future.done() and not future.cancelled() and future.exception() is None
            batch = future.result() if done else []
            if not batch:
                batch = self.unfinished(item, stop)
                unheard.extend(batch)
            settled.extend(batch)
        self._hear_the_rest(unheard, on_done)
        return settled

    def _hear_the_rest(self, results: list[BuildResult], on_done: Callable[[BuildResult], None] | None) -> None:
        """A stopped batch's results that ``on_done`` has not heard (interrupted, or recorded before
        the stop by a recipe that did not finish): heard now, and nothing after them, so each
        recipe is heard once (`--json-lines` prints every result of an interrupted batch)."""
        with self._callbacks:
            self._heard_all = True
            if on_done is not None:
                for result in results:
                    on_done(result)

    def build_one(self, recipe_path: str | Path) -> BuildResult:
        """Build (or find) one recipe on this machine; user-caused failures become a failed result."""
        return self.run(recipe_path)[0]

    def run(
        self, recipe_path: str | Path, targets: Sequence[RuntimeTarget | None] = (None,), *, dry_run: bool = False
    ) -> list[BuildResult]:
        """One result per target (None: this machine). ``dry_run`` stops before building: `plan`.

        A target the recipe does not build for (see :func:`skip_reason`), or, building, one this
        machine cannot build, is ``skipped`` with the reason.
        """
        started = time.perf_counter()
        if list(targets) == [None]:
            quick = self.remembered_hit(recipe_path, started)
            if quick is not None:
                return [quick]
        from trtforge.resolution.resolve import load_effective

        try:
            loaded = load_effective(recipe_path, name=self.name)
        except TrtforgeError as exc:
            return [_failed(BuildResult(str(recipe_path), None, "failed"), exc, started)]
        results: list[BuildResult] = []
        self._partial[str(recipe_path)] = results
        for target in targets:
            result = BuildResult(recipe=str(recipe_path), name=loaded.recipe.name, status="failed")
            results.append(result)  # in place: what a signal interrupts is in it (self._partial)
            result.target_request = target.as_json() if target is not None else None
            skipped = skip_reason(loaded.recipe, target, building=not dry_run)
            if skipped is not None:
                result.status = "skipped"
                result.reason, result.hint = skipped
            else:
                try:
                    self._build(loaded, _build_target(target, dry_run), result, dry_run=dry_run)
                    _unknown_cuda(result, target)
                except TrtforgeError as exc:
                    _failed(result, exc, started)
            result.seconds = round(time.perf_counter() - started, 4)
            started = time.perf_counter()
        return results

    def remembered_hit(self, recipe_path: str | Path, started: float | None = None) -> BuildResult | None:
        """A hit found through a remembered resolution (trtforge.resolution.resolved_cache): no recipe models, no
        capability table. None sends the recipe down the full path (a miss, anything changed, --force,
        --name, or targets asked for)."""
        if self.force or self.name is not None or self.targets:
            return None
        started = time.perf_counter() if started is None else started
        quick = self._remembered().lookup(recipe_path, self._digest_cache())
        if quick is None:
            return None
        result = BuildResult(
            recipe=str(recipe_path), name=quick.name, status="failed", build_key=quick.build_key, target=quick.target
        )
        try:
            if not self._find_hit(quick.build_key, result):
                return None
        except TrtforgeError as exc:
            if kind_of(exc) in UNAVAILABLE_KINDS:  # asking again on the full path would wait again
                return _failed(result, exc, started)
            return None  # e.g. a catalog newer than this trtforge: the full path reports it per recipe
        self.note(quick.notes)
        result.notes = list(quick.notes)
        result.seconds = round(time.perf_counter() - started, 4)
        return result

    def _build(self, loaded: LoadedRecipe, target: RuntimeTarget | None, result: BuildResult, *, dry_run: bool) -> None:
        from trtforge.resolution.resolve import resolve

        resolution = resolve(loaded, target=target, digests=self._digest_cache())
        result.build_key = resolution.build_key  # reported even when the recipe is refused below
        result.target = resolution.target.key_fields()
        notes = resolution.check_buildable(target)
        self.note(notes)
        result.notes = list(notes)
        if target is None:
            self._remembered().remember(resolution, notes)
        key = resolution.build_key

        if not self.force and self._find_hit(key, result):
            return
        if target is None:  # built here: what this machine cannot complete is refused now, not attempted
            resolution.check_build_here()
        if dry_run:
            from trtforge.rules.capabilities import unchecked_options

            result.status = "build"
            result.unchecked = unchecked_options(resolution.recipe)
            return

        if self._stopping.is_set():
            raise BuildInterruptedError(f"{self._stop_reason} before it was built")
        from trtforge.rules.onnx_model import check_profiles, private_copy, read_for_build

        # The model is read once: the profiles are checked against these bytes, and the builder
        # reads a private copy of them (external data copied and hashed), never the user's files.
        model = read_for_build(resolution.loaded.model_path, resolution.model_sha256)
        check_profiles(resolution.loaded, model.info)
        self.store.require_writable()  # a read-only store serves hits; a miss is refused here
        preload_catalog_modules()  # a build will happen: import the catalog side behind it
        # Single flight: whoever holds the key's lock builds; the others wait, then find its row.
        # The file lock covers processes sharing this store directory; a PostgreSQL catalog adds
        # an advisory lock for runners on other machines.
        what = f"{resolution.recipe.name} ({key[:12]})"
        cancelled = self._stopping.is_set
        with (
            self.store.locks().hold(key, what=what, notify=self.notify, cancelled=cancelled) as held,
            self._catalog_lock(key, what),
        ):
            if not self.force and self._find_hit(key, result):  # built while we waited
                return
            crashpoint("build-locked")
            with self.store.scratch_dir() as folder:
                model_file = private_copy(model, folder)  # ModelError if it changed since its digest
                info = model.info
                del model  # its bytes are in the copy now: a large model is not held twice
                self._build_locked(resolution, info, model_file, result, held)

    def _find_hit(self, key: str, result: BuildResult) -> bool:
        """Fill ``result`` from a usable hit; a certain answer from SQLite skips the ORM (~0.15 s)."""
        probe = self.store.quick_probe(key)
        if probe.plan is not None:
            result.artifact_id = probe.plan.artifact_id
            result.plan_sha256 = probe.plan.plan_sha256
            result.plan_path = str(self.store.blobs().path_for(probe.plan.plan_sha256))
            result.status = "cached"  # last: a result interrupted while filled in is not a hit
            return True
        if probe.answered:
            return False
        store = self.store.existing()
        return store is not None and _use_hit(store, key, result, self.notify)

    @contextmanager
    def _catalog_lock(self, key: str, what: str) -> Iterator[None]:
        # A local SQLite catalog has only local users, whom the store's file lock already covers.
        store = None if self.store.is_local_sqlite() else self.store.existing()
        if store is None:
            yield
            return
        with store.catalog.single_flight(key, what=what, notify=self.notify, cancelled=self._stopping.is_set):
            yield

    def _build_locked(
        self, resolution: Resolution, model: ModelInfo, model_file: Path, result: BuildResult, held: HeldLock
    ) -> None:
        recipe, backend, target, key = resolution.recipe, resolution.backend, resolution.target, resolution.build_key
        from trtforge.resolution import timing_cache_policy as timing_cache

        cache_start = timing_cache.start(self.store.existing, recipe, target)
        output = self._in_worker(resolution, model_file, cache_start.active, cache_start.data, result, held)
        from trtforge.rules.compatibility import Envelope
        from trtforge.rules.recipe import WEIGHTLESS_REFIT_MODES
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
                    weightless=recipe.refit in WEIGHTLESS_REFIT_MODES,  # must be refitted before use
                    timing_cache=cache_record,
                    compatibility=Envelope.of(recipe.compatibility).record(target),
                    denylist=output.denylist,
                    layer_info=output.layer_info,
                    model=model.record(),
                    plugins=output.plugins,
                    files=[{"field": f.field, "path": str(f.path), "sha256": f.sha256} for f in resolution.files],
                    cost=result.cost,
                ),
            )
            from trtforge.stages.lookup import new_version_warning

            warning = new_version_warning(store, recipe.name, resolution.model_sha256, artifact.recipe)
            with self._committing():  # the commit and the result that reports it are one step for a stop
                store.catalog.add_artifact(artifact, Blob(sha256=blob.sha256, size=blob.size, kind="plan"))
                result.status = "built"
                result.artifact_id = artifact.id
                result.plan_sha256 = blob.sha256
                result.plan_path = store.blobs.location(blob.sha256)
        if warning is not None:
            self.notify(f"warning: {warning}")

    def _in_worker(
        self,
        resolution: Resolution,
        model_file: Path,
        use_cache: bool,
        cache: bytes | None,
        result: BuildResult,
        held: HeldLock,
    ) -> BuildOutput:
        """Build in a worker process; its cost goes into ``result`` whatever happens, its failure is raised."""
        from trtforge.backend.worker import BuildJob

        workers = self.workers()
        progress = self.progress if workers.size == 1 else None  # one bar follows one build at a time
        job = BuildJob(
            resolution.backend,
            resolution.recipe,
            model_file,  # the build's private copy (the digest the key holds)
            use_timing_cache=use_cache,
            timing_cache=cache,
            progress=progress is not None,
            files=tuple(resolution.files),
            shown=resolution.loaded.model_path,
        )

        def started(pid: int) -> None:
            held.note_worker(pid)  # the lock file names the process building this key
            if self._on_start is not None:
                with self._callbacks:
                    self._on_start(resolution.loaded.path.name)

        done = workers.build(job, timeout=self.timeout, progress=progress, on_start=started)
        result.cost = done.cost.as_json()
        return done.unwrap()  # a failed, crashed or timed-out build raises here: nothing is stored


def _combine_with(backend: BackendInfo) -> Callable[[bytes | None, bytes], bytes]:
    """ITimingCache.combine of the backend (imported only when a merge happens)."""

    def merge(base: bytes | None, new: bytes) -> bytes:
        from trtforge.backend.loader import import_backend
        from trtforge.backend.timing_cache import combine

        return combine(import_backend(backend), base, new)

    return merge


def _use_hit(store: Store, key: str, result: BuildResult, notify: Callable[[str], None]) -> bool:
    """Fill ``result`` from a usable catalog hit: the newest artifact of the key that is not
    quarantined and whose blob is present as recorded (its size; in S3 also its checksum). A blob
    that is not is damaged: its artifacts are marked corrupt (never a hit again) and the recipe is
    rebuilt."""
    damaged: dict[str, tuple[Artifact, str]] = {}

    def intact(artifact: Artifact) -> bool:
        found = store.blobs.check(artifact.plan_sha256, artifact.plan_size)
        if found.damage is not None:
            damaged[artifact.plan_sha256] = (artifact, found.damage)
        return found.intact

    hit = store.catalog.find_by_build_key(key, intact=intact)
    if damaged:
        _mark_damaged(store, damaged, notify)
    if hit is None:
        return False
    result.artifact_id = hit.id
    result.plan_sha256 = hit.plan_sha256
    result.plan_path = store.blobs.location(hit.plan_sha256)
    result.status = "cached"  # last: a result interrupted while filled in is not a hit
    return True


def _mark_damaged(store: Store, damaged: dict[str, tuple[Artifact, str]], notify: Callable[[str], None]) -> None:
    for sha, (artifact, damage) in damaged.items():
        notify(
            f"plan {sha[:12]} of artifact {artifact.id[:12]} {damage}: "
            "marked corrupt, not used (`trtforge fsck --repair` moves it aside)"
        )
    try:
        store.catalog.mark_corrupt(list(damaged))
    except TrtforgeError as exc:  # e.g. a read-only store: still never used as a hit here
        notify(f"could not mark the damaged plan corrupt: {exc.message}")


# -- targets: which ones a recipe builds for here, and with what --------------------------------


def skip_reason(recipe: Recipe, target: RuntimeTarget | None, *, building: bool) -> tuple[str, str | None] | None:
    """Why ``recipe`` is not built for ``target``, and the way out (None: it is built): its ``backend``
    excludes the flavor, TensorRT-RTX cannot serve the target's compute capability or the recipe
    leaves it out (rules.capabilities.rtx_target_problem), or (``building``) this machine cannot
    build it (:func:`trtforge.resolution.targets.why_not_here`)."""
    if target is None:
        return None
    if recipe.backend not in ("auto", target.flavor):
        return f"recipe backend {recipe.backend} does not build for {target.flavor}", None
    if target.flavor == "tensorrt_rtx":
        from trtforge.rules.capabilities import rtx_target_problem
        from trtforge.rules.flavors import RTX_DEFAULT_COMPUTE_CAPABILITIES
        from trtforge.rules.target import parse_compute_capability

        def canonical(cc: str) -> str:
            return "{}.{}".format(*parse_compute_capability(cc))

        listed = [canonical(cc) for cc in recipe.compatibility.compute_capabilities or RTX_DEFAULT_COMPUTE_CAPABILITIES]
        label = f"TensorRT-RTX {target.trt_version}"
        problem = rtx_target_problem(listed, label, canonical(target.compute_capability))
        if problem is not None:
            return problem
    if building:
        from trtforge.resolution.targets import why_not_here

        here = why_not_here(target)
        return (here, None) if here is not None else None
    return None


def _build_target(target: RuntimeTarget | None, dry_run: bool) -> RuntimeTarget | None:
    """What the build here (or its dry run) for ``target`` resolves with: one key for both. A full
    TensorRT build happens on this machine's GPU (checked by skip_reason): detected, as a plain build."""
    if target is None or (target.flavor == "tensorrt" and not dry_run):
        return None
    from trtforge.resolution.targets import build_request

    return build_request(target)


def _unknown_cuda(result: BuildResult, target: RuntimeTarget | None) -> None:
    """A dry run that would build for a target whose CUDA variant nobody gave: its key may not be
    the one a runner stores, so it says so instead of "build"."""
    from trtforge.resolution.targets import cuda_known
    from trtforge.rules.flavors import flavor_name

    if result.status == "build" and target is not None and not cuda_known(target):
        result.status = "unknown"
        result.reason = (
            f"the CUDA variant of {flavor_name(target.flavor)} {target.trt_version} is unknown here, so the key "
            "a runner stores is too: give it (--cuda cu12|cu13, cuda= in --target or the fleet entry)"
        )


@dataclass
class PlanEntry:
    """One recipe x target of `plan --json`: what `build` would do there."""

    recipe: str
    name: str | None
    target: dict[str, Any] | None
    status: Literal["cached", "build", "unknown", "skipped", "failed"]
    build_key: str | None = None
    artifact_id: str | None = None
    error: str | None = None
    more_errors: list[str] = field(default_factory=list)
    hint: str | None = None  # the way out of a refusal
    exit_code: int = 0
    unchecked: list[str] = field(default_factory=list)  # options checked against TensorRT only when it builds
    target_request: dict[str, Any] | None = None  # the target asked for; None: this machine
    reason: str | None = None  # why "skipped" or "unknown"
    error_kind: str | None = None  # bad_input: what a build would refuse (a failed plan entry is never more)
    error_detail: list[Any] | dict[str, Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

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
            result.unchecked,
            result.target_request,
            result.reason,
            result.error_kind,
            result.error_detail,
            result.notes,
        )

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def explicit_targets(targets: TargetOptions | Sequence[RuntimeTarget] | None) -> list[RuntimeTarget]:
    """The targets of `build`/`plan` (``--target``, the flags, ``--fleet``), checked before anything
    else; empty: this machine. ``--trt`` without ``--flavor`` means the installed runtime's flavor."""
    if targets is None:
        return []  # nothing imported: the hit path stays light
    from trtforge.resolution.targets import TargetOptions, resolve_all

    if isinstance(targets, TargetOptions):
        return resolve_all(targets.requests())
    return list(targets)


def plan_builds(
    arguments: list[str],
    targets: TargetOptions | Sequence[RuntimeTarget] | None = None,
    *,
    store: str | Path | None = None,
    catalog: str | None = None,
    on_done: Callable[[PlanEntry], None] | None = None,
) -> list[PlanEntry]:
    """For every recipe x target: the build key and whether the store has it (``build`` stopped early).

    Nothing is built, TensorRT is not imported and no store is created: a CI job can turn the
    JSON into a build matrix (only the ``build`` entries need a runner). ``on_done`` hears each
    entry as it is ready, in order.
    """
    explicit = explicit_targets(targets)
    stage = BuildStage(store, catalog=catalog)
    entries: list[PlanEntry] = []
    try:
        for item in expand_recipes(arguments):
            if isinstance(item, UnmatchedPattern):
                batch = [unmatched(item, PlanEntry(item.pattern, None, None, "failed"))]
            else:
                chosen: Sequence[RuntimeTarget | None] = explicit or (None,)
                batch = [PlanEntry.of(r) for r in stage.run(item, chosen, dry_run=True)]
            for entry in batch:
                if on_done is not None:
                    on_done(entry)
                entries.append(entry)
    finally:
        stage.close()
    return entries


_Failed = TypeVar("_Failed", BuildResult, PlanEntry)


def unmatched(item: UnmatchedPattern, result: _Failed) -> _Failed:
    """A glob (or folder) that named no recipe: a failed result of bad input (on every executor)."""
    result.error, result.hint, result.exit_code, result.error_kind = NO_MATCH, item.hint, 2, "bad_input"
    return result


def failed_with(result: BuildResult, exc: TrtforgeError) -> BuildResult:
    """``result`` as the failure ``exc`` describes (here or on another executor's node)."""
    result.status = "failed"
    result.error = exc.message
    result.more_errors = list(exc.more)
    result.error_detail = exc.detail or []
    result.hint = exc.hint
    result.exit_code = exc.exit_code
    result.error_kind = kind_of(exc)
    return result


def _failed(result: BuildResult, exc: TrtforgeError, started: float) -> BuildResult:
    failed_with(result, exc).seconds = round(time.perf_counter() - started, 4)
    return result


def interrupted_result(
    item: str | Path | UnmatchedPattern, stop: Interrupted | None, result: BuildResult | None = None
) -> BuildResult:
    """The result of a recipe the stop ended before it was recorded (``result``: what it had got to)."""
    if result is not None and (result.status != "failed" or result.error_kind not in (None, "crashed")):
        return result  # recorded, found, skipped or failed on its own before the signal: it stays as it was
    recipe = item.pattern if isinstance(item, UnmatchedPattern) else str(item)
    base = result if result is not None else BuildResult(recipe, None, "failed")
    why = f"interrupted by {stop.name}" if stop is not None else "interrupted"
    error = BuildInterruptedError(f"{why} before it was recorded" + (f" ({base.error})" if base.error else ""))
    return _failed(base, error, time.perf_counter() - base.seconds)


def _default_jobs() -> int:
    from trtforge.core.resources import default_jobs  # lazy: one recipe (the daily hit) never asks

    return default_jobs()


def _to_stderr(message: str) -> None:
    print(f"trtforge: {message}", file=sys.stderr, flush=True)
