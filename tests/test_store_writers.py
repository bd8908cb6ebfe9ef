"""Many threads of one process writing the SQLite store (the daemon's copy threads): they queue for the write
lock in the process, so none sleeps in SQLite's busy handler while the lock is free, and none is refused."""

from __future__ import annotations

import threading

from mailsyncd.store import Store

A = "alice@example.com"


def _no_busy_wait(store: Store) -> None:
    # this thread's connection: a write that finds SQLite's lock taken fails at once instead of polling for it
    store._conn().execute("PRAGMA busy_timeout=0")


def test_a_writer_waits_for_another_threads_transaction_in_the_process_not_in_sqlite(tmp_path):
    store = Store.in_state_dir(str(tmp_path / "state"))
    store.ensure_account(A, "example.com")
    errors: list[BaseException] = []
    about_to_write = threading.Event()

    def writer() -> None:
        try:
            _no_busy_wait(store)
            about_to_write.set()
            store.set_phase(A, "syncing")
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)
        finally:
            store.release_thread()

    t = threading.Thread(target=writer)
    with store._tx() as c:           # this thread holds the write lock
        c.execute("UPDATE accounts SET phase='waiting' WHERE address=?", (A,))
        t.start()
        assert about_to_write.wait(10)
        t.join(0.5)                  # the writer is queued behind us (before: refused, "database is locked")
        assert not errors, errors
    t.join(10)
    assert not t.is_alive() and not errors, errors
    assert store.account(A)["phase"] == "syncing"     # it wrote after our commit, not before
    store.close()


def test_many_writer_threads_never_find_the_database_locked(tmp_path):
    store = Store.in_state_dir(str(tmp_path / "state"))
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def writer(i: int) -> None:
        try:
            _no_busy_wait(store)
            start.wait(10)
            for j in range(25):
                store.ensure_account(f"u{i}-{j}@example.com", "example.com")
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)
        finally:
            store.release_thread()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert len(store.accounts()) == 8 * 25
    store.close()


def test_two_stores_on_one_file_share_the_queue(tmp_path):
    one = Store.in_state_dir(str(tmp_path / "state"))
    two = Store.in_state_dir(str(tmp_path / "state"))
    other = Store.in_state_dir(str(tmp_path / "other"))
    assert one._write_lock is two._write_lock and other._write_lock is not one._write_lock
    for s in (one, two, other):
        s.close()


def test_a_batchs_journal_and_its_commit_are_both_fsynced(tmp_path):
    """A commit lost to a power cut would leave its journal, recovered by fingerprint: exact, except for a
    message the target rewrote (Cyrus munge8bit), which would be appended twice. Decision: keep both fsyncs."""
    from mailsyncd.store import Inflight, InflightItem, MapRow
    store = Store.in_state_dir(str(tmp_path / "state"))
    store.ensure_account(A, "example.com")
    seen: list[str] = []
    store._conn().set_trace_callback(seen.append)

    def durability_at_commit() -> list[str]:
        # the synchronous level in force at each COMMIT of the statements since the last call
        level, out = "FULL", []
        for sql in seen:
            if sql.startswith("PRAGMA synchronous="):
                level = sql.split("=", 1)[1]
            elif sql == "COMMIT":
                out.append(level)
        seen.clear()
        return out

    store.begin_batch(A, "INBOX", Inflight("INBOX", 7, 10, (InflightItem(3, 100, b"\x01", ()),)))
    assert durability_at_commit() == ["FULL"]          # the journal is on disk before the APPEND
    store.commit_batch(A, "INBOX", 1, [MapRow(3, 7, 10, 100, b"\x01", ())], (), 3)
    assert durability_at_commit() == ["FULL"]
    store.set_phase(A, "syncing")
    assert durability_at_commit() == ["FULL"]          # the connection is back to full for everything else
    assert store.inflight(A, "INBOX") is None
    store.close()


def test_a_transaction_that_does_not_end_refuses_the_queue_behind_it_after_the_busy_timeout(tmp_path):
    store = Store.in_state_dir(str(tmp_path / "state"))
    store.ensure_account(A, "example.com")
    store.busy_timeout = 0.2
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            store.set_phase(A, "syncing")
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)
        finally:
            store.release_thread()

    with store._tx():                # held until the writer has given up
        t = threading.Thread(target=writer)
        t.start()
        t.join(10)
        assert not t.is_alive()      # before the queue's bound: 30 s in SQLite's busy handler
    assert [str(e) for e in errors] == ["database is locked"]     # as SQLite says it, and callers expect it
    store.close()
