"""Real services a fault test owns: a PostgreSQL server it may stop and start, an S3 server it may kill.

The suite's shared servers (``TRTFORGE_TEST_POSTGRES_URL``, the session's ``moto_server``) serve
every other test, so a test that takes a service away starts its own, as a runner sees one: the
same binaries, on loopback, stopped from outside (``pg_ctl stop -m immediate``, SIGKILL).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
POSTGRES_ENV = "TRTFORGE_TEST_POSTGRES_URL"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """A private PostgreSQL server from ``.ci/postgres``, with ``stop`` and ``start`` in between."""

    def __init__(self) -> None:
        bindir = _pg_bindir()
        if not os.environ.get(POSTGRES_ENV) or bindir is None:
            pytest.skip(f"{POSTGRES_ENV} is not set (.ci/run installs PostgreSQL and sets it)")
        self.bindir = bindir
        out = subprocess.run([REPO / ".ci" / "postgres", "start"], capture_output=True, text=True, check=True)
        self.url, folder = out.stdout.split()
        self.dir = Path(folder)
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def _pg_ctl(self, *args: str) -> None:
        as_pg = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        subprocess.run([*as_pg, str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), *args], check=True,
                       capture_output=True)

    def stop(self) -> None:
        """Stop at once, as a crash or a host going down does (no checkpoint, sessions cut)."""
        self._pg_ctl("stop", "-m", "immediate", "-w")

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=200 -c fsync=off"
        self._pg_ctl("-l", str(self.dir / "server.log"), "-w", "-o", options, "start")

    def close(self) -> None:
        subprocess.run([REPO / ".ci" / "postgres", "stop", str(self.dir)], capture_output=True)


class MotoServer:
    """A private ``moto_server`` on a loopback port; ``kill`` it, ``start`` a fresh (empty) one there."""

    def __init__(self) -> None:
        if shutil.which("moto_server") is None:
            pytest.fail("moto_server is not installed (pip install 'moto[server]'; .ci/run installs the test extra)")
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        deadline = time.monotonic() + 60
        while True:  # the port may linger for a moment after a kill
            proc = subprocess.Popen(
                ["moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            assert proc.stdout is not None
            if any("Running on" in line for line in _lines_until_running(proc)):
                break
            proc.wait()
            assert time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.5)
        threading.Thread(target=lambda: [None for _ in proc.stdout or ()], daemon=True).start()  # drain its log
        self.proc = proc

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def close(self) -> None:
        if self.proc is not None:
            self.kill()

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.url).create_bucket(Bucket=name)


def _lines_until_running(proc: subprocess.Popen[str]) -> list[str]:
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if "Running on" in line:
            break
    return seen


class FaultyS3:
    """An HTTP proxy in front of a moto server that answers PUTs of blobs (or the requests on blobs
    of the ``methods`` given, e.g. DELETE: aborting an upload) with an S3 error while ``failing`` (a
    throttling 503, an access denied 403), as a loaded or misconfigured S3 endpoint does; every other
    request goes through. ``puts`` counts the blob PUTs it saw, per key."""

    def __init__(self, upstream: MotoServer) -> None:
        from http.server import ThreadingHTTPServer

        self.upstream = upstream
        self.failing: tuple[int, str] | None = None  # (HTTP status, S3 error code)
        self.remaining: int | None = None  # how many PUTs fail before they go through again; None: all
        self.methods: tuple[str, ...] = ("PUT",)  # the requests on blobs that fail while ``failing``
        self.puts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self) -> type:
        from http.server import BaseHTTPRequestHandler

        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                pass

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.command in proxy.methods and "/blobs/sha256/" in self.path:
                    key = self.path.split("?")[0]
                    with proxy._lock:
                        if self.command == "PUT":
                            proxy.puts[key] = proxy.puts.get(key, 0) + 1
                        failing = proxy.failing if proxy.remaining is None or proxy.remaining > 0 else None
                        if failing is not None and proxy.remaining is not None:
                            proxy.remaining -= 1
                    if failing is not None:
                        return self._answer(failing[0], {"Content-Type": "application/xml"}, _s3_error(*failing))
                passed = {k: v for k, v in self.headers.items() if k.lower() not in ("expect", "connection")}
                status, headers, data = proxy._forward(self.command, self.path, passed, body)
                self._answer(status, headers, data)

            def _answer(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                        self.send_header(name, value)
                length = headers.get("Content-Length", "0") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length)  # a HEAD says the object's length
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        return Handler

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.upstream.port, timeout=60)
        try:
            conn.request(method, path, body=body if body or method in ("PUT", "POST") else None, headers=headers)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _s3_error(status: int, code: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{code} (fault injected by the '
        f"test's proxy, HTTP {status})</Message><RequestId>0</RequestId></Error>"
    ).encode()
