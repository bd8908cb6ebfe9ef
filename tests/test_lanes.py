"""Several workers copy one large folder, a UID window each ("lanes", sync/lanes.py; issue 16).

Exactly-once and crash safety hold as with one lane: each lane journals its own batch, the mark never
passes a window not yet listed nor a batch not yet recorded, and a rerun after a crash (or kill -9)
recovers every lane's batch.  Against a real Dovecot pair; the window is made small (sync.folder.WINDOW)
so that a folder of a few hundred messages spans many.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import sys
import threading

import pytest

from matrix import verify
from mailsyncd.config import load_config
from mailsyncd.store import Store
from mailsyncd.sync import folder as folder_mod
from mailsyncd.sync.lanes import Windows
from mailsyncd.sync.logic import Mark
from seed import Msg, connect, make_message, seed, snapshot
from syncenv import REPO, ctl, kill_at, make_config, password_file, sync_once

A = "alice@example.com"
UTC = dt.timezone.utc
OLD = dt.datetime(2019, 5, 6, 7, 8, 9, tzinfo=UTC)


def _msg(i: int) -> Msg:
    flags = tuple(f for f, on in (("\\Seen", i % 2 == 0), ("\\Flagged", i % 5 == 0), ("Work", i % 7 == 0)) if on)
    return Msg(make_message(i, size=900 + (i % 11) * 300), flags, OLD + dt.timedelta(hours=i))


def _corpus(n: int) -> dict[str, list[Msg]]:
    inbox = [_msg(i) for i in range(n)]
    inbox += inbox[5:8] + inbox[40:42]      # byte-identical duplicates: matching is by multiset
    return {"INBOX": inbox, "Archive": [_msg(10000 + i) for i in range(20)]}


def _same(pair) -> bool:
    a, b = snapshot(*pair.source_account(A)), snapshot(*pair.target_master_account(A))
    return {k: sorted(v) for k, v in a.items()} == {k: sorted(v) for k, v in b.items()}


def _verify(pair, tmp_path) -> None:
    rc, verdict, text = verify({"port": pair.source.imap_port, "user": A, "pass": pair.users[A].old_password},
                               {"port": pair.target.imap_port, "user": pair.master[0], "pass": pair.master[1],
                                "authzid": A}, {}, str(tmp_path / "verdict.json"))
    assert rc == 0 and verdict.get("identical"), text


def _inflight_rows(tmp_path) -> int:
    db = sqlite3.connect(str(tmp_path / "state" / "mailsyncd.sqlite3"))
    try:
        return db.execute("SELECT count(*) FROM inflight").fetchone()[0]
    finally:
        db.close()


def _spy_lanes(monkeypatch) -> set[int]:
    """The lanes that journalled a batch of INBOX."""
    lanes: set[int] = set()
    real = Store.begin_batch

    def spy(self, account, path, inflight, *a, **kw):
        if path == "INBOX":
            lanes.add(a[0] if a else kw.get("lane", 0))
        return real(self, account, path, inflight, *a, **kw)
    monkeypatch.setattr(Store, "begin_batch", spy)
    return lanes


# -- the pure part ----------------------------------------------------------------------------------

def test_windows_listed_out_of_order_never_let_the_mark_pass_one_not_listed_yet():
    mark = Mark(0)
    w = Windows(1, 31, mark, threading.Lock(), 10)
    assert [w.take(), w.take(), w.take(), w.take()] == [(1, 10, False), (11, 20, False), (21, 30, True), None]
    assert mark.extend(range(21, 31), [], reserved=21) == 0     # the last window listed first: all done before
    assert mark.extend(range(11, 21), [15], reserved=11) == 0   # the first is not listed yet
    assert mark.extend(range(1, 11), [3], reserved=1) == 2
    assert mark.done([3]) == 14
    assert mark.done([15]) == 30


# -- against Dovecot --------------------------------------------------------------------------------

def test_a_large_folder_is_copied_by_several_lanes_and_is_identical(dovecot_pair, tmp_path, monkeypatch):
    pair = dovecot_pair
    c = _corpus(150)
    seed(*pair.source_account(A), c)
    monkeypatch.setattr(folder_mod, "WINDOW", 8, raising=False)
    lanes = _spy_lanes(monkeypatch)
    cfg = make_config(tmp_path, pair, sync={"batch_messages": 3, "connections": 4, "recent_first": 0})
    res = sync_once(cfg, A, pair.users[A].old_password)
    assert res.complete and res.copied == sum(len(v) for v in c.values()), res
    assert len(lanes) >= 2, lanes                   # the one folder was copied by several workers at once
    assert res.connections >= 2, res
    assert _same(pair)
    _verify(pair, tmp_path)
    assert _inflight_rows(tmp_path) == 0
    store = Store.open(load_config(cfg))
    try:
        assert store.folder(A, "INBOX").last_uid == len(c["INBOX"])     # the mark reached the top
    finally:
        store.close()
    again = sync_once(cfg, A, pair.users[A].old_password)
    assert again.complete and again.copied == 0, again


def test_two_lanes_in_flight_at_a_crash_then_a_rerun_is_identical(dovecot_pair, tmp_path, monkeypatch):
    """The "crash" comes as a lane commits a batch that landed while another lane's batch is in flight too:
    from then on nothing is journalled or recorded.  The rerun recovers both lanes' batches, copies the
    rest once: IDENTICAL, no duplicate."""
    pair = dovecot_pair
    c = _corpus(150)
    seed(*pair.source_account(A), c)
    monkeypatch.setattr(folder_mod, "WINDOW", 8, raising=False)
    cfg = make_config(tmp_path, pair, sync={"batch_messages": 3, "connections": 4, "recent_first": 0})
    real_commit, real_begin = Store.commit_batch, Store.begin_batch
    crashed = threading.Event()
    seen = {"commits": 0, "in_flight": 0}

    def begin(self, *a, **kw):
        if crashed.is_set():
            raise RuntimeError("simulated crash (journal)")
        return real_begin(self, *a, **kw)

    def commit(self, account, path, *a, **kw):
        if crashed.is_set():
            raise RuntimeError("simulated crash (commit)")
        if path == "INBOX" and kw.get("lane", a[4] if len(a) > 4 else 0) is not None:
            seen["commits"] += 1
            rows = self._conn().execute("SELECT count(*) FROM inflight WHERE path='INBOX'").fetchone()[0]
            if seen["commits"] > 4 and rows >= 2:
                seen["in_flight"] = rows
                crashed.set()
                raise RuntimeError("simulated crash after APPEND, before the commit")
        return real_commit(self, account, path, *a, **kw)

    monkeypatch.setattr(Store, "begin_batch", begin)
    monkeypatch.setattr(Store, "commit_batch", commit)
    with pytest.raises(RuntimeError, match="simulated crash"):
        sync_once(cfg, A, pair.users[A].old_password)
    assert seen["in_flight"] >= 2, seen
    assert _inflight_rows(tmp_path) >= 2
    monkeypatch.setattr(Store, "begin_batch", real_begin)
    monkeypatch.setattr(Store, "commit_batch", real_commit)
    res = sync_once(cfg, A, pair.users[A].old_password)
    assert res.complete, res
    assert _same(pair)
    _verify(pair, tmp_path)
    assert _inflight_rows(tmp_path) == 0


def _target_count(pair) -> int:
    try:
        with connect(*pair.target_master_account(A), timeout=5) as t:
            return sum(t.folder_status(f, ["MESSAGES"])[b"MESSAGES"] for f in ("INBOX", "Archive")
                       if t.folder_exists(f))
    except Exception:   # noqa: BLE001 - not there yet
        return 0


# mailsyncctl with a small window, so that a few hundred messages are many windows for the lanes
_CTL_SMALL_WINDOW = ("import runpy, sys; import mailsyncd.sync.folder as f; f.WINDOW = 16; "
                     "sys.argv = ['mailsyncctl'] + sys.argv[1:]; runpy.run_module('mailsyncd.cli.ctl', run_name='__main__')")


@pytest.mark.timeout(600)
def test_kill_9_at_many_points_of_a_copy_by_several_lanes_then_identical(dovecot_pair, tmp_path):
    import os
    import subprocess
    pair = dovecot_pair
    c = _corpus(400)
    seed(*pair.source_account(A), c)
    total = sum(len(v) for v in c.values())
    cfg = make_config(tmp_path, pair, sync={"batch_messages": 5, "connections": 4, "recent_first": 0})
    pwf = password_file(tmp_path, pair.users[A].old_password)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = ["--config", cfg, "sync", A, "--add", "--password-file", pwf, "--progress", "none"]
    kills, in_flight = [], []
    for at in (1, 8, 25, 50, 80, 120, 170, 230, 300, 380):    # messages on the target when kill -9 comes
        p = subprocess.Popen([sys.executable, "-c", _CTL_SMALL_WINDOW, *args], cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if (n := kill_at(p, lambda: _target_count(pair), at)) is not None:
            kills.append(n)
        in_flight.append(_inflight_rows(tmp_path))
    assert len(kills) >= 6, kills
    assert max(in_flight) >= 2, in_flight      # several lanes had a batch in flight at some kill
    r = subprocess.run([sys.executable, "-c", _CTL_SMALL_WINDOW, *args], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert _same(pair)
    assert _target_count(pair) == total        # no duplicate
    _verify(pair, tmp_path)
    assert _inflight_rows(tmp_path) == 0
    assert ctl("--config", cfg, "sync", A, "--password-file", pwf, "--progress", "none").returncode == 0
    print(f"killed at target counts {kills}, lanes in flight {in_flight}")


def test_a_lane_that_loses_its_connection_after_an_append_stops_the_folder_whose_retry_is_identical(
        dovecot_pair, tmp_path, monkeypatch):
    """A second lane's batch lands, then its connection is lost before the commit: the folder's own worker
    stops, retries it (recovering that batch from the journal) and the pass ends complete, IDENTICAL."""
    from mailsyncd.errors import ConnectionLost
    from mailsyncd.sync.appender import Appender
    pair = dovecot_pair
    c = _corpus(150)
    seed(*pair.source_account(A), c)
    monkeypatch.setattr(folder_mod, "WINDOW", 8, raising=False)
    cfg = make_config(tmp_path, pair, sync={"batch_messages": 3, "connections": 3, "recent_first": 0,
                                            "retry_backoff": 0.1})
    real, calls = Appender.write, {"n": 0}

    def write(self, msgs):
        out = real(self, msgs)
        if self.lane >= 1 and self.path == "INBOX":
            calls["n"] += 1
            if calls["n"] == 3:
                raise ConnectionLost("simulated: the lane's target connection dropped after APPEND")
        return out
    monkeypatch.setattr(Appender, "write", write)
    res = sync_once(cfg, A, pair.users[A].old_password)
    assert calls["n"] >= 3, calls
    assert res.complete, res
    assert _same(pair)
    _verify(pair, tmp_path)
    assert _inflight_rows(tmp_path) == 0
