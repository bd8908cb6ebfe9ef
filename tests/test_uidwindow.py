"""A folder is listed and copied a UID window at a time (issue 16): what a copy holds of a folder is
bounded by the window, not the folder; exactly-once, crash recovery and recent-first hold across windows.

The window is made small (sync.folder.WINDOW) so that a folder of a few dozen messages spans many.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging

import pytest

from hostileserver import Box, HostileServer, _uids
from mailsyncd.config import load_config
from mailsyncd.net import imap as netimap
from mailsyncd.store import Store
from mailsyncd.sync import folder as folder_mod
from mailsyncd.sync.logic import MAX_UID, Mark, next_span
from seed import Msg, make_message, seed, snapshot
from syncenv import make_config, sync_once

A = "alice@example.com"
UTC = dt.timezone.utc
NOW = dt.datetime.now(UTC).replace(microsecond=0)
OLD = dt.datetime(2019, 5, 6, 7, 8, 9, tzinfo=UTC)


# -- the pure parts ---------------------------------------------------------------------------------

def test_the_mark_follows_windows_listed_one_after_the_other():
    m = Mark(0, [1, 2, 3, 5], [2, 3, 5])       # 1 done before, 4 a gap
    assert m.mark == 1
    assert m.done([2, 3]) == 4
    assert m.extend([6, 8, 9], [8, 9]) == 4     # the next window listed while 5 is in flight
    assert m.done([5]) == 7                     # 6 done before, 7 a gap
    assert m.done([8, 9]) == 9
    assert m.extend([], []) == 9                # an empty window: the mark stays
    assert m.extend([12], []) == 12             # a window all done before: the mark catches up


def test_the_window_adapts_to_the_density_of_uids_within_bounds():
    assert next_span(100, 100, 100) == 100      # dense: as it was
    assert next_span(100, 0, 100) == 800        # empty: 8x wider, not at once to the end
    assert next_span(800, 10, 100) == 6400
    assert next_span(10**9, 1, 100) == MAX_UID
    assert next_span(6400, 6400, 100) == 100    # back in a dense run: never narrower than the window


# -- against Dovecot --------------------------------------------------------------------------------

def _msg(i: int, recent: bool = False) -> Msg:
    date = NOW - dt.timedelta(days=1, hours=i) if recent else OLD + dt.timedelta(hours=i)
    flags = tuple(f for f, on in (("\\Seen", i % 2 == 0), ("\\Flagged", i % 5 == 0), ("Work", i % 7 == 0)) if on)
    return Msg(make_message(i, size=900 + (i % 11) * 300), flags, date)


def _same(pair) -> bool:
    a, b = snapshot(*pair.source_account(A)), snapshot(*pair.target_master_account(A))
    return {k: sorted(v) for k, v in a.items()} == {k: sorted(v) for k, v in b.items()}


def _spy_listing(monkeypatch) -> list[int]:
    """The number of UIDs of each listing answer (UID FETCH ... RFC822.SIZE) the engine takes in."""
    seen: list[int] = []
    real = netimap.fetch_sizes

    def spy(client, uids):
        out = real(client, uids)
        seen.append(len(out))
        return out
    monkeypatch.setattr(folder_mod, "fetch_sizes", spy)
    return seen


def _spy_mark(monkeypatch) -> list[int]:
    """After each batch, how many UIDs the folder's mark holds (left to copy, and its heap)."""
    held: list[int] = []
    real = Mark.done

    def done(self, uids):
        out = real(self, uids)
        held.append(max(len(self._left), len(self._heap)))
        return out
    monkeypatch.setattr(Mark, "done", done)
    return held


def test_a_large_folder_is_held_a_window_at_a_time(dovecot_pair, tmp_path, monkeypatch):
    """Structural bound: no listing answer, and no mark, holds more than about two windows of UIDs."""
    pair = dovecot_pair
    seed(*pair.source_account(A), {"INBOX": [_msg(i) for i in range(120)]})
    monkeypatch.setattr(folder_mod, "WINDOW", 16, raising=False)
    listed, held = _spy_listing(monkeypatch), _spy_mark(monkeypatch)
    cfg = make_config(tmp_path, pair, sync={"batch_messages": 5, "connections": 1, "recent_first": 0})
    res = sync_once(cfg, A, pair.users[A].old_password)
    assert res.complete and res.copied == 120, res
    assert _same(pair)
    assert sum(listed) >= 120 and max(listed) <= 16, listed     # the whole folder was listed, a window at a time
    assert held and max(held) <= 2 * 16, held                     # the window in copy and the one read ahead


@pytest.mark.parametrize("recent_first", [0, 30])
def test_a_crash_in_a_later_window_then_a_rerun_is_identical(recent_first, dovecot_pair, tmp_path, monkeypatch):
    """Crash after a batch's APPEND, before its commit, three windows in: the rerun finds the batch (journal),
    copies the rest once, and source and target are IDENTICAL (bodies, flags, INTERNALDATE)."""
    pair = dovecot_pair
    seed(*pair.source_account(A), {"INBOX": [_msg(i, recent=i % 9 == 4) for i in range(60)],
                                   "Archive": [_msg(100 + i) for i in range(25)]})
    monkeypatch.setattr(folder_mod, "WINDOW", 8, raising=False)
    cfg = make_config(tmp_path, pair, sync={"batch_messages": 3, "connections": 1, "recent_first": recent_first})
    real, calls = Store.commit_batch, {"n": 0}

    def crashing(self, account, path, *a, **kw):
        if path == "INBOX":
            calls["n"] += 1
            if calls["n"] == 12:
                raise RuntimeError("simulated crash after APPEND, before the commit")
        return real(self, account, path, *a, **kw)

    monkeypatch.setattr(Store, "commit_batch", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        sync_once(cfg, A, pair.users[A].old_password)
    store = Store.open(load_config(cfg))
    try:
        st = store.folder(A, "INBOX")
        assert store._conn().execute("SELECT count(*) FROM inflight").fetchone()[0] == 1
    finally:
        store.close()
    if not recent_first:
        assert st.last_uid >= 24, st    # the mark went on window by window: past the first three windows
    monkeypatch.setattr(Store, "commit_batch", real)
    res = sync_once(cfg, A, pair.users[A].old_password)
    assert res.complete, res
    assert _same(pair)
    assert len(snapshot(*pair.target_master_account(A))["INBOX"]) == 60   # nothing twice
    again = sync_once(cfg, A, pair.users[A].old_password)
    assert again.complete and again.copied == 0, again


# -- a hostile source ----------------------------------------------------------------------------------

class _Strays(HostileServer):
    """Answers every RFC822.SIZE listing with the messages asked for, each twice (the second time with a
    wrong size), plus the folder's first and last message whatever the window."""

    def _fetch(self, conn, tag, args, folder):
        uidset, _, items = args.partition(b" ")
        if b"BODY" in items.upper() or b"SIZE" not in items.upper():
            return super()._fetch(conn, tag, args, folder)
        box = self.folders[folder]
        top = max(u for u, _, _ in box.messages)
        wanted = _uids(uidset, top)
        out = []
        for seq, (uid, raw, _fl) in enumerate(box.messages, 1):
            if uid in wanted:
                out.append(b"* %d FETCH (UID %d RFC822.SIZE %d)\r\n" % (seq, uid, len(raw)))
                out.append(b"* %d FETCH (UID %d RFC822.SIZE %d)\r\n" % (seq, uid, len(raw) + 7))
        first, last = box.messages[0], box.messages[-1]
        out.append(b"* 1 FETCH (UID %d RFC822.SIZE %d)\r\n" % (first[0], len(first[1])))
        out.append(b"* %d FETCH (UID %d RFC822.SIZE %d)\r\n" % (len(box.messages), last[0], len(last[1])))
        conn.sendall(b"".join(out) + tag + b" OK fetched\r\n")
        return True


class _Renumbering(HostileServer):
    """Changes the folder's UIDVALIDITY (and its UIDs) right after answering the first body FETCH."""

    def _fetch(self, conn, tag, args, folder):
        ok = super()._fetch(conn, tag, args, folder)
        _, _, items = args.partition(b" ")
        box = self.folders[folder]
        if b"BODY" in items.upper() and box.uidvalidity == 1234:
            box.uidvalidity = 999
            box.messages[:] = [(uid + 1000, raw, fl) for uid, raw, fl in box.messages]
        return ok


def _box(n: int) -> Box:
    # gaps in the UIDs: windows that are partly empty
    return Box([(3 * i + 1, make_message(300 + i, size=1200 + 40 * i), (b"\\Seen",) if i % 2 else ())
                for i in range(n)])


def _target_inbox(pair) -> list:
    return sorted(snapshot(*pair.target_master_account(A)).get("INBOX", []))


def _source_rows(box: Box) -> list:
    return sorted(hashlib.sha256(raw).hexdigest() for _u, raw, _f in box.messages)


def test_uids_outside_the_window_and_twice_in_it_are_not_taken_from_that_answer(dovecot_pair, tmp_path,
                                                                                  monkeypatch, caplog):
    pair = dovecot_pair
    box = _box(30)
    monkeypatch.setattr(folder_mod, "WINDOW", 10, raising=False)
    caplog.set_level(logging.WARNING)
    with _Strays(A, "old-pw", {"INBOX": box}) as srv:
        cfg = make_config(tmp_path, pair, source={"port": srv.port}, sync={"connections": 1, "batch_messages": 4})
        res = sync_once(cfg, A, "old-pw")
        assert res.complete and res.copied == 30, res
        again = sync_once(cfg, A, "old-pw")
    assert again.copied == 0, again
    assert sorted(r[0] for r in _target_inbox(pair)) == _source_rows(box)    # each once, byte for byte
    assert "event=source_listing_outside_window" in caplog.text


def test_a_uidvalidity_change_between_windows_stops_the_folder_and_the_next_pass_remaps(dovecot_pair, tmp_path,
                                                                                          monkeypatch):
    pair = dovecot_pair
    box = _box(30)
    monkeypatch.setattr(folder_mod, "WINDOW", 12, raising=False)
    with _Renumbering(A, "old-pw", {"INBOX": box}) as srv:
        cfg = make_config(tmp_path, pair, source={"port": srv.port},
                          sync={"connections": 1, "batch_messages": 4, "retries": 0})
        first = sync_once(cfg, A, "old-pw")
        assert not first.complete
        assert [f.error for f in first.folders if f.error] == [
            "the source changed the folder's UIDVALIDITY from 1234 to 999 during the copy; "
            "the next pass re-identifies what was copied"], first
        copied = len(_target_inbox(pair))
        assert 0 < copied < 30
        second = sync_once(cfg, A, "old-pw")
    assert second.complete, second
    assert sorted(r[0] for r in _target_inbox(pair)) == _source_rows(box)    # the first window's not twice
