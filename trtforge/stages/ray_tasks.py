"""What a Ray task runs on a node: one recipe for one target, built as `trtforge build` builds it there.

The driver (:mod:`trtforge.stages.ray_driver`) sends a :class:`TaskSpec` and the store it checked
(:class:`StoreSpec`); the task runs the build
stage on the node: resolution, the hit check, single flight (the store's file lock, and on a
PostgreSQL catalog the advisory lock that covers other machines), the build in a worker process,
the plan blob and the catalog row. So a task writes to the shared store exactly as a local build
does, and returns the same :class:`~trtforge.stages.build.BuildResult`, with ``node`` saying where.

A native crash kills the build worker, not the task: it is a ``crashed`` result, which Ray does not
retry. Ray retries (``max_retries``) only a task whose own process or node was lost; a task killed
anywhere leaves what a killed `trtforge build` leaves: no catalog row, no visible partial blob.

Each Ray worker process keeps one build worker for the tasks it runs one after another (started by
the first, like ``--jobs``' workers), so TensorRT's start-up is paid once per Ray worker, not per task;
and one build stage for the tasks of the same store and options, so the store and its catalog are
opened once per Ray worker too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.rules.target import VISIBLE_DEVICES
from trtforge.stages.build import BuildResult, BuildStage
from trtforge.store import BLOBS_ENV, STORE_ENV

if TYPE_CHECKING:
    from trtforge.backend.pool import WorkerPool
    from trtforge.rules.target import RuntimeTarget

NODE_HINT = "install the target's runtime on the nodes of its GPU type (docs/ray.md#what-a-node-needs)"


@dataclass(frozen=True)
class StoreSpec:
    """The store a task writes to: the driver's, as the driver checked it before any work."""

    root: str  # the driver's store root (locks, scratch, caches; and the blobs unless `blobs`)
    catalog: str  # the catalog URL the driver reads (PostgreSQL across machines)
    blobs: str | None = None  # TRTFORGE_BLOBS on the driver (s3://...); None: blobs under the root
    node_root: bool = False  # a node's own TRTFORGE_STORE replaces `root` (blobs elsewhere, across machines)

    def root_here(self) -> str:
        """The root on this node: its TRTFORGE_STORE where `node_root` allows, else the driver's path."""
        own = os.environ.get(STORE_ENV)
        return own if self.node_root and own else self.root


@dataclass(frozen=True)
class TaskSpec:
    """One build task: a recipe for a target (None: as on the node itself), into one store."""

    recipe: str  # as the driver was given it (results name it so)
    recipe_path: str  # absolute, as the driver found it
    target: RuntimeTarget | None
    force: bool = False
    timeout: float | None = None
    name: str | None = None  # --name of an ONNX file given instead of a recipe


@dataclass
class TaskOutcome:
    """A task's result, the capability notes its stage took, and what it said on the way (waits, warnings)."""

    result: BuildResult
    notes: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


_pool: tuple[WorkerPool, str | None] | None = None  # the build worker, and the GPUs it was started with


def _process_pool() -> WorkerPool:
    """This Ray worker's build worker, kept for the tasks it runs next (they run one at a time).

    Ray gives each task its GPUs in ``CUDA_VISIBLE_DEVICES``: a task given others than the
    worker was started with gets a fresh worker, so a build runs on the GPU Ray gave its task."""
    global _pool
    gpus = os.environ.get(VISIBLE_DEVICES)
    if _pool is not None and _pool[1] != gpus:
        _pool[0].close()
        _pool = None
    if _pool is None:
        from trtforge.backend.pool import WorkerPool

        _pool = (WorkerPool(1), gpus)
    return _pool[0]


class _TaskStage(BuildStage):
    """The build stage of this Ray worker's tasks: builds in its own build worker."""

    def workers(self) -> WorkerPool:
        return _process_pool()


_stage: tuple[tuple[Any, ...], _TaskStage] | None = None  # the stage, and what it was made for


def _task_stage(spec: TaskSpec, store: StoreSpec) -> _TaskStage:
    """This Ray worker's build stage for tasks like ``spec`` into ``store``, kept for the next ones
    (a run's tasks share one store and options): the store and its catalog are opened once per Ray
    worker, not per task (about 0.1 s a task on a 2-core machine)."""
    global _stage
    made_for = (store, store.root_here(), spec.force, spec.timeout, spec.name)
    if _stage is not None and _stage[0] == made_for:
        return _stage[1]
    _drop_stage()
    stage = _TaskStage(
        made_for[1], catalog=store.catalog, force=spec.force, name=spec.name, jobs=1, timeout=spec.timeout
    )
    _stage = (made_for, stage)
    return stage


def _drop_stage() -> None:
    global _stage
    if _stage is not None:
        stage, _stage = _stage[1], None
        stage.save_caches()
        stage.store.close()


def run_task(spec: TaskSpec, store: StoreSpec) -> TaskOutcome:
    """Build ``spec`` into ``store`` on this node (the body of the Ray task); failures are the result, as locally."""
    messages: list[str] = []
    with _store_environment(store):
        stage = _task_stage(spec, store)
        stage.notify = messages.append
        try:
            [result] = stage.run(_recipe_here(spec), (spec.target,))
            stage.save_caches()  # a no-op unless this task digested a model the caches lacked
        except BaseException:
            _drop_stage()
            raise
    result.recipe = spec.recipe
    result.node = where()
    if result.status == "skipped":  # the recipe builds for the target, but this node cannot
        _cannot_build_here(result)
    return TaskOutcome(result, list(stage.notes), messages)


def where() -> dict[str, Any]:
    """This task's node and process, as the result reports them."""
    import ray

    return {
        "executor": "ray",
        "node_id": ray.get_runtime_context().get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "pid": os.getpid(),
    }


def _recipe_here(spec: TaskSpec) -> str:
    """The driver's absolute path where this node has it (a shared file system, the same image);
    else the path as given, from this worker's folder (e.g. `ray job submit --working-dir`)."""
    if Path(spec.recipe_path).exists() or Path(spec.recipe).is_absolute():
        return spec.recipe_path
    return spec.recipe if Path(spec.recipe).exists() else spec.recipe_path


def _cannot_build_here(result: BuildResult) -> None:
    node = result.node or {}
    result.status = "failed"
    result.error = f"node {node.get('node_ip')} cannot build it: {result.reason}"
    result.reason = None
    result.exit_code = 2
    result.error_kind = "bad_input"
    result.hint = NODE_HINT


@contextmanager
def _store_environment(store: StoreSpec) -> Iterator[None]:
    """The driver's blob location for the length of the task (this Ray worker runs later tasks too)."""
    before = os.environ.get(BLOBS_ENV)
    _set(BLOBS_ENV, store.blobs)
    try:
        yield
    finally:
        _set(BLOBS_ENV, before)


def _set(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
