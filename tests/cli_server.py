"""A fork server for the tests' `cli(...)` calls: `python -m trtforge ARGS`, without paying the imports each time.

Most of a short trtforge command's time on a small machine is importing SQLAlchemy, Typer, Click,
Pydantic and Rich (about 0.5 s of 0.7 s for `list`). One server per pytest worker imports those
third-party libraries once (never trtforge itself, never anything that starts threads, such as
numpy's BLAS or TensorRT); each call forks it, and the child runs ``python -m trtforge ARGS`` from
there: its own process, environment, working directory, stdout and stderr, exit code and signals,
with trtforge imported fresh. The test side falls back to a plain subprocess where the fork could
differ from a fresh interpreter: another PYTHONPATH or any PYTHON*/locale variable, or a second
call while one is in flight (threads in a test).

Protocol (one JSON object per line): the test writes {args, env, cwd, stdout, stderr}; the server
answers {"pid": N} when the child has started and {"status": S} (``os.waitstatus_to_exitcode``)
when it has ended.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

PRELOAD = (
    "sqlalchemy",
    "sqlalchemy.orm",
    "sqlalchemy.dialects.sqlite",
    "typer",
    "typer._adapters",
    "click",
    "pydantic",
    "rich.console",
    "rich.table",
    "yaml",
    "importlib.metadata",
)
# Variables Python reads at start-up (stdio encoding, paths, flags): a child forked from a server
# started with other values would not be what `python -m trtforge` with them is.
STARTUP_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONIOENCODING", "PYTHONUTF8", "LANG", "LC_ALL", "LC_CTYPE")


def _child(request: dict[str, Any]) -> None:
    """In the forked child: become `python -m trtforge ARGS` and never return to the server loop."""
    stdin = os.open(os.devnull, os.O_RDONLY)
    stdout = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    stderr = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.path[0] = request["cwd"]  # as `python -m` puts the working directory first
    sys.argv = [str(Path(__import__("trtforge").__file__).with_name("__main__.py")), *request["args"]]
    code = 0
    try:
        runpy.run_module("trtforge", run_name="__main__", alter_sys=True)
    except SystemExit as stop:  # what the interpreter does with it at exit
        if isinstance(stop.code, int) or stop.code is None:
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:  # an uncaught exception: its traceback, exit 1
        traceback.print_exc()
        code = 1
    # Interpreter shutdown without tearing down every module (most of the time of a short
    # command's exit): wait for non-daemon threads, run atexit handlers, flush, leave.
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def serve() -> None:
    for name in PRELOAD:
        __import__(name)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"status": os.waitstatus_to_exitcode(status)}), flush=True)


class CliServer:
    """The test side: start the server once, run commands through it (or as plain subprocesses)."""

    def __init__(self, env: dict[str, str], workdir: Path, wrap: list[str] | None = None) -> None:
        """``wrap``: a command the server runs under (e.g. a mount namespace), so every command does."""
        self.env = env
        self.workdir = workdir
        self.lock = threading.Lock()
        self.calls = 0
        self.pending = b""  # answer bytes read from the server but not yet consumed
        self.proc = subprocess.Popen(
            [*(wrap or []), sys.executable, "-c", "from tests.cli_server import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=env["PYTHONPATH"].split(os.pathsep)[0],
        )

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)

    def forkable(self, env: dict[str, str]) -> bool:
        return all(env.get(name) == self.env.get(name) for name in STARTUP_VARIABLES) and not any(
            name.startswith("PYTHON") and env.get(name) != self.env.get(name) for name in {*env, *self.env}
        )

    def run(self, args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
        if self.proc.poll() is None and self.forkable(env) and self.lock.acquire(blocking=False):
            try:
                return self._forked(args, env, cwd, timeout)
            finally:
                self.lock.release()
        return subprocess.run(
            [sys.executable, "-m", "trtforge", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
        )

    def _forked(
        self, args: list[str], env: dict[str, str], cwd: Path, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        assert self.proc.stdin is not None
        self.calls += 1
        out, err = self.workdir / f"{self.calls}.out", self.workdir / f"{self.calls}.err"
        request = {"args": args, "env": env, "cwd": str(cwd), "stdout": str(out), "stderr": str(err)}
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()
        pid = self._answer(None)["pid"]
        try:
            status = self._answer(timeout)["status"]
        except subprocess.TimeoutExpired:
            os.kill(pid, signal.SIGKILL)
            self._answer(None)
            raise subprocess.TimeoutExpired(["trtforge", *args], timeout) from None
        stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        out.unlink()
        err.unlink()
        return subprocess.CompletedProcess(["trtforge", *args], status, stdout, stderr)

    def _answer(self, timeout: float | None) -> dict[str, Any]:
        """The server's next line, read straight from the pipe (no buffered reader that select could miss)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.pending:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise subprocess.TimeoutExpired("trtforge", timeout or 0)
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError("the CLI fork server died")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)
