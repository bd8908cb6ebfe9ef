"""The per-account totals (schema 16, store table account_totals) stay equal to the rows they count.

Real passes against the Dovecot pair, on both backends: copies, a crash between APPEND and the commit
and its recovery, messages the target refuses (skipped), messages expunged at the source and forgotten
(sync.deletions: mirror), a folder deleted and recreated at the source (new UIDVALIDITY: its old rows go),
a POP3 source, and the account's removal.  After each step the kept totals must equal a fresh count.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time

import pytest

from mailsyncd.config import load_config
from mailsyncd.store import Store
from seed import Msg, connect, make_message, seed
from syncenv import make_config, on_backend, sync_once

A = "alice@example.com"

COLUMNS = "messages, bytes, skipped, source_messages, source_bytes, sized_folders, folders, reported, reports"
# what the triggers keep, counted afresh from the rows (the migration's fill query)
RECOUNT = """SELECT account, sum(n), sum(b), sum(k), sum(sm), sum(sb), sum(sf), sum(nf), sum(rp), sum(nr) FROM (
    SELECT account, 1 AS n, size AS b, 0 AS k, 0 AS sm, 0 AS sb, 0 AS sf, 0 AS nf, 0 AS rp, 0 AS nr FROM messages
    UNION ALL SELECT account, 1, size, 0, 0, 0, 0, 0, 0, 0 FROM pop3_messages WHERE skipped IS NULL
    UNION ALL SELECT account, 0, 0, 1, 0, 0, 0, 0, 0, 0 FROM skipped
    UNION ALL SELECT account, 0, 0, 0, coalesce(messages, 0), coalesce(size, 0),
                     CASE WHEN size IS NULL THEN 0 ELSE 1 END, 1, 0, 0 FROM folders
    UNION ALL SELECT account, 0, 0, 0, 0, 0, 0, 0, coalesce(source_count, 0), 1 FROM reports) x
    GROUP BY account ORDER BY account"""


def _d(i: int) -> dt.datetime:
    return dt.datetime(2022, 5, 1, 9, 0, tzinfo=dt.timezone.utc) + dt.timedelta(hours=i)


def _msgs(numbers, big=()) -> list[Msg]:
    return [Msg(make_message(i, size=300_000 if i in big else 1500 + 37 * i), (), _d(i)) for i in numbers]


def totals(cfg: str) -> tuple[list, list]:
    """(kept, recounted): each [(account, COLUMNS...)] of the accounts that have any row counted."""
    store = Store.open(load_config(cfg))
    try:
        c = store._conn()
        kept = [tuple(r) for r in c.execute(f"SELECT account, {COLUMNS} FROM account_totals ORDER BY account")
                if any(r[1:])]
        return kept, [tuple(int(v) if not isinstance(v, str) else v for v in r) for r in c.execute(RECOUNT)]
    finally:
        store.close()


def assert_exact(cfg: str, messages: int, skipped: int) -> None:
    kept, recount = totals(cfg)
    assert kept == recount
    assert [(r[1], r[3]) for r in kept] == [(messages, skipped)]


def test_imap_passes_crash_recovery_deletions_and_a_recreated_folder_keep_the_totals_exact(
        quota_pair, tmp_path, monkeypatch, request, store_backend):
    pair, pw = quota_pair, quota_pair.users[A].old_password
    seed(*pair.source_account(A), {"INBOX": _msgs(range(12), big={5}), "Sent": _msgs(range(100, 106))})
    cfg = on_backend(make_config(tmp_path, pair, sync={"batch_messages": 4, "connections": 1,
                                                       "deletions": "mirror", "max_delete": 10}),
                     request, store_backend)
    real, calls = Store.commit_batch, {"n": 0}

    def crashing(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash after APPEND, before the commit")
        return real(self, *a, **kw)

    monkeypatch.setattr(Store, "commit_batch", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        sync_once(cfg, A, pw)
    assert_exact(cfg, 4, 0)                     # only the first batch was recorded
    monkeypatch.setattr(Store, "commit_batch", real)
    res = sync_once(cfg, A, pw)                 # recovers the unrecorded batch, copies the rest
    assert res.skipped == 1, res
    assert_exact(cfg, 17, 1)

    # expunged at the source: mirror expunges our copies and forgets their rows
    with connect(*pair.source_account(A)) as c:
        c.select_folder("INBOX")
        uids = c.search(["ALL"])
        c.add_flags(uids[:3], ["\\Deleted"])
        c.uid_expunge(uids[:3])
    sync_once(cfg, A, pw)
    assert_exact(cfg, 14, 1)

    # the folder deleted and made again (new UIDVALIDITY): its old rows go, the new ones come
    with connect(*pair.source_account(A)) as c:
        c.delete_folder("Sent")
        time.sleep(1.1)                         # Dovecot derives UIDVALIDITY from the clock
    seed(*pair.source_account(A), {"Sent": _msgs([100, 101, 200], big={200})})
    sync_once(cfg, A, pw)
    kept, recount = totals(cfg)
    assert kept == recount and kept[0][3] == 2, kept      # INBOX's refusal and the new Sent's
    assert kept[0][7] == 2 and kept[0][9] == 2            # two folders, each with its report

    store = Store.open(load_config(cfg))
    try:
        assert store.remove_account(A)
    finally:
        store.close()
    assert totals(cfg) == ([], [])


def test_pop3_crash_recovery_and_refusals_keep_the_totals_exact(quota_pair, tmp_path, monkeypatch, request,
                                                                store_backend):
    pair, pw = quota_pair, quota_pair.users[A].old_password
    seed(*pair.source_account(A), {"INBOX": _msgs(range(9), big={7})})
    cfg = on_backend(make_config(tmp_path, pair, sync={"batch_messages": 3, "connections": 1},
                                 source={"protocol": "pop3", "port": pair.source.pop3_port, "security": "none"}),
                     request, store_backend)
    real, calls = Store.pop3_commit_batch, {"n": 0}

    def crashing(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash after APPEND, before the commit")
        return real(self, *a, **kw)

    monkeypatch.setattr(Store, "pop3_commit_batch", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        sync_once(cfg, A, pw)
    assert_exact(cfg, 3, 0)
    monkeypatch.setattr(Store, "pop3_commit_batch", real)
    sync_once(cfg, A, pw)
    assert_exact(cfg, 8, 1)                     # the refused one is a pop3 row too, but not on the target
    sync_once(cfg, A, pw)                       # nothing new: nothing counted twice
    assert_exact(cfg, 8, 1)


def test_migration_16_fills_the_totals_from_the_rows_already_there(make_store, store_backend, monkeypatch):
    """A store at schema 15 with rows: migrating fills account_totals from them, and keeps them after."""
    import mailsyncd.store.base as base
    import mailsyncd.store.pg as pg
    for mod in (base, pg):
        monkeypatch.setattr(mod, "SCHEMA_VERSION", 15)
    store = make_store()
    with store._tx() as c:
        c.executemany("INSERT INTO messages (account, path, uidvalidity, uid, size, fingerprint, flags)"
                      " VALUES (?, 'INBOX', 1, ?, ?, ?, '')", [(A, 1, 100, b"\0"), (A, 2, 50, b"\0"), ("b@x", 1, 7, b"\0")])
        c.executemany("INSERT INTO pop3_messages (account, id, size, fingerprint, target_name, skipped, at)"
                      " VALUES (?, ?, ?, ?, 'INBOX', ?, 0)", [(A, 1, 10, b"\0", None), (A, 2, 99, b"\0", "refused")])
        c.execute("INSERT INTO skipped (account, path, uidvalidity, uid, reason, at) VALUES (?, 'x', 1, 1, 'r', 0)",
                  (A,))
        c.executemany("INSERT INTO folders (account, path, source_name, target_name, messages, size)"
                      " VALUES (?, ?, ?, ?, ?, ?)", [(A, "INBOX", "INBOX", "INBOX", 4, None), (A, "S", "S", "S", 2, 70)])
        c.execute("INSERT INTO reports (account, path, target_name, source_count, copied, present, skipped, bytes,"
                  " seconds, finished) VALUES ('b@x', 'INBOX (pop3)', 'INBOX', 9, 0, 0, 0, 0, 0, 0)")
    store.close()
    monkeypatch.undo()
    store = make_store()          # migrates (SQLite: on open; PostgreSQL: as migrate-db does)
    c = store._conn()
    assert [tuple(r) for r in c.execute(f"SELECT account, {COLUMNS} FROM account_totals ORDER BY account")] == [
        (A, 3, 160, 1, 6, 70, 1, 2, 0, 0), ("b@x", 1, 7, 0, 0, 0, 0, 0, 9, 1)]
    with store._tx() as t:        # and kept from now on
        t.execute("DELETE FROM messages WHERE account = ? AND uid = 1", (A,))
    assert tuple(c.execute("SELECT messages, bytes FROM account_totals WHERE account = ?", (A,)).fetchone()) == (2, 60)


def test_opening_a_current_sqlite_store_takes_no_write_lock(tmp_path):
    """`mailsyncctl status` opens the store while the daemon writes: a current schema needs no write
    transaction, so the open neither waits behind the daemon's nor fsyncs."""
    import threading
    Store.in_state_dir(str(tmp_path)).close()
    writer = sqlite3.connect(tmp_path / "mailsyncd.sqlite3", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")            # the daemon, mid-commit
    opened = []
    t = threading.Thread(target=lambda: opened.append(Store.in_state_dir(str(tmp_path))), daemon=True)
    t.start()
    t.join(5)
    while_locked = len(opened)
    writer.execute("ROLLBACK")
    t.join(60)
    for s in opened:
        s.close()
    assert while_locked == 1, "the open waited for the writer's lock"
