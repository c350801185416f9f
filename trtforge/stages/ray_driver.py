"""The Ray driver: a process of its own that connects to Ray, checks the cluster, runs the tasks.

`build --executor ray` (:mod:`trtforge.stages.ray_builds`) starts it (``python -m
trtforge.stages.ray_driver``) at the first miss, so Ray's threads, its printing (a lost worker is
announced on the driver's stdout) and its start-up stay out of `trtforge build`: stdout there stays
the answer. It reads ``("start", address, cpus)`` and connects to Ray (a local instance starts)
while `trtforge build` checks the other recipes for hits, then one ``("run", RunRequest)``, and
answers with messages (frames of pickled tuples, as the build worker's protocol in
:mod:`trtforge.backend.worker`):

- ``("refused", TrtforgeError)``: nothing was run (Ray unreachable; a store the nodes cannot share);
- ``("unoffered", index, message, hint)``: that task asks for what no node offers, and is not run;
- ``("checked",)``: the checks passed; tasks are being submitted;
- ``("result", index, TaskOutcome)`` / ``("lost", index, message, detail)``: a task finished, or
  was lost more often than Ray retries it;
- ``("done",)``.

Everything this process prints (Ray's messages) goes to stderr. When `trtforge build` goes away
(its end of our stdin closes), this process exits at once; Ray cancels the tasks of a driver that
left, and stops a local instance it started.
"""

from __future__ import annotations

import _thread
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trtforge.backend.worker import receive, send
from trtforge.core.errors import BadInputError, StoreError, TrtforgeError
from trtforge.rules.ray_scheduling import Demand, offered_types, other_machines, why_unoffered
from trtforge.stages.ray_tasks import StoreSpec, TaskOutcome, TaskSpec, run_task

DRIVER_MODULE = "trtforge.stages.ray_driver"
LOCAL_OBJECT_STORE = 128 << 20  # results are small records (plans go to the store): Ray's floor is 75 MiB
CONNECT_TIMEOUT_S = 10.0  # for the address to answer at all
RECHECK_S = 5.0  # how often the nodes are looked at while no task finishes
STOP_LIMIT_S = 30.0  # for the run to unwind once `trtforge build` went away
STORE_HINT = "see docs/ray.md#the-store-every-node-reaches"

Say = Callable[[tuple[Any, ...]], None]


@dataclass(frozen=True)
class StoreFacts:
    """What the driver needs to know of the store to tell whether nodes on other machines reach it."""

    root: str
    catalog: str  # the URL (a password in it travels to the tasks: prefer PGPASSWORD on the nodes)
    blobs: str | None  # TRTFORGE_BLOBS (s3://...), None: under the root
    local_sqlite: bool  # the catalog is a SQLite file on this machine
    shared_fs: bool  # the root is on a network file system


@dataclass(frozen=True)
class Task:
    """One build task: its place in the run's results, what it builds, what it asks of a node."""

    index: int
    spec: TaskSpec
    demand: Demand


@dataclass(frozen=True)
class RunRequest:
    """One run: where Ray is, the store, the tasks."""

    address: str | None  # None: a local instance of `cpus` CPUs, started and stopped here
    cpus: int
    limit: int | None  # tasks at once on a cluster (--jobs); None: as the cluster's resources allow
    max_retries: int
    store: StoreFacts
    tasks: tuple[Task, ...]


def drive(request: RunRequest, say: Say, *, started: bool | None = None) -> None:
    """Connect (``started``: connected already; True: a local instance started here), check, run
    every task, say each outcome; raises TrtforgeError for a refusal."""
    import ray

    if started is None:
        started = _connect(ray, request.address, request.cpus)
    try:
        nodes = _alive(ray)
        ip = ray.util.get_node_ip_address()
        here = not other_machines([node.get("NodeManagerAddress", "") for node in nodes], ip)
        store = store_spec(request.store, nodes, ip)
        tasks = _offered(request.tasks, [node.get("Resources", {}) for node in nodes], ip if here else None, say)
        say(("checked",))
        _Tasks(ray, store, request, say).run(tasks)
    finally:
        if started:
            ray.shutdown()


def store_spec(facts: StoreFacts, nodes: list[dict[str, Any]], ip: str) -> StoreSpec:
    """The store tasks use; StoreError where a node on another machine could not reach it."""
    remote = other_machines([node.get("NodeManagerAddress", "") for node in nodes], ip)
    if not remote:  # one machine: any store this machine has
        return StoreSpec(facts.root, facts.catalog, facts.blobs)
    shown = ", ".join(remote[:3]) + (", ..." if len(remote) > 3 else "")
    where = f"the Ray cluster has nodes on other machines ({shown})"
    if facts.local_sqlite:
        raise StoreError(
            f"{where}, and the catalog is a SQLite file on this machine ({facts.catalog.removeprefix('sqlite:///')})",
            hint=f"use a PostgreSQL catalog (--catalog postgresql+psycopg://... or TRTFORGE_CATALOG); {STORE_HINT}",
        )
    if facts.blobs is None and not facts.shared_fs:
        raise StoreError(
            f"{where}, and the store's blobs are on this machine's own disk ({facts.root})",
            hint="put the blobs in a bucket (TRTFORGE_BLOBS=s3://bucket/prefix), or the store on a file system "
            f"every node mounts at the same path; {STORE_HINT}",
        )
    return StoreSpec(facts.root, facts.catalog, facts.blobs, node_root=facts.blobs is not None)


def _offered(tasks: tuple[Task, ...], nodes: list[dict[str, float]], here: str | None, say: Say) -> list[Task]:
    """The tasks some node can run (kept to this machine's nodes when all are here); the others are said."""
    runnable = []
    for task in tasks:
        demand = task.demand.on_node(here) if here is not None else task.demand
        reason = why_unoffered(demand, nodes)
        if reason is None:
            runnable.append(Task(task.index, task.spec, demand))
            continue
        offered = ", ".join(f"accelerator_type:{kind}" for kind in offered_types(nodes)) or "no GPU type"
        hint = f"the nodes offer {offered}; add a node of that GPU type to the cluster, or leave the target out"
        say(("unoffered", task.index, reason, hint))
    return runnable


class _Tasks:
    """The run's tasks: submitted (at most ``limit`` at once), collected as they finish."""

    def __init__(self, ray: Any, store: StoreSpec, request: RunRequest, say: Say) -> None:
        self.ray, self.store, self.say = ray, store, say
        self.limit = request.limit
        self.max_retries = request.max_retries
        self.remote = ray.remote(run_task)
        self.running: dict[Any, Task] = {}

    def run(self, tasks: list[Task]) -> None:
        waiting = list(tasks)
        try:
            self._loop(waiting)
        except BaseException:  # stopped (SIGTERM: `trtforge build` went away): no task of ours goes on
            for ref in self.running:
                self.ray.cancel(ref, force=True)
            raise

    def _loop(self, waiting: list[Task]) -> None:
        while waiting or self.running:
            while waiting and (self.limit is None or len(self.running) < self.limit):
                self._submit(waiting.pop(0))
            done, _ = self.ray.wait(list(self.running), num_returns=1, timeout=RECHECK_S)
            for ref in done:
                self._finish(self.running.pop(ref), ref)
            if not done:
                self._recheck()

    def _submit(self, task: Task) -> None:
        options = {
            "num_cpus": task.demand.cpus,
            "num_gpus": task.demand.gpus,
            "resources": dict(task.demand.resources),
            "max_retries": self.max_retries,
            "retry_exceptions": False,  # a failed build is a result: only a lost worker or node is retried
            "name": f"trtforge build {task.spec.recipe}",
        }
        self.running[self.remote.options(**options).remote(task.spec, self.store)] = task

    def _finish(self, task: Task, ref: Any) -> None:
        exceptions = self.ray.exceptions
        try:
            outcome: TaskOutcome = self.ray.get(ref)
        except exceptions.TaskCancelledError:
            return  # cancelled by _recheck, which said why
        except exceptions.RayTaskError as exc:  # the task itself raised: a bug in trtforge
            self.say(("lost", task.index, f"the Ray task raised {type(exc.cause).__name__}: {exc.cause}", str(exc)))
        except exceptions.RayError as exc:  # its worker or node died, once more than Ray retries
            first = next(iter(str(exc).strip().splitlines()), type(exc).__name__)
            times = self.max_retries + 1
            self.say(
                (
                    "lost",
                    task.index,
                    f"the Ray task was lost {times} times (its worker or node died): {first}",
                    str(exc),
                )
            )
        else:
            self.say(("result", task.index, outcome))

    def _recheck(self) -> None:
        """A task that no live node can run any more (its node left) is cancelled, not left pending."""
        nodes = [node.get("Resources", {}) for node in _alive(self.ray)]
        for ref, task in list(self.running.items()):
            reason = why_unoffered(task.demand, nodes)
            if reason is not None:
                self.say(("unoffered", task.index, f"{reason} any more", "a node left the cluster"))
                self.ray.cancel(ref, force=True)


def _alive(ray: Any) -> list[dict[str, Any]]:
    return [node for node in ray.nodes() if node.get("Alive")]


def _connect(ray: Any, address: str | None, cpus: int) -> bool:
    """Ray, connected (True: a local instance started here, to be stopped)."""
    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address is None:
            ray.init(
                address="local", num_cpus=cpus, object_store_memory=LOCAL_OBJECT_STORE, include_dashboard=False, **quiet
            )
            return True
        _probe(address)
        ray.init(address=address, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        first = next(iter(str(exc).strip().splitlines()), type(exc).__name__)[:300]
        raise _unreachable(address or "a local instance", first) from None
    return False


def _probe(address: str) -> None:
    """Refuse an address where nothing listens, at once (Ray itself keeps retrying for minutes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or "://" in host:
        return  # `auto`, or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise _unreachable(address, exc.strerror or str(exc) or type(exc).__name__) from None


def _unreachable(address: str, why: str) -> BadInputError:
    return BadInputError(
        f"cannot connect to Ray at {address}: {why}",
        hint="check --ray-address (ray://HOST:10001, HOST:6379, or auto on a node of the cluster) and, where the "
        "cluster uses token authentication, RAY_AUTH_TOKEN (`ray get-auth-token`); docs/ray.md",
    )


def _watch(fd: int) -> None:
    """`trtforge build` closing our stdin (it went away, or was interrupted) stops this run: the main
    thread is interrupted, cancels the tasks and stops a local instance; at the latest after
    ``STOP_LIMIT_S`` the process exits anyway (Ray cancels the tasks of a driver that left)."""

    def wait() -> None:
        while receive(fd) is not None:
            pass
        _thread.interrupt_main()
        time.sleep(STOP_LIMIT_S)
        os._exit(1)

    threading.Thread(target=wait, name="trtforge-ray-driver-parent", daemon=True).start()


def _start(message: tuple[Any, ...]) -> bool | TrtforgeError:
    """``("start", address, cpus)``: connect now, while `trtforge build` still checks the other recipes
    for hits (True: a local instance started here); a refusal is kept for when the run comes."""
    import ray

    try:
        return _connect(ray, message[1], message[2])
    except TrtforgeError as exc:
        return exc


def main() -> None:
    inp, out = os.dup(0), os.dup(1)
    os.dup2(2, 1)  # Ray prints to stdout: that goes to stderr, the protocol has its own descriptor
    message = receive(inp)
    connected: bool | TrtforgeError | None = None
    if message is not None and message[0] == "start":
        connected = _start(message)
        message = receive(inp)
    if message is None:  # `trtforge build` stopped before giving the run
        if isinstance(connected, bool):
            import ray

            ray.shutdown()  # a local instance started here is stopped
        return
    _watch(inp)  # in a session of its own, Ctrl-C at the terminal is `trtforge build`'s: it closes our stdin
    try:
        if isinstance(connected, TrtforgeError):
            raise connected
        drive(message[1], lambda reply: send(out, reply), started=connected)
    except TrtforgeError as exc:
        send(out, ("refused", exc))  # the last word: `trtforge build` stops listening
        return
    except KeyboardInterrupt:  # `trtforge build` went away: the run is unwound, nobody listens
        sys.exit(1)
    send(out, ("done",))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
