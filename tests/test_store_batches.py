"""The store's one in-flight journal and its figures, for both kinds of source (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import sqlite3

from mailsyncd.store import _MIGRATIONS, POP3_PATH, Inflight, InflightItem, MapRow, Pop3Row, Store

A = "alice@example.com"


def test_account_counts_include_pop3_copies(make_store):
    store = make_store()
    store.pop3_commit_batch(A, "INBOX", [Pop3Row("u1", 100, b"f1", 7, 1), Pop3Row("u2", 50, b"f2", 7, 2),
                                         Pop3Row("u3", 9, b"f3", skipped="target refused: no")])
    assert store.account_counts(A) == (2, 150, 1)
    store.close()


def test_one_journal_for_both_engines_each_commit_clears_its_own(make_store):
    store = make_store()
    store.ensure_account(A, "example.com")
    imap = Inflight("INBOX", 7, 10, (InflightItem(3, 100, b"\x01", ("\\Seen",)),))
    pop3 = Inflight("INBOX", 7, 10, (InflightItem("uidl-1", 50, b"\x02"), InflightItem(None, 60, b"\x03")))
    store.begin_batch(A, "INBOX", imap)
    store.begin_batch(A, POP3_PATH, pop3)
    assert store.inflight(A, "INBOX") == imap and store.inflight(A, POP3_PATH) == pop3
    store.pop3_commit_batch(A, "INBOX", [])
    assert store.inflight(A, POP3_PATH) is None and store.inflight(A, "INBOX") == imap
    store.commit_batch(A, "INBOX", 1, [MapRow(3, 7, 11, 100, b"\x01", ("\\Seen",))], (), 3)
    assert store.inflight(A, "INBOX") is None
    store.close()


def test_a_pop3_batch_journalled_before_schema_11_is_recovered_from_the_one_journal(tmp_path):
    path = tmp_path / "s.sqlite3"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        for v in range(1, 11):
            c.executescript(_MIGRATIONS[v])
        c.execute("INSERT INTO meta VALUES ('schema_version', '10')")
        c.execute("INSERT INTO pop3_inflight VALUES (?,?,?,?,?)",
                  (A, "INBOX", 7, 42, json.dumps([["uidl-1", 50, "0a0b"], [None, 60, "0c"]])))
    store = Store(str(path))
    assert store.inflight(A, POP3_PATH) == Inflight(
        "INBOX", 7, 42, (InflightItem("uidl-1", 50, b"\x0a\x0b"), InflightItem(None, 60, b"\x0c")))
    store.close()
    with sqlite3.connect(path) as c:
        assert not c.execute("SELECT name FROM sqlite_master WHERE name='pop3_inflight'").fetchall()
