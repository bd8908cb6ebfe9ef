"""The admin dashboard at ``/admin`` (on ``listen.http``; HTTPS when the config has a ``tls:`` section).

Mounted on the self-service site through ``SelfService.extra[b"/admin"]`` (see :func:`mount`).

Routes (server-rendered HTML, English or Chinese by ``Accept-Language``, switch with ``?lang=en|zh``):

* ``GET  /admin``                      overview: per domain, accounts by phase, messages on the new
                                       server of those at the source (a bar), skipped, ETA, cutover with
                                       its actions, and the throughput over time (a chart)
* ``GET  /admin/accounts``             the accounts: ``q`` (substring of the address), ``phase``,
                                       ``sort=phase|behind|address|percent`` (default phase: failed first)
* ``GET  /admin/accounts/<address>``   one account: folders, skipped messages and why, recent passes, errors
* ``POST /admin/action``               ``action=sync_now|retry`` (an address) or
                                       ``postpone|cutover_now|cancel_cutover`` (a domain); CSRF-checked,
                                       logged as ``event=admin_action``; answers 303 back to the page,
                                       which shows what was done
* ``GET  /admin/status.json``          ``Daemon.status()`` (schema 1; ``domain=``, ``user=``,
                                       ``accounts=none``): what the pages' script polls every 5 s
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

import collections
import functools
import getpass
import hashlib
import hmac
import html
import json
import logging
import os
import secrets
import sys
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote, urlencode

from argon2 import PasswordHasher
from twisted.internet import defer, task, threads
from twisted.web import resource, server

from ..text import field, json_text, shown
from . import i18n
from .access import Access
from .sessions import Session, Sessions

logger = logging.getLogger("mailsyncd.web")

PREFIX = b"/admin"
SAMPLE_EVERY = 10.0            # seconds between throughput samples
SAMPLES = 360                  # ... kept: the last hour
POLL_SECONDS = 5               # the pages' script asks /admin/status.json this often
NOSCRIPT_REFRESH = 30          # without JavaScript, the overview and account pages reload this often
AUTO = "auto"                  # the reload's marker: a reload is no activity for the idle timeout
ACCOUNTS_SHOWN = 500
FAILED_SHOWN = 10
SKIPPED_SHOWN = 200
PASSES_SHOWN = 10
MAX_BODY = 16 * 1024
MAX_SESSIONS = 1000
POSTPONE_HOURS = (1, 6, 24, 72, 168)
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_FILES = {                # name -> content type; nothing else is served from the folder
    "admin.js": b"text/javascript; charset=utf-8",
    "admin.css": b"text/css; charset=utf-8",
    "uPlot.iife.min.js": b"text/javascript; charset=utf-8",
    "uPlot.min.css": b"text/css; charset=utf-8",
    "uPlot.LICENSE": b"text/plain; charset=utf-8",
    "favicon.svg": b"image/svg+xml",
}
SORTS = ("phase", "behind", "address", "percent")
PHASES = ("failed", "syncing", "waiting", "tailing", "cutover")

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HSTS = b"max-age=31536000"
_HEADERS = (
    (b"Content-Security-Policy", CSP.encode()),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"X-Frame-Options", b"DENY"),
    (b"Cross-Origin-Opener-Policy", b"same-origin"),
    (b"Cross-Origin-Resource-Policy", b"same-origin"),
)

# ---------------------------------------------------------------------------- words

WORDS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Mail migration",
        "overview": "Overview",
        "accounts": "Accounts",
        "switch": "中文",
        "sign_in": "Sign in",
        "sign_in_title": "Administrator sign-in",
        "user": "User",
        "password": "Password",
        "sign_out": "Sign out",
        "signed_out": "You are signed out.",
        "err_password": "Wrong password.",
        "err_missing": "Please enter the password.",
        "err_throttled": "Too many attempts. Please wait a few minutes and try again.",
        "err_csrf": "This form has expired. Please try again.",
        "err_internal": "Something went wrong. Please try again; the daemon's log has the details.",
        "err_generic": "The request could not be handled.",
        "not_found": "Not found.",
        "forbidden_title": "Dashboard: this machine only",
        "forbidden": "No administrator password is set, so the dashboard only answers browsers on the "
                     "daemon's own machine (127.0.0.1 or ::1).",
        "forbidden_how": "To use it from elsewhere, make a password hash on the server and put it in the "
                         "config, then reload the daemon:",
        "all_domains": "All domains",
        "no_domains": "No domains are configured.",
        "on_target": "{done} of {total} messages on the new server",
        "messages": "Messages",
        "skipped": "Skipped",
        "behind": "Still to copy",
        "rate": "Speed",
        "eta": "Time left",
        "per_min": "/min",
        "cutover": "Cutover",
        "throughput": "Throughput (messages per minute)",
        "collecting": "Collecting samples…",
        "needs_attention": "Failed accounts",
        "more_failed": "All failed accounts",
        "col_address": "Address",
        "col_phase": "Status",
        "col_progress": "Progress",
        "col_counts": "New / old",
        "col_last_pass": "Last pass",
        "col_actions": "",
        "search": "Search",
        "search_label": "Address contains",
        "sort_label": "Sort by",
        "sort_phase": "status (failed first)",
        "sort_behind": "most still to copy",
        "sort_address": "address",
        "sort_percent": "least done first",
        "phase_label": "Status",
        "any_phase": "any",
        "showing": "Showing {shown} of {total} accounts.",
        "no_accounts": "No accounts match.",
        **i18n.phase_words("en"),
        "sync_now": "Sync now",
        "retry": "Retry",
        "account_title": "Account {address}",
        "copied_from": "Copied from",
        "plan": "Plan",
        "reason": "Reason",
        "current_folders": "Copying now",
        "last_pass": "Last pass",
        "next_pass": "Next pass",
        "folders": "Folders",
        "col_folder": "Folder",
        "col_target_name": "On the new server",
        "col_old": "Old",
        "col_new": "New",
        "col_copied": "Copied",
        "col_size": "Size",
        "col_seconds": "Time",
        "col_error": "Error",
        "col_when": "When",
        "col_reason": "Reason",
        "col_uid": "UID",
        "col_result": "Result",
        "no_folders": "No folder report yet.",
        "skipped_title": "Skipped messages",
        "skipped_more": "Showing the first {shown} of {total}.",
        "no_skipped": "None.",
        "passes": "Recent passes",
        "no_passes": "No pass yet.",
        "pass_ok": "ok",
        "pass_failed": "failed",
        "pass_running": "running",
        "errors": "Errors",
        "no_errors": "None.",
        "never": "never",
        "none": "—",
        "cut_none": "Not scheduled",
        "cut_scheduled": "Scheduled for {at}",
        "cut_cancelled": "Cancelled (the config's time is ignored)",
        "cut_final_pass": "Final pass running",
        "cut_done": "Done {at}",
        "postpone": "Postpone by",
        "schedule_in": "Schedule in",
        "hours_1": "1 hour", "hours_6": "6 hours", "hours_24": "1 day", "hours_72": "3 days",
        "hours_168": "1 week",
        "or_at": "or at (ISO 8601 with zone)",
        "apply": "Apply",
        "cutover_now": "Run cutover now",
        "cutover_confirm": "I understand: after a final pass, syncing stops and the stored old passwords "
                           "are destroyed.",
        "cancel_cutover": "Cancel cutover",
        "done_sync_now": "Sync requested for {target}.",
        "done_retry": "Retry requested for {target}.",
        "done_postpone": "Cutover of {target} scheduled for {at}.",
        "done_cutover_now": "Cutover of {target} starts now (final pass first).",
        "done_cancel_cutover": "Cutover of {target} cancelled.",
        "refused_not_scheduled": "{target} is not in the scheduler (unknown, cut over, or removed).",
        "refused_cut_state": "The cutover of {target} is already {state}; it cannot be changed now.",
        "refused_confirm": "Please tick the box to confirm.",
        "refused_bad_time": "Not a time: give an ISO 8601 time with its zone, e.g. 2026-12-31T18:00+08:00.",
        "refused_past": "That time is in the past; use “Run cutover now” instead.",
        "refused_unknown": "Unknown domain or action.",
        "live": "Live",
        "updated": "updated {time}",
        "stale": "Connection lost; retrying…",
        "expired": "Session ended: reload the page to sign in again.",
        "h": "h", "min": "min", "s": "s", "d": "d",
        "ago": "{t} ago",
    },
    "zh": {
        "title": "邮件迁移",
        "overview": "概览",
        "accounts": "账户",
        "switch": "English",
        "sign_in": "登录",
        "sign_in_title": "管理员登录",
        "user": "用户",
        "password": "密码",
        "sign_out": "退出",
        "signed_out": "您已退出。",
        "err_password": "密码错误。",
        "err_missing": "请输入密码。",
        "err_throttled": "尝试次数过多，请等待几分钟后再试。",
        "err_csrf": "表单已过期，请重试。",
        "err_internal": "出现错误，请重试；详情见守护进程日志。",
        "err_generic": "无法处理该请求。",
        "not_found": "未找到。",
        "forbidden_title": "管理面板：仅限本机",
        "forbidden": "尚未设置管理员密码，因此管理面板只接受守护进程所在机器上的浏览器（127.0.0.1 或 ::1）。",
        "forbidden_how": "如需从其他地方访问，请在服务器上生成密码哈希并写入配置，然后重新加载守护进程：",
        "all_domains": "全部域名",
        "no_domains": "未配置任何域名。",
        "on_target": "新服务器上已有 {done} / {total} 封邮件",
        "messages": "邮件",
        "skipped": "已跳过",
        "behind": "待复制",
        "rate": "速度",
        "eta": "剩余时间",
        "per_min": "/分钟",
        "cutover": "切换",
        "throughput": "吞吐量（每分钟邮件数）",
        "collecting": "正在收集数据…",
        "needs_attention": "失败的账户",
        "more_failed": "所有失败的账户",
        "col_address": "地址",
        "col_phase": "状态",
        "col_progress": "进度",
        "col_counts": "新 / 旧",
        "col_last_pass": "最近一轮",
        "col_actions": "",
        "search": "搜索",
        "search_label": "地址包含",
        "sort_label": "排序",
        "sort_phase": "状态（失败优先）",
        "sort_behind": "待复制最多",
        "sort_address": "地址",
        "sort_percent": "完成度最低",
        "phase_label": "状态",
        "any_phase": "全部",
        "showing": "显示 {shown} / {total} 个账户。",
        "no_accounts": "没有匹配的账户。",
        **i18n.phase_words("zh"),
        "sync_now": "立即同步",
        "retry": "重试",
        "account_title": "账户 {address}",
        "copied_from": "复制自",
        "plan": "方案",
        "reason": "原因",
        "current_folders": "正在复制",
        "last_pass": "最近一轮",
        "next_pass": "下一轮",
        "folders": "文件夹",
        "col_folder": "文件夹",
        "col_target_name": "新服务器上",
        "col_old": "旧",
        "col_new": "新",
        "col_copied": "已复制",
        "col_size": "大小",
        "col_seconds": "耗时",
        "col_error": "错误",
        "col_when": "时间",
        "col_reason": "原因",
        "col_uid": "UID",
        "col_result": "结果",
        "no_folders": "尚无文件夹报告。",
        "skipped_title": "已跳过的邮件",
        "skipped_more": "显示前 {shown} 封，共 {total} 封。",
        "no_skipped": "无。",
        "passes": "最近几轮同步",
        "no_passes": "尚未同步。",
        "pass_ok": "成功",
        "pass_failed": "失败",
        "pass_running": "进行中",
        "errors": "错误",
        "no_errors": "无。",
        "never": "从未",
        "none": "—",
        "cut_none": "未安排",
        "cut_scheduled": "计划于 {at}",
        "cut_cancelled": "已取消（忽略配置中的时间）",
        "cut_final_pass": "正在进行最后一轮同步",
        "cut_done": "已于 {at} 完成",
        "postpone": "推迟",
        "schedule_in": "安排在",
        "hours_1": "1 小时", "hours_6": "6 小时", "hours_24": "1 天", "hours_72": "3 天",
        "hours_168": "1 周",
        "or_at": "或指定时间（ISO 8601，含时区）",
        "apply": "应用",
        "cutover_now": "立即切换",
        "cutover_confirm": "我已了解：最后一轮同步之后将停止同步，并销毁保存的旧密码。",
        "cancel_cutover": "取消切换",
        "done_sync_now": "已请求同步 {target}。",
        "done_retry": "已请求重试 {target}。",
        "done_postpone": "{target} 的切换已安排在 {at}。",
        "done_cutover_now": "{target} 的切换现在开始（先进行最后一轮同步）。",
        "done_cancel_cutover": "已取消 {target} 的切换。",
        "refused_not_scheduled": "{target} 不在调度器中（未知、已切换或已删除）。",
        "refused_cut_state": "{target} 的切换已处于“{state}”状态，现在无法更改。",
        "refused_confirm": "请勾选确认框。",
        "refused_bad_time": "时间格式无效：请使用含时区的 ISO 8601 时间，例如 2026-12-31T18:00+08:00。",
        "refused_past": "该时间已过去；请使用“立即切换”。",
        "refused_unknown": "未知的域名或操作。",
        "live": "实时",
        "updated": "更新于 {time}",
        "stale": "连接中断，正在重试…",
        "expired": "会话已结束：请刷新页面重新登录。",
        "h": "小时", "min": "分钟", "s": "秒", "d": "天",
        "ago": "{t}前",
    },
}

assert set(WORDS["en"]) == set(WORDS["zh"]), set(WORDS["en"]) ^ set(WORDS["zh"])


def w(lang: str, key: str, **kw) -> str:
    text = WORDS.get(lang, WORDS["en"])[key]
    return text.format(**kw) if kw else text


def esc(value: object) -> str:
    """Text for HTML: control characters and bidi overrides shown as escapes, then HTML-escaped."""
    return html.escape(shown(value), quote=True)


# ---------------------------------------------------------------------------- the password

def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` for ``admin.password_hash`` (argon2-cffi's defaults)."""
    if not password:
        raise ValueError("empty password")
    return PasswordHasher().hash(password)


def cmd_hash_password(args) -> int:
    """``mailsyncctl hash-password``: the password twice from the terminal (once from stdin when it is
    not one); prints the hash for ``admin.password_hash``."""
    stdin = getattr(args, "stdin", None) or sys.stdin
    if stdin.isatty():
        try:
            first = getpass.getpass("Dashboard password: ")
            again = getpass.getpass("Same password again: ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 1
        if first != again:
            print("mailsyncctl: the passwords differ; nothing changed", file=sys.stderr)
            return 1
    else:
        first = stdin.readline().rstrip("\r\n")
    if not first:
        print("mailsyncctl: empty password", file=sys.stderr)
        return 1
    if len(first) < 12:
        print("mailsyncctl: warning: a password shorter than 12 characters is easy to guess", file=sys.stderr)
    hashed = hash_password(first)
    del first
    print(hashed)
    print(f'put it in the config, then reload:\n  admin:\n    password_hash: "{hashed}"', file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- formatting

def _num(n) -> str:
    return "" if n is None else f"{int(n):,}"


def duration(seconds: float | None, lang: str) -> str:
    """``2 h 05 min`` / ``2 小时 05 分钟``; admin.js formats the same way."""
    if seconds is None:
        return w(lang, "none")
    s = max(0, round(seconds))
    sep = "" if lang == "zh" else " "
    if s < 60:
        return f"{s}{sep}{w(lang, 's')}"
    m = s // 60
    if m < 60:
        return f"{m}{sep}{w(lang, 'min')}"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}{sep}{w(lang, 'h')} {m:02d}{sep}{w(lang, 'min')}"
    d, h = divmod(h, 24)
    return f"{d}{sep}{w(lang, 'd')} {h}{sep}{w(lang, 'h')}"


def _rate(per_second: float | None, lang: str) -> str:
    if per_second is None:
        return w(lang, "none")
    return f"{round(per_second * 60):,}{w(lang, 'per_min')}"


def when(ts: float | None, lang: str = "en") -> str:
    """A time of day on the server's clock, with its UTC offset."""
    if not ts:
        return w(lang, "never")
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(ts))


def _size(n: int | None) -> str:
    from ..status import size_text
    return size_text(n, "")


def _fact(label: str, value_html: str, attrs: str = "") -> str:
    """One <dt>/<dd> pair; ``value_html`` is already escaped."""
    return f'<dt>{esc(label)}</dt><dd{" " + attrs if attrs else ""}>{value_html}</dd>'


def _table_head(lang: str, *cols: tuple[str, str]) -> str:
    """The start of a scrollable table: (word key, class) per column."""
    cells = "".join(f'<th class="{cls}">{esc(w(lang, key))}</th>' if cls else f'<th>{esc(w(lang, key))}</th>'
                    for key, cls in cols)
    return f'<div class="scroll"><table><thead><tr>{cells}</tr></thead><tbody>'


def account_url(address: str) -> str:
    return "/admin/accounts/" + quote(address, safe="@")


def _safe_back(value: str | None, default: str = "/admin") -> str:
    """A place inside the dashboard to go back to (never another site: no open redirect)."""
    if not value or len(value) > 1000 or not value.startswith("/admin"):
        return default
    if "//" in value or "\\" in value or any(ord(c) < 0x21 or ord(c) == 0x7f for c in value):
        return default
    return value


def sort_accounts(accounts: list[dict], how: str) -> list[dict]:
    if how == "behind":
        return sorted(accounts, key=lambda a: (-a["behind"], a["address"]))
    if how == "address":
        return sorted(accounts, key=lambda a: a["address"])
    if how == "percent":
        return sorted(accounts, key=lambda a: (a["percent"], -a["behind"], a["address"]))
    return sorted(accounts, key=lambda a: (PHASES.index(a["phase"]) if a["phase"] in PHASES else 9,
                                           -a["behind"], a["address"]))


def series_rates(t: list[float], values: list[int]) -> list[float | None]:
    """Messages per minute between consecutive samples (never negative); None for the first."""
    out: list[float | None] = [None] if values else []
    for i in range(1, len(values)):
        dt = t[i] - t[i - 1]
        out.append(round(max(0, values[i] - values[i - 1]) * 60.0 / dt, 1) if dt > 0 else None)
    return out


def sparkline(rates: list[float | None], width: int = 300, height: int = 60) -> str:
    """A small inline SVG line (no style attributes: the CSP allows none), for pages without script."""
    pts = [r for r in rates if r is not None]
    if len(pts) < 2:
        return ""
    top = max(pts) or 1.0
    n = len(pts)
    coords = " ".join(f"{i * width / (n - 1):.1f},{height - 2 - (v / top) * (height - 4):.1f}"
                      for i, v in enumerate(pts))
    return (f'<svg class="spark" viewBox="0 0 {width} {height}" preserveAspectRatio="none" aria-hidden="true">'
            f'<polyline points="{coords}" fill="none" stroke="currentColor" stroke-width="2" '
            'vector-effect="non-scaling-stroke"/></svg>')


# ---------------------------------------------------------------------------- replies

@dataclass
class Reply:
    code: int
    body: bytes
    ctype: bytes = b"text/html; charset=utf-8"
    location: str | None = None
    retry_after: int | None = None
    cache: bytes = b"no-store"


def _json(code: int, doc) -> Reply:
    return Reply(code, json_text(doc, separators=(",", ":")).encode("utf-8"),
                 b"application/json; charset=utf-8")


@dataclass
class _Ctx:
    """What a page handler knows about the request."""
    lang: str
    session: Session
    password: bool          # signed in with the password (so: a sign-out button)


# ---------------------------------------------------------------------------- the resource

class Admin(resource.Resource):
    isLeaf = True

    def __init__(self, daemon, access: Access, *, sample_every: float = SAMPLE_EVERY):
        super().__init__()
        self.daemon = daemon
        self.reactor = daemon.reactor
        self.access = access
        access.dashboard = self          # /api/ and /metrics accept this dashboard's sessions
        self.cookie = "mailsyncd-admin"  # names without the __Host- prefix (see _set_cookie)
        self.login_cookie = "mailsyncd-admin-login"
        self.lang_cookie = "mailsyncd-lang"
        self.sessions = Sessions(self.reactor.seconds,
                                 lambda: (daemon.current().web.session_idle, daemon.current().web.session_max),
                                 MAX_SESSIONS)
        self._key = os.urandom(32)      # signs the login form's CSRF token
        self.sample_every = sample_every
        self.samples: collections.deque[tuple[float, dict[str, int]]] = collections.deque(maxlen=SAMPLES)
        self._sampling = False
        self._sampler = task.LoopingCall(self._sample)
        self._sampler.clock = self.reactor
        when_running = getattr(self.reactor, "callWhenRunning", None)
        if when_running is not None:                 # a test's fake reactor may have neither
            when_running(self._start_sampler)
        trigger = getattr(self.reactor, "addSystemEventTrigger", None)
        if trigger is not None:
            trigger("before", "shutdown", self.stop)
        self.counts = {"logins": 0, "login_failures": 0, "actions": 0, "csrf_refused": 0}

    # -- throughput samples -----------------------------------------------------------
    def _start_sampler(self) -> None:
        if not self._sampler.running:
            self._sampler.start(self.sample_every, now=True)

    def stop(self) -> None:
        if self._sampler.running:
            self._sampler.stop()

    def _sample(self) -> None:
        if self._sampling:
            return
        self._sampling = True
        d = defer.maybeDeferred(self.daemon.status)
        d.addCallback(self.record)
        d.addErrback(lambda f: logger.warning("event=admin_sample_error error=%r", f.getErrorMessage()))
        d.addBoth(lambda _: setattr(self, "_sampling", False))

    def record(self, doc: dict) -> None:
        self.samples.append((float(doc["generated"]),
                             {d["name"]: int(d["target_messages"]) for d in doc["domains"]}))

    def series(self) -> dict:
        t = [s[0] for s in self.samples]
        names = sorted(set(self.daemon.current().domains) | {n for s in self.samples for n in s[1]})
        out = {}
        for name in names:
            values = [s[1].get(name, 0) for s in self.samples]
            out[name] = {"target": values, "rate": series_rates(t, values)}
        return {"interval": self.sample_every, "t": t, "domains": out}

    # -- dispatch ---------------------------------------------------------------------
    def render(self, request):
        if getattr(request, "too_big", False):
            return server.NOT_DONE_YET      # the site already answered 413
        request.setHeader(b"Server", b"mailsyncd")
        for k, v in _HEADERS:
            request.setHeader(k, v)
        if self.access.https(request):
            request.setHeader(b"Strict-Transport-Security", HSTS)
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _f: gone.append(True))
        d = defer.ensureDeferred(self._dispatch(request))
        d.addErrback(self._crashed, request)
        d.addCallback(lambda reply: None if gone else self._finish(request, reply))
        d.addErrback(lambda f: logger.error("event=web_error what=admin error=%r", f.getErrorMessage()))
        return server.NOT_DONE_YET

    async def _dispatch(self, request) -> Reply:
        path = request.path.split(b"?", 1)[0]
        method = request.method
        get = method in (b"GET", b"HEAD")
        if path.startswith(b"/admin/static/"):
            return self._static(request, path) if get else self._not_allowed(request, b"GET, HEAD")
        if path == b"/admin/login":
            if get:
                return self._login_page(request)
            if method == b"POST":
                return await self._login(request)
            return self._not_allowed(request, b"GET, HEAD, POST")
        json_route = path.endswith(b".json")
        auto = request.args.get(AUTO.encode()) is not None
        ctx, refusal = self._access(request, json_route=json_route, touch=not (json_route or auto))
        if refusal is not None:
            return refusal
        if path in (b"/admin", b"/admin/"):
            return await self._overview(request, ctx) if get else self._not_allowed(request, b"GET, HEAD")
        if path == b"/admin/accounts":
            return await self._accounts(request, ctx) if get else self._not_allowed(request, b"GET, HEAD")
        if path.startswith(b"/admin/accounts/"):
            if not get:
                return self._not_allowed(request, b"GET, HEAD")
            address = unquote(path[len(b"/admin/accounts/"):].decode("ascii", "replace")).strip().lower()
            return await self._account(request, ctx, address)
        if path == b"/admin/status.json":
            return await self._status_json(request) if get else self._not_allowed(request, b"GET, HEAD")
        if path == b"/admin/series.json":
            return _json(200, self.series()) if get else self._not_allowed(request, b"GET, HEAD")
        if path == b"/admin/action":
            return await self._action(request, ctx) if method == b"POST" else self._not_allowed(request, b"POST")
        if path == b"/admin/logout":
            return self._logout(request, ctx) if method == b"POST" else self._not_allowed(request, b"POST")
        return self._message(request, ctx.lang, 404, "not_found")

    def _crashed(self, failure, request) -> Reply:
        logger.error("event=web_error what=admin path=%r error=%r", request.path[:100], failure.getErrorMessage())
        return self._message(request, self._lang(request), 500, "err_internal")

    def _finish(self, request, reply: Reply) -> None:
        request.setResponseCode(reply.code)
        request.setHeader(b"Content-Type", reply.ctype)
        request.setHeader(b"Cache-Control", reply.cache)
        if reply.cache == b"no-store":
            request.setHeader(b"Vary", b"Cookie, Accept-Language")
        if reply.location:
            request.setHeader(b"Location", reply.location.encode("ascii"))
        if reply.retry_after:
            request.setHeader(b"Retry-After", b"%d" % reply.retry_after)
        request.setHeader(b"Content-Length", b"%d" % len(reply.body))
        if request.method != b"HEAD":
            request.write(reply.body)
        request.finish()

    def _not_allowed(self, request, allow: bytes) -> Reply:
        request.setHeader(b"Allow", allow)
        return self._message(request, self._lang(request), 405, "err_generic")

    # -- request helpers --------------------------------------------------------------
    def _set_cookie(self, request, name: str, value: str, *, max_age: int | None = None) -> None:
        https = self.access.https(request)
        p = "__Host-" if https else ""    # __Host-: Secure, Path=/, no Domain
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

    @staticmethod
    def _arg(request, name: bytes, limit: int = 320) -> str:
        raw = (request.args.get(name) or [b""])[0]
        return raw.decode("utf-8", "replace")[:limit]

    def _lang(self, request) -> str:
        chosen = i18n.normalize((request.args.get(b"lang") or [None])[0])
        if chosen:
            self._set_cookie(request, self.lang_cookie, chosen, max_age=365 * 86400)
            return chosen
        return (i18n.normalize(self._get_cookie(request, self.lang_cookie))
                or i18n.from_accept_language(request.getHeader(b"accept-language")))

    def _ip(self, request) -> str:
        return self.access.client_ip(request)

    def _who(self) -> str:
        password_hash = self.daemon.current().admin.password_hash
        if not password_hash:
            return "loopback"
        return "admin:" + hashlib.sha256(password_hash.encode()).hexdigest()[:16]

    def _valid_session(self, request, *, touch: bool) -> tuple[str | None, Session | None]:
        token = self._get_cookie(request, self.cookie)
        s = self.sessions.get(token, touch=touch)
        if s is None or not hmac.compare_digest(s.who, self._who()):
            return token, None
        if s.who == "loopback" and not self.access.local(request):
            return token, None
        return token, s

    def session_ok(self, request) -> bool:
        """A live dashboard session comes with ``request`` (for /api/: the dashboard's browser may use it).
        Does not count as activity for the idle timeout."""
        return self._valid_session(request, touch=False)[1] is not None

    def _access(self, request, *, json_route: bool, touch: bool) -> tuple[_Ctx | None, Reply | None]:
        lang = self._lang(request)
        password_hash = self.daemon.current().admin.password_hash
        token, s = self._valid_session(request, touch=touch)
        if password_hash:
            if s is None:
                if json_route:
                    return None, _json(401, {"error": "sign in at /admin/login"})
                here = request.uri.decode("ascii", "replace")
                return None, Reply(303, b"", location="/admin/login?" + urlencode({"next": _safe_back(here)}))
            return _Ctx(lang, s, True), None
        if not self.access.local(request):
            logger.warning("event=admin_refused ip=%s reason=not_loopback path=%s", self._ip(request),
                           request.path[:60].decode("latin-1"))
            if json_route:
                return None, _json(403, {"error": "no admin.password_hash set: this machine (loopback) only"})
            return None, self._forbidden(request, lang)
        if s is None:
            token, s = self.sessions.create("loopback")
            self._set_cookie(request, self.cookie, token)
        return _Ctx(lang, s, False), None

    @staticmethod
    def _read_form(request) -> dict[str, str] | None:
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

    def _blocking(self, fn, *args):
        return threads.deferToThreadPool(self.reactor, self.daemon.state_pool, fn, *args)

    # -- page frame -------------------------------------------------------------------
    def _switch_href(self, request, lang: str) -> str:
        other = "zh" if lang == "en" else "en"
        args = [(k.decode("utf-8", "replace"), v[0].decode("utf-8", "replace"))
                for k, v in request.args.items() if k != b"lang" and v]
        path = request.path.split(b"?", 1)[0].decode("ascii", "replace")
        return path + "?" + urlencode(args + [("lang", other)])

    @staticmethod
    def _auto_href(request) -> str:
        """This page again, marked as a reload (see AUTO)."""
        args = [(k.decode("utf-8", "replace"), v[0].decode("utf-8", "replace"))
                for k, v in request.args.items() if k != AUTO.encode() and v]
        path = request.path.split(b"?", 1)[0].decode("ascii", "replace")
        return path + "?" + urlencode(args + [(AUTO, "1")])

    def _page(self, request, ctx: _Ctx | None, lang: str, title: str, body: str, *, nav: str | None = None,
              status_url: str | None = None, chart: bool = False, refresh: bool = False) -> bytes:
        other = "zh" if lang == "en" else "en"
        head = ['<!DOCTYPE html>\n',
                f'<html lang="{i18n.HTML_LANG[lang]}"><head><meta charset="utf-8">',
                '<meta name="viewport" content="width=device-width, initial-scale=1">',
                '<meta name="referrer" content="no-referrer">',
                f'<title>{esc(title)} · mailsyncd</title>',
                '<link rel="icon" href="/admin/static/favicon.svg" type="image/svg+xml">']
        if refresh:
            again = esc(self._auto_href(request))
            head.append(f'<noscript><meta http-equiv="refresh" content="{NOSCRIPT_REFRESH};url={again}"></noscript>')
        if chart:
            head.append('<link rel="stylesheet" href="/admin/static/uPlot.min.css">'
                        '<script src="/admin/static/uPlot.iife.min.js" defer></script>')
        head.append('<link rel="stylesheet" href="/admin/static/admin.css">')
        if status_url:
            head.append('<script src="/admin/static/admin.js" defer></script>')
        words = {k: w(lang, k) for k in ("none", "never", "per_min", "h", "min", "s", "d", "live", "updated",
                                          "stale", "expired")}
        words["phases"] = {p: w(lang, f"phase_{p}") for p in PHASES}
        body_attrs = f' data-lang="{lang}" data-words="{esc(json.dumps(words, ensure_ascii=False))}"'
        if status_url:
            body_attrs += f' data-status="{esc(status_url)}" data-poll="{POLL_SECONDS}"'
        if chart:
            body_attrs += ' data-series="/admin/series.json"'
        top = ['<header class="top"><a class="brand" href="/admin">mailsyncd</a>']
        if ctx is not None:
            top.append('<nav>')
            for key, href in (("overview", "/admin"), ("accounts", "/admin/accounts")):
                current = ' aria-current="page"' if nav == key else ""
                top.append(f'<a href="{href}"{current}>{esc(w(lang, key))}</a>')
            top.append('</nav>')
        top.append(f'<div class="tools"><a href="{esc(self._switch_href(request, lang))}" '
                   f'hreflang="{i18n.HTML_LANG[other]}" lang="{i18n.HTML_LANG[other]}">{esc(w(lang, "switch"))}</a>')
        if ctx is not None and ctx.password:
            top.append('<form method="post" action="/admin/logout" class="inline">'
                       f'<input type="hidden" name="csrf" value="{esc(ctx.session.csrf)}">'
                       f'<button type="submit" class="link">{esc(w(lang, "sign_out"))}</button></form>')
        top.append('</div></header>')
        flash = ""
        if ctx is not None and ctx.session.flash:
            kind, text = ctx.session.flash
            ctx.session.flash = None
            flash = f'<p class="flash {esc(kind)}" role="status">{esc(text)}</p>'
        live = '<p class="live" id="live" hidden></p>' if status_url else ""
        doc = ("".join(head) + f"</head><body{body_attrs}>" + "".join(top) + "<main>" + flash
               + f"<h1>{esc(title)}</h1>" + body + live + "</main></body></html>\n")
        return doc.encode("utf-8")

    def _message(self, request, lang: str, code: int, key: str) -> Reply:
        body = (f'<p class="error" role="alert">{esc(w(lang, key))}</p>'
                f'<p><a href="/admin">{esc(w(lang, "overview"))}</a></p>')
        return Reply(code, self._page(request, None, lang, w(lang, "title"), body))

    def _forbidden(self, request, lang: str) -> Reply:
        body = (f'<p class="error" role="alert">{esc(w(lang, "forbidden"))}</p>'
                f'<p>{esc(w(lang, "forbidden_how"))}</p>'
                '<pre><code>mailsyncctl hash-password\n\n'
                '# mailsyncd.yaml\nadmin:\n  password_hash: "$argon2id$v=19$m=65536,t=3,p=4$…"\n\n'
                'mailsyncctl reload</code></pre>')
        return Reply(403, self._page(request, None, lang, w(lang, "forbidden_title"), body))

    # -- static files -----------------------------------------------------------------
    def _static(self, request, path: bytes) -> Reply:
        name = path[len(b"/admin/static/"):].decode("ascii", "replace")
        ctype = STATIC_FILES.get(name)
        if ctype is None:
            return self._message(request, self._lang(request), 404, "not_found")
        with open(os.path.join(STATIC_DIR, name), "rb") as f:
            data = f.read()
        return Reply(200, data, ctype, cache=b"public, max-age=3600")

    # -- sign in / out ----------------------------------------------------------------
    def _login_csrf(self, request) -> str:
        value = self._get_cookie(request, self.login_cookie)
        if not value or len(value) != 43:
            value = secrets.token_urlsafe(32)
            self._set_cookie(request, self.login_cookie, value)
        return hmac.new(self._key, b"login\0" + value.encode(), hashlib.sha256).hexdigest()

    def _login_csrf_ok(self, request, given: str) -> bool:
        value = self._get_cookie(request, self.login_cookie)
        if not value or not given:
            return False
        want = hmac.new(self._key, b"login\0" + value.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(want.encode(), given.encode("utf-8", "replace"))

    def _login_form(self, request, lang: str, *, error: str | None = None, next_: str = "/admin",
                    code: int = 200, retry_after: int | None = None) -> Reply:
        csrf = self._login_csrf(request)
        parts = []
        if error:
            parts.append(f'<p class="error" role="alert">{esc(w(lang, error))}</p>')
        parts.append(
            '<form method="post" action="/admin/login" class="login">'
            f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
            f'<input type="hidden" name="next" value="{esc(_safe_back(next_))}">'
            f'<label for="username">{esc(w(lang, "user"))}</label>'
            '<input type="text" id="username" name="username" value="admin" readonly autocomplete="username">'
            f'<label for="password">{esc(w(lang, "password"))}</label>'
            '<input type="password" id="password" name="password" autocomplete="current-password" required '
            'autofocus maxlength="1024">'
            f'<button type="submit">{esc(w(lang, "sign_in"))}</button></form>')
        return Reply(code, self._page(request, None, lang, w(lang, "sign_in_title"), "".join(parts)),
                     retry_after=retry_after)

    def _login_page(self, request) -> Reply:
        lang = self._lang(request)
        if not self.daemon.current().admin.password_hash:
            return Reply(303, b"", location="/admin")
        next_ = _safe_back(self._arg(request, b"next", 1000))
        if self._valid_session(request, touch=False)[1] is not None:
            return Reply(303, b"", location=next_)
        return self._login_form(request, lang, next_=next_)

    async def _login(self, request) -> Reply:
        lang = self._lang(request)
        password_hash = self.daemon.current().admin.password_hash
        form = self._read_form(request)
        if form is None:
            return self._message(request, lang, 400, "err_generic")
        if not password_hash:
            return Reply(303, b"", location="/admin")
        next_ = _safe_back(form.get("next"))
        ip = self._ip(request)
        if not self._login_csrf_ok(request, form.get("csrf", "")):
            self.counts["csrf_refused"] += 1
            logger.warning("event=admin_csrf_refused ip=%s what=login", ip)
            return self._login_form(request, lang, error="err_csrf", next_=next_, code=403)
        password = form.pop("password", "")
        form.clear()
        if not password:
            return self._login_form(request, lang, error="err_missing", next_=next_)
        verdict = await self.access.password(ip, password_hash, password, path="/admin/login")
        del password
        if verdict != "ok":
            self.counts["login_failures"] += 1
            logger.warning("event=admin_login_failed ip=%s reason=%s", ip,
                           "wrong_password" if verdict == "wrong" else verdict)
            if verdict == "throttled":
                return self._login_form(request, lang, error="err_throttled", next_=next_, code=429,
                                        retry_after=60)
            if verdict == "busy":
                return self._login_form(request, lang, error="err_throttled", next_=next_, code=503,
                                        retry_after=5)
            return self._login_form(request, lang, error="err_password", next_=next_)
        self.counts["logins"] += 1
        self.sessions.drop(self._get_cookie(request, self.cookie))
        token, _s = self.sessions.create(self._who())
        self._set_cookie(request, self.cookie, token)
        logger.info("event=admin_login ip=%s", ip)
        return Reply(303, b"", location=next_)

    def _logout(self, request, ctx: _Ctx) -> Reply:
        form = self._read_form(request) or {}
        if not hmac.compare_digest(ctx.session.csrf.encode(), form.get("csrf", "").encode("utf-8", "replace")):
            self.counts["csrf_refused"] += 1
            logger.warning("event=admin_csrf_refused ip=%s what=logout", self._ip(request))
            return self._message(request, ctx.lang, 403, "err_csrf")
        self.sessions.drop(self._get_cookie(request, self.cookie))
        self._set_cookie(request, self.cookie, "", max_age=0)
        logger.info("event=admin_logout ip=%s", self._ip(request))
        return Reply(303, b"", location="/admin/login" if ctx.password else "/admin")

    # -- JSON -------------------------------------------------------------------------
    async def _status_json(self, request) -> Reply:
        domain = self._arg(request, b"domain") or None
        user = self._arg(request, b"user").strip().lower() or None
        if domain is not None and domain not in self.daemon.current().domains:
            return _json(404, {"error": "no such domain"})
        doc = await self.daemon.status(domain=domain, user=user)
        if self._arg(request, b"accounts") == "none":
            doc = dict(doc, accounts=[])
        return _json(200, doc)

    # -- shared bits of the pages -----------------------------------------------------
    @staticmethod
    def _live(kind: str, key: str, field: str, fmt: str = "num") -> str:
        """Attributes admin.js uses to update an element from /admin/status.json."""
        return f'data-{kind}="{esc(key)}" data-f="{esc(field)}" data-fmt="{fmt}"'

    def _bar(self, kind: str, key: str, item: dict) -> str:
        total = item["source_messages"]
        if total:
            done = min(total, item["target_messages"] + item["skipped"])
        else:                   # nothing at the source: full once a pass has said so
            total, done = 1, 1 if item["percent"] >= 100 else 0
        return (f'<progress class="bar" {self._live(kind, key, "bar", "bar")} value="{done}" max="{total}">'
                f'{item["percent"]:.1f}%</progress>')

    def _phase_badge(self, lang: str, a: dict) -> str:
        return (f'<span class="phase phase-{esc(a["phase"])}" {self._live("a", a["address"], "phase", "phase")}>'
                f'{esc(w(lang, "phase_" + a["phase"]))}</span>')

    def _action_form(self, ctx: _Ctx, action: str, target: str, back: str, label: str, *,
                     cls: str = "", extra: str = "") -> str:
        return ('<form method="post" action="/admin/action" class="inline">'
                f'<input type="hidden" name="csrf" value="{esc(ctx.session.csrf)}">'
                f'<input type="hidden" name="action" value="{esc(action)}">'
                f'<input type="hidden" name="target" value="{esc(target)}">'
                f'<input type="hidden" name="back" value="{esc(back)}">{extra}'
                f'<button type="submit" class="{esc(cls)}">{esc(label)}</button></form>')

    def _cutover_text(self, lang: str, cut: dict | None) -> str:
        from ..cutover import STATES, state_of
        state = state_of(cut)
        text = w(lang, f"cut_{state}", at=when((cut or {}).get("at"), lang)) if state in STATES else state
        return text + (f" ({cut['note']})" if cut and cut.get("note") else "")

    def _cutover_forms(self, ctx: _Ctx, dom: dict) -> str:
        from .. import cutover
        lang, name = ctx.lang, dom["name"]
        state = cutover.state_of(dom.get("cutover"))
        offered = cutover.admin_events(state)
        out = []
        if cutover.SCHEDULE in offered:
            opts = "".join(f'<option value="{h}">{esc(w(lang, f"hours_{h}"))}</option>' for h in POSTPONE_HOURS)
            label = w(lang, "postpone") if state == cutover.SCHEDULED else w(lang, "schedule_in")
            fid = "at-" + hashlib.sha256(name.encode()).hexdigest()[:8]
            extra = (f'<select name="hours" aria-label="{esc(label)}">{opts}</select>'
                     f'<label for="{fid}" class="small">{esc(w(lang, "or_at"))}</label>'
                     f'<input type="text" id="{fid}" name="at" inputmode="text" maxlength="40" '
                     'placeholder="2026-12-31T18:00+08:00" autocomplete="off" spellcheck="false">')
            out.append('<form method="post" action="/admin/action" class="cutform">'
                       f'<input type="hidden" name="csrf" value="{esc(ctx.session.csrf)}">'
                       '<input type="hidden" name="action" value="postpone">'
                       f'<input type="hidden" name="target" value="{esc(name)}">'
                       '<input type="hidden" name="back" value="/admin">'
                       f'<span class="small">{esc(label)}</span> {extra}'
                       f'<button type="submit" class="secondary">{esc(w(lang, "apply"))}</button></form>')
            cid = "confirm-" + hashlib.sha256(name.encode()).hexdigest()[:8]
            out.append('<form method="post" action="/admin/action" class="cutform">'
                       f'<input type="hidden" name="csrf" value="{esc(ctx.session.csrf)}">'
                       '<input type="hidden" name="action" value="cutover_now">'
                       f'<input type="hidden" name="target" value="{esc(name)}">'
                       '<input type="hidden" name="back" value="/admin">'
                       f'<label class="check"><input type="checkbox" id="{cid}" name="confirm" value="yes" required> '
                       f'{esc(w(lang, "cutover_confirm"))}</label>'
                       f'<button type="submit" class="danger">{esc(w(lang, "cutover_now"))}</button></form>')
        if cutover.CANCEL in offered:
            out.append(self._action_form(ctx, "cancel_cutover", name, "/admin", w(lang, "cancel_cutover"),
                                         cls="secondary"))
        return "".join(out)

    # -- GET /admin -------------------------------------------------------------------
    async def _overview(self, request, ctx: _Ctx) -> Reply:
        lang = ctx.lang
        doc = await self.daemon.status()
        series = self.series()
        out = []
        if not doc["domains"]:
            out.append(f'<p class="muted">{esc(w(lang, "no_domains"))}</p>')
        out.append('<div class="cards">')
        for dom in doc["domains"]:
            name = dom["name"]
            live = functools.partial(self._live, "d", name)
            total, done = dom["source_messages"], dom["target_messages"]
            out.append(f'<section class="card" data-domain-card="{esc(name)}"><h2>{esc(name)}</h2>')
            out.append(f'<p class="big"><span {live("percent", "pct")}>{dom["percent"]:.1f}%</span></p>')
            out.append(self._bar("d", name, dom))
            out.append('<p class="counts">' + esc(w(lang, "on_target", done="{done}", total="{total}"))
                       .replace("{done}", f'<b {live("target_messages")}>{_num(done)}</b>')
                       .replace("{total}", f'<b {live("source_messages")}>{_num(total)}</b>') + '</p>')
            out.append('<ul class="phases">')
            for p in PHASES:
                n = dom["phases"].get(p, 0)
                href = "/admin/accounts?" + urlencode({"phase": p})
                out.append(f'<li class="phase-{p}{"" if n else " zero"}"><a href="{esc(href)}">'
                           f'{esc(w(lang, "phase_" + p))}: <b {live("phases." + p)}>{n:,}</b></a></li>')
            out.append('</ul><dl class="facts">')
            out.append(_fact(w(lang, "skipped"), _num(dom["skipped"]), live("skipped")))
            out.append(_fact(w(lang, "behind"), _num(dom["behind"]), live("behind")))
            out.append(_fact(w(lang, "rate"), esc(_rate(dom["rate"], lang)), live("rate", "rate")))
            out.append(_fact(w(lang, "eta"), esc(duration(dom["eta_seconds"], lang)), live("eta_seconds", "eta")))
            out.append(_fact(w(lang, "cutover"), esc(self._cutover_text(lang, dom.get("cutover")))))
            out.append('</dl>')
            rates = series["domains"].get(name, {}).get("rate", [])
            spark = sparkline(rates) or f'<p class="muted small">{esc(w(lang, "collecting"))}</p>'
            out.append(f'<h3>{esc(w(lang, "throughput"))}</h3>'
                       f'<div class="chart" data-domain="{esc(name)}" data-label="{esc(w(lang, "throughput"))}">'
                       f'{spark}</div>')
            forms = self._cutover_forms(ctx, dom)
            if forms:
                out.append(f'<details class="cutover"><summary>{esc(w(lang, "cutover"))}</summary>{forms}</details>')
            out.append('</section>')
        out.append('</div>')
        failed = [a for a in doc["accounts"] if a["phase"] == "failed"]
        if failed:
            out.append(f'<h2>{esc(w(lang, "needs_attention"))} ({len(failed):,})</h2><ul class="failed">')
            for a in failed[:FAILED_SHOWN]:
                out.append(f'<li><a href="{esc(account_url(a["address"]))}">{esc(a["address"])}</a> '
                           f'<span class="reason">{esc(a["reason"] or "")}</span> '
                           + self._action_form(ctx, "retry", a["address"], "/admin", w(lang, "retry"), cls="small")
                           + '</li>')
            out.append('</ul>')
            if len(failed) > FAILED_SHOWN:
                out.append(f'<p><a href="/admin/accounts?phase=failed">{esc(w(lang, "more_failed"))}</a></p>')
        body = "".join(out)
        return Reply(200, self._page(request, ctx, lang, w(lang, "overview"), body, nav="overview",
                                     status_url="/admin/status.json?accounts=none", chart=True, refresh=True))

    # -- GET /admin/accounts ----------------------------------------------------------
    async def _accounts(self, request, ctx: _Ctx) -> Reply:
        lang = ctx.lang
        q = self._arg(request, b"q", 200).strip().lower()
        sort = self._arg(request, b"sort", 20) or "phase"
        if sort not in SORTS:
            sort = "phase"
        phase = self._arg(request, b"phase", 20)
        if phase not in PHASES:
            phase = ""
        doc = await self.daemon.status()
        accounts = [a for a in doc["accounts"]
                    if (not q or q in a["address"].lower() or q in (a.get("source_address") or "").lower())
                    and (not phase or a["phase"] == phase)]
        accounts = sort_accounts(accounts, sort)
        here = request.uri.decode("ascii", "replace")
        out = ['<form method="get" action="/admin/accounts" class="search" role="search">',
               (f'<span class="field grow"><label for="q">{esc(w(lang, "search_label"))}</label>'
                f'<input type="search" id="q" name="q" value="{esc(q)}" maxlength="200" autocomplete="off" '
                'spellcheck="false" autocapitalize="none"></span>'),
               (f'<span class="field"><label for="phase">{esc(w(lang, "phase_label"))}</label>'
                f'<select id="phase" name="phase"><option value="">{esc(w(lang, "any_phase"))}</option>')]
        for p in PHASES:
            selected = " selected" if p == phase else ""
            out.append(f'<option value="{p}"{selected}>{esc(w(lang, "phase_" + p))}</option>')
        out.append(f'</select></span><span class="field"><label for="sort">{esc(w(lang, "sort_label"))}</label>'
                   '<select id="sort" name="sort">')
        for s in SORTS:
            selected = " selected" if s == sort else ""
            out.append(f'<option value="{s}"{selected}>{esc(w(lang, "sort_" + s))}</option>')
        out.append(f'</select></span><button type="submit">{esc(w(lang, "search"))}</button></form>')
        shown = accounts[:ACCOUNTS_SHOWN]
        showing = w(lang, "showing", shown=_num(len(shown)), total=_num(len(accounts)))
        out.append(f'<p class="muted small">{esc(showing)}</p>')
        if not shown:
            out.append(f'<p class="muted">{esc(w(lang, "no_accounts"))}</p>')
        else:
            out.append('<div class="scroll"><table class="accounts"><thead><tr>'
                       f'<th>{esc(w(lang, "col_address"))}</th><th>{esc(w(lang, "col_phase"))}</th>'
                       f'<th>{esc(w(lang, "col_progress"))}</th>'
                       f'<th class="num">{esc(w(lang, "col_counts"))}</th>'
                       f'<th class="num opt">{esc(w(lang, "behind"))}</th>'
                       f'<th class="num opt">{esc(w(lang, "skipped"))}</th>'
                       f'<th class="opt">{esc(w(lang, "col_last_pass"))}</th><th></th></tr></thead><tbody>')
            for a in shown:
                addr = a["address"]
                live = functools.partial(self._live, "a", addr)
                reason = (f'<div class="reason" {live("reason", "text")}>{esc(a["reason"])}</div>'
                          if a["phase"] == "failed" and a["reason"] else
                          f'<div class="reason" {live("reason", "text")}></div>')
                button = (self._action_form(ctx, "retry", addr, here, w(lang, "retry"), cls="small")
                          if a["phase"] == "failed" else
                          self._action_form(ctx, "sync_now", addr, here, w(lang, "sync_now"), cls="small secondary")
                          if a["phase"] != "cutover" else "")
                out.append(f'<tr data-row="{esc(addr)}">'
                           f'<td class="addr"><a href="{esc(account_url(addr))}">{esc(addr)}</a></td>'
                           f'<td>{self._phase_badge(lang, a)}{reason}</td>'
                           f'<td class="prog">{self._bar("a", addr, a)} '
                           f'<span {live("percent", "pct")}>{a["percent"]:.1f}%</span></td>'
                           f'<td class="num"><span {live("target_messages")}>{_num(a["target_messages"])}</span> / '
                           f'<span {live("source_messages")}>{_num(a["source_messages"])}</span></td>'
                           f'<td class="num opt" {live("behind")}>{_num(a["behind"])}</td>'
                           f'<td class="num opt" {live("skipped")}>{_num(a["skipped"])}</td>'
                           f'<td class="opt" {live("last_pass", "when")}>{esc(when(a["last_pass"], lang))}</td>'
                           f'<td>{button}</td></tr>')
            out.append('</tbody></table></div>')
        return Reply(200, self._page(request, ctx, lang, w(lang, "accounts"), "".join(out), nav="accounts",
                                     status_url="/admin/status.json"))

    # -- GET /admin/accounts/<address> ------------------------------------------------
    async def _account(self, request, ctx: _Ctx, address: str) -> Reply:
        lang = ctx.lang
        if not address or len(address) > 320:
            return self._message(request, lang, 404, "not_found")
        data = await self._blocking(read_account, self.daemon.store, address)
        if data["account"] is None:
            return self._message(request, lang, 404, "not_found")
        doc = await self.daemon.status(user=address)
        a = next((x for x in doc["accounts"] if x["address"] == address), None)
        if a is None:
            return self._message(request, lang, 404, "not_found")
        live = functools.partial(self._live, "a", address)
        back = account_url(address)
        out = ['<div class="actions">']
        if a["phase"] != "cutover":
            out.append(self._action_form(ctx, "retry" if a["phase"] == "failed" else "sync_now", address, back,
                                         w(lang, "retry" if a["phase"] == "failed" else "sync_now")))
        out.append('</div>')
        out.append(f'<p class="big"><span {live("percent", "pct")}>{a["percent"]:.1f}%</span></p>')
        out.append(self._bar("a", address, a))
        out.append('<p class="counts">' + esc(w(lang, "on_target", done="{done}", total="{total}"))
                   .replace("{done}", f'<b id="target-count" {live("target_messages")}>'
                                     f'{_num(a["target_messages"])}</b>')
                   .replace("{total}", f'<b id="source-count" {live("source_messages")}>'
                                     f'{_num(a["source_messages"])}</b>')
                   + '</p>')
        out.append('<dl class="facts">')
        none = w(lang, "none")
        out.append(_fact(w(lang, "col_phase"), self._phase_badge(lang, a)))
        out.append(_fact(w(lang, "reason"), esc(a["reason"] or none), live("reason", "reason")))
        if a["source_address"] != address:
            out.append(_fact(w(lang, "copied_from"), esc(a["source_address"])))
        out.append(_fact(w(lang, "plan"), esc(a["plan"] or none)))
        out.append(_fact(w(lang, "skipped"), _num(a["skipped"]), live("skipped")))
        out.append(_fact(w(lang, "behind"), _num(a["behind"]), live("behind")))
        out.append(_fact(w(lang, "rate"), esc(_rate(a["rate"], lang)), live("rate", "rate")))
        out.append(_fact(w(lang, "eta"), esc(duration(a["eta_seconds"], lang)), live("eta_seconds", "eta")))
        out.append(_fact(w(lang, "current_folders"), esc(", ".join(a["current_folders"]) or none),
                         live("current_folders", "list")))
        out.append(_fact(w(lang, "last_pass"), esc(when(a["last_pass"], lang)), live("last_pass", "when")))
        out.append(_fact(w(lang, "next_pass"), esc(when(a["next_pass"], lang) if a["next_pass"] else none),
                         live("next_pass", "when")))
        out.append('</dl>')

        # folders (the last pass's report)
        out.append(f'<h2>{esc(w(lang, "folders"))}</h2>')
        if not data["reports"]:
            out.append(f'<p class="muted">{esc(w(lang, "no_folders"))}</p>')
        else:
            out.append(_table_head(lang, ("col_folder", ""), ("col_old", "num"), ("col_new", "num"),
                                   ("col_copied", "num opt"), ("skipped", "num"), ("col_size", "num opt"),
                                   ("col_when", "opt"), ("col_error", "")))
            for r in data["reports"]:
                shown = r.path if r.target_name in (r.path, None) else f"{r.path} → {r.target_name}"
                out.append(f'<tr><td class="path">{esc(shown)}</td><td class="num">{_num(r.source_count)}</td>'
                           f'<td class="num">{_num(r.target_count)}</td><td class="num opt">{_num(r.copied)}</td>'
                           f'<td class="num">{_num(r.skipped)}</td><td class="num opt">{esc(_size(r.bytes))}</td>'
                           f'<td class="opt">{esc(when(r.finished, lang))}</td>'
                           f'<td class="reason">{esc(r.error or "")}</td></tr>')
            out.append('</tbody></table></div>')

        # skipped messages
        out.append(f'<h2>{esc(w(lang, "skipped_title"))}</h2>')
        if not data["skipped"]:
            out.append(f'<p class="muted">{esc(w(lang, "no_skipped"))}</p>')
        else:
            out.append(_table_head(lang, ("col_folder", ""), ("col_uid", "num opt"), ("col_size", "num"),
                                   ("col_reason", "")))
            for path, uid, size, reason in data["skipped"]:
                out.append(f'<tr><td class="path">{esc(path)}</td><td class="num opt">{esc(uid)}</td>'
                           f'<td class="num">{esc(_size(size))}</td><td class="reason">{esc(reason)}</td></tr>')
            out.append('</tbody></table></div>')
            if data["skipped_total"] > len(data["skipped"]):
                more = w(lang, "skipped_more", shown=_num(len(data["skipped"])), total=_num(data["skipped_total"]))
                out.append(f'<p class="muted small">{esc(more)}</p>')

        # recent passes
        out.append(f'<h2>{esc(w(lang, "passes"))}</h2>')
        if not data["passes"]:
            out.append(f'<p class="muted">{esc(w(lang, "no_passes"))}</p>')
        else:
            out.append(_table_head(lang, ("col_when", ""), ("col_result", ""), ("col_copied", "num"),
                                   ("skipped", "num opt"), ("col_size", "num opt"), ("col_seconds", "num opt"),
                                   ("col_error", "")))
            for p in data["passes"]:
                result = ("pass_running" if not p.get("finished") else "pass_ok" if p.get("ok") else "pass_failed")
                secs = (p["finished"] - p["started"]) if p.get("finished") and p.get("started") else None
                out.append(f'<tr><td>{esc(when(p.get("started"), lang))}</td>'
                           f'<td class="{result}">{esc(w(lang, result))}</td>'
                           f'<td class="num">{_num(p.get("copied"))}</td>'
                           f'<td class="num opt">{_num(p.get("skipped"))}</td>'
                           f'<td class="num opt">{esc(_size(p.get("bytes")))}</td>'
                           f'<td class="num opt">{esc(duration(secs, lang) if secs is not None else "")}</td>'
                           f'<td class="reason">{esc(p.get("error") or "")}</td></tr>')
            out.append('</tbody></table></div>')

        # errors, all in one place
        errors = []
        if data["account"].get("last_error"):
            errors.append(data["account"]["last_error"])
        errors += [f"{r.path}: {r.error}" for r in data["reports"] if r.error]
        out.append(f'<h2>{esc(w(lang, "errors"))}</h2>')
        if errors:
            out.append('<ul class="errors">' + "".join(f'<li class="reason">{esc(e)}</li>' for e in errors) + '</ul>')
        else:
            out.append(f'<p class="muted">{esc(w(lang, "no_errors"))}</p>')
        title = w(lang, "account_title", address=address)
        return Reply(200, self._page(request, ctx, lang, title, "".join(out), nav="accounts",
                                     status_url="/admin/status.json?" + urlencode({"user": address}), refresh=True))

    # -- POST /admin/action -----------------------------------------------------------
    async def _action(self, request, ctx: _Ctx) -> Reply:
        lang = ctx.lang
        ip = self._ip(request)
        form = self._read_form(request)
        if form is None:
            return self._message(request, lang, 400, "err_generic")
        if not hmac.compare_digest(ctx.session.csrf.encode(), form.get("csrf", "").encode("utf-8", "replace")):
            self.counts["csrf_refused"] += 1
            logger.warning("event=admin_csrf_refused ip=%s what=action", ip)
            return self._message(request, lang, 403, "err_csrf")
        action = form.get("action", "")
        target = form.get("target", "").strip().lower()[:320]
        back = _safe_back(form.get("back"))
        ok, text = await self._do(action, target, form, lang)
        self.counts["actions"] += 1
        logger.info("event=admin_action ip=%s action=%s target=%s result=%s", ip, field(action, 40),
                    field(target), "ok" if ok else "refused")
        ctx.session.flash = ("ok" if ok else "error", text)
        return Reply(303, b"", location=back)

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
        result = await self._blocking(change_cutover, self.daemon.store, target, action, new_at, yaml_at, now,
                                      bool(form.get("at", "").strip()))
        if result[0] != "ok":
            state = result[1]
            return False, w(lang, "refused_cut_state", target=target,
                            state=w(lang, f"cut_{state}", at=when(result[2], lang)) if state in ("final_pass", "done")
                            else state)
        if action == "postpone":
            return True, w(lang, "done_postpone", target=target, at=when(result[2], lang))
        return True, w(lang, f"done_{action}", target=target)


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
    from .. import cutover
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


# ---------------------------------------------------------------------------- wiring

def mount(page, daemon) -> Admin:
    """Mount the dashboard on the self-service page (``page.extra[b"/admin"]``, see selfservice.make_site)."""
    admin = Admin(daemon, page.access)
    page.extra[PREFIX] = admin
    return admin
