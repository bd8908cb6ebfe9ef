"""The admin dashboard (/admin): the real daemon, real Dovecot servers, and real headless Chromium.

The browser is Debian's ``chromium`` driven by the Python ``playwright`` package (its bundled driver,
no browser download: ``executable_path=/usr/bin/chromium``); scripts/setup.sh installs both.  Without
them the browser test is SKIPPED, with the reason, except under ``CI=true`` where it FAILS.  The other
tests speak plain HTTP and need only Dovecot.

The overview's screenshot for the README (docs/dashboard.png, 1280x800) is written by the browser test
when ``UPDATE_SCREENSHOT=1``; otherwise it goes to the test's tmp_path only.
"""

from __future__ import annotations

import html
import http.client
import imaplib
import io
import json
import os
import re
import shutil
import struct
import time
import urllib.parse
from dataclasses import dataclass

import pytest
import yaml
from proxyenv import Daemon
from seed import Msg, make_message, seed
from syncenv import REPO

from mailsyncd.cli import hashpw
from mailsyncd.testing import free_port
from mailsyncd.store import Store
from mailsyncd.web import access, admin, i18n, samples
from mailsyncd.web.pages import format as fmt

A = "alice@example.com"
B = "bob@example.com"
PASSWORD = "dashboard-Secret-42"
HASH = hashpw.hash_password(PASSWORD)
CHROMIUM = os.environ.get("MAILSYNCD_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--disable-extensions"]
IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")
SCREENSHOT = os.path.join(REPO, "docs", "dashboard.png")
pytestmark = pytest.mark.timeout(300)


# -- plain HTTP ------------------------------------------------------------------------------------

@dataclass
class Resp:
    status: int
    headers: http.client.HTTPMessage
    text: str
    set_cookies: list[str]

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class Web:
    """A cookie jar; redirects are not followed."""

    def __init__(self, port: int, *, source: str | None = None, headers: dict | None = None):
        self.port, self.source, self.headers = port, source, headers or {}
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, fields: dict | None = None, headers: dict | None = None) -> Resp:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60,
                                          source_address=(self.source, 0) if self.source else None)
        h = dict(self.headers)
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if fields is not None:
            body = urllib.parse.urlencode(fields).encode()
            h["Content-Type"] = "application/x-www-form-urlencoded"
        h.update(headers or {})
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        set_cookies = r.headers.get_all("Set-Cookie") or []
        for c in set_cookies:
            name, _, rest = c.partition("=")
            if "max-age=0" in c.lower():
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = rest.split(";", 1)[0]
        return Resp(r.status, r.headers, data.decode("utf-8", "replace"), set_cookies)

    def get(self, path: str, **kw) -> Resp:
        return self.request("GET", path, **kw)

    def post(self, path: str, fields: dict, **kw) -> Resp:
        return self.request("POST", path, fields, **kw)

    def login(self, password: str = PASSWORD) -> Resp:
        page = self.get("/admin/login")
        assert page.status == 200, page
        return self.post("/admin/login", {"csrf": csrf_of(page.text), "next": "/admin", "password": password})


def csrf_of(page: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, page[-2000:]
    return m.group(1)


def dash_daemon(tmp_path, pair, *, password: str | None = HASH, web: dict | None = None,
                frontdoor: dict | None = None, pass_interval: float = 3600, sync: dict | None = None) -> Daemon:
    """listen.http on loopback; pass_interval long, so that only a login or "Sync now" starts a pass."""
    d = Daemon(tmp_path, pair, frontdoor=frontdoor, scheduler={"pass_interval": pass_interval}, sync=sync)
    d.http_port = free_port()
    d.doc["listen"]["http"] = f"127.0.0.1:{d.http_port}"
    if password:
        d.doc["admin"] = {"password_hash": password}
    if web:
        d.doc["web"] = web
    d.save()
    return d


def front_door_login(d: Daemon, pair, user: str = A) -> None:
    c = imaplib.IMAP4("127.0.0.1", d.imap_port)
    try:
        c.login(user, pair.users[user].old_password)
    finally:
        c.logout()


def wait_for(pred, timeout: float = 60, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or pred}")
        time.sleep(0.1)


# -- the browser -----------------------------------------------------------------------------------

def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (scripts/setup.sh: pip install -e '.[test]')"
    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (scripts/setup.sh: apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser():
    missing = _browser_missing()
    if missing:
        if IN_CI:
            pytest.fail(f"CI=true but {missing}", pytrace=False)
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def png_size(path: str) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_dashboard_in_a_real_browser(tmp_path, dovecot_pair, browser):
    from playwright.sync_api import expect
    seed(*dovecot_pair.source_account(A), {
        "INBOX": [Msg(make_message(i)) for i in range(5)],
        "Work": [Msg(make_message(100 + i)) for i in range(2)],
    })
    seed(*dovecot_pair.source_account(B), {"INBOX": [Msg(make_message(400 + i)) for i in range(4)]})
    # no watch: only "Sync now" may explain a copy (the watch's own views: the test after this one)
    with dash_daemon(tmp_path, dovecot_pair, sync={"watch": "off"}) as d:
        front_door_login(d, dovecot_pair, A)
        front_door_login(d, dovecot_pair, B)
        d.wait_log(f"event=pass_done account={A} ok=True", timeout=120)
        d.wait_log(f"event=pass_done account={B} ok=True", timeout=120)
        base = f"http://127.0.0.1:{d.http_port}"
        problems: list[str] = []

        def watch(page):
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("response", lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)

        ctx = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
        page = ctx.new_page()
        watch(page)

        # sign in (a wrong password first)
        page.goto(base + "/admin")
        assert page.url.startswith(base + "/admin/login?next=")
        page.fill("#password", "not-the-password")
        page.click("button[type=submit]")
        expect(page.locator(".error")).to_have_text("Wrong password.")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/admin")
        d.wait_log("event=admin_login ip=127.0.0.1")
        assert "event=admin_login_failed ip=127.0.0.1 reason=wrong_password" in d.log()
        assert PASSWORD not in d.log() and "not-the-password" not in d.log()

        # the overview: the domain, its totals, the live script and the vendored chart
        card = page.locator('section[data-domain-card="example.com"]')
        expect(card.locator("h2")).to_have_text("example.com")
        expect(card.locator('[data-d="example.com"][data-f="target_messages"]')).to_have_text("11")
        expect(card.locator('[data-d="example.com"][data-f="source_messages"]')).to_have_text("11")
        expect(card.locator('[data-f="percent"]')).to_have_text("100.0%")
        expect(card.locator('[data-f="phases.tailing"]')).to_have_text("2")
        expect(card.locator("li.phase-tailing")).to_contain_text("In sync")
        expect(page.locator("#live")).to_contain_text("Live", timeout=15000)
        expect(card.locator(".chart .uplot canvas")).to_have_count(1)

        # the accounts: search, then open alice's page
        page.click("nav >> text=Accounts")
        page.wait_for_url(base + "/admin/accounts")
        expect(page.locator("tr[data-row]")).to_have_count(2)
        page.fill("#q", "nobody")
        page.click("form.search button")
        expect(page.locator("tr[data-row]")).to_have_count(0)
        page.fill("#q", "alice")
        page.click("form.search button")
        expect(page.locator("tr[data-row]")).to_have_count(1)
        # the filters: status and domain in the form, totals by status on top; then pages of two
        imported = [f"imp{i}@example.com" for i in range(3)]
        store = Store.in_state_dir(d.state_dir)
        try:
            for address in imported:
                store.ensure_account(address, "example.com", "import")
        finally:
            store.close()
        page.fill("#q", "")
        page.select_option("#phase", "waiting")
        page.select_option("#domain", "example.com")
        page.click("form.search button")
        expect(page.locator("tr[data-row]")).to_have_count(3)
        expect(page.locator("li.phase-waiting b")).to_have_text("3")
        expect(page.locator("li.phase-tailing b")).to_have_text("0")
        page.click("li.phase-tailing a")                       # the same filter, another status
        expect(page.locator("tr[data-row]")).to_have_count(2)
        assert "domain=example.com" in page.url and "phase=tailing" in page.url
        page.goto(base + "/admin/accounts?limit=2")
        listed = page.locator("tr[data-row]").evaluate_all("rows => rows.map(r => r.dataset.row)")
        page.click("a[rel=next]")
        listed += page.locator("tr[data-row]").evaluate_all("rows => rows.map(r => r.dataset.row)")
        page.click("a[rel=next]")
        listed += page.locator("tr[data-row]").evaluate_all("rows => rows.map(r => r.dataset.row)")
        expect(page.locator("a[rel=next]")).to_have_count(0)
        assert listed == sorted([A, B] + imported)              # every account once, by address
        expect(page.locator("#live")).to_contain_text("Live", timeout=15000)   # its poll asks for this page
        page.click("a[rel=first]")
        expect(page.locator("tr[data-row]")).to_have_count(2)
        page.goto(base + "/admin/accounts?q=alice")
        page.click(f"tr[data-row='{A}'] td.addr a")
        page.wait_for_url(base + "/admin/accounts/alice@example.com")
        expect(page.locator("h1")).to_have_text(f"Account {A}")
        expect(page.locator("#target-count")).to_have_text("7")
        folders = page.locator("table").first.locator("tbody td.path")
        expect(folders).to_have_text(["INBOX", "Work"])
        expect(page.locator(".phase").first).to_have_text("In sync")

        # new mail at the source: nothing moves (the next pass is an hour away) until "Sync now"
        seed(*dovecot_pair.source_account(A), {"INBOX": [Msg(make_message(200 + i)) for i in range(3)]})
        passes = d.log().count(f"event=pass_start account={A}")
        assert d.status_after(writes=2)["scheduler"]["running"] == 0    # ticks went by, starting nothing
        assert d.log().count(f"event=pass_start account={A}") == passes
        page.click("button:has-text('Sync now')")
        expect(page.locator(".flash")).to_have_text(f"Sync requested for {A}.")
        expect(page.locator("#target-count")).to_have_text("10", timeout=60000)
        expect(page.locator("#source-count")).to_have_text("10")
        d.wait_log(f"event=admin_action ip=127.0.0.1 action=sync_now target={A} result=ok")

        # live: more mail, a sync asked for behind the page's back, and the open page follows by itself
        seed(*dovecot_pair.source_account(A), {"Work": [Msg(make_message(300 + i)) for i in range(2)]})
        token = page.locator("input[name=csrf]").first.get_attribute("value")
        r = page.request.post(base + "/admin/action", form={"csrf": token, "action": "sync_now", "target": A,
                                                            "back": "/admin"}, max_redirects=0)
        assert r.status == 303
        expect(page.locator("#target-count")).to_have_text("12", timeout=60000)
        expect(page.locator("#live")).to_contain_text("Live")
        page.reload()
        expect(page.locator(".flash")).to_have_text(f"Sync requested for {A}.")

        # the overview's screenshot, with the chart showing the copies
        page.goto(base + "/admin")
        expect(card.locator('[data-f="target_messages"]')).to_have_text("16")
        expect(card.locator(".chart .uplot canvas")).to_have_count(1)
        page.wait_for_timeout(5500)           # one more poll: one more point on the chart
        shot = str(tmp_path / "dashboard.png")
        page.screenshot(path=shot)
        assert png_size(shot) == (1280, 800)
        assert os.path.getsize(shot) < 400_000
        if os.environ.get("UPDATE_SCREENSHOT") == "1":
            shutil.copyfile(shot, SCREENSHOT)
        state = ctx.storage_state()

        # a phone: 375 px wide, no horizontal scrolling
        phone = browser.new_context(viewport={"width": 375, "height": 740}, device_scale_factor=2, is_mobile=True,
                                    has_touch=True, locale="en-US", storage_state=state)
        pp = phone.new_page()
        watch(pp)
        for path in ("/admin", "/admin/accounts", "/admin/accounts/alice@example.com"):
            pp.goto(base + path)
            expect(pp.locator("h1")).to_be_visible()
            pp.wait_for_timeout(300)
            assert no_horizontal_scroll(pp), (path, pp.evaluate("() => document.documentElement.scrollWidth"))
            pp.screenshot(path=str(tmp_path / f"phone{path.replace('/', '-')}.png"), full_page=True)
        phone.close()

        # Chinese, by Accept-Language; the switch goes back to English
        zh = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN", storage_state=state)
        zp = zh.new_page()
        watch(zp)
        zp.goto(base + "/admin")
        assert zp.locator("html").get_attribute("lang") == "zh-Hans"
        expect(zp.locator("h1")).to_have_text("概览")
        expect(zp.locator("li.phase-tailing")).to_contain_text("已同步")
        expect(zp.locator("#live")).to_contain_text("实时", timeout=15000)
        zp.screenshot(path=str(tmp_path / "zh.png"))
        zp.goto(base + "/admin/accounts/alice@example.com")
        expect(zp.locator("button:has-text('立即同步')")).to_have_count(1)
        zp.click("text=English")
        expect(zp.locator("h1")).to_have_text(f"Account {A}")
        zh.close()

        # without JavaScript: the same numbers, server-rendered
        nojs = browser.new_context(java_script_enabled=False, storage_state=state)
        np_ = nojs.new_page()
        np_.goto(base + "/admin")
        expect(np_.locator('[data-d="example.com"][data-f="target_messages"]')).to_have_text("16")
        expect(np_.locator("#live")).to_be_hidden()
        np_.goto(base + "/admin/accounts")                     # the filter form and the pages are plain HTML
        np_.select_option("#phase", "waiting")
        np_.click("form.search button")
        expect(np_.locator("tr[data-row]")).to_have_count(3)
        np_.goto(base + "/admin/accounts?limit=4")
        np_.click("a[rel=next]")
        expect(np_.locator("tr[data-row]")).to_have_count(1)
        nojs.close()

        ctx.close()
        assert not problems, problems        # no CSP violation, no script error


def test_failed_reload_banner_in_a_real_browser(tmp_path, dovecot_pair, browser):
    from playwright.sync_api import expect
    from test_status_broken_config import break_and_reload
    with dash_daemon(tmp_path, dovecot_pair, password=None) as d:
        break_and_reload(d)
        for locale, title, gen in (("en-US", "The last reload failed", "Configuration generation"),
                                   ("zh-CN", "上次重新加载配置失败", "配置代数")):
            ctx = browser.new_context(viewport={"width": 375, "height": 740}, locale=locale)
            page = ctx.new_page()
            page.goto(f"http://127.0.0.1:{d.http_port}/admin")
            banner = page.locator("#reload-failed")
            expect(banner).to_be_visible()
            expect(banner.locator("h2")).to_have_text(title)
            expect(banner.locator("pre.reload-error")).to_contain_text('"<b>x</b>": unknown key')  # as text
            expect(banner.locator("b")).to_have_count(0)                                        # not markup
            expect(banner.locator(f"dt:has-text('{gen}') + dd")).to_have_text("1")
            expect(banner.locator("code")).to_have_text(d.config_path)
            box, first = banner.bounding_box(), page.locator("section.card").first.bounding_box()
            assert box["y"] < first["y"]                                     # above the domains
            assert no_horizontal_scroll(page)
            ctx.close()
        assert "Traceback" not in d.log()


def test_newest_first_watch_and_new_mail_latency_on_every_view(tmp_path, dovecot_pair, browser):
    """Issue 14.4: the dashboard (live), the employee's page (English and Chinese) and /metrics show the
    account's newest-first stage, how its new mail is watched and the last new-mail latency."""
    from playwright.sync_api import expect
    seed(*dovecot_pair.source_account(A), {"INBOX": [Msg(make_message(i)) for i in range(3)]})
    latency = re.compile(r"^\d+\.\d s$")
    d = dash_daemon(tmp_path, dovecot_pair, password=None, sync={"watch": "idle"})
    d.doc["domains"]["example.com"]["plans"] = ["import", "login", "self_service"]
    d.save()
    with d:
        base = f"http://127.0.0.1:{d.http_port}"
        problems: list[str] = []
        ctx = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
        page = ctx.new_page()

        # the employee starts the move on the self-service page
        page.goto(base + "/")
        page.fill("#address", A)
        page.fill("#password", dovecot_pair.users[A].old_password)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/progress")
        d.wait_log(f"event=pass_done account={A} ok=True", timeout=120)
        d.wait_log(f"event=watch_idle account={A}", timeout=30)
        page.goto(base + "/progress")
        expect(page.locator("#stage")).to_have_text("Done")
        expect(page.locator("#watching")).to_have_text("arrives here within seconds")
        expect(page.locator("#new-mail-latency")).to_have_count(0)        # no new mail yet

        # the admin's views: the list and the account's page, before any new mail
        admin = ctx.new_page()
        admin.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        admin.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        admin.goto(base + "/admin/accounts")
        row = admin.locator(f"tr[data-row='{A}']")
        expect(row.locator('[data-f="stage"]')).to_have_text("Done")
        expect(row.locator('[data-f="watching"]')).to_have_text("IDLE")
        expect(row.locator('[data-f="new_mail_latency"]')).to_have_text("—")
        admin.goto(base + f"/admin/accounts/{A}")
        fact = admin.locator('dd[data-a="alice@example.com"][data-f="new_mail_latency"]')
        expect(admin.locator('dd[data-f="stage"]')).to_have_text("Done")
        expect(admin.locator('dd[data-f="watching"]')).to_have_text("IDLE")
        expect(fact).to_have_text("—")
        expect(admin.locator("#live")).to_contain_text("Live", timeout=15000)

        # new mail at the source: the watch copies it, and the open page shows its latency by itself
        seed(*dovecot_pair.source_account(A), {"INBOX": [Msg(make_message(50))]})
        d.wait_log(f"event=new_mail_copied account={A}", timeout=30)
        expect(fact).to_have_text(latency, timeout=15000)
        expect(admin.locator("#target-count")).to_have_text("4")
        shown = float(fact.inner_text().split()[0])
        logged = float(re.search(rf"event=new_mail_copied account={A} latency=([\d.]+)s", d.log()).group(1))
        assert abs(shown - logged) <= 0.11, (shown, logged)

        # the employee's page, in English and in Chinese
        page.goto(base + "/progress")
        expect(page.locator("#new-mail-latency")).to_have_text(latency)
        page.goto(base + "/progress?lang=zh")
        expect(page.locator("#watching")).to_have_text("几秒内即可在此看到")
        expect(page.locator("#stage")).to_have_text("已完成")
        expect(page.locator("#new-mail-latency")).to_have_text(re.compile(r"^\d+\.\d 秒$"))
        expect(page.locator("dt", has_text="最近一封新邮件的复制用时")).to_have_count(1)

        # the dashboard in Chinese
        zh = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
        zp = zh.new_page()
        zp.goto(base + f"/admin/accounts/{A}")
        expect(zp.locator('dd[data-f="watching"]')).to_have_text("IDLE 实时")
        expect(zp.locator('dd[data-f="stage"]')).to_have_text("完成")
        expect(zp.locator('dd[data-f="new_mail_latency"]')).to_have_text(re.compile(r"^\d+\.\d秒$"))
        expect(zp.locator("#live")).to_contain_text("实时", timeout=15000)
        expect(zp.locator('dd[data-f="new_mail_latency"]')).to_have_text(re.compile(r"^\d+\.\d秒$"))
        zh.close()

        # /metrics: watched accounts by mode, the watch's connections, the latencies as a histogram
        metrics = Web(d.http_port).get("/metrics").text
        assert re.search(r'^mailsyncd_watched_accounts\{mode="idle",node="[^"]+"\} 1\.0$', metrics, re.M), metrics
        assert re.search(r'^mailsyncd_watched_accounts\{mode="poll",node="[^"]+"\} 0\.0$', metrics, re.M)
        assert re.search(r'^mailsyncd_watch_connections\{node="[^"]+"\} 1\.0$', metrics, re.M)
        assert re.search(r'^mailsyncd_new_mail_latency_seconds_count\{node="[^"]+"\} 1\.0$', metrics, re.M)
        assert re.search(r'^mailsyncd_new_mail_latency_seconds_bucket\{le="\+Inf",node="[^"]+"\} 1\.0$',
                         metrics, re.M)
        total = float(re.search(r'^mailsyncd_new_mail_latency_seconds_sum\{node="[^"]+"\} (\S+)$',
                                metrics, re.M).group(1))
        assert abs(total - logged) <= 0.06, (total, logged)
        ctx.close()
        assert not problems, problems
    assert "Traceback" not in d.log()


# -- HTTP-level checks ------------------------------------------------------------------------------

def test_sign_in_session_csrf_and_headers(tmp_path, dovecot_pair):
    with dash_daemon(tmp_path, dovecot_pair, frontdoor={"ip_burst": 4}) as d:
        front_door_login(d, dovecot_pair)
        w = Web(d.http_port)
        r = w.get("/admin/accounts?q=x")
        assert r.status == 303 and r.header("Location") == "/admin/login?next=%2Fadmin%2Faccounts%3Fq%3Dx"
        assert w.get("/admin/status.json").status == 401
        assert w.get("/admin/series.json").status == 401
        r = w.get("/admin/login")
        csp = r.header("Content-Security-Policy")
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "default-src 'none'" in csp
        assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert r.header("X-Content-Type-Options") == "nosniff" and r.header("Cache-Control") == "no-store"
        assert "<script" not in r.text and ' style="' not in r.text
        # the static files, no session needed
        for name, ctype in (("admin.js", "text/javascript"), ("admin.css", "text/css"),
                            ("uPlot.iife.min.js", "text/javascript"), ("uPlot.min.css", "text/css")):
            s = Web(d.http_port).get("/admin/static/" + name)
            assert s.status == 200 and s.header("Content-Type").startswith(ctype), name
        assert "uPlot" in Web(d.http_port).get("/admin/static/uPlot.iife.min.js").text[:200]
        assert "MIT License" in Web(d.http_port).get("/admin/static/uPlot.LICENSE").text
        assert Web(d.http_port).get("/admin/static/../admin.py").status == 404

        # CSRF on the sign-in form, then a wrong and a right password
        assert w.post("/admin/login", {"csrf": "x" * 64, "password": PASSWORD}).status == 403
        r = w.login("wrong-password")
        assert r.status == 200 and "Wrong password." in r.text
        assert not any(c.startswith("mailsyncd-admin=") for c in r.set_cookies)
        r = w.login()
        assert r.status == 303 and r.header("Location") == "/admin"
        cookie = next(c for c in r.set_cookies if c.startswith("mailsyncd-admin="))
        flags = {f.strip().lower() for f in cookie.split(";")[1:]}
        assert flags == {"path=/", "httponly", "samesite=strict"}, flags       # no Secure on plain HTTP
        assert len(w.cookies["mailsyncd-admin"]) >= 43
        page = w.get("/admin")
        assert page.status == 200 and "example.com" in page.text and 'action="/admin/logout"' in page.text
        assert w.get("/admin/login").status == 303      # already signed in
        doc = w.get("/admin/status.json").text
        assert '"schema":1' in doc and A in doc
        assert '"accounts":[]' in w.get("/admin/status.json?accounts=none").text
        assert w.get("/admin/status.json?domain=nope.example").status == 404
        series = w.get("/admin/series.json")
        assert series.status == 200 and '"example.com"' in series.text and '"interval":10' in series.text

        # actions need the session's token: none, a wrong one, another session's
        token = csrf_of(w.get(f"/admin/accounts/{A}").text)
        other = Web(d.http_port)
        assert other.login().status == 303
        other_token = csrf_of(other.get("/admin").text)
        assert other_token != token
        for fields in ({"action": "sync_now", "target": A},
                       {"action": "sync_now", "target": A, "csrf": "0" * 43},
                       {"action": "sync_now", "target": A, "csrf": other_token}):
            assert w.post("/admin/action", fields).status == 403
        assert Web(d.http_port).post("/admin/action", {"action": "sync_now", "target": A, "csrf": token}
                                     ).status == 303     # no session: to the sign-in page
        assert "event=admin_action" not in d.log()
        assert d.log().count("event=admin_csrf_refused ip=127.0.0.1 what=action") == 3
        r = w.post("/admin/action", {"action": "sync_now", "target": A, "csrf": token,
                                     "back": "https://evil.example/"})
        assert r.status == 303 and r.header("Location") == "/admin"       # no open redirect
        assert f"Sync requested for {A}." in w.get("/admin").text
        assert "Sync requested" not in w.get("/admin").text                 # said once
        r = w.post("/admin/action", {"action": "retry", "target": "nobody@example.com", "csrf": token,
                                     "back": "/admin/accounts"})
        assert r.header("Location") == "/admin/accounts"
        assert "nobody@example.com is not in the scheduler" in w.get("/admin/accounts").text
        d.wait_log("event=admin_action ip=127.0.0.1 action=retry target=nobody@example.com result=refused")

        # sign out
        assert other.post("/admin/logout", {"csrf": "nope"}).status == 403
        r = other.post("/admin/logout", {"csrf": other_token})
        assert r.status == 303 and r.header("Location") == "/admin/login" and "mailsyncd-admin" not in other.cookies
        other.cookies["mailsyncd-admin"] = "A" * 43                     # a made-up cookie is no session
        assert other.get("/admin").status == 303

        # the idle timeout (polls do not keep a session alive, pages do): test_web_access.py, on a fake clock

        # throttled: 4 tries per address, then 429 even with the right password; others unaffected
        t = Web(d.http_port, source="127.0.0.5")
        for _ in range(4):
            assert "Wrong password." in t.login("guess").text
        r = t.login()
        assert r.status == 429 and "Too many attempts" in r.text and r.header("Retry-After") == "60"
        assert "event=admin_login_failed ip=127.0.0.5 reason=throttled" in d.log()
        assert Web(d.http_port, source="127.0.0.6").login().status == 303


def test_without_a_password_only_this_machine(tmp_path, dovecot_pair):
    with dash_daemon(tmp_path, dovecot_pair, password=None) as d:
        w = Web(d.http_port)
        r = w.get("/admin")
        assert r.status == 200 and "example.com" in r.text and "mailsyncd-admin" in w.cookies
        assert 'action="/admin/logout"' not in r.text                       # nothing to sign out of
        assert w.get("/admin/login").header("Location") == "/admin"
        assert w.get("/admin/status.json").status == 200
        # through a proxy we were not told about: not local, whatever its address
        for h in ({"X-Forwarded-For": "203.0.113.9"}, {"X-Real-IP": "203.0.113.9"}, {"Forwarded": "for=1.2.3.4"}):
            r = Web(d.http_port).get("/admin", headers=h)
            assert r.status == 403 and "mailsyncctl hash-password" in r.text and "password_hash" in r.text, h
            assert Web(d.http_port).get("/admin/status.json", headers=h).status == 403
            # a local session does not help from there
            assert w.get("/admin", headers=h).status == 403
        assert "event=admin_refused ip=127.0.0.1 reason=not_loopback" in d.log()
        # Chinese page for the refusal
        r = Web(d.http_port, headers={"Accept-Language": "zh-CN", "X-Forwarded-For": "203.0.113.9"}).get("/admin")
        assert r.status == 403 and "仅限本机" in r.text
    # behind a trusted proxy: its client decides
    d.doc["web"] = {"trusted_proxies": ["127.0.0.1"]}
    d.save()
    with d:
        assert Web(d.http_port).get("/admin", headers={"X-Forwarded-For": "203.0.113.9"}).status == 403
        assert Web(d.http_port).get("/admin", headers={"X-Forwarded-For": "127.0.0.1"}).status == 200
        d.wait_log("event=admin_refused ip=203.0.113.9 reason=not_loopback")


def on_backend(d: Daemon, request, store_backend: str) -> Daemon:
    """The daemon's state in a PostgreSQL database of the test's own, if ``store_backend`` says so."""
    from syncenv import on_backend as config_on_backend
    config_on_backend(d.config_path, request, store_backend)
    with open(d.config_path) as f:
        d.doc = yaml.safe_load(f)
    return d


def open_store(d: Daemon) -> Store:
    """The daemon's store, as `mailsyncctl` opens it (SQLite in state_dir or the config's database)."""
    from mailsyncd.config import load_config
    return Store.open(load_config(d.config_path))


def cutover_row(d: Daemon) -> dict | None:
    store = open_store(d)
    try:
        return store.cutover("example.com")
    finally:
        store.close()


def test_cutover_actions(tmp_path, dovecot_pair, store_backend, request):
    """On both backends: the actions write the cluster's one cutover row."""
    with on_backend(dash_daemon(tmp_path, dovecot_pair), request, store_backend) as d:
        front_door_login(d, dovecot_pair)
        d.wait_log(f"event=pass_done account={A} ok=True", timeout=120)
        w = Web(d.http_port)
        assert w.login().status == 303
        page = w.get("/admin")
        assert "Not scheduled" in page.text and "Schedule in" in page.text
        token = csrf_of(page.text)

        def act(**fields) -> str:
            r = w.post("/admin/action", {"csrf": token, "target": "example.com", "back": "/admin", **fields})
            assert r.status == 303 and r.header("Location") == "/admin"
            return w.get("/admin").text

        t0 = time.time()
        text = act(action="postpone", hours="24")
        row = cutover_row(d)
        assert row["state"] == "scheduled" and row["note"] == "postponed from the dashboard"
        assert t0 + 86400 - 5 < row["at"] < time.time() + 86400 + 5
        assert "Cutover of example.com scheduled for" in text and "Postpone by" in text
        text = act(action="postpone", hours="6")                  # from the planned time, not from now
        assert abs(cutover_row(d)["at"] - row["at"] - 6 * 3600) < 1
        text = act(action="postpone", at="2999-01-02T03:04:05+08:00")
        assert cutover_row(d)["at"] == 32472212645.0
        assert "Not a time" in act(action="postpone", at="next tuesday")
        assert "in the past" in act(action="postpone", at="2001-01-01T00:00:00Z")
        assert "Unknown domain" in act(action="postpone", hours="5")
        w.post("/admin/action", {"csrf": token, "action": "postpone", "hours": "1", "target": "other.example"})
        assert "Unknown domain" in w.get("/admin").text
        text = act(action="cancel_cutover")
        assert cutover_row(d)["state"] == "cancelled" and "Cutover of example.com cancelled." in text
        assert "Cancelled" in text
        assert "Please tick the box" in act(action="cutover_now")
        assert cutover_row(d)["state"] == "cancelled"
        text = act(action="cutover_now", confirm="yes")
        assert "starts now" in text
        d.wait_log("event=cutover_done domain=example.com", timeout=120)
        assert wait_for(lambda: cutover_row(d)["state"] == "done", what="done")
        text = act(action="postpone", hours="1")
        assert "already" in text and cutover_row(d)["state"] == "done"
        assert 'Cut over: <b data-d="example.com" data-f="phases.cutover" data-fmt="num">1</b>' in text
        log = d.log()
        for action, result in (("postpone", "ok"), ("cancel_cutover", "ok"), ("cutover_now", "refused"),
                               ("cutover_now", "ok")):
            assert f"event=admin_action ip=127.0.0.1 action={action} target=example.com result={result}" in log


def test_accounts_search_filters_pages_and_escaping(tmp_path, dovecot_pair, store_backend, request):
    """On both backends: the filters, totals and keyset pages are the store's queries."""
    seed(*dovecot_pair.source_account(A), {"INBOX": [Msg(make_message(i)) for i in range(3)]})
    with on_backend(dash_daemon(tmp_path, dovecot_pair), request, store_backend) as d:
        front_door_login(d, dovecot_pair, A)
        front_door_login(d, dovecot_pair, B)
        d.wait_log(f"event=pass_done account={A} ok=True", timeout=120)
        d.wait_log(f"event=pass_done account={B} ok=True", timeout=120)
        evil = '"><script>alert(1)</script>@example.com'
        store = open_store(d)
        try:
            store.ensure_account(evil, "example.com", "import")
            store.set_phase(B, "failed", "<b>source said NO</b>")
        finally:
            store.close()
        w = Web(d.http_port)
        assert w.login().status == 303

        def rows(query: str) -> list[str]:
            r = w.get("/admin/accounts" + query)
            assert r.status == 200
            assert "<script>alert" not in r.text and "<b>source" not in r.text
            return re.findall(r'<tr data-row="([^"]*)"', r.text)

        esc_evil = "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;@example.com"
        assert rows("") == [esc_evil, A, B]        # by address: a page of a filter, never a sort of them all
        assert "&lt;b&gt;source said NO&lt;/b&gt;" in w.get("/admin/accounts").text
        assert rows("?q=ALI") == [A]
        assert rows("?phase=failed") == [B]
        assert rows("?phase=waiting") == [esc_evil]
        assert rows("?domain=example.com&phase=tailing&q=a") == [A]
        # totals of the filter on top, by status, each a link to that status within the filter
        text = w.get("/admin/accounts?q=example").text
        assert "Showing 3 of 3 accounts." in text and 'href="/admin/accounts?q=example&amp;phase=failed"' in text
        assert re.search(r'phase-failed"><a [^>]*>Failed: <b>1</b>', text), text
        # pages: plain links, each account once
        first = w.get("/admin/accounts?limit=2").text
        assert re.findall(r'<tr data-row="([^"]*)"', first) == [esc_evil, A]
        assert "Showing 2 of 3 accounts." in first and 'rel="first"' not in first
        nxt = html.unescape(re.search(r'<a href="([^"]*)" rel="next">', first).group(1))
        assert rows(nxt.removeprefix("/admin/accounts")) == [B]
        last = w.get(nxt).text
        assert 'rel="next"' not in last and 'rel="first"' in last
        assert re.search(r'data-status="/admin/status.json\?cursor=[\w-]+&amp;limit=2"', last)  # this page only
        for query, words in (("?phase=bogus", "phase: &#x27;bogus&#x27; is not one of"),
                             ("?cursor=nope", "cursor: not a cursor this server gave"),
                             ("?limit=5000", "limit: 5000 is out of range")):
            r = w.get("/admin/accounts" + query)
            assert r.status == 400 and words in r.text, (query, r.text[-600:])
        r = w.get("/admin/status.json?phase=bogus")
        assert r.status == 400 and json.loads(r.text)["error"].startswith("phase: 'bogus'")
        assert [a["address"] for a in json.loads(w.get("/admin/status.json?phase=failed").text)["accounts"]] == [B]
        overview = w.get("/admin").text
        assert "Failed accounts (1)" in overview and "&lt;b&gt;source said NO" in overview
        page = w.get("/admin/accounts/" + urllib.parse.quote(evil, safe="@"))
        assert page.status == 200 and "<script>alert" not in page.text
        assert w.get("/admin/accounts/nobody@example.com").status == 404
        acct = w.get(f"/admin/accounts/{A}").text
        assert "INBOX" in acct and 'id="target-count"' in acct and "Recent passes" in acct


# -- units -------------------------------------------------------------------------------------------

def test_hash_password_and_the_command(monkeypatch, capsys):
    h = hashpw.hash_password("s3cret-enough!")
    assert h.startswith("$argon2id$") and access.verify_password(h, "s3cret-enough!")
    assert not access.verify_password(h, "wrong") and not access.verify_password("$argon2id$junk", "x")
    with pytest.raises(ValueError):
        hashpw.hash_password("")

    monkeypatch.setattr("sys.stdin", io.StringIO("from-a-pipe-password\n"))
    assert hashpw.cmd_hash_password(None) == 0
    out, err = capsys.readouterr()
    assert access.verify_password(out.strip(), "from-a-pipe-password") and "password_hash" in err

    class Tty(io.StringIO):
        def isatty(self):
            return True

    answers = iter(["typed-twice-password", "typed-twice-password"])
    monkeypatch.setattr("sys.stdin", Tty())
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert hashpw.cmd_hash_password(None) == 0
    assert access.verify_password(capsys.readouterr().out.strip(), "typed-twice-password")
    answers = iter(["one", "another"])
    assert hashpw.cmd_hash_password(None) == 1
    assert "differ" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert hashpw.cmd_hash_password(None) == 1


def test_small_helpers():
    assert fmt.duration(None, "en") == "—"
    assert fmt.duration(42, "en") == "42 s" and fmt.duration(42, "zh") == "42秒"
    assert fmt.duration(3 * 3600 + 5 * 60, "en") == "3 h 05 min"
    assert fmt.duration(3 * 86400 + 7200, "en") == "3 d 2 h"
    assert samples.series_rates([0, 10, 20, 30], [0, 10, 10, 5]) == [None, 60.0, 0.0, 0.0]
    assert fmt.sparkline([None, 1.0]) == "" and "<polyline" in fmt.sparkline([None, 1.0, 3.0])
    for bad in ("https://x.example/", "//x.example/admin", "/admin//x", "/adminx\r\nSet-Cookie: a=b", "/other",
                "", None):
        assert admin.safe_back(bad) == "/admin", bad
    assert admin.safe_back("/admin/accounts?q=a&sort=behind") == "/admin/accounts?q=a&sort=behind"
    assert access.loopback_ip("127.0.0.9") and access.loopback_ip("::1") and access.loopback_ip("::ffff:127.0.0.1")
    assert not access.loopback_ip("10.0.0.1") and not access.loopback_ip("localhost") and not access.loopback_ip(None)
    assert admin.parse_when("2026-12-31T18:00+08:00") == 1798711200.0 and admin.parse_when("2026-12-31") is None
    assert set(i18n.WORDS["en"]) == set(i18n.WORDS["zh"])
