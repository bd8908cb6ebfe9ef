"""One connection to a source's INBOX on the reactor: IDLE (held) or STATUS (one look, then LOGOUT).

A Twisted protocol, not a thread per watch: 1,000 idle watches are 1,000 sockets in one select
loop (bench/watch_latency.py measures the cost).  Every byte from the source is hostile: responses
go through ``ResponseReader`` (64 KiB per response, literals included), numbers are at most 10
digits, an unexpected tagged response or a flood of untagged ones drops the connection, and every
command (each login step too) must be answered in full within the timeout, however the bytes trickle
in (TCP keepalive is on as well).

The login is the front door's ``TargetLogin`` state machine in ``same`` mode (LOGIN quoted, or
AUTHENTICATE PLAIN; STARTTLS; ID where the source wants it); the password is dropped once logged in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from twisted.internet import defer, endpoints, protocol
from twisted.protocols.policies import TimeoutMixin

from imapclient.imap_utf7 import decode as decode_utf7

from .. import __version__
from ..imap.targetlogin import Done, Failed, ResponseReader, Send, StartTLS, TargetLogin
from ..proxy import tls
from ..text import shown
from .policy import IDLE_RENEW, Mark

MAX_RESPONSE = 64 * 1024
MAX_UNTAGGED = 10_000              # untagged responses per IDLE cycle before we call it a flood
_NUM = rb"(\d{1,10})"
_EXISTS = re.compile(rb"^\* " + _NUM + rb" EXISTS$", re.I)
_CODE = re.compile(rb"^\* OK \[(UIDNEXT|UIDVALIDITY) " + _NUM + rb"\]", re.I)
_STATUS_NAME = re.compile(rb'^\* STATUS ("(?:[^"\\\r\n]|\\.)*"|[^\s"(){}%*\\]+) \(', re.I)
_STATUS_LITERAL = re.compile(rb"^\* STATUS ~?\{(\d{1,10})\+?\}\r\n", re.I)
# the list after the name, whole: "(ITEM n ITEM n ...)"; HIGHESTMODSEQ may need 20 digits
_STATUS_LIST = re.compile(rb" \(((?:[A-Z][A-Z0-9.-]* \d{1,20})(?: [A-Z][A-Z0-9.-]* \d{1,20})*)?\)", re.I)
_STATUS_PAIR = re.compile(rb"([A-Z][A-Z0-9.-]*) (\d{1,20})", re.I)
_STATUS_WANTED = (b"MESSAGES", b"UIDNEXT", b"UIDVALIDITY")
NOTIFY_SET = b"NOTIFY SET (selected (MessageNew MessageExpunge)) (personal (MessageNew MessageExpunge))"
_AFTER_EXAMINE = ("notify", "idle_wait", "idling", "renewing")
_TAGGED = re.compile(rb"^(W\d+) (OK|NO|BAD)\b ?(.*)$", re.I | re.S)


@dataclass(frozen=True, slots=True)
class Ended:
    established: bool     # IDLE was running (idle) or the STATUS was answered (status)
    stage: str            # where it ended: connect, login, examine, idle, status, watching, stopped
    reason: str           # for the log; never a secret


def status_folder(resp: bytes) -> str | None:
    """The mailbox an untagged STATUS names (quoted or atom, modified UTF-7), or None when it is sent as a
    literal, is not valid modified UTF-7, or holds CR, LF or NUL: the caller then treats it as "some folder"."""
    m = _STATUS_NAME.match(resp)
    if m is None:
        return None
    raw = m.group(1)
    if raw.startswith(b'"'):
        raw = re.sub(rb"\\(.)", rb"\1", raw[1:-1])
    try:
        name = decode_utf7(raw)
    except ValueError:
        return None
    return None if not isinstance(name, str) or set(name) & set("\r\n\0") else name


def status_items(resp: bytes) -> dict[str, int]:
    """{messages|uidnext|uidvalidity: n} from the list of an untagged STATUS, read after the mailbox name (which
    may hold anything, "UIDNEXT 9" included); numbers over 10 digits and a list that is not well formed count
    as not sent."""
    m = _STATUS_NAME.match(resp)
    if m is not None:
        rest = resp[m.end() - 2:]
    else:
        lit = _STATUS_LITERAL.match(resp)
        if lit is None:
            return {}
        rest = resp[lit.end() + int(lit.group(1)):]
    if _STATUS_LIST.fullmatch(rest) is None:
        return {}
    return {k.decode().lower(): int(v) for k, v in _STATUS_PAIR.findall(rest)
            if k.upper() in _STATUS_WANTED and len(v) <= 10}


class InboxConnection(protocol.Protocol, TimeoutMixin):
    """``mode`` "idle": EXAMINE INBOX, report the baseline Mark, ask for NOTIFY (RFC 5465) of new mail in
    every personal folder where the source offers it, then IDLE, and report each EXISTS (INBOX) and each
    STATUS (another folder) as a change, renewing IDLE every ``renew`` seconds.  ``mode`` "status": one
    STATUS INBOX, then LOGOUT."""

    def __init__(self, reactor, endpoint, login: TargetLogin, mode: str, *, on_mark, on_change=None,
                 renew: float = IDLE_RENEW):
        self.reactor = reactor
        self.callLater = reactor.callLater     # TimeoutMixin's clock
        self.endpoint = endpoint
        self.login: TargetLogin | None = login
        self.mode = mode
        self.on_mark, self.on_change = on_mark, on_change
        self.renew = renew
        self.timeout = endpoint.timeout
        self.ended: defer.Deferred = defer.Deferred()
        self.reader = ResponseReader(MAX_RESPONSE)
        self.caps: set[str] = set()
        self.state = "login"
        self.established = False
        self.notifying = False            # NOTIFY SET was accepted: other folders' news comes as STATUS
        self._n = 0
        self._tag = b""
        self._seen: dict[str, int] = {}
        self._untagged = 0
        self._why: tuple[str, str] | None = None
        self._renew_call = None

    # -- plumbing ------------------------------------------------------------------------------
    def connectionMade(self) -> None:
        if self._why is not None:            # stopped while connecting: the manager no longer counts it
            self.transport.abortConnection()
            return
        keepalive = getattr(self.transport, "setTcpKeepAlive", None)    # TCP (under TLS too): not in tests
        if keepalive is not None:
            keepalive(1)
        self.setTimeout(self.timeout)

    def _send(self, line: bytes) -> None:
        self.transport.write(line + b"\r\n")

    def _command(self, words: bytes) -> None:
        self._n += 1
        self._tag = b"W%d" % self._n
        self._send(self._tag + b" " + words)
        self.setTimeout(self.timeout)

    def fail(self, stage: str, reason: str) -> None:
        if self._why is None:
            self._why = (stage, reason)
        self.transport.abortConnection()

    def stop(self) -> None:
        """End the watch politely: leave IDLE, LOGOUT, close."""
        if self._why is None:
            self._why = ("stopped", "stopped")
        if self.transport is None:
            return
        if self.state == "idling":
            self._send(b"DONE")
        self._command(b"LOGOUT")
        self.transport.loseConnection()
        self.setTimeout(self.timeout)      # a source that never closes is cut off

    def timeoutConnection(self) -> None:
        self.fail(self.state if self.state != "idling" else "watching",
                  f"no answer from the source within {self.timeout:g}s" if self.state != "idling"
                  else "the IDLE connection went silent")

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        self.setTimeout(None)
        if self._renew_call is not None and self._renew_call.active():
            self._renew_call.cancel()
        self.login = None
        stage, why = self._why or (self.state, "connection closed by the source: "
                                   + shown(reason.getErrorMessage(), 120))
        if not self.ended.called:
            self.ended.callback(Ended(self.established, stage, why))

    # -- bytes in ------------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        if self._why is not None:
            return                           # failed or stopped: nothing more is read
        # no resetTimeout here: each command's whole answer is due within the timeout (_command), so a source
        # dribbling a byte every 29 s cannot hold the connection (and a slot of the host's budget) for days
        if self.login is not None:
            data = self._logging_in(data)
            if data is None:
                return
        self.reader.feed(data)
        try:
            while self._why is None:
                resp = self.reader.next()
                if resp is None:
                    return
                if len(resp) > MAX_RESPONSE:      # whole in one read: the reader checks only what is pending
                    raise ValueError("response too long")
                self._response(resp)
        except ValueError as e:
            self.fail(self.state, f"protocol: {e}")

    def _logging_in(self, data: bytes) -> bytes | None:
        for action in self.login.receive(data):
            if isinstance(action, Send):
                self.transport.write(action.data)
                self.setTimeout(self.timeout)     # each login step gets the whole timeout, no more
            elif isinstance(action, StartTLS):
                self.transport.startTLS(tls.client_options(self.endpoint))
            elif isinstance(action, Done):
                self.login = None         # the password goes with it
                self.caps = {c.upper() for c in action.capabilities.split()}
                self._start()
                return action.leftover
            elif isinstance(action, Failed):
                self.fail("login", action.detail.replace("target", "source"))
                return None
        return None

    def _start(self) -> None:
        if self.mode == "idle":
            if "IDLE" not in self.caps:
                self.fail("login", "the source does not offer IDLE")
                return
            self.state = "examine"
            self._command(b"EXAMINE INBOX")          # read-only: the source is never changed
        else:
            self.state = "status"
            self._command(b"STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY)")

    def _response(self, resp: bytes) -> None:
        if resp.startswith(b"+"):
            if self.state == "idle_wait":
                self.state = "idling"
                self.established = True
                self._untagged = 0
                self.setTimeout(self.renew + self.timeout)
                self._renew_call = self.reactor.callLater(self.renew, self._renew)
                return
            self.fail(self.state, "unexpected continuation request")
            return
        if resp.startswith(b"* "):
            self._untagged_response(resp)
            return
        m = _TAGGED.match(resp)
        if m is None or m.group(1) != self._tag:
            self.fail(self.state, f"unexpected response {shown(resp[:80].decode('latin-1'), 80)}")
            return
        self._tagged(m.group(2).upper(), m.group(3))

    def _untagged_response(self, resp: bytes) -> None:
        self._untagged += 1
        if self._untagged > MAX_UNTAGGED:
            self.fail(self.state, f"more than {MAX_UNTAGGED} untagged responses: flood")
            return
        if resp[2:6].upper() == b"BYE " or resp.upper() == b"* BYE":
            if self.state != "logout":
                self.fail(self.state, "source said BYE: " + shown(resp[6:126].decode("utf-8", "replace"), 120))
            return
        m = _EXISTS.match(resp)
        if m:
            self._seen["messages"] = int(m.group(1))
            # after EXAMINE's OK it is news, in IDLE or between two (NOTIFY SET, a renewal's DONE and IDLE)
            if self.state in _AFTER_EXAMINE and self.on_change is not None:
                self.on_change(Mark(int(m.group(1)), None, None), "INBOX")
            return
        m = _CODE.match(resp)
        if m and self.state == "examine":
            self._seen[m.group(1).decode().lower()] = int(m.group(2))
            return
        if resp[2:9].upper() == b"STATUS ":
            if self.state == "status":
                name = status_folder(resp)
                if name is not None and name.upper() == "INBOX":     # not another mailbox's numbers
                    self._seen.update(status_items(resp))
            elif self.notifying and self.on_change is not None:
                items = status_items(resp)
                self.on_change(Mark(items.get("messages"), items.get("uidnext"), items.get("uidvalidity")),
                               status_folder(resp))

    def _mark(self) -> Mark:
        s = self._seen
        return Mark(s.get("messages"), s.get("uidnext"), s.get("uidvalidity"))

    def _tagged(self, word: bytes, text: bytes) -> None:
        said = shown(text[:120].decode("utf-8", "replace"), 120)
        if self.state == "examine":
            if word != b"OK":
                self.fail("examine", f"EXAMINE INBOX refused: {said}")
                return
            self.on_mark(self._mark())
            if "NOTIFY" in self.caps:
                self.state = "notify"
                self._command(NOTIFY_SET)
            else:
                self.state = "idle_wait"
                self._command(b"IDLE")
        elif self.state == "notify":
            self.notifying = word == b"OK"        # refused: INBOX only, as without NOTIFY
            self.state = "idle_wait"
            self._command(b"IDLE")
        elif self.state == "idle_wait":
            self.fail("idle", f"IDLE refused: {word.decode()} {said}")
        elif self.state == "renewing":
            if word != b"OK":
                self.fail("watching", f"IDLE ended with {word.decode()} {said}")
                return
            self.state = "idle_wait"
            self._command(b"IDLE")
        elif self.state == "status":
            if word != b"OK":
                self.fail("status", f"STATUS INBOX refused: {said}")
                return
            self.established = True
            self.on_mark(self._mark())
            self.state = "logout"
            self._command(b"LOGOUT")
            self.transport.loseConnection()
        elif self.state == "logout":
            pass
        else:
            self.fail(self.state, f"unexpected tagged {word.decode()}")

    def _renew(self) -> None:
        """RFC 2177: the server may drop an IDLE older than 30 minutes; leave it and start again."""
        self._renew_call = None
        if self.state != "idling":
            return
        self.state = "renewing"
        self.setTimeout(self.timeout)
        self._send(b"DONE")


def open_inbox(reactor, endpoint, user: str, password: str, mode: str, *, on_mark, on_change=None,
               renew: float = IDLE_RENEW) -> InboxConnection:
    """Start one connection; its ``ended`` Deferred fires (never errbacks) with an ``Ended``."""
    login = TargetLogin(mode="same", user=user, secret=password, starttls=endpoint.security == "starttls",
                        id_fields={"name": "mailsyncd", "version": __version__} if endpoint.send_id else None)
    proto = InboxConnection(reactor, endpoint, login, mode, on_mark=on_mark, on_change=on_change, renew=renew)
    ep = endpoints.HostnameEndpoint(reactor, endpoint.host, endpoint.port, timeout=endpoint.timeout)
    if endpoint.security == "tls":
        ep = endpoints.wrapClientTLS(tls.client_options(endpoint), ep)

    def refused(f) -> None:
        if not proto.ended.called:
            proto.ended.callback(Ended(False, "connect", f"cannot connect to {endpoint.host}:{endpoint.port}: "
                                       + shown(f.getErrorMessage(), 120)))
    endpoints.connectProtocol(ep, proto).addErrback(refused)
    return proto
