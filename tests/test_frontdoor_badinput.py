"""Hostile and broken clients against the real daemon's front door (raw sockets, no IMAP library).

Every case must end in a clean BAD, NO or BYE -- never a hang, never a traceback in the daemon's
log -- and afterwards the daemon must still be up and let a good login through.
"""

from __future__ import annotations

import base64
import imaplib
import random
import re
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from proxyenv import Daemon

HOST = "127.0.0.1"
ALICE = "alice@example.com"
FAST = {"failure_delay": 0.05, "failure_delay_max": 0.2}

pytestmark = pytest.mark.timeout(120)


class Client:
    """A raw IMAP connection with a line reader that never blocks for long."""

    def __init__(self, port: int, *, greeting: bool = True, timeout: float = 10):
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection((HOST, port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""
        self.seen: list[bytes] = []      # every line read, for assertions on the whole dialogue
        self.eof = False
        if greeting:
            line = self.line()
            assert line.startswith(b"* OK "), line
            self.greeting = line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        left = deadline - time.monotonic()
        if left <= 0 or self.eof:
            return False
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return False
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def line(self, timeout: float | None = None) -> bytes:
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\r\n" not in self.buf:
            if not self._fill(deadline):
                raise AssertionError(f"no complete line ({'EOF' if self.eof else 'timeout'}); "
                                     f"partial={self.buf[:200]!r}, so far={self.seen[-5:]!r}")
        line, self.buf = self.buf.split(b"\r\n", 1)
        self.seen.append(line)
        return line

    def until(self, tag: bytes, timeout: float | None = None) -> list[bytes]:
        """Lines up to and including the one tagged ``tag`` or an untagged BYE."""
        out = []
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            line = self.line(max(0.01, deadline - time.monotonic()))
            out.append(line)
            if line.startswith(tag + b" ") or line.startswith(b"* BYE"):
                return out

    def command(self, tag: bytes, text: bytes) -> list[bytes]:
        self.send(tag + b" " + text + b"\r\n")
        return self.until(tag)

    def assert_closed(self, timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while not self.eof:
            if not self._fill(deadline) and not self.eof:
                raise AssertionError(f"connection still open after {timeout}s; buffered={self.buf[:200]!r}")
        assert self.buf == b"" or b"\r\n" in self.buf, self.buf

    def starttls(self, cafile: str) -> None:
        assert self.buf == b"", f"plaintext after the STARTTLS answer: {self.buf!r}"
        ctx = ssl.create_default_context(cafile=cafile)
        self.sock.settimeout(self.timeout)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=HOST)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def plain_b64(user: str, password: str, authzid: str = "") -> bytes:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode())


def good_login(d: Daemon, pair) -> None:
    c = imaplib.IMAP4(HOST, d.imap_port, timeout=15)
    if d.cert:
        c.starttls(ssl.create_default_context(cafile=d.cert[0]))
    try:
        typ, _ = c.login(ALICE, pair.users[ALICE].old_password)
        assert typ == "OK"
        assert c.noop()[0] == "OK"
    finally:
        try:
            c.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def wait_for_log_count(d: Daemon, text: str, n: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while d.log().count(text) < n:
        assert time.monotonic() < deadline, f"{text!r} not logged {n}x:\n{d.log()[-4000:]}"
        time.sleep(0.02)


def assert_healthy(d: Daemon, pair) -> None:
    """Still running, nothing crashed, and a real user still gets in."""
    assert d.alive(), d.log()[-4000:]
    ended = d.log().count("event=relay_end")
    good_login(d, pair)
    # the good session's end is logged after anything the bad client caused before it
    wait_for_log_count(d, "event=relay_end", ended + 1)
    log = d.log()
    assert d.alive(), log[-4000:]
    assert "Traceback" not in log, log[-6000:]
    assert "Unhandled Error" not in log, log[-6000:]


@pytest.fixture
def daemon(tmp_path, dovecot_pair):
    with Daemon(tmp_path, dovecot_pair, frontdoor=FAST) as d:
        yield d


@pytest.fixture
def tls_daemon(tmp_path, dovecot_pair, test_cert):
    with Daemon(tmp_path, dovecot_pair, cert=test_cert, frontdoor=FAST) as d:
        yield d


def tagged(lines: list[bytes], tag: bytes) -> bytes:
    hits = [ln for ln in lines if ln.startswith(tag + b" ")]
    assert len(hits) == 1, lines
    return hits[0]


# -- plain port, plaintext login allowed (loopback) ------------------------------------------------

def test_sanity_good_login(daemon, dovecot_pair):
    c = Client(daemon.imap_port)
    assert b"AUTH=PLAIN" in c.greeting
    assert tagged(c.command(b"a", b"LOGIN " + ALICE.encode() + b" "
                            + dovecot_pair.users[ALICE].old_password.encode()), b"a").startswith(b"a OK")
    c.close()
    assert_healthy(daemon, dovecot_pair)


GARBAGE = [
    b"\x00\x01\x02\x03\r\n",
    b"\xff\xfe\xfd\xfc\r\n",
    b"a \xff\xfe garbage\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n",      # a TLS ClientHello on the plain port
    b"GET / HTTP/1.1\r\n",
    b"a LOGIN \"unterminated\r\n",
    b"a LOGIN \"bad \\escape\" x\r\n",
    b"a LOGIN x\x00y z\r\n",
    b"a ID ((\r\n",
    b"a ID ))\r\n",
    b"\r\n",
    b"a\r\n",
    b" NOOP\r\n",
]


def test_garbage_gets_bad_and_the_session_goes_on(daemon, dovecot_pair):
    for garbage in GARBAGE:
        c = Client(daemon.imap_port)
        c.send(garbage)
        line = c.line()
        assert re.match(rb"^(\*|a|GET) BAD ", line), (garbage, line)
        assert tagged(c.command(b"n1", b"NOOP"), b"n1") == b"n1 OK NOOP completed.", garbage
        c.close()
    assert_healthy(daemon, dovecot_pair)


def test_eight_bit_tag_gets_untagged_bad(daemon, dovecot_pair):
    c = Client(daemon.imap_port)
    c.send(b"\xff\xfe garbage\r\n")
    line = c.line()
    c.close()
    assert line.startswith(b"* BAD ") or line.startswith(b"\xff\xfe BAD "), line


def test_unknown_command_before_login_is_bad(daemon, dovecot_pair):
    c = Client(daemon.imap_port)
    assert tagged(c.command(b"a", b"SELECT INBOX"), b"a").startswith(b"a BAD ")
    assert tagged(c.command(b"b", b"FETCH 1:* (FLAGS)"), b"b").startswith(b"b BAD ")
    assert tagged(c.command(b"c", b"CAPABILITY"), b"c").startswith(b"c OK")
    c.close()
    assert_healthy(daemon, dovecot_pair)


def test_three_bad_commands_in_a_row_get_bye(daemon, dovecot_pair):
    c = Client(daemon.imap_port)
    c.send(b"a SELECT INBOX\r\nb \x00\r\nc XYZZY\r\nd NOOP\r\n")
    lines = c.until(b"d")
    assert lines[0].startswith(b"a BAD ")
    assert lines[1].startswith(b"* BAD ") or lines[1].startswith(b"b BAD "), lines
    assert lines[2].startswith(b"c BAD ")
    assert lines[3].startswith(b"* BYE "), lines
    c.assert_closed()
    assert not any(ln.startswith(b"d ") for ln in c.seen)   # nothing runs after the BYE
    assert_healthy(daemon, dovecot_pair)


def test_bad_count_is_reset_by_a_good_command(daemon, dovecot_pair):
    c = Client(daemon.imap_port)
    for i in range(3):
        assert tagged(c.command(b"x%d" % i, b"SELECT INBOX"), b"x%d" % i).startswith(b"x%d BAD" % i)
        assert tagged(c.command(b"y%d" % i, b"XYZZY"), b"y%d" % i).startswith(b"y%d BAD" % i)
        assert tagged(c.command(b"z%d" % i, b"NOOP"), b"z%d" % i).startswith(b"z%d OK" % i)
    c.close()
    assert_healthy(daemon, dovecot_pair)


def test_three_malformed_logins_in_a_row_get_bye(daemon, dovecot_pair):
    c = Client(daemon.imap_port)
    c.send(b"a LOGIN onlyone\r\nb AUTHENTICATE PLAIN !!!\r\nc LOGIN x y z\r\nd NOOP\r\n")
    lines = c.until(b"d", timeout=5)
    assert any(ln.startswith(b"* BYE") for ln in lines), lines


def test_line_over_8k_gets_bye(daemon, dovecot_pair):
    c = Client(daemon.imap_port)
    c.send(b"a LOGIN " + b"x" * 9000 + b" pw\r\n")
    line = c.line()
    assert line.startswith(b"* BYE "), line
    c.assert_closed()
    assert_healthy(daemon, dovecot_pair)


def test_endless_line_without_crlf_gets_bye(daemon, dovecot_pair):
    c = Client(daemon.imap_port)
    try:
        for _ in range(64):
            c.send(b"A" * 1024)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert c.line().startswith(b"* BYE ")
    c.assert_closed()
    assert_healthy(daemon, dovecot_pair)


def test_two_gigabyte_literal_is_refused_without_continuation(daemon, dovecot_pair):
    c = Client(daemon.imap_port)
    c.send(b"a LOGIN {2147483648}\r\n")
    line = c.line()
    assert line.startswith(b"a BAD "), line             # no "+": the client must not start sending
    assert not any(ln.startswith(b"+") for ln in c.seen)
    assert tagged(c.command(b"b", b"NOOP"), b"b").startswith(b"b OK")
    c.close()
    assert_healthy(daemon, dovecot_pair)


def test_big_non_sync_literal_gets_bye(daemon, dovecot_pair):
    c = Client(daemon.imap_port)
    c.send(b"a LOGIN {5000+}\r\n" + b"z" * 5000 + b"\r\n")
    assert c.line().startswith(b"* BYE ")
    c.assert_closed()
    assert_healthy(daemon, dovecot_pair)


def test_literal_login_works(daemon, dovecot_pair):
    pw = dovecot_pair.users[ALICE].old_password.encode()
    c = Client(daemon.imap_port)
    c.send(b"a LOGIN {%d}\r\n" % len(ALICE))
    assert c.line().startswith(b"+ ")
    c.send(ALICE.encode() + b" {%d+}\r\n" % len(pw) + pw + b"\r\n")
    assert tagged(c.until(b"a"), b"a").startswith(b"a OK ")
    c.close()
    assert_healthy(daemon, dovecot_pair)


def test_command_before_the_greeting(daemon, dovecot_pair):
    c = Client(daemon.imap_port, greeting=False)
    c.send(b"a CAPABILITY\r\n")                         # before reading anything
    lines = c.until(b"a")
    assert lines[0].startswith(b"* OK "), lines         # the greeting still comes first
    assert lines[1].startswith(b"* CAPABILITY "), lines
    assert lines[2].startswith(b"a OK"), lines
    c.close()
    assert_healthy(daemon, dovecot_pair)


def test_login_before_the_greeting(daemon, dovecot_pair):
    c = Client(daemon.imap_port, greeting=False)
    c.send(b"a LOGIN " + ALICE.encode() + b" " + dovecot_pair.users[ALICE].old_password.encode()
           + b"\r\nb NOOP\r\n")
    lines = c.until(b"b")
    assert lines[0].startswith(b"* OK "), lines
    assert tagged(lines, b"a").startswith(b"a OK "), lines
    assert tagged(lines, b"b").startswith(b"b OK "), lines   # pipelined NOOP went to the target
    c.close()
    assert_healthy(daemon, dovecot_pair)


BAD_SASL = [b"!!!notbase64!!!", b"AGFsaWNl", b"YWxpY2U=", b"====", b"=x", b"AG\xffFs", b"AGFs aWNl",
            base64.b64encode(b"\0\xff\xfe\0pw"), base64.b64encode(b"a\0b\0c\0d")]


def test_invalid_base64_in_sasl_ir_is_bad(daemon, dovecot_pair):
    for blob in BAD_SASL + [b"NIL", b'""', b"{0+}\r\n", b"{2+}\r\n\x00\x00"]:
        c = Client(daemon.imap_port)
        lines = c.command(b"a", b"AUTHENTICATE PLAIN " + blob)
        assert tagged(lines, b"a").startswith(b"a BAD "), (blob, lines)
        assert tagged(c.command(b"b", b"NOOP"), b"b").startswith(b"b OK"), blob
        c.close()
    assert_healthy(daemon, dovecot_pair)


def test_invalid_base64_in_sasl_continuation_is_bad(daemon, dovecot_pair):
    for blob in BAD_SASL + [b"=", b"", b"\x00\xff", b"(x)", b"{3}", b"a NOOP"]:
        c = Client(daemon.imap_port)
        c.send(b"a AUTHENTICATE PLAIN\r\n")
        assert c.line().startswith(b"+"), blob
        c.send(blob + b"\r\n")
        line = tagged(c.until(b"a"), b"a")
        assert line.startswith(b"a BAD "), (blob, line)
        assert tagged(c.command(b"b", b"NOOP"), b"b").startswith(b"b OK"), blob
        c.close()
    assert_healthy(daemon, dovecot_pair)


def test_star_aborts_authenticate(daemon, dovecot_pair):
    c = Client(daemon.imap_port)
    c.send(b"a AUTHENTICATE PLAIN\r\n")
    assert c.line().startswith(b"+")
    c.send(b"*\r\n")
    assert tagged(c.until(b"a"), b"a").startswith(b"a BAD ")
    assert tagged(c.command(b"b", b"NOOP"), b"b").startswith(b"b OK")
    c.close()
    assert_healthy(daemon, dovecot_pair)


def test_authenticate_plain_works_both_ways(daemon, dovecot_pair):
    pw = dovecot_pair.users[ALICE].old_password
    c = Client(daemon.imap_port)
    assert tagged(c.command(b"a", b"AUTHENTICATE PLAIN " + plain_b64(ALICE, pw)), b"a").startswith(b"a OK ")
    c.close()
    c = Client(daemon.imap_port)
    c.send(b"a AUTHENTICATE PLAIN\r\n")
    assert c.line().startswith(b"+")
    c.send(plain_b64(ALICE, pw) + b"\r\n")
    assert tagged(c.until(b"a"), b"a").startswith(b"a OK ")
    c.close()
    assert_healthy(daemon, dovecot_pair)


def test_unsupported_mechanism_and_missing_mechanism(daemon, dovecot_pair):
    c = Client(daemon.imap_port)
    assert tagged(c.command(b"a", b"AUTHENTICATE CRAM-MD5"), b"a").startswith(b"a NO ")
    assert tagged(c.command(b"b", b"AUTHENTICATE"), b"b").startswith(b"b BAD ")
    assert tagged(c.command(b"c", b"AUTHENTICATE (PLAIN)"), b"c").startswith(b"c BAD ")
    assert tagged(c.command(b"d", b"NOOP"), b"d").startswith(b"d OK")
    c.close()
    assert_healthy(daemon, dovecot_pair)


def test_list_as_sasl_ir_is_bad(daemon, dovecot_pair):
    c = Client(daemon.imap_port)
    c.send(b"a AUTHENTICATE PLAIN (AGFsaWNlAHB3)\r\n")
    line = c.line(timeout=3)
    assert line.startswith(b"a BAD "), line
    c.close()
    assert_healthy(daemon, dovecot_pair)


def test_login_with_wrong_arguments_is_bad(daemon, dovecot_pair):
    c = Client(daemon.imap_port)
    assert tagged(c.command(b"a", b"LOGIN"), b"a").startswith(b"a BAD ")
    assert tagged(c.command(b"b", b"NOOP"), b"b").startswith(b"b OK")
    assert tagged(c.command(b"c", b"LOGIN onlyone"), b"c").startswith(b"c BAD ")
    assert tagged(c.command(b"d", b"NOOP"), b"d").startswith(b"d OK")
    assert tagged(c.command(b"e", b"LOGIN (a) b"), b"e").startswith(b"e BAD ")
    assert tagged(c.command(b"f", b"NOOP"), b"f").startswith(b"f OK")
    assert tagged(c.command(b"g", b"LOGIN NIL x"), b"g").startswith(b"g BAD ")
    c.close()
    assert_healthy(daemon, dovecot_pair)


def test_wrong_password_three_times_gets_bye(daemon, dovecot_pair):
    c = Client(daemon.imap_port)
    for i, pw in enumerate([b"wrong1", b"wrong2"]):
        tag = b"t%d" % i
        assert tagged(c.command(tag, b"LOGIN " + ALICE.encode() + b" " + pw), tag).startswith(
            tag + b" NO [AUTHENTICATIONFAILED]")
    lines = c.command(b"t2", b"LOGIN " + ALICE.encode() + b" wrong3")
    assert tagged(lines, b"t2").startswith(b"t2 NO [AUTHENTICATIONFAILED]") or lines[-1].startswith(b"* BYE")
    if not lines[-1].startswith(b"* BYE"):
        assert c.line().startswith(b"* BYE ")
    c.assert_closed()
    assert_healthy(daemon, dovecot_pair)


def test_user_name_cannot_inject_into_the_source_login(daemon, dovecot_pair):
    pw = dovecot_pair.users[ALICE].old_password
    forged = f"{ALICE} {pw}\r\nz NOOP x@example.com".encode()
    c = Client(daemon.imap_port)
    c.send(b"a LOGIN {%d+}\r\n" % len(forged) + forged + b" wrong-password\r\n")
    line = tagged(c.until(b"a"), b"a")
    c.close()
    log = daemon.log()                                  # the gate logs its verdict before the answer is sent
    assert "event=login_failed ip=127.0.0.1 " in log and "login_ok" not in log, log[-3000:]
    assert line.startswith(b"a NO [AUTHENTICATIONFAILED]"), line


def test_utf8_password_is_checked_at_the_source(daemon, dovecot_pair):
    c = Client(daemon.imap_port)
    line = tagged(c.command(b"a", b'LOGIN ' + ALICE.encode() + ' "pässwörd"'.encode()), b"a")
    c.close()
    assert line.startswith(b"a NO [AUTHENTICATIONFAILED]"), line
    assert "auth_error" not in daemon.log()


def test_preauth_timeout_says_bye(tmp_path, dovecot_pair):
    with Daemon(tmp_path, dovecot_pair, frontdoor={**FAST, "preauth_timeout": 1}) as d:
        c = Client(d.imap_port)
        t0 = time.monotonic()
        line = c.line(timeout=8)
        assert line.startswith(b"* BYE "), line
        c.assert_closed()
        assert time.monotonic() - t0 < 6
        # A half-sent command does not keep the connection alive either.
        c = Client(d.imap_port)
        c.send(b"a LOGIN {5}\r\n")
        assert c.line().startswith(b"+")
        c.send(b"ab")
        assert c.line(timeout=8).startswith(b"* BYE ")
        c.assert_closed()
        assert_healthy(d, dovecot_pair)


# -- plain port with TLS configured: STARTTLS ---------------------------------------------------------

def test_starttls_injection_is_not_executed(tls_daemon, dovecot_pair, test_cert):
    c = Client(tls_daemon.imap_port)
    c.send(b"a STARTTLS\r\nb CAPABILITY\r\n")             # one send: b arrives with a, in plaintext
    lines = c.until(b"a")
    assert lines[-1].startswith(b"a OK "), lines
    c.starttls(test_cert[0])
    c.send(b"c NOOP\r\n")
    lines = c.until(b"c")
    assert lines == [b"c OK NOOP completed."], lines       # no "b ..." and no CAPABILITY in between
    assert not any(ln.startswith(b"b ") or ln.startswith(b"* CAPABILITY") for ln in c.seen), c.seen
    c.close()
    assert_healthy(tls_daemon, dovecot_pair)


def test_starttls_injected_login_is_not_executed(tls_daemon, dovecot_pair, test_cert):
    c = Client(tls_daemon.imap_port)
    c.send(b"a STARTTLS\r\nb LOGIN " + ALICE.encode() + b" "
           + dovecot_pair.users[ALICE].old_password.encode() + b"\r\n")
    assert c.until(b"a")[-1].startswith(b"a OK ")
    c.starttls(test_cert[0])
    lines = c.command(b"c", b"CAPABILITY")
    assert tagged(lines, b"c").startswith(b"c OK Pre-login"), lines   # still not logged in
    assert not any(ln.startswith(b"b ") for ln in c.seen)
    c.close()
    assert_healthy(tls_daemon, dovecot_pair)


def test_plain_port_requires_starttls(tls_daemon, dovecot_pair, test_cert):
    pw = dovecot_pair.users[ALICE].old_password.encode()
    c = Client(tls_daemon.imap_port)
    caps = c.command(b"a", b"CAPABILITY")[0]
    assert caps.startswith(b"* CAPABILITY ")
    words = caps.split()
    assert b"STARTTLS" in words and b"LOGINDISABLED" in words and b"AUTH=PLAIN" not in words, caps
    assert b"STARTTLS" in c.greeting and b"AUTH=PLAIN" not in c.greeting
    line = tagged(c.command(b"b", b"LOGIN " + ALICE.encode() + b" " + pw), b"b")
    assert line.startswith(b"b NO [PRIVACYREQUIRED]"), line
    line = tagged(c.command(b"c", b"AUTHENTICATE PLAIN " + plain_b64(ALICE, pw.decode())), b"c")
    assert line.startswith(b"c NO [PRIVACYREQUIRED]"), line
    assert tagged(c.command(b"d", b"STARTTLS"), b"d").startswith(b"d OK ")
    c.starttls(test_cert[0])
    caps = c.command(b"e", b"CAPABILITY")[0].split()
    assert b"AUTH=PLAIN" in caps and b"LOGINDISABLED" not in caps and b"STARTTLS" not in caps, caps
    assert tagged(c.command(b"f", b"STARTTLS"), b"f").startswith(b"f BAD ")   # not twice
    assert tagged(c.command(b"g", b"LOGIN " + ALICE.encode() + b" " + pw), b"g").startswith(b"g OK ")
    assert tagged(c.command(b"h", b"NOOP"), b"h").startswith(b"h OK")
    c.close()
    assert_healthy(tls_daemon, dovecot_pair)


def test_plaintext_after_starttls_ok_breaks_only_that_connection(tls_daemon, dovecot_pair):
    c = Client(tls_daemon.imap_port)
    assert c.command(b"a", b"STARTTLS")[-1].startswith(b"a OK ")
    c.send(b"b LOGIN x y\r\n")                             # not a TLS record
    deadline = time.monotonic() + 10
    while not c.eof and time.monotonic() < deadline:
        c._fill(deadline)
    assert c.eof, c.buf
    assert b"b " not in c.buf
    c.close()
    assert_healthy(tls_daemon, dovecot_pair)


# -- random bytes at the live listener ---------------------------------------------------------------

FUZZ_TOKENS = [b"a", b"b", b"*", b"+", b"LOGIN", b"AUTHENTICATE", b"PLAIN", b"ID", b"NIL", b"NOOP", b"CAPABILITY",
               b"STARTTLS", b"LOGOUT", b"SELECT", b"INBOX", b"alice@example.com", b"x@example.com", b"\"",
               b"\\", b"(", b")", b"{", b"}", b"{0}", b"{3}", b"{3+}", b"{4097+}", b"{99999}", b"{2147483648}",
               b"=", b"AGFsaWNlAHB3", b"\x00", b"\xff", b"\xc3\xa4", b" ", b" ", b" ", b"\r\n", b"\r\n", b"\r",
               b"\n", b"%", b"]", b"~{1}"]


def fuzz_payload(rng: random.Random) -> list[bytes]:
    kind = rng.randrange(4)
    if kind == 0:                                    # pure random bytes
        data = rng.randbytes(rng.randrange(1, 3000))
    elif kind == 1:                                  # IMAP-ish tokens
        data = b"".join(rng.choice(FUZZ_TOKENS) for _ in range(rng.randrange(1, 200)))
    elif kind == 2:                                  # random lines
        data = b"".join(rng.randbytes(rng.randrange(0, 60)).replace(b"\r\n", b"") + b"\r\n"
                        for _ in range(rng.randrange(1, 10)))
    else:                                            # a tagged command with a literal of random size
        n = rng.choice([0, 1, 5, 100, 4096, 8192, 8193, 10 ** 6, 2 ** 31])
        plus = rng.choice([b"", b"+"])
        data = (rng.choice([b"a LOGIN ", b"a ID (", b"a AUTHENTICATE PLAIN ", b"a LOGIN x "])
                + b"{%d%s}\r\n" % (n, plus) + rng.randbytes(min(n, rng.randrange(0, 300))) + b"\r\n")
    # split into a few sends
    cuts = sorted(rng.sample(range(len(data) + 1), min(len(data), rng.randrange(0, 4))))
    return [data[i:j] for i, j in zip([0] + cuts, cuts + [len(data)]) if data[i:j]]


def fuzz_one(port: int, chunks: list[bytes], problems: list, lock: threading.Lock) -> None:
    try:
        s = socket.create_connection((HOST, port), timeout=5)
    except OSError as e:
        with lock:
            problems.append(f"connect failed: {e!r}")
        return
    try:
        s.settimeout(0.3)
        for chunk in chunks:
            try:
                s.sendall(chunk)
                s.recv(65536)
            except TimeoutError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                return
    finally:
        s.close()


def test_random_bytes_fuzz(daemon, dovecot_pair):
    rng = random.Random(20240611)
    payloads = [fuzz_payload(rng) for _ in range(200)]
    problems: list[str] = []
    lock = threading.Lock()
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda ch: fuzz_one(daemon.imap_port, ch, problems, lock), payloads))
    assert time.monotonic() - t0 < 60
    assert not problems, problems[:5]
    assert daemon.alive()
    log = daemon.log()
    assert "Traceback" not in log, log[log.find("Traceback") - 2000:][:6000]
    assert_healthy(daemon, dovecot_pair)
