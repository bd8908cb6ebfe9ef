"""The web listener against a patient attacker: admin password guessing, DNS rebinding, cross-site
POSTs, sessions kept alive by the page's reloads, X-Forwarded-Proto, slowloris and connection floods.

Policy (sessions, the cross-site rules, connection counting) is tested in process with a fake clock;
the rest against the real daemon over real HTTP, as test_dashboard.py does.
"""

from __future__ import annotations

import base64
import socket
import time
from types import SimpleNamespace

import pytest
from fakes import FakeReactor, SyncPool
from test_dashboard import HASH, PASSWORD, Web, csrf_of, cutover_row, dash_daemon, wait_for
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from mailsyncd.config import Address, FrontDoor, Web as WebConfig
from mailsyncd.web.access import Access, host_of
from mailsyncd.web.admin import Admin
from mailsyncd.web.samples import Throughput
from mailsyncd.connlimits import ConnectionLimits, fd_budget
from mailsyncd.web.selfservice import SelfService

pytestmark = pytest.mark.timeout(240)


# -- in process --------------------------------------------------------------------------------

def fake_daemon(clock=None, store=None, **web):
    cfg = SimpleNamespace(web=WebConfig(**web), frontdoor=FrontDoor(), admin=SimpleNamespace(password_hash=None),
                          listen=SimpleNamespace(http=Address("127.0.0.1", 8080)), domains={})
    return SimpleNamespace(reactor=clock or Clock(), current=lambda: cfg, store=store, state_pool=SyncPool())


def request(method=b"GET", path=b"/", peer="127.0.0.1", secure=False, **headers):
    r = DummyRequest([])
    r.method, r.path, r.uri = method, path, path
    r.client = IPv4Address("TCP", peer, 40000)
    r.isSecure = lambda: secure
    for name, value in headers.items():
        r.requestHeaders.setRawHeaders(name.replace("_", "-").encode(), [value.encode()])
    return r


@pytest.mark.parametrize(("host", "ok"), [
    ("127.0.0.1:8080", True), ("127.0.0.1", True), ("localhost:8080", True), ("LOCALHOST.", True),
    ("migrate.example.com", True), ("Migrate.Example.COM:443", True),
    ("rebind.attacker.example", False), ("rebind.attacker.example:8080", False), ("127.0.0.2:8080", False),
    ("10.0.0.1", False), ("[::1]:8080", False), ("", False), ("localhost.attacker.example", False),
])
def test_host_allow_list(host, ok):
    access = Access(fake_daemon(hostnames=("migrate.example.com",)))
    r = request(host=host) if host else request()
    assert access.host_ok(r) is ok


def test_host_of():
    assert host_of("[::1]:80") == "::1" and host_of("Example.COM.:8443") == "example.com" and host_of("a") == "a"


@pytest.mark.parametrize(("headers", "refused"), [
    ({}, False),                                                                   # curl: no browser
    ({"sec_fetch_site": "same-origin"}, False),
    ({"sec_fetch_site": "none"}, False),
    ({"sec_fetch_site": "cross-site"}, True),
    ({"sec_fetch_site": "same-site"}, True),
    ({"origin": "http://127.0.0.1:8080"}, False),
    ({"origin": "http://evil"}, True),
    ({"origin": "http://127.0.0.1:8081"}, True),
    ({"origin": "https://127.0.0.1:8080"}, True),
    ({"origin": "null"}, True),
    ({"origin": "null", "sec_fetch_site": "same-origin"}, False),                 # Referrer-Policy: no-referrer
    ({"origin": "http://127.0.0.1:8080", "sec_fetch_site": "cross-site"}, True),
    ({"origin": "http://[::1"}, True),
])
def test_cross_site_posts(headers, refused):
    access = Access(fake_daemon())
    r = request(b"POST", host="127.0.0.1:8080", **headers)
    assert (access.cross_site(r) is not None) is refused


def test_https_and_client_ip_only_from_trusted_proxies():
    access = Access(fake_daemon(trusted_proxies=("127.0.0.2",)))
    fwd = {"x_forwarded_proto": "https", "x_forwarded_for": "203.0.113.9"}
    assert access.https(request(peer="127.0.0.2", **fwd)) and access.client_ip(request(peer="127.0.0.2", **fwd)) \
        == "203.0.113.9"
    assert not access.https(request(peer="127.0.0.1", **fwd)) and access.client_ip(request(**fwd)) == "127.0.0.1"
    assert not access.local(request(**fwd))         # an unknown proxy's client is not on this machine
    assert access.https(request(secure=True)) and not access.https(request(peer="127.0.0.2"))


def test_connection_limits():
    lim = ConnectionLimits(per_key=2, total=3)
    assert lim.admit("a") is None and lim.admit("a") is None and lim.admit("a") == "per_client"
    assert lim.admit("b") is None and lim.admit("c") == "total" and lim.admit(None) == "total"
    lim.release("a")
    assert lim.admit(None) is None and lim.held == 3
    lim.release(None)
    assert lim.admit("a") is None and lim.admit("d") == "total" and lim.held == 3
    assert 1 <= fd_budget() < 1 << 21


def test_self_service_session_ends_although_the_page_reloads_itself(make_store):
    """The page's own reloads (every 5 s, /progress?auto=1) do not count as activity; nothing extends
    a session past session_max."""
    clock = FakeReactor()
    daemon = fake_daemon(clock, make_store())
    page = SelfService(daemon, Access(daemon), idle=60, max_age=600)

    def visit(token, auto):
        r = request(path=b"/progress")
        if auto:
            r.args = {b"auto": [b"1"]}
        r.getCookie = {b"mailsyncd-session": token.encode()}.get
        return defer.ensureDeferred(page._session(r)).result[1]

    def last_answered(auto: bool) -> float:
        start = clock.seconds()
        token, _ = page.sessions.create("alice@example.com")
        while visit(token, auto) is not None:
            clock.advance(5)
        return clock.seconds() - 5 - start

    assert last_answered(auto=True) == 60            # the tab left open: idle, the reloads did not keep it
    assert last_answered(auto=False) == 600          # the employee clicks every 5 s: the absolute cap


def test_dashboard_session_idles_out_although_the_page_polls_its_json(make_store):
    """Page views keep a dashboard session alive; the pages' /admin/status.json polls and ?auto=1
    reloads do not, so a tab left open signs itself out after session_idle."""
    clock = FakeReactor()
    daemon = fake_daemon(clock, make_store(), session_idle=3, session_max=60)
    daemon.current().admin.password_hash = HASH
    dash = Admin(daemon, Access(daemon), Throughput(daemon))

    def get(token: str, path: bytes, **args) -> int:
        r = request(path=path, host="127.0.0.1:8080")
        r.uri = path
        r.args = {k.encode(): [v.encode()] for k, v in args.items()}
        r.getCookie = {b"mailsyncd-admin": token.encode()}.get
        dash.render(r)
        assert r.finished, path
        return r.responseCode or 200

    def idle_out(path: bytes, **args) -> float:
        """The last second a session is answered when only ``path`` is requested, once a second."""
        token, _ = dash.sessions.create(dash._who())
        start = clock.seconds()
        while get(token, path, **args) != {True: 401, False: 303}[path.endswith(b".json")]:
            assert clock.seconds() - start < 1000, "the session never ended"
            clock.advance(1)
        return clock.seconds() - 1 - start

    assert idle_out(b"/admin/nowhere") == 60                        # page views: only session_max ends it
    assert idle_out(b"/admin/series.json") == 3                     # polls: idle after session_idle
    assert idle_out(b"/admin/nowhere", auto="1") == 3               # the page's own reloads: likewise


# -- the real daemon -----------------------------------------------------------------------------

def basic(password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()}


def test_admin_password_guessing_hits_one_bucket(tmp_path, dovecot_pair):
    limits = {"ip_burst": 10, "ip_refill": 600, "user_burst": 10, "user_refill": 600,
              "failure_delay": 0.01, "failure_delay_max": 0.02}
    with dash_daemon(tmp_path, dovecot_pair, frontdoor=limits) as d:
        w = Web(d.http_port)
        seen = []
        for i in range(200):
            path = "/api/status" if i % 2 else "/metrics"
            seen.append(w.get(path, headers=basic(f"guess-{i}")).status)
        assert set(seen[:10]) == {401} and set(seen[10:]) == {429}, seen
        compared = d.log().count("reason=wrong_password")
        assert compared == 10, compared
        # the right password is not even compared while throttled, on /api, /metrics and the dashboard
        assert w.get("/api/status", headers=basic(PASSWORD)).status == 429
        assert w.get("/metrics", headers=basic(PASSWORD)).status == 429
        r = w.login()
        assert r.status == 429 and "Too many attempts" in r.text
        log = d.log()
        assert log.count("reason=wrong_password") == 10 and "event=admin_auth_failed ip=127.0.0.1 path=/admin/login " \
            "reason=throttled" in log
        # another address has its own bucket
        other = Web(d.http_port, source="127.0.0.7")
        assert other.get("/api/status", headers=basic(PASSWORD)).status == 200
        assert other.login().status == 303
        assert PASSWORD not in d.log()


def test_dns_rebinding_and_cross_site_posts(tmp_path, dovecot_pair):
    with dash_daemon(tmp_path, dovecot_pair, password=None) as d:
        w = Web(d.http_port)
        page = w.get("/admin")
        assert page.status == 200
        token = csrf_of(page.text)
        cutover = {"csrf": token, "action": "cutover_now", "confirm": "yes", "target": "example.com",
                   "back": "/admin"}
        before = cutover_row(d)
        evil = {"Host": f"rebind.attacker.example:{d.http_port}"}
        for path in ("/api/status", "/metrics", "/admin", "/admin/status.json", "/"):
            assert w.get(path, headers=evil).status == 421, path
        assert w.post("/admin/action", cutover, headers=evil).status == 421
        for h in ({"Origin": "http://evil"}, {"Sec-Fetch-Site": "cross-site"},
                  {"Origin": "null", "Sec-Fetch-Site": "same-site"}):
            assert w.post("/admin/action", cutover, headers=h).status == 403, h
            assert w.post("/start", {"address": "a@example.com", "password": "x"}, headers=h).status == 403, h
        assert cutover_row(d) == before
        assert "reason=unknown_host" in d.log() and "reason=cross_site" in d.log()
        # our own page's POST still works (and would have changed the row)
        same = {"Origin": f"http://127.0.0.1:{d.http_port}", "Sec-Fetch-Site": "same-origin"}
        assert w.post("/admin/action", cutover, headers=same).status == 303
        assert cutover_row(d)["state"] in ("scheduled", "final_pass", "done")
        # names from the config are accepted
        assert w.get("/healthz", headers=evil).status == 200         # load balancers
    d.doc["web"] = {"hostnames": ["migrate.example.com"]}
    d.save()
    with d:
        assert Web(d.http_port).get("/api/status", headers={"Host": "migrate.example.com"}).status == 200


def test_forwarded_proto_only_from_trusted_proxies(tmp_path, dovecot_pair):
    with dash_daemon(tmp_path, dovecot_pair, web={"trusted_proxies": ["127.0.0.2"]}) as d:
        fwd = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
        r = Web(d.http_port, source="127.0.0.2").get("/", headers=fwd)
        assert r.status == 200 and r.header("Strict-Transport-Security") == "max-age=31536000"
        cookie = next(c for c in r.set_cookies if "mailsyncd-csrf=" in c)
        assert cookie.startswith("__Host-mailsyncd-csrf=") and "secure" in cookie.lower().split("; ")
        r = Web(d.http_port, source="127.0.0.2").get("/admin/login", headers=fwd)
        assert any(c.startswith("__Host-mailsyncd-admin-login=") and "; Secure" in c for c in r.set_cookies)
        # the same headers from a peer that is not a trusted proxy are ignored
        r = Web(d.http_port).get("/", headers=fwd)
        assert r.status == 200 and r.header("Strict-Transport-Security") is None
        cookie = next(c for c in r.set_cookies if "mailsyncd-csrf=" in c)
        assert cookie.startswith("mailsyncd-csrf=") and "secure" not in cookie.lower()


def test_slowloris_and_connection_caps(tmp_path, dovecot_pair):
    web = {"request_timeout": 2, "max_connections_per_ip": 3, "max_connections": 6}
    with dash_daemon(tmp_path, dovecot_pair, web=web) as d:
        # one header line a second: cut off at the deadline, not at the 60 s idle timeout
        s = socket.create_connection(("127.0.0.1", d.http_port), timeout=10)
        t0 = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        closed = None
        for i in range(8):
            try:
                s.sendall(b"X-Slow-%d: 1\r\n" % i)
                s.settimeout(1)
                if s.recv(1) == b"":
                    closed = time.monotonic() - t0
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = time.monotonic() - t0
                break
        s.close()
        assert closed is not None and 1.5 < closed < 4, closed
        d.wait_log("event=web_request_timeout ip=127.0.0.1")

        # three idle connections from one address; the fourth is closed at once, another address is served
        held = [socket.create_connection(("127.0.0.1", d.http_port), timeout=5) for _ in range(3)]
        extra = socket.create_connection(("127.0.0.1", d.http_port), timeout=5)
        t0 = time.monotonic()
        try:
            assert extra.recv(1) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - t0 < 1
        assert Web(d.http_port, source="127.0.0.2").get("/healthz").status == 200
        # the total: 3 + 3 from two addresses, then nobody
        more = [socket.create_connection(("127.0.0.1", d.http_port), timeout=5, source_address=("127.0.0.3", 0))
                for _ in range(3)]
        time.sleep(0.3)                  # let the daemon accept them
        with pytest.raises((ConnectionError, OSError, AssertionError)):
            r = Web(d.http_port, source="127.0.0.4").get("/healthz")
            assert r.status != 200
        assert "reason=per_client" in d.log() and "reason=total" in d.log()
        for c in held + more + [extra]:
            c.close()

        def served() -> bool:            # slots come back when connections end
            try:
                return Web(d.http_port, source="127.0.0.4").get("/healthz").status == 200
            except OSError:
                return False
        wait_for(served, 10, "a free connection slot")


def test_stored_sessions_limit_sites_and_account_removal(make_store):
    """Sessions in the store: beyond the limit the least recently seen end first; each site keeps its
    own; removing an account signs its self-service sessions out."""
    from mailsyncd.web.sessions import Sessions
    clock = FakeReactor()
    store = make_store()
    store.ensure_account("alice@example.com", "example.com")
    self_service = Sessions(store, "self", clock.seconds, lambda: (60, 600), 3)
    dashboard = Sessions(store, "admin", clock.seconds, lambda: (60, 600), 3)
    tokens = []
    for who in ("alice@example.com", "bob@example.com", "carol@example.com"):
        tokens.append(self_service.create(who)[0])
        clock.advance(1)
    assert self_service.get(tokens[0]) is not None        # alice is seen again: bob is the oldest now
    dave, _ = self_service.create("dave@example.com")
    assert self_service.get(tokens[1]) is None and len(self_service) == 3
    assert dashboard.get(tokens[0]) is None                # a self-service token opens no dashboard
    store.remove_account("alice@example.com")
    assert self_service.get(tokens[0]) is None and self_service.get(dave) is not None
