"""Plan 3: employees start their own migration on a web page, and follow it there.

Routes (twisted.web on ``listen.http``; HTTPS when the config has a ``tls:`` section):

* ``GET /``                 the form: old address, old password, and the new address where some
                            domain allows self-service renaming.  English or Chinese by
                            ``Accept-Language``, switch with ``?lang=en|zh``.  No JavaScript.
* ``POST /start``           CSRF-checked (signed double-submit cookie), then
                            ``Gate.authenticate(plan="self_service")`` -- the front door's checks,
                            throttle and failure delays.  Success: a session cookie and 303 to
                            /progress; failure: the form again with a translated reason (429 when
                            throttled).
* ``GET /progress``         the signed-in employee's own progress; reloads itself as
                            ``/progress?auto=1``, which does not count as activity.
* ``POST /logout``          ends the session (CSRF-checked).
* ``GET /healthz``          ``ok``, for load balancers.
* ``GET /static/style.css`` the only stylesheet (the CSP allows nothing inline).

Sessions live in memory (a restart signs everybody out, which costs a password entry): a random
32-byte token in an HttpOnly, SameSite=Strict cookie (``Secure`` and the ``__Host-`` prefix over
HTTPS, direct or behind a trusted proxy's ``X-Forwarded-Proto: https``, which also adds HSTS),
stored server-side as its SHA-256 with the address only.  They end after ``web.session_idle`` seconds
without an action of the employee (default 30 min; the page's own reloads do not count) or
``web.session_max`` after sign-in (default 8 h), whatever happens.

Every request's Host must be known (access.py; else 421) and every POST must come from our own pages
(``Sec-Fetch-Site``/``Origin``; else 403).  Connections are capped per client address and in total,
and a request must arrive whole within ``web.request_timeout`` (slow clients are cut off).

Passwords arrive only in POST bodies (at most ``MAX_BODY`` bytes, kept in memory, never in a
temporary file), are handed to the gate and dropped; they are never logged, echoed or put in a URL.
Store reads are blocking SQLite: they run in the daemon's ``state`` thread pool.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import io
import logging
import os
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

from twisted.internet import defer, task, threads
from twisted.web import http, resource, server

from .. import quirks
from ..auth.throttle import network_of
from ..config import UnknownDomain
from ..connlimits import ConnectionLimits, fd_budget
from ..text import field, shown
from . import assets, i18n
from .access import Access, loopback_host
from .i18n import t
from .sessions import Session, Sessions

logger = logging.getLogger("mailsyncd.web")

MAX_BODY = 16 * 1024
MAX_SESSIONS = 20_000          # beyond this the least recently used sessions end first
REFRESH_SECONDS = 5
AUTO = "auto"                  # the reload's marker: a reload is no activity for the idle timeout
SKIPPED_SHOWN = 100
CONNECTION_TIMEOUT = 60        # idle HTTP connections are closed after this many seconds
PLAN = "self_service"

CSP = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'"
HSTS = "max-age=31536000"
_COMMON_HEADERS = (
    (b"Content-Security-Policy", CSP.encode()),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"X-Frame-Options", b"DENY"),
    (b"Cross-Origin-Opener-Policy", b"same-origin"),
    (b"Cross-Origin-Resource-Policy", b"same-origin"),
)


is_loopback = loopback_host      # daemon.py checks listen.http with it


# ---------------------------------------------------------------------------- HTTP plumbing

class _Request(server.Request):
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
            head = b"".join(k + b": " + v + b"\r\n" for k, v in _COMMON_HEADERS)
            transport.write(b"HTTP/1.1 413 Payload Too Large\r\n" + head +
                            b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            transport.loseConnection()


class _Channel(http.HTTPChannel):
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


class _Site(server.Site):
    noisy = False
    displayTracebacks = False
    protocol = _Channel            # HTTP/1.1 only (no HTTP/2 upgrade), so the channel is ours throughout

    def __init__(self, page, **kw):
        super().__init__(page, **kw)
        self.page = page
        self.limits = ConnectionLimits(1, 1)

    def request_timeout(self) -> float:
        return self.page.daemon.current().web.request_timeout

    def buildProtocol(self, addr):
        web = self.page.daemon.current().web
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
        """No access log: the page logs its own events (and never a request body)."""


SESSION_COOKIE, CSRF_COOKIE, LANG_COOKIE = "mailsyncd-session", "mailsyncd-csrf", "mailsyncd-lang"


def esc(value: object) -> str:
    """Text for HTML: control characters and bidi overrides shown as escapes, then HTML-escaped."""
    return html.escape(shown(value), quote=True)


@dataclass
class _Reply:
    code: int
    body: bytes
    ctype: bytes = b"text/html; charset=utf-8"
    location: str | None = None
    private: bool = True          # Cache-Control: no-store
    retry_after: int | None = None


# ---------------------------------------------------------------------------- the page

class SelfService(resource.Resource):
    isLeaf = True

    def __init__(self, daemon, access: Access, *, idle: float | None = None, max_age: float | None = None):
        super().__init__()
        self.daemon = daemon
        self.reactor = daemon.reactor
        self.access = access
        def ages() -> tuple[float, float]:
            web = daemon.current().web
            return (idle if idle is not None else web.session_idle,
                    max_age if max_age is not None else web.session_max)

        self.sessions = Sessions(self.reactor.seconds, ages, MAX_SESSIONS)
        self._key = os.urandom(32)    # signs the CSRF cookie: forms do not survive a restart
        self.counts = {"started": 0, "failed": 0, "csrf_refused": 0}
        self._routes = {
            b"/": ({b"GET", b"HEAD"}, self._form),
            b"/start": ({b"POST"}, self._start),
            b"/progress": ({b"GET", b"HEAD"}, self._progress),
            b"/logout": ({b"POST"}, self._logout),
            b"/healthz": ({b"GET", b"HEAD"}, self._healthz),
            b"/static/style.css": ({b"GET", b"HEAD"}, self._style),
        }
        # -- mounted resources (hook: /api/ and /metrics from web/api.py; the dashboard's /admin) --
        # key: a path prefix (bytes); "/api/" matches what starts with it, "/admin" matches /admin and
        # /admin/...; the longest key wins, _routes win over all.  The resource's render() answers.
        self.extra: dict[bytes, resource.Resource] = {}

    # -- dispatch ----------------------------------------------------------------------
    def render(self, request):
        if getattr(request, "too_big", False):
            return server.NOT_DONE_YET      # already answered 413 and hanging up
        request.setHeader(b"Server", b"mailsyncd")
        for k, v in _COMMON_HEADERS:
            request.setHeader(k, v)
        if self.access.https(request):
            request.setHeader(b"Strict-Transport-Security", HSTS.encode())
        if request.path != b"/healthz" and not self.access.host_ok(request):
            logger.warning("event=web_refused ip=%s reason=unknown_host host=%r", self._ip(request),
                           (request.getHeader(b"host") or b"")[:100].decode("latin-1"))
            request.setResponseCode(421)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return (b"421 Misdirected Request: this Host is not one of this server's names "
                    b"(localhost, its addresses, web.hostnames)\n")
        if request.method == b"POST":
            why = self.access.cross_site(request)
            if why is not None:
                logger.warning("event=web_refused ip=%s reason=cross_site %s", self._ip(request), why)
                return self._finish(request, self._message(request, 403, "err_csrf"))
        route = self._routes.get(request.path)
        if route is None:
            mounted = self._mounted(request.path)      # the extra hook (see __init__)
            if mounted is not None:
                return mounted.render(request)
            return self._finish(request, self._message(request, 404, "not_found"))
        methods, handler = route
        if request.method not in methods:
            request.setHeader(b"Allow", b", ".join(sorted(methods)))
            return self._finish(request, self._message(request, 405, "err_generic"))
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _f: gone.append(True))
        d = defer.maybeDeferred(handler, request)
        d.addErrback(self._crashed, request)
        d.addCallback(lambda reply: None if gone else self._finish(request, reply, write=True))
        d.addErrback(lambda f: logger.error("event=web_error error=%r", f.getErrorMessage()))
        return server.NOT_DONE_YET

    def _mounted(self, path: bytes):
        best = None
        for key, res in self.extra.items():
            k = key.encode() if isinstance(key, str) else key
            if (path == k or path.startswith(k if k.endswith(b"/") else k + b"/")) and (
                    best is None or len(k) > best[0]):
                best = (len(k), res)
        return None if best is None else best[1]

    def _crashed(self, failure, request) -> _Reply:
        logger.error("event=web_error path=%r error=%r", request.path[:100], failure.getErrorMessage())
        return self._message(request, 500, "err_internal")

    def _finish(self, request, reply: _Reply, write: bool = False):
        request.setResponseCode(reply.code)
        request.setHeader(b"Content-Type", reply.ctype)
        if reply.private:
            request.setHeader(b"Cache-Control", b"no-store")
            request.setHeader(b"Vary", b"Cookie, Accept-Language")
        if reply.location:
            request.setHeader(b"Location", reply.location.encode("ascii"))
        if reply.retry_after:
            request.setHeader(b"Retry-After", b"%d" % reply.retry_after)
        if not write:
            return reply.body
        request.setHeader(b"Content-Length", b"%d" % len(reply.body))
        if request.method != b"HEAD":
            request.write(reply.body)
        request.finish()
        return None

    # -- helpers -----------------------------------------------------------------------
    def _cookie(self, request, name: str, value: str, *, max_age: int | None = None) -> None:
        https = self.access.https(request)
        p = "__Host-" if https else ""     # __Host-: Secure, Path=/, no Domain -- cannot be set by a subdomain
        parts = [f"{p}{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        if https:
            parts.append("Secure")
        request.responseHeaders.addRawHeader(b"Set-Cookie", "; ".join(parts).encode("ascii"))

    def _get_cookie(self, request, name: str) -> str | None:
        p = "__Host-" if self.access.https(request) else ""
        raw = request.getCookie((p + name).encode())
        if not raw:
            return None
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            return None

    def _lang(self, request, form: dict[str, str] | None = None) -> str:
        chosen = i18n.normalize((request.args.get(b"lang") or [None])[0])
        if chosen:
            self._cookie(request, LANG_COOKIE, chosen, max_age=365 * 86400)
            return chosen
        return (i18n.normalize((form or {}).get("lang"))
                or i18n.normalize(self._get_cookie(request, LANG_COOKIE))
                or i18n.from_accept_language(request.getHeader(b"accept-language")))

    def _ip(self, request) -> str:
        return self.access.client_ip(request)

    def _csrf_for(self, cookie: str) -> str:
        return hmac.new(self._key, b"csrf\0" + cookie.encode(), hashlib.sha256).hexdigest()

    def _csrf_cookie(self, request) -> str:
        """This browser's CSRF cookie (set now if it has none); the form carries its signature."""
        value = self._get_cookie(request, CSRF_COOKIE)
        if not value or len(value) != 43 or not value.replace("-", "").replace("_", "").isalnum():
            value = secrets.token_urlsafe(32)
            self._cookie(request, CSRF_COOKIE, value)
        return value

    def _csrf_ok(self, request, form: dict[str, str]) -> bool:
        cookie = self._get_cookie(request, CSRF_COOKIE)
        given = form.get("csrf", "")
        if not cookie or not given:
            return False
        return hmac.compare_digest(self._csrf_for(cookie).encode(), given.encode("utf-8", "replace"))

    def _session(self, request) -> tuple[str | None, Session | None]:
        """The session; the page's own reloads (``?auto=1``) do not keep it alive, the employee's requests do."""
        token = self._get_cookie(request, SESSION_COOKIE)
        return token, self.sessions.get(token, touch=request.args.get(AUTO.encode()) is None)

    @staticmethod
    def _read_form(request) -> dict[str, str] | None:
        """The urlencoded POST body as {name: first value}; None when it is not one."""
        ctype = (request.getHeader(b"content-type") or b"").decode("latin-1").split(";", 1)[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return None
        request.content.seek(0)
        body = request.content.read(MAX_BODY + 1)
        try:
            parsed = parse_qs(body.decode("ascii"), keep_blank_values=True, strict_parsing=False,
                              encoding="utf-8", errors="strict", max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            return None
        return {k: v[0] for k, v in parsed.items()}

    def _rename_allowed_somewhere(self) -> bool:
        return any(d.allows(PLAN) and d.allow_rename for d in self.daemon.current().domains.values())

    def _blocking(self, fn, *args):
        return threads.deferToThreadPool(self.reactor, self.daemon.state_pool, fn, *args)

    # -- pages -------------------------------------------------------------------------
    def _page(self, lang: str, title: str, body: str, *, switch_to: str, refresh: bool = False) -> bytes:
        other = "zh" if lang == "en" else "en"
        head_refresh = (f'<meta http-equiv="refresh" content="{REFRESH_SECONDS};url=/progress?{AUTO}=1">'
                        if refresh else "")
        doc = (
            "<!DOCTYPE html>\n"
            f'<html lang="{i18n.HTML_LANG[lang]}"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="referrer" content="no-referrer">'
            f"{head_refresh}<title>{esc(title)}</title>"
            '<link rel="stylesheet" href="/static/style.css"></head><body><main>'
            f'<header><h1>{esc(title)}</h1>'
            f'<a href="{esc(switch_to)}?lang={other}" hreflang="{i18n.HTML_LANG[other]}" '
            f'lang="{i18n.HTML_LANG[other]}">{esc(t(lang, "switch"))}</a></header>'
            f"{body}</main></body></html>\n")
        return doc.encode("utf-8")

    def _message(self, request, code: int, key: str) -> _Reply:
        lang = self._lang(request)
        body = (f'<p class="error" role="alert">{esc(t(lang, key))}</p>'
                f'<p><a href="/">{esc(t(lang, "back"))}</a></p>')
        return _Reply(code, self._page(lang, t(lang, "title"), body, switch_to="/"))

    def _form_page(self, request, lang: str, *, error: str | None = None, address: str = "",
                   new_address: str = "", code: int = 200, retry_after: int | None = None,
                   error_text: str | None = None) -> _Reply:
        csrf = self._csrf_for(self._csrf_cookie(request))
        parts = [f'<p>{esc(t(lang, "intro"))}</p>']
        if error:
            parts.append(f'<p class="error" role="alert">{esc(error_text or t(lang, error))}</p>')
        parts.append(
            '<form method="post" action="/start" autocomplete="on">'
            f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
            f'<input type="hidden" name="lang" value="{esc(lang)}">'
            f'<label for="address">{esc(t(lang, "old_address"))}</label>'
            f'<input type="text" inputmode="email" id="address" name="address" value="{esc(address)}" '
            'autocomplete="username" autocapitalize="none" spellcheck="false" required maxlength="254">'
            f'<label for="password">{esc(t(lang, "old_password"))}</label>'
            '<input type="password" id="password" name="password" autocomplete="current-password" '
            'required maxlength="1024">')
        if self._rename_allowed_somewhere():
            parts.append(
                f'<label for="new_address">{esc(t(lang, "new_address"))}</label>'
                f'<input type="text" inputmode="email" id="new_address" name="new_address" '
                f'value="{esc(new_address)}" autocomplete="off" autocapitalize="none" spellcheck="false" '
                f'maxlength="254" aria-describedby="new_address_note">'
                f'<p class="note" id="new_address_note">{esc(t(lang, "new_address_note"))}</p>')
        parts.append(f'<button type="submit">{esc(t(lang, "submit"))}</button></form>'
                     f'<p class="note">{esc(t(lang, "privacy"))}</p>')
        return _Reply(code, self._page(lang, t(lang, "title"), "".join(parts), switch_to="/"),
                      retry_after=retry_after)

    def _form(self, request) -> _Reply:
        return self._form_page(request, self._lang(request))

    def _healthz(self, request) -> _Reply:
        return _Reply(200, b"ok\n", b"text/plain; charset=utf-8")

    def _style(self, request) -> _Reply:
        request.setHeader(b"Cache-Control", b"public, max-age=3600")
        return _Reply(200, assets.STYLE_CSS, b"text/css; charset=utf-8", private=False)

    # -- POST /start -------------------------------------------------------------------
    async def _start(self, request) -> _Reply:
        ip = self._ip(request)
        form = self._read_form(request)
        if form is None:
            return self._message(request, 400, "err_generic")
        lang = self._lang(request, form)
        if not self._csrf_ok(request, form):
            self.counts["csrf_refused"] += 1
            logger.warning("event=selfservice_csrf_refused ip=%s", ip)
            return self._form_page(request, lang, error="err_csrf", code=403)
        old = form.get("address", "").strip().lower()
        new = form.get("new_address", "").strip().lower() or old
        password = form.pop("password", "")
        form.clear()
        keep = {"address": old[:254], "new_address": new[:254] if new != old else ""}
        if not old or not password:
            return self._form_page(request, lang, error="err_missing", **keep)
        rename = new != old
        cfg = self.daemon.current()
        try:
            domain = cfg.domain_for(new)
        except (UnknownDomain, ValueError):
            domain = None
        # Not secrets (they depend on the domain only), so the employee may be told.
        kind = None
        if domain is not None and not domain.allows(PLAN):
            kind = "err_not_enabled"
        elif domain is not None and rename and not domain.allow_rename:
            kind = "err_rename"
        elif domain is not None and self.daemon.scheduler.is_cut_over(domain.name):
            kind = "err_cut_over"
        elif domain is not None and rename:
            conflict = await self._rename_conflict(ip, old, new)
            if conflict is not None:
                self.counts["failed"] += 1
                logger.warning("event=selfservice_failed ip=%s user=%s source=%s reason=%r", ip,
                               field(new), field(old), conflict)
                return self._form_page(request, lang, error="err_rename_taken", **keep)
        verdict = await self.daemon.gate.authenticate(ip, new, password, plan=PLAN,
                                                      source_address=old if rename else None)
        del password
        if verdict.ok:
            self.counts["started"] += 1
            old_token = self._get_cookie(request, SESSION_COOKIE)
            self.sessions.drop(old_token)
            token, _ = self.sessions.create(verdict.address)
            self._cookie(request, SESSION_COOKIE, token)
            logger.info("event=selfservice_start ip=%s user=%s%s", ip, verdict.address,
                        f" source={field(old)}" if rename else "")
            return _Reply(303, b"", location="/progress")
        self.counts["failed"] += 1
        logger.warning("event=selfservice_failed ip=%s user=%s reason=%r", ip, verdict.address, verdict.reason)
        code, retry, text = 200, None, None
        if kind is None:
            if verdict.throttled:
                kind, code, retry = "err_throttled", 429, 60
            elif verdict.unavailable:
                kind = "err_unavailable"
            else:
                kind = "err_credentials"
                if verdict.hint == quirks.APP_PASSWORD and domain is not None:
                    # the old server's own words asked for it: say which password, in the user's language
                    text = quirks.web_refusal(domain.source, lang, t(lang, "err_app_password")) or None
        return self._form_page(request, lang, error=kind, code=code, retry_after=retry, error_text=text, **keep)

    async def _rename_conflict(self, ip: str, old: str, new: str) -> str | None:
        """A new address may only be paired with the old one the admin imported for it.

        Otherwise anyone with any old account could claim anybody's new mailbox.  The check runs
        before the password is known, so a refusal spends a throttle token and waits out the
        failure delay like a wrong password: it must not become a fast way to list accounts.
        """
        row = await self._blocking(self.daemon.store.account, new)
        if row is not None and row.get("source_address") == old:
            return None
        throttle = self.daemon.gate.throttle
        # the IP's bucket, not the address's: probing must not lock the real owner out
        throttle.may_ask_source(ip, "rename-check:" + new)
        await task.deferLater(self.reactor, throttle.failed(ip), lambda: None)
        if row is None:
            return f"no rename from {old} to {new} was imported by the administrator"
        return f"{new} is already migrated from another old address"

    # -- POST /logout ------------------------------------------------------------------
    def _logout(self, request) -> _Reply:
        token, sess = self._session(request)
        form = self._read_form(request) or {}
        if sess is None:
            return _Reply(303, b"", location="/")
        if not hmac.compare_digest(sess.csrf.encode(), form.get("csrf", "").encode("utf-8", "replace")):
            logger.warning("event=selfservice_csrf_refused ip=%s what=logout", self._ip(request))
            return self._message(request, 403, "err_csrf")
        self.sessions.drop(token)
        self._cookie(request, SESSION_COOKIE, "", max_age=0)
        logger.info("event=selfservice_logout ip=%s user=%s", self._ip(request), sess.who)
        return _Reply(303, b"", location="/")

    # -- GET /progress -----------------------------------------------------------------
    async def _progress(self, request) -> _Reply:
        token, sess = self._session(request)
        if sess is None:
            if token:
                self._cookie(request, SESSION_COOKIE, "", max_age=0)
            return _Reply(303, b"", location="/")
        lang = self._lang(request)
        address = sess.who
        data = await self._blocking(_read_progress, self.daemon.store, address)
        live = self.daemon.scheduler.progress(address)
        body = _render_progress(lang, address, data, live, sess.csrf)
        return _Reply(200, self._page(lang, t(lang, "progress_title"), body, switch_to="/progress", refresh=True))


# ---------------------------------------------------------------------------- progress rendering

def _read_progress(store, address: str) -> dict:
    skipped = store.skipped(address)
    return {"account": store.account(address), "reports": store.reports(address),
            "counts": store.account_counts(address), "last_pass": store.last_pass(address),
            "folders": store.folders(address), "skipped": skipped[:SKIPPED_SHOWN],
            "skipped_total": len(skipped)}


def _current_folders(live) -> set[str]:
    """The folders a running pass works on (a set the sync threads change under their lock)."""
    if live is None:
        return set()
    lock = getattr(live, "_lock", None)
    if lock is None:
        return set(live.current)
    with lock:
        return set(live.current)


def _size(n: int | None) -> str:
    from ..status import size_text
    return size_text(n)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts)) if ts else ""


def _render_progress(lang: str, address: str, data: dict, live, csrf: str) -> str:
    acct = data["account"] or {}
    reports = data["reports"]
    mapped, _nbytes, skipped_n = data["counts"]
    from ..status import phase_of, size_text
    phase = phase_of({**acct, "has_password": True}, live is not None)   # signed in: the password is stored
    out = ['<dl>',
           f'<dt>{esc(t(lang, "mailbox"))}</dt><dd>{esc(address)}</dd>']
    if acct.get("source_address"):
        out.append(f'<dt>{esc(t(lang, "copied_from"))}</dt><dd>{esc(acct["source_address"])}</dd>')
    out.append(f'<dt>{esc(t(lang, "status"))}</dt><dd class="phase-{esc(phase)}">{esc(t(lang, "phase_" + phase))}</dd>')
    last = data["last_pass"]
    last_text = _when(last["finished"]) if last and last.get("finished") else t(lang, "never")
    out.append(f'<dt>{esc(t(lang, "last_pass"))}</dt><dd>{esc(last_text)}</dd></dl>')

    # the overall bar: the running pass when there is one, else what the store knows
    if live is not None and live.total:
        done, total = min(live.done, live.total), live.total
        label = t(lang, "overall_pass", done=f"{done:,}", total=f"{total:,}", size=size_text(live.bytes))
    else:
        total = sum(r.source_count or 0 for r in reports) or \
            sum(f.messages or 0 for f in data["folders"].values())
        done = min(mapped, total)
        label = t(lang, "overall", done=f"{done:,}", total=f"{total:,}") if total else ""
    if total:
        out.append(f'<p><progress id="overall" value="{done}" max="{total}">{done}/{total}</progress>'
                   f'<br><span class="overall">{esc(label)}</span></p>')
    elif live is not None or (acct.get("phase") or "new") == "new":
        out.append(f'<p><progress id="overall"></progress><br>{esc(t(lang, "counting"))}</p>')
    if skipped_n:
        out.append(f'<p>{esc(t(lang, "skipped_count", n=f"{skipped_n:,}"))}</p>')
    if phase == "failed":
        out.append(f'<p class="error">{esc(t(lang, "failed_note"))}</p>')

    # per folder
    active = _current_folders(live)
    rows = {r.path: r for r in reports}
    out.append(f'<h2>{esc(t(lang, "folders"))}</h2>')
    paths = sorted(set(rows) | active)
    if not paths:
        out.append(f'<p class="muted">{esc(t(lang, "no_folders"))}</p>')
    else:
        out.append('<table><thead><tr>'
                   f'<th>{esc(t(lang, "col_folder"))}</th><th class="num">{esc(t(lang, "col_old"))}</th>'
                   f'<th class="num">{esc(t(lang, "col_new"))}</th>'
                   f'<th class="num opt">{esc(t(lang, "col_skipped"))}</th>'
                   f'<th>{esc(t(lang, "col_state"))}</th></tr></thead><tbody>')
        for path in paths:
            r = rows.get(path)
            if path in active:
                state = "folder_active"
            elif r is None:
                state = "folder_waiting"
            else:
                state = "folder_error" if r.error else "folder_ok"
            shown = path if r is None or r.target_name in (path, None) else f"{path} → {r.target_name}"

            def num(v):
                return "" if v is None else f"{v:,}"

            out.append(f'<tr><td class="path">{esc(shown)}</td>'
                       f'<td class="num">{num(r.source_count) if r else ""}</td>'
                       f'<td class="num">{num(r.target_count) if r else ""}</td>'
                       f'<td class="num opt">{num(r.skipped) if r else ""}</td>'
                       f'<td>{esc(t(lang, state))}</td></tr>')
        out.append('</tbody></table>')

    # skipped messages, with the reasons
    if data["skipped"]:
        out.append(f'<h2>{esc(t(lang, "skipped_title"))}</h2><table><thead><tr>'
                   f'<th>{esc(t(lang, "col_folder"))}</th><th class="num">{esc(t(lang, "col_size"))}</th>'
                   f'<th>{esc(t(lang, "col_reason"))}</th></tr></thead><tbody>')
        for path, _uid, size, reason in data["skipped"]:
            out.append(f'<tr><td class="path">{esc(path)}</td><td class="num">{esc(_size(size))}</td>'
                       f'<td>{esc(reason)}</td></tr>')
        out.append('</tbody></table>')
        more = data["skipped_total"] - len(data["skipped"])
        if more > 0:
            out.append(f'<p class="muted">{esc(t(lang, "skipped_more", n=f"{more:,}"))}</p>')

    out.append(f'<p class="note">{esc(t(lang, "refresh_note"))}</p>'
               '<form method="post" action="/logout">'
               f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
               f'<button type="submit" class="secondary">{esc(t(lang, "logout"))}</button></form>')
    return "".join(out)


# ---------------------------------------------------------------------------- wiring

def make_site(daemon, *, tls: bool = False) -> server.Site:
    """The self-service site for ``daemon`` (a mailsyncd.daemon.Daemon): gate, scheduler, store, state_pool.

    ``tls`` is not needed any more: whether a request came over HTTPS is decided per request (access.py)."""
    page = SelfService(daemon, Access(daemon))
    site = _Site(page, requestFactory=_Request, timeout=CONNECTION_TIMEOUT, parsePOSTFormSubmission=False)
    from . import api           # the extra hook: mounts /api/ and /metrics on page.extra
    api.mount(page, daemon)
    from . import admin         # the dashboard: page.extra[b"/admin"] (admin.session_ok is used by /api/)
    admin.mount(page, daemon)
    logger.info("event=web_sessions idle=%gs max=%gs", *page.sessions.ages())
    return site
