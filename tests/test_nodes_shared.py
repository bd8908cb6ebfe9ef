"""Two nodes behind one load balancer: the front door's throttle and the web pages' sessions and
forms live in the shared store.

Two real daemons on ONE state directory (one SQLite store: what PostgreSQL is to a cluster), each
with its own IMAP and web listeners; the client's attempts alternate between them, as a load
balancer without sticky sessions would send them.  The source is a real Dovecot, whose log counts
the password checks that reached it.
"""

from __future__ import annotations

import re
import time

import pytest
from test_dashboard import HASH, Web as DashWeb
from test_frontdoor_gate import login
from test_selfservice import A, Web, csrf_of, source_mismatches, web_daemon

pytestmark = pytest.mark.timeout(240)


def two_nodes(tmp_path, pair):
    nodes = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        d = web_daemon(tmp_path / name, pair, frontdoor={"ip_burst": 4})
        d.doc["admin"] = {"password_hash": HASH}
        d.doc["node"] = {"name": f"node-{name}"}              # each node its own name, as a cluster needs
        if nodes:
            d.doc["state_dir"] = d.state_dir = nodes[0].state_dir
        d.save()
        nodes.append(d)
    return nodes


def test_wrong_passwords_alternated_between_nodes_reach_the_source_as_often_as_through_one(
        tmp_path, dovecot_pair):
    a, b = two_nodes(tmp_path, dovecot_pair)
    with a, b:
        before = source_mismatches(dovecot_pair)
        answers = [login((a, b)[i % 2].imap_port, A, f"guess-{i}") for i in range(12)]
        # the network's budget (ip_burst 4): 4 checks, whichever node they came to; then refused unasked
        assert all(x.startswith(b"a NO [AUTHENTICATIONFAILED]") for x in answers[:4]), answers
        assert all(x.startswith(b"a NO [UNAVAILABLE]") for x in answers[4:]), answers
        assert source_mismatches(dovecot_pair) - before == 4
        assert "budget=network empty for 127.0.0.1/32" in a.log() + b.log()


def test_a_session_made_on_one_node_is_accepted_by_the_other(tmp_path, dovecot_pair):
    a, b = two_nodes(tmp_path, dovecot_pair)
    with a, b:
        # self-service: the form shown by A is posted to B (the pre-session CSRF key is shared)...
        w = Web(a.http_port)
        form = w.get("/")
        w.port = b.http_port
        r = w.post("/start", {"csrf": csrf_of(form.text), "address": A,
                              "password": dovecot_pair.users[A].old_password})
        assert r.status == 303 and r.header("Location") == "/progress", r.text[-500:]
        # ...and the session B made is A's too
        w.port = a.http_port
        page = w.get("/progress")
        assert page.status == 200 and A in page.text
        token = w.session_cookie()
        w.port = b.http_port
        assert w.post("/logout", {"csrf": csrf_of(page.text)}).status == 303     # signed out at B...
        w.cookies["mailsyncd-session"] = token
        w.port = a.http_port
        assert w.get("/progress").status == 303                                  # ...is signed out at A

        # the dashboard: signed in at A, used at B; B's flash message is shown once, by A
        d = DashWeb(a.http_port)
        assert d.login().status == 303
        d.port = b.http_port
        page = d.get(f"/admin/accounts/{A}")
        assert page.status == 200, page.status
        r = d.post("/admin/action", {"action": "sync_now", "target": A, "csrf": csrf_of(page.text),
                                     "back": "/admin"})
        assert r.status == 303 and r.header("Location") == "/admin"
        d.port = a.http_port
        assert f"Sync requested for {A}." in d.get("/admin").text
        d.port = b.http_port
        assert "Sync requested" not in d.get("/admin").text                     # said once, cluster-wide
        # the sites keep apart: a live self-service session is no dashboard session
        w.cookies.pop("mailsyncd-session", None)
        assert w.start(A, dovecot_pair.users[A].old_password).status == 303
        other = DashWeb(b.http_port)
        other.cookies["mailsyncd-admin"] = w.session_cookie()
        assert other.get("/admin").status == 303


def test_admin_password_guesses_alternated_between_nodes_spend_one_budget(tmp_path, dovecot_pair):
    a, b = two_nodes(tmp_path, dovecot_pair)
    with a, b:
        t = DashWeb(a.http_port, source="127.0.0.5")
        for i in range(4):                                   # 4 tries per address, over both nodes
            t.port = (a, b)[i % 2].http_port
            assert "Wrong password." in t.login("guess").text
        for node in (a, b):
            t.port = node.http_port
            r = t.login()                                    # then 429 even with the right password
            assert r.status == 429 and "Too many attempts" in r.text, node
        assert DashWeb(b.http_port, source="127.0.0.6").login().status == 303     # others unaffected


def test_the_dashboard_shows_the_nodes_and_their_heartbeats(tmp_path, dovecot_pair):
    a, b = two_nodes(tmp_path, dovecot_pair)
    with a, b:
        d = DashWeb(b.http_port)
        assert d.login().status == 303
        deadline = time.monotonic() + 30
        while True:                          # each node registers at start and then every heartbeat
            page = d.get("/admin").text
            if 'data-node="node-a"' in page and 'data-node="node-b"' in page or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert "Nodes (2)" in page, page[-3000:]
        assert 'data-node="node-a"' in page and 'data-node="node-b"' in page
        assert re.search(r'data-node="node-a"><td>node-a</td><td>[^<]+</td><td>\d+ s ago</td>', page)
