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
