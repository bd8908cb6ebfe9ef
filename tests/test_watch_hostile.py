"""A hostile source against the watch (issue 14.1): floods of news, reconnect loops, answers about other
mailboxes.  In process with a fake clock (fakes.FakeReactor) and StringTransport: no sockets, no sleeps."""

from __future__ import annotations

import logging
import re

from twisted.internet.testing import StringTransport

import test_watch_policy
from fakes import FakeReactor
from test_watch_policy import A, _Endpoint, _idle_conn

from mailsyncd.imap.targetlogin import TargetLogin
from mailsyncd.store.records import FolderState
from mailsyncd.watch.conn import Ended, InboxConnection
from mailsyncd.watch.manager import MAX_PENDING
from mailsyncd.watch.policy import WATCH_PASS_BURST, WATCH_PASS_REFILL, Mark

env = test_watch_policy.env         # the manager with a fake clock, a held pass pool and three accounts


def _run_passes(reactor, passes, seconds: float, step: float, each) -> int:
    """Advance ``seconds`` of fake time by ``step``, calling ``each(i)`` per step; every pass ends at once.
    Returns how many passes started."""
    started = 0
    for i in range(int(seconds / step)):
        each(i)
        reactor.advance(step)
        started += len(passes.finish())
        reactor.advance(0)
    return started


def test_a_flood_of_news_cannot_make_the_watch_start_a_pass_per_event(env, caplog):
    cfg, sched, w, opened, reactor, passes = env
    caplog.set_level(logging.INFO)
    w.tick()
    pa = {user: p for user, _, p in opened}[A]
    pa.on_mark(Mark(5, 6, 1))

    def flood(i):        # two EXISTS and 40 NOTIFYs for made-up folders a second, for five minutes
        pa.on_change(Mark(6 + i, None, None), "INBOX")
        for j in range(20):
            pa.on_change(Mark(1, None, None), f"Nowhere{i}.{j}")
        assert len(w.states[A].pending) <= MAX_PENDING + 1     # held back news stays bounded
    started = _run_passes(reactor, passes, 300, 0.5, flood)
    # a burst, then at most one pass per WATCH_PASS_REFILL seconds: the source cannot make us hammer it
    assert started <= WATCH_PASS_BURST + 300 / WATCH_PASS_REFILL + 1, started
    assert caplog.text.count("event=watch_change") <= (MAX_PENDING + 1) * (started + 1)
    # and nothing is lost: news the shut gate holds back is copied as soon as it opens
    pa.on_change(Mark(10_000, None, None), "INBOX")
    reactor.advance(0)
    assert w.states[A].pending == {"INBOX"}
    reactor.advance(WATCH_PASS_REFILL)
    assert len(passes.finish()) == 1 and not w.states[A].pending
    reactor.advance(0)
    assert w.view()[A]["new_mail_latency"] is not None


def test_a_source_that_says_bye_right_after_idle_is_reconnected_ever_later_not_every_five_seconds(env, caplog):
    cfg, sched, w, opened, reactor, passes = env
    caplog.set_level(logging.INFO, "mailsyncd.watch")
    for other in list(sched.accounts):
        if other != A:                # alone: nothing else holds the source's connections
            del sched.accounts[other]
    w.tick()

    def protos():
        return [p for user, mode, p in opened if user == A and mode == "idle"]
    for _ in range(600):              # ten minutes: each new connection answers EXAMINE, enters IDLE, says BYE
        live = protos()[-1]
        if not live.ended.called:
            live.on_mark(Mark(5, 6, 1))
            live.ended.callback(Ended(True, "watching", "source said BYE: go away"))
        for _, mode, p in opened:     # meanwhile the account is polled: those answer
            if mode == "status" and not p.ended.called:
                p.on_mark(Mark(5, 6, 1))
                p.ended.callback(Ended(True, "status", "done"))
        reactor.advance(1)
        w.tick()
    # 5, 10, 20 ... s with jitter (at least half): 8 connections at most in ten minutes, not 120 or more
    assert len(protos()) <= 9, len(protos())
    retries = [float(x) for x in re.findall(r"event=watch_lost account=a@example.com .* retry_in=(\d+)s",
                                            caplog.text)]
    assert retries == sorted(retries) and retries[-1] >= 80, retries


def test_a_connection_that_lasted_resets_the_backoff(env):
    from mailsyncd.watch.policy import STABLE_CONNECTION
    cfg, sched, w, opened, reactor, passes = env
    for other in list(sched.accounts):
        if other != A:
            del sched.accounts[other]
    w.tick()
    st = w.states[A]
    for _ in range(4):                # four quick losses: the backoff has grown
        p = [p for user, mode, p in opened if user == A and mode == "idle"][-1]
        p.on_mark(Mark(5, 6, 1))
        p.ended.callback(Ended(True, "watching", "BYE"))
        reactor.advance(st.retry_at - reactor.seconds())
        w.tick()
    assert st.backoff.failures == 4
    p = [p for user, mode, p in opened if user == A and mode == "idle"][-1]
    p.on_mark(Mark(5, 6, 1))
    reactor.advance(STABLE_CONNECTION)
    p.ended.callback(Ended(True, "watching", "connection reset"))
    assert st.backoff.failures == 1 and st.retry_at - reactor.seconds() <= 5


def _status_conn(clock, marks):
    c = InboxConnection(clock, _Endpoint(), TargetLogin(mode="same", user="alice", secret="pw"), "status",
                        on_mark=marks.append)
    t = StringTransport()
    c.makeConnection(t)
    c.dataReceived(b"* OK hi\r\nP1 OK [CAPABILITY IMAP4rev1] in\r\n")
    assert t.value().endswith(b"W1 STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY)\r\n")
    return c, t


def test_a_status_answer_about_another_mailbox_or_with_numbers_in_its_name_is_not_taken_for_inbox():
    clock, marks = FakeReactor(), []
    c, t = _status_conn(clock, marks)
    c.dataReceived(b'* STATUS inbox (MESSAGES 3 UIDNEXT 4 UIDVALIDITY 9)\r\n'
                   b'* STATUS Spam (MESSAGES 999 UIDNEXT 1000 UIDVALIDITY 5)\r\n'
                   b'* STATUS {5}\r\nINBOX (MESSAGES 998)\r\n'
                   b'* STATUS "INBOX" (MESSAGES 3 UIDNEXT 99999999999 X-NAME "UIDVALIDITY 77")\r\nW1 OK done\r\n')
    assert marks == [Mark(3, 4, 9)]


def test_notify_news_takes_its_numbers_from_the_list_not_from_the_folder_name():
    from mailsyncd.watch.conn import status_items
    assert status_items(b'* STATUS "UIDNEXT 77" (MESSAGES 2 UIDNEXT 3)') == {"messages": 2, "uidnext": 3}
    assert status_items(b'* STATUS {13}\r\nUIDVALIDITY 8 (MESSAGES 2 HIGHESTMODSEQ 12345678901234567)') == \
        {"messages": 2}
    assert status_items(b"* STATUS Later (MESSAGES 2 UIDNEXT 3") == {}                # no closing parenthesis
    assert status_items(b"* STATUS Later (MESSAGES -2 UIDNEXT 99999999999)") == {}
    assert status_items(b"* STATUS {99}\r\nshort (MESSAGES 2)") == {}


def test_gigantic_or_negative_numbers_are_not_read_as_a_change():
    clock, marks, changes = FakeReactor(), [], []
    c, t = _idle_conn(clock, marks, changes)
    c.dataReceived(b"* 99999999999 EXISTS\r\n* -1 EXISTS\r\n* 4294967296x EXISTS\r\n")
    assert changes == [] and c.state == "idling"


def test_a_source_dribbling_one_byte_every_29_seconds_is_cut_off_at_the_deadline_not_kept_for_days():
    clock, marks, changes = FakeReactor(), [], []
    c, t = _idle_conn(clock, marks, changes)
    aborted = []
    t.abortConnection = lambda: aborted.append(clock.seconds())
    clock.advance(c.renew)
    assert t.value() == b"DONE\r\n"
    fed = 0
    for b in b"W2 OK idle done, eventually\r\n":      # the answer to DONE, one byte every 29 s
        if aborted:
            break
        c.dataReceived(bytes([b]))
        fed += 1
        clock.advance(_Endpoint.timeout - 1)
    assert aborted and fed == 2, (aborted, fed)         # cut off at 30 s (seen at the step that passes it)


def test_a_login_dribbled_byte_by_byte_is_cut_off_at_the_deadline():
    clock = FakeReactor()
    c = InboxConnection(clock, _Endpoint(), TargetLogin(mode="same", user="alice", secret="pw"), "status",
                        on_mark=lambda m: None)
    t = StringTransport()
    aborted = []
    t.abortConnection = lambda: aborted.append(clock.seconds())
    c.makeConnection(t)
    fed = 0
    for b in b"* OK [CAPABILITY IMAP4rev1] a very slow greeting from a server that takes its time\r\n":
        if aborted:
            break
        c.dataReceived(bytes([b]))
        fed += 1
        clock.advance(_Endpoint.timeout - 1)
    assert aborted and fed == 2, (aborted, fed)


def test_news_from_a_poll_waits_for_the_polls_connection_to_close(env):
    # a source allowing one connection per user (tests/test_watch.py: mail_max_userip_connections = 1) refuses
    # the focused pass's login while the poll that saw the news is still connected
    cfg, sched, w, opened, reactor, passes = env
    object.__setattr__(cfg.domains["example.com"].sync, "watch", "poll")
    for other in list(sched.accounts):
        if other != A:
            del sched.accounts[other]
    w.store.save_folder(A, FolderState("INBOX", "INBOX", "INBOX", 1, 5, 6, 5, None, None))
    for _ in range(int(cfg.domains["example.com"].sync.poll_interval) + 1):
        reactor.advance(1)
        w.tick()
    (_, mode, poll), = opened
    assert mode == "status"
    poll.on_mark(Mark(6, 7, 1))                   # new mail, seen before the poll's LOGOUT
    reactor.advance(0)
    assert passes.held == [] and sched.watch_conns == {"127.0.0.1:1": 1}
    poll.ended.callback(Ended(True, "status", "done"))
    reactor.advance(0)
    assert [a for _, a in passes.held] == [A] and not sched.watch_conns.get("127.0.0.1:1")


def test_new_mail_announced_while_idle_is_being_renewed_is_not_missed():
    clock, marks, changes = FakeReactor(), [], []
    c, t = _idle_conn(clock, marks, changes)
    clock.advance(c.renew)
    assert t.value() == b"DONE\r\n"
    c.dataReceived(b"* 6 EXISTS\r\nW2 OK idle done\r\n")     # the message came as we left IDLE
    c.dataReceived(b"* 7 EXISTS\r\n+ idling\r\n")            # and another before the new IDLE began
    assert changes == [(Mark(6, None, None), "INBOX"), (Mark(7, None, None), "INBOX")]


def _passes_that_copied(passes, n: int) -> None:
    """The held passes now end as passes that copied ``n`` messages (0: the news led nowhere)."""
    from mailsyncd.sync.account import PassResult

    def result(address):
        return PassResult(address, [_report(n)])
    passes.result_for = result


def _report(n: int):
    from mailsyncd.store.records import FolderReport
    return FolderReport("INBOX", "INBOX", None, None, n, 0, 0, 0, 0.0, None, 0.0)


def test_real_new_mail_every_two_seconds_is_copied_within_the_gap_not_held_to_the_refill(env):
    """A copy that found new mail gives its token back: mail arriving every 2 s (the watch's bench) waits at
    most WATCH_PASS_GAP, not WATCH_PASS_REFILL (p95 was 9.5 s); one let-through per gap at most."""
    from mailsyncd.watch.policy import WATCH_PASS_GAP
    cfg, sched, w, opened, reactor, passes = env
    w.tick()
    pa = {user: p for user, _, p in opened}[A]
    pa.on_mark(Mark(5, 6, 1))
    _passes_that_copied(passes, 1)
    waits, started = [], 0
    for i in range(60):                       # two minutes: one new message every 2 s
        pa.on_change(Mark(7 + i, None, None), "INBOX")
        noticed = reactor.seconds()
        for _ in range(40):                   # 0.05 s steps until its copy starts
            reactor.advance(0)
            if passes.held:
                break
            reactor.advance(0.05)
        waits.append(reactor.seconds() - noticed)
        started += len(passes.finish())
        reactor.advance(0)
        reactor.advance(2 - (reactor.seconds() - noticed))
    assert started == 60 and max(waits) <= WATCH_PASS_GAP + 1e-6, waits


def test_made_up_news_that_copies_nothing_is_still_held_to_the_refill(env):
    cfg, sched, w, opened, reactor, passes = env
    w.tick()
    pa = {user: p for user, _, p in opened}[A]
    pa.on_mark(Mark(5, 6, 1))
    _passes_that_copied(passes, 0)
    started = _run_passes(reactor, passes, 120, 0.5, lambda i: pa.on_change(Mark(6 + i, None, None), "INBOX"))
    assert started <= WATCH_PASS_BURST + 120 / WATCH_PASS_REFILL + 1, started
