"""Recent mail first (sync.recent_first): INBOX's and Sent's last days before the rest, exactly once.

Against a real Dovecot pair: the source's INBOX and Sent hold old and recent messages (INTERNALDATE
set by APPEND), interleaved so that the recent ones are not simply the highest UIDs.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time

import pytest

from hostileserver import Box, HostileServer
from matrix import verify
from mailsyncd.imap.readlimits import LINE_BUDGET, ReadLimits
from mailsyncd.errors import ProtocolError
from mailsyncd.store import Store
from mailsyncd.sync import recent
from mailsyncd.sync.logic import Mark, bounded_uids
from mailsyncd.sync.progress import Progress
from seed import Msg, connect, make_message, seed, snapshot
from syncenv import ctl, ctl_popen, kill_at, make_config, password_file, sync_once

A = "alice@example.com"
UTC = dt.timezone.utc
NOW = dt.datetime.now(UTC).replace(microsecond=0)
OLD = dt.datetime(2020, 3, 4, 5, 6, 7, tzinfo=UTC)


def _msg(i: int, is_recent: bool, **kw) -> Msg:
    date = NOW - dt.timedelta(days=2, hours=i) if is_recent else OLD + dt.timedelta(days=i)
    flags = tuple(f for f, on in (("\\Seen", i % 2 == 0), ("\\Flagged", i % 7 == 0), ("Work", i % 5 == 0)) if on)
    return Msg(make_message(i, size=1500 + (i % 9) * 700, **kw), flags, date)


def corpus(inbox: int = 40, sent: int = 12, archive: int = 15) -> dict[str, list[Msg]]:
    """INBOX: every 4th recent (from the 2nd on); Sent: every 3rd; Archive: all old."""
    return {"INBOX": [_msg(i, i % 4 == 1) for i in range(inbox)],
            "Sent": [_msg(1000 + i, i % 3 == 0) for i in range(sent)],
            "Archive": [_msg(2000 + i, False) for i in range(archive)]}


def _recent(msgs: list[Msg]) -> list[Msg]:
    return [m for m in msgs if m.internaldate > NOW - dt.timedelta(days=30)]


def rows(msgs: list[Msg]) -> list:
    """What snapshot() says of these messages, sorted (a multiset)."""
    import hashlib
    return sorted((hashlib.sha256(m.raw).hexdigest(), tuple(sorted(m.flags)),
                   m.internaldate.astimezone(UTC).isoformat()) for m in msgs)


def src(pair):
    return snapshot(*pair.source_account(A))


def dst(pair):
    return snapshot(*pair.target_master_account(A))


def same(a: dict, b: dict) -> bool:
    return {k: sorted(v) for k, v in a.items()} == {k: sorted(v) for k, v in b.items()}


def _stopping(when):
    """A Progress whose listener sets the pass's stop Event once ``when(progress)``; and its stages seen."""
    stop, stages = threading.Event(), []

    def listen(p: Progress) -> None:
        if not stages or stages[-1] != p.stage:
            stages.append(p.stage)
        if when(p):
            stop.set()
    return Progress(listen), stop, stages


# -- the pure parts ---------------------------------------------------------------------------------

def test_mark_stays_below_what_is_left_whatever_order_batches_land_in():
    # listed above mark 10: 11..20 and 25; 13 and 25 done by an earlier pass; 17 a gap (expunged)
    listed = [11, 12, 13, 14, 15, 16, 18, 19, 20, 25]
    m = Mark(10, listed, [11, 12, 14, 15, 16, 18, 19, 20])
    assert m.mark == 10
    assert m.done([18, 19, 20]) == 10          # the recent slice first: nothing below it is done
    assert m.done([12]) == 10
    assert m.done([11]) == 13                  # 11, 12 and 13 (done before): up to just below 14
    assert m.done([14, 15, 16]) == 25          # 17 is a gap, 18-20 and 25 are done
    assert Mark(7, [], []).mark == 7           # nothing listed: the mark stays
    assert Mark(0, [3, 9], []).mark == 9       # all done out of order before: the mark catches up


def test_search_answers_outside_the_folder_are_ignored():
    assert bounded_uids([0, 1, 5, 9, 10, 2**32, -3, True, "7"], 10) == {1, 5, 9}
    assert bounded_uids([4294967295, 4294967296], None) == {4294967295}


def test_the_next_command_can_be_given_a_smaller_line_budget():
    lim = ReadLimits(1024)
    lim.next_budget = 100
    lim.start()
    lim.line(60)
    with pytest.raises(ProtocolError, match="more than 100 bytes"):
        lim.line(60)
    lim.start()                                  # one command only: the next one has the whole budget
    lim.line(LINE_BUDGET)


def test_order_puts_inbox_then_sent_slices_first_then_the_folders_by_newest_message():
    from mailsyncd.imap.folders import FolderPlan
    from mailsyncd.net.imap import Status

    def job(path, role, n):
        return FolderPlan(path, path, path, role, False, ()), Status(n, n + 1, 1, None)
    jobs = [job("Archive", "archive", 90), job("Sent", "sent", 5), job("Old", None, 900), job("INBOX", "inbox", 50),
            job("News", None, 3), job("Done", None, 1000), job("Empty", "sent", 0)]
    day = dt.date(2026, 11, 1)
    out = recent.order(jobs, {"Archive", "Sent", "Old", "INBOX", "News", "Empty"},
                       {"Archive": 100.0, "Old": 50.0, "News": 300.0}, day)
    assert [(p.path, since) for p, _, since in out] == [
        ("INBOX", day), ("Sent", day), ("INBOX", None), ("Sent", None), ("Empty", None),
        ("Done", None), ("News", None), ("Archive", None), ("Old", None)]
    assert recent.cutoff(30, dt.date(2026, 3, 1)) == dt.date(2026, 1, 30)


# -- against Dovecot --------------------------------------------------------------------------------

@pytest.mark.parametrize("days", [30, 0])
def test_the_first_batches_are_the_recent_mail_or_with_0_the_lowest_uids(days, dovecot_pair, tmp_path):
    pair = dovecot_pair
    c = corpus()
    seed(*pair.source_account(A), c)
    cfg = make_config(tmp_path, pair, sync={"batch_messages": 3, "connections": 1, "recent_first": days})
    progress, stop, _ = _stopping(lambda p: p.done >= 3)
    res = sync_once(cfg, A, pair.users[A].old_password, progress=progress, stop=stop)
    assert res.error == "stopped before the pass finished"
    got = dst(pair)
    inbox = got.get("INBOX", [])
    assert 3 <= len(inbox) <= 9, inbox           # the batch that stopped it, and two read ahead
    if days:
        assert set(inbox) <= set(rows(_recent(c["INBOX"])))
    else:
        # today's order: UID order, the biggest folder (INBOX) first: the oldest messages
        assert sorted(inbox) == rows(c["INBOX"][:len(inbox)])
    assert not got.get("Sent") and not got.get("Archive")


def test_a_stopped_recent_pass_then_a_full_one_gives_every_message_once_with_exact_flags(dovecot_pair, tmp_path):
    pair = dovecot_pair
    c = corpus()
    seed(*pair.source_account(A), c)
    cfg = make_config(tmp_path, pair, sync={"batch_messages": 4, "connections": 2})
    pw = pair.users[A].old_password
    progress, stop, stages = _stopping(lambda p: p.stage == "rest")   # stop once the slices are on the target
    first = sync_once(cfg, A, pw, progress=progress, stop=stop)
    assert stages[:2] == [None, "recent"] and "rest" in stages, stages
    got = dst(pair)
    assert sorted(got["INBOX"]) == rows(_recent(c["INBOX"]))
    assert sorted(got["Sent"]) == rows(_recent(c["Sent"]))
    assert not got.get("Archive")
    assert first.copied == len(_recent(c["INBOX"])) + len(_recent(c["Sent"]))
    store = Store.in_state_dir(str(tmp_path / "state"))
    try:
        assert store.folder(A, "INBOX").last_uid == 0     # UID 1 is old: not copied yet
    finally:
        store.close()

    # meanwhile the user still reads mail on the old server: a recent message copied already changes
    with connect(*pair.source_account(A)) as s:
        s.select_folder("INBOX")
        uid = sorted(s.search(["SINCE", (NOW - dt.timedelta(days=30)).date()]))[0]
        s.add_flags([uid], ["\\Answered", "$Forwarded"])
        s.remove_flags([uid], ["\\Seen"])
    before = src(pair)
    again = sync_once(cfg, A, pw)
    assert again.complete, again
    assert again.copied == sum(len(v) for v in c.values()) - first.copied   # nothing twice
    assert same(dst(pair), before)
    assert src(pair) == before
    store = Store.in_state_dir(str(tmp_path / "state"))
    try:
        assert store.folder(A, "INBOX").last_uid == len(c["INBOX"])   # the gap closed: the mark caught up
    finally:
        store.close()
    third = sync_once(cfg, A, pw)
    assert third.complete and third.copied == 0


def _target_count(pair) -> int:
    try:
        with connect(*pair.target_master_account(A), timeout=5) as t:
            return sum(t.folder_status(f, ["MESSAGES"])[b"MESSAGES"] for f in ("INBOX", "Sent", "Archive")
                       if t.folder_exists(f))
    except Exception:   # noqa: BLE001 - not there yet
        return 0


@pytest.mark.timeout(600)
def test_kill_9_at_many_points_of_a_recent_first_pass_then_identical(dovecot_pair, tmp_path):
    pair = dovecot_pair
    c = corpus(inbox=240, sent=60, archive=90)
    c["INBOX"] += c["INBOX"][5:8]              # byte-identical duplicates: matching is by multiset
    seed(*pair.source_account(A), c)
    before = src(pair)
    total = sum(len(v) for v in c.values())
    cfg = make_config(tmp_path, pair, sync={"batch_messages": 5, "connections": 2})
    pwf = password_file(tmp_path, pair.users[A].old_password)
    kills = []
    for at in (1, 6, 17, 33, 52, 75, 110, 160, 230, 300):   # messages on the target when kill -9 comes
        p = ctl_popen("--config", cfg, "sync", A, "--add", "--password-file", pwf, "--progress", "none")
        if (n := kill_at(p, lambda: _target_count(pair), at)) is not None:
            kills.append(n)
    assert len(kills) >= 6, kills
    r = ctl("--config", cfg, "sync", A, "--add", "--password-file", pwf, "--progress", "none")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    after = dst(pair)
    assert same(after, before), {k: (len(before.get(k, [])), len(v)) for k, v in after.items()}
    assert sum(len(v) for v in after.values()) == total
    rc, verdict, text = verify({"port": pair.source.imap_port, "user": A, "pass": pair.users[A].old_password},
                               {"port": pair.target.imap_port, "user": pair.master[0], "pass": pair.master[1],
                                "authzid": A}, {}, str(tmp_path / "verdict.json"))
    assert rc == 0 and verdict.get("identical"), text
    db = sqlite3.connect(str(tmp_path / "state" / "mailsyncd.sqlite3"))
    assert db.execute("SELECT count(*) FROM inflight").fetchone()[0] == 0
    print(f"killed at target counts {kills}")


def test_a_flood_of_search_answers_is_refused_unread_and_the_folder_still_copies(dovecot_pair, tmp_path):
    raw = [make_message(100 + i, size=2000) for i in range(3)]
    folders = {"INBOX": Box([(1, raw[0], (b"\\Seen",)), (2, raw[1], ()), (3, raw[2], (b"\\Flagged",))])}
    with HostileServer(A, "old-pw", folders, misbehave={("INBOX", 0): "search_flood"}) as srv:
        cfg = make_config(tmp_path, dovecot_pair, source={"port": srv.port},
                          sync={"retries": 1, "retry_backoff": 0.01})
        r = ctl("--config", cfg, "sync", A, "--add", "--password-file", password_file(tmp_path, "old-pw"),
                "--progress", "none", timeout=150)
    # the answer's first line is already more than 3 UIDs can take: the client went away unread
    assert srv.stream_stopped and srv.stream_stopped[0].startswith("client went away"), srv.stream_stopped
    assert "Traceback" not in r.stdout + r.stderr
    assert "bytes of response lines" in r.stderr
    assert r.returncode == 0, r.stdout + r.stderr           # the folder's own job copied it all
    assert len(snapshot(*dovecot_pair.target_account(A))["INBOX"]) == 3


def test_status_shows_newest_first_while_the_recent_slice_runs(tmp_path):
    import json
    import os

    import yaml
    from mailsyncd import status
    state = tmp_path / "state"
    doc = {"state_dir": str(state), "domains": {"example.com": {
        "source": {"host": "127.0.0.1", "security": "none"}, "target": {"host": "127.0.0.1", "security": "none"}}}}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    store = Store.in_state_dir(str(state))
    try:
        store.ensure_account(A, "example.com")
    finally:
        store.close()
    live = {"done": 3, "total": 90, "bytes": 100, "rate": 5.0, "current": ["INBOX"], "connections": 2,
            "stage": "recent"}
    (state / "daemon.json").write_text(json.dumps({
        "pid": os.getpid(), "generation": 1, "started": time.time(), "sessions": 0, "relayed": 0,
        "reload_error": None, "config_path": str(cfg), "live": {A: live}}))
    r = ctl("--config", str(cfg), "status")
    assert "newest first" in r.stdout, r.stdout + r.stderr
    js = json.loads(ctl("--config", str(cfg), "status", "--json").stdout)
    assert js["accounts"][0]["stage"] == "recent"
    (state / "daemon.json").write_text(json.dumps({
        "pid": os.getpid(), "generation": 1, "started": time.time(), "sessions": 0, "relayed": 0,
        "reload_error": None, "config_path": str(cfg), "live": {A: dict(live, stage="rest")}}))
    assert "newest first" not in ctl("--config", str(cfg), "status").stdout
    # without a pass: "done" once in sync, unknown before
    view = status.account_view({"address": A, "domain": "example.com", "phase": "synced", "has_password": True},
                               None, 300, 0.0)
    assert view["stage"] == "done"
    view = status.account_view({"address": A, "domain": "example.com", "phase": "new", "has_password": True},
                               None, 300, 0.0)
    assert view["stage"] is None


def _stop_after_slices(pair, tmp_path, c, **sync):
    seed(*pair.source_account(A), c)
    cfg = make_config(tmp_path, pair, sync={"batch_messages": 4, "connections": 2, **sync})
    progress, stop, _ = _stopping(lambda p: p.stage == "rest")
    first = sync_once(cfg, A, pair.users[A].old_password, progress=progress, stop=stop)
    assert sorted(dst(pair)["INBOX"]) == rows(_recent(c["INBOX"]))
    return cfg, first


def test_expunges_at_the_source_between_passes_with_holes_in_the_copy(dovecot_pair, tmp_path):
    pair = dovecot_pair
    c = corpus()
    cfg, first = _stop_after_slices(pair, tmp_path, c, deletions="mirror")
    with connect(*pair.source_account(A)) as s:
        s.select_folder("INBOX")
        copied = sorted(s.search(["SINCE", (NOW - dt.timedelta(days=30)).date()]))[1]
        s.add_flags([copied, 3], ["\\Deleted"])       # UID 3 is old: not copied yet
        s.expunge()
    before = src(pair)
    again = sync_once(cfg, A, pair.users[A].old_password)
    assert again.complete and again.deleted == 1, again
    assert again.copied == sum(len(v) for v in c.values()) - first.copied - 1
    assert same(dst(pair), before)


def test_a_new_uidvalidity_between_passes_remaps_the_recent_slice(dovecot_pair, tmp_path):
    pair = dovecot_pair
    c = corpus()
    cfg, first = _stop_after_slices(pair, tmp_path, c)
    with connect(*pair.source_account(A)) as s:   # the old server rebuilt Sent: other UIDs, same mail
        s.delete_folder("Sent")
        time.sleep(1.1)  # Dovecot derives UIDVALIDITY from the clock
    seed(*pair.source_account(A), {"Sent": list(reversed(c["Sent"]))})
    before = src(pair)
    again = sync_once(cfg, A, pair.users[A].old_password)
    assert again.complete, again
    sent = next(f for f in again.folders if f.path == "Sent")
    assert sent.copied == len(c["Sent"]) - len(_recent(c["Sent"])), sent    # the slice was not copied twice
    assert same(dst(pair), before)


@pytest.mark.parametrize("days, expected", [(30, ["INBOX", "Sent", "News", "Archive"]),
                                            (0, ["INBOX", "Archive", "Sent", "News"])])
def test_the_other_folders_go_by_their_newest_message(days, expected, dovecot_pair, tmp_path):
    pair = dovecot_pair
    c = corpus()
    c["News"] = [Msg(make_message(3000 + i), (), NOW - dt.timedelta(days=60)) for i in range(5)]   # Archive: 2025
    seed(*pair.source_account(A), c)
    cfg = make_config(tmp_path, pair, sync={"connections": 1, "recent_first": days})
    seen: list[str] = []

    def listen(p: Progress) -> None:
        for f in sorted(p.current):
            if f not in seen:
                seen.append(f)
    res = sync_once(cfg, A, pair.users[A].old_password, progress=Progress(listen))
    assert res.complete and seen == expected, seen


def test_the_progress_line_says_newest_first_during_the_slices():
    p = Progress()
    p.set_stage("rest")
    assert p.stage is None                    # no slice in this pass: no stages
    p.set_stage("recent")
    assert p.line().endswith(" newest-first")
    p.set_stage("rest")
    assert "newest" not in p.line()


@pytest.mark.parametrize("days", [0, 30])
def test_flags_changed_at_the_source_after_an_interrupted_first_pass_are_carried(days, dovecot_pair, tmp_path):
    # Before: a first copy stopped part-way recorded no HIGHESTMODSEQ, so the next pass's CHANGEDSINCE
    # was skipped and what the user changed on the old server meanwhile never reached the new one.
    pair = dovecot_pair
    c = {"INBOX": [_msg(i, False) for i in range(20)], "Archive": [_msg(100 + i, False) for i in range(5)]}
    seed(*pair.source_account(A), c)
    cfg = make_config(tmp_path, pair, sync={"batch_messages": 2, "connections": 1, "recent_first": days})
    progress, stop, _ = _stopping(lambda p: p.done >= 2)
    sync_once(cfg, A, pair.users[A].old_password, progress=progress, stop=stop)
    assert 2 <= len(dst(pair)["INBOX"]) < 20
    with connect(*pair.source_account(A)) as s:
        s.select_folder("INBOX")
        s.add_flags([1], ["\\Answered", "$Forwarded"])
        s.remove_flags([1], ["\\Seen"])
    before = src(pair)
    assert sync_once(cfg, A, pair.users[A].old_password).complete
    assert same(dst(pair), before)


@pytest.mark.parametrize("opened", ["before", "during its slice"])
def test_a_folder_the_user_opens_is_never_copied_by_two_jobs_at_once(opened, dovecot_pair, tmp_path):
    from collections import Counter

    from mailsyncd.focus import FocusQueue
    pair = dovecot_pair
    c = corpus()
    seed(*pair.source_account(A), c)
    cfg = make_config(tmp_path, pair, sync={"batch_messages": 4, "connections": 2})
    started: list[str] = []
    running: Counter = Counter()
    most: Counter = Counter()

    focus = FocusQueue(["INBOX"] if opened == "before" else [])

    class Watching(Progress):
        def folder(self, path: str, active: bool) -> None:
            with self._lock:
                running[path] += 1 if active else -1
                most[path] = max(most[path], running[path])
                if active:
                    started.append(path)
            if active and path == "INBOX" and opened != "before" and started.count("INBOX") == 1:
                focus.push("INBOX")     # the user opens INBOX while its recent slice is being copied
                time.sleep(0.5)         # ... and Sent's slice, shorter, ends meanwhile
            super().folder(path, active)
    res = sync_once(cfg, A, pair.users[A].old_password, progress=Watching(), focus=focus)
    assert res.complete and res.copied == sum(len(v) for v in c.values()), res
    assert same(dst(pair), src(pair))
    assert max(most.values()) == 1, most      # never two jobs on one folder at once
    if opened == "before":   # INBOX first and whole (its slice skipped), beside Sent's slice
        assert sorted(started[:2]) == ["INBOX", "Sent"] and started[2:] == ["Sent", "Archive"], started
