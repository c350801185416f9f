"""`build --jobs N` (N > 1) on this machine: each recipe is worked on by one of N build processes.

Why processes and not threads: resolving a recipe, asking the catalog, storing the plan and
recording its row cost 5-10 ms of Python per recipe, under one interpreter lock. On a 16-core host
that lock paced the batch: the whole node-test corpus took 17.9 s with 16 builds at once, 1,884
recipes at 9.5 ms each (docs/benchmarks.md). Here each build process runs the build stage for one
recipe at a time, exactly as ``--jobs 1`` does (resolution, the hit check, single flight through
the store's locks, the build in a build worker of its own, the blob and the catalog row), so the
Python work runs on as many cores as the builds. This process answers the hits it finds from
remembered resolutions (they start no process), hands out the other recipes in order, and keeps
the results in recipe order.

Protocol: frames of pickled tuples (``backend/worker.py``'s ``send``/``receive``) on the child's
stdin and stdout. To the child: ``("setup", StageSettings)`` once, then ``("recipe", index, item)``
one at a time; closing its stdin ends it (it saves its caches, closes the store and exits). From
the child: ``("started", index, file name)`` when its worker starts the build, ``("note", text)``
for what its stage says on the way (lock waits, warnings), ``("done", index, results, notes)``.
On a stop (SIGINT/SIGTERM here) each child working on a recipe gets the same signal, stops its
stage as a stop stops threads (its worker killed, nothing more started), answers ``done`` with the
recipe's results as they stand (what it recorded stays recorded and is reported) and exits.

A build process that dies (the OOM killer, a signal, a bug) costs its recipe's result (``crashed``)
and the next recipe gets a fresh one; TensorRT's own crashes stay in the build worker below it.
Children run in a session of their own: a terminal's Ctrl-C reaches this process, which passes
the stop on, so that what they report is what they recorded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.core.errors import BuildError, TrtforgeError, WorkerCrashedError
from trtforge.core.interrupts import Interrupted
from trtforge.resolution.batch import UnmatchedPattern
from trtforge.stages.build import (
    STOP_WAIT_S,
    BatchInterrupted,
    BuildResult,
    BuildStage,
    failed_with,
    interrupted_result,
    unmatched,
)

if TYPE_CHECKING:
    import queue

    from trtforge.rules.target import RuntimeTarget

MODULE = "trtforge.stages.build_processes"
PROCESS_NAME = b"trtforge-stage"  # /proc/<pid>/comm; the build workers below are trtforge-worker
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
CLOSE_WAIT_S = 30.0  # after the batch, the most the children may take to save their caches and exit
UNWIND_WAIT_S = 0.5  # after a stop, the most they may take to finish unwinding (their temp folders removed)
REPLY_MARGIN_S = 0.25  # a stopped child answers once a commit under way is done (STOP_WAIT_S at most), and then some

Item = str | Path | UnmatchedPattern


@dataclass(frozen=True)
class StageSettings:
    """What a child's build stage is made with: this stage's store and options, one build at a time."""

    store: str | Path | None
    catalog: str | None
    force: bool
    name: str | None
    timeout: float | None
    targets: tuple[RuntimeTarget, ...]

    @classmethod
    def of(cls, stage: BuildStage) -> StageSettings:
        return cls(stage.store.location, stage.store.catalog, stage.force, stage.name, stage.timeout, stage.targets)


class LocalProcesses:
    """The executor of `trtforge build` and :func:`trtforge.build`: one build at a time stays in the
    stage's own process (``--jobs 1``, ``--fail-fast``, one recipe), more go to build processes."""

    def build_all(
        self,
        stage: BuildStage,
        items: list[Item],
        *,
        fail_fast: bool,
        on_start: Callable[[str], None] | None = None,
        on_done: Callable[[BuildResult], None] | None = None,
    ) -> list[BuildResult]:
        builds = stage.builds_at_once(items, fail_fast)
        if builds <= 1:
            return stage.build_here(items, fail_fast=fail_fast, on_start=on_start, on_done=on_done)
        return _Batch(stage, items, builds, on_start, on_done).run()


class _Child:
    """One build process, seen from here."""

    def __init__(self, settings: StageSettings) -> None:
        from trtforge.backend.pool import start_module

        try:
            # a terminal's Ctrl-C is ours to pass on (see _Batch.settle)
            self.proc = start_module(MODULE, new_session=True)
        except OSError as exc:
            raise BuildError(f"cannot start a build process ({sys.executable}): {exc.strerror}") from None
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.to_child = self.proc.stdin.fileno()
        self.from_child = self.proc.stdout.fileno()
        self.index: int | None = None  # the recipe it works on; None: idle
        self.served = 0  # recipes it reported
        try:
            send(self.to_child, ("setup", settings))
        except BrokenPipeError:
            pass  # it died at once: its first recipe's result says how

    def give(self, index: int, item: Item) -> bool:
        """Hand it a recipe; False if it is gone (it died while idle)."""
        self.index = index
        try:
            send(self.to_child, ("recipe", index, item))
        except BrokenPipeError:
            return False
        return True

    def signal(self, signum: int) -> None:
        try:
            os.kill(self.proc.pid, signum)
        except ProcessLookupError:
            pass

    def reap(self) -> int:
        """Wait for it to end; its wait status."""
        _, status = os.waitpid(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self._close_pipes()
        return status

    def close(self, wait: float) -> None:
        """It ends once its stdin closes (saving its caches); killed if it takes longer than ``wait``."""
        if self.proc.returncode is not None:
            return
        try:
            self.proc.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        try:
            self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                try:
                    stream.close()
                except OSError:
                    pass  # a write buffered for a child that is gone


class _Batch:
    """One ``build_all`` over build processes: results in recipe order, each heard once by ``on_done``."""

    def __init__(
        self,
        stage: BuildStage,
        items: list[Item],
        processes: int,
        on_start: Callable[[str], None] | None,
        on_done: Callable[[BuildResult], None] | None,
    ) -> None:
        self.stage, self.items, self.processes = stage, items, processes
        self.on_start, self.on_done = on_start, on_done
        self.settings = StageSettings.of(stage)
        self.results: list[list[BuildResult] | None] = [None] * len(items)
        self.heard = [False] * len(items)
        self.waiting = deque(range(len(items)))
        self.misses: set[int] = set()  # waiting recipes known not to be hits here
        self.children: list[_Child] = []
        self.stopped: Interrupted | None = None  # the signal that stopped the batch

    def run(self) -> list[BuildResult]:
        try:
            while self.waiting or self._busy():
                self._hand_out()
                if self._busy():
                    self._take_messages(None)
            self._close_all(CLOSE_WAIT_S)  # they save their caches; a signal meanwhile keeps every result
        except Interrupted as stop:  # SIGINT/SIGTERM: pass it on, keep what the children recorded
            raise BatchInterrupted(stop.signum, self.settle(stop)) from None
        except BaseException:  # a bug: stop the children instead of waiting them out
            for child in self.children:
                child.signal(signal.SIGKILL)
            raise
        finally:
            self._close_all(UNWIND_WAIT_S)  # after a stop or a bug: what is left, at once
        return [result for batch in self.results if batch is not None for result in batch]

    # -- handing out recipes ---------------------------------------------------------------------

    def _hand_out(self) -> None:
        """Answer what can be answered here, in order; give each miss to a free child (started as needed)."""
        while self.waiting:
            index = self.waiting[0]
            if index not in self.misses and self._answered_here(index):
                self.waiting.popleft()
                continue
            self.misses.add(index)
            if not self._give(index):
                return

    def _give(self, index: int) -> bool:
        """Give the first waiting recipe to a free child; False when none is free (it waits)."""
        try:
            child = self._free_child()
        except TrtforgeError as exc:  # no process could be started: this recipe's failure
            self.waiting.popleft()
            self._finish(index, [failed_with(BuildResult(str(self.items[index]), None, "failed"), exc)])
            return True
        if child is None:
            return False
        self.waiting.popleft()
        if not child.give(index, self.items[index]):
            self._gone_before(child, index)
        return True

    def _gone_before(self, child: _Child, index: int) -> None:
        """A child found dead as it was given a recipe: one that died idle, between two recipes, is
        replaced and the recipe waits for a fresh one; one that never worked is that recipe's crash."""
        if not child.served:
            self._lost(child)
            return
        child.index = None
        self._forget(child)
        self.waiting.appendleft(index)

    def _answered_here(self, index: int) -> bool:
        item = self.items[index]
        if isinstance(item, UnmatchedPattern):
            self._finish(index, [unmatched(item, BuildResult(item.pattern, None, "failed"))])
            return True
        hit = self.stage.remembered_hit(item)
        if hit is None:
            return False
        self._finish(index, [hit])
        return True

    def _free_child(self) -> _Child | None:
        for child in self.children:
            if child.index is None:
                return child
        if len(self.children) >= self.processes:
            return None
        with _held_signals():  # the child starts with them blocked; one arriving meanwhile is raised after
            child = _Child(self.settings)
            self.children.append(child)
        return child

    def _busy(self) -> list[_Child]:
        return [child for child in self.children if child.index is not None]

    # -- what the children say ------------------------------------------------------------------

    def _take_messages(self, timeout: float | None) -> bool:
        """Handle the messages of the busy children that have one (waiting up to ``timeout``; None:
        until one does). False when none came in time."""
        import select

        poller = select.poll()
        by_fd = {child.from_child: child for child in self._busy()}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        ready = poller.poll(None if timeout is None else max(0, int(timeout * 1000)))
        for fd, _ in ready:
            self._handle(by_fd[fd])
        return bool(ready)

    def _handle(self, child: _Child) -> None:
        message = receive(child.from_child)
        if message is None:
            self._lost(child)
            return
        kind = message[0]
        if kind == "started":
            if self.on_start is not None:
                self.on_start(message[2])
        elif kind == "note":
            self.stage.notify(message[1])
        else:  # "done" (after a stop, with the results as they stood; it exits then)
            _, index, results, notes = message
            self.stage.note(notes)
            child.index = None
            child.served += 1
            self._finish(index, results)

    def _lost(self, child: _Child) -> None:
        """A child that died: its recipe's result says how (it recorded nothing it did not report).
        One that the stop's signal ended before it could handle it (still starting) was interrupted."""
        status = child.reap()
        self._forget(child)
        if child.index is None:
            return
        item = self.items[child.index]
        if self.stopped is not None:
            self._finish(child.index, [interrupted_result(item, self.stopped)])
            return
        result = BuildResult(str(item), None, "failed")
        self._finish(child.index, [failed_with(result, _died(child.proc.pid, status))])

    def _forget(self, child: _Child) -> None:
        if child.proc.returncode is None:
            child.reap()
        self.children.remove(child)

    def _finish(self, index: int, results: list[BuildResult]) -> None:
        self.results[index] = results
        self._hear(index)

    def _hear(self, index: int) -> None:
        if self.heard[index]:
            return
        self.heard[index] = True
        if self.on_done is not None:
            for result in self.results[index] or []:
                self.on_done(result)

    # -- stopping --------------------------------------------------------------------------------

    def settle(self, stop: Interrupted) -> list[BuildResult]:
        """Every recipe's result after a stop: the busy children get the same signal and report what
        they got to (waited for up to STOP_WAIT_S, then killed: ``interrupted``); recipes not handed out
        are ``interrupted``. Recipes not heard yet are heard now, so each is heard once."""
        self.stopped = stop
        self.stage.stop(f"interrupted by {stop.name}")
        for child in self._busy():
            child.signal(stop.signum)
        deadline = time.monotonic() + STOP_WAIT_S + REPLY_MARGIN_S
        while self._busy() and self._take_messages(deadline - time.monotonic()):
            pass
        for child in self._busy():
            child.signal(signal.SIGKILL)
            child.reap()
            self._forget(child)
        settled: list[BuildResult] = []
        for index, item in enumerate(self.items):
            if self.results[index] is None:
                self.results[index] = [interrupted_result(item, stop)]
            self._hear(index)
            settled.extend(self.results[index] or [])
        return settled

    def _close_all(self, wait: float) -> None:
        """End every child: their stdin closes, they save their caches (or, stopped, finish unwinding)
        and exit, all at once; those still running ``wait`` seconds later are killed."""
        for child in self.children:
            if child.proc.returncode is None and child.proc.stdin is not None:
                try:
                    child.proc.stdin.close()
                except OSError:
                    pass
        deadline = time.monotonic() + wait
        while self.children:
            self.children[0].close(max(0.0, deadline - time.monotonic()))
            self.children.pop(0)


@contextmanager
def _held_signals() -> Iterator[None]:
    """SIGINT and SIGTERM blocked on this thread for the block (a child started in it inherits the
    mask: a stop passed on while it starts waits for its handlers instead of killing it with a
    traceback), delivered when it ends."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _died(pid: int, status: int) -> WorkerCrashedError:
    from trtforge.backend.pool import how_it_ended, signal_name

    what, signum, code = how_it_ended(status)
    return WorkerCrashedError(
        f"the build process (pid {pid}) {what} while it worked on this recipe",
        hint="the other recipes went on; build this one again (`dmesg` says whether memory ran out)",
        detail={"signal": signal_name(signum) if signum is not None else None, "exit_code": code, "log_tail": []},
    )


# -- the child --------------------------------------------------------------------------------------


class _Reports:
    """What this child tells the parent, from its main thread and its stopper thread: one ``done``
    per recipe, whichever thread gets there first."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        self.current: tuple[int, Item] | None = None  # handed to us, not yet reported
        self.parent_gone = False  # a send found the parent's end closed: it was killed

    def send(self, message: tuple[Any, ...]) -> None:
        with self.lock:
            self._send(message)

    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            send(self.fd, message)
        except OSError:  # EPIPE: nobody is left to tell (the reader thread stops the recipe under way)
            self.parent_gone = True

    def begin(self, index: int, item: Item) -> None:
        with self.lock:
            self.current = (index, item)

    def done(self, results: Callable[[Item], list[BuildResult]], notes: list[str], index: int | None = None) -> None:
        """Report the recipe under way (``index``: only if it is that one): ``results(item)``,
        unless it was reported already."""
        with self.lock:
            if self.current is None or index not in (None, self.current[0]):
                return
            (index, item), self.current = self.current, None
            self._send(("done", index, results(item), notes))


class _Stopper:
    """How a child stops: SIGINT or SIGTERM (passed on by the parent) never raises here. The handler
    only writes the signal's number to a pipe; a thread then stops the stage as a stop stops threads
    (BuildStage.stop: its build worker killed, lock waits ended, nothing more started; close_gate:
    a commit under way finishes, none starts), reports the recipe under way as it stands (recorded
    or ``interrupted``) at once, and lets the main thread unwind (its temp folder removed) and exit.
    So no signal lands inside an import, a frame or a commit, and the parent hears at once."""

    def __init__(self, messages: queue.Queue[Any], reports: _Reports) -> None:
        self.messages, self.reports = messages, reports
        self.signum: int | None = None
        self._stage: BuildStage | None = None
        self._lock = threading.Lock()
        self._read, self._write = os.pipe()
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._heard)
        threading.Thread(target=self._wait, name="trtforge-stage-stopper", daemon=True).start()

    def _heard(self, signum: int, _frame: Any) -> None:
        os.write(self._write, bytes([signum]))

    def _wait(self) -> None:
        signum = os.read(self._read, 1)[0]
        with self._lock:
            self.signum = signum
            stage = self._stage
        if stage is not None:
            self._stop(stage)
        self.messages.put(None)  # an idle child ends

    def watch(self, stage: BuildStage) -> None:
        with self._lock:
            self._stage = stage
            stopped = self.signum is not None
        if stopped:
            self._stop(stage)

    def _stop(self, stage: BuildStage) -> None:
        assert self.signum is not None
        stop = Interrupted(self.signum)
        stage.stop(f"interrupted by {stop.name}")
        stage.close_gate()
        self.reports.done(lambda item: stage.unfinished(item, stop), list(stage.notes))


def _messages(fd: int, reports: _Reports) -> queue.Queue[Any]:
    """The parent's messages, read on a helper thread. Its end closing (the batch is over, or the
    parent died) puts None; a recipe under way then is stopped as a signal stops it."""
    import queue

    messages: queue.Queue[Any] = queue.Queue()

    def read() -> None:
        while True:
            message = receive(fd)
            messages.put(message)
            if message is None:
                if reports.current is not None:  # a recipe under way, not reported
                    os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=read, name="trtforge-stage-messages", daemon=True).start()
    return messages


def send(fd: int, message: tuple[Any, ...]) -> None:
    """The build worker's framing (imported when a batch starts processes: a cache hit never does)."""
    from trtforge.backend.worker import send as send_frame

    send_frame(fd, message)


def receive(fd: int) -> Any:
    from trtforge.backend.worker import receive as receive_frame

    return receive_frame(fd)


def _set_process_name() -> None:
    try:
        with open("/proc/self/comm", "wb") as handle:
            handle.write(PROCESS_NAME)
    except OSError:
        pass  # not Linux: the command line names it


def main() -> None:
    """The child's loop: one recipe at a time through its own build stage, until stdin closes or a
    stop (see :class:`_Stopper`). It starts with SIGINT and SIGTERM blocked (``_held_signals``), so
    a stop sent while it starts waits for its handler."""
    to_parent = os.dup(1)
    from_parent = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)  # anything printed goes to stderr, not the protocol
    _set_process_name()
    reports = _Reports(to_parent)
    messages = _messages(from_parent, reports)
    stopper = _Stopper(messages, reports)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    setup = messages.get()
    if setup is None:
        return
    stage = _stage(setup[1], reports)
    stopper.watch(stage)
    while (message := messages.get()) is not None:
        _, index, item = message
        reports.begin(index, item)
        if stopper.signum is None:
            results = stage.build_all([item], on_start=_starting(reports, index))
            reports.done(lambda _item, results=results: results, list(stage.notes), index)
        else:  # stopped before it began: nothing of it was done
            reports.done(lambda item: [interrupted_result(item, Interrupted(stopper.signum or 0))], [], index)
        if stopper.signum is not None or reports.parent_gone:
            os._exit(0)  # reported, and unwound (its temp folder removed): the parent does not wait for caches
    stage.close()


def _starting(reports: _Reports, index: int) -> Callable[[str], None]:
    return lambda name: reports.send(("started", index, name))


def _stage(settings: StageSettings, reports: _Reports) -> BuildStage:
    return BuildStage(
        settings.store,
        catalog=settings.catalog,
        force=settings.force,
        name=settings.name,
        jobs=1,
        timeout=settings.timeout,
        targets=settings.targets,
        notify=lambda text: reports.send(("note", text)),
    )


if __name__ == "__main__":
    main()
