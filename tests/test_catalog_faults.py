"""A team's PostgreSQL catalog under faults (issue 29): wrong URLs, a database that restarts or stays
down mid-batch, writers that meet on one blob row, gc racing an import.

Each fault comes from outside, as on a CI runner: a URL as a user mistypes it, a server stopped with
``pg_ctl stop -m immediate`` (tests/services.py starts a private one for that), processes held at a
crash point while another one runs. Each asserts the exit code, one error line with no traceback
and no password, the JSON, and a clean ``fsck`` afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from tests.procs import CrashPoint, finish, start, start_build, trtforge_argv
from tests.services import POSTGRES_ENV, PostgresServer, _pg_bindir

pytestmark = pytest.mark.slow  # fault injection against PostgreSQL and SQLite (.ci/run: pytest -m slow)

SECRET = "s3cretPW29"  # in every URL below; the output must never show it
# A build whose database froze: connect timeouts (5 s each, a few of them) and the rest of the
# recipe; far below, a build waiting on the frozen server for good.
FROZEN_LIMIT_S = 120


def _with_password(url: str) -> str:
    """The URL with a password (the test servers trust every login: it is accepted and ignored)."""
    return make_url(url).set(password=SECRET).render_as_string(hide_password=False)


def _one_error(stderr: str) -> str:
    """The one ``error:`` line of a failed command (its hint may follow); no traceback, no secret."""
    assert "Traceback" not in stderr and SECRET not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def _shared_server() -> str:
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set (.ci/run starts a PostgreSQL server and sets it)")
    return base


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word (a host that does not answer)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def _wrong(kind: str, silent_port: int) -> tuple[str, str, str | None]:
    """(catalog URL, what the error line says, the error_kind a build reports) of each way to get it wrong."""
    if kind == "port is not a number":
        return f"postgresql+psycopg://ci:{SECRET}@127.0.0.1:abc/trtforge", "its port is not a number", "bad_input"
    if kind == "port out of range":
        return f"postgresql+psycopg://ci:{SECRET}@127.0.0.1:99999/trtforge", "port 99999 is not a TCP port", "bad_input"
    if kind == "unknown host":
        return f"postgresql+psycopg://ci:{SECRET}@no-such-host.invalid/trtforge", "resolve host", "bad_input"
    if kind == "connection refused":
        return f"postgresql+psycopg://ci:{SECRET}@127.0.0.1:1/trtforge", "Connection refused", "catalog_unavailable"
    if kind == "host that does not answer":
        url = f"postgresql+psycopg://ci:{SECRET}@127.0.0.1:{silent_port}/trtforge"
        return url, "timeout expired", "catalog_unavailable"
    if kind == "missing driver":
        return f"postgresql+pg8000://ci:{SECRET}@127.0.0.1:1/trtforge", "No module named 'pg8000'", "bad_input"
    base = make_url(_shared_server())
    if kind == "no such database":
        url = base.set(database=f"nosuchdb_{uuid.uuid4().hex[:8]}", password=SECRET)
        return url.render_as_string(hide_password=False), "does not exist", "bad_input"
    assert kind == "login refused"
    url = base.set(username=f"nobody_{uuid.uuid4().hex[:8]}", password=SECRET)
    return url.render_as_string(hide_password=False), "the server refused the login", "bad_input"


WRONG = [
    "port is not a number",
    "port out of range",
    "unknown host",
    "connection refused",
    pytest.param("host that does not answer", marks=pytest.mark.slow),  # two 5 s connect timeouts
    "missing driver",
    "no such database",
    "login refused",
]


@pytest.mark.parametrize("kind", WRONG)
def test_every_wrong_or_unreachable_catalog_url_is_one_line_and_exit_2(
    kind: str, silent_port: int, mlp_recipe: Callable[..., Path], tmp_path: Path, cli
) -> None:
    """Fails on c1e1ac4 (integration before issue 29) for a missing database and a refused login
    (SQLAlchemy's OperationalError traceback, exit 1) and a port that is not a number (ValueError
    traceback, exit 1); an unknown host, a refused connection and a server that does not answer were
    one line there, with no hint of what to do."""
    url, says, build_kind = _wrong(kind, silent_port)
    started = time.monotonic()
    listed = cli("list", "--store", tmp_path / "s", "--catalog", url)
    assert listed.code == 2, listed
    line = _one_error(listed.stderr)
    assert line.startswith("error: cannot open catalog ") and says in line, line
    assert url.split(":")[0] + "://" in line and ":***@" in line, line  # the URL is named, its password hidden
    assert "hint:" in listed.stderr, listed
    assert time.monotonic() - started < 30  # a server that does not answer costs a connect timeout, no more

    built = cli("build", mlp_recipe("wrong"), "--store", tmp_path / "s", "--catalog", url, "--json")
    assert built.code == 2 and "Traceback" not in built.stderr and SECRET not in built.stdout + built.stderr, built
    [result] = built.json()
    assert result["status"] == "failed" and result["error_kind"] == build_kind, result
    assert result["error"].startswith("cannot open catalog ") and says in result["error"], result


def test_the_createdb_hint_makes_the_missing_database(tmp_path: Path, cli) -> None:
    """The hint of a missing database is a command that works: run it, and the same command succeeds."""
    bindir = _pg_bindir()
    assert bindir is not None or not os.environ.get(POSTGRES_ENV)
    url, _, _ = _wrong("no such database", 0)
    missing = cli("list", "--store", tmp_path / "s", "--catalog", url, "--json")
    assert missing.code == 2, missing
    hint = next(line for line in missing.stderr.splitlines() if line.startswith("hint:"))
    command = shlex.split(hint.split("create it once: ", 1)[1].split(" (", 1)[0])
    assert command[0] == "createdb" and SECRET not in hint
    subprocess.run([str(bindir / "createdb"), *command[1:]], check=True, capture_output=True)
    try:
        listed = cli("list", "--store", tmp_path / "s", "--catalog", url, "--json")
        assert listed.code == 0 and listed.json() == [], listed
    finally:
        admin = create_engine(_shared_server(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
        admin.dispose()



# -- a role without the privileges trtforge needs ----------------------------------------------------


@pytest.fixture
def limited_role(postgres_catalog: str) -> Iterator[Callable[..., str]]:
    """Factory: a login role on the test server granted only SELECT on the given tables of
    ``postgres_catalog``; returns its catalog URL (with the password the output must never show)."""
    admin = create_engine(postgres_catalog, isolation_level="AUTOCOMMIT")
    roles: list[str] = []

    def make(*tables: str) -> str:
        role = f"ci_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{SECRET}'"))
            roles.append(role)
            if tables:
                conn.execute(text(f"GRANT SELECT ON {', '.join(tables)} TO {role}"))
        return make_url(postgres_catalog).set(username=role, password=SECRET).render_as_string(hide_password=False)

    yield make
    with admin.connect() as conn:
        for role in roles:
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
    admin.dispose()


def test_a_statement_the_role_may_not_run_is_one_line_and_exit_2(
    postgres_catalog: str, limited_role: Callable[..., str], mlp_recipe: Callable[..., Path], store: Path, cli
) -> None:
    """A role granted only SELECT on alembic_version and artifacts opens the catalog; gc (blobs),
    show (verifications) and build --force (INSERT INTO blobs) are refused by the server. Each is
    one line naming the table, a hint to grant the role its privileges, exit 2 (as when the same
    fault stops the catalog from opening), well-formed JSON; nothing changes in the catalog.

    Fails on 38d4c89: SQLAlchemy's ProgrammingError (InsufficientPrivilege) traceback, exit 1, and
    no JSON on stdout."""
    recipe = mlp_recipe("granted", seed=5)
    [built] = cli("build", recipe, "--store", store, "--catalog", postgres_catalog, "--json").json()
    before = cli("list", "--store", store, "--catalog", postgres_catalog, "--json").json()
    url = limited_role("alembic_version", "artifacts")
    role = make_url(url).username

    def refused(*args: str | Path, table: str) -> None:
        for form in ((), ("--json",)):
            done = cli(*args, "--store", store, "--catalog", url, *form)
            assert done.code == 2 and SECRET not in done.stdout, done
            line = _one_error(done.stderr)
            assert f"permission denied for table {table}" in line and ":***@" in line, line
            hint = next(h for h in done.stderr.splitlines() if h.startswith("hint:"))
            assert f"grant {role} its privileges on table {table}" in hint, done.stderr
            if form:
                data = done.json()
                result = data[0] if isinstance(data, list) else data
                assert result["error_kind"] == "bad_input" and table in result["error"], result

    refused("gc", table="blobs")
    refused("show", built["artifact_id"], table="verifications")
    refused("build", recipe, "--force", table="blobs")
    assert cli("list", "--store", store, "--catalog", postgres_catalog, "--json").json() == before
    _fsck(cli, store, postgres_catalog)

    # The same fault when the catalog opens (no right to read its schema version): the same hint.
    opening = cli("list", "--store", store, "--catalog", limited_role(), "--json")
    assert opening.code == 2 and SECRET not in opening.stdout, opening
    assert "permission denied for table alembic_version" in _one_error(opening.stderr), opening
    [failure] = opening.json()
    assert failure["error_kind"] == "bad_input" and "its privileges on table alembic_version" in failure["hint"]


# -- a database that restarts, or stays down, mid-batch ------------------------------------------


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    yield server
    server.close()


def _fsck(cli: Callable[..., object], store: Path, catalog: str) -> dict:
    check = cli("fsck", "--store", store, "--catalog", catalog, "--json")
    assert check.code == 0 and check.json()["ok"] and check.json()["missing"] == [], check
    return check.json()


@pytest.mark.slow
def test_a_batch_outlives_a_database_restart(
    private_postgres: PostgresServer, mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path, cli
) -> None:
    """PostgreSQL is stopped (immediate: sessions cut, advisory locks gone) and started again while
    the first recipe of a two-recipe batch builds. Both are recorded, exit 0.

    Fails on c1e1ac4: the build's advisory-lock session was gone; releasing it raised SQLAlchemy's
    OperationalError: a traceback, exit 1, no JSON for either recipe."""
    url = _with_password(private_postgres.url)
    recipes = [mlp_recipe("restart0", seed=1), mlp_recipe("restart1", seed=2)]
    point = CrashPoint(tmp_path / "cp", "trt-building")
    batch = start_build(*recipes, "--store", store, "--catalog", url, "--jobs", "1", "--json", env=point.env)
    point.wait_reached(batch)  # a worker inside TensorRT's build of the first recipe; the catalog is open
    private_postgres.stop()
    private_postgres.start()
    point.resume()
    code, results, err = finish(batch)
    point.close()
    assert code == 0 and "Traceback" not in err and SECRET not in err, err
    assert [r["name"] for r in results] == ["restart0", "restart1"]
    assert [r["status"] for r in results] == ["built", "built"], results
    listed = cli("list", "--store", store, "--catalog", url, "--json")
    assert sorted(a["artifact_id"] for a in listed.json()) == sorted(r["artifact_id"] for r in results)
    _fsck(cli, store, url)


@pytest.mark.slow
def test_a_database_that_stays_down_fails_each_recipe_and_records_nothing_false(
    private_postgres: PostgresServer, mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path, cli
) -> None:
    """PostgreSQL stops for good after the first recipe's plan is stored, before its row: each recipe
    is `failed` with `catalog_unavailable`, the JSON is complete, exit 1; the uploaded plan is left
    for gc and never served; once the database is back the same command works.

    Fails on c1e1ac4: SQLAlchemy's OperationalError traceback, exit 1, no JSON."""
    url = _with_password(private_postgres.url)
    recipes = [mlp_recipe("down0", seed=3), mlp_recipe("down1", seed=4)]
    point = CrashPoint(tmp_path / "cp", "blob-stored")
    batch = start_build(*recipes, "--store", store, "--catalog", url, "--jobs", "1", "--json", env=point.env)
    point.wait_reached(batch)  # the plan blob is written; its catalog row is next
    private_postgres.stop()
    point.resume()
    code, results, err = finish(batch)
    point.close()
    assert code == 1 and "Traceback" not in err and SECRET not in err, err
    assert [r["name"] for r in results] == ["down0", "down1"], results
    assert [(r["status"], r["error_kind"]) for r in results] == [("failed", "catalog_unavailable")] * 2
    assert all("stopped answering" in r["error"] and "***" in r["error"] for r in results), results
    # The first plan was stored (and the second too when its thread built it meanwhile): no row names them.
    stored = sorted(p.name for p in (store / "blobs" / "sha256").glob("??/*"))
    assert stored

    # Still down: a new command cannot open the catalog: one line per recipe, exit 2.
    again = cli("build", *recipes, "--store", store, "--catalog", url)
    assert again.code == 2 and "Traceback" not in again.stderr and SECRET not in again.stderr, again
    lines = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 2 and all("cannot open catalog" in line for line in lines), again.stderr

    private_postgres.start()
    check = _fsck(cli, store, url)
    assert check["orphans"] == stored  # left for gc, never served: no artifact names it
    rebuilt = cli("build", *recipes, "--store", store, "--catalog", url, "--json")
    assert rebuilt.code == 0 and [r["status"] for r in rebuilt.json()] == ["built", "built"], rebuilt
    _fsck(cli, store, url)



def _server_pids(server: PostgresServer) -> list[int]:
    """The postmaster of ``server`` and every process it started (backends, checkpointer...)."""
    postmaster = int((server.dir / "data" / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == postmaster:
            children.append(int(stat.parent.name))
    return [postmaster, *children]


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@pytest.mark.slow
def test_a_database_frozen_mid_build_fails_the_recipe_without_hanging(
    private_postgres: PostgresServer, mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path, cli
) -> None:
    """Every PostgreSQL process is stopped (SIGSTOP: a host frozen, a VM paused) after the plan is
    stored, before its row: the new connection times out, the recipe is `failed` with
    `catalog_unavailable`, exit 1, in bounded time; the session holding the gc fence is closed
    rather than asked to unlock (the server ending it releases the lock). Thawed, the store is
    clean and the same build works.

    Fails on 38d4c89: releasing the fence sent pg_advisory_unlock on the open fence connection to
    the frozen server and waited for its answer forever (the build never exits)."""
    url = _with_password(private_postgres.url)
    recipe = mlp_recipe("frozen", seed=6)
    point = CrashPoint(tmp_path / "cp", "blob-stored")
    batch = start_build(recipe, "--store", store, "--catalog", url, "--json", env=point.env)
    point.wait_reached(batch)  # the plan blob is written, the fence and build lock held; its row is next
    frozen = _server_pids(private_postgres)
    try:
        _signal_all(frozen, signal.SIGSTOP)
        point.resume()
        try:
            out, err = batch.communicate(timeout=FROZEN_LIMIT_S)
        except subprocess.TimeoutExpired:
            batch.kill()
            batch.communicate()
            pytest.fail(f"the build did not end within {FROZEN_LIMIT_S} s of the database freezing")
    finally:
        _signal_all(frozen, signal.SIGCONT)
        point.close()
    assert batch.returncode == 1 and "Traceback" not in err and SECRET not in out + err, err
    [result] = json.loads(out)
    assert (result["status"], result["error_kind"]) == ("failed", "catalog_unavailable"), result

    _fsck(cli, store, url)
    rebuilt = cli("build", recipe, "--store", store, "--catalog", url, "--json")
    assert rebuilt.code == 0 and rebuilt.json()[0]["status"] == "built", rebuilt
    _fsck(cli, store, url)

# -- writers that meet ------------------------------------------------------------------------------


def _waiting_sessions(url: str) -> int:
    """How many sessions of this database wait for a lock (another transaction's row, an advisory lock)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            sql = (
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE NOT l.granted AND a.datname = current_database()"
            )
            return int(conn.execute(text(sql)).scalar() or 0)
    finally:
        engine.dispose()


def _until_waiting(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while _waiting_sessions(url) == 0:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the second writer never reached the catalog"
        time.sleep(0.1)


def _twins(mlp_recipe: Callable[..., Path]) -> tuple[Path, Path]:
    """Two recipes of one model under two names: two build keys, one plan (the same bytes)."""
    first = mlp_recipe("twin_a", seed=7)
    second = first.with_name("twin_b.yaml")
    second.write_text(first.read_text().replace("name: twin_a", "name: twin_b"))
    return first, second


def test_two_writers_recording_one_plan_blob_never_collide(
    postgres_catalog: str, mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path, cli
) -> None:
    """Two runners record the same plan (two recipes, one plan's bytes) at the same moment: the first
    holds its row uncommitted while the second adds it. Both are recorded, one blob row.

    Fails on c1e1ac4: both saw no blob row and inserted one: the second got PostgreSQL's
    UniqueViolation on the blobs' primary key, a traceback, exit 1."""
    first, second = _twins(mlp_recipe)
    point = CrashPoint(tmp_path / "cp", "catalog-uncommitted")
    holder = start_build(first, "--store", store, "--catalog", postgres_catalog, "--json", env=point.env)
    point.wait_reached(holder)  # its blob row and artifact are flushed, not committed
    other = start_build(second, "--store", store, "--catalog", postgres_catalog, "--json")
    _until_waiting(postgres_catalog, other)  # the second writer is at the catalog, waiting on the first
    point.resume()
    codes = [finish(holder), finish(other)]
    point.close()
    for code, data, err in codes:
        assert code == 0 and "Traceback" not in err, err
        assert data[0]["status"] == "built", data
    assert codes[0][1][0]["plan_sha256"] == codes[1][1][0]["plan_sha256"]
    engine = create_engine(postgres_catalog)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM blobs")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM artifacts")).scalar() == 2
    engine.dispose()
    _fsck(cli, store, postgres_catalog)


def test_gc_never_deletes_the_blob_row_an_import_is_about_to_reference(
    postgres_catalog: str, mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path, cli
) -> None:
    """gc removes the only artifact using a plan while an import of another artifact with that plan
    holds its rows uncommitted. Both finish, and the imported artifact's plan is there.

    Fails on c1e1ac4: gc saw the blob row unused and deleted it; the import's commit then made it a
    ForeignKeyViolation, a traceback from gc (exit 1)."""
    first, second = _twins(mlp_recipe)
    elsewhere = tmp_path / "elsewhere"
    [exported] = cli("build", second, "--store", elsewhere, "--json").json()
    bundle = tmp_path / "twin_b.tar"
    assert cli("export", exported["artifact_id"], "-o", bundle, "--store", elsewhere).code == 0
    built = cli("build", first, "--store", store, "--catalog", postgres_catalog, "--json")
    assert built.code == 0, built

    point = CrashPoint(tmp_path / "cp", "import-uncommitted")
    importer = start(
        trtforge_argv("import", bundle, "--store", store, "--catalog", postgres_catalog, "--json"), point.env
    )
    point.wait_reached(importer)  # its artifact (plan: the blob gc is about to drop) is not committed
    gc = start(trtforge_argv("gc", "--older-than", "0", "--store", store, "--catalog", postgres_catalog, "--json"))
    _until_waiting(postgres_catalog, gc)
    point.resume()
    gc_code, gc_data, gc_err = finish(gc)
    code, data, err = finish(importer)
    point.close()
    assert code == 0 and data["imported"] == [exported["artifact_id"]], (data, err)
    assert gc_code == 0 and "Traceback" not in gc_err, gc_err
    assert gc_data["result"]["artifacts_removed"] == 1 and gc_data["result"]["blob_rows_removed"] == 0
    listed = cli("list", "--store", store, "--catalog", postgres_catalog, "--json").json()
    assert [a["artifact_id"] for a in listed] == [exported["artifact_id"]]
    _fsck(cli, store, postgres_catalog)
