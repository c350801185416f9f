"""Shared fixtures: isolated stores, recipes with real ONNX models, the CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import onnx_models
from tests.cli_server import CliServer

REPO = Path(__file__).resolve().parents[1]

MLP_RECIPE = """\
name: {name}
model:
  onnx: {model}
backend: tensorrt_rtx
profiles:
  - x: {{min: [1, 4], opt: [2, 4], max: [4, 4]}}
build:
  optimization_level: {level}
"""


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's store or catalog settings."""
    monkeypatch.delenv("TRTFORGE_STORE", raising=False)
    monkeypatch.delenv("TRTFORGE_CATALOG", raising=False)
    monkeypatch.delenv("TRTFORGE_DEBUG", raising=False)
    monkeypatch.delenv("TRTFORGE_BLOBS", raising=False)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def example_recipe(tmp_path: Path) -> Path:
    """A copy of recipes/example.yaml and its model in a temp dir."""
    target = tmp_path / "recipes"
    (target / "models").mkdir(parents=True)
    (target / "example.yaml").write_text((REPO / "recipes" / "example.yaml").read_text())
    (target / "models" / "example_cnn.onnx").write_bytes(
        (REPO / "recipes" / "models" / "example_cnn.onnx").read_bytes()
    )
    return target / "example.yaml"


@pytest.fixture
def mlp_recipe(tmp_path: Path) -> Callable[..., Path]:
    """Factory: a recipe for a tiny MLP (fast real builds). Returns the recipe path."""

    def make(name: str = "mlp", *, seed: int = 0, level: int = 0, text: str | None = None) -> Path:
        folder = tmp_path / "recipes"
        model = onnx_models.save(onnx_models.mlp(seed), folder / "models" / f"{name}.onnx")
        body = text if text is not None else MLP_RECIPE
        path = folder / f"{name}.yaml"
        path.write_text(body.format(name=name, model=model.relative_to(folder).as_posix(), level=level))
        return path

    return make


class RecordingSink:
    """A build ProgressSink that keeps every TensorRT progress callback, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def phase_start(self, name: str, parent: str | None, steps: int) -> None:
        self.events.append(("start", name))

    def step(self, name: str, step: int) -> None:
        self.events.append(("step", name))

    def phase_finish(self, name: str) -> None:
        self.events.append(("finish", name))


def subprocess_env() -> dict[str, str]:
    """Environment for child processes: this checkout's trtforge first, no TRTFORGE_* settings, and
    one terminal width (tables read by tests wrap the same wherever pytest runs; a test may override it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRTFORGE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "200"
    return env


class CliResult:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, stdout={self.stdout[-2000:]!r}, stderr={self.stderr[-2000:]!r})"


@pytest.fixture(scope="session")
def cli_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliServer | None]:
    """One fork server per test process (tests/cli_server.py); TRTFORGE_TEST_CLI=subprocess turns it off."""
    if os.environ.get("TRTFORGE_TEST_CLI") == "subprocess":
        yield None
        return
    server = CliServer(subprocess_env(), tmp_path_factory.mktemp("cli-server"))
    yield server
    server.close()


@pytest.fixture
def cli(tmp_path: Path, cli_server: CliServer | None) -> Callable[..., CliResult]:
    """Run the CLI (`python -m trtforge ARGS`) in its own process, like a user would.

    The process is forked from a server that has the third-party libraries imported already
    (tests/cli_server.py says when it falls back to a fresh interpreter instead).
    """

    def run(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> CliResult:
        full_env = subprocess_env()
        full_env.update(env or {})
        argv = [str(a) for a in args]
        if cli_server is not None:
            return CliResult(cli_server.run(argv, full_env, cwd or tmp_path, timeout=600))
        proc = subprocess.run(
            [sys.executable, "-m", "trtforge", *argv],
            capture_output=True,
            text=True,
            env=full_env,
            cwd=cwd or tmp_path,
            timeout=600,
        )
        return CliResult(proc)

    return run


POSTGRES_ENV = "TRTFORGE_TEST_POSTGRES_URL"


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty catalog database: SQLite in tmp_path, or a new database on the test PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.sqlite'}"
        return
    yield from _fresh_postgres_database()


@pytest.fixture
def postgres_catalog() -> Iterator[str]:
    """A fresh database on the test PostgreSQL server (team-setup tests)."""
    yield from _fresh_postgres_database()


def _fresh_postgres_database() -> Iterator[str]:
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set (.ci/run starts a PostgreSQL server and sets it)")
    from sqlalchemy import create_engine, make_url, text

    name = f"trtforge_{uuid.uuid4().hex[:16]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
