"""The front door: the pre-auth IMAP dialogue, then a byte relay to the target.

Before login only CAPABILITY, NOOP, LOGOUT, ID, STARTTLS, LOGIN and
AUTHENTICATE PLAIN exist.  After login the bytes are relayed unchanged: IDLE, COMPRESS and
every extension the target has work as if the client were connected directly.  Until COMPRESS
the relay watches for SELECT/EXAMINE only, to copy the opened folder next (openfolder.py).
"""

from __future__ import annotations

import base64
import binascii
import logging

from twisted.internet import abstract, protocol
from twisted.protocols.policies import TimeoutMixin

from .. import __version__
from ..providers import quirks
from ..auth.throttle import network_of
from ..config import UnknownDomain
from ..connlimits import ConnectionLimits
from ..status import alert_text
from ..imap.preauth import Bad, Command, Continue, Fatal, PreauthParser, SaslLine
from . import backend, tlsrelay
from .openfolder import OpenFolderWatch

logger = logging.getLogger("mailsyncd.proxy")

MAX_BAD = 3
MAX_AUTH_FAILURES = 3


# Relay buffer sizes (bench/tls_relay.py; Twisted's default is 64 KB for both).  Reads from the
# target of 256 KB: a TLS client leg costs ~20 % less daemon CPU per GB (fewer passes through
# Python and pyOpenSSL per byte).  The client socket's mark (its write buffer above which the
# target is paused; also its read size, client commands are small) must stay above one such read
# plus the TLS record overhead, or every relayed read pauses and resumes the target (2 epoll_ctl).
TARGET_READ = 2 ** 18
CLIENT_BUFFER = 2 ** 19


def _set_buffer(transport, size: int) -> None:
    while transport is not None:          # through the TLS (and PROXY header) wrappers to the socket
        if isinstance(transport, abstract.FileDescriptor):
            transport.bufferSize = size
            return
        transport = getattr(transport, "transport", None)


class FrontDoorFactory(protocol.Factory):
    def __init__(self, reactor, config_ref, gate, scheduler, tls_options_ref, *, implicit_tls: bool,
                 limits: ConnectionLimits | None = None, master_passwords=None):
        self.reactor = reactor
        fd = config_ref().frontdoor
        # shared by the imap and imaps listeners: the caps are per process
        self.limits = limits or ConnectionLimits(fd.max_preauth_per_ip, fd.max_connections)
        self.master_passwords = master_passwords or (lambda: None)   # () -> config.MasterPasswords
        self.config_ref = config_ref
        self.gate = gate
        self.scheduler = scheduler
        self.tls_options_ref = tls_options_ref   # () -> CertificateOptions | None (swapped on reload)
        self.implicit_tls = implicit_tls
        self.sessions: set[FrontDoor] = set()
        self.relayed = 0

    def buildProtocol(self, addr):
        ip = getattr(addr, "host", "?")
        key = network_of(ip)
        refused = self.limits.admit(key)
        if refused:
            # Answered and closed at once: the fd is back before the flood's next connection.
            logger.warning("event=connection_refused ip=%s cap=%s preauth_from_network=%d held=%d", ip, refused,
                           self.limits.open(key), self.limits.held)
            return _Refused(b"* BYE Too many connections from your address, try again later."
                            if refused == "per_client" else b"* BYE Server busy, try again later.")
        p = FrontDoor(self, self.config_ref())
        p.factory = self
        p.limit_key = key
        return p


class _Refused(protocol.Protocol):
    def __init__(self, line: bytes):
        self.line = line

    def connectionMade(self) -> None:
        self.transport.write(self.line + b"\r\n")
        self.transport.loseConnection()


class FrontDoor(protocol.Protocol, TimeoutMixin):
    def __init__(self, factory: FrontDoorFactory, config):
        self.f = factory
        self.config = config                 # the session keeps its snapshot across reloads
        self.parser = PreauthParser()
        self.tls = factory.implicit_tls
        self.busy = False                    # a login or STARTTLS is in progress: parse nothing more
        self.closed = False
        self.bad = 0
        self._bad_now = False
        self.auth_failures = 0
        self.target: backend.TargetProtocol | None = None
        self.pending_auth: str | None = None  # tag of an AUTHENTICATE waiting for its response line
        self.ip, self.port = "?", 0
        self.user: str | None = None
        self.relay_started = 0.0
        self.bytes_up = self.bytes_down = 0
        self.limit_key: str | None = None     # set when admitted by factory.limits
        self._deadline = None                 # the absolute pre-auth deadline (preauth_timeout is idle time)
        self.opened: OpenFolderWatch | None = None   # after login: the folder the client opens goes next
        # After login: the TCP connections whose sockets the relay may write straight (tlsrelay.write_now);
        # None where TLS is on that side (BulkTLS writes straight itself).
        self._client_socket = self._target_socket = None

    # -- connection --------------------------------------------------------------
    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.ip, self.port = getattr(peer, "host", "?"), getattr(peer, "port", 0)
        self.f.sessions.add(self)
        self.setTimeout(self.config.frontdoor.preauth_timeout)
        self._deadline = self.f.reactor.callLater(self.config.frontdoor.preauth_deadline, self._deadline_passed)
        self.send(b"* OK [CAPABILITY " + self.capabilities() + b"] mailsyncd ready.")

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        self.closed = True
        self.setTimeout(None)
        self._cancel_deadline()
        self.f.sessions.discard(self)
        if self.opened is not None:
            self.opened.close()
        if self.limit_key is not None:
            self.f.limits.release(self.limit_key, settled=bool(self.relay_started))
            self.limit_key = None
        if self.target is not None:
            target, self.target = self.target, None
            target.peer = None
            self.f.relayed -= 1
            target.transport.loseConnection()
        if self.relay_started:
            logger.info("event=relay_end ip=%s user=%s up=%d down=%d seconds=%.0f", self.ip, self.user,
                        self.bytes_up, self.bytes_down, self.f.reactor.seconds() - self.relay_started)

    def timeoutConnection(self) -> None:
        if self.target is None:
            self.send(b"* BYE Autologout; idle for too long")
        self.transport.loseConnection()

    def _deadline_passed(self) -> None:
        # NOOPs reset the idle timer; this one only a login stops.
        self._deadline = None
        if self.target is None and not self.closed:
            logger.info("event=preauth_deadline ip=%s seconds=%g", self.ip, self.config.frontdoor.preauth_deadline)
            self.send(b"* BYE Autologout; no login within the time allowed")
            self.closed = True
            self.transport.loseConnection()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def send(self, line: bytes) -> None:
        self.transport.write(line + b"\r\n")

    def capabilities(self) -> bytes:
        caps = [b"IMAP4rev1", b"ID", b"LITERAL-"]
        if self.tls or self.config.frontdoor.allow_plaintext_login:
            caps += [b"SASL-IR", b"AUTH=PLAIN"]
        if not self.tls:
            if self.f.tls_options_ref() is not None:
                caps.append(b"STARTTLS")
            if not self.config.frontdoor.allow_plaintext_login:
                caps.append(b"LOGINDISABLED")
        return b" ".join(caps)

    # -- input -------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        if self.target is not None:
            self.resetTimeout()
            self.bytes_up += len(data)
            if self.opened is not None:
                self.opened.from_client(data)
            else:
                self.to_target(data)
            return
        self.parser.feed(data)
        self.pump()

    def pump(self) -> None:
        while not self.busy and not self.closed and self.target is None:
            ev = self.parser.next_event()
            if ev is None:
                return
            self.resetTimeout()
            if isinstance(ev, Command):
                self.command(ev)
            elif isinstance(ev, SaslLine):
                self.sasl_response(ev.data)
            elif isinstance(ev, Continue):
                self.send(b"+ Ready for literal data")
            elif isinstance(ev, Bad):
                self.reply_bad(ev.tag, ev.text)
            elif isinstance(ev, Fatal):
                self.send(b"* BYE " + ev.text.encode())
                self.transport.loseConnection()
                self.closed = True

    def reply_bad(self, tag: str | None, text: str) -> None:
        self.bad += 1
        self._bad_now = True
        self.send((tag.encode() if tag else b"*") + b" BAD " + text.encode("utf-8", "replace"))
        if self.bad >= MAX_BAD:
            self.send(b"* BYE Too many invalid commands.")
            self.transport.loseConnection()
            self.closed = True

    def command(self, cmd: Command) -> None:
        tag = cmd.tag.encode()
        handler = getattr(self, "do_" + cmd.name, None) if cmd.name.isalpha() else None
        if handler is None:
            self.reply_bad(cmd.tag, f"{cmd.name[:40]}: not available before login" if cmd.name.isalpha()
                           else "unknown command")
            return
        self._bad_now = False
        handler(tag, cmd.args)
        if not self._bad_now:
            self.bad = 0

    # -- commands ------------------------------------------------------------------
    def do_CAPABILITY(self, tag: bytes, args: tuple) -> None:
        self.send(b"* CAPABILITY " + self.capabilities())
        self.send(tag + b" OK Pre-login capabilities listed.")

    def do_NOOP(self, tag: bytes, args: tuple) -> None:
        self.send(tag + b" OK NOOP completed.")

    def do_LOGOUT(self, tag: bytes, args: tuple) -> None:
        self.send(b"* BYE Logging out")
        self.send(tag + b" OK Logout completed.")
        self.transport.loseConnection()
        self.closed = True

    def do_ID(self, tag: bytes, args: tuple) -> None:
        self.send(b'* ID ("name" "mailsyncd" "version" "' + __version__.encode() + b'")')
        self.send(tag + b" OK ID completed.")

    def do_STARTTLS(self, tag: bytes, args: tuple) -> None:
        options = self.f.tls_options_ref()
        if self.tls or options is None:
            self.reply_bad(tag.decode(), "TLS is already active" if self.tls else "STARTTLS is not available")
            return
        self.send(tag + b" OK Begin TLS negotiation now.")
        # Anything the client sent after STARTTLS in plaintext must never run as a command.
        self.parser.discard()
        tlsrelay.start_tls(self.transport, options, self.f.reactor)
        self.tls = True

    def do_LOGIN(self, tag: bytes, args: tuple) -> None:
        if len(args) != 2 or not all(isinstance(a, (str, bytes)) for a in args):
            self.reply_bad(tag.decode(), "LOGIN needs a user name and a password")
            return
        if not self.may_login(tag):
            return
        user, password = (a.decode("utf-8", "replace") if isinstance(a, bytes) else a for a in args)
        self.login(tag, user, password)

    def do_AUTHENTICATE(self, tag: bytes, args: tuple) -> None:
        if not args or not isinstance(args[0], str) or len(args) > 2:
            self.reply_bad(tag.decode(), "AUTHENTICATE needs a mechanism")
            return
        if args[0].upper() != "PLAIN":
            self.send(tag + b" NO [CANNOT] Unsupported authentication mechanism.")
            return
        if not self.may_login(tag):
            return
        if len(args) == 2:
            if not isinstance(args[1], (str, bytes)):
                self.reply_bad(tag.decode(), "Invalid SASL initial response.")
                return
            self.plain(tag, args[1].encode() if isinstance(args[1], str) else args[1])
            return
        self.pending_auth = tag.decode()
        self.parser.sasl = True
        self.send(b"+ ")

    def sasl_response(self, data: bytes) -> None:
        tag, self.pending_auth = (self.pending_auth or "*").encode(), None
        if data.strip() == b"*":
            self.send(tag + b" BAD Authentication aborted.")
            return
        self.plain(tag, data)

    def may_login(self, tag: bytes) -> bool:
        if not self.tls and not self.config.frontdoor.allow_plaintext_login:
            self.send(tag + b" NO [PRIVACYREQUIRED] Use STARTTLS (or port 993) before logging in.")
            return False
        return True

    def plain(self, tag: bytes, b64: bytes) -> None:
        try:
            raw = b"" if b64 == b"=" else base64.b64decode(b64, validate=True)
            authzid, authcid, password = (p.decode("utf-8") for p in raw.split(b"\0"))
        except (binascii.Error, ValueError):
            self.reply_bad(tag.decode(), "Invalid SASL PLAIN response (base64 of authzid NUL user NUL password).")
            return
        if authzid and authzid.lower() != authcid.lower():
            # Logging in as someone else needs a master password we do not hand out.
            self.auth_failed(tag, "authzid differs from the user")
            return
        self.login(tag, authcid, password)

    # -- the login -------------------------------------------------------------------
    def login(self, tag: bytes, user: str, password: str) -> None:
        self.busy = True
        self.transport.pauseProducing()
        # One config snapshot from the check to the relay: a reload in between cannot split them.
        d = self.f.gate.authenticate(self.ip, user, password, config=self.f.config_ref())
        d.addCallback(self._verified, tag, password)
        d.addErrback(self._login_crashed, tag)

    def _verified(self, verdict, tag: bytes, password: str):
        if self.closed:
            return None
        if not verdict.ok:
            if verdict.unavailable:
                self.send(tag + b" NO [UNAVAILABLE] Temporary authentication failure, try again later.")
                self._resume()
            else:
                self.auth_failed(tag, None, self._refusal_text(verdict))
            return None
        target = verdict.domain.target
        master = self.f.master_passwords()
        d = backend.connect(self.f.reactor, target, verdict.address, password, self.ip, self.port,
                            master_password=None if target.auth == "same" or master is None else master.get(target))
        d.addCallbacks(self._target_ready, self._target_failed, callbackArgs=(tag, verdict.address),
                       errbackArgs=(tag, verdict.address))
        return d

    def _login_crashed(self, failure, tag: bytes) -> None:
        logger.error("event=login_crashed ip=%s error=%r", self.ip, failure.getErrorMessage())
        if not self.closed:
            self.send(tag + b" NO [UNAVAILABLE] Internal error, try again later.")
            self._resume()

    def _refusal_text(self, verdict) -> str:
        # Said only after the source itself refused with its app-password words: it tells no more
        # than the provider would have told the client directly.
        if verdict.hint == quirks.APP_PASSWORD:
            try:
                return quirks.imap_refusal(self.config.domain_for(verdict.address).source)
            except (UnknownDomain, ValueError):
                pass
        return "Authentication failed."

    def auth_failed(self, tag: bytes, reason: str | None, text: str = "Authentication failed.") -> None:
        if reason:
            logger.warning("event=login_failed ip=%s user=- reason=%r", self.ip, reason)
        self.auth_failures += 1
        self.send(tag + b" NO [AUTHENTICATIONFAILED] " + text.encode("utf-8"))
        if self.auth_failures >= MAX_AUTH_FAILURES:
            self.send(b"* BYE Too many failed logins.")
            self.transport.loseConnection()
            self.closed = True
            return
        self._resume()

    def _resume(self) -> None:
        self.busy = False
        if not self.closed:
            self.transport.resumeProducing()
            self.pump()

    def _target_failed(self, failure, tag: bytes, address: str) -> None:
        err = failure.value
        kind = getattr(err, "kind", "unavailable")
        logger.warning("event=target_login_failed ip=%s user=%s kind=%s detail=%r", self.ip, address, kind,
                       getattr(err, "detail", failure.getErrorMessage()))
        if self.closed:
            return
        if kind == "auth":
            # The user passed the source check; the target refusing is our problem, not theirs.
            self.send(tag + b" NO [UNAVAILABLE] The new mail server refused the login; "
                            b"please contact your administrator.")
        else:
            self.send(tag + b" NO [UNAVAILABLE] The new mail server is unavailable, try again later.")
        self._resume()

    def _target_ready(self, result, tag: bytes, address: str) -> None:
        target, caps, leftover = result
        if self.closed:
            target.transport.loseConnection()
            return
        alert = alert_text(self.f.scheduler.progress(address)) if self.f.scheduler else None
        if alert:
            self.send(b"* OK [ALERT] " + alert.encode())
        self.send(tag + b" OK [CAPABILITY " + caps.encode() + b"] Logged in.")
        self.user = address
        self.splice(target, leftover)
        logger.info("event=relay_start ip=%s user=%s", self.ip, address)

    def splice(self, target, leftover: bytes) -> None:
        self.target = target
        leftover += target.take_early()
        target.peer = self
        self.f.relayed += 1
        self.relay_started = self.f.reactor.seconds()
        self._cancel_deadline()
        if self.limit_key is not None:
            self.f.limits.settle(self.limit_key)     # no longer pre-auth: the per-client cap is freed
        self.setTimeout(self.config.frontdoor.idle_timeout)
        pipelined = self.parser.take_buffer()
        self.parser = None
        if self.f.scheduler is not None:
            self.opened = OpenFolderWatch(self, leftover)
        if leftover:
            self.transport.write(leftover)
        if pipelined:
            self.dataReceived(pipelined)
        _set_buffer(self.transport, CLIENT_BUFFER)
        _set_buffer(target.transport, TARGET_READ)
        self._client_socket = tlsrelay.socket_under(self.transport)
        self._target_socket = tlsrelay.socket_under(target.transport)
        # Each side stops reading while the other cannot keep up (twisted.protocols.portforward).
        self.transport.registerProducer(target.transport, True)
        target.transport.registerProducer(self.transport, True)
        self.busy = False
        self.transport.resumeProducing()

    def to_target(self, data: bytes) -> None:
        if data and self.target is not None:
            tlsrelay.write_now(self._target_socket, self.target.transport, data)

    def to_client(self, data: bytes) -> None:
        tlsrelay.write_now(self._client_socket, self.transport, data)

    # -- called by the target side -----------------------------------------------------
    def from_target(self, data: bytes) -> None:
        self.resetTimeout()
        self.bytes_down += len(data)
        if self.opened is not None:
            self.opened.from_target(data)
        else:
            self.to_client(data)

    def target_lost(self) -> None:
        self.target = None
        self.f.relayed -= 1
        self.transport.loseConnection()
