"""The front door's pre-login policy, in process: the real FrontDoorFactory on a fake clock.

Clients are in-memory transports; the gate is a stub that records every login it is asked to
check, so a test can show that a command was never run.  Deadlines move only with ``advance``:
what the real-socket tests would wait seconds for takes microseconds here.
"""

from __future__ import annotations

import pytest
from twisted.internet import address, defer

from fakes import ClientTransport, FakeReactor

from mailsyncd.auth.gate import Verdict
from mailsyncd.config import parse_config
from mailsyncd.proxy.frontdoor import MAX_AUTH_FAILURES, MAX_BAD, FrontDoor, FrontDoorFactory

IDLE, DEADLINE = 10.0, 30.0


class GateStub:
    """Refuses every login at once and remembers who asked."""

    def __init__(self):
        self.calls: list[tuple[str, str, str]] = []

    def authenticate(self, ip, user, password, config=None):
        self.calls.append((ip, user, password))
        return defer.succeed(Verdict(False, user, "wrong password"))


class Env:
    def __init__(self, tmp_path, *, plaintext=True, tls_options=None, **frontdoor):
        fd = {"allow_plaintext_login": plaintext, "preauth_timeout": IDLE, "preauth_deadline": DEADLINE,
              **frontdoor}
        self.config = parse_config({"state_dir": str(tmp_path / "state"), "frontdoor": fd, "domains": {
            "example.com": {"source": {"host": "127.0.0.1", "port": 1, "security": "none"},
                            "target": {"host": "127.0.0.1", "port": 2, "security": "none"}}}},
            path=str(tmp_path / "mailsyncd.yaml"))
        self.reactor = FakeReactor()
        self.gate = GateStub()
        self.factory = FrontDoorFactory(self.reactor, lambda: self.config, self.gate, None,
                                        lambda: tls_options, implicit_tls=False)

    def connect(self, ip: str = "203.0.113.7", port: int = 50000):
        proto = self.factory.buildProtocol(address.IPv4Address("TCP", ip, port))
        if isinstance(proto, FrontDoor):
            proto.callLater = self.reactor.callLater      # TimeoutMixin's idle timer on the fake clock
        t = ClientTransport(ip, port)
        proto.makeConnection(t)
        return proto, t

    def close(self, proto, t) -> None:
        t.loseConnection()
        proto.connectionLost(None)


@pytest.fixture
def env(tmp_path):
    return Env(tmp_path)


def said(t: ClientTransport) -> bytes:
    out = t.value()
    t.clear()
    return out


# -- time limits --------------------------------------------------------------------------------------

def test_noops_keep_the_idle_timer_alive_but_not_the_deadline(env):
    proto, t = env.connect()
    assert said(t).startswith(b"* OK [CAPABILITY ")
    for i in range(int(DEADLINE / 5) - 1):                 # a NOOP every 5 s, well inside the idle limit
        env.reactor.advance(5)
        proto.dataReceived(b"n%d NOOP\r\n" % i)
        assert said(t) == b"n%d OK NOOP completed.\r\n" % i and not t.disconnecting
    env.reactor.advance(DEADLINE - env.reactor.seconds() - 0.01)
    assert not t.disconnecting
    env.reactor.advance(0.01)
    assert said(t) == b"* BYE Autologout; no login within the time allowed\r\n" and t.disconnecting


def test_an_idle_client_is_logged_out_after_the_idle_time(env):
    proto, t = env.connect()
    said(t)
    env.reactor.advance(IDLE - 0.01)
    assert not t.disconnecting
    env.reactor.advance(0.01)
    assert said(t) == b"* BYE Autologout; idle for too long\r\n" and t.disconnecting
    env.close(proto, t)
    assert not env.reactor.getDelayedCalls()              # the deadline went with the session


# -- connection caps ----------------------------------------------------------------------------------

def test_the_per_network_cap_counts_sessions_before_login_and_frees_them_on_close(tmp_path):
    env = Env(tmp_path, max_preauth_per_ip=2)
    first = env.connect("203.0.113.7", 1)
    env.connect("203.0.113.7", 2)
    refused, t = env.connect("203.0.113.7", 3)
    assert not isinstance(refused, FrontDoor)
    assert t.value() == b"* BYE Too many connections from your address, try again later.\r\n" and t.disconnecting
    other, t2 = env.connect("198.51.100.9", 4)             # another network is not affected
    assert isinstance(other, FrontDoor) and t2.value().startswith(b"* OK ")
    env.close(*first)
    again, t3 = env.connect("203.0.113.7", 5)              # a closed session frees its place
    assert isinstance(again, FrontDoor) and t3.value().startswith(b"* OK ")


def test_ipv6_clients_share_their_64_and_the_total_cap_holds(tmp_path):
    env = Env(tmp_path, max_preauth_per_ip=1, max_connections=3)
    assert isinstance(env.connect("2001:db8:1:2::10", 1)[0], FrontDoor)
    _, t = env.connect("2001:db8:1:2::99", 2)              # the same /64
    assert t.value().startswith(b"* BYE Too many connections from your address")
    assert isinstance(env.connect("2001:db8:1:3::10", 3)[0], FrontDoor)
    assert isinstance(env.connect("192.0.2.1", 4)[0], FrontDoor)
    _, t = env.connect("192.0.2.2", 5)                     # three held: the total is reached
    assert t.value() == b"* BYE Server busy, try again later.\r\n" and t.disconnecting


# -- bad input ----------------------------------------------------------------------------------------

def test_three_bad_commands_in_a_row_end_the_session(env):
    proto, t = env.connect()
    said(t)
    for i in range(MAX_BAD - 1):
        proto.dataReceived(b"b%d SELECT INBOX\r\n" % i)
        assert said(t) == b"b%d BAD SELECT: not available before login\r\n" % i and not t.disconnecting
    proto.dataReceived(b"x EXAMINE INBOX\r\ny NOOP\r\n")
    assert said(t) == b"x BAD EXAMINE: not available before login\r\n* BYE Too many invalid commands.\r\n"
    assert t.disconnecting                                 # and y was never answered


def test_a_good_command_resets_the_bad_count(env):
    proto, t = env.connect()
    for _ in range(5):
        proto.dataReceived(b"a SELECT INBOX\r\nb SELECT INBOX\r\nc NOOP\r\n")
    assert not t.disconnecting and said(t).count(b" BAD ") == 10


def test_three_refused_logins_end_the_session(env):
    proto, t = env.connect("203.0.113.7")
    said(t)
    for i in range(MAX_AUTH_FAILURES):
        proto.dataReceived(b"l%d LOGIN alice@example.com guess%d\r\n" % (i, i))
        if i == 0:                                         # paused for the check, reading again after it
            assert t.producerState == "producing" and not proto.busy
    out = said(t)
    assert out.count(b"NO [AUTHENTICATIONFAILED] Authentication failed.") == MAX_AUTH_FAILURES
    assert out.endswith(b"* BYE Too many failed logins.\r\n") and t.disconnecting
    assert env.gate.calls == [("203.0.113.7", "alice@example.com", f"guess{i}") for i in range(MAX_AUTH_FAILURES)]


# -- STARTTLS -----------------------------------------------------------------------------------------

def test_commands_sent_with_starttls_in_plaintext_are_discarded(tmp_path):
    options = object()
    env = Env(tmp_path, plaintext=False, tls_options=options)
    proto, t = env.connect()
    assert b"STARTTLS" in said(t)
    proto.dataReceived(b"a STARTTLS\r\nb LOGIN alice@example.com injected\r\nc CAPABILITY\r\n")
    assert said(t) == b"a OK Begin TLS negotiation now.\r\n" and t.tls_started is options
    assert env.gate.calls == []                            # the injected LOGIN never ran
    proto.dataReceived(b"d CAPABILITY\r\n")                # what comes over TLS does
    caps = said(t)
    assert caps.endswith(b"d OK Pre-login capabilities listed.\r\n")
    assert b"AUTH=PLAIN" in caps and b"STARTTLS" not in caps and b"LOGINDISABLED" not in caps


def test_login_before_starttls_is_refused_without_asking_the_gate(tmp_path):
    env = Env(tmp_path, plaintext=False, tls_options=object())
    proto, t = env.connect()
    said(t)
    proto.dataReceived(b"a LOGIN alice@example.com pw\r\n")
    assert said(t) == b"a NO [PRIVACYREQUIRED] Use STARTTLS (or port 993) before logging in.\r\n"
    assert env.gate.calls == []
