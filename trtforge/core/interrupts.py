"""SIGINT and SIGTERM stop a command promptly, and a second one never waits for anything.

The CLI calls :func:`stop_on_signals` once. The first SIGINT or SIGTERM raises :class:`Interrupted`
in the main thread: the command unwinds as from any exception (build workers are killed, locks
released, open transactions rolled back, temp files removed) and exits ``128 + signal`` (130, 143).
A second signal, a command still running :data:`HARD_STOP_S` after the first, or a signal after the
command printed its answer (:func:`answered`) ends the process at once (``os._exit``, the same exit
code and one ``error: interrupted by ...`` line): the kernel releases its file locks, PostgreSQL its
advisory locks and uncommitted rows, and what it was writing stays invisible (temp files and
uploads are left for the next writer, `fsck --repair` or the bucket's lifecycle rule).

SIGINT is handled even where it was ignored at start-up: a shell without job control starts
background commands (``trtforge build ... &`` in a CI script) with SIGINT ignored, and an explicit
``kill -INT`` must still stop them.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

HARD_STOP_S = 5.0  # after the first signal, the most a command may spend unwinding
THREADS_JOIN_S = 0.5  # after a stopped command's answer, the most its other threads are waited for, in all
HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A SIGINT or SIGTERM received by the command (a KeyboardInterrupt, so libraries that clean
    up on Ctrl-C, such as psycopg cancelling a running query, do so)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's convention for a command ended by a signal: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


def _hard_stop(signum: int, why: str) -> None:
    """End the process now, with the one line (written with os.write: never the buffered stream
    the main thread may be in the middle of, which would raise a reentrant-call error)."""
    try:
        os.write(2, f"error: interrupted by {signal.Signals(signum).name}{why}\n".encode())
    except OSError:
        pass
    os._exit(128 + signum)


class _Handler:
    def __init__(self) -> None:
        self.first: int | None = None
        self.holding = 0  # depth of deferred() blocks the main thread is in
        self.held: int | None = None  # a signal that arrived inside one, raised when it ends
        self.answered = False  # the command printed its answer: nothing is left to unwind

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        if self.answered:
            _hard_stop(signum, " after the command's answer was printed; stopped at once")
        if self.first is not None:
            _hard_stop(signum, " again while stopping; stopped at once")
        self.first = signum
        name = signal.Signals(signum).name
        watchdog = threading.Timer(
            HARD_STOP_S, _hard_stop, (signum, f": still stopping {HARD_STOP_S:g} s after {name}; stopped at once")
        )
        watchdog.daemon = True
        watchdog.start()
        if self.holding:
            self.held = signum
            return
        raise Interrupted(signum)


_handler: _Handler | None = None


def stop_on_signals() -> None:
    """Make SIGINT and SIGTERM raise :class:`Interrupted` in the main thread (the first one) and end
    the process at once (a second one). Call from the main thread, once per process."""
    global _handler
    if _handler is not None:
        return  # `python -m trtforge` installs them before importing the CLI, which asks again
    _handler = _Handler()
    for signum in HANDLED:
        signal.signal(signum, _handler)


def answered() -> None:
    """The command has printed its answer: a signal from now on ends the process at once (exit
    128 + signal), with nothing left to unwind that could make the answer lie."""
    if _handler is not None:
        _handler.answered = True


@contextmanager
def deferred() -> Iterator[None]:
    """A step a signal must not cut in two (a catalog commit and the result that reports it): a
    first signal that arrives inside is raised when the block ends. A second one still ends the
    process at once, as does the watchdog. Outside the CLI, or off the main thread (signals are
    handled on the main thread only), the block runs as it is."""
    handler = _handler
    if handler is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    handler.holding += 1
    try:
        yield
    finally:
        handler.holding -= 1
        if not handler.holding and handler.held is not None:
            held, handler.held = handler.held, None
            raise Interrupted(held)


def end_if_stopped() -> None:
    """A command a signal stopped has unwound and printed its answer: end the process now, with
    the signal's exit code, skipping the interpreter's teardown (freeing the modules and objects of
    the libraries a command imports takes more than a second on a loaded machine, which a prompt
    stop cannot spend). Threads still finishing a step (a temp file's removal) get a moment first;
    stdout and stderr are flushed. Nothing to do when no signal came."""
    if _handler is None or _handler.first is None:
        return
    deadline = time.monotonic() + THREADS_JOIN_S
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # closed, or a reader that went away: the exit code still says it
    os._exit(128 + _handler.first)
