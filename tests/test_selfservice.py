"""Plan 3, the self-service page: the real daemon, real Dovecot servers and a real HTTP(S) client."""

from __future__ import annotations

import datetime as dt
import http.client
import re
import threading
import urllib.parse
from dataclasses import dataclass

import pytest
from proxyenv import Daemon
from secretscan import assert_no_secrets
from seed import Msg, make_message, seed, snapshot
from syncenv import ctl

from mailsyncd.testing import free_port

A = "alice@example.com"
B = "bob@example.com"
D = dt.datetime(2023, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
ALL_PLANS = ["import", "login", "self_service"]
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
pytestmark = pytest.mark.timeout(180)


# -- a small browser ---------------------------------------------------------------------------

@dataclass
class Resp:
    status: int
    headers: http.client.HTTPMessage
    text: str
    set_cookies: list[str]

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class Web:
    """One cookie jar, redirects not followed, a fresh connection per request; records every URL asked."""

    def __init__(self, port: int, ctx=None, *, accept_language: str | None = None, source: str | None = None):
        self.port, self.ctx, self.source = port, ctx, source
        self.accept_language = accept_language
        self.cookies: dict[str, str] = {}
        self.urls: list[str] = []

    def request(self, method: str, path: str, fields: dict | None = None, *, body: bytes | None = None,
                headers: dict | None = None) -> Resp:
        src = (self.source, 0) if self.source else None
        if self.ctx is not None:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=60,
                                               source_address=src)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60, source_address=src)
        h = {}
        if self.accept_language:
            h["Accept-Language"] = self.accept_language
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if fields is not None:
            body = urllib.parse.urlencode(fields).encode()
            h["Content-Type"] = "application/x-www-form-urlencoded"
        h.update(headers or {})
        self.urls.append(path)
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        set_cookies = r.headers.get_all("Set-Cookie") or []
        for c in set_cookies:
            name, _, rest = c.partition("=")
            value = rest.split(";", 1)[0]
            if "max-age=0" in c.lower():
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return Resp(r.status, r.headers, data.decode("utf-8", "replace"), set_cookies)

    def get(self, path: str, **kw) -> Resp:
        return self.request("GET", path, **kw)

    def post(self, path: str, fields: dict, **kw) -> Resp:
        return self.request("POST", path, fields, **kw)

    def start(self, address: str, password: str, new_address: str | None = None, **extra) -> Resp:
        form = self.get("/")
        assert form.status == 200, form
        fields = {"csrf": csrf_of(form.text), "address": address, "password": password, **extra}
        if new_address is not None:
            fields["new_address"] = new_address
        return self.post("/start", fields)

    def session_cookie(self) -> str | None:
        return next((v for k, v in self.cookies.items() if k.endswith("mailsyncd-session")), None)


def csrf_of(page: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, page
    return m.group(1)


def web_daemon(tmp_path, pair, cert=None, *, plans=ALL_PLANS, allow_rename=None, web=None, **kw) -> Daemon:
    d = Daemon(tmp_path, pair, cert, **kw)
    d.http_port = free_port()
    d.doc["listen"]["http"] = f"127.0.0.1:{d.http_port}"
    if web:
        d.doc["web"] = web
    dom = d.doc["domains"]["example.com"]
    dom["plans"] = list(plans)
    if allow_rename is not None:
        dom["allow_rename"] = allow_rename
    d.save()
    return d


def status_file(d: Daemon) -> dict:
    return d.status_after()


def source_mismatches(pair) -> int:
    with open(pair.source.log_path, errors="replace") as f:
        return f.read().count("Password mismatch")


def open_store(tmp_path):
    """The store as `mailsyncctl` opens it: SQLite in state_dir, or the config's database."""
    from mailsyncd.config import load_config
    from mailsyncd.store import Store
    return Store.open(load_config(str(tmp_path / "mailsyncd.yaml")))


@pytest.fixture
def web(tmp_path, dovecot_pair):
    with web_daemon(tmp_path, dovecot_pair) as d:
        yield d


def on_backend(d: Daemon, request, store_backend: str) -> Daemon:
    """The daemon's state in a PostgreSQL database of the test's own, if ``store_backend`` says so."""
    import yaml
    from syncenv import on_backend as config_on_backend
    config_on_backend(d.config_path, request, store_backend)
    with open(d.config_path) as f:
        d.doc = yaml.safe_load(f)
    return d


@pytest.fixture
def web_on_backend(tmp_path, dovecot_pair, store_backend, request):
    with on_backend(web_daemon(tmp_path, dovecot_pair), request, store_backend) as d:
        yield d


# -- the form ------------------------------------------------------------------------------------

def test_form_in_english_or_chinese_by_accept_language_and_the_switch(web):
    english, chinese = "Old email address", "旧邮箱地址"
    for header, want in ((None, "en"), ("en-US,en;q=0.9", "en"), ("de-DE, fr;q=0.8", "en"),
                         ("zh-CN,zh;q=0.9,en;q=0.8", "zh"), ("zh", "zh"), ("zh-TW", "zh"), ("zh-Hant-HK", "zh"),
                         ("fr, zh;q=0.5, en;q=0.3", "zh"), ("en;q=0.4, zh;q=0.6", "zh"),
                         ("en-GB,en;q=0.9,zh;q=0.8", "en"), ("zh;q=0, en", "en"), ("*", "en")):
        r = Web(web.http_port, accept_language=header).get("/")
        assert r.status == 200, (header, r.status)
        assert r.header("Content-Type") == "text/html; charset=utf-8"
        if want == "zh":
            assert chinese in r.text and english not in r.text, header
            assert '<html lang="zh-Hans">' in r.text
        else:
            assert english in r.text and chinese not in r.text, header
            assert '<html lang="en">' in r.text
    # the manual switch wins over the header, and is remembered
    w = Web(web.http_port, accept_language="en-US")
    assert chinese in w.get("/?lang=zh").text
    assert chinese in w.get("/").text
    page = w.get("/?lang=en").text
    assert english in page and 'href="/?lang=zh"' in page
    assert english in Web(web.http_port, accept_language="en").get("/?lang=xx").text
    # a phone-friendly page without scripts; no new-address field where no domain allows renaming
    assert 'name="viewport"' in page and "<script" not in page
    assert 'name="password"' in page and 'type="password"' in page and 'action="/start"' in page
    assert 'name="new_address"' not in page


def test_security_headers_and_small_routes(web):
    w = Web(web.http_port)
    for path, status in (("/", 200), ("/healthz", 200), ("/static/style.css", 200), ("/static/localtime.js", 200),
                         ("/nope", 404),
                         ("/start", 405), ("/progress", 303)):
        r = w.get(path)
        assert r.status == status, (path, r.status)
        for k, v in SECURITY_HEADERS.items():
            assert r.header(k) == v, (path, k, r.header(k))
        assert r.header("Strict-Transport-Security") is None     # plain HTTP (loopback)
        assert "Twisted" not in (r.header("Server") or "")
    assert w.get("/").header("Cache-Control") == "no-store"
    r = w.get("/healthz")
    assert r.text == "ok\n" and r.header("Content-Type").startswith("text/plain")
    r = w.get("/static/style.css")
    assert r.header("Content-Type").startswith("text/css") and "progress" in r.text
    r = w.get("/start")
    assert r.header("Allow") == "POST"
    assert w.get("/progress").header("Location") == "/"
    assert w.request("HEAD", "/healthz").status == 200
    assert w.request("PUT", "/", body=b"x").status == 405
    assert w.request("GET", "/logout").status == 405


# -- refusals ------------------------------------------------------------------------------------

def test_csrf_missing_or_wrong_is_refused_and_nothing_starts(web, dovecot_pair):
    pw = dovecot_pair.users[A].old_password
    attacker = Web(web.http_port)
    # no cookie, no token (a cross-site form post)
    r = attacker.post("/start", {"address": A, "password": pw})
    assert r.status == 403 and "This form has expired" in r.text
    # a cookie but a wrong token
    w = Web(web.http_port)
    w.get("/")
    r = w.post("/start", {"csrf": "0" * 64, "address": A, "password": pw})
    assert r.status == 403
    # another browser's token with this browser's cookie
    other = Web(web.http_port)
    token = csrf_of(other.get("/").text)
    assert token != csrf_of(w.get("/").text)
    assert w.post("/start", {"csrf": token, "address": A, "password": pw}).status == 403
    # the token but no cookie
    fresh = Web(web.http_port)
    assert fresh.post("/start", {"csrf": token, "address": A, "password": pw}).status == 403
    for b in (attacker, w, other, fresh):
        assert b.session_cookie() is None
    # not a form, too big a form
    w2 = Web(web.http_port)
    form = w2.get("/")
    assert w2.request("POST", "/start", body=b'{"address": 1}', headers={"Content-Type": "application/json"}
                      ).status == 400
    r = w2.post("/start", {"csrf": csrf_of(form.text), "address": A, "password": pw, "pad": "x" * 20000})
    assert r.status == 413
    assert w2.session_cookie() is None
    assert status_file(web)["logins"] == {"ok": 0, "failed": 0, "source_checks": 0}
    log = web.log()                                       # as of a status write after the last request
    assert log.count("event=selfservice_csrf_refused ip=127.0.0.1") == 4
    assert "selfservice_start" not in log and "event=login_ok" not in log and "pass_start" not in log
    assert source_mismatches(dovecot_pair) == 0


def test_wrong_password_shows_an_error_and_starts_nothing(web, dovecot_pair, tmp_path):
    w = Web(web.http_port)
    r = w.start(A, "not-her-password")
    assert r.status == 200
    assert "The email address or password is not correct." in r.text
    assert "not-her-password" not in r.text
    assert f'value="{A}"' in r.text                      # the address is kept, the password is not
    assert w.session_cookie() is None and r.header("Location") is None
    assert w.get("/progress").status == 303
    # an unknown user and an unknown domain read exactly the same
    r2 = w.start("nobody@example.com", "whatever-1")
    r3 = w.start("alice@elsewhere.org", "whatever-2")
    assert r.text.replace(A, "X") == r2.text.replace("nobody@example.com", "X") \
        == r3.text.replace("alice@elsewhere.org", "X")
    # in Chinese
    zh = Web(web.http_port, accept_language="zh-CN")
    assert "邮箱地址或密码不正确" in zh.start(A, "still-wrong").text
    # missing fields: no check at all
    r = w.post("/start", {"csrf": csrf_of(w.get("/").text), "address": A, "password": ""})
    assert r.status == 200 and "Please enter your email address and password." in r.text
    # what is typed is escaped
    evil = '"><script>alert(1)</script>@example.com'
    r = w.start(evil, "x")
    assert "<script>" not in r.text and "&lt;script&gt;" in r.text and "&quot;&gt;" in r.text
    log = web.log()
    assert re.search(r"event=selfservice_failed ip=127\.0\.0\.1 user=alice@example\.com reason='wrong password", log)
    assert "event=selfservice_start" not in log and "event=pass_start" not in log
    web.stop()
    store = open_store(tmp_path)
    try:
        assert store.account(A) is None and store.secret_password(A) is None
    finally:
        store.close()


def test_a_domain_without_self_service_says_so(tmp_path, dovecot_pair):
    with web_daemon(tmp_path, dovecot_pair, plans=["import", "login"]) as d:
        w = Web(d.http_port)
        r = w.start(A, dovecot_pair.users[A].old_password)
        assert r.status == 200 and w.session_cookie() is None
        assert "Self-service migration is not enabled for your domain" in r.text
        zh = Web(d.http_port, accept_language="zh-TW")
        assert "未开放自助迁移" in zh.start(A, dovecot_pair.users[A].old_password).text
        assert "plan 'self_service' is not enabled for example.com" in d.log()
        assert status_file(d)["logins"]["source_checks"] == 0
        assert "event=pass_start" not in d.log()


# -- plan 3, end to end --------------------------------------------------------------------------

def test_self_service_migrates_the_mailbox_over_https(tmp_path, dovecot_pair, test_cert):
    pw = dovecot_pair.users[A].old_password
    wrong = "Wr0ng-web-secret-" + "y" * 6
    seed(*dovecot_pair.source_account(A), {
        "INBOX": [Msg(make_message(i), ("\\Seen",), D) for i in range(5)],
        "Work": [Msg(make_message(100 + i)) for i in range(3)],
        "R&D <x>": [Msg(make_message(200), ("\\Flagged",), D)],
        "客户/重要": [Msg(make_message(300 + i)) for i in range(2)],
    })
    with web_daemon(tmp_path, dovecot_pair, test_cert) as d:
        w = Web(d.http_port, d.client_tls())
        r = w.get("/")
        assert r.header("Strict-Transport-Security") == "max-age=31536000"
        assert r.status == 200 and all(r.header(k) == v for k, v in SECURITY_HEADERS.items())
        assert "The email address or password" in w.start(A, wrong).text
        assert w.session_cookie() is None
        r = w.start(A, pw)
        assert r.status == 303 and r.header("Location") == "/progress"
        session = [c for c in r.set_cookies if c.startswith("__Host-mailsyncd-session=")]
        assert len(session) == 1, r.set_cookies
        flags = [f.strip().lower() for f in session[0].split(";")[1:]]
        assert {"httponly", "samesite=strict", "secure", "path=/"} <= set(flags), flags
        assert not any(f.startswith(("domain", "expires", "max-age")) for f in flags)
        assert len(w.session_cookie()) >= 43                     # 32 random bytes
        assert all("; Secure" in c for c in r.set_cookies + w.get("/").set_cookies)
        assert all(pw not in c and wrong not in c for c in r.set_cookies)
        d.wait_log("event=selfservice_start ip=127.0.0.1 user=alice@example.com")
        page = w.get("/progress")
        assert page.status == 200 and page.header("Cache-Control") == "no-store"
        assert '<meta http-equiv="refresh" content="5;url=/progress?auto=1">' in page.text and "<progress" in page.text
        assert "alice@example.com" in page.text
        d.wait_log("event=pass_done account=alice@example.com ok=True", timeout=120)
        assert snapshot(*dovecot_pair.source_account(A)) == snapshot(*dovecot_pair.target_account(A))
        page = w.get("/progress").text
        assert "In sync" in page and "phase-tailing" in page
        assert '<progress id="overall" value="11" max="11">' in page
        assert "11 of 11 messages on the new server" in page
        rows = dict(re.findall(r'<tr><td class="path">([^<]*)</td>((?:<td[^>]*>[^<]*</td>)+)</tr>', page))
        assert set(rows) == {"INBOX", "Work", "R&amp;D &lt;x&gt;", "客户/重要"}, rows
        nums = {k: re.findall(r'<td class="num[^"]*">([^<]*)</td>', v) for k, v in rows.items()}
        assert nums == {"INBOX": ["5", "5", "0"], "Work": ["3", "3", "0"], "R&amp;D &lt;x&gt;": ["1", "1", "0"],
                        "客户/重要": ["2", "2", "0"]}, nums
        assert "<x>" not in page
        zh = w.get("/progress?lang=zh").text
        assert "已同步" in zh and "文件夹" in zh and "客户/重要" in zh
        w.get("/?lang=en")
        # sign out: the session ends, the cookie is cleared
        token = w.session_cookie()
        r = w.post("/logout", {"csrf": csrf_of(page)})
        assert r.status == 303 and r.header("Location") == "/" and w.session_cookie() is None
        w.cookies["__Host-mailsyncd-session"] = token          # replaying the old cookie does not help
        assert w.get("/progress").status == 303
        assert status_file(d)["logins"]["ok"] == 1
    store = open_store(tmp_path)
    try:
        assert store.account(A)["plan"] == "self_service"
    finally:
        store.close()
    # the password is in no URL, no log line, no file of ours
    assert not any(pw in u or wrong in u for u in w.urls)
    secrets = [pw, wrong, urllib.parse.quote(pw), urllib.parse.quote(wrong), dovecot_pair.master[1]]
    assert_no_secrets(tmp_path, secrets, must_scan=("mailsyncd.log", "mailsyncd.yaml", "state/mailsyncd.sqlite3"))


def test_progress_lists_skipped_messages_with_their_reasons(make_dovecot, tmp_path):
    from conftest import MASTER, SOURCE_USERS, DovecotPair
    src = make_dovecot("source", SOURCE_USERS)
    tgt = make_dovecot("target", {A: "x", B: "y"}, master=MASTER, extra_conf="""
mail_plugins = $mail_plugins quota
plugin {
  quota = maildir:User quota
  quota_max_mail_size = 100k
}""")
    pair = DovecotPair(src, tgt, {})
    seed("127.0.0.1", src.imap_port, A, SOURCE_USERS[A],
         {"INBOX": [Msg(make_message(1)), Msg(make_message(2, size=300_000)), Msg(make_message(3))]})
    with web_daemon(tmp_path, pair) as d:
        w = Web(d.http_port)
        assert w.start(A, SOURCE_USERS[A]).status == 303
        d.wait_log("event=pass_done account=alice@example.com", timeout=120)
        page = w.get("/progress").text
        assert "Messages that could not be copied: 1 (listed below)." in page
        assert '<progress id="overall" value="2" max="3">' in page and "2 of 3 messages" in page
        skipped = re.search(r"<h2>Messages that could not be copied</h2><table>.*?<tbody>(.*?)</tbody>", page)
        assert skipped, page
        cells = re.findall(r"<td[^>]*>([^<]*)</td>", skipped.group(1))
        assert cells[0] == "INBOX" and cells[1].endswith("KiB") and cells[2].startswith("target refused: "), cells
        row = re.search(r'<tr><td class="path">INBOX</td>((?:<td[^>]*>[^<]*</td>)+)</tr>', page).group(1)
        assert re.findall(r'<td class="num[^"]*">([^<]*)</td>', row) == ["3", "2", "1"]


def test_progress_needs_a_session_and_reloads_without_keeping_it(tmp_path, dovecot_pair):
    """The expiry itself is policy, tested with a fake clock (test_web_access.py); here: the cookie,
    the page's reload URL (which does not count as activity), and that sign-out and made-up cookies end it."""
    with web_daemon(tmp_path, dovecot_pair, web={"session_idle": 1.5, "session_max": 5}) as d:
        assert "event=web_sessions idle=1.5s max=5s" in d.log()
        w = Web(d.http_port)
        r = w.start(A, dovecot_pair.users[A].old_password)
        assert r.status == 303
        cookie = next(c for c in r.set_cookies if c.startswith("mailsyncd-session="))
        flags = {f.strip().lower() for f in cookie.split(";")[1:]}
        assert flags == {"path=/", "httponly", "samesite=strict"}, flags     # no Secure on plain HTTP
        page = w.get("/progress")
        assert page.status == 200 and '<meta http-equiv="refresh" content="5;url=/progress?auto=1">' in page.text
        assert w.get("/progress?auto=1").status == 200
        # a made-up cookie is no session
        w.cookies["mailsyncd-session"] = "A" * 43
        assert w.get("/progress").status == 303


# -- renaming --------------------------------------------------------------------------------------

OLD_ALICE, OLD_BOB = "old.alice@example.com", "old.bob@example.com"


def rename_pair(make_dovecot):
    from conftest import MASTER, DovecotPair
    src = make_dovecot("source", {OLD_ALICE: "old-alice-pw", OLD_BOB: "old-bob-pw"})
    tgt = make_dovecot("target", {A: "new-alice-pw", B: "new-bob-pw"}, master=MASTER)
    return DovecotPair(src, tgt, {})


def test_renaming_when_the_domain_allows_it(make_dovecot, tmp_path, store_backend, request):
    """On both backends: the rename's conflict check is the store's query."""
    pair = rename_pair(make_dovecot)
    src = ("127.0.0.1", pair.source.imap_port, OLD_ALICE, "old-alice-pw")
    seed(*src, {"INBOX": [Msg(make_message(i), ("\\Seen",), D) for i in range(4)],
                "Archive/2020": [Msg(make_message(50 + i)) for i in range(2)]})
    with on_backend(web_daemon(tmp_path, pair, allow_rename=True), request, store_backend) as d:
        w = Web(d.http_port)
        form = w.get("/").text
        assert 'name="new_address"' in form and "Leave empty to keep the same address." in form
        assert "新邮箱地址" in Web(d.http_port, accept_language="zh").get("/").text
        # a rename the administrator did not import is refused, even with the right old password
        r = w.start(OLD_ALICE, "old-alice-pw", new_address=A)
        assert r.status == 200 and "This new address cannot be chosen here" in r.text
        assert "no rename from old.alice@example.com to alice@example.com was imported" in d.log()
        csv = tmp_path / "renames.csv"
        csv.write_text(f"target,source\n{A},{OLD_ALICE}\n")
        assert ctl("--config", d.config_path, "import", str(csv)).returncode == 0
        r = w.start(OLD_ALICE, "old-alice-pw", new_address=A)
        assert r.status == 303, r.text
        d.wait_log("event=selfservice_start ip=127.0.0.1 user=alice@example.com source=old.alice@example.com")
        d.wait_log("event=pass_done account=alice@example.com ok=True", timeout=120)
        assert snapshot(*src) == snapshot("127.0.0.1", pair.target.imap_port, A, "new-alice-pw")
        page = w.get("/progress").text
        assert "Copied from" in page and OLD_ALICE in page and "Archive/2020" in page
        # somebody else's old mailbox cannot be pointed at the address now taken
        mallory = Web(d.http_port)
        r = mallory.start(OLD_BOB, "old-bob-pw", new_address=A)
        assert r.status == 200 and "This new address cannot be chosen here" in r.text
        assert mallory.session_cookie() is None
        assert "already migrated from another old address" in d.log()
        # ...and the same answer whatever the password: it does not wait for a password check
        assert "This new address cannot be chosen here" in Web(d.http_port).start(OLD_BOB, "x", new_address=A).text
        # the same old and new address again is fine (a second visit)
        assert Web(d.http_port).start(OLD_ALICE, "old-alice-pw", new_address=A).status == 303
    store = open_store(tmp_path)
    try:
        assert store.account(A)["source_address"] == OLD_ALICE
        assert store.account(OLD_BOB) is None
    finally:
        store.close()


def test_renaming_refused_when_the_domain_does_not_allow_it(make_dovecot, tmp_path):
    pair = rename_pair(make_dovecot)
    with web_daemon(tmp_path, pair) as d:
        w = Web(d.http_port)
        assert 'name="new_address"' not in w.get("/").text
        r = w.start(OLD_ALICE, "old-alice-pw", new_address=A)
        assert r.status == 200 and w.session_cookie() is None
        assert "A new address different from the old one is not allowed for your domain" in r.text
        assert "不允许使用与旧地址不同的新地址" in Web(d.http_port, accept_language="zh").start(
            OLD_ALICE, "old-alice-pw", new_address=A).text
        # the same address typed twice is no renaming
        r = w.start(OLD_ALICE, "old-alice-pw", new_address=OLD_ALICE.upper())
        assert "not allowed" not in r.text
        assert "does not allow a new address different from the old one" in d.log()
        log = d.wait_log(f"event=pass_start account={OLD_ALICE}")   # the later, accepted start has run ...
        assert "event=pass_start account=alice@example.com" not in log   # ... and the refused one never did


# -- throttling, listeners -----------------------------------------------------------------------------

def test_many_wrong_passwords_reach_the_source_a_handful_of_times(web, dovecot_pair):
    statuses: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()

    def guesser(k: int) -> None:
        try:
            w = Web(web.http_port)
            token = csrf_of(w.get("/").text)
            for n in range(25):
                r = w.post("/start", {"csrf": token, "address": A, "password": f"guess-{k}-{n}"})
                assert r.status in (200, 429) and "guess-" not in r.text, (r.status, r.text[-300:])
                with lock:
                    statuses.append(r.status)
        except Exception as e:      # reported below: an assert in a thread would go unnoticed
            with lock:
                errors.append(f"guesser {k}: {e!r}")

    threads = [threading.Thread(target=guesser, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(statuses) == 200, (errors, web.log()[-3000:])
    reached = source_mismatches(dovecot_pair)
    assert 1 <= reached <= 10, f"{reached} of {len(statuses)} wrong passwords reached the source"
    assert statuses.count(429) >= 150, (statuses.count(200), statuses.count(429))
    assert web.log().count("event=selfservice_failed ip=127.0.0.1 user=alice@example.com") == 200
    throttled = Web(web.http_port).start(A, "one-more")
    assert throttled.status == 429 and "Too many attempts" in throttled.text and throttled.header("Retry-After")
    # another user from another address is not affected
    r = Web(web.http_port, source="127.0.0.3").start(B, dovecot_pair.users[B].old_password)
    assert r.status == 303, (r.status, web.log()[-3000:])


def test_plain_http_is_refused_off_loopback(tmp_path, dovecot_pair):
    d = web_daemon(tmp_path, dovecot_pair)
    d.doc["listen"]["http"] = f"0.0.0.0:{d.http_port}"
    d.save()
    with pytest.raises(RuntimeError, match="exited"):
        d.start()
    # refused with the config's key path before anything starts
    assert "listen.http: plain HTTP on 0.0.0.0:" in d.log() and "would send passwords across the network" in d.log()


def test_signing_in_again_and_again_ends_only_ones_own_oldest_session(web_on_backend, dovecot_pair):
    # a right password gives its throttle token back, so one user may sign in as often as they like: each
    # sign-in must not push another user's session out of the store's limit, only their own oldest one
    from mailsyncd.web.selfservice import SESSIONS_PER_USER
    bob = Web(web_on_backend.http_port)
    assert bob.start(B, dovecot_pair.users[B].old_password).status == 303
    mine = []
    for _ in range(SESSIONS_PER_USER + 1):
        w = Web(web_on_backend.http_port)
        assert w.start(A, dovecot_pair.users[A].old_password).status == 303
        mine.append(w)
    assert [w.get("/progress").status for w in mine] == [303] + [200] * SESSIONS_PER_USER
    assert bob.get("/progress").status == 200


def test_a_control_character_in_an_address_is_a_wrong_address_not_a_server_error(tmp_path, dovecot_pair,
                                                                                 pg_database):
    # before any password: the rename check looks the new address up, and PostgreSQL refuses a NUL
    # in a text parameter outright (a 500 and event=web_error for an anonymous form post)
    url, password_file = pg_database
    d = web_daemon(tmp_path, dovecot_pair, allow_rename=True)
    d.doc["database"] = {"url": url, "password_file": password_file}
    d.save()
    assert ctl("-c", d.config_path, "migrate-db").returncode == 0
    with d:
        w = Web(d.http_port)
        for old, new in (("old.alice@example.com", "al\x00ice@example.com"),
                         ("old\x00alice@example.com", A), ("old.alice@example.com", "al\x1bice@example.com")):
            r = w.start(old, "whatever", new_address=new)
            assert r.status == 200 and "The email address or password is not correct." in r.text, r.text
            assert "\x00" not in r.text and "\x1b" not in r.text
        log = d.log()
    assert "event=web_error" not in log and "Traceback" not in log
