"""The state store: the only module that speaks SQL.

SQLite in WAL mode, one connection per thread, a versioned schema with
forward migrations.  Transactions are short: the copy engine commits once per
batch.  ``synchronous=FULL`` because a lost commit after a power cut would turn
into a duplicate on the target; it costs one fsync per batch, not per message.
No plaintext password is ever stored here: the vault hands it ciphertext and hashes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

SCHEMA_VERSION = 11

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE accounts (
        address       TEXT PRIMARY KEY,
        domain        TEXT NOT NULL,
        phase         TEXT NOT NULL DEFAULT 'new',
        last_error    TEXT,
        created       REAL NOT NULL,
        updated       REAL NOT NULL
    );
    -- one row per source folder, path is the source name with '/' as separator
    CREATE TABLE folders (
        account       TEXT NOT NULL,
        path          TEXT NOT NULL,
        source_name   TEXT NOT NULL,
        target_name   TEXT NOT NULL,
        uidvalidity   INTEGER,
        last_uid      INTEGER NOT NULL DEFAULT 0,
        uidnext       INTEGER,
        messages      INTEGER,
        highestmodseq INTEGER,
        flags_checked REAL,
        PRIMARY KEY (account, path)
    );
    -- the UID map: source message to target message, with the flags last agreed
    CREATE TABLE messages (
        account       TEXT NOT NULL,
        path          TEXT NOT NULL,
        uidvalidity   INTEGER NOT NULL,
        uid           INTEGER NOT NULL,
        target_uidvalidity INTEGER,
        target_uid    INTEGER,
        size          INTEGER NOT NULL,
        fingerprint   BLOB NOT NULL,
        flags         TEXT NOT NULL,
        PRIMARY KEY (account, path, uidvalidity, uid)
    ) WITHOUT ROWID;
    -- a batch being appended: written before APPEND, removed by the commit after it
    CREATE TABLE inflight (
        account       TEXT NOT NULL,
        path          TEXT NOT NULL,
        target_name   TEXT NOT NULL,
        target_uidvalidity INTEGER NOT NULL,
        target_uidnext INTEGER NOT NULL,
        items         TEXT NOT NULL,
        PRIMARY KEY (account, path)
    );
    CREATE TABLE skipped (
        account       TEXT NOT NULL,
        path          TEXT NOT NULL,
        uidvalidity   INTEGER NOT NULL,
        uid           INTEGER NOT NULL,
        size          INTEGER,
        reason        TEXT NOT NULL,
        at            REAL NOT NULL,
        PRIMARY KEY (account, path, uidvalidity, uid)
    );
    CREATE TABLE reports (
        account       TEXT NOT NULL,
        path          TEXT NOT NULL,
        target_name   TEXT NOT NULL,
        source_count  INTEGER,
        target_count  INTEGER,
        copied        INTEGER NOT NULL,
        present       INTEGER NOT NULL,
        skipped       INTEGER NOT NULL,
        bytes         INTEGER NOT NULL,
        seconds       REAL NOT NULL,
        error         TEXT,
        finished      REAL NOT NULL,
        PRIMARY KEY (account, path)
    );
    CREATE TABLE passes (
        id            INTEGER PRIMARY KEY,
        account       TEXT NOT NULL,
        started       REAL NOT NULL,
        finished      REAL,
        ok            INTEGER,
        copied        INTEGER,
        present       INTEGER,
        skipped       INTEGER,
        bytes         INTEGER,
        error         TEXT
    );
    CREATE INDEX passes_account ON passes (account, id);
    """,
    2: """
    -- how the account entered: 'import', 'login' or 'self_service' (NULL: before this was recorded)
    ALTER TABLE accounts ADD COLUMN plan TEXT;
    -- written by the vault only: password is AES-GCM ciphertext, verifier an argon2 hash.
    -- No foreign key: a login may be remembered before the account row exists.
    CREATE TABLE secrets (
        address       TEXT PRIMARY KEY,
        password      BLOB,
        verifier      TEXT,
        verified_at   REAL,
        updated       REAL NOT NULL
    );
    """,
    3: """
    -- per domain, set by `mailsyncctl cutover`: overrides the YAML's cutover time while present.
    -- state: scheduled | cancelled | final_pass | done
    -- (final_pass -> done is the point of no return: see Store.close_cutover)
    CREATE TABLE cutovers (
        domain        TEXT PRIMARY KEY,
        at            REAL,
        state         TEXT NOT NULL,
        note          TEXT,
        updated       REAL NOT NULL
    );
    CREATE INDEX accounts_domain ON accounts (domain);
    """,
    4: """
    -- the account's login at the source when it differs from its (target) address: a CSV
    -- import or the self-service page may rename. NULL: the same address.
    ALTER TABLE accounts ADD COLUMN source_address TEXT;
    """,
    5: """
    -- POP3 sources (sync/pop3.py): one row per source message copied to (or refused by) the target.
    -- id numbers the rows of an account (shown as "uid" in the skipped table, path 'INBOX (pop3)');
    -- uidl is NULL for messages copied under the no-UIDL fallback, which matches by size+fingerprint.
    CREATE TABLE pop3_messages (
        account       TEXT NOT NULL,
        id            INTEGER NOT NULL,
        uidl          TEXT,
        size          INTEGER NOT NULL,
        fingerprint   BLOB NOT NULL,
        target_name   TEXT NOT NULL,
        target_uidvalidity INTEGER,
        target_uid    INTEGER,
        skipped       TEXT,
        at            REAL NOT NULL,
        PRIMARY KEY (account, id)
    );
    CREATE UNIQUE INDEX pop3_messages_uidl ON pop3_messages (account, target_name, uidl);
    -- a POP3 batch being appended: written before APPEND, removed by the commit after it
    CREATE TABLE pop3_inflight (
        account       TEXT PRIMARY KEY,
        target_name   TEXT NOT NULL,
        target_uidvalidity INTEGER NOT NULL,
        target_uidnext INTEGER NOT NULL,
        items         TEXT NOT NULL
    );
    """,
    6: """
    -- when the "your mail has been moved" notice was appended to the account's new INBOX
    ALTER TABLE accounts ADD COLUMN notice_sent REAL;
    """,
    7: """
    -- the source folder's size in bytes at its last STATUS (STATUS=SIZE, RFC 8438), NULL where unknown
    ALTER TABLE folders ADD COLUMN size INTEGER;
    """,
    8: """
    -- sync.deletions: mirror (sync/expunge.py). A target message being expunged because its source
    -- message is gone: written before UID STORE +FLAGS (the Deleted flag), removed with its UID map row once
    -- the target no longer holds it. A row left by a crash lets the next pass finish the expunge.
    CREATE TABLE deleting (
        account       TEXT NOT NULL,
        path          TEXT NOT NULL,
        uidvalidity   INTEGER NOT NULL,
        uid           INTEGER NOT NULL,
        target_uid    INTEGER NOT NULL,
        PRIMARY KEY (account, path, uidvalidity, uid)
    );
    -- messages a pass expunged on the target, and why it held deletions back (NULL: it did not)
    ALTER TABLE reports ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE reports ADD COLUMN held TEXT;
    ALTER TABLE passes ADD COLUMN deleted INTEGER;
    """,
    9: """
    -- client networks (IPv4 /32, IPv6 /64 prefixes, never a full IPv6 address) a user logged in from:
    -- they keep their own login budget when strangers guess the user's password (auth/throttle.py)
    CREATE TABLE known_networks (
        address       TEXT NOT NULL,
        network       TEXT NOT NULL,
        last_ok       REAL NOT NULL,
        PRIMARY KEY (address, network)
    );
    CREATE INDEX known_networks_last_ok ON known_networks (last_ok);
    """,
    10: """
    -- folders.target_name is the mapping recorded at the folder's first copy; would_be is where
    -- the current plan would put it instead (config or servers changed), until `mailsyncctl remap`
    -- applies it. NULL: no change pending.
    ALTER TABLE folders ADD COLUMN would_be TEXT;
    -- messages in the report's target folder that did not come from any source folder (there before)
    ALTER TABLE reports ADD COLUMN already_there INTEGER;
    """,
    11: """
    -- one in-flight journal for both engines (sync/appender.py): a POP3 batch is the row of path
    -- 'INBOX (pop3)', its items [uidl, size, fingerprint] where an IMAP batch's are [uid, size, fp, flags]
    INSERT OR REPLACE INTO inflight SELECT account, 'INBOX (pop3)', target_name, target_uidvalidity,
        target_uidnext, items FROM pop3_inflight;
    DROP TABLE pop3_inflight;
    """,
}

KNOWN_NETWORK_DAYS = 30


class StoreError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class FolderState:
    path: str
    source_name: str
    target_name: str
    uidvalidity: int | None
    last_uid: int
    uidnext: int | None
    messages: int | None
    highestmodseq: int | None
    flags_checked: float | None


@dataclass(frozen=True, slots=True)
class MapRow:
    uid: int
    target_uidvalidity: int | None
    target_uid: int | None
    size: int
    fingerprint: bytes
    flags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class InflightItem:
    key: int | str | None           # what the engine knows the message by: an IMAP UID, a POP3 UIDL
    size: int
    fingerprint: bytes
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Inflight:
    target_name: str
    target_uidvalidity: int
    target_uidnext: int
    items: tuple[InflightItem, ...]


@dataclass(frozen=True, slots=True)
class FolderReport:
    path: str
    target_name: str
    source_count: int | None
    target_count: int | None
    copied: int
    present: int
    skipped: int
    bytes: int
    seconds: float
    error: str | None
    finished: float
    deleted: int = 0                # expunged on the target because the source expunged them
    held: str | None = None         # why this pass deleted less than the source did
    # messages in target_name that came from no source folder (on the target before); one figure
    # per target folder, so a merged target's is the same on each of its source folders' rows
    already_there: int | None = None


@dataclass(frozen=True, slots=True)
class Pop3Row:
    """A POP3 source message on the target (or refused by it: ``skipped`` holds the reason)."""
    uidl: str | None
    size: int
    fingerprint: bytes
    target_uidvalidity: int | None = None
    target_uid: int | None = None
    skipped: str | None = None
    id: int | None = None          # assigned by the store


POP3_PATH = "INBOX (pop3)"   # a POP3 INBOX's path in the skipped table and the in-flight journal


def flags_text(flags: Iterable[str]) -> str:
    return " ".join(sorted(flags))


def flags_tuple(text: str) -> tuple[str, ...]:
    return tuple(text.split()) if text else ()


class Store:
    """Thread-safe facade: each thread gets its own SQLite connection."""

    def __init__(self, path: str):
        self.path = path
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, mode=0o700, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._migrate()

    @classmethod
    def in_state_dir(cls, state_dir: str) -> Store:
        return cls(os.path.join(state_dir, "mailsyncd.sqlite3"))

    # -- plumbing --------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
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
                self._all = [x for x in self._all if x is not c]
            c.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        else:
            c.execute("COMMIT")

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

    def _migrate(self) -> None:
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
                sql = "\n".join(line.split("--", 1)[0] for line in _MIGRATIONS[v].splitlines())
                for stmt in sql.split(";"):
                    if stmt.strip():
                        c.execute(stmt)
            c.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        with self._lock:
            for c in self._all:
                c.close()
            self._all.clear()
        self._local = threading.local()

    # -- accounts ----------------------------------------------------------
    def set_source_address(self, address: str, source_address: str | None) -> None:
        with self._tx() as c:
            c.execute("UPDATE accounts SET source_address=?, updated=? WHERE address=?",
                      (None if source_address == address else source_address, time.time(), address))

    def ensure_account(self, address: str, domain: str, plan: str | None = None) -> None:
        now = time.time()
        with self._tx() as c:
            c.execute("INSERT OR IGNORE INTO accounts (address, domain, plan, created, updated) VALUES (?,?,?,?,?)",
                      (address, domain, plan, now, now))
            if plan is not None:
                # the first plan recorded wins: a later login must not relabel an imported account
                c.execute("UPDATE accounts SET plan=?, updated=? WHERE address=? AND plan IS NULL",
                          (plan, now, address))

    def notice_sent(self, address: str) -> float | None:
        row = self._conn().execute("SELECT notice_sent FROM accounts WHERE address=?", (address,)).fetchone()
        return row[0] if row else None

    def mark_notice_sent(self, address: str) -> None:
        with self._tx() as c:
            c.execute("UPDATE accounts SET notice_sent=? WHERE address=?", (time.time(), address))

    def set_phase(self, address: str, phase: str, error: str | None = None) -> None:
        with self._tx() as c:
            c.execute("UPDATE accounts SET phase=?, last_error=?, updated=? WHERE address=?",
                      (phase, error, time.time(), address))

    def phase_counts(self, domain: str | None = None) -> dict[str, int]:
        sql, args = "SELECT phase, count(*) FROM accounts", ()
        if domain is not None:
            sql, args = sql + " WHERE domain = ?", (domain,)
        return dict(self._conn().execute(sql + " GROUP BY phase", args).fetchall())

    def accounts(self, domain: str | None = None) -> list[dict]:
        """Every account with its phase, whether a source password is stored, and its source size."""
        sql = ("SELECT a.address, a.domain, a.phase, a.last_error, a.plan, s.password IS NOT NULL, "
               "s.verifier IS NOT NULL, (SELECT coalesce(sum(f.messages), 0) FROM folders f "
               "WHERE f.account = a.address), a.source_address "
               "FROM accounts a LEFT JOIN secrets s ON s.address = a.address")
        args: tuple = ()
        if domain is not None:
            sql += " WHERE a.domain = ?"
            args = (domain,)
        keys = ("address", "domain", "phase", "last_error", "plan", "has_password", "has_verifier", "messages",
                "source_address")
        return [dict(zip(keys, row)) for row in self._conn().execute(sql + " ORDER BY a.address", args)]

    def progress_rows(self, domain: str | None = None, user: str | None = None) -> list[dict]:
        """Per account, the numbers mailsyncd.status turns into every progress view.

        Source counts are the folders' last STATUS (POP3: the last report); target counts are the
        UID map's rows (an index range per account, no table scan).
        """
        sql = """SELECT a.address, a.domain, a.phase, a.last_error, a.plan, a.source_address,
            s.password IS NOT NULL,
            coalesce((SELECT sum(f.messages) FROM folders f WHERE f.account = a.address), 0),
            coalesce((SELECT sum(r.source_count) FROM reports r WHERE r.account = a.address), 0),
            (SELECT sum(f.size) FROM folders f WHERE f.account = a.address),
            (SELECT count(*) FROM messages m WHERE m.account = a.address)
              + (SELECT count(*) FROM pop3_messages p WHERE p.account = a.address AND p.skipped IS NULL),
            coalesce((SELECT sum(m.size) FROM messages m WHERE m.account = a.address), 0)
              + coalesce((SELECT sum(p.size) FROM pop3_messages p
                          WHERE p.account = a.address AND p.skipped IS NULL), 0),
            (SELECT count(*) FROM skipped k WHERE k.account = a.address),
            (SELECT ps.finished FROM passes ps WHERE ps.account = a.address AND ps.finished IS NOT NULL
             ORDER BY ps.id DESC LIMIT 1),
            (SELECT ps.ok FROM passes ps WHERE ps.account = a.address AND ps.finished IS NOT NULL
             ORDER BY ps.id DESC LIMIT 1)
            FROM accounts a LEFT JOIN secrets s ON s.address = a.address"""
        where, args = [], []
        if domain is not None:
            where.append("a.domain = ?")
            args.append(domain)
        if user is not None:
            where.append("a.address = ?")
            args.append(user)
        if where:
            sql += " WHERE " + " AND ".join(where)
        out = []
        for r in self._conn().execute(sql + " ORDER BY a.address", args):
            out.append({"address": r[0], "domain": r[1], "phase": r[2], "last_error": r[3], "plan": r[4],
                        "source_address": r[5], "has_password": bool(r[6]),
                        "source_messages": r[7] or r[8], "source_bytes": r[9], "target_messages": r[10],
                        "bytes": r[11], "skipped": r[12], "last_pass_finished": r[13],
                        "last_pass_ok": None if r[14] is None else bool(r[14])})
        return out

    def cutover(self, domain: str) -> dict | None:
        return self._cutover_row(self._conn(), domain)

    def cutovers(self) -> dict[str, dict]:
        rows = self._conn().execute("SELECT domain, at, state, note, updated FROM cutovers").fetchall()
        return {r[0]: dict(zip(("domain", "at", "state", "note", "updated"), r)) for r in rows}

    def set_cutover(self, domain: str, at: float | None, state: str, note: str | None = None) -> None:
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO cutovers (domain, at, state, note, updated) VALUES (?,?,?,?,?)",
                      (domain, at, state, note, time.time()))

    # The cancel rule, decided here and only here, each in one transaction: a cancel succeeds until
    # the scheduler has closed the cutover (final_pass -> done, with every account's phase), and the
    # scheduler starts or closes a cutover only if it was not cancelled or moved meanwhile.
    def cancel_cutover(self, domain: str, note: str) -> dict | None:
        """Cancel unless past the point of no return; None if cancelled, else the row that stopped it."""
        with self._tx() as c:
            row = self._cutover_row(c, domain)
            if row is not None and row["state"] == "done":
                return row
            c.execute("INSERT OR REPLACE INTO cutovers (domain, at, state, note, updated) VALUES (?,?,?,?,?)",
                      (domain, None, "cancelled", note, time.time()))
        return None

    def begin_cutover(self, domain: str, at: float | None, note: str, now: float) -> dict | None:
        """Step 1 (final passes), unless the row says otherwise by now: None if begun, else that row."""
        with self._tx() as c:
            row = self._cutover_row(c, domain)
            if row is not None and (row["state"] in ("cancelled", "done") or (
                    row["state"] == "scheduled" and (row["at"] is None or row["at"] > now))):
                return row
            c.execute("INSERT OR REPLACE INTO cutovers (domain, at, state, note, updated) VALUES (?,?,?,?,?)",
                      (domain, at, "final_pass", note, now))
        return None

    def close_cutover(self, domain: str, note: str) -> int | None:
        """Step 2, the point of no return: final_pass -> done and every account's phase ``cutover``,
        together.  None (and nothing changed) if the cutover is no longer in its final passes."""
        now = time.time()
        with self._tx() as c:
            cur = c.execute("UPDATE cutovers SET state='done', note=?, updated=? WHERE domain=? AND state='final_pass'",
                            (note, now, domain))
            if cur.rowcount == 0:
                return None
            return c.execute("UPDATE accounts SET phase='cutover', last_error=NULL, updated=? WHERE domain=?",
                             (now, domain)).rowcount

    @staticmethod
    def _cutover_row(c: sqlite3.Connection, domain: str) -> dict | None:
        row = c.execute("SELECT domain, at, state, note, updated FROM cutovers WHERE domain=?", (domain,)).fetchone()
        return dict(zip(("domain", "at", "state", "note", "updated"), row)) if row else None

    def clear_cutover(self, domain: str) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM cutovers WHERE domain=?", (domain,))

    def account(self, address: str) -> dict | None:
        row = self._conn().execute(
            "SELECT address, domain, phase, last_error, created, updated, plan, source_address FROM accounts "
            "WHERE address=?", (address,)).fetchone()
        if row is None:
            return None
        return dict(zip(("address", "domain", "phase", "last_error", "created", "updated", "plan",
                         "source_address"), row))

    # -- client networks a user logged in from -------------------------------------
    def remember_network(self, address: str, network: str, *, now: float | None = None) -> None:
        """A login from ``network`` succeeded; forget networks unused for KNOWN_NETWORK_DAYS."""
        now = time.time() if now is None else now
        with self._tx() as c:
            c.execute("INSERT INTO known_networks VALUES (?, ?, ?) ON CONFLICT (address, network) "
                      "DO UPDATE SET last_ok = excluded.last_ok", (address, network, now))
            c.execute("DELETE FROM known_networks WHERE last_ok < ?", (now - KNOWN_NETWORK_DAYS * 86400,))

    def is_known_network(self, address: str, network: str, *, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self._conn().execute(
            "SELECT 1 FROM known_networks WHERE address = ? AND network = ? AND last_ok >= ?",
            (address, network, now - KNOWN_NETWORK_DAYS * 86400)).fetchone() is not None

    # -- secrets (opaque to the store: see vault.py) ---------------------------
    def import_accounts(self, items: Iterable[tuple[str, str, str, str | None, bytes | None]]) -> None:
        """(address, domain, plan, source_address, sealed password or None) rows, in ONE transaction:
        a CSV import is all or nothing."""
        now = time.time()
        with self._secret_tx() as c:
            for address, domain, plan, source, blob in items:
                c.execute("INSERT OR IGNORE INTO accounts (address, domain, plan, created, updated) "
                          "VALUES (?,?,?,?,?)", (address, domain, plan, now, now))
                c.execute("UPDATE accounts SET plan=coalesce(plan, ?), source_address=?, updated=? "
                          "WHERE address=?", (plan, None if source == address else source, now, address))
                if blob is not None:
                    c.execute("INSERT INTO secrets (address, password, updated) VALUES (?,?,?) ON CONFLICT "
                              "(address) DO UPDATE SET password=excluded.password, updated=excluded.updated",
                              (address, blob, now))
            self._bump(c, "accounts_rev")

    @staticmethod
    def _bump(c: sqlite3.Connection, key: str) -> None:
        c.execute("INSERT INTO meta (key, value) VALUES (?, '1') ON CONFLICT (key) "
                  "DO UPDATE SET value = CAST(value AS INTEGER) + 1", (key,))

    def revision(self, key: str = "accounts_rev") -> int:
        """A counter bumped by out-of-process changes (an import), so the daemon can notice them."""
        row = self._conn().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def put_secret_password(self, address: str, blob: bytes) -> None:
        with self._secret_tx() as c:
            c.execute("INSERT INTO secrets (address, password, updated) VALUES (?,?,?)"
                      " ON CONFLICT (address) DO UPDATE SET password=excluded.password, updated=excluded.updated",
                      (address, blob, time.time()))

    def secret_password(self, address: str) -> bytes | None:
        row = self._conn().execute("SELECT password FROM secrets WHERE address=?", (address,)).fetchone()
        return bytes(row[0]) if row and row[0] is not None else None

    def forget_secret_password(self, address: str) -> None:
        """Drop the stored ciphertext, keep the verifier."""
        with self._secret_tx() as t:
            t.execute("UPDATE secrets SET password=NULL, updated=? WHERE address=?", (time.time(), address))

    def put_verifier(self, address: str, verifier: str, verified_at: float) -> None:
        with self._tx() as c:
            c.execute("INSERT INTO secrets (address, verifier, verified_at, updated) VALUES (?,?,?,?)"
                      " ON CONFLICT (address) DO UPDATE SET verifier=excluded.verifier,"
                      " verified_at=excluded.verified_at, updated=excluded.updated",
                      (address, verifier, verified_at, time.time()))

    def verifier(self, address: str) -> tuple[str, float] | None:
        row = self._conn().execute(
            "SELECT verifier, verified_at FROM secrets WHERE address=? AND verifier IS NOT NULL",
            (address,)).fetchone()
        return (row[0], row[1]) if row else None

    def put_login(self, address: str, blob: bytes, verifier: str, verified_at: float) -> None:
        """Password and verifier together, so that neither can be stale with respect to the other."""
        with self._secret_tx() as c:
            c.execute("INSERT OR REPLACE INTO secrets (address, password, verifier, verified_at, updated)"
                      " VALUES (?,?,?,?,?)", (address, blob, verifier, verified_at, time.time()))

    # -- folders -----------------------------------------------------------
    def folder(self, account: str, path: str) -> FolderState | None:
        row = self._conn().execute(
            "SELECT path, source_name, target_name, uidvalidity, last_uid, uidnext, messages,"
            " highestmodseq, flags_checked FROM folders WHERE account=? AND path=?",
            (account, path)).fetchone()
        return FolderState(*row) if row else None

    def folders(self, account: str) -> dict[str, FolderState]:
        rows = self._conn().execute(
            "SELECT path, source_name, target_name, uidvalidity, last_uid, uidnext, messages,"
            " highestmodseq, flags_checked FROM folders WHERE account=?", (account,)).fetchall()
        return {r[0]: FolderState(*r) for r in rows}

    def set_source_sizes(self, account: str, sizes: dict[str, int]) -> None:
        with self._tx() as c:
            c.executemany("UPDATE folders SET size=? WHERE account=? AND path=?",
                          [(size, account, path) for path, size in sizes.items()])

    def save_folder(self, account: str, st: FolderState) -> None:
        with self._tx() as c:
            # an upsert, not INSERT OR REPLACE: that would drop the columns not named here (would_be)
            c.execute(
                "INSERT INTO folders (account, path, source_name, target_name, uidvalidity,"
                " last_uid, uidnext, messages, highestmodseq, flags_checked) VALUES (?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (account, path) DO UPDATE SET source_name=excluded.source_name,"
                " target_name=excluded.target_name, uidvalidity=excluded.uidvalidity, last_uid=excluded.last_uid,"
                " uidnext=excluded.uidnext, messages=excluded.messages, highestmodseq=excluded.highestmodseq,"
                " flags_checked=excluded.flags_checked",
                (account, st.path, st.source_name, st.target_name, st.uidvalidity, st.last_uid,
                 st.uidnext, st.messages, st.highestmodseq, st.flags_checked))

    # -- the UID map ---------------------------------------------------------
    def mapped_uids(self, account: str, path: str, uidvalidity: int, above: int = 0) -> set[int]:
        rows = self._conn().execute(
            "SELECT uid FROM messages WHERE account=? AND path=? AND uidvalidity=? AND uid>?",
            (account, path, uidvalidity, above))
        return {r[0] for r in rows}

    def map_rows(self, account: str, path: str, uidvalidity: int,
                 uids: Iterable[int] | None = None) -> dict[int, MapRow]:
        c = self._conn()
        q = ("SELECT uid, target_uidvalidity, target_uid, size, fingerprint, flags FROM messages"
             " WHERE account=? AND path=? AND uidvalidity=?")
        if uids is None:
            rows = c.execute(q, (account, path, uidvalidity)).fetchall()
        else:
            rows = []
            ul = list(uids)
            for i in range(0, len(ul), 500):
                chunk = ul[i:i + 500]
                rows += c.execute(q + f" AND uid IN ({','.join('?' * len(chunk))})",
                                  (account, path, uidvalidity, *chunk)).fetchall()
        return {r[0]: MapRow(r[0], r[1], r[2], r[3], bytes(r[4]), flags_tuple(r[5])) for r in rows}

    def account_counts(self, account: str) -> tuple[int, int, int]:
        """(messages on the target, their bytes, messages skipped) over all folders: a cheap progress figure."""
        c = self._conn()
        mapped, nbytes = c.execute("SELECT count(*), coalesce(sum(size), 0) FROM messages WHERE account=?",
                                   (account,)).fetchone()
        skipped = c.execute("SELECT count(*) FROM skipped WHERE account=?", (account,)).fetchone()[0]
        return mapped, nbytes, skipped

    def count_mapped(self, account: str, path: str, uidvalidity: int) -> int:
        return self._conn().execute(
            "SELECT count(*) FROM messages WHERE account=? AND path=? AND uidvalidity=?",
            (account, path, uidvalidity)).fetchone()[0]

    def count_mapped_into(self, account: str, target_name: str) -> int:
        """Messages the UID map puts in ``target_name``, from every source folder recorded there."""
        return self._conn().execute(
            "SELECT count(*) FROM messages m JOIN folders f ON f.account = m.account AND f.path = m.path"
            " AND f.uidvalidity = m.uidvalidity WHERE f.account=? AND f.target_name=?",
            (account, target_name)).fetchone()[0]

    # -- recorded mappings ---------------------------------------------------
    def set_mapping_changes(self, account: str, would_be: dict[str, str]) -> None:
        """The plan's new targets for folders that keep their recorded one; clears the others."""
        with self._tx() as c:
            c.execute("UPDATE folders SET would_be=NULL WHERE account=? AND would_be IS NOT NULL", (account,))
            c.executemany("UPDATE folders SET would_be=? WHERE account=? AND path=?",
                          [(new, account, path) for path, new in would_be.items()])

    def mapping_changes(self, account: str) -> list[tuple[str, str, str]]:
        """(path, recorded target, the plan's target) of every change not applied."""
        return [tuple(r) for r in self._conn().execute(
            "SELECT path, target_name, would_be FROM folders WHERE account=? AND would_be IS NOT NULL"
            " ORDER BY path", (account,))]

    def apply_remap(self, account: str, path: str, uidvalidity: int, new_target: str,
                    moved: dict[int, tuple[int, int]]) -> None:
        """After the messages moved: the folder's new target and their new target UIDs
        (source uid -> (target uidvalidity, target uid)), in one transaction."""
        with self._tx() as c:
            c.execute("UPDATE folders SET target_name=?, would_be=NULL WHERE account=? AND path=?",
                      (new_target, account, path))
            # a row whose message was not found in the old target any more points nowhere: NULL, not stale
            c.execute("UPDATE messages SET target_uid=NULL WHERE account=? AND path=? AND uidvalidity=?",
                      (account, path, uidvalidity))
            c.executemany("UPDATE messages SET target_uidvalidity=?, target_uid=? WHERE account=? AND path=?"
                          " AND uidvalidity=? AND uid=?",
                          [(tv, tu, account, path, uidvalidity, uid) for uid, (tv, tu) in moved.items()])
            c.execute("UPDATE reports SET target_name=? WHERE account=? AND path=?", (new_target, account, path))

    def update_flags(self, account: str, path: str, uidvalidity: int,
                     flags: dict[int, tuple[str, ...]]) -> None:
        with self._tx() as c:
            c.executemany(
                "UPDATE messages SET flags=? WHERE account=? AND path=? AND uidvalidity=? AND uid=?",
                [(flags_text(f), account, path, uidvalidity, uid) for uid, f in flags.items()])

    def replace_uidvalidity(self, account: str, path: str, old: int, new: int,
                            rows: dict[int, MapRow]) -> None:
        """After a UIDVALIDITY change: drop the old map, keep the re-matched rows under the new one."""
        with self._tx() as c:
            c.execute("DELETE FROM messages WHERE account=? AND path=? AND uidvalidity=?", (account, path, old))
            c.execute("DELETE FROM skipped WHERE account=? AND path=? AND uidvalidity=?", (account, path, old))
            c.execute("DELETE FROM deleting WHERE account=? AND path=? AND uidvalidity=?", (account, path, old))
            c.executemany(
                "INSERT OR REPLACE INTO messages VALUES (?,?,?,?,?,?,?,?,?)",
                [(account, path, new, r.uid, r.target_uidvalidity, r.target_uid, r.size, r.fingerprint,
                  flags_text(r.flags)) for r in rows.values()])

    # -- deletions (sync.deletions: mirror) ------------------------------------
    def begin_deletions(self, account: str, path: str, uidvalidity: int, items: dict[int, int]) -> None:
        """Record the intent (source UID -> target UID) before the target is touched."""
        with self._tx() as c:
            c.executemany("INSERT OR REPLACE INTO deleting VALUES (?,?,?,?,?)",
                          [(account, path, uidvalidity, uid, tuid) for uid, tuid in items.items()])

    def pending_deletions(self, account: str, path: str, uidvalidity: int) -> dict[int, int]:
        """Expunges begun and not confirmed (a crash or a lost connection): source UID -> target UID."""
        return dict(self._conn().execute(
            "SELECT uid, target_uid FROM deleting WHERE account=? AND path=? AND uidvalidity=?",
            (account, path, uidvalidity)).fetchall())

    def commit_deletions(self, account: str, path: str, uidvalidity: int, gone: Iterable[int]) -> None:
        """Forget the messages (by source UID) the target no longer holds, with their intents: only
        once the target has answered.  Intents of messages it still holds stay for the next pass."""
        args = [(account, path, uidvalidity, uid) for uid in gone]
        with self._tx() as c:
            c.executemany("DELETE FROM messages WHERE account=? AND path=? AND uidvalidity=? AND uid=?", args)
            c.executemany("DELETE FROM deleting WHERE account=? AND path=? AND uidvalidity=? AND uid=?", args)

    # -- a batch in flight (either engine: POP3 under POP3_PATH) ----------------------
    def begin_batch(self, account: str, path: str, inflight: Inflight) -> None:
        items = [[i.key, i.size, i.fingerprint.hex(), list(i.flags)] for i in inflight.items]
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO inflight VALUES (?,?,?,?,?,?)",
                      (account, path, inflight.target_name, inflight.target_uidvalidity,
                       inflight.target_uidnext, json.dumps(items)))

    def inflight(self, account: str, path: str) -> Inflight | None:
        row = self._conn().execute(
            "SELECT target_name, target_uidvalidity, target_uidnext, items FROM inflight"
            " WHERE account=? AND path=?", (account, path)).fetchone()
        if row is None:
            return None
        # a POP3 batch journalled before schema 11 has no flags
        items = tuple(InflightItem(k, s, bytes.fromhex(fp), tuple(f[0]) if f else ())
                      for k, s, fp, *f in json.loads(row[3]))
        return Inflight(row[0], row[1], row[2], items)

    def commit_batch(self, account: str, path: str, uidvalidity: int, rows: Iterable[MapRow],
                     skipped: Iterable[tuple[int, int, str]], last_uid: int | None) -> None:
        """Record what landed, what was skipped, advance the mark and clear the in-flight record: atomically."""
        now = time.time()
        with self._tx() as c:
            c.executemany(
                "INSERT OR REPLACE INTO messages VALUES (?,?,?,?,?,?,?,?,?)",
                [(account, path, uidvalidity, r.uid, r.target_uidvalidity, r.target_uid, r.size,
                  r.fingerprint, flags_text(r.flags)) for r in rows])
            c.executemany(
                "INSERT OR REPLACE INTO skipped VALUES (?,?,?,?,?,?,?)",
                [(account, path, uidvalidity, uid, size, reason, now) for uid, size, reason in skipped])
            if last_uid is not None:
                c.execute("UPDATE folders SET last_uid=max(last_uid, ?) WHERE account=? AND path=?",
                          (last_uid, account, path))
            c.execute("DELETE FROM inflight WHERE account=? AND path=?", (account, path))

    def skipped(self, account: str, path: str | None = None) -> list[tuple[str, int, int, str]]:
        q = "SELECT path, uid, size, reason FROM skipped WHERE account=?"
        args: tuple = (account,)
        if path is not None:
            q += " AND path=?"
            args += (path,)
        return [tuple(r) for r in self._conn().execute(q + " ORDER BY path, uid", args)]

    def count_skipped(self, account: str, path: str, uidvalidity: int) -> int:
        return self._conn().execute(
            "SELECT count(*) FROM skipped WHERE account=? AND path=? AND uidvalidity=?",
            (account, path, uidvalidity)).fetchone()[0]

    # -- reports -------------------------------------------------------------
    def save_report(self, account: str, r: FolderReport) -> None:
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO reports (account, path, target_name, source_count, target_count,"
                      " copied, present, skipped, bytes, seconds, error, finished, deleted, held, already_there)"
                      " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                      (account, r.path, r.target_name, r.source_count, r.target_count, r.copied,
                       r.present, r.skipped, r.bytes, r.seconds, r.error, r.finished, r.deleted, r.held,
                       r.already_there))

    def reports(self, account: str) -> list[FolderReport]:
        rows = self._conn().execute(
            "SELECT path, target_name, source_count, target_count, copied, present, skipped, bytes,"
            " seconds, error, finished, deleted, held, already_there FROM reports WHERE account=? ORDER BY path",
            (account,)).fetchall()
        return [FolderReport(*r) for r in rows]

    def start_pass(self, account: str) -> int:
        with self._tx() as c:
            cur = c.execute("INSERT INTO passes (account, started) VALUES (?,?)", (account, time.time()))
            return cur.lastrowid

    def finish_pass(self, pass_id: int, *, ok: bool, copied: int, present: int, skipped: int,
                    nbytes: int, error: str | None, deleted: int = 0) -> None:
        with self._tx() as c:
            c.execute("UPDATE passes SET finished=?, ok=?, copied=?, present=?, skipped=?, bytes=?, error=?,"
                      " deleted=? WHERE id=?",
                      (time.time(), int(ok), copied, present, skipped, nbytes, error, deleted, pass_id))

    def passes(self, account: str, limit: int = 10) -> list[dict]:
        rows = self._conn().execute(
            "SELECT started, finished, ok, copied, present, skipped, bytes, error FROM passes"
            " WHERE account=? ORDER BY id DESC LIMIT ?", (account, limit)).fetchall()
        keys = ("started", "finished", "ok", "copied", "present", "skipped", "bytes", "error")
        return [dict(zip(keys, r)) for r in rows]

    def last_pass(self, account: str) -> dict | None:
        row = self._conn().execute(
            "SELECT started, finished, ok, copied, present, skipped, bytes, error, deleted FROM passes"
            " WHERE account=? ORDER BY id DESC LIMIT 1", (account,)).fetchone()
        if row is None:
            return None
        return dict(zip(("started", "finished", "ok", "copied", "present", "skipped", "bytes", "error", "deleted"),
                        row))

    # -- POP3 sources (sync/pop3.py) --------------------------------------------
    def pop3_rows(self, account: str, target_name: str) -> list[Pop3Row]:
        """Everything recorded for this account's POP3 INBOX in ``target_name``: copied and refused."""
        rows = self._conn().execute(
            "SELECT uidl, size, fingerprint, target_uidvalidity, target_uid, skipped, id FROM pop3_messages"
            " WHERE account=? AND target_name=? ORDER BY id", (account, target_name)).fetchall()
        return [Pop3Row(r[0], r[1], bytes(r[2]), r[3], r[4], r[5], r[6]) for r in rows]

    def pop3_commit_batch(self, account: str, target_name: str, rows: Iterable[Pop3Row],
                          claims: dict[int, str] | None = None) -> list[Pop3Row]:
        """Record what landed and what the target refused, give rows their current UIDL (``claims``:
        row id -> UIDL; for rows copied without one or under one the server no longer lists), and
        clear the in-flight record: atomically.

        Refused rows are also entered in the skipped table (path POP3_PATH, uid = the row's
        id) so that reports list them.  Returns the rows with their ids.
        """
        now = time.time()
        out = []
        with self._tx() as c:
            nxt = c.execute("SELECT coalesce(max(id), 0) + 1 FROM pop3_messages WHERE account=?",
                            (account,)).fetchone()[0]
            for r in rows:
                # a UIDL already recorded (a recovered batch that had been committed) stays as it is
                if c.execute("INSERT OR IGNORE INTO pop3_messages VALUES (?,?,?,?,?,?,?,?,?,?)",
                             (account, nxt, r.uidl, r.size, r.fingerprint, target_name, r.target_uidvalidity,
                              r.target_uid, r.skipped, now)).rowcount == 0:
                    continue
                if r.skipped is not None:
                    c.execute("INSERT OR REPLACE INTO skipped VALUES (?,?,?,?,?,?,?)",
                              (account, POP3_PATH, 0, nxt, r.size, r.skipped, now))
                out.append(Pop3Row(r.uidl, r.size, r.fingerprint, r.target_uidvalidity, r.target_uid,
                                   r.skipped, nxt))
                nxt += 1
            for rid, uidl in (claims or {}).items():
                c.execute("UPDATE pop3_messages SET uidl=? WHERE account=? AND id=?", (uidl, account, rid))
            c.execute("DELETE FROM inflight WHERE account=? AND path=?", (account, POP3_PATH))
        return out
