"""Build workers seen from the parent: start them, feed them jobs, outlive their crashes.

A :class:`BuildWorker` is one ``python -m trtforge.backend.worker`` process (see
:mod:`trtforge.backend.worker` for the protocol), started on first use and reused for job after
job, so its start-up (the interpreter, TensorRT's import) is paid once. Its ``build`` returns a
:class:`JobResult`: the build's output, or the error it ended with, and its cost either way. A
worker that dies (abort, segfault, a signal, the OOM killer) becomes a ``WorkerCrashedError``
naming the signal and quoting its last log lines; one that outlives its timeout is killed and
becomes a ``BuildTimeoutError``; the next job starts a fresh process.

A :class:`WorkerPool` holds up to ``size`` workers for builds running on several threads at once;
:func:`build_once` runs a single job in a worker of its own (for callers with no pool, e.g. a task
on a cluster). ``terminate`` (from any thread) kills the workers at once: the builds waiting on them
return promptly; ``stop`` (Ctrl-C) also refuses every build not yet under way. Nothing here touches
the store: the parent writes the plan it receives.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.backend.worker import WORKER_MODULE, BuildJob, read_frame, receive, send
from trtforge.core.errors import (
    BuildError,
    BuildInterruptedError,
    BuildTimeoutError,
    TrtforgeError,
    WorkerCrashedError,
)
from trtforge.core.resources import BuildCost, CostMeter

if TYPE_CHECKING:
    from trtforge.backend.build import BuildOutput, ProgressSink

STARTUP_LIMIT_S = 300.0  # a worker that has not said "ready" by then is reported as crashed
# How often a running build's peak memory is sampled (for a build that dies: a finished one
# reports its own). Each sample is a /proc read on a thread holding the GIL, so not too often.
SAMPLE_INTERVAL_S = 0.2
LOG_TAIL_LINES = 30
LOG_TAIL_BYTES = 64 << 10
_TIMED_OUT = object()


@dataclass
class JobResult:
    """What became of one job: the output or the error, and the build's cost either way."""

    cost: BuildCost
    output: BuildOutput | None = None
    error: TrtforgeError | None = None

    def unwrap(self) -> BuildOutput:
        """The output; raises the build's error (BuildError, WorkerCrashedError, BuildTimeoutError)."""
        if self.error is not None:
            raise self.error
        assert self.output is not None
        return self.output


def worker_env() -> dict[str, str]:
    """This environment, with this trtforge first on the worker's path (the same code both sides)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the folder holding this trtforge package
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def start_module(module: str, *, stderr: int | None = None, new_session: bool = False) -> subprocess.Popen[bytes]:
    """``python -m module`` as a child speaking frames on its stdin and stdout (``worker.send`` and
    ``receive``), with this trtforge first on its path; ``new_session``: a terminal's Ctrl-C reaches
    the caller alone, which decides what to pass on."""
    return subprocess.Popen(
        [sys.executable, "-m", module],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=worker_env(),
        close_fds=True,
        start_new_session=new_session,
    )


class BuildWorker:
    """One worker process; ``build`` may be called from one thread at a time, ``terminate`` from any."""

    def __init__(self) -> None:
        self._log = _anonymous_log()  # the worker's stderr: a file with no name, so nothing is left behind
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()  # guards _proc against reaping while terminate() signals it
        self._stopped: str | None = None  # why terminate() killed the worker, until the next start
        self._halted: str | None = None  # why halt() stopped this worker for good: it builds nothing more
        self.peak_reset = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def build(
        self,
        job: BuildJob,
        *,
        timeout: float | None = None,
        progress: ProgressSink | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> JobResult:
        """Run ``job`` here; ``timeout`` (seconds of building, start-up excluded) kills it when exceeded.

        ``on_start`` hears the worker's pid as the job is handed over. Anything raised here while the
        job runs (Ctrl-C, a failing callback) kills the worker first: it is never left mid-job.
        """
        try:
            if self._halted is not None:
                return not_started(self._halted)
            try:
                self._ensure_started()
            except WorkerCrashedError as exc:  # it died before it was ready: this job's failure
                return JobResult(BuildCost(0.0, 0.0, None), error=exc)
            return self._run(job, timeout, progress, on_start)
        except BaseException:
            if self.running:
                self._reap(kill=True)
            raise

    def _run(
        self,
        job: BuildJob,
        timeout: float | None,
        progress: ProgressSink | None,
        on_start: Callable[[int], None] | None,
    ) -> JobResult:
        assert self._proc is not None and self._proc.stdin is not None
        self._clear_log()
        meter = CostMeter(self._proc.pid, peak_reset=self.peak_reset)
        try:
            send(self._proc.stdin.fileno(), ("build", job))
        except BrokenPipeError:
            return self._died(meter, job)  # it died while idle, between our check and the send
        if on_start is not None:
            on_start(self._proc.pid)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            message = self._next(meter, deadline)
            if message is _TIMED_OUT:
                return self._timed_out(meter, timeout or 0.0)
            if message is None:
                return self._died(meter, job)
            kind = message[0]
            if kind == "started":
                meter.cpu_at_start = message[1]
            elif kind == "progress":
                if progress is not None:
                    getattr(progress, message[1])(*message[2])
            else:
                return self._finished(meter, job, message)

    def _finished(self, meter: CostMeter, job: BuildJob, message: tuple[Any, ...]) -> JobResult:
        kind, payload, cpu, peak = message
        cost = meter.finished(cpu - (meter.cpu_at_start or 0.0), peak)
        if kind == "failed":
            return JobResult(cost, error=payload)
        if kind == "error":
            error = WorkerCrashedError(
                f"the build worker raised {payload} while {job.backend.label} built the engine",
                hint="this is a bug in trtforge or TensorRT's Python bindings; the traceback is in error_detail",
                detail={"signal": None, "exit_code": None, "log_tail": self._log_tail()},
            )
            return JobResult(cost, error=error)
        assert self._proc is not None and self._proc.stdout is not None
        plan = read_frame(self._proc.stdout.fileno())
        if plan is None:
            return self._died(meter, job)
        payload.plan = plan
        return JobResult(cost, output=payload)

    def _next(self, meter: CostMeter, deadline: float | None) -> Any:
        """The next message; None when the worker's stdout closed (it died); _TIMED_OUT past the deadline."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while True:
            if self._halted is not None:  # halted while it was starting: kill it, read its end
                self.terminate(self._halted)
            now = time.monotonic()
            if now - meter.sampled_at >= SAMPLE_INTERVAL_S:  # not per message: a short build is never sampled
                meter.sample()
                meter.sampled_at = now
            wait = SAMPLE_INTERVAL_S if deadline is None else min(SAMPLE_INTERVAL_S, deadline - now)
            if wait <= 0:
                return _TIMED_OUT
            if _readable(fd, wait):
                return receive(fd)

    def _timed_out(self, meter: CostMeter, timeout: float) -> JobResult:
        meter.sample()
        _, rusage = self._reap(kill=True)
        error = BuildTimeoutError(
            f"the build ran longer than its timeout ({timeout:g} s) and was stopped",
            detail={"timeout_seconds": timeout, "log_tail": self._log_tail()},
        )
        return JobResult(meter.died(rusage), error=error)

    def _died(self, meter: CostMeter, job: BuildJob) -> JobResult:
        status, rusage = self._reap(kill=True)  # it closed its stdout: it is exiting (or make it)
        stopped, self._stopped = self._stopped, None
        error = crash_error(status, self._log_tail(), f"while {job.backend.label} built the engine", stopped)
        return JobResult(meter.died(rusage), error=error)

    def _reap(self, *, kill: bool) -> tuple[int, Any]:
        """Wait for the worker to end (SIGKILL first with ``kill``): its wait status and rusage."""
        with self._lock:
            proc = self._proc
            assert proc is not None
            if kill:
                _kill(proc.pid)  # a no-op on a process that already died (it is a zombie until reaped)
            _, status, rusage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        self._close_pipes(proc)
        return status, rusage

    def _ensure_started(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with self._lock:
                pid, status = os.waitpid(self._proc.pid, os.WNOHANG)
                if pid == 0:
                    return  # alive and idle
                self._proc.returncode = os.waitstatus_to_exitcode(status)  # died while idle
            self._close_pipes(self._proc)
        self._start()

    def _start(self) -> None:
        self._stopped = None
        self._clear_log()
        try:
            proc = start_module(WORKER_MODULE, stderr=self._log)
        except OSError as exc:
            raise BuildError(f"cannot start a build worker ({sys.executable}): {exc.strerror}") from None
        with self._lock:
            self._proc = proc
        self._await_ready()

    def _await_ready(self) -> None:
        """Wait for the worker's "ready" (a halt stops the wait: the worker is killed, not waited for)."""
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + STARTUP_LIMIT_S
        ready = False
        while not ready and self._halted is None and time.monotonic() < deadline:
            ready = _readable(self._proc.stdout.fileno(), SAMPLE_INTERVAL_S)
        message = receive(self._proc.stdout.fileno()) if ready and self._halted is None else None
        if message is not None and message[0] == "ready":
            self.peak_reset = message[2]
            return
        status, _ = self._reap(kill=True)
        raise crash_error(status, self._log_tail(), "before it was ready to build", self._halted)

    def terminate(self, reason: str = "stopped by trtforge") -> None:
        """Kill the worker now (any thread); a build running in it returns a WorkerCrashedError naming ``reason``."""
        with self._lock:
            if self._proc is not None and self._proc.returncode is None:
                self._stopped = reason
                _kill(self._proc.pid)

    def halt(self, reason: str) -> None:
        """Kill the worker now and build nothing more (any thread): a build starting right now is
        stopped as soon as its worker is up, a later one is refused (``not_started``)."""
        self._halted = reason
        self.terminate(reason)

    def close(self) -> None:
        """Stop the worker: its stdin closes (it exits at once), then SIGKILL if it lingers."""
        proc = self._proc
        if self._log >= 0:
            os.close(self._log)
            self._log = -1
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            try:
                proc.stdin.close()  # the worker's reader sees the end and exits
            except OSError:
                pass  # it is gone already
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._reap(kill=True)
        self._close_pipes(proc)

    @staticmethod
    def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
        for stream in (proc.stdin, proc.stdout):
            if stream is not None and not stream.closed:
                try:
                    stream.close()
                except OSError:
                    pass  # a write buffered for a dead reader

    def _clear_log(self) -> None:
        os.ftruncate(self._log, 0)  # the worker appends: its next lines start the file again

    def _log_tail(self) -> list[str]:
        """The last lines the worker wrote to its log during this job (TensorRT's and native code's)."""
        size = os.fstat(self._log).st_size
        start = max(0, size - LOG_TAIL_BYTES)
        text = os.pread(self._log, size - start, start).decode("utf-8", "replace")
        return [line.rstrip() for line in text.splitlines() if line.strip()][-LOG_TAIL_LINES:]


def not_started(reason: str) -> JobResult:
    """The result of a build refused because its pool was stopped (``reason``: why)."""
    return JobResult(BuildCost(0.0, 0.0, None), error=BuildInterruptedError(f"the build was not started: {reason}"))


def _anonymous_log() -> int:
    """A temp file opened for appending and unlinked at once: the worker writes to it, this process
    reads its tail, and it goes away with the last descriptor (a killed `trtforge` leaves none)."""
    fd, path = tempfile.mkstemp(prefix="trtforge-worker-", suffix=".log")
    try:
        os.unlink(path)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
    except OSError:
        os.close(fd)
        raise
    return fd


def _readable(fd: int, seconds: float) -> bool:
    """Whether ``fd`` has data (or its end: the writer closed or died) within ``seconds``."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, int(seconds * 1000))))


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def how_it_ended(status: int) -> tuple[str, int | None, int | None]:
    """A dead process's wait status in words ("was killed by SIGSEGV (Segmentation fault)"; an
    unexplained SIGKILL is usually the OOM killer), its signal and its exit code."""
    signum = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    if signum == signal.SIGKILL:
        return "was killed by SIGKILL (the out-of-memory killer, or another process)", signum, code
    if signum is not None:
        return f"was killed by {signal_name(signum)} ({signal.strsignal(signum) or 'signal'})", signum, code
    return f"exited with code {code}", signum, code


def crash_error(status: int, tail: list[str], doing: str, stopped: str | None) -> WorkerCrashedError:
    """A dead worker's wait status and last log lines -> one line naming the signal (and what it was
    ``doing``), a hint, the detail."""
    what, signum, code = how_it_ended(status)
    if stopped is not None:
        what = f"was stopped ({stopped})"
    said = [line for line in tail if line.startswith("[TensorRT ")]
    last = f"; TensorRT's last message: {said[-1][:240]}" if said else ""
    if stopped is not None:
        hint = None
    elif signum == signal.SIGKILL:
        hint = "`dmesg` says whether the out-of-memory killer sent it (then use fewer --jobs); the others went on"
    else:
        hint = "TensorRT crashed in native code; the other recipes went on. `--json` has the worker's last lines"
    detail = {"signal": signal_name(signum) if signum is not None else None, "exit_code": code, "log_tail": tail}
    message = f"the build worker {what} {doing}{last}"
    return WorkerCrashedError(message, hint=hint, detail=detail)


class WorkerPool:
    """Up to ``size`` workers, each started when a build first needs it; builds may come from several threads."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._idle: list[BuildWorker] = []
        self._all: list[BuildWorker] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.size)
        self._stopped: str | None = None  # why stop() ended the pool: no build starts after it

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _worker(self) -> Iterator[BuildWorker | None]:
        """An idle worker (started on first use); None once the pool is stopped, also while waiting."""
        while not self._slots.acquire(timeout=SAMPLE_INTERVAL_S * 2):
            if self._stopped is not None:
                yield None
                return
        try:
            with self._lock:
                if self._stopped is not None:
                    worker = None
                elif self._idle:
                    worker = self._idle.pop()
                else:
                    worker = BuildWorker()
                    self._all.append(worker)
            try:
                yield worker
            finally:
                if worker is not None:
                    with self._lock:
                        self._idle.append(worker)
        finally:
            self._slots.release()

    def build(
        self,
        job: BuildJob,
        *,
        timeout: float | None = None,
        progress: ProgressSink | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> JobResult:
        """Run ``job`` in an idle worker (waiting for one when ``size`` builds are running); after
        ``stop``, a refusal (BuildInterruptedError) at once."""
        with self._worker() as worker:
            if worker is None:
                return not_started(self._stopped or "stopped")
            return worker.build(job, timeout=timeout, progress=progress, on_start=on_start)

    def pids(self) -> list[int]:
        """The pids of the workers running now (idle or building)."""
        with self._lock:
            return [w.pid for w in self._all if w.running and w.pid is not None]

    def terminate(self, reason: str = "stopped by trtforge") -> None:
        """Kill every worker now (from any thread): running builds return at once, as stopped."""
        with self._lock:
            workers = list(self._all)
        for worker in workers:
            worker.terminate(reason)

    def stop(self, reason: str) -> None:
        """Kill every worker now and start no build after this (any thread; Ctrl-C): running builds
        and builds waiting for a worker return at once."""
        with self._lock:
            self._stopped = reason
            workers = list(self._all)
        for worker in workers:
            worker.halt(reason)

    def close(self) -> None:
        """Stop every worker (their logs go with them)."""
        with self._lock:
            workers, self._all, self._idle = list(self._all), [], []
        for worker in workers:
            worker.close()


def build_once(
    job: BuildJob,
    *,
    timeout: float | None = None,
    progress: ProgressSink | None = None,
) -> JobResult:
    """One build in a worker of its own, started and stopped around it (for callers with no pool)."""
    with WorkerPool(1) as pool:
        return pool.build(job, timeout=timeout, progress=progress)
