"""The build worker: a process that builds engines one job at a time, so that TensorRT's crashes are its own.

TensorRT is native code: on some models and GPUs it aborts the whole process ("terminate called
without an active exception"), segfaults, or is killed by the OOM killer. Builds therefore run here,
in a process started by :mod:`trtforge.backend.pool` (``python -m trtforge.backend.worker``) and
reused for build after build; the parent keeps the store, the locks and the catalog, and turns a
dead worker into one failed result.

Protocol: frames (an 8-byte big-endian length, then the bytes) on the worker's stdin and stdout,
each message a pickled tuple. Parent to worker: ``("build", BuildJob)``. Worker to parent:
``("ready", pid, peak_reset)`` once; per job ``("started", cpu_seconds)``, any number of
``("progress", method, args)``, then ``("built", BuildOutput without its plan, cpu, peak)`` followed
by one raw frame holding the plan, or ``("failed", TrtforgeError, cpu, peak)``, or
``("error", text, cpu, peak)`` for anything else raised (a bug, reported as a crash of that build).

Everything the worker writes to file descriptors 1 and 2 (TensorRT's log lines, echoed by the
builder's logger; native code writing to stderr; faulthandler's report of a fatal signal) goes to
the log file the parent gave it as stderr: on a crash the parent reports its last lines. When the
parent goes away (its end of stdin closes), the worker exits at once, mid-build or not.
"""

from __future__ import annotations

import faulthandler
import os
import pickle
import queue
import signal
import struct
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.core.crashpoints import wrap_progress
from trtforge.core.errors import TrtforgeError
from trtforge.core.resources import cpu_seconds, reset_peak_rss, status_bytes

if TYPE_CHECKING:
    from trtforge.rules.builder_options import NamedFile
    from trtforge.rules.flavors import BackendInfo
    from trtforge.rules.recipe import Recipe

FRAME = struct.Struct(">Q")
PROCESS_NAME = b"trtforge-worker"  # /proc/<pid>/comm: what `ps -o comm`, `top` and `pgrep` show
WORKER_MODULE = "trtforge.backend.worker"


@dataclass
class BuildJob:
    """One engine build, as the worker receives it (everything in it pickles)."""

    backend: BackendInfo
    recipe: Recipe
    onnx_path: Path
    use_timing_cache: bool = False
    timing_cache: bytes | None = None
    progress: bool = False  # relay TensorRT's progress phases to the parent
    files: tuple[NamedFile, ...] = ()  # plugin libraries and calibration caches the key holds
    shown: Path | None = None  # the user's model, when onnx_path is the build's private copy
    layerwise: bool = False  # `verify --per-layer`'s diagnostic: this build with every tensor an output


def write_frame(fd: int, payload: bytes | memoryview) -> None:
    """One frame: the length, then every byte of ``payload`` (looping over short writes)."""
    view = memoryview(payload).cast("B")
    _write_all(fd, FRAME.pack(len(view)))
    _write_all(fd, view)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[: 1 << 24]) :]


def send(fd: int, message: tuple[Any, ...]) -> None:
    write_frame(fd, pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def read_exact(fd: int, size: int) -> bytearray | None:
    """``size`` bytes read straight into one buffer, or None at end of file."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        count = os.readv(fd, [view[got:]])
        if count == 0:
            return None
        got += count
    return buffer


def read_frame(fd: int) -> bytearray | None:
    """One frame's bytes, or None at end of file (the other side closed or died)."""
    header = read_exact(fd, FRAME.size)
    return None if header is None else read_exact(fd, FRAME.unpack(header)[0])


def receive(fd: int) -> Any:
    """The next message, or None at end of file. Both ends are trtforge: the parent and the
    worker it started, over pipes no one else holds."""
    frame = read_frame(fd)
    return None if frame is None else pickle.loads(frame)  # noqa: S301 - our own process's pipe


class _Relay:
    """A ProgressSink in the worker: each of TensorRT's progress callbacks becomes a message."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def phase_start(self, name: str, parent: str | None, steps: int) -> None:
        send(self.fd, ("progress", "phase_start", (name, parent, steps)))

    def step(self, name: str, step: int) -> None:
        send(self.fd, ("progress", "step", (name, step)))

    def phase_finish(self, name: str) -> None:
        send(self.fd, ("progress", "phase_finish", (name,)))


def echo_log(level: str, message: str) -> None:
    """A TensorRT log line, written to stderr (the worker's log file) as it happens."""
    os.write(2, f"[TensorRT {level}] {message}\n".encode("utf-8", "replace"))


def run_job(job: BuildJob, out: int, peak_reset: bool) -> None:
    """Build one job and send its outcome (the plan in a raw frame after the ``built`` message)."""
    if peak_reset:
        reset_peak_rss()  # before "started": the parent's samples from then on are this build's
    send(out, ("started", cpu_seconds()))
    from trtforge.backend.build import build_plan  # the heavy import: TensorRT, once per worker

    progress = wrap_progress(_Relay(out) if job.progress else None)
    try:
        output = build_plan(
            job.backend,
            job.recipe,
            job.onnx_path,
            progress,
            use_timing_cache=job.use_timing_cache,
            timing_cache=job.timing_cache,
            files=job.files,
            shown=job.shown,
            log_echo=echo_log,
            layerwise=job.layerwise,
        )
    except TrtforgeError as exc:
        send(out, ("failed", exc, cpu_seconds(), _peak(peak_reset)))
        return
    except Exception as exc:  # a bug, or an unexpected exception from TensorRT's bindings: this build's crash
        text = "".join(traceback.format_exception(exc)).rstrip()
        sys.stderr.write(text + "\n")
        sys.stderr.flush()  # in the log before the parent reads it
        send(out, ("error", f"{type(exc).__name__}: {exc}", cpu_seconds(), _peak(peak_reset)))
        return
    plan = output.plan_view
    output.plan = b""
    send(out, ("built", output, cpu_seconds(), _peak(peak_reset)))
    write_frame(out, plan)


def _peak(peak_reset: bool) -> int | None:
    """This build's peak (high-water mark reset at its start), else the size now: one more sample
    for the parent, which samples a build only once it runs past its sampling interval."""
    return status_bytes("self", "VmHWM" if peak_reset else "VmRSS")


def _jobs(fd: int) -> queue.Queue[BuildJob]:
    """Jobs read from the parent on a helper thread; the parent's end closing ends this process."""
    jobs: queue.Queue[BuildJob] = queue.Queue()

    def read() -> None:
        while True:
            message = receive(fd)
            if message is None:
                os._exit(0)  # the parent closed us or died: stop now, whatever is running
            kind, job = message
            if kind == "build":
                jobs.put(job)

    threading.Thread(target=read, name="trtforge-worker-jobs", daemon=True).start()
    return jobs


def _set_process_name() -> None:
    try:
        with open("/proc/self/comm", "wb") as handle:
            handle.write(PROCESS_NAME)
    except OSError:
        pass  # not Linux: the command line (python -m trtforge.backend.worker) still says it


def main() -> None:
    """The worker's loop: take the protocol descriptors, point stdout at the log, build jobs."""
    inp, out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)  # anything printed (by TensorRT, by a library) goes to the log, not the protocol
    faulthandler.enable(file=sys.stderr, all_threads=False)  # a fatal signal writes where the parent looks
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops us
    _set_process_name()
    peak_reset = reset_peak_rss()
    jobs = _jobs(inp)
    send(out, ("ready", os.getpid(), peak_reset))
    while True:
        run_job(jobs.get(), out, peak_reset)


if __name__ == "__main__":
    main()
