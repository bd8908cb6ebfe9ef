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
* ``GET /static/style.css`` the only stylesheet, ``GET /static/localtime.js`` the only script (times in
  the viewer's zone); the CSP allows nothing inline.

Sessions live in the store (web/sessions.py: any node on the same database accepts them, and a
restart signs nobody out): a random 32-byte token in an HttpOnly, SameSite=Strict cookie
(``Secure`` and the ``__Host-`` prefix over HTTPS, direct or behind a trusted proxy's
``X-Forwarded-Proto: https``, which also adds HSTS), stored server-side as its SHA-256 with the address only.  They end after ``web.session_idle`` seconds
without an action of the employee (default 30 min; the page's own reloads do not count) or
``web.session_max`` after sign-in (default 8 h), whatever happens.

Every request's Host must be known (access.py; else 421) and every POST must come from our own pages
(``Sec-Fetch-Site``/``Origin``; else 403).  Connections are capped per client address and in total,
and a request must arrive whole within ``web.request_timeout`` (slow clients are cut off).

Passwords arrive only in POST bodies (at most ``MAX_BODY`` bytes, kept in memory, never in a
temporary file), are handed to the gate and dropped; they are never logged, echoed or put in a URL.
Store reads and writes (sessions included) block: they run in the daemon's ``state`` thread pool.
"""

from __future__ import annotations


from __future__ import annotations

import logging

from twisted.internet import task

from ..providers import quirks
from ..config import UnknownDomain
from ..text import field
from . import assets
from .access import Access
from .i18n import t
from .pages import selfservice as html
from .sessions import Session, Sessions
from .site import AUTO, Reply, Shell, SignedCsrf, read_form, redirect, same_token

logger = logging.getLogger("mailsyncd.web")

MAX_SESSIONS = 20_000          # beyond this the least recently used sessions end first
SESSIONS_PER_USER = 10         # one address's sessions at once: signing in again and again ends only its own
SKIPPED_SHOWN = 100
PLAN = "self_service"
SESSION_COOKIE, CSRF_COOKIE = "mailsyncd-session", "mailsyncd-csrf"
CSP = (b"default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; "
       b"frame-ancestors 'none'")


def _printable(text: str) -> str:
    return "".join(c for c in text if ord(c) >= 0x20 and ord(c) != 0x7f)


class SelfService(Shell):
    """The employees' pages: everything of the web listener that is not mounted elsewhere (web/app.py)."""

    csp = CSP
    unchecked_host = (b"/healthz",)

    def __init__(self, daemon, access: Access, *, idle: float | None = None, max_age: float | None = None):
        super().__init__(daemon, access)

        def ages() -> tuple[float, float]:
            web = daemon.current().web
            return (idle if idle is not None else web.session_idle,
                    max_age if max_age is not None else web.session_max)

        self.sessions = Sessions(daemon.store, "self", self.reactor.seconds, ages, MAX_SESSIONS,
                                 per_who=SESSIONS_PER_USER)
        self.csrf = SignedCsrf(self, CSRF_COOKIE, b"csrf", daemon.store.web_key("csrf"))
        self.counts = {"started": 0, "failed": 0, "csrf_refused": 0}
        self._routes = {
            b"/": ({b"GET", b"HEAD"}, self._form_get),
            b"/start": ({b"POST"}, self._start),
            b"/progress": ({b"GET", b"HEAD"}, self._progress),
            b"/logout": ({b"POST"}, self._logout),
            b"/healthz": ({b"GET", b"HEAD"}, self._healthz),
            b"/static/style.css": ({b"GET", b"HEAD"}, self._style),
            b"/static/localtime.js": ({b"GET", b"HEAD"}, self._script),
        }

    def handle(self, request):
        route = self._routes.get(request.path)
        if route is None:
            return self.message(request, 404, "not_found")
        methods, handler = route
        if request.method not in methods:
            return self.not_allowed(request, b", ".join(sorted(methods)))
        return handler(request)

    def message(self, request, code: int, key: str) -> Reply:
        return Reply(code, html.message(self.lang(request), key))

    async def _session(self, request) -> tuple[str | None, Session | None]:
        """The session; the page's own reloads (``?auto=1``) do not keep it alive, the employee's requests do."""
        token = self.get_cookie(request, SESSION_COOKIE)
        if not token:
            return token, None
        touch = request.args.get(AUTO.encode()) is None
        return token, await self.blocking(lambda: self.sessions.get(token, touch=touch))

    def _form(self, request, lang: str, *, code: int = 200, retry_after: int | None = None, **kw) -> Reply:
        rename = any(d.allows(PLAN) and d.allow_rename for d in self.daemon.current().domains.values())
        return Reply(code, html.form_page(lang, self.csrf.token(request), rename=rename, **kw),
                     retry_after=retry_after)

    def _form_get(self, request) -> Reply:
        return self._form(request, self.lang(request))

    def _healthz(self, request) -> Reply:
        return Reply(200, b"ok\n", b"text/plain; charset=utf-8")

    def _style(self, request) -> Reply:
        return Reply(200, assets.STYLE_CSS, b"text/css; charset=utf-8", cache=b"public, max-age=3600")

    def _script(self, request) -> Reply:
        return Reply(200, assets.LOCAL_TIME_JS, b"text/javascript; charset=utf-8", cache=b"public, max-age=3600")

    # -- POST /start -------------------------------------------------------------------
    async def _start(self, request) -> Reply:
        ip = self.ip(request)
        form = read_form(request)
        if form is None:
            return self.message(request, 400, "err_generic")
        lang = self.lang(request, form)
        if not self.csrf.ok(request, form):
            self.counts["csrf_refused"] += 1
            logger.warning("event=selfservice_csrf_refused ip=%s", ip)
            return self._form(request, lang, error="err_csrf", code=403)
        old = form.get("address", "").strip().lower()
        new = form.get("new_address", "").strip().lower() or old
        password = form.pop("password", "")
        form.clear()
        keep = {"address": _printable(old)[:254], "new_address": _printable(new)[:254] if new != old else ""}
        # a control character is in no address (the gate refuses it); PostgreSQL refuses a NUL outright
        plausible = _printable(old + new) == old + new
        if not old or not password:
            return self._form(request, lang, error="err_missing", **keep)
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
        elif domain is not None and rename and plausible:
            conflict = await self._rename_conflict(ip, old, new)
            if conflict is not None:
                self.counts["failed"] += 1
                logger.warning("event=selfservice_failed ip=%s user=%s source=%s reason=%r", ip,
                               field(new), field(old), conflict)
                return self._form(request, lang, error="err_rename_taken", **keep)
        verdict = await self.daemon.gate.authenticate(ip, new, password, plan=PLAN,
                                                      source_address=old if rename else None)
        del password
        if verdict.ok:
            self.counts["started"] += 1
            old_token = self.get_cookie(request, SESSION_COOKIE)
            await self.blocking(self.sessions.drop, old_token)
            token, _ = await self.blocking(self.sessions.create, verdict.address)
            self.set_cookie(request, SESSION_COOKIE, token)
            logger.info("event=selfservice_start ip=%s user=%s%s", ip, verdict.address,
                        f" source={field(old)}" if rename else "")
            return redirect("/progress")
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
        return self._form(request, lang, error=kind, code=code, retry_after=retry, error_text=text, **keep)

    async def _rename_conflict(self, ip: str, old: str, new: str) -> str | None:
        """A new address may only be paired with the old one the admin imported for it.

        Otherwise anyone with any old account could claim anybody's new mailbox.  The check runs
        before the password is known, so a refusal spends a throttle token and waits out the
        failure delay like a wrong password: it must not become a fast way to list accounts.
        """
        row = await self.blocking(self.daemon.store.account, new)
        if row is not None and row.get("source_address") == old:
            return None
        throttle = self.daemon.gate.throttle
        # the IP's bucket, not the address's: probing must not lock the real owner out
        await self.blocking(throttle.may_ask_source, ip, "rename-check:" + new)
        await task.deferLater(self.reactor, await self.blocking(throttle.failed, ip), lambda: None)
        if row is None:
            return f"no rename from {old} to {new} was imported by the administrator"
        return f"{new} is already migrated from another old address"

    # -- POST /logout ------------------------------------------------------------------
    async def _logout(self, request) -> Reply:
        token, sess = await self._session(request)
        form = read_form(request) or {}
        if sess is None:
            return redirect("/")
        if not same_token(sess.csrf, form):
            logger.warning("event=selfservice_csrf_refused ip=%s what=logout", self.ip(request))
            return self.message(request, 403, "err_csrf")
        await self.blocking(self.sessions.drop, token)
        self.set_cookie(request, SESSION_COOKIE, "", max_age=0)
        logger.info("event=selfservice_logout ip=%s user=%s", self.ip(request), sess.who)
        return redirect("/")

    # -- GET /progress -----------------------------------------------------------------
    async def _progress(self, request) -> Reply:
        token, sess = await self._session(request)
        if sess is None:
            if token:
                self.set_cookie(request, SESSION_COOKIE, "", max_age=0)
            return redirect("/")
        lang = self.lang(request)
        address = sess.who
        data = await self.blocking(_read_progress, self.daemon.store, address)
        live = self.daemon.scheduler.progress(address)
        watch = self.daemon.watches.view().get(address)
        body = html.progress(lang, address, data, live, sess.csrf, watch)
        return Reply(200, html.page(lang, t(lang, "progress_title"), body, switch_to="/progress", refresh=True))


def _read_progress(store, address: str) -> dict:
    skipped = store.skipped(address)
    return {"account": store.account(address), "reports": store.reports(address),
            "counts": store.account_counts(address), "last_pass": store.last_pass(address),
            "folders": store.folders(address), "skipped": skipped[:SKIPPED_SHOWN],
            "skipped_total": len(skipped)}
