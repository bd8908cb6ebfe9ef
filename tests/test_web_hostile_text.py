"""Text from a request that reaches a store query, with characters no address has (NUL, other controls),
through the real daemon's web listener on both backends: a clean 404 or 400, never a 500 or a traceback.
PostgreSQL refuses a NUL in a text parameter outright (psycopg: "cannot contain NUL"), where SQLite
simply finds nothing, so only the PostgreSQL run caught the 500s.
"""

from __future__ import annotations

import base64

import pytest
import yaml
from syncenv import on_backend
from test_selfservice import Web as SelfWeb, web_daemon

from mailsyncd.statusquery import encode_cursor

A = "alice@example.com"
NUL_CURSOR = base64.urlsafe_b64encode(b"a:x\x00@example.com").decode().rstrip("=")


# (path, the answers that are right): each one's text reaches a query unless refused before
GETS = [
    ("/admin/accounts/%00", {404}),
    ("/admin/accounts/alice%00@example.com", {404}),
    ("/admin/accounts/alice%01@example.com", {404}),
    ("/admin/accounts?q=%00", {400}),
    ("/admin/accounts?domain=example.com%00", {400}),
    ("/admin/accounts?cursor=" + NUL_CURSOR, {400}),
    ("/admin/report?domain=example.com%00", {400}),
    ("/admin/report?domain=%00", {400}),
    ("/admin/status.json?q=%00", {400}),
    ("/admin/status.json?accounts=none&domain=%00", {404}),
    ("/api/accounts/%00", {404}),
    ("/api/accounts/alice%00@example.com", {404}),
    ("/api/status?q=a%00b", {400}),
    ("/api/status?domain=example.com%00", {400}),
    ("/api/status?user=alice%00@example.com", {400}),
    ("/api/status?cursor=" + NUL_CURSOR, {400}),
]


def test_request_text_with_a_nul_gives_a_clean_refusal(tmp_path, dovecot_pair, store_backend, request):
    d = web_daemon(tmp_path, dovecot_pair, allow_rename=True)
    on_backend(d.config_path, request, store_backend)
    with open(d.config_path) as f:
        d.doc = yaml.safe_load(f)
    with d:
        w = SelfWeb(d.http_port)
        assert w.get("/admin/accounts/" + A).status == 404          # no such account yet: the page works
        assert w.get("/api/status?cursor=" + encode_cursor(A)).status == 200
        got = {path: w.get(path).status for path, _ in GETS}
        assert {p: s for p, s in got.items() if s not in dict(GETS)[p]} == {}
        # the self-service form: the addresses go to the gate, the throttle and the rename check
        for fields in ({"address": "alice\x00@example.com"}, {"address": A, "new_address": "x\x00@example.com"},
                       {"address": "\x00"}):
            r = w.start(password="wrong", **fields)
            assert r.status in (200, 400, 403), (fields, r.status)
            assert "500" not in str(r.status)
        log = d.log()
    assert "Traceback" not in log and "event=web_error" not in log, log[-3000:]




def test_a_nul_the_database_cannot_hold_is_the_callers_error_and_harms_nothing(make_store, store_backend):
    """The store's side: PostgreSQL's UnstorableText (SQLite takes the text and finds nothing), the
    transaction rolled back, the store usable after; a page that forgot plain() answers it 400, not 500."""
    from test_web_access import fake_daemon, request as page_request
    from twisted.python.failure import Failure

    from mailsyncd.store import UnstorableText
    from mailsyncd.web.access import Access
    from mailsyncd.web.selfservice import SelfService

    s = make_store()
    s.ensure_account(A, "example.com")
    if store_backend == "postgresql":
        with pytest.raises(UnstorableText):
            s.account("alice\x00@example.com")
        with pytest.raises(UnstorableText):       # the second row's NUL undoes the first's insert
            s.import_accounts([("bob@example.com", "example.com", "import", None, None),
                               ("x\x00@example.com", "example.com", "import", None, None)])
    else:
        assert s.account("alice\x00@example.com") is None
    assert [a["address"] for a in s.accounts("example.com")] == [A] and s.account(A)["address"] == A
    daemon = fake_daemon(store=s)
    page = SelfService(daemon, Access(daemon))
    r = page_request(path=b"/x")
    r.getCookie = lambda name: None
    reply = page._crashed(Failure(UnstorableText("text the database cannot hold")), r)
    assert reply.code == 400
