"""The one web shell (web/site.py), in process: every page of the listener gets the same security
headers, the same Host check and the same cross-site POST refusal, answered in its own format."""

from __future__ import annotations

import json

import pytest
from test_web_access import fake_daemon, request as page_request
from twisted.internet.task import Clock

from mailsyncd.store import Store
from mailsyncd.web import app

PAGES = (b"/", b"/progress", b"/admin", b"/admin/accounts", b"/api/status", b"/metrics")


@pytest.fixture
def site_root(tmp_path):
    """The site's root resource, as a factory (the pages keep their state in a store: a throwaway one)."""
    return lambda: _site_root(Store(str(tmp_path / "state.sqlite3")))


def _site_root(store):
    daemon = fake_daemon(Clock(), store=store)
    daemon.state_pool = None
    return app.make_site(daemon).resource


def request(*a, **kw):
    r = page_request(*a, **kw)
    r.getCookie = lambda name: None
    return r


def answer(root, r) -> tuple[int, dict, bytes]:
    out = root.render(r)
    if isinstance(out, bytes):          # twisted.web's synchronous answer: the server writes it
        r.write(out)
        r.finish()
    assert r.finished, "every request is answered"
    headers = {k.decode().lower(): v[0] for k, v in r.responseHeaders.getAllRawHeaders()}
    return r.responseCode, headers, b"".join(r.written)


@pytest.mark.parametrize("path", PAGES)
def test_every_page_refuses_an_unknown_host_with_the_same_headers(path, site_root):
    code, headers, body = answer(site_root(), request(path=path, host="rebind.attacker.example"))
    assert code == 421 and b"Misdirected" in body
    assert headers["x-frame-options"] == b"DENY" and headers["x-content-type-options"] == b"nosniff"
    assert headers["referrer-policy"] == b"no-referrer" and b"default-src 'none'" in headers["content-security-policy"]
    assert headers["server"] == b"mailsyncd"


@pytest.mark.parametrize("path", PAGES)
def test_every_page_refuses_a_cross_site_post_in_its_own_format(path, site_root):
    r = request(b"POST", path, host="127.0.0.1:8080", origin="http://evil.example", sec_fetch_site="cross-site")
    code, headers, body = answer(site_root(), r)
    assert code == 403 and headers["cache-control"] == b"no-store"
    if path.startswith((b"/api/", b"/metrics")):
        # a JSON client gets JSON, not the self-service page's HTML
        assert headers["content-type"] == b"application/json"
        assert json.loads(body) == {"error": "cross-site request refused", "status": 403}
    else:
        assert headers["content-type"].startswith(b"text/html") and b"This form has expired" in body


def test_healthz_answers_any_host(site_root):
    code, headers, body = answer(site_root(), request(path=b"/healthz", host="lb.internal"))
    assert (code, body) == (200, b"ok\n")


def test_a_failing_error_page_still_answers(site_root):
    """A page whose error page itself breaks: the client gets a bare 500, not a connection left open."""
    r = request(path=b"/", host="127.0.0.1:8080")     # DummyRequest has no getCookie: the page and its error page fail
    del r.getCookie
    code, headers, body = answer(site_root(), r)
    assert code == 500 and body == b"500 Internal Server Error\n"
