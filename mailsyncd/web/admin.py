"""The admin dashboard at ``/admin`` (on ``listen.http``; HTTPS when the config has a ``tls:`` section).

Mounted at /admin by web/app.py; the HTML is built in web/pages/ (dashboard.py, accounts.py), the
throughput samples are kept by web/samples.py.

Routes (server-rendered HTML, English or Chinese by ``Accept-Language``, switch with ``?lang=en|zh``):

* ``GET  /admin``                      overview: per domain, accounts by phase, messages on the new
                                       server of those at the source (a bar), skipped, ETA, cutover with
                                       its actions, and the throughput over time (a chart)
* ``GET  /admin/accounts``             the accounts of a filter, 100 a page in address order, with the
                                       filter's totals by phase: ``q`` (substring of the address), ``phase``,
                                       ``domain``, ``cursor`` (the next page's link); 400 for a bad one
* ``GET  /admin/accounts/<address>``   one account: folders, skipped messages and why, recent passes, errors
* ``POST /admin/action``               ``action=sync_now|retry`` (an address) or
                                       ``postpone|cutover_now|cancel_cutover`` (a domain); CSRF-checked,
                                       logged as ``event=admin_action``; answers 303 back to the page,
                                       which shows what was done
* ``GET  /admin/status.json``          ``Daemon.status()`` (schema 1; the filters and page of /api/status,
                                       or ``accounts=none``): what the pages' script polls every 5 s
* ``GET  /admin/series.json``          throughput samples kept in memory: every domain's messages on
                                       the new server every 10 s, the last hour
* ``GET|POST /admin/login``, ``POST /admin/logout``
* ``GET  /admin/static/<file>``        the script, the stylesheet and the vendored chart library
                                       (uPlot 1.6.32, MIT, from the npm package ``uplot``, unmodified)

Access (the rules live in access.py, shared with /api/ and /metrics):

* ``admin.password_hash`` set: user ``admin`` signs in at /admin/login; the password is checked with
  argon2 in the daemon's auth pool after a token from the one admin throttle per client IP (HTTP Basic
  on /api/ spends from the same bucket).  The session is a random 32-byte token in an HttpOnly,
  SameSite=Strict cookie (``Secure`` and ``__Host-`` over HTTPS, also behind a trusted proxy's
  ``X-Forwarded-Proto: https``), kept server-side as its SHA-256; it ends after ``web.session_idle``
  without a page view or an action (the 5 s polls and the <noscript> reloads, marked ``auto=1``, do not
  count), after ``web.session_max``, at sign-out, or when the password hash changes.
* unset: only clients on this machine (127.0.0.0/8, ::1) -- not through a proxy that is not in
  ``web.trusted_proxies``, which would make every remote client look local.  Others get 403 and a
  page that says how to set a password (``mailsyncctl hash-password``).

Every action is a POST with the session's CSRF token (compared in constant time).  The pages work
without JavaScript (a <noscript> refresh, a server-drawn sparkline); with it, ``admin.js`` updates
the numbers, bars and charts in place.  The CSP allows scripts, styles and fetches from this origin
only: no inline script or style anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from urllib.parse import unquote, urlencode

from .. import cutover, migration_report, nodes
from ..text import field, json_text
from .access import Access
from .i18n import w
from .pages import accounts as accounts_html
from .pages import dashboard
from ..statusquery import Query, QueryError
from .api import status_query
from .pages.dashboard import FAILED_SHOWN, POSTPONE_HOURS, Ctx
from .pages.format import when
from .samples import Throughput
from .sessions import Session, Sessions
from .site import AUTO, Reply, Shell, SignedCsrf, arg, plain, read_form, redirect, same_token

logger = logging.getLogger("mailsyncd.web")

SKIPPED_SHOWN = 200
PASSES_SHOWN = 10
MAX_SESSIONS = 1000
SESSION_COOKIE, LOGIN_COOKIE = "mailsyncd-admin", "mailsyncd-admin-login"   # no __Host- here: see set_cookie
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_FILES = {                # name -> content type; nothing else is served from the folder
    "admin.js": b"text/javascript; charset=utf-8",
    "admin.css": b"text/css; charset=utf-8",
    "uPlot.iife.min.js": b"text/javascript; charset=utf-8",
    "uPlot.min.css": b"text/css; charset=utf-8",
    "uPlot.LICENSE": b"text/plain; charset=utf-8",
    "favicon.svg": b"image/svg+xml",
}
CSP = (b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
GET, POST = (b"GET", b"HEAD"), (b"POST",)


def json_reply(code: int, doc) -> Reply:
    return Reply(code, json_text(doc, separators=(",", ":")).encode("utf-8"), b"application/json; charset=utf-8")


class Admin(Shell):
    csp = CSP

    def __init__(self, daemon, access: Access, throughput: Throughput):
        super().__init__(daemon, access)
        self.throughput = throughput
        self.sessions = Sessions(daemon.store, "admin", self.reactor.seconds,
                                 lambda: (daemon.current().web.session_idle, daemon.current().web.session_max),
                                 MAX_SESSIONS)
        self.login_csrf = SignedCsrf(self, LOGIN_COOKIE, b"login", daemon.store.web_key("csrf"))
        self.counts = {"logins": 0, "login_failures": 0, "actions": 0, "csrf_refused": 0}

    # -- dispatch ---------------------------------------------------------------------
    async def handle(self, request) -> Reply:
        path = request.path.split(b"?", 1)[0]
        method = request.method
        if path.startswith(b"/admin/static/"):
            return self._static(request, path) if method in GET else self.not_allowed(request, b"GET, HEAD")
        if path == b"/admin/login":
            if method in GET:
                return await self._login_page(request)
            return await self._login(request) if method in POST else self.not_allowed(request, b"GET, HEAD, POST")
        json_route = path.endswith(b".json")
        auto = request.args.get(AUTO.encode()) is not None
        ctx, refusal = await self._access(request, json_route=json_route, touch=not (json_route or auto))
        if refusal is not None:
            return refusal
        if path.startswith(b"/admin/accounts/"):
            methods, page = GET, self._account
        else:
            methods, page = {
                b"/admin": (GET, self._overview), b"/admin/": (GET, self._overview),
                b"/admin/accounts": (GET, self._accounts), b"/admin/status.json": (GET, self._status_json),
                b"/admin/series.json": (GET, self._series_json), b"/admin/report": (GET, self._report),
                b"/admin/action": (POST, self._action), b"/admin/logout": (POST, self._logout),
            }.get(path, (None, None))
        if page is None:
            return self.message(request, 404, "not_found")
        if method not in methods:
            return self.not_allowed(request, b", ".join(methods))
        return await page(request, ctx)

    def message(self, request, code: int, key: str) -> Reply:
        return Reply(code, dashboard.message(request, self.lang(request), key))

    # -- who is asking ----------------------------------------------------------------
    def _who(self) -> str:
        password_hash = self.daemon.current().admin.password_hash
        if not password_hash:
            return "loopback"
        return "admin:" + hashlib.sha256(password_hash.encode()).hexdigest()[:16]

    async def _valid_session(self, request, *, touch: bool, take_flash: bool = False
                             ) -> tuple[str | None, Session | None]:
        token = self.get_cookie(request, SESSION_COOKIE)
        if not token:
            return token, None
        s = await self.blocking(lambda: self.sessions.get(token, touch=touch, take_flash=take_flash))
        if s is None or not hmac.compare_digest(s.who, self._who()):
            return token, None
        if s.who == "loopback" and not self.access.local(request):
            return token, None
        return token, s

    async def session_ok(self, request) -> bool:
        """A live dashboard session comes with ``request`` (for /api/: the dashboard's browser may use it).
        Does not count as activity for the idle timeout."""
        return (await self._valid_session(request, touch=False))[1] is not None

    async def _access(self, request, *, json_route: bool, touch: bool) -> tuple[Ctx | None, Reply | None]:
        lang = self.lang(request)
        password_hash = self.daemon.current().admin.password_hash
        token, s = await self._valid_session(request, touch=touch, take_flash=not json_route)
        if password_hash:
            if s is None:
                if json_route:
                    return None, json_reply(401, {"error": "sign in at /admin/login"})
                here = request.uri.decode("ascii", "replace")
                return None, redirect("/admin/login?" + urlencode({"next": safe_back(here)}))
            return Ctx(lang, s, True), None
        if not self.access.local(request):
            logger.warning("event=admin_refused ip=%s reason=not_loopback path=%s", self.ip(request),
                           request.path[:60].decode("latin-1"))
            if json_route:
                return None, json_reply(403, {"error": "no admin.password_hash set: this machine (loopback) only"})
            return None, Reply(403, dashboard.forbidden(request, lang))
        if s is None:
            token, s = await self.blocking(self.sessions.create, "loopback")
            self.set_cookie(request, SESSION_COOKIE, token)
        return Ctx(lang, s, False), None


    # -- static files -----------------------------------------------------------------
    def _static(self, request, path: bytes) -> Reply:
        name = path[len(b"/admin/static/"):].decode("ascii", "replace")
        ctype = STATIC_FILES.get(name)
        if ctype is None:
            return self.message(request, 404, "not_found")
        with open(os.path.join(STATIC_DIR, name), "rb") as f:
            data = f.read()
        return Reply(200, data, ctype, cache=b"public, max-age=3600")

    # -- sign in / out ----------------------------------------------------------------
    def _login_form(self, request, lang: str, next_: str, error: str | None = None, *, code: int = 200,
                    retry_after: int | None = None) -> Reply:
        html = dashboard.login_form(request, lang, self.login_csrf.token(request), safe_back(next_), error)
        return Reply(code, html, retry_after=retry_after)

    async def _login_page(self, request) -> Reply:
        lang = self.lang(request)
        if not self.daemon.current().admin.password_hash:
            return redirect("/admin")
        next_ = safe_back(arg(request, b"next", 1000))
        if (await self._valid_session(request, touch=False))[1] is not None:
            return redirect(next_)
        return self._login_form(request, lang, next_)

    async def _login(self, request) -> Reply:
        lang = self.lang(request)
        password_hash = self.daemon.current().admin.password_hash
        form = read_form(request)
        if form is None:
            return self.message(request, 400, "err_generic")
        if not password_hash:
            return redirect("/admin")
        next_ = safe_back(form.get("next"))
        ip = self.ip(request)
        if not self.login_csrf.ok(request, form):
            self.counts["csrf_refused"] += 1
            logger.warning("event=admin_csrf_refused ip=%s what=login", ip)
            return self._login_form(request, lang, next_, "err_csrf", code=403)
        password = form.pop("password", "")
        form.clear()
        if not password:
            return self._login_form(request, lang, next_, "err_missing")
        verdict = await self.access.password(ip, password_hash, password, path="/admin/login")
        del password
        if verdict != "ok":
            self.counts["login_failures"] += 1
            logger.warning("event=admin_login_failed ip=%s reason=%s", ip,
                           "wrong_password" if verdict == "wrong" else verdict)
            if verdict == "throttled":
                return self._login_form(request, lang, next_, "err_throttled", code=429, retry_after=60)
            if verdict == "busy":
                return self._login_form(request, lang, next_, "err_throttled", code=503, retry_after=5)
            return self._login_form(request, lang, next_, "err_password")
        self.counts["logins"] += 1
        await self.blocking(self.sessions.drop, self.get_cookie(request, SESSION_COOKIE))
        token, _s = await self.blocking(self.sessions.create, self._who())
        self.set_cookie(request, SESSION_COOKIE, token)
        logger.info("event=admin_login ip=%s", ip)
        return redirect(next_)

    async def _logout(self, request, ctx: Ctx) -> Reply:
        form = read_form(request) or {}
        if not same_token(ctx.session.csrf, form):
            self.counts["csrf_refused"] += 1
            logger.warning("event=admin_csrf_refused ip=%s what=logout", self.ip(request))
            return self.message(request, 403, "err_csrf")
        await self.blocking(self.sessions.drop, self.get_cookie(request, SESSION_COOKIE))
        self.set_cookie(request, SESSION_COOKIE, "", max_age=0)
        logger.info("event=admin_logout ip=%s", self.ip(request))
        return redirect("/admin/login" if ctx.password else "/admin")

    # -- JSON -------------------------------------------------------------------------
    async def _status_json(self, request, ctx: Ctx) -> Reply:
        if arg(request, b"accounts") == "none":
            query = Query(domain=arg(request, b"domain").strip().lower() or None, limit=0)
        else:
            try:
                query = status_query(request)
            except QueryError as e:
                return json_reply(400, {"error": str(e)})
        if query.domain is not None and query.domain not in self.daemon.current().domains:
            return json_reply(404, {"error": "no such domain"})
        return json_reply(200, await self.daemon.status(query=query))

    # -- the pages --------------------------------------------------------------------
    async def _overview(self, request, ctx: Ctx) -> Reply:
        doc = await self.daemon.status(query=Query(limit=0))          # the totals: no account rows
        failed = await self.daemon.status(query=Query(phase="failed", limit=FAILED_SHOWN), totals=False)
        doc = dict(doc, accounts=failed["accounts"])
        cluster = await self.blocking(nodes.read_nodes, self.daemon.store, time.time())
        return Reply(200, dashboard.overview(request, ctx, doc, self.throughput.series(), cluster))

    async def _accounts(self, request, ctx: Ctx) -> Reply:
        domains = sorted(self.daemon.current().domains)
        try:
            query = status_query(request)
        except QueryError as e:
            return Reply(400, accounts_html.accounts_page(request, ctx, None, Query(), domains, str(e)))
        doc = await self.daemon.status(query=query)
        return Reply(200, accounts_html.accounts_page(request, ctx, doc, query, domains))

    async def _account(self, request, ctx: Ctx) -> Reply:
        path = request.path.split(b"?", 1)[0]
        address = unquote(path[len(b"/admin/accounts/"):].decode("ascii", "replace")).strip().lower()
        if not address or len(address) > 320 or not plain(address):
            return self.message(request, 404, "not_found")
        data = await self.blocking(read_account, self.daemon.store, address)
        if data["account"] is None:
            return self.message(request, 404, "not_found")
        doc = await self.daemon.status(user=address)
        a = next((x for x in doc["accounts"] if x["address"] == address), None)
        if a is None:
            return self.message(request, 404, "not_found")
        return Reply(200, accounts_html.account_page(request, ctx, a, data))

    async def _report(self, request, ctx: Ctx) -> Reply:
        """The customer's migration report (mailsyncctl report --html has the same body), ?domain=D."""
        domain = arg(request, b"domain", 253).strip().lower() or None
        if domain is not None and not plain(domain):
            return self.message(request, 400, "err_generic")
        model = await self.blocking(migration_report.build, self.daemon.store, domain)
        return Reply(200, dashboard.page(request, ctx, ctx.lang, w(ctx.lang, "report"),
                                         migration_report.html_body(model), nav="report"))

    async def _series_json(self, request, ctx: Ctx) -> Reply:
        return json_reply(200, self.throughput.series())

    # -- POST /admin/action -----------------------------------------------------------
    async def _action(self, request, ctx: Ctx) -> Reply:
        lang = ctx.lang
        ip = self.ip(request)
        form = read_form(request)
        if form is None:
            return self.message(request, 400, "err_generic")
        if not same_token(ctx.session.csrf, form):
            self.counts["csrf_refused"] += 1
            logger.warning("event=admin_csrf_refused ip=%s what=action", ip)
            return self.message(request, 403, "err_csrf")
        action = form.get("action", "")
        target = form.get("target", "").strip().lower()[:320]
        back = safe_back(form.get("back"))
        ok, text = await self._do(action, target, form, lang)
        self.counts["actions"] += 1
        logger.info("event=admin_action ip=%s action=%s target=%s result=%s", ip, field(action, 40),
                    field(target), "ok" if ok else "refused")
        await self.blocking(self.sessions.flash, ctx.session, "ok" if ok else "error", text)
        return redirect(back)

    async def _do(self, action: str, target: str, form: dict[str, str], lang: str) -> tuple[bool, str]:
        if action in ("sync_now", "retry"):
            if self.daemon.scheduler.sync_now(target):
                return True, w(lang, f"done_{action}", target=target)
            return False, w(lang, "refused_not_scheduled", target=target)
        cfg = self.daemon.current()
        if action not in ("postpone", "cutover_now", "cancel_cutover") or target not in cfg.domains:
            return False, w(lang, "refused_unknown")
        now = time.time()
        new_at = None
        if action == "cutover_now":
            if form.get("confirm") != "yes":
                return False, w(lang, "refused_confirm")
            new_at = now
        elif action == "postpone":
            at_text = form.get("at", "").strip()
            if at_text:
                new_at = parse_when(at_text)
                if new_at is None:
                    return False, w(lang, "refused_bad_time")
                if new_at <= now:
                    return False, w(lang, "refused_past")
            else:
                try:
                    hours = int(form.get("hours", ""))
                except ValueError:
                    hours = 0
                if hours not in POSTPONE_HOURS:
                    return False, w(lang, "refused_unknown")
                new_at = hours * 3600.0       # added to the current time in the state thread
        yaml_at = cfg.domains[target].cutover
        result = await self.blocking(change_cutover, self.daemon.store, target, action, new_at, yaml_at, now,
                                      bool(form.get("at", "").strip()))
        if result[0] != "ok":
            state = result[1]
            return False, w(lang, "refused_cut_state", target=target,
                            state=w(lang, f"cut_{state}", at=when(result[2], lang)) if state in ("final_pass", "done")
                            else state)
        if action == "postpone":
            return True, w(lang, "done_postpone", target=target, at=when(result[2], lang))
        return True, w(lang, f"done_{action}", target=target)


def safe_back(value: str | None, default: str = "/admin") -> str:
    """A place inside the dashboard to go back to (never another site: no open redirect)."""
    if not value or len(value) > 1000 or not value.startswith("/admin"):
        return default
    if "//" in value or "\\" in value or any(ord(c) < 0x21 or ord(c) == 0x7f for c in value):
        return default
    return value


# ---------------------------------------------------------------------------- blocking (state thread)

def parse_when(text: str) -> float | None:
    import datetime as dt
    try:
        t = dt.datetime.fromisoformat(text.replace(" ", "T", 1) if "T" not in text else text)
    except ValueError:
        return None
    if t.tzinfo is None:
        return None
    return t.timestamp()


def change_cutover(store, domain: str, action: str, value: float | None, yaml_at: float | None, now: float,
                   absolute: bool) -> tuple[str, str | None, float | None]:
    """What ``mailsyncctl cutover`` does, for the dashboard's buttons: ("ok"|"refused", state, at)."""
    row = store.cutover(domain)
    state = cutover.state_of(row)
    if not cutover.allowed(state, cutover.CANCEL if action == "cancel_cutover" else cutover.SCHEDULE):
        return "refused", state, row["at"] if row else None
    if action == "cancel_cutover":
        # the same rule as `mailsyncctl cutover --cancel`, decided by the store in one transaction
        refused = store.cancel_cutover(domain, "cancelled from the dashboard")
        if refused is not None:
            return "refused", refused["state"], refused["at"]
        return "ok", cutover.CANCELLED, None
    if action == "cutover_now":
        store.set_cutover(domain, value, cutover.SCHEDULED, "run from the dashboard")
        return "ok", cutover.SCHEDULED, value
    # postpone: by some hours from the current plan (or from now, when none or it has passed)
    if absolute:
        at = value
    else:
        at = max(cutover.plan_time(row, yaml_at) or now, now) + value
    store.set_cutover(domain, at, cutover.SCHEDULED, "postponed from the dashboard")
    return "ok", cutover.SCHEDULED, at


def read_account(store, address: str) -> dict:
    account = store.account(address)
    if account is None:
        return {"account": None}
    skipped = store.skipped(address)
    return {"account": account, "reports": store.reports(address), "skipped": skipped[:SKIPPED_SHOWN],
            "skipped_total": len(skipped), "passes": recent_passes(store, address, PASSES_SHOWN)}


def recent_passes(store, address: str, n: int) -> list[dict]:
    """The account's last ``n`` passes, newest first."""
    return store.passes(address, n)
