"""The catalog's database connections: the URL checked, connections checked before use and retried,
and what a driver's error means, in one line.

- A URL is parsed before anything connects: a malformed one (a port that is not a number, an
  unknown dialect) is one line naming it, with its password hidden.
- Pooled connections are pinged before use (``pool_pre_ping``): one that a database restart closed
  is replaced instead of failing the next statement. PostgreSQL connections get a connect timeout
  and TCP keepalives (unless the URL sets its own), so a server that stops answering is noticed.
- Once the catalog has answered, a new connection that fails for a reason that passes (refused,
  timed out, the server restarting) is tried again with backoff, :data:`CONNECT_RETRY_S` seconds in
  all: a database restart under a running command is waited for. Once that budget is spent, later
  connections try once each until one succeeds, so a batch against a database that stays down
  fails each recipe quickly instead of waiting again. The very first connection is not retried: a
  server that is not there when the command starts is most often a wrong host or port.
- A database that cannot be opened is exit 2 (:func:`opening_error`: a wrong URL, no such
  database, a refused login, an unreachable server); one lost while a command works is exit 1
  (:func:`lost_error`: ``error_kind: catalog_unavailable`` for that recipe).
"""

from __future__ import annotations

import re
import threading
import time
from typing import TYPE_CHECKING, Any

from trtforge.core.errors import CatalogError, CatalogUnavailableError, CatalogUnreachableError
from trtforge.core.redact import redact, redact_url

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine

CONNECT_RETRY_S = 5.0  # a new connection that fails transiently is retried for this long, in all
FIRST_BACKOFF_S = 0.1
MAX_BACKOFF_S = 1.0
CONNECT_TIMEOUT_S = 5  # libpq's connect_timeout (whole seconds) unless the URL gives one
# TCP keepalives: a PostgreSQL server that vanishes without closing the connection (a host gone,
# a network partition) is noticed within about 30 s instead of the kernel's two hours.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 15, "keepalives_interval": 5, "keepalives_count": 3}
URL_HINT = "give a SQLAlchemy URL such as postgresql+psycopg://user@host/db or sqlite:////path/catalog.sqlite"

# libpq's and the server's words for a failure that passes: the server is (re)starting, stopping,
# full, or not reachable yet. Anything else (no such database, a refused login) will not pass.
_TRANSIENT = re.compile(
    r"Connection refused|timeout expired|timed out|the database system is (starting up|shutting down|"
    r"in recovery mode|not yet accepting connections|not accepting connections)|server closed the "
    r"connection unexpectedly|Connection reset|No route to host|Network is unreachable|too many "
    r"(connections|clients)|terminating connection due to administrator command|could not receive data|"
    r"could not send data|consuming input failed|connection is (closed|lost)|SSL SYSCALL error"
)
_NO_DATABASE = re.compile(r'database "(?P<name>[^"]*)" does not exist')
_LOGIN = re.compile(
    r'password authentication failed|role "[^"]*" does not exist|no pg_hba\.conf entry|authentication failed|'
    r"no password supplied|password is required|peer authentication failed"
)
_UNKNOWN_HOST = re.compile(r"failed to resolve host|could not translate host name|Name or service not known")
INSUFFICIENT_PRIVILEGE = "42501"  # PostgreSQL's SQLSTATE for "permission denied for table ..."
_DENIED_ON = re.compile(r"permission denied for (?P<what>table|sequence|schema|database|relation) (?P<name>\S+)")


def checked_url(url: str) -> URL:
    """The parsed SQLAlchemy URL; CatalogError (one line, password hidden) for a malformed one."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ValueError as exc:  # SQLAlchemy's int() of the port
        problem = "its port is not a number" if "int()" in str(exc) else str(exc)
        raise CatalogError(redact(f"cannot open catalog {url}: {problem}", url), hint=URL_HINT) from None
    except ArgumentError as exc:
        raise CatalogError(redact(f"cannot open catalog {url}: {exc}", url), hint=URL_HINT) from None
    if parsed.port is not None and not 0 < parsed.port < 65536:
        problem = f"port {parsed.port} is not a TCP port"
        raise CatalogError(redact(f"cannot open catalog {url}: {problem}", url), hint=URL_HINT)
    return parsed


def engine_options(url: URL) -> dict[str, Any]:
    """create_engine's options for ``url``: pre-ping, and for PostgreSQL the connect timeout and
    keepalives, each unless the URL's query sets it."""
    if url.get_backend_name() == "sqlite":
        return {}  # a local file: nothing to lose between statements
    if url.get_backend_name() != "postgresql":
        return {"pool_pre_ping": True}
    from trtforge.store.locks import application_name

    given = set(url.query)
    connect_args: dict[str, Any] = {"application_name": application_name()}
    if "connect_timeout" not in given:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    connect_args.update({key: value for key, value in KEEPALIVES.items() if key not in given})
    return {"connect_args": connect_args, "pool_pre_ping": True}


def transient(exc: BaseException) -> bool:
    """Whether a driver's error is one that passes (the server restarting, not reachable yet)."""
    return bool(_TRANSIENT.search(_driver_text(exc)))


class ConnectRetry:
    """A ``do_connect`` hook: once a connection has succeeded, a new DBAPI connection that fails
    transiently is tried again with backoff, :data:`CONNECT_RETRY_S` in all; after a spent budget,
    one try per connection until one succeeds (the database is down: a batch fails each recipe
    quickly). Before any success, one try (the command is opening the catalog)."""

    def __init__(self, budget_s: float = CONNECT_RETRY_S) -> None:
        self.budget_s = budget_s
        self._down = True  # until a connection succeeds: nothing to wait for
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        """No connection is worth waiting for: none has succeeded yet, or the last one failed after
        the whole budget (the database is down, not restarting)."""
        return self._down

    def install(self, engine: Engine) -> None:
        from sqlalchemy import event

        event.listen(engine, "do_connect", self._connect)

    def _connect(self, dialect: Any, _record: Any, cargs: tuple[Any, ...], cparams: dict[str, Any]) -> Any:
        deadline = time.monotonic() + (0.0 if self._down else self.budget_s)
        delay = FIRST_BACKOFF_S
        while True:
            try:
                connection = dialect.connect(*cargs, **cparams)
            except Exception as exc:
                passes = transient(exc)
                if not passes or time.monotonic() + delay > deadline:
                    if passes:
                        with self._lock:
                            self._down = True
                    raise
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            with self._lock:
                self._down = False
            return connection


def _driver_text(exc: BaseException) -> str:
    """The driver's own words (SQLAlchemy wraps them), on one line with runs of spaces collapsed."""
    orig = getattr(exc, "orig", None) or exc
    return " ".join(str(orig).split())


def _driver_line(exc: BaseException) -> str:
    """The first line of the driver's message, without libpq's "connection failed: " preamble."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return " ".join(first.removeprefix("connection failed: ").split())


def opening_error(exc: BaseException, url: str) -> CatalogError:
    """What a failure to open the catalog means, in one line naming the URL (password hidden) and
    a hint with what to do. Exit 2 in every case: the command did nothing."""
    text, shown = _driver_text(exc), redact_url(url)
    said = redact(_driver_line(exc), url)
    missing = _NO_DATABASE.search(text)
    if missing is not None:
        return CatalogError(
            redact(f"cannot open catalog {url}: database {missing.group('name')!r} does not exist", url),
            hint=f"create it once: {createdb_command(url)} (trtforge creates its tables on first use)",
        )
    if _LOGIN.search(text):
        return CatalogError(
            f"cannot open catalog {shown}: the server refused the login ({said})",
            hint="check the user and password in the catalog URL (or PGPASSWORD, ~/.pgpass) "
            "and the server's pg_hba.conf",
        )
    if _UNKNOWN_HOST.search(text):
        return CatalogError(
            f"cannot open catalog {shown}: {said}",
            hint="check the host name in the catalog URL (--catalog, TRTFORGE_CATALOG)",
        )
    if is_denied(exc):
        return CatalogError(f"cannot open catalog {shown}: {said}", hint=grant_hint(exc, url))
    if transient(exc):
        return CatalogUnreachableError(
            f"cannot open catalog {shown}: {said}",
            hint="check that the database server runs at that host and port and accepts connections from this "
            "machine, then run the command again",
        )
    return CatalogError(f"cannot open catalog {shown}: {said}")


def lost_error(exc: BaseException, url: str) -> CatalogUnavailableError:
    """The catalog stopped answering (or failed) while the command worked (exit 1, ``catalog_unavailable``)."""
    said = redact(_driver_line(exc), url)
    retried = f"connections retried for {CONNECT_RETRY_S:g} s"
    what = f"stopped answering: {said} ({retried})" if transient(exc) else f"failed: {said}"
    return CatalogUnavailableError(
        f"the catalog {redact_url(url)} {what}",
        hint="nothing half-written was recorded; run the command again once the database is back "
        "(what was recorded before stays: those recipes are cache hits)",
    )


def sqlstate(exc: BaseException) -> str | None:
    """The driver's SQLSTATE code (psycopg 3: ``sqlstate``, psycopg2: ``pgcode``), if it gives one."""
    orig = getattr(exc, "orig", None) or exc
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def is_denied(exc: BaseException) -> bool:
    """The server refused a statement because the catalog's role lacks a privilege (SQLSTATE
    42501): the setup is wrong, so no retry helps."""
    return sqlstate(exc) == INSUFFICIENT_PRIVILEGE


def grant_hint(exc: BaseException, url: str) -> str:
    """What to grant, naming the table (or other object) the server named and the URL's role."""
    from sqlalchemy.engine import make_url

    found = _DENIED_ON.search(_driver_text(exc))
    what = f"{found.group('what')} {found.group('name')}" if found else "the catalog's tables"
    role = make_url(url).username or "the catalog URL's role"
    return (
        f"grant {role} its privileges on {what} (trtforge reads and writes every table of its catalog: "
        f"SELECT, INSERT, UPDATE, DELETE), or use a role that has them in the catalog URL"
    )


def denied_error(exc: BaseException, url: str) -> CatalogError:
    """A statement refused for lack of a privilege while the command worked: one line (exit 2, as a
    catalog that cannot be opened for the same reason), with what to grant."""
    said = redact(_driver_line(exc), url)
    return CatalogError(f"the catalog {redact_url(url)} refused a statement: {said}", hint=grant_hint(exc, url))


def createdb_command(url: str) -> str:
    """The ``createdb`` command that makes the URL's database (its password left out)."""
    import shlex

    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    words = ["createdb"]
    if parsed.host:
        words += ["-h", parsed.host]
    if parsed.port:
        words += ["-p", str(parsed.port)]
    if parsed.username:
        words += ["-U", parsed.username]
    words.append(parsed.database or "")
    return shlex.join(words)


def is_unavailable(exc: BaseException) -> bool:
    """A DBAPI error about the database rather than the statement (a lost or refused connection,
    SQLite's "database is locked" or "disk I/O error"): what :func:`lost_error` reports. Errors
    about the data (integrity, types) are not: their callers handle them."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if not isinstance(exc, DBAPIError):
        return False
    return exc.connection_invalidated or isinstance(exc, (InterfaceError, OperationalError))
