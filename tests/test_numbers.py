"""Numbers agree everywhere: /api/status, /api/accounts/ADDRESS, /metrics, `mailsyncctl report --csv`
(and `mailsyncctl status --json` once it prints the schema-1 document) and the servers themselves.

One real daemon for the module (listen.http on loopback, a pass every second) in front of a real
Dovecot pair whose target refuses messages over 100 KB: alice has 50 messages in four folders, one
of them 300 KB, so 49 reach the new server and 1 is skipped with the target's reason.
Then the access rules: loopback-only without admin.password_hash; HTTP Basic once it is set (reload).
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import http.client
import imaplib
import io
import json
import os
import time
import urllib.parse
from dataclasses import dataclass

import pytest
from proxyenv import Daemon
from seed import Msg, connect, make_message, seed
from syncenv import ctl

from mailsyncd.testing import Dovecot, dovecot_missing_reason, free_port

A = "alice@example.com"
D = dt.datetime(2023, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
FOLDERS = {"INBOX": 20, "Archive/2023": 15, "Sent": 10, "客户/重要": 5}
BIG_FOLDER, BIG_SIZE = "Archive/2023", 300_000
TOTAL = sum(FOLDERS.values())
QUOTA_CONF = """
mail_plugins = $mail_plugins quota
plugin {
  quota = maildir:User quota
  quota_max_mail_size = 100k
}"""
ALLOWED_LABELS = {"node", "domain", "phase", "state", "result", "mode", "le"}   # bounded sets only: never a user
pytestmark = [pytest.mark.timeout(300), pytest.mark.dovecot]


# -- a small HTTP client -------------------------------------------------------------------------

@dataclass
class Resp:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self):
        return json.loads(self.body)


def get(port: int, path: str, *, auth: tuple[str, str] | None = None, source: str | None = None,
        headers: dict | None = None, method: str = "GET") -> Resp:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=(source, 0) if source else None)
    h = dict(headers or {})
    if auth is not None:
        h["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    try:
        conn.request(method, path, headers=h)
        r = conn.getresponse()
        return Resp(r.status, r.headers, r.read())
    finally:
        conn.close()


def metric_samples(text: str) -> list:
    from prometheus_client.parser import text_string_to_metric_families
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def sample(samples, name: str, **labels) -> float:
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def reload(d: Daemon) -> None:
    before = d.log().count("event=reloaded ")
    d.save()
    d.sighup()
    deadline = time.monotonic() + 20
    while d.log().count("event=reloaded ") <= before:
        assert "event=reload_failed" not in d.log()[-2000:], d.log()[-2000:]
        assert time.monotonic() < deadline, d.log()[-3000:]
        time.sleep(0.05)


# -- the environment -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def env(tmp_path_factory):
    missing = dovecot_missing_reason()
    if missing is not None:
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail(f"CI=true but {missing}", pytrace=False)
        pytest.skip(missing)
    from conftest import MASTER, SOURCE_USERS, TARGET_USERS, DovecotPair, UserCreds
    tmp = tmp_path_factory.mktemp("numbers")
    src = Dovecot(str(tmp), "source", dict(SOURCE_USERS))
    tgt = Dovecot(str(tmp), "target", dict(TARGET_USERS), master=MASTER, extra_conf=QUOTA_CONF)
    started = []
    try:
        for server in (src, tgt):
            server.start()
            started.append(server)
        pair = DovecotPair(src, tgt, {u: UserCreds(SOURCE_USERS[u], TARGET_USERS[u]) for u in SOURCE_USERS})
        n = 0
        corpus = {}
        for folder, count in FOLDERS.items():
            msgs = []
            for i in range(count):
                n += 1
                big = folder == BIG_FOLDER and i == 3
                msgs.append(Msg(make_message(n, size=BIG_SIZE if big else None), ("\\Seen",) if n % 3 else (),
                                D + dt.timedelta(hours=n)))
            corpus[folder] = msgs
        seed(*pair.source_account(A), corpus)
        d = Daemon(tmp, pair, scheduler={"pass_interval": 1})
        d.http_port = free_port()
        d.doc["listen"]["http"] = f"127.0.0.1:{d.http_port}"
        d.save()
        with d:
            # alice logs in through the front door: that starts her migration
            c = imaplib.IMAP4("127.0.0.1", d.imap_port)
            assert c.login(A, SOURCE_USERS[A])[0] == "OK"
            c.logout()
            d.wait_log(f"event=pass_done account={A}", timeout=120)
            yield d, pair
    finally:
        for server in reversed(started):
            server.stop()


def target_counts(pair) -> dict[str, tuple[int, int]]:
    """{folder: (EXISTS, sum of RFC822.SIZE)} on the new server, as the master user: not through mailsyncd."""
    out = {}
    with connect(*pair.target_master_account(A)) as c:
        for flags, _delim, name in c.list_folders():
            if {f.decode() if isinstance(f, bytes) else f for f in flags} & {"\\Noselect", "\\NonExistent"}:
                continue
            exists = c.select_folder(name, readonly=True)[b"EXISTS"]
            size = 0
            if exists:
                size = sum(v[b"RFC822.SIZE"] for v in c.fetch(c.search(["ALL"]), ["RFC822.SIZE"]).values())
            out[name] = (exists, size)
    return out


def source_counts(pair) -> dict[str, int]:
    with connect(*pair.source_account(A)) as c:
        return {name: c.select_folder(name, readonly=True)[b"EXISTS"] for flags, _d, name in c.list_folders()
                if not {f.decode() if isinstance(f, bytes) else f for f in flags} & {"\\Noselect", "\\NonExistent"}}


# -- the numbers -------------------------------------------------------------------------------------

def test_numbers_agree_everywhere(env):
    d, pair = env
    port = d.http_port

    # the servers themselves
    on_source = source_counts(pair)
    assert {k: v for k, v in on_source.items() if v} == FOLDERS
    on_target = target_counts(pair)
    target_total = sum(n for n, _ in on_target.values())
    target_bytes = sum(b for _, b in on_target.values())
    assert target_total == TOTAL - 1
    assert on_target[BIG_FOLDER][0] == FOLDERS[BIG_FOLDER] - 1

    # /api/status
    r = get(port, "/api/status")
    assert r.status == 200, r.text
    assert r.headers["Content-Type"] == "application/json" and r.headers["Cache-Control"] == "no-store"
    doc = r.json()
    assert doc["schema"] == 1 and doc["daemon"]["running"] is True
    acct = next(a for a in doc["accounts"] if a["address"] == A)
    assert (acct["source_messages"], acct["target_messages"], acct["skipped"]) == (TOTAL, TOTAL - 1, 1)
    assert acct["behind"] == 0 and acct["percent"] == 100.0 and acct["phase"] in ("syncing", "tailing")
    assert acct["bytes"] == target_bytes
    dom = next(x for x in doc["domains"] if x["name"] == "example.com")
    assert (dom["source_messages"], dom["target_messages"], dom["skipped"], dom["behind"]) == (TOTAL, TOTAL - 1, 1, 0)
    assert (doc["totals"]["source_messages"], doc["totals"]["target_messages"], doc["totals"]["skipped"]) == \
        (TOTAL, TOTAL - 1, 1)
    # the filters
    assert [a["address"] for a in get(port, f"/api/status?user={A}").json()["accounts"]] == [A]
    assert get(port, "/api/status?user=nobody%40example.com").json()["accounts"] == []
    assert [x["name"] for x in get(port, "/api/status?domain=example.com").json()["domains"]] == ["example.com"]
    assert get(port, "/api/status?domain=unknown.example").status == 404
    # /api/nodes: this one daemon, registered and renewing (no pass holds a lease now: the account is tailing)
    (node,) = get(port, "/api/nodes").json()["nodes"]
    assert node["pid"] == doc["daemon"]["pid"] and node["leases"] in ([], [A]), node

    # /api/accounts/ADDRESS
    r = get(port, "/api/accounts/" + urllib.parse.quote(A))
    assert r.status == 200 and r.headers["Content-Type"] == "application/json"
    one = r.json()
    assert get(port, f"/api/accounts/{A}").json()["account"]["source_messages"] == TOTAL   # '@' unescaped too
    a2 = one["account"]
    assert (a2["source_messages"], a2["target_messages"], a2["skipped"], a2["bytes"]) == \
        (acct["source_messages"], acct["target_messages"], acct["skipped"], acct["bytes"])
    folders = {f["path"]: f for f in one["folders"]}
    assert {p: f["source_messages"] for p, f in folders.items() if f["source_messages"]} == FOLDERS
    for path, f in folders.items():
        assert f["error"] is None and f["target"] == path            # mirror layout
        assert f["target_messages"] == on_target.get(f["target"], (0, 0))[0], (path, f, on_target)
        assert f["source_messages"] == on_source.get(path, 0), path
        assert f["skipped"] == (1 if path == BIG_FOLDER else 0), path
    assert sum(f["source_messages"] or 0 for f in one["folders"]) == a2["source_messages"]
    assert sum(f["target_messages"] or 0 for f in one["folders"]) == a2["target_messages"]
    assert sum(f["skipped"] for f in one["folders"]) == a2["skipped"] == one["skipped_total"] == 1
    [sk] = one["skipped"]
    assert sk["folder"] == BIG_FOLDER and sk["size"] >= BIG_SIZE and sk["reason"].startswith("target refused"), sk
    assert one["last_pass"]["finished"] and one["last_pass"]["skipped"] in (0, 1)
    r = get(port, "/api/accounts/nobody%40example.com")
    assert r.status == 404 and r.headers["Content-Type"] == "application/json" and r.json()["error"]
    assert get(port, "/api/nope").status == 404 and get(port, "/api/nope").json()["status"] == 404
    assert get(port, "/api/status", method="POST").status == 405

    # /metrics
    r = get(port, "/metrics")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
    s = metric_samples(r.text)
    ex = {"domain": "example.com"}
    assert sample(s, "mailsyncd_source_messages", **ex) == TOTAL
    assert sample(s, "mailsyncd_target_messages", **ex) == TOTAL - 1
    assert sample(s, "mailsyncd_skipped_messages", **ex) == 1
    assert sample(s, "mailsyncd_behind_messages", **ex) == 0
    assert sample(s, "mailsyncd_copied_bytes", **ex) == target_bytes
    assert sum(sample(s, "mailsyncd_accounts", domain="example.com", phase=p)
               for p in ("failed", "syncing", "waiting", "tailing", "cutover")) == 1
    assert sample(s, "mailsyncd_accounts", domain="example.com", phase="failed") == 0
    assert sample(s, "mailsyncd_cutover_state", domain="example.com", state="none") == 1
    assert sample(s, "mailsyncd_cutover_state", domain="example.com", state="done") == 0
    assert sample(s, "mailsyncd_logins_total", result="ok") >= 1
    assert sample(s, "mailsyncd_passes_total", result="ok") >= 1
    assert sample(s, "mailsyncd_config_generation") == doc["daemon"]["generation"]
    for name in ("mailsyncd_source_checks_total", "mailsyncd_source_throttled_total", "mailsyncd_sessions_open",
                 "mailsyncd_sessions_relayed", "mailsyncd_sync_rate_messages_per_second"):
        assert any(x.name == name for x in s), name
    assert "# HELP mailsyncd_behind_messages Messages still to copy" in r.text

    # mailsyncctl report --csv
    rep = ctl("--config", d.config_path, "report", A, "--csv")
    assert rep.returncode == 0, rep.stderr
    rows = list(csv.DictReader(io.StringIO(rep.stdout)))
    assert {row["folder"]: int(row["source_count"]) for row in rows if int(row["source_count"] or 0)} == FOLDERS
    for row in rows:
        f = folders[row["folder"]]
        assert (int(row["source_count"] or 0), int(row["target_count"] or 0), int(row["skipped"])) == \
            (f["source_messages"] or 0, f["target_messages"] or 0, f["skipped"]), row
    assert sum(int(row["target_count"] or 0) for row in rows) == target_total == a2["target_messages"]
    assert sum(int(row["skipped"]) for row in rows) == 1


def test_mailsyncctl_status_json_agrees(env):
    d, _pair = env
    r = ctl("--config", d.config_path, "status", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == 1, doc                       # a regression of the document fails here, never skips
    acct = next(a for a in doc["accounts"] if a["address"] == A)
    api = get(d.http_port, "/api/status").json()
    api_acct = next(a for a in api["accounts"] if a["address"] == A)
    for k in ("source_messages", "target_messages", "skipped", "bytes", "behind"):
        assert acct[k] == api_acct[k], k
    for k in ("source_messages", "target_messages", "skipped"):
        assert doc["totals"][k] == api["totals"][k], k
    assert (acct["source_messages"], acct["target_messages"], acct["skipped"]) == (TOTAL, TOTAL - 1, 1)


# -- who may read them --------------------------------------------------------------------------

def test_without_a_password_only_this_machine(env):
    d, _pair = env
    port = d.http_port
    # any loopback address is this machine
    assert get(port, "/api/status", source="127.0.0.2").status == 200
    assert get(port, "/metrics", source="127.0.0.2").status == 200
    # ...but not what came through a proxy we were not told about (its client is elsewhere)
    for path in ("/api/status", "/metrics", f"/api/accounts/{A}"):
        r = get(port, path, headers={"X-Forwarded-For": "203.0.113.9"})
        assert r.status == 403 and r.headers["Content-Type"] == "application/json", (path, r.status)
        assert "password_hash" in r.json()["error"]
        assert A not in r.text
    assert "event=admin_auth_failed ip=127.0.0.1 path=/api/status reason=not_loopback" in d.log()
    # the self-service page is not affected
    assert get(port, "/healthz").status == 200 and get(port, "/nope").status == 404


def test_basic_auth_once_a_password_is_set(env):
    from argon2 import PasswordHasher
    d, _pair = env
    port = d.http_port
    password = "correct horse battery staple"
    d.doc["admin"] = {"password_hash": PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(password)}
    reload(d)
    try:
        for path in ("/api/status", "/metrics", f"/api/accounts/{A}"):
            r = get(port, path)                      # loopback is not enough any more
            assert r.status == 401, (path, r.status)
            assert r.headers["WWW-Authenticate"].startswith('Basic realm="mailsyncd admin"')
            assert r.headers["Content-Type"] == "application/json" and A not in r.text
        t0 = time.monotonic()
        r = get(port, "/api/status", auth=("admin", "wrong"), source="127.0.0.2")
        # failures are answered late: frontdoor.failure_delay (0.05 s here), the admin throttle shares its limits
        assert r.status == 401 and time.monotonic() - t0 >= 0.05
        assert get(port, "/metrics", auth=("root", password), source="127.0.0.3").status == 401
        assert get(port, "/metrics", headers={"Authorization": "Basic !!!"}, source="127.0.0.4").status == 401
        log = d.log()
        assert "event=admin_auth_failed ip=127.0.0.2 path=/api/status reason=wrong_password" in log
        assert "event=admin_auth_failed ip=127.0.0.3 path=/metrics reason=bad_user" in log
        assert password not in log and base64.b64encode(b"admin:wrong").decode() not in log
        # the right password: the same numbers as before
        ok = get(port, "/api/status", auth=("admin", password))
        assert ok.status == 200, ok.text
        acct = next(a for a in ok.json()["accounts"] if a["address"] == A)
        assert (acct["source_messages"], acct["target_messages"], acct["skipped"]) == (TOTAL, TOTAL - 1, 1)
        assert get(port, f"/api/accounts/{A}", auth=("admin", password)).status == 200
        for _ in range(3):                            # remembered for 60 s: a polling dashboard stays cheap
            assert get(port, "/api/status", auth=("admin", password)).status == 200
        m = get(port, "/metrics", auth=("admin", password))
        assert m.status == 200
        samples = metric_samples(m.text)
        # per domain, never per user
        for x in samples:
            assert set(x.labels) <= ALLOWED_LABELS, x
            assert not any("@" in v for v in x.labels.values()), x
        assert "alice" not in m.text and "@" not in m.text
        assert sample(samples, "mailsyncd_target_messages", domain="example.com") == TOTAL - 1
        assert sample(samples, "mailsyncd_config_generation") == 2
    finally:
        del d.doc["admin"]
        reload(d)
    assert get(port, "/api/status").status == 200    # loopback-only again, no password needed


def test_a_dashboard_session_is_enough_when_a_password_is_set():
    """In process: /api/ and /metrics accept the dashboard's session (access.dashboard.session_ok)."""
    from types import SimpleNamespace

    from twisted.internet import defer
    from twisted.web.test.requesthelper import DummyRequest

    from mailsyncd.config import FrontDoor
    from mailsyncd.web.access import Access

    cfg = SimpleNamespace(admin=SimpleNamespace(password_hash="$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA"),
                          web=SimpleNamespace(trusted_proxies=()), frontdoor=FrontDoor())
    daemon = SimpleNamespace(reactor=SimpleNamespace(seconds=time.monotonic), current=lambda: cfg)
    signed_in = []
    access = Access(daemon)
    access.dashboard = SimpleNamespace(session_ok=lambda request: defer.succeed(bool(signed_in)))

    def check():
        results = []
        request = DummyRequest([b"api", b"status"])
        request.path = b"/api/status"
        defer.ensureDeferred(access.api(request)).addBoth(results.append)
        return results[0]     # no credentials: decided without waiting
    assert check().code == 401
    signed_in.append(True)
    assert check() is None


def test_source_bytes_come_from_status_size(tmp_path, dovecot_pair):
    """Dovecot has STATUS=SIZE: the source's bytes are known without fetching a message."""
    import json

    from proxyenv import Daemon as D
    from seed import Msg, make_message, seed
    from syncenv import ctl
    seed(*dovecot_pair.source_account("alice@example.com"),
         {"INBOX": [Msg(make_message(i, size=5000)) for i in range(4)], "Work": [Msg(make_message(9, size=7000))]})
    with D(tmp_path, dovecot_pair) as d:
        import imaplib
        c = imaplib.IMAP4("127.0.0.1", d.imap_port)
        c.login("alice@example.com", dovecot_pair.users["alice@example.com"].old_password)
        c.logout()
        d.wait_log("event=pass_done account=alice@example.com ok=True")
        doc = json.loads(ctl("--config", d.config_path, "status", "--json").stdout)
    (acct,) = doc["accounts"]
    assert acct["source_bytes"] == acct["bytes"] == 27000, acct
    assert doc["totals"]["source_bytes"] == 27000


def test_pages_filters_totals_and_the_node_label(env):
    """/api/status and `mailsyncctl status` at scale: keyset pages that visit every account once, filters in
    the query, totals of the whole filter, a specific 400 / exit 2 for a bad parameter; /metrics per node."""
    import socket

    from mailsyncd.store import Store
    d, _pair = env
    port = d.http_port
    extra = [f"imp{i}@example.com" for i in range(4)] + ["x_y@example.com"]
    store = Store.in_state_dir(d.state_dir)
    for address in extra:
        store.ensure_account(address, "example.com", "import")      # imported: waiting for the first login
    store.close()
    everyone = sorted(extra + [A])

    seen, cursor, pages = [], None, 0
    while True:
        r = get(port, "/api/status?" + urllib.parse.urlencode({"limit": 2, **({"cursor": cursor} if cursor else {})}))
        assert r.status == 200, r.text
        doc = r.json()
        assert doc["totals"]["accounts"] == len(everyone) and len(doc["accounts"]) <= 2
        seen += [a["address"] for a in doc["accounts"]]
        pages += 1
        cursor = doc["next"]
        if cursor is None:
            break
    assert seen == everyone and pages == 3
    whole = get(port, "/api/status").json()
    assert [a["address"] for a in whole["accounts"]] == everyone and whole["next"] is None

    waiting = get(port, "/api/status?phase=waiting&limit=3").json()
    assert waiting["totals"]["accounts"] == 5 == waiting["totals"]["phases"]["waiting"]
    assert [a["address"] for a in waiting["accounts"]] == extra[:3] and waiting["next"]
    assert waiting["domains"][0]["accounts"] == 5 and waiting["totals"]["source_messages"] == 0
    assert [a["address"] for a in get(port, "/api/status?q=IMP2").json()["accounts"]] == ["imp2@example.com"]
    assert [a["address"] for a in get(port, "/api/status?q=_").json()["accounts"]] == ["x_y@example.com"]
    tailing = get(port, "/api/status?domain=example.com&phase=failed").json()
    assert tailing["accounts"] == [] and tailing["totals"]["accounts"] == 0
    assert get(port, "/api/status?domain=unknown.example&phase=failed").status == 404
    for query, message in (("limit=0", "limit: 0 is out of range (1 to 1000)"),
                           ("limit=x", "limit: 'x' is not a whole number"),
                           ("phase=done", "phase: 'done' is not one of failed, syncing, waiting, tailing, cutover"),
                           ("cursor=zzz", "cursor: not a cursor this server gave")):
        r = get(port, "/api/status?" + query)
        assert r.status == 400 and r.json()["error"].startswith(message), (query, r.text)

    s = metric_samples(get(port, "/metrics").text)
    host = socket.gethostname()
    assert s and all(x.labels.get("node") == host for x in s), [x for x in s if x.labels.get("node") != host][:3]
    assert sample(s, "mailsyncd_accounts", node=host, domain="example.com", phase="waiting") == 5

    first = json.loads(ctl("--config", d.config_path, "status", "--json", "--limit", "4").stdout)
    assert [a["address"] for a in first["accounts"]] == everyone[:4] and first["totals"]["accounts"] == 6
    rest = json.loads(ctl("--config", d.config_path, "status", "--json", "--limit", "4", "--cursor",
                          first["next"]).stdout)
    assert [a["address"] for a in rest["accounts"]] == everyone[4:] and rest["next"] is None
    human = ctl("--config", d.config_path, "status", "--limit", "2", "--phase", "waiting")
    assert human.returncode == 0, human.stderr
    assert "5 accounts match; 2 in address order." in human.stdout and "--cursor " in human.stdout
    assert "imp0@example.com" in human.stdout and "imp2@example.com" not in human.stdout
    bad = ctl("--config", d.config_path, "status", "--phase", "done")
    assert bad.returncode == 2 and "status: phase: 'done' is not one of" in bad.stderr
