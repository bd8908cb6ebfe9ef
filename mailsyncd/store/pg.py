"""PostgreSQL plumbing in place of StoreBase's SQLite (``database:`` in the config): several nodes share it.

psycopg 3 with psycopg_pool.ConnectionPool: the store is called from Twisted's thread pools and from
short-lived worker threads, so a connection per thread (SQLite's way) would multiply PostgreSQL
backends by threads and nodes; the pool bounds them per node, checks a connection before handing it
out and reconnects by itself after PostgreSQL restarts.  A read checks a connection out for one
statement; a transaction (``_tx``) holds one until it commits.  The mixins' SQL is SQLite's portable
subset: dialect.py turns ``?`` into ``%s`` and the migrations' DDL into PostgreSQL's.

Transactions run at READ COMMITTED: where SQLite's BEGIN IMMEDIATE made a read-then-write atomic,
the read takes a row lock (``_for_update()``).  Schema changes are explicit (``mailsyncctl
migrate-db``, serialized by an advisory lock): several nodes may start at once, and a node running
the older code must not find its tables changed under it, so a node refuses an older schema as well
as a newer one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.types.numeric import NumericLoader
from psycopg_pool import ConnectionPool, PoolTimeout

from . import Store, dialect
from .base import DatabaseUnavailable, StoreError, UnstorableText
from .schema import _MIGRATIONS, _TRIGGERS, SCHEMA_VERSION

# the pool logs each failed reconnect attempt while PostgreSQL is down; callers get DatabaseUnavailable
# and the daemon logs one event=database_unavailable line instead
logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)

# pg_advisory_xact_lock key of `mailsyncctl migrate-db` ("msyn" + 1): two at once run one after the other
MIGRATE_LOCK = 0x6D73796E_00000001


def redacted(url: str) -> str:
    """The URL as logs may show it: without a password, should one have slipped in."""
    u = urlsplit(url)
    if u.password is None:
        return url
    host = u.hostname or ""
    netloc = f"{u.username}@{host}" + (f":{u.port}" if u.port else "")
    return urlunsplit((u.scheme, netloc, u.path, "", ""))


class _IntOrFloat(NumericLoader):
    """sum() of a BIGINT column is NUMERIC on PostgreSQL: hand out int (or float) as SQLite does, not Decimal."""

    def load(self, data):
        d = super().load(data)
        return int(d) if d == d.to_integral_value() else float(d)


def _configure(conn: psycopg.Connection) -> None:
    conn.adapters.register_loader("numeric", _IntOrFloat)


class _Rows:
    """A statement's result, fetched before its connection goes back to the pool; reads like a cursor."""

    __slots__ = ("_rows", "description", "rowcount")

    def __init__(self, cur: psycopg.Cursor):
        self.description = cur.description
        self.rowcount = cur.rowcount
        self._rows = cur.fetchall() if cur.description else []

    def fetchone(self):
        return self._rows.pop(0) if self._rows else None

    def fetchall(self):
        rows, self._rows = self._rows, []
        return rows

    def __iter__(self):
        return iter(self.fetchall())


class _Conn:
    """One connection as the mixins use an sqlite3.Connection: execute(sql with ?, args), executemany."""

    def __init__(self, conn: psycopg.Connection, counter: list[int] | None = None):
        self._c = conn
        self._counter = counter

    def execute(self, sql: str, args=None) -> _Rows:
        if self._counter is not None:
            self._counter[0] += 1
        with _unavailable():
            # no arguments: sent as written (psycopg reads % only when there are parameters)
            return _Rows(self._c.execute(sql if args is None else dialect.placeholders(sql), args))

    def executemany(self, sql: str, seq) -> None:
        seq = list(seq)
        if not seq:
            return
        if self._counter is not None:
            self._counter[0] += 1       # pipelined by psycopg: one round trip for the lot
        with _unavailable(), self._c.cursor() as cur:
            cur.executemany(dialect.placeholders(sql), seq)


@contextmanager
def _unavailable():
    try:
        yield
    except psycopg.DataError as e:
        if getattr(e, "sqlstate", None) is None:    # refused by psycopg before sending: a NUL in a text argument
            raise UnstorableText(f"text the database cannot hold: {_first_line(e)}") from None
        raise
    except (psycopg.OperationalError, PoolTimeout) as e:
        state = getattr(e, "sqlstate", None)
        if state and not state.startswith(("08", "57")):
            raise             # the statement's own trouble (a deadlock, a serialization failure), not the server's
        raise DatabaseUnavailable(f"database unavailable: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


class PgBackend:
    """StoreBase's interface on PostgreSQL; the Store's mixins run on top unchanged."""

    backend = "postgresql"

    def __init__(self, url: str, *, password: str | None = None, migrate: bool = False,
                 pool_size: int = 8, connect_timeout: float = 10.0):
        self.path = redacted(url)          # what messages name, as the SQLite store names its file
        self._local = threading.local()
        self.statements = [0]               # statements sent (a measure of round trips; see bench)
        kwargs = {"autocommit": True, "connect_timeout": max(1, int(connect_timeout))}
        if password is not None:
            kwargs["password"] = password
        # one direct attempt first: it fails at once, with libpq's reason (refused, auth, no such database),
        # where the pool would retry in the background until its timeout and then only say "timeout"
        try:
            psycopg.connect(url, **kwargs).close()
        except psycopg.Error as e:
            raise DatabaseUnavailable(f"database unavailable: {self.path}: {_first_line(e)}") from None
        self._pool = ConnectionPool(url, kwargs=kwargs, min_size=1, max_size=pool_size, open=False,
                                    configure=_configure, check=ConnectionPool.check_connection,
                                    timeout=connect_timeout, name="mailsyncd")
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except PoolTimeout:
            self._pool.close()
            raise DatabaseUnavailable(f"database unavailable: {self.path}: no connection within "
                                      f"{connect_timeout:g} s") from None
        try:
            self.migrated = self._schema(migrate)
        except BaseException:
            self._pool.close()
            raise

    # -- plumbing --------------------------------------------------------
    def _conn(self) -> _Conn:
        """Inside a transaction, its connection (it sees its own writes); else one checkout per statement."""
        tx = getattr(self._local, "tx", None)
        return tx if tx is not None else _Checkout(self)

    @contextmanager
    def _tx(self) -> Iterator[_Conn]:
        with _unavailable(), self._pool.connection() as conn:
            c = _Conn(conn, self.statements)
            self.statements[0] += 2         # BEGIN and COMMIT
            try:
                with conn.transaction():
                    self._local.tx = c
                    yield c
            finally:
                self._local.tx = None

    # PostgreSQL cannot overwrite one row's old version: the ciphertext a write replaces or deletes stays
    # in the table's dead tuples until VACUUM reuses the space, and in the WAL and its archive/replicas
    # until they are recycled.  No PRAGMA to set: see README, "Running several nodes".
    _secret_tx = _tx

    @contextmanager
    def _light_tx(self) -> Iterator[_Conn]:
        """Throttle counters and web sessions: losing the last ones at a crash costs nothing, so the
        commit does not wait for the WAL flush (atomic still; durable a moment later)."""
        with self._tx() as c:
            c.execute("SET LOCAL synchronous_commit TO OFF", ())
            yield c

    def _dicts(self, sql: str, args: tuple) -> list[dict]:
        cur = self._conn().execute(sql, args)
        keys = [d[0] for d in cur.description]
        return [dict(zip(keys, r)) for r in cur.fetchall()]

    def _for_update(self) -> str:
        return " FOR UPDATE"

    def _skip_locked(self) -> str:
        return " FOR UPDATE SKIP LOCKED"

    def _columns(self, c) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for table, column in c.execute("SELECT table_name, column_name FROM information_schema.columns"
                                       " WHERE table_schema = current_schema()"):
            out.setdefault(table, set()).add(column)
        return out

    def _after_import(self, c) -> None:
        # explicit ids were inserted: the identity sequence must start after them
        c.execute("SELECT setval(pg_get_serial_sequence('passes', 'id'), coalesce(max(id), 0) + 1, false)"
                  " FROM passes")

    def release_thread(self) -> None:
        """Nothing is held per thread: connections go back to the pool after each statement or transaction."""

    def close(self) -> None:
        self._pool.close()

    # -- the schema ------------------------------------------------------
    def schema_version(self) -> int:
        c = self._conn()
        if c.execute("SELECT to_regclass('meta')").fetchone()[0] is None:
            return 0
        row = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _schema(self, migrate: bool) -> tuple[int, int]:
        """Check the schema version; with ``migrate`` bring it up to date.  Returns (before, after)."""
        with self._tx() as c:
            if migrate:
                c.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATE_LOCK,))
            version = self.schema_version()
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: schema version {version} is newer than this mailsyncd "
                                 f"understands ({SCHEMA_VERSION}); upgrade mailsyncd on this node")
            if version == SCHEMA_VERSION:
                return version, version
            if not migrate:
                raise StoreError(f"{self.path}: schema version {version} is older than this mailsyncd's "
                                 f"({SCHEMA_VERSION}): run `mailsyncctl migrate-db` (once, from one node)")
            c.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for stmt in dialect.statements(_MIGRATIONS[v]):
                    c.execute(dialect.ddl(stmt))
                for stmt in dialect.triggers(_TRIGGERS.get(v, ()), True):
                    c.execute(stmt)
            self._set_version(c)
        return version, SCHEMA_VERSION


class _Checkout:
    """Outside a transaction: each statement on a pooled connection, in autocommit."""

    __slots__ = ("_store",)

    def __init__(self, store: PgBackend):
        self._store = store

    def execute(self, sql: str, args=None) -> _Rows:
        with _unavailable(), self._store._pool.connection() as conn:
            return _Conn(conn, self._store.statements).execute(sql, args)


class PgStore(PgBackend, Store):
    """The Store on PostgreSQL: PgBackend's plumbing under the same mixins."""
