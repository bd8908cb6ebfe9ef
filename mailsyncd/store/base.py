"""Plumbing: one SQLite connection per thread, short transactions, the schema migrated on open.

SQLite in WAL mode.  ``synchronous=FULL`` because a lost commit after a power cut would
turn into a duplicate on the target; it costs two fsyncs per batch (its journal, its commit), not per message.

SQLite has one writer at a time, and a writer that finds the lock taken polls for it in
sleeps of up to 100 ms (its busy handler): with many copy threads in one process the lock
sat idle between commits while they slept.  So the threads of one process queue for it on a
lock of their own (one per database file) and take it the moment it is free; the busy
handler is left for the other processes (``mailsyncctl``).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from . import dialect
from .schema import _MIGRATIONS, _TRIGGERS, SCHEMA_VERSION


class StoreError(Exception):
    pass


class UnstorableText(StoreError, ValueError):
    """A text argument the database cannot hold (PostgreSQL: a NUL character): the caller's input is bad,
    not the database; a web page answers 400.  SQLite takes such text, and simply finds nothing."""


class DatabaseUnavailable(StoreError):
    """The database server cannot be reached (down, refused, timed out): the message says where, never a password."""


_writers: dict[str, threading.RLock] = {}
_writers_lock = threading.Lock()


def _writer_lock(path: str) -> threading.RLock:
    """The lock this process's writers of the database at ``path`` queue on (shared by every StoreBase on it).
    Reentrant: a transaction begun inside another fails as SQLite says, it does not hang."""
    key = os.path.realpath(path)
    with _writers_lock:
        return _writers.setdefault(key, threading.RLock())


class StoreBase:
    """Connections and transactions: each thread gets its own SQLite connection."""

    busy_timeout = 30.0     # seconds a writer waits for the write lock: in this process's queue, then in SQLite

    def __init__(self, path: str):
        self.path = path
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, mode=0o700, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._write_lock = _writer_lock(path)
        self._migrate()

    @classmethod
    def in_state_dir(cls, state_dir: str):
        return cls(os.path.join(state_dir, "mailsyncd.sqlite3"))

    # -- plumbing --------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=FULL")
            c.execute("PRAGMA foreign_keys=ON")
            self._local.conn = c
            with self._lock:
                self._all.append(c)
        return c

    def release_thread(self) -> None:
        """Close this thread's connection: short-lived worker threads must not leave one open each."""
        c = getattr(self._local, "conn", None)
        if c is not None:
            self._local.conn = None
            with self._lock:
                # in place: a pass's fenced view (store/leases.py) shares this list
                self._all[:] = [x for x in self._all if x is not c]
            c.close()

    def _dicts(self, sql: str, args: tuple) -> list[dict]:
        """Each row as {column: value}, the columns named by the query."""
        cur = self._conn().execute(sql, args)
        keys = [d[0] for d in cur.description]
        return [dict(zip(keys, r)) for r in cur.fetchall()]

    def _for_update(self) -> str:
        """SQLite: BEGIN IMMEDIATE already holds the write lock.  PostgreSQL: ' FOR UPDATE'."""
        return ""

    def _skip_locked(self) -> str:
        """SQLite: one writer at a time, nothing to skip.  PostgreSQL: ' FOR UPDATE SKIP LOCKED'."""
        return ""

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        c = self._conn()
        # bounded like SQLite's own wait: a transaction that never ends (another process's) must not hold
        # the queue behind it for a busy timeout per writer
        if not self._write_lock.acquire(timeout=self.busy_timeout):
            raise sqlite3.OperationalError("database is locked")
        try:
            c.execute("BEGIN IMMEDIATE")
            try:
                yield c
            except BaseException:
                c.execute("ROLLBACK")
                raise
            else:
                c.execute("COMMIT")
        finally:
            self._write_lock.release()

    @contextmanager
    def _light_tx(self) -> Iterator[sqlite3.Connection]:
        """A transaction whose loss at a power cut costs nothing (throttle counters, web sessions): no
        fsync at its commit (SQLite WAL: ``synchronous=NORMAL`` for it; it is still atomic, and the
        next checkpoint makes it durable).  PostgreSQL's equivalent: ``SET LOCAL synchronous_commit
        TO OFF``.  A login costs two of these: with an fsync each, a node managed ~200 logins/s."""
        c = self._conn()
        c.execute("PRAGMA synchronous=NORMAL")
        try:
            with self._tx() as t:
                yield t
        finally:
            c.execute("PRAGMA synchronous=FULL")

    @contextmanager
    def _secret_tx(self) -> Iterator[sqlite3.Connection]:
        """A write that may replace or drop a sealed password.  The vault key stays on disk, so the
        old ciphertext left in freed page space or in the WAL would still be the password: zero freed
        space for this write (Debian's SQLite does so by default, others may not), then fold the WAL
        back into the database and truncate it (best effort: a concurrent reader can hold the
        checkpoint back, and a later one finishes the job)."""
        c = self._conn()
        was = c.execute("PRAGMA secure_delete").fetchone()[0]
        c.execute("PRAGMA secure_delete=ON")
        try:
            with self._tx() as t:
                yield t
        finally:
            c.execute(f"PRAGMA secure_delete={int(was)}")
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _after_import(self, c) -> None:
        """After copy_store() wrote explicit ids: nothing to do for SQLite's rowid."""

    def _columns(self, c) -> dict[str, set[str]]:
        """Every table of the schema as it is now, with its column names."""
        tables = [t for (t,) in c.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: {r[1] for r in c.execute(f"PRAGMA table_info({t})")} for t in tables}

    def _migrate(self) -> None:
        c = self._conn()
        if c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is not None:
            row = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is not None and int(row[0]) == SCHEMA_VERSION:
                return      # current: no write transaction (its fsync, or a wait behind the daemon's writes)
        with self._tx() as c:
            c.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: schema version {version} is newer than this mailsyncd "
                    f"understands ({SCHEMA_VERSION}); upgrade mailsyncd")
            for v in range(version + 1, SCHEMA_VERSION + 1):
                # executescript() would COMMIT mid-transaction: run the statements one by one
                for stmt in dialect.statements(_MIGRATIONS[v]) + dialect.triggers(_TRIGGERS.get(v, ()), False):
                    c.execute(stmt)
            self._set_version(c)

    @staticmethod
    def _set_version(c) -> None:
        c.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) "
                  "DO UPDATE SET value = excluded.value", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        with self._lock:
            for c in self._all:
                c.close()
            self._all.clear()
        self._local = threading.local()


def upsert(table: str, columns: str, key: str) -> str:
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` of every other column: the portable spelling of
    SQLite's INSERT OR REPLACE for a statement that names all the table's columns."""
    cols = [c.strip() for c in columns.split(",")]
    keys = {k.strip() for k in key.split(",")}
    sets = ", ".join(f"{c}=excluded.{c}" for c in cols if c not in keys)
    return (f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({','.join('?' * len(cols))})"
            f" ON CONFLICT ({key}) DO UPDATE SET {sets}")
