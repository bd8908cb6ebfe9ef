"""Who may use the web listener's admin surfaces (/admin, /api/, /metrics), and what every request must show.

One module, so the rules cannot disagree between the pages:

* **The client.**  The peer's address; behind one of ``web.trusted_proxies``, the rightmost
  ``X-Forwarded-For`` hop the proxies did not add.  HTTPS: the listener's own TLS, or a trusted
  proxy's ``X-Forwarded-Proto: https``.  From any other peer ``X-Forwarded-*`` is ignored.
* **Local** (the rule without ``admin.password_hash``): a loopback client address (127.0.0.0/8, ::1,
  never a name), not through a proxy we do not know (it sends X-Forwarded-For, Forwarded or
  X-Real-IP): a reverse proxy on this machine would otherwise make the world look local.  Never on
  a ``listen.proxy_protocol`` web listener: there the client address comes from a PROXY header, and
  a loopback one is the load balancer's machine, not this one (set ``admin.password_hash``).
* **Host allow-list** against DNS rebinding: ``localhost``, the names in ``web.hostnames``, or an
  IP address that is the listen address or the one the connection came in on.  Else 421.
* **POSTs** must come from our own pages: ``Sec-Fetch-Site`` same-origin (or none: typed by the
  user), and an ``Origin``, when sent, that is this site's.  Clients that send neither (curl)
  are not browsers a foreign page could drive.
* **The admin password**: argon2, checked in the daemon's auth pool, only after a token from ONE
  throttle per client IP (the front door's token buckets and limits, see auth/throttle.py), for the
  dashboard's sign-in form and HTTP Basic alike; the token comes back on success, failures are
  answered late.  A throttled attempt is refused without comparing anything.  The buckets and
  the failure streaks are in the store, so several nodes behind one load balancer share them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from twisted.internet import defer, task, threads

from ..auth.throttle import Throttle, limits_for
from ..netaddr import loopback_host, loopback_ip

logger = logging.getLogger("mailsyncd.web")

ADMIN_USER = "admin"
REALM = b'Basic realm="mailsyncd admin", charset="UTF-8"'
AUTH_CACHE_SECONDS = 60.0
AUTH_CACHE_MAX = 1024          # remembered Basic successes; the oldest are forgotten first
MAX_VERIFYING = 4              # argon2 checks for the admin at once; more get 503 (they share the auth pool)
RETRY_AFTER = 60
_PROXY_HEADERS = (b"x-forwarded-for", b"forwarded", b"x-real-ip")
_SAME_SITE = (b"same-origin", b"none")

__all__ = ["Access", "Refusal", "loopback_host", "loopback_ip", "verify_password"]


def verify_password(password_hash: str, password: str) -> bool:
    """Blocking (argon2): run it in a thread pool."""
    try:
        return PasswordHasher().verify(password_hash, password)
    except (VerifyMismatchError, VerificationError):
        return False
    except InvalidHashError as e:
        logger.error("event=admin_password_hash_error error=%r", str(e))
        return False


def host_of(value: str) -> str:
    """The host part of a Host header or URL netloc ("[::1]:80" -> "::1"), lower case, no final dot."""
    value = value.strip()
    if value.startswith("["):
        return value[1:value.find("]")].lower() if "]" in value else ""
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.lower().rstrip(".")


def _ip(text: str):
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


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


@dataclass(frozen=True)
class Refusal:
    code: int
    message: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


class Access:
    """One per web listener (made by app.make_site, which also sets ``dashboard``)."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.reactor = daemon.reactor
        self._fd = daemon.current().frontdoor
        # in the store, as the front door's: every node spends from the same admin buckets (their own
        # kinds, "admin:..."); a daemon without a store (unit tests) keeps them in memory
        self.throttle = Throttle(limits_for(self._fd), clock=self.reactor.seconds,
                                 state=getattr(daemon, "store", None), scope="admin:")
        self.dashboard = None               # the dashboard (admin.Admin): its session_ok(request) lets its browser in
        self._key = os.urandom(32)          # the Basic cache's HMAC key: never leaves this process
        self._cache: dict[bytes, float] = {}
        self._verifying = 0
        self.counts = {"compared": 0, "ok": 0, "failed": 0, "throttled": 0, "cached": 0}

    # -- who is asking ----------------------------------------------------------------
    @staticmethod
    def peer(request) -> str:
        return getattr(request.getClientAddress(), "host", None) or "-"

    def _trusted(self, request) -> bool:
        return self.peer(request) in self.daemon.current().web.trusted_proxies

    def _proxy_protocol(self) -> bool:
        return "http" in getattr(self.daemon.current().listen, "proxy_protocol", ())

    def client_ip(self, request) -> str:
        peer = self.peer(request)
        trusted = self.daemon.current().web.trusted_proxies
        if peer not in trusted:
            return peer
        hops = [h.strip() for h in (request.getHeader(b"x-forwarded-for") or b"").decode("latin-1").split(",")]
        for hop in reversed([h for h in hops if h]):
            if hop not in trusted:
                return hop[:64]
        return peer

    def https(self, request) -> bool:
        if request.isSecure():
            return True
        if not self._trusted(request):
            return False
        proto = (request.getHeader(b"x-forwarded-proto") or b"").split(b",")[-1].strip().lower()
        return proto == b"https"

    def local(self, request) -> bool:
        if not self._trusted(request) and any(request.getHeader(h) for h in _PROXY_HEADERS):
            return False
        if self._proxy_protocol():
            # The client address came in a PROXY header: a loopback one is the load balancer's
            # machine, never this one.
            return False
        return loopback_ip(self.client_ip(request))

    # -- DNS rebinding and cross-site POSTs -------------------------------------------
    def host_ok(self, request) -> bool:
        raw = request.getHeader(b"host")
        if not raw:
            return False
        host = host_of(raw.decode("latin-1"))
        if host == "localhost" or host in self.daemon.current().web.hostnames:
            return True
        ip = _ip(host)
        if ip is None:
            return False
        listen = self.daemon.current().listen.http
        mine = {_ip(getattr(request.getHost(), "host", "") or ""), _ip(listen.host) if listen else None}
        return ip in mine

    def cross_site(self, request) -> str | None:
        """Why a POST looks like it came from another site's page (None: it did not)."""
        site = request.getHeader(b"sec-fetch-site")
        if site is not None and site.strip().lower() not in _SAME_SITE:
            return "sec-fetch-site=" + site.decode("latin-1")[:40]
        origin = request.getHeader(b"origin")
        if origin is None:
            return None
        if origin.strip() == b"null":
            # a same-origin form under Referrer-Policy: no-referrer sends "null"; only the fetch
            # metadata can vouch for it
            return None if site is not None and site.strip().lower() == b"same-origin" else "origin=null"
        try:
            o = urlsplit(origin.decode("latin-1").strip())
            o_port = o.port
        except ValueError:
            return "origin=unparsable"
        scheme = "https" if self.https(request) else "http"
        default = 443 if scheme == "https" else 80
        raw_host = (request.getHeader(b"host") or b"").decode("latin-1").strip()
        h_port_text = raw_host.rsplit("]", 1)[-1].rpartition(":")[2] if ":" in raw_host.rsplit("]", 1)[-1] else ""
        h_port = int(h_port_text) if h_port_text.isdigit() else default
        if o.scheme != scheme or (o.hostname or "") != host_of(raw_host) or (o_port or default) != h_port:
            return "origin=" + origin.decode("latin-1")[:80]
        return None

    # -- the admin password -----------------------------------------------------------
    def _limits_now(self) -> None:
        fd = self.daemon.current().frontdoor
        if fd is not self._fd:              # a reload: new limits, the same buckets
            self._fd = fd
            self.throttle.update(limits_for(fd))

    def _state(self, fn, *args) -> defer.Deferred:
        """The throttle's store transaction, in the daemon's state thread: never on the reactor."""
        return threads.deferToThreadPool(self.reactor, self.daemon.state_pool, fn, *args)

    async def _delay(self, ip: str) -> None:
        await task.deferLater(self.reactor, await self._state(self.throttle.failed, ip), lambda: None)

    async def password(self, ip: str, password_hash: str, password: str, *, path: str,
                       on_ok=None) -> str:
        """"ok", "throttled", "wrong" or "busy"; a token is spent before any comparison.

        ``on_ok`` runs on success before the token comes back (the Basic cache remembers it)."""
        self._limits_now()
        refused = await self._state(self.throttle.may_ask_source, ip, f"{ADMIN_USER}@{ip}")
        if refused is not None:
            self.counts["throttled"] += 1
            logger.warning("event=admin_auth_failed ip=%s path=%s reason=throttled_%s", ip, path, refused)
            await self._delay(ip)
            return "throttled"
        if self._verifying >= MAX_VERIFYING:
            await self._state(self.throttle.succeeded, ip, f"{ADMIN_USER}@{ip}")    # not compared: it comes back
            logger.warning("event=admin_auth_busy ip=%s verifying=%d", ip, self._verifying)
            return "busy"
        self._verifying += 1
        self.counts["compared"] += 1
        try:
            ok = await threads.deferToThreadPool(self.reactor, self.daemon.auth_pool, verify_password,
                                                 password_hash, password)
        finally:
            self._verifying -= 1
        del password
        if ok:
            self.counts["ok"] += 1
            await self._state(self.throttle.succeeded, ip, f"{ADMIN_USER}@{ip}")
            if on_ok is not None:
                on_ok()
            return "ok"
        self.counts["failed"] += 1
        logger.warning("event=admin_auth_failed ip=%s path=%s reason=wrong_password", ip, path)
        await self._delay(ip)
        return "wrong"

    # -- /api/ and /metrics -----------------------------------------------------------
    async def _session_ok(self, request) -> bool:
        if self.dashboard is None:
            return False
        try:
            return bool(await self.dashboard.session_ok(request))
        except Exception as e:       # a dashboard bug must not open the API, nor break it
            logger.error("event=web_error what=session_ok error=%r", str(e))
            return False

    def _cache_key(self, password_hash: str, header: bytes) -> bytes:
        # the hash is in the key: a new admin password (reload) forgets every remembered success
        return hmac.new(self._key, password_hash.encode() + b"\0" + header, hashlib.sha256).digest()

    def _remember(self, key: bytes) -> None:
        now = self.reactor.seconds()
        for k in [k for k, until in self._cache.items() if until <= now]:
            del self._cache[k]
        while len(self._cache) >= AUTH_CACHE_MAX:
            del self._cache[next(iter(self._cache))]     # insertion order: the oldest first
        self._cache[key] = now + AUTH_CACHE_SECONDS

    async def api(self, request) -> Refusal | None:
        """None when ``request`` may read everybody's progress (/api/, /metrics), else the refusal."""
        ip = self.client_ip(request)
        path = request.path[:60].decode("latin-1").split("?", 1)[0]
        password_hash = self.daemon.current().admin.password_hash
        if not password_hash:
            if self.local(request):
                return None
            logger.warning("event=admin_auth_failed ip=%s path=%s reason=not_loopback", ip, path)
            return Refusal(403, "the API answers only this machine (loopback) while admin.password_hash is "
                                "not set; set it (mailsyncctl hash-password) to use HTTP Basic auth as admin")
        if await self._session_ok(request):
            return None
        unauthorized = Refusal(401, "wrong user or password (HTTP Basic, user admin)",
                               ((b"WWW-Authenticate", REALM),))
        header = request.getHeader(b"authorization")
        if not header:
            logger.info("event=admin_auth_failed ip=%s path=%s reason=no_credentials", ip, path)
            return Refusal(401, "authentication required (HTTP Basic, user admin)", unauthorized.headers)
        creds = _basic(header)
        if creds is None or creds[0] != ADMIN_USER:
            logger.warning("event=admin_auth_failed ip=%s path=%s reason=%s", ip, path,
                           "bad_header" if creds is None else "bad_user")
            await self._delay(ip)
            return unauthorized
        key = self._cache_key(password_hash, header)
        self._limits_now()
        # the remembered successes are compared too: only after a token, like argon2
        if self._cache.get(key, 0.0) > self.reactor.seconds():
            if await self._state(self.throttle.may_ask_source, ip, f"{ADMIN_USER}@{ip}") is None:
                await self._state(self.throttle.succeeded, ip, f"{ADMIN_USER}@{ip}")
                self.counts["cached"] += 1
                return None
        verdict = await self.password(ip, password_hash, creds[1], path=path,
                                      on_ok=lambda: self._remember(key))
        if verdict == "ok":
            return None
        if verdict == "throttled":
            return Refusal(429, "too many wrong passwords from this address; try again later",
                           ((b"Retry-After", b"%d" % RETRY_AFTER),))
        if verdict == "busy":
            return Refusal(503, "busy checking passwords; try again", ((b"Retry-After", b"5"),))
        return unauthorized
