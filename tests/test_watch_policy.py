"""The watch's policy with a fake clock: modes, intervals, backoff, IDLE renewal, caps, the source budget,
the fallback to polling, and hostile bytes on an IDLE connection.  No sockets, no sleeps."""

from __future__ import annotations

import logging
import os

import pytest
from twisted.internet import defer
from twisted.internet.testing import StringTransport

from fakes import FakeReactor, HeldPool, SyncPool

from mailsyncd.config import parse_config
from mailsyncd.imap.targetlogin import TargetLogin
from mailsyncd.scheduler import Scheduler, _Account
from mailsyncd.store import Store
from mailsyncd.sync.account import PassResult
from mailsyncd.vault import Vault
from mailsyncd.watch import policy
from mailsyncd.watch.conn import MAX_RESPONSE, Ended, InboxConnection
from mailsyncd.watch.manager import Watches
from mailsyncd.watch.policy import IDLE, POLL, Backoff, Mark, PollInterval, Want, assign, changed, choose_mode

DAY = 86400.0


# -- pure policy -------------------------------------------------------------------------------------

def test_auto_is_idle_for_front_door_users_of_the_last_seven_days_and_poll_for_the_others():
    now = 100 * DAY
    assert choose_mode("auto", now - 6.9 * DAY, now) == IDLE
    assert choose_mode("auto", now - 7.1 * DAY, now) == POLL
    assert choose_mode("auto", None, now) == POLL
    assert choose_mode("off", now, now) == "off" and choose_mode("poll", now, now) == POLL


def test_the_poll_interval_backs_off_while_quiet_and_snaps_back_after_a_change():
    p = PollInterval(30, ceiling=300)
    quiet = [p.after(False) for _ in range(8)]
    assert quiet[:3] == [45, 67.5, 101.25] and quiet[-1] == 300 and max(quiet) == 300
    assert p.after(True) == 30
    assert PollInterval(30, ceiling=3600).ceiling == 300      # 10 x poll_interval at most


def test_reconnect_backoff_doubles_to_ten_minutes_and_resets():
    b = Backoff(rand=lambda lo, hi: hi)
    assert [b.next() for _ in range(9)] == [5, 10, 20, 40, 80, 160, 320, 600, 600]
    b.reset()
    assert b.next() == 5


def test_a_change_is_any_of_messages_uidnext_uidvalidity_and_the_first_look_is_a_baseline():
    base = Mark(5, 6, 1)
    assert not changed(None, base)
    assert not changed(base, Mark(5, 6, 1)) and not changed(base, Mark(5, None, None))
    assert changed(base, Mark(6, None, None)) and changed(base, Mark(5, 7, 1)) and changed(base, Mark(5, 6, 2))


def test_caps_keep_idle_for_the_most_recent_users_and_poll_the_rest():
    wants = [Want(f"u{i}@x", "h:1" if i < 3 else "h:2", IDLE, last_login=float(i)) for i in range(5)] + \
            [Want("p@x", "h:1", POLL)]
    out = assign(wants, max_watches=3, host_caps={"h:2": 0})
    assert out["p@x"] == (POLL, None)
    assert out["u3@x"] == out["u4@x"] == (POLL, "source connection cap")
    assert [out[f"u{i}@x"] for i in (2, 1)] == [(IDLE, None)] * 2 and out["u0@x"] == (IDLE, None)
    out = assign(wants[:3], max_watches=2, host_caps={})
    assert out["u0@x"] == (POLL, "scheduler.max_watches") and out["u2@x"] == (IDLE, None)


# -- the IDLE connection itself ----------------------------------------------------------------------

class _Endpoint:
    host, port, timeout, security, send_id = "127.0.0.1", 1, 30.0, "none", False


def _idle_conn(clock, marks, changes) -> tuple[InboxConnection, StringTransport]:
    login = TargetLogin(mode="same", user="alice", secret="pw")
    c = InboxConnection(clock, _Endpoint(), login, "idle", on_mark=marks.append,
                        on_change=lambda m, folder: changes.append((m, folder)))
    t = StringTransport()
    c.makeConnection(t)
    c.dataReceived(b"* OK [CAPABILITY IMAP4rev1 IDLE] hi\r\n")
    assert b'LOGIN "alice" "pw"' in t.value()
    c.dataReceived(b"P1 OK [CAPABILITY IMAP4rev1 IDLE] in\r\n")
    assert t.value().endswith(b"W1 EXAMINE INBOX\r\n")
    c.dataReceived(b"* 5 EXISTS\r\n* OK [UIDVALIDITY 7] v\r\n* OK [UIDNEXT 9] n\r\nW1 OK [READ-ONLY] done\r\n")
    assert marks == [Mark(5, 9, 7)] and t.value().endswith(b"W2 IDLE\r\n")
    c.dataReceived(b"+ idling\r\n")
    t.clear()
    return c, t


def test_idle_reports_exists_and_is_renewed_every_25_minutes_never_at_29():
    clock, marks, changes = FakeReactor(), [], []
    c, t = _idle_conn(clock, marks, changes)
    c.dataReceived(b"* 6 EXISTS\r\n* 1 RECENT\r\n")
    assert changes == [(Mark(6, None, None), "INBOX")]
    clock.advance(policy.IDLE_RENEW - 1)
    assert t.value() == b""
    clock.advance(1)
    assert t.value() == b"DONE\r\n" and policy.IDLE_RENEW < 29 * 60
    c.dataReceived(b"W2 OK idle done\r\n")
    assert t.value().endswith(b"W3 IDLE\r\n")
    c.dataReceived(b"+ idling\r\n")
    assert c.state == "idling" and not t.disconnecting


def test_a_renewal_nobody_answers_drops_the_connection_as_lost():
    clock, marks, changes = FakeReactor(), [], []
    c, t = _idle_conn(clock, marks, changes)
    ended = []
    c.ended.addCallback(ended.append)
    clock.advance(policy.IDLE_RENEW)
    clock.advance(_Endpoint.timeout)
    assert t.disconnecting or getattr(t, "disconnected", False)
    c.connectionLost(None)
    assert ended and ended[0].established and ended[0].stage == "renewing"


@pytest.mark.parametrize("junk", [
    b"* " + b"A" * (MAX_RESPONSE + 10) + b"\r\n",                       # a huge line
    b"* 1 FETCH (BODY[] {999999999}\r\n",                               # a huge literal
    b"* OK still here\r\n" * 10_001,                                    # a flood
    b"X9 OK who asked\r\n",                                             # a tagged answer to nothing
    b"+ again\r\n",                                                      # a continuation nobody wants
])
def test_hostile_bytes_on_an_idle_connection_drop_it_without_buffering(junk):
    clock, marks, changes = FakeReactor(), [], []
    c, t = _idle_conn(clock, marks, changes)
    aborted = []
    t.abortConnection = lambda: aborted.append(True)
    c.dataReceived(junk)
    assert aborted and changes == []
    assert len(c.reader.buf) <= MAX_RESPONSE + 2


# -- the manager: budget, caps, fallback, latency ----------------------------------------------------

A, B, C = "a@example.com", "b@example.com", "c@example.com"


class FakeProto:
    def __init__(self, mode, on_mark, on_change):
        self.mode, self.on_mark, self.on_change = mode, on_mark, on_change
        self.ended = defer.Deferred()
        self.stopped = False

    def stop(self):
        self.stopped = True
        if not self.ended.called:
            self.ended.callback(Ended(True, "stopped", "stopped"))


@pytest.fixture
def env(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    cfg = parse_config({"state_dir": str(state), "scheduler": {"pass_interval": 3600, "max_watches": 10},
                        "sync": {"watch": "idle", "connections": 1, "poll_interval": 10},
                        "domains": {"example.com": {
                            "source": {"host": "127.0.0.1", "port": 1, "security": "none", "max_connections": 3},
                            "target": {"host": "127.0.0.1", "port": 2, "security": "none"}}}},
                       path=str(tmp_path / "c.yaml"))
    store = Store.in_state_dir(str(state))
    vault = Vault(store, os.urandom(32))
    reactor, passes = FakeReactor(), HeldPool(PassResult)
    sched = Scheduler(reactor, passes, SyncPool(), store, vault, lambda: cfg)
    for a in (A, B, C):
        store.ensure_account(a, "example.com", "import")
        vault.put_password(a, "pw-" + a)
        sched.accounts[a] = _Account(a, "example.com", completed=True, due=1e12)
    opened: list[tuple[str, str, FakeProto]] = []

    def opener(reactor_, endpoint, user, password, mode, *, on_mark, on_change=None):
        p = FakeProto(mode, on_mark, on_change)
        opened.append((user, mode, p))
        return p

    w = Watches(reactor, sched, vault, store, SyncPool(), lambda: cfg, opener=opener)
    sched.on_pass_ended = w.pass_ended
    yield cfg, sched, w, opened, reactor, passes
    store.close()


def _budget_used(sched) -> int:
    return sum(sched.watch_conns.values()) + sum(sched.checks.values()) + \
        sum(r.connections for r in sched.running.values())


def test_watches_leave_room_for_a_pass_and_never_exceed_the_source_budget(env):
    cfg, sched, w, opened, reactor, passes = env
    w.tick()
    idle = [p for _, mode, p in opened if mode == IDLE]
    # max_connections 3, a pass needs sync.connections (1): a third watch would leave it nothing
    assert len(idle) == 2 and sched.watch_conns == {"127.0.0.1:1": 2} and _budget_used(sched) == 2
    idle[0].on_mark(Mark(5, 6, 1))
    idle[0].on_change(Mark(6, None, None))          # new mail: a pass now, with the connection left
    reactor.advance(0)
    assert [a for _, a in passes.held] == [A] and _budget_used(sched) == 3
    idle[1].on_mark(Mark(5, 6, 1))
    idle[1].on_change(Mark(6, None, None))          # B too: its pass waits, the watches hold the rest
    reactor.advance(0)
    assert [a for _, a in passes.held] == [A] and _budget_used(sched) == 3
    for _ in range(60):                             # C waits for a connection; its polls need one too
        reactor.advance(1)
        w.tick()
        assert _budget_used(sched) <= 3
    passes.finish()
    reactor.advance(0)
    assert [a for _, a in passes.held] == [B] and _budget_used(sched) == 3    # then B's pass


def test_a_refused_idle_falls_back_to_polling_with_one_line_and_caps_the_host(env, caplog):
    cfg, sched, w, opened, reactor, passes = env
    caplog.set_level(logging.INFO, "mailsyncd.watch")
    w.tick()
    (_, _, pa), (_, _, pb) = opened                 # C waits for a connection (the pass's reserve)
    pa.on_mark(Mark(5, 6, 1))                       # A is in IDLE; B is refused
    pb.ended.callback(Ended(False, "login", "source said BYE: Too many connections"))
    fallbacks = [r.message for r in caplog.records if "event=watch_fallback" in r.message]
    assert len(fallbacks) == 1 and "account=b@example.com" in fallbacks[0] and "Too many" in fallbacks[0]
    assert sched.watch_conns == {"127.0.0.1:1": 1} and w.host_caps["127.0.0.1:1"][0] == 1
    n = len(opened)
    for _ in range(30):
        reactor.advance(1)
        w.tick()
    # B is polled; C, which a connection would fit now, is held to what the source accepted (one IDLE)
    assert {st.address: st.mode for st in w.states.values()} == {A: IDLE, B: POLL, C: POLL}
    assert opened[n:] and all(mode == "status" for _, mode, _ in opened[n:])
    assert len([r for r in caplog.records if "event=watch_fallback" in r.message]) == 1   # said once
    assert sum(1 for r in caplog.records if "event=watch_capped" in r.message and "polled_instead=1" in r.message
               and "source connection cap" in r.message) == 1


def test_new_mail_latency_runs_from_the_notice_to_the_end_of_the_focused_copy(env, caplog):
    cfg, sched, w, opened, reactor, passes = env
    caplog.set_level(logging.INFO)
    w.tick()
    pa = {user: p for user, _, p in opened}[A]
    pa.on_mark(Mark(5, 6, 1))
    reactor.advance(2)
    pa.on_change(Mark(6, None, None), "INBOX")
    reactor.advance(0)
    assert [a for _, a in passes.held] == [A] and "event=focus account=a@example.com folder='INBOX' reason=watch" \
        in caplog.text                              # INBOX first: a focused pass
    pa.on_change(Mark(7, None, None), "INBOX")      # more mail while it runs: into that pass's queue
    reactor.advance(3)
    passes.finish()
    reactor.advance(0)
    assert w.view()[A] == {"watching": IDLE, "new_mail_latency": 3.0, "watch_fallback": None}
    assert passes.held == []


def test_news_of_a_folder_without_a_usable_name_asks_for_a_whole_pass_after_the_running_one(env):
    cfg, sched, w, opened, reactor, passes = env
    w.tick()
    pa = {user: p for user, _, p in opened}[A]
    pa.on_mark(Mark(5, 6, 1))
    sched.sync_now(A)
    reactor.advance(0)
    assert [a for _, a in passes.held] == [A]       # a pass runs (the scheduler's own)
    reactor.advance(2)
    pa.on_change(Mark(1, 2, None), None)            # NOTIFY named a folder as a literal: which one, unknown
    reactor.advance(3)
    passes.finish()
    reactor.advance(0)
    assert w.view()[A]["new_mail_latency"] is None and [a for _, a in passes.held] == [A]   # one more pass
    reactor.advance(1)
    passes.finish()
    assert w.view()[A]["new_mail_latency"] == 4.0


def test_a_global_cap_polls_the_excess_and_says_so_once(env, caplog):
    cfg, sched, w, opened, reactor, passes = env
    object.__setattr__(cfg.scheduler, "max_watches", 1)
    caplog.set_level(logging.INFO, "mailsyncd.watch")
    for _ in range(3):
        w.tick()
    assert sorted(st.mode for st in w.states.values()) == [IDLE, POLL, POLL]
    capped = [r.message for r in caplog.records if "event=watch_capped" in r.message]
    assert len(capped) == 1 and "polled_instead=2" in capped[0] and "scheduler.max_watches" in capped[0]


def test_a_watch_stopped_while_connecting_is_closed_when_the_connection_arrives():
    c = InboxConnection(FakeReactor(), _Endpoint(), TargetLogin(mode="same", user="a", secret="pw"), "idle",
                        on_mark=lambda m: None)
    c.stop()                                   # the manager gave up on it (and its budget) already
    t = StringTransport()
    aborted = []
    t.abortConnection = lambda: aborted.append(True)
    c.makeConnection(t)
    c.dataReceived(b"* OK [CAPABILITY IMAP4rev1 IDLE] hi\r\n")
    assert aborted and b"LOGIN" not in t.value()


def test_watches_give_their_connection_back_to_a_waiting_login_and_to_a_lowered_limit(env, caplog):
    cfg, sched, w, opened, reactor, passes = env
    caplog.set_level(logging.INFO, "mailsyncd.watch")
    w.last_login[B] = 100.0                         # B logged in more recently than A: A yields first
    w.tick()
    assert _budget_used(sched) == 2
    sched.checks["127.0.0.1:1"] = 1                 # a login check holds the last connection
    got = []
    sched.acquire(cfg.domains["example.com"].source, wait=10).addCallback(got.append)   # and another waits
    assert got == []
    w.tick()
    assert got == [True] and "event=watch_yield account=a@example.com" in caplog.text
    proto = {user: p for user, _, p in opened}
    assert _budget_used(sched) == 3 and proto[A].stopped and not proto[B].stopped
    sched.release(cfg.domains["example.com"].source)
    sched.release(cfg.domains["example.com"].source)
    sched.host_limit["127.0.0.1:1"] = 0.0           # throttled below what the watches hold
    w.tick()
    assert proto[B].stopped and _budget_used(sched) == 0
    for _ in range(30):                             # nothing reopens while the limit says no
        reactor.advance(1)
        w.tick()
        assert _budget_used(sched) == 0


def test_notify_reports_new_mail_in_other_folders_by_name_and_refuses_names_it_cannot_take():
    from mailsyncd.watch.conn import NOTIFY_SET, status_folder
    clock, marks, changes = FakeReactor(), [], []
    c = InboxConnection(clock, _Endpoint(), TargetLogin(mode="same", user="alice", secret="pw"), "idle",
                        on_mark=marks.append, on_change=lambda m, folder: changes.append((m, folder)))
    t = StringTransport()
    c.makeConnection(t)
    c.dataReceived(b"* OK hi\r\nP1 OK [CAPABILITY IMAP4rev1 IDLE NOTIFY] in\r\n")
    c.dataReceived(b"* 5 EXISTS\r\nW1 OK [READ-ONLY] done\r\n")
    assert t.value().endswith(b"W2 " + NOTIFY_SET + b"\r\n")
    c.dataReceived(b"W2 OK NOTIFY completed\r\n")
    assert t.value().endswith(b"W3 IDLE\r\n")
    c.dataReceived(b"+ idling\r\n")
    c.dataReceived(b'* STATUS Later (MESSAGES 2 UIDNEXT 3 UIDVALIDITY 9)\r\n'
                   b'* STATUS "Sent &AMk-l\\"x" (MESSAGES 1 UIDNEXT 2)\r\n'
                   b"* STATUS {5}\r\nA\r\nB1 (MESSAGES 1)\r\n")
    assert changes == [(Mark(2, 3, 9), "Later"), (Mark(1, 2, None), 'Sent \u00c9l"x'), (Mark(1, None, None), None)]
    assert status_folder(b'* STATUS "a\rb" (MESSAGES 1)') is None          # a bare CR in the name
    assert status_folder(b"* STATUS a&AAA-b (MESSAGES 1)") is None           # NUL, in modified UTF-7
    assert status_folder(b"* STATUS &Jjo- (MESSAGES 1)") == "\u263a"
    assert status_folder(b"* STATUS &&&bad (MESSAGES 1)") is None


def test_a_refused_notify_leaves_the_watch_on_inbox():
    clock, marks, changes = FakeReactor(), [], []
    c = InboxConnection(clock, _Endpoint(), TargetLogin(mode="same", user="alice", secret="pw"), "idle",
                        on_mark=marks.append, on_change=lambda m, folder: changes.append((m, folder)))
    t = StringTransport()
    c.makeConnection(t)
    c.dataReceived(b"* OK hi\r\nP1 OK [CAPABILITY IMAP4rev1 IDLE NOTIFY] in\r\n* 5 EXISTS\r\nW1 OK done\r\n")
    c.dataReceived(b"W2 NO [NOTIFICATIONOVERFLOW] not now\r\n+ idling\r\n")
    c.dataReceived(b"* STATUS Later (MESSAGES 2 UIDNEXT 3)\r\n* 6 EXISTS\r\n")
    assert c.state == "idling" and changes == [(Mark(6, None, None), "INBOX")]


@pytest.mark.parametrize("first_look,passes_expected", [(Mark(5, 6, 1), []), (Mark(6, 7, 1), [A]),
                                                        (Mark(5, 6, 2), [A])])
def test_mail_that_came_between_the_last_pass_and_the_first_look_is_a_change(env, first_look, passes_expected):
    from mailsyncd.store.records import FolderState
    cfg, sched, w, opened, reactor, passes = env
    w.store.save_folder(A, FolderState("INBOX", "INBOX", "INBOX", 1, 5, 6, 5, None, None))
    w.tick()
    proto = {user: p for user, _, p in opened}
    proto[A].on_mark(first_look)
    reactor.advance(0)
    assert [a for _, a in passes.held] == passes_expected


def test_the_pass_gate_refunds_a_productive_copy_and_spaces_let_throughs_by_its_gap():
    from mailsyncd.watch.policy import PassGate
    g = PassGate(burst=2, refill=10.0, gap=1.0)
    assert g.wait(0.0) == 0.0
    assert g.wait(0.5) == 0.5                 # a token is there, but not before the gap
    assert g.wait(1.0) == 0.0                 # the burst's second
    assert g.wait(1.5) > 7                    # empty: the refill
    g.refund(1.5)                             # the copy found new mail
    assert g.wait(2.0) == 0.0                 # at once (the gap has passed)
    assert g.wait(2.2) > 7                    # no refund for that one: empty again
