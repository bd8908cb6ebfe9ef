"""The one HTTP shell every page of the web listener stands on (self-service, /admin, /api/, /metrics).

One implementation, so the pages cannot drift apart on what every answer needs:

* :class:`Request` -- bodies are bounded (``MAX_BODY``) and held in memory: a form with a password
  never lands in a temporary file; an oversized upload is answered 413 at once.
* :class:`Channel` -- a request must arrive whole within ``web.request_timeout`` (slowloris).
* :class:`Site` -- connections capped per client network and in total, no access log.
* :class:`Reply` and :class:`Shell` -- a page returns a Reply; the shell sets the security headers,
  refuses unknown Hosts (421) and cross-site POSTs (403), answers a crash with 500 (no traceback to
  the client), and finishes the request once.  The one cookie setter, form reader, CSRF token and
  language choice live here too.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import io
import logging
import secrets
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from twisted.internet import defer, threads
from twisted.web import http, resource, server

from ..auth.throttle import network_of
from ..connlimits import ConnectionLimits, fd_budget
from ..store import UnstorableText
from ..text import shown
from . import i18n
from .access import Access

logger = logging.getLogger("mailsyncd.web")

MAX_BODY = 16 * 1024
CONNECTION_TIMEOUT = 60        # idle HTTP connections are closed after this many seconds
LANG_COOKIE = "mailsyncd-lang"
AUTO = "auto"                  # marks a page's own reloads and polls: no activity for the idle timeout
HTML = b"text/html; charset=utf-8"
HSTS = b"max-age=31536000"
_BARE_500 = b"500 Internal Server Error\n"
_SECURITY_HEADERS = (
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"X-Frame-Options", b"DENY"),
    (b"Cross-Origin-Opener-Policy", b"same-origin"),
    (b"Cross-Origin-Resource-Policy", b"same-origin"),
)


def esc(value: object) -> str:
    """Text for HTML: control characters and bidi overrides shown as escapes, then HTML-escaped."""
    return html.escape(shown(value), quote=True)


# ---------------------------------------------------------------------------- connections

class Request(server.Request):
    """Bodies are bounded and held in memory: a form with a password never lands in a temp file."""

    too_big = False

    def gotLength(self, length):
        self.content = io.BytesIO()
        if length is not None and length > MAX_BODY:
            self._refuse_too_big()

    def handleContentChunk(self, data):
        if self.too_big:
            return
        if self.content.tell() + len(data) > MAX_BODY:
            self._refuse_too_big()
            return
        self.content.write(data)

    def _refuse_too_big(self) -> None:
        # Answer now and hang up, instead of reading (and discarding) an upload of any size.
        self.too_big = True
        self.content = io.BytesIO()
        transport = getattr(self.channel, "transport", None)
        if transport is not None:
            head = b"".join(k + b": " + v + b"\r\n"
                            for k, v in ((b"Content-Security-Policy", Shell.csp),) + _SECURITY_HEADERS)
            transport.write(b"HTTP/1.1 413 Payload Too Large\r\n" + head +
                            b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            transport.loseConnection()


class Channel(http.HTTPChannel):
    """A request (headers and body) must arrive within ``web.request_timeout``, counted from the
    connection or the end of the previous answer: the idle timeout alone lets a client that sends a
    byte now and then (slowloris) hold a connection for ever."""

    limit_key: str | None = None
    counted = False
    _deadline = None

    def connectionMade(self):
        super().connectionMade()
        self._arm()

    def allContentReceived(self):
        self._disarm()
        super().allContentReceived()

    def requestDone(self, request):
        super().requestDone(request)
        if self.persistent and self._deadline is None and self.transport is not None \
                and not getattr(self.transport, "disconnecting", False):
            self._arm()

    def connectionLost(self, reason):
        self._disarm()
        if self.counted:
            self.counted = False
            self.site.limits.release(self.limit_key)
        super().connectionLost(reason)

    def _arm(self) -> None:
        self._deadline = self.callLater(self.site.request_timeout(), self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        logger.info("event=web_request_timeout ip=%s", getattr(self.transport.getPeer(), "host", "-"))
        self.transport.abortConnection()


class Site(server.Site):
    noisy = False
    displayTracebacks = False
    protocol = Channel             # HTTP/1.1 only (no HTTP/2 upgrade), so the channel is ours throughout

    def __init__(self, root, daemon):
        super().__init__(root, requestFactory=Request, timeout=CONNECTION_TIMEOUT, parsePOSTFormSubmission=False)
        self.daemon = daemon
        self.limits = ConnectionLimits(1, 1)

    def request_timeout(self) -> float:
        return self.daemon.current().web.request_timeout

    def buildProtocol(self, addr):
        web = self.daemon.current().web
        # The web listener takes at most half of the fds: a flood here must not starve the IMAP side.
        self.limits.update(web.max_connections_per_ip, min(web.max_connections, fd_budget(fds_per_connection=2)))
        ip = getattr(addr, "host", None) or "-"
        # A trusted proxy carries many clients: it counts in the total only.
        key = None if ip in web.trusted_proxies else network_of(ip)
        refused = self.limits.admit(key)
        if refused is not None:
            logger.warning("event=web_connection_refused ip=%s reason=%s open=%d", ip, refused, self.limits.held)
            return None                # Twisted closes the socket at once
        channel = super().buildProtocol(addr)
        channel.limit_key, channel.counted = key, True
        return channel

    def log(self, request) -> None:
        """No access log: the pages log their own events (and never a request body)."""


# ---------------------------------------------------------------------------- answers

@dataclass
class Reply:
    code: int
    body: bytes
    ctype: bytes = HTML
    location: str | None = None
    retry_after: int | None = None
    cache: bytes = b"no-store"
    headers: dict[bytes, bytes] = field(default_factory=dict)


def redirect(location: str) -> Reply:
    return Reply(303, b"", location=location)


def arg(request, name: bytes, limit: int = 320) -> str:
    """A query argument's first value ("" when absent), at most ``limit`` characters."""
    raw = (request.args.get(name) or [b""])[0]
    return raw.decode("utf-8", "replace")[:limit]


def plain(text: str) -> bool:
    """No control character (C0 or DEL) in ``text``: no address or domain has one, and PostgreSQL refuses
    a NUL in a query's text outright, so a path or argument with one is refused before any query."""
    return not any(ord(c) < 0x20 or ord(c) == 0x7f for c in text)


def read_form(request) -> dict[str, str] | None:
    """The urlencoded POST body as {name: first value}; None when it is not one."""
    ctype = (request.getHeader(b"content-type") or b"").decode("latin-1").split(";", 1)[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return None
    request.content.seek(0)
    body = request.content.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        return None
    try:
        parsed = parse_qs(body.decode("ascii"), keep_blank_values=True, strict_parsing=False,
                          encoding="utf-8", errors="strict", max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return None
    return {k: v[0] for k, v in parsed.items()}


def same_token(expected: str, form: dict[str, str]) -> bool:
    """The form's ``csrf`` field is ``expected`` (a session's token), compared in constant time."""
    return hmac.compare_digest(expected.encode(), form.get("csrf", "").encode("utf-8", "replace"))


class Shell(resource.Resource):
    """A page: ``handle(request)`` (sync or async) returns a :class:`Reply`; ``message(request, code, key)``
    is its own error page.  Everything around that is done here, once for every page."""

    isLeaf = True
    csp = b"default-src 'none'"
    vary = b"Cookie, Accept-Language"     # for the answers that depend on who asks (no-store)
    unchecked_host = ()                   # paths that answer any Host (a load balancer's health check)

    def __init__(self, daemon, access: Access):
        super().__init__()
        self.daemon = daemon
        self.reactor = daemon.reactor
        self.access = access

    # -- one request, start to finish ---------------------------------------------------
    def render(self, request):
        if getattr(request, "too_big", False):
            return server.NOT_DONE_YET      # already answered 413 and hanging up
        request.setHeader(b"Server", b"mailsyncd")
        request.setHeader(b"Content-Security-Policy", self.csp)
        for k, v in _SECURITY_HEADERS:
            request.setHeader(k, v)
        if self.access.https(request):
            request.setHeader(b"Strict-Transport-Security", HSTS)
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _f: gone.append(True))
        d = defer.maybeDeferred(self._guarded, request)
        d.addErrback(self._crashed, request)
        d.addCallback(lambda reply: None if gone else self.finish(request, reply))
        d.addErrback(self._last_resort, request, gone)
        return server.NOT_DONE_YET

    def _guarded(self, request):
        if request.path not in self.unchecked_host and not self.access.host_ok(request):
            logger.warning("event=web_refused ip=%s reason=unknown_host host=%r", self.ip(request),
                           (request.getHeader(b"host") or b"")[:100].decode("latin-1"))
            return Reply(421, b"421 Misdirected Request: this Host is not one of this server's names "
                              b"(localhost, its addresses, web.hostnames)\n", b"text/plain; charset=utf-8")
        if request.method == b"POST":
            why = self.access.cross_site(request)
            if why is not None:
                logger.warning("event=web_refused ip=%s reason=cross_site %s", self.ip(request), why)
                return self.message(request, 403, "err_csrf")
        return defer.maybeDeferred(self.handle, request)

    def handle(self, request):
        raise NotImplementedError

    def message(self, request, code: int, key: str) -> Reply:
        raise NotImplementedError

    def _crashed(self, failure, request) -> Reply:
        if failure.check(UnstorableText):       # the request's text, not the server: a page that missed plain()
            logger.warning("event=web_refused ip=%s reason=unstorable_text path=%r", self.ip(request),
                           request.path[:100])
            return self.message(request, 400, "err_generic")
        logger.error("event=web_error path=%r error=%r", request.path[:100], failure.getErrorMessage())
        return self.message(request, 500, "err_internal")

    def _last_resort(self, failure, request, gone: list[bool]) -> None:
        """Even the error page failed: a bare 500, so that the client is not left waiting."""
        logger.error("event=web_error error=%r", failure.getErrorMessage())
        if not gone and not request.finished and not getattr(request, "startedWriting", False):
            request.setResponseCode(500)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            request.setHeader(b"Content-Length", b"%d" % len(_BARE_500))
            request.write(_BARE_500)
            request.finish()

    def finish(self, request, reply: Reply) -> None:
        request.setResponseCode(reply.code)
        request.setHeader(b"Content-Type", reply.ctype)
        request.setHeader(b"Cache-Control", reply.cache)
        if reply.cache == b"no-store":
            request.setHeader(b"Vary", self.vary)
        if reply.location:
            request.setHeader(b"Location", reply.location.encode("ascii"))
        if reply.retry_after:
            request.setHeader(b"Retry-After", b"%d" % reply.retry_after)
        for k, v in reply.headers.items():
            request.setHeader(k, v)
        request.setHeader(b"Content-Length", b"%d" % len(reply.body))
        if request.method != b"HEAD":
            request.write(reply.body)
        request.finish()

    def not_allowed(self, request, allow: bytes) -> Reply:
        request.setHeader(b"Allow", allow)
        return self.message(request, 405, "err_generic")

    # -- what a page asks of the request ------------------------------------------------
    def ip(self, request) -> str:
        return self.access.client_ip(request)

    def blocking(self, fn, *args):
        """``fn(*args)`` in the daemon's state thread (blocking SQLite)."""
        return threads.deferToThreadPool(self.reactor, self.daemon.state_pool, fn, *args)

    def set_cookie(self, request, name: str, value: str, *, max_age: int | None = None) -> None:
        https = self.access.https(request)
        p = "__Host-" if https else ""     # __Host-: Secure, Path=/, no Domain -- cannot be set by a subdomain
        parts = [f"{p}{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        if https:
            parts.append("Secure")
        request.responseHeaders.addRawHeader(b"Set-Cookie", "; ".join(parts).encode("ascii"))

    def get_cookie(self, request, name: str) -> str | None:
        p = "__Host-" if self.access.https(request) else ""
        raw = request.getCookie((p + name).encode())
        if not raw:
            return None
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            return None

    def lang(self, request, form: dict[str, str] | None = None) -> str:
        """``?lang=`` (remembered in a cookie), a form's ``lang``, the cookie, then Accept-Language."""
        chosen = i18n.normalize((request.args.get(b"lang") or [None])[0])
        if chosen:
            self.set_cookie(request, LANG_COOKIE, chosen, max_age=365 * 86400)
            return chosen
        return (i18n.normalize((form or {}).get("lang"))
                or i18n.normalize(self.get_cookie(request, LANG_COOKIE))
                or i18n.from_accept_language(request.getHeader(b"accept-language")))


class SignedCsrf:
    """Signed double-submit CSRF for forms shown before a session exists: a random cookie, and in the
    form its HMAC under ``key``, the store's ``web_key``: every node on the same database checks the
    forms of every other (behind a load balancer), and forms survive a restart."""

    def __init__(self, shell: Shell, cookie: str, label: bytes, key: bytes):
        self.shell, self.cookie, self.label = shell, cookie, label
        self._key = key

    def _sign(self, value: str) -> str:
        return hmac.new(self._key, self.label + b"\0" + value.encode(), hashlib.sha256).hexdigest()

    def token(self, request) -> str:
        """The token for a form; sets this browser's cookie when it has none (or a malformed one)."""
        value = self.shell.get_cookie(request, self.cookie)
        if not value or len(value) != 43 or not value.replace("-", "").replace("_", "").isalnum():
            value = secrets.token_urlsafe(32)
            self.shell.set_cookie(request, self.cookie, value)
        return self._sign(value)

    def ok(self, request, form: dict[str, str]) -> bool:
        value = self.shell.get_cookie(request, self.cookie)
        given = form.get("csrf", "")
        if not value or not given:
            return False
        return hmac.compare_digest(self._sign(value).encode(), given.encode("utf-8", "replace"))
