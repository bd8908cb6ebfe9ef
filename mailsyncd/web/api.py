"""The JSON API (``/api/...``) and ``/metrics``: every account's progress, for the admin only.

Mounted on the self-service site (``listen.http``) through ``SelfService.extra`` by :func:`mount`,
which ``selfservice.make_site`` calls.  The numbers are the status document's (mailsyncd.status,
schema 1, documented in docs/status.md), so they agree with ``mailsyncctl status`` and the dashboard.

Routes (GET and HEAD only; JSON answers carry ``Cache-Control: no-store``):

* ``GET /api/status[?domain=D][&user=ADDRESS]``  the status document (``Daemon.status``).
* ``GET /api/accounts/ADDRESS``                  one account: its entry in the document, its folders
                                                 (the last pass's report), its skipped messages with
                                                 the reasons, and its last pass.  404 when unknown.
* ``GET /metrics``                               Prometheus text format (mailsyncd.web.metrics).

Access (:class:`AdminAccess`), the same rules as the admin dashboard:

* ``admin.password_hash`` unset: loopback clients only (127.0.0.0/8, ::1), else 403.  A request that
  came through a proxy not listed in ``web.trusted_proxies`` (it carries X-Forwarded-For, Forwarded or
  X-Real-IP) is not local, whatever the proxy's own address: a TLS-terminating proxy on this machine
  must not open the API to the world.
* set: HTTP Basic ``admin:<password>`` (argon2 ``PasswordHasher().verify`` in the daemon's auth
  pool; a success is remembered 60 s under an HMAC of the header with a per-process key, so a
  dashboard polling every 5 s does not cost an argon2 each time), or a valid dashboard session
  (``extra["/admin"].session_ok(request)``, when the dashboard is mounted).  Else 401.  Failures are
  logged as ``event=admin_auth_failed`` and answered late (2 s, doubling, at most 15 s per IP).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import os
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from twisted.internet import defer, task, threads
from twisted.web import resource, server

from ..auth.throttle import Throttle
from ..text import json_text
from . import metrics

logger = logging.getLogger("mailsyncd.web")

AUTH_CACHE_SECONDS = 60.0
AUTH_CACHE_MAX = 1024          # remembered successes; the oldest are forgotten first
MAX_VERIFYING = 4              # argon2 checks for the admin at once; more get 503 (they share the auth pool)
SKIPPED_LIMIT = 10_000         # skipped messages listed per account (skipped_total has the count)
ADMIN_USER = "admin"
REALM = b'Basic realm="mailsyncd admin", charset="UTF-8"'
_PROXY_HEADERS = (b"x-forwarded-for", b"forwarded", b"x-real-ip")

__all__ = ["AdminAccess", "ApiResource", "MetricsResource", "mount"]


def mount(page, daemon) -> None:
    """Mount /api/ and /metrics on the self-service page (``page.extra``, see selfservice.make_site)."""
    access = AdminAccess(daemon, page)
    page.extra[b"/api/"] = ApiResource(daemon, access)
    page.extra[b"/metrics"] = MetricsResource(daemon, access)


def loopback_ip(host: str) -> bool:
    """127.0.0.0/8 and ::1 (also as an IPv4-mapped IPv6 address); names are not addresses."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@dataclass
class Reply:
    code: int
    body: bytes
    ctype: bytes = b"application/json"
    headers: dict[bytes, bytes] = field(default_factory=dict)


def json_reply(code: int, doc: dict, **headers: bytes) -> Reply:
    # Server strings keep their exact value; their control characters travel as \u escapes only.
    body = json_text(doc, separators=(",", ":")).encode("utf-8") + b"\n"
    return Reply(code, body, headers={k.replace("_", "-").encode(): v for k, v in headers.items()})


def error(code: int, message: str, **headers: bytes) -> Reply:
    return json_reply(code, {"error": message, "status": code}, **headers)


# ---------------------------------------------------------------------------- access

def _verify(password_hash: str, password: str) -> bool:
    try:
        return PasswordHasher().verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _basic(header: bytes) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization: Basic`` header; None when it is not one."""
    scheme, _, value = header.strip().partition(b" ")
    if scheme.lower() != b"basic" or not value or len(value) > 4096:
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return (user, password) if sep else None


class AdminAccess:
    """Who may read everybody's progress (see the module docstring); shared by /api/ and /metrics."""

    def __init__(self, daemon, page):
        self.daemon, self.page = daemon, page
        self.reactor = daemon.reactor
        self._key = os.urandom(32)                  # the cache's HMAC key: never leaves this process
        self._cache: dict[bytes, float] = {}        # HMAC(header) -> valid until (reactor seconds)
        self._verifying = 0
        self.throttle = Throttle()                  # failure delays per IP
        self.counts = {"ok": 0, "failed": 0, "cached": 0}

    def _ip(self, request) -> str:
        return self.page._ip(request)     # honours web.trusted_proxies, like the self-service page

    def _is_local(self, request) -> bool:
        peer = getattr(request.getClientAddress(), "host", None) or ""
        trusted = self.daemon.current().web.trusted_proxies
        if peer not in trusted and any(request.getHeader(h) for h in _PROXY_HEADERS):
            return False     # came through a proxy we do not know: its client is not on this machine
        return loopback_ip(self._ip(request))

    def _session_ok(self, request) -> bool:
        extra = getattr(self.page, "extra", {})
        dashboard = extra.get(b"/admin", extra.get("/admin"))
        check = getattr(dashboard, "session_ok", None)
        if not callable(check):
            return False
        try:
            return bool(check(request))
        except Exception as e:       # a dashboard bug must not open the API, nor break it
            logger.error("event=web_error what=session_ok error=%r", str(e))
            return False

    def _failed(self, request, ip: str, reason: str, *, level: int = logging.WARNING) -> None:
        self.counts["failed"] += 1
        logger.log(level, "event=admin_auth_failed ip=%s path=%s reason=%s", ip,
                   request.path[:60].decode("latin-1").split("?", 1)[0], reason)

    def _cache_key(self, password_hash: str, header: bytes) -> bytes:
        # the hash is in the key: a new admin password (reload) forgets every remembered success
        return hmac.new(self._key, password_hash.encode() + b"\0" + header, hashlib.sha256).digest()

    def _remember(self, key: bytes, now: float) -> None:
        for k in [k for k, until in self._cache.items() if until <= now]:
            del self._cache[k]
        while len(self._cache) >= AUTH_CACHE_MAX:
            del self._cache[next(iter(self._cache))]     # insertion order: the oldest first
        self._cache[key] = now + AUTH_CACHE_SECONDS

    async def check(self, request) -> Reply | None:
        """None when ``request`` may read everybody's progress, else the refusal to send."""
        ip = self._ip(request)
        password_hash = self.daemon.current().admin.password_hash
        if not password_hash:
            if self._is_local(request):
                return None
            self._failed(request, ip, "not_loopback")
            return error(403, "the API answers only this machine (loopback) while admin.password_hash is "
                              "not set; set it (mailsyncctl hash-password) to use HTTP Basic auth as admin")
        if self._session_ok(request):
            return None
        header = request.getHeader(b"authorization")
        if not header:
            self._failed(request, ip, "no_credentials", level=logging.INFO)   # a browser's first try
            return error(401, "authentication required (HTTP Basic, user admin)", WWW_Authenticate=REALM)
        header = header.encode("latin-1") if isinstance(header, str) else header
        key = self._cache_key(password_hash, header)
        now = self.reactor.seconds()
        if self._cache.get(key, 0.0) > now:
            self.counts["cached"] += 1
            return None
        creds = _basic(header)
        if creds is None or creds[0] != ADMIN_USER:
            reason = "bad_header" if creds is None else "bad_user"
        else:
            if self._verifying >= MAX_VERIFYING:
                logger.warning("event=admin_auth_busy ip=%s verifying=%d", ip, self._verifying)
                return error(503, "busy checking passwords; try again", Retry_After=b"5")
            self._verifying += 1
            try:
                ok = await threads.deferToThreadPool(self.reactor, self.daemon.auth_pool, _verify,
                                                     password_hash, creds[1])
            finally:
                self._verifying -= 1
            creds = None
            if ok:
                self.counts["ok"] += 1
                self.throttle.succeeded(ip, ADMIN_USER)
                self._remember(key, self.reactor.seconds())
                return None
            reason = "wrong_password"
        self._failed(request, ip, reason)
        await task.deferLater(self.reactor, self.throttle.failed(ip), lambda: None)
        return error(401, "wrong user or password (HTTP Basic, user admin)", WWW_Authenticate=REALM)


# ---------------------------------------------------------------------------- resources

class _Guarded(resource.Resource):
    """GET/HEAD only, admin access checked first; ``handle(request)`` returns a :class:`Reply`."""

    isLeaf = True
    methods = (b"GET", b"HEAD")

    def __init__(self, daemon, access: AdminAccess):
        super().__init__()
        self.daemon, self.access = daemon, access

    def render(self, request):
        if request.method not in self.methods:
            self._write(request, error(405, "method not allowed", Allow=b", ".join(self.methods)))
            return server.NOT_DONE_YET
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _f: gone.append(True))
        d = defer.ensureDeferred(self._serve(request))
        d.addErrback(self._crashed, request)
        d.addCallback(lambda reply: None if gone else self._write(request, reply))
        d.addErrback(lambda f: logger.error("event=web_error error=%r", f.getErrorMessage()))
        return server.NOT_DONE_YET

    async def _serve(self, request) -> Reply:
        refused = await self.access.check(request)
        if refused is not None:
            return refused
        return await self.handle(request)

    async def handle(self, request) -> Reply:
        raise NotImplementedError

    def _crashed(self, failure, request) -> Reply:
        logger.error("event=web_error path=%r error=%r", request.path[:100], failure.getErrorMessage())
        return error(500, "internal error (see the daemon's log)")

    @staticmethod
    def _write(request, reply: Reply) -> None:
        request.setResponseCode(reply.code)
        request.setHeader(b"Content-Type", reply.ctype)
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Vary", b"Authorization, Cookie")
        for k, v in reply.headers.items():
            request.setHeader(k, v)
        request.setHeader(b"Content-Length", b"%d" % len(reply.body))
        if request.method != b"HEAD":
            request.write(reply.body)
        request.finish()

    @staticmethod
    def _arg(request, name: bytes) -> str | None:
        raw = (request.args.get(name) or [None])[0]
        if raw is None:
            return None
        try:
            text = raw.decode("utf-8").strip().lower()
        except UnicodeDecodeError:
            return None
        return text[:320] or None

    def _blocking(self, fn, *args):
        return threads.deferToThreadPool(self.daemon.reactor, self.daemon.state_pool, fn, *args)


class ApiResource(_Guarded):
    """/api/status and /api/accounts/ADDRESS (JSON)."""

    async def handle(self, request) -> Reply:
        path = request.path
        if path == b"/api/status":
            return await self._status(request)
        if path.startswith(b"/api/accounts/"):
            raw = unquote_to_bytes(path[len(b"/api/accounts/"):])
            try:
                address = raw.decode("utf-8").strip().lower()
            except UnicodeDecodeError:
                return error(400, "the address is not UTF-8")
            if not address or "/" in address or len(address) > 320:
                return error(404, "no such account")
            return await self._account(address)
        return error(404, "no such API route; see docs/status.md")

    async def _status(self, request) -> Reply:
        domain, user = self._arg(request, b"domain"), self._arg(request, b"user")
        doc = await self.daemon.status(domain=domain, user=user)
        if domain is not None and domain not in self.daemon.current().domains and not doc["accounts"]:
            return error(404, f"no such domain: {domain}")
        return json_reply(200, doc)

    async def _account(self, address: str) -> Reply:
        doc = await self.daemon.status(user=address)
        entry = next((a for a in doc["accounts"] if a["address"] == address), None)
        if entry is None:
            return error(404, f"no such account: {address}")
        details = await self._blocking(_read_details, self.daemon.store, address)
        return json_reply(200, {"schema": doc["schema"], "generated": doc["generated"], "account": entry,
                                **details})


def _read_details(store, address: str) -> dict:
    """In the state thread: the last pass's per-folder report, the skipped messages, the last pass."""
    folders = [{"path": r.path, "target": r.target_name,
                "source_messages": r.source_count, "target_messages": r.target_count,
                "copied": r.copied, "present": r.present, "skipped": r.skipped, "bytes": r.bytes,
                "seconds": r.seconds, "error": r.error, "finished": r.finished}
               for r in store.reports(address)]
    skipped = store.skipped(address)
    last = store.last_pass(address)
    if last is not None:
        last = dict(last, ok=None if last.get("ok") is None else bool(last["ok"]))
    return {"folders": folders,
            "skipped": [{"folder": p, "uid": uid, "size": size, "reason": reason}
                        for p, uid, size, reason in skipped[:SKIPPED_LIMIT]],
            "skipped_total": len(skipped), "last_pass": last}


class MetricsResource(_Guarded):
    """/metrics (Prometheus text format)."""

    async def handle(self, request) -> Reply:
        if request.path != b"/metrics":
            return error(404, "not found")
        doc = await self.daemon.status()
        body = metrics.render(doc, metrics.counters_of(self.daemon))
        return Reply(200, body, metrics.CONTENT_TYPE_LATEST.encode("ascii"))
