"""The front door's hold of a SELECT (proxy/openfolder.py), in-process: a fake clock, a fake scheduler, and
recording transports.  Time moves only when the test says; no server, no thread."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fakes import FakeReactor
from twisted.internet import defer

from mailsyncd.config.frontdoor import FrontDoor
from mailsyncd.focus import ByTarget, FocusResult
from mailsyncd.proxy.openfolder import MAX_HELD, OpenFolderWatch, decide

A = "alice@example.com"


class Wire:
    """A TCP transport as Twisted's: one resumeProducing undoes any number of pauseProducing."""

    def __init__(self):
        self.data = b""
        self.paused = False

    def write(self, data):
        self.data += data

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False


class FakeScheduler:
    def __init__(self, found, rate=None):
        self.found = found           # what folder_left answers (None: nothing to do)
        self.rate = rate
        self.lookups: list[defer.Deferred] = []
        self.focused: list = []       # (key, deferred, on_left)

    def folder_left(self, address, name):
        d = defer.Deferred()
        self.lookups.append((name, d))
        return d

    def answer(self):
        name, d = self.lookups.pop(0)
        d.callback(self.found(name) if callable(self.found) else self.found)

    def focus(self, address, key, *, reason, on_left=None):
        d = defer.Deferred()
        self.focused.append((key, d, on_left))
        return d

    def copy_rate(self, address):
        return self.rate


@pytest.fixture
def make():
    def build(found, **fd):
        reactor = FakeReactor()
        sched = FakeScheduler(found)
        session = SimpleNamespace(transport=Wire(), target=SimpleNamespace(transport=Wire()), user=A,
                                  config=SimpleNamespace(frontdoor=FrontDoor(**fd)),
                                  f=SimpleNamespace(reactor=reactor, scheduler=sched))
        session.to_target = lambda data: session.target.transport.write(data)
        session.to_client = lambda data: session.transport.write(data)
        return OpenFolderWatch(session), session, sched, reactor
    return build


def test_a_small_remainder_holds_the_select_and_what_follows_until_the_copy_is_done(make):
    w, s, sched, reactor = make(("Projects", 120))
    stream = b"1 NOOP\r\n2 SELECT Projects\r\n3 FETCH 1:* FLAGS\r\n"
    w.from_client(stream)
    assert s.target.transport.data == b"1 NOOP\r\n2 SELECT Projects\r"   # the server cannot run it yet
    sched.answer()
    (key, done, _), = sched.focused
    assert key == "Projects"
    w.from_client(b"4 NOOP\r\n")
    reactor.advance(2.9)
    assert s.target.transport.data == b"1 NOOP\r\n2 SELECT Projects\r"
    done.callback(FocusResult("done", "Projects"))
    assert s.target.transport.data == stream + b"4 NOOP\r\n"               # unchanged, in order
    assert b"ALERT" not in s.transport.data
    assert not reactor.getDelayedCalls()


def test_the_hold_never_outlasts_the_deadline_whatever_the_source_does(make):
    w, s, sched, reactor = make(("Projects", 120), copy_on_open_deadline=1.5)
    w.from_client(b"a SELECT Projects\r\nb NOOP\r\n")
    sched.answer()
    reactor.advance(1.49)
    assert not s.target.transport.data.endswith(b"\n")
    reactor.advance(0.01)
    assert s.target.transport.data == b"a SELECT Projects\r\nb NOOP\r\n"
    assert s.transport.data == b"* OK [ALERT] Mailbox migration in progress: 120 older messages of this " \
                               b"folder are still arriving.\r\n"
    sched.focused[0][1].callback(FocusResult("done"))    # late: changes nothing
    assert s.target.transport.data == b"a SELECT Projects\r\nb NOOP\r\n"


def test_the_deadline_holds_even_when_the_lookup_itself_never_answers(make):
    w, s, sched, reactor = make(None, copy_on_open_deadline=2.0)
    w.from_client(b"a EXAMINE INBOX\r\n")
    reactor.advance(2.0)
    assert s.target.transport.data == b"a EXAMINE INBOX\r\n" and sched.focused == []


def test_a_complete_folder_goes_through_as_soon_as_the_store_says_so(make):
    w, s, sched, reactor = make(None)
    w.from_client(b"a SELECT INBOX\r\n")
    sched.answer()
    assert s.target.transport.data == b"a SELECT INBOX\r\n" and sched.focused == []
    assert not reactor.getDelayedCalls()


def test_an_unknown_remainder_waits_for_the_plan_then_a_large_one_goes_with_one_alert(make):
    w, s, sched, reactor = make((ByTarget("New"), None), copy_on_open=500)
    w.from_client(b"a SELECT New\r\n")
    sched.answer()
    key, done, on_left = sched.focused[0]
    assert key == ByTarget("New") and s.target.transport.data == b"a SELECT New\r"
    on_left(5000)
    assert s.target.transport.data == b"a SELECT New\r\n"
    assert s.transport.data.count(b"[ALERT]") == 1 and b"5,000 older messages" in s.transport.data


def test_the_alert_goes_between_two_complete_server_responses(make):
    w, s, sched, reactor = make(("Big", 900))
    w.from_target(b"* 1 FETCH (BODY[] {10}\r\n12345")         # a response still arriving
    w.from_client(b"a SELECT Big\r\n")
    sched.answer()
    assert s.target.transport.data == b"a SELECT Big\r\n"     # large: not held
    assert b"ALERT" not in s.transport.data
    w.from_target(b"67890)\r\nz OK done\r\n* 3 EXISTS\r\n")
    assert s.transport.data.startswith(b"* 1 FETCH (BODY[] {10}\r\n1234567890)\r\n* OK [ALERT] ")
    assert s.transport.data.endswith(b"still arriving.\r\nz OK done\r\n* 3 EXISTS\r\n")


def test_a_rate_too_slow_for_three_seconds_means_alert_not_hold():
    assert decide(400, 100.0, 500) == "alert"       # 4 s at the measured rate
    assert decide(200, 100.0, 500) == "hold"
    assert decide(200, None, 500) == "hold"          # no rate measured yet: the deadline bounds it
    assert decide(500, 1e6, 500) == "alert"
    assert decide(0, None, 500) == "pass" and decide(None, None, 500) == "wait"


def test_after_compress_nothing_is_looked_at_and_a_pending_alert_is_dropped(make):
    w, s, sched, reactor = make(("Big", 900))
    w.from_target(b"* 1 FETCH (BODY[] {10}\r\n12345")
    w.from_client(b"a SELECT Big\r\n")
    sched.answer()
    w.from_client(b"b COMPRESS DEFLATE\r\n")
    w.from_target(b"67890)\r\nb OK\r\n")
    assert b"ALERT" not in s.transport.data
    w.from_client(b"\x00c SELECT Other\r\n")      # compressed bytes, whatever they look like
    assert sched.lookups == [] and s.target.transport.data.endswith(b"\x00c SELECT Other\r\n")


def test_a_flood_behind_a_held_select_stops_reading_the_client_until_release(make):
    w, s, sched, reactor = make(("Projects", 10))
    w.from_client(b"a SELECT Projects\r\n")
    sched.answer()
    for _ in range(40):
        w.from_client(b"x" * 8192)
    assert s.transport.paused == 1
    sched.focused[0][1].callback(FocusResult("done"))
    assert s.transport.paused == 0 and len(s.target.transport.data) == len(b"a SELECT Projects\r\n") + 40 * 8192


def test_a_flood_behind_a_held_select_stays_bounded_when_the_relay_resumes_the_client(make):
    # The relay's own flow control (target.transport.registerProducer(client transport)) resumes the
    # client when the target's write buffer drains, even while a SELECT is held: reading must stop again.
    w, s, sched, reactor = make(("Projects", 10))
    w.from_client(b"a SELECT Projects\r\n")
    sched.answer()
    while not s.transport.paused:            # a paused transport delivers nothing more
        w.from_client(b"x" * 8192)
    s.transport.resumeProducing()            # the target's buffer drained
    for _ in range(200):
        if not s.transport.paused:
            w.from_client(b"x" * 8192)
    assert s.transport.paused and len(w.hold.buffer) <= MAX_HELD + 2 * 8192
    sched.focused[0][1].callback(FocusResult("done"))
    assert not s.transport.paused and s.target.transport.data.endswith(b"x" * 8192)


def test_many_pipelined_selects_answered_at_once_go_through_whole_and_in_order(make, caplog):
    # folder_left answers at once (not syncing, cut over, a name no source folder has): a client pipelining
    # thousands of SELECTs must not make the watch recurse once per command (RecursionError, a lost stream).
    w, s, sched, reactor = make(None)
    sched.folder_left = lambda address, name: defer.succeed(None)
    stream = b"".join(b"%d SELECT f%d\r\n" % (i, i) for i in range(5000))
    w.from_client(stream)
    assert s.target.transport.data == stream
    assert w.hold is None and "open_folder_error" not in caplog.text
