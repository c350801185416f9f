"""`build --executor ray`: every miss becomes a Ray task, one per (recipe, target), on a node that fits.

1. Hits first, here: each recipe x target goes down the build stage's dry run (``plan``'s path), so
   a hit is answered from the store without Ray; a run where everything hits starts no Ray (and
   does not import it). What each miss asks of a node is decided here too
   (:mod:`trtforge.rules.ray_scheduling`): a target Ray cannot place fails now.
2. The Ray driver, a process of its own (:mod:`trtforge.stages.ray_driver`), started at the first
   miss (Ray starts while the other recipes are checked here): it connects to a local instance
   (``--jobs`` CPUs, started and stopped with it) or to the cluster at ``--ray-address`` (else
   ``$RAY_ADDRESS``). With nodes on other machines the store must be shared:
   a SQLite catalog, or blobs on this machine's disk, are refused before any task (exit 2). Nodes
   all on this machine may share any store, and the tasks are kept on it. A target no node offers
   is a failed result, said before any task starts, never a task left pending.
3. The tasks run :func:`trtforge.stages.ray_tasks.run_task` on the nodes; the results come back in
   recipe order (``on_done`` hears each as it is ready). Ray retries a task whose worker or node was
   lost, up to ``max_retries`` times; a build that crashed is a result and is not retried.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.core.errors import BadInputError, TrtforgeError
from trtforge.core.extras import require
from trtforge.core.resources import default_jobs
from trtforge.resolution.batch import UnmatchedPattern
from trtforge.stages.build import BuildResult, BuildStage, failed_with, unmatched
from trtforge.stages.ray_driver import DRIVER_MODULE, RunRequest, StoreFacts, Task
from trtforge.stages.ray_tasks import TaskSpec
from trtforge.store import BLOBS_ENV

if TYPE_CHECKING:
    from trtforge.rules.ray_scheduling import Demand
    from trtforge.rules.target import RuntimeTarget

ADDRESS_ENV = "RAY_ADDRESS"
MAX_RETRIES = 3  # Ray's own default: a task whose worker or node died is run again at most this often


@dataclass(frozen=True)
class RaySettings:
    """``build --executor ray``'s options."""

    address: str | None = None  # None: $RAY_ADDRESS, else a local instance
    pin_gpu: bool = False  # TensorRT-RTX tasks on a node of the target's GPU type
    max_retries: int = MAX_RETRIES


@dataclass
class _Slot:
    """One recipe x target: its result, and what its task asks of a node (None: answered here)."""

    result: BuildResult
    target: RuntimeTarget | None = None
    demand: Demand | None = None
    final: bool = True


class RayExecutor:
    """Builds a stage's misses as Ray tasks (see the module's docstring)."""

    def __init__(self, settings: RaySettings | None = None) -> None:
        self.settings = settings or RaySettings()
        require("ray", "build --executor ray")  # before any work; imports nothing

    def build_all(
        self,
        stage: BuildStage,
        items: list[str | Path | UnmatchedPattern],
        *,
        fail_fast: bool,
        on_start: Callable[[str], None] | None = None,  # builds start on the nodes: not heard here
        on_done: Callable[[BuildResult], None] | None = None,
    ) -> list[BuildResult]:
        if fail_fast:
            raise BadInputError(
                "--fail-fast builds one recipe at a time, in order; Ray builds them at once",
                hint="leave out --fail-fast, or build with --executor local",
            )
        if self.settings.pin_gpu and not stage.targets:
            raise BadInputError(
                "--ray-pin-gpu builds on a node of the target's GPU type, and no target was given",
                hint="name the targets: --fleet FILE, --target SPEC or --gpu ... (docs/fleet.md)",
            )
        slots: list[_Slot] = []
        driver = _Driver(stage, slots, on_done)
        try:
            for item in items:
                slots.extend(self._answer_here(stage, item))
                if not driver.started and any(not slot.final for slot in slots):  # Ray starts meanwhile
                    driver.start(self._address(), min(stage.jobs or default_jobs(), _most_tasks(stage, items)))
        except BaseException:
            driver.abandon()
            raise
        misses = [index for index, slot in enumerate(slots) if not slot.final]
        if misses:
            driver.run(self._request(stage, slots, misses))
        else:
            _emit(slots, on_done)
        return [slot.result for slot in slots]

    def _address(self) -> str | None:
        return self.settings.address or _callers_ray() or os.environ.get(ADDRESS_ENV) or None

    def _answer_here(self, stage: BuildStage, item: str | Path | UnmatchedPattern) -> list[_Slot]:
        """The recipe's results for each target as far as this machine answers them: hits, bad
        input, targets the recipe does not build for; the others wait for a task."""
        if isinstance(item, UnmatchedPattern):
            return [_Slot(unmatched(item, BuildResult(item.pattern, None, "failed")))]
        targets = stage.targets or (None,)
        results = stage.run(item, targets, dry_run=True)
        if len(results) != len(targets):  # the recipe itself was refused: one result
            return [_Slot(result) for result in results]
        slots = [_Slot(result, target) for target, result in zip(targets, results, strict=True)]
        for slot in slots:
            if slot.result.status in ("build", "unknown"):
                self._plan_task(slot)
        return slots

    def _plan_task(self, slot: _Slot) -> None:
        from trtforge.rules.ray_scheduling import demand_for

        result = slot.result
        result.status, result.reason, result.unchecked = "failed", None, []
        try:
            slot.demand = demand_for(slot.target, pin_gpu=self.settings.pin_gpu)
        except TrtforgeError as exc:
            failed_with(result, exc)
            return
        slot.final = False

    def _request(self, stage: BuildStage, slots: list[_Slot], misses: list[int]) -> RunRequest:
        from trtforge.store.fs import network_mount

        address = self._address()
        root = stage.store.root()
        facts = StoreFacts(
            root=str(root),
            catalog=stage.store.catalog_url(),
            blobs=os.environ.get(BLOBS_ENV) or None,
            local_sqlite=stage.store.is_local_sqlite(),
            shared_fs=network_mount(root) is not None,
        )
        tasks = []
        for index in misses:
            slot = slots[index]
            assert slot.demand is not None
            spec = TaskSpec(
                recipe=slot.result.recipe,
                recipe_path=str(Path(slot.result.recipe).absolute()),
                target=slot.target,
                force=stage.force,
                timeout=stage.timeout,
                name=stage.name,
            )
            tasks.append(Task(index, spec, slot.demand))
        return RunRequest(
            address=address,
            cpus=min(stage.jobs or default_jobs(), len(tasks)),  # a local instance: --jobs builds at once
            limit=stage.jobs if address is not None else None,
            max_retries=self.settings.max_retries,
            store=facts,
            tasks=tuple(tasks),
        )


class _Driver:
    """The Ray driver process of one run, seen from here: its answers become results.

    Started at the first miss (:meth:`start`: it connects to Ray while the other recipes are
    checked here), then given the run (:meth:`run`)."""

    def __init__(self, stage: BuildStage, slots: list[_Slot], on_done: Callable[[BuildResult], None] | None) -> None:
        self.stage, self.slots, self.on_done = stage, slots, on_done
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def started(self) -> bool:
        return self.proc is not None

    def start(self, address: str | None, cpus: int) -> None:
        from trtforge.backend.pool import start_module
        from trtforge.backend.worker import send

        # Ctrl-C at the terminal is ours: closing its stdin stops it
        self.proc = start_module(DRIVER_MODULE, new_session=True)
        assert self.proc.stdin is not None
        send(self.proc.stdin.fileno(), ("start", address, cpus))

    def abandon(self) -> None:
        """The run stops before it was given (Ctrl-C, a bug): the driver leaves Ray and exits."""
        if self.proc is not None:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.close()
            self.proc.stdout.close()
            self.proc.wait()

    def run(self, request: RunRequest) -> None:
        if self.proc is None:
            self.start(request.address, request.cpus)
        proc = self.proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            refusal = self._talk(proc, request)
        except BaseException:
            proc.stdin.close()  # the driver unwinds its run (tasks cancelled, a local instance stopped)
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        proc.wait()  # it said "done": Ray is stopped or left
        proc.stdin.close()
        if refusal is not None:
            raise refusal

    def _talk(self, proc: subprocess.Popen[bytes], request: RunRequest) -> TrtforgeError | None:
        """The driver's answers, until it is done; its refusal of the run (nothing was run), if any."""
        from trtforge.backend.worker import receive, send

        assert proc.stdin is not None and proc.stdout is not None
        send(proc.stdin.fileno(), ("run", request))
        while True:
            message = receive(proc.stdout.fileno())
            if message is None or message[0] == "done":
                break
            if message[0] == "refused":
                return message[1]
            self._answer(message)
        self._orphans(message is None)
        return None

    def _answer(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "checked":  # the answers found here, now that the run goes ahead
            _emit([slot for slot in self.slots if slot.final], self.on_done)
            return
        slot = self.slots[message[1]]
        if kind == "unoffered":
            failed_with(slot.result, BadInputError(message[2], hint=message[3]))
            self.stage.notify(f"{message[2]}: {slot.result.name} for {_label(slot.target)} is not built")
        elif kind == "lost":
            _lost(slot.result, message[2], message[3])
        else:
            self._outcome(slot, message[2])
        slot.final = True
        _emit([slot], self.on_done)

    def _outcome(self, slot: _Slot, outcome: Any) -> None:
        slot.result = outcome.result
        self.stage.notes.extend(note for note in outcome.notes if note not in self.stage.notes)
        node = (outcome.result.node or {}).get("node_ip", "?")
        for message in outcome.messages:
            self.stage.notify(f"[node {node}] {message}")

    def _orphans(self, died: bool) -> None:
        """Tasks the driver never answered for: it died (or a bug left them): failed, not lost silently."""
        for slot in self.slots:
            if not slot.final:
                why = "the Ray driver process died" if died else "the Ray driver did not report this task"
                _lost(slot.result, why, "")
                slot.final = True
                _emit([slot], self.on_done)


def _emit(slots: list[_Slot], on_done: Callable[[BuildResult], None] | None) -> None:
    if on_done is not None:
        for slot in slots:
            on_done(slot.result)


def _lost(result: BuildResult, message: str, detail: str) -> None:
    result.status = "failed"
    result.error = message
    result.error_detail = {"signal": None, "exit_code": None, "log_tail": detail.strip().splitlines()[-30:]}
    result.hint = "`ray status` and the Ray logs of that node say why; the other builds went on"
    result.exit_code = 1
    result.error_kind = "crashed"


def _label(target: RuntimeTarget | None) -> str:
    return "this machine" if target is None else target.label or target.describe()


def _callers_ray() -> str | None:
    """The cluster this process is connected to already (a Python API caller's ``ray.init()``), if any."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return str(ray.get_runtime_context().gcs_address)


def _most_tasks(stage: BuildStage, items: list[str | Path | UnmatchedPattern]) -> int:
    """At most this many tasks (each item a recipe, for each target): a local instance's CPUs need not exceed it."""
    return len(items) * max(1, len(stage.targets))
