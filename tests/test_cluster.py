"""End to end: three real mailsyncd processes on one PostgreSQL behind one HAProxy, the Dovecot pair
(tests/cluster.py).  Copies are checked with /work/shared/bench/verify.py, overlaps from the pass records,
the source's load by a counting relay in front of it, the throttle by the source's own log."""

from __future__ import annotations

import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from cluster import Cluster, lease_expiries, overlapping, seed_maildir
from matrix import verify
from test_frontdoor_gate import login
from test_proxyproto import wait_text

pytestmark = [pytest.mark.dovecot, pytest.mark.postgres, pytest.mark.timeout(300)]

MASTER = ("master", "master-pw")


def _users(n: int) -> dict[str, str]:
    return {f"u{i:02d}@example.com": f"pw-{i}" for i in range(n)}


@pytest.fixture
def pair_for(make_dovecot):
    def make(users):
        src = make_dovecot("source", users)
        tgt = make_dovecot("target", {u: "new-" + p for u, p in users.items()}, master=MASTER)
        return SimpleNamespace(source=src, target=tgt, master=MASTER)
    return make


@pytest.fixture
def cluster_of(tmp_path, postgres_server, request, make_haproxy):
    made: list[Cluster] = []

    def make(pair, **kw) -> Cluster:
        name = "c_" + "".join(ch if ch.isalnum() else "_" for ch in request.node.name)[-50:].lower()
        postgres_server.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        c = Cluster(tmp_path, pair, postgres_server, name, **kw)
        made.append(c)
        return c.start()

    yield make
    for c in made:
        c.stop()
        c.pg.psql(f'DROP DATABASE IF EXISTS "{c.url.rsplit("/", 1)[1]}" WITH (FORCE)')


def _identical(tmp_path, pair, users: dict[str, str]) -> None:
    def one(item):
        u, p = item
        src = {"port": pair.source.imap_port, "user": u, "pass": p}
        dst = {"port": pair.target.imap_port, "user": f"{u}*{MASTER[0]}", "pass": MASTER[1]}
        rc, _, text = verify(src, dst, {"Sent": "Sent"}, str(tmp_path / f"verify-{u}.json"))
        return u, rc, text
    with ThreadPoolExecutor(6) as ex:
        bad = [(u, text[-800:]) for u, rc, text in ex.map(one, users.items()) if rc != 0]
    assert not bad, bad[:3]


def _no_traceback(c: Cluster) -> None:
    for n in c.nodes:
        assert "Traceback" not in n.log(), n.log()[-3000:]


def test_three_nodes_copy_60_accounts_identical_without_overlap_within_the_shared_budget(
        tmp_path, pair_for, cluster_of):
    users = _users(60)
    pair = pair_for(users)
    for i, u in enumerate(users):
        seed_maildir(pair.source, u, {"INBOX": 75, "Sent": 25}, first=i * 1000)
    budget = 4
    c = cluster_of(pair, source={"max_connections": budget}, sync={"connections": 2},
                   scheduler={"pass_interval": 100_000, "max_accounts": 2})
    t0 = time.monotonic()
    c.import_accounts(users)
    c.wait(lambda: c.phases().get("synced", 0) == 60 and not c.leases(), timeout=200, what="60 accounts synced")
    took = time.monotonic() - t0
    assert c.relay.peak <= budget, (c.relay.peak, budget, [
        (round(i["opened"] % 1000, 3), re.findall(rb'LOGIN "?([^" ]+)', i["first"])[:1], b"STATUS" in i["first"])
        for i in c.relay.at_peak])
    runs = c.passes()
    assert len(runs) == 60 and all(r[4] and r[5] for r in runs), runs        # one pass each, under a lease
    assert not overlapping(runs, lease_expiries(c.nodes))
    by_node = {n.name: sum(r[4] == n.name for r in runs) for n in c.nodes}
    print(f"60 accounts x 100 messages in {took:.1f}s; passes per node {by_node}; source peak {c.relay.peak}")
    _identical(tmp_path, pair, users)
    _no_traceback(c)


def test_a_node_killed_mid_pass_its_accounts_finish_identical_within_one_lease_plus_one_pass(
        tmp_path, pair_for, cluster_of):
    users = _users(9)
    pair = pair_for(users)
    for i, u in enumerate(users):
        seed_maildir(pair.source, u, {"INBOX": 300, "Sent": 60}, first=i * 1000, size=3000)
    lease = 6.0
    c = cluster_of(pair, lease_seconds=lease, heartbeat=1.5, source={"max_connections": 6},
                   sync={"connections": 1, "batch_messages": 10},
                   scheduler={"pass_interval": 100_000, "max_accounts": 2, "failure_backoff": 0.5,
                              "failure_backoff_max": 2})
    c.import_accounts(users)
    # whichever node holds a lease with a batch in flight is killed
    name = c.wait(lambda: next((row[0] for row in c.sql("SELECT l.node FROM leases l JOIN inflight i"
                                                        " ON i.account = l.account WHERE l.node IS NOT NULL")),
                               None), timeout=60, step=0.02, what="a batch in flight under a lease")
    victim = next(n for n in c.nodes if n.name == name)
    victim.kill9()
    killed = time.monotonic()
    in_flight = {a for (a,) in c.sql("SELECT DISTINCT account FROM inflight")}
    held = {a for a, (n, _t, _e) in c.leases().items() if n == name}
    assert held
    c.wait(lambda: all(c.leases().get(a, ("", 0, 0))[0] != name for a in held), timeout=lease + 10,
           what="the killed node's leases taken over")
    c.wait(lambda: c.phases().get("synced", 0) == len(users) and not c.leases(), timeout=120, what="all synced")
    took = time.monotonic() - killed
    runs = c.passes()
    longest = max(f - s for _a, s, f, ok, _n, _t in runs if f is not None and ok == "1")
    print(f"after SIGKILL: all synced in {took:.1f}s (lease {lease}s, longest pass {longest:.1f}s)")
    rest = [n for n in c.nodes if n is not victim]
    expiries = lease_expiries(rest)
    assert held <= set(expiries), (held, expiries)               # each taken over once its lease ran out
    # the accounts the killed node held are finished by the others within one lease period plus one pass
    assert took <= lease + 2 * longest + 3, (took, lease, longest)
    for a in held & in_flight:                                   # its batch in flight is recovered, not re-sent
        assert any(f"event=recovered_batch account={a} " in n.log() for n in rest), a
    assert not overlapping(runs, expiries)
    _identical(tmp_path, pair, users)
    for n in rest:
        assert "Traceback" not in n.log()


def test_a_node_paused_past_its_lease_writes_not_one_row_after_losing_it(tmp_path, pair_for, cluster_of):
    users = _users(4)
    pair = pair_for(users)
    for i, u in enumerate(users):
        seed_maildir(pair.source, u, {"INBOX": 300}, first=i * 1000, size=3000)
    lease = 4.0
    c = cluster_of(pair, nodes=2, lease_seconds=lease, heartbeat=1.0, source={"max_connections": 4},
                   sync={"connections": 1, "batch_messages": 10},
                   scheduler={"pass_interval": 100_000, "max_accounts": 1})
    c.import_accounts(users)
    account = c.wait(lambda: next(iter(c.leases()), None), timeout=60, step=0.05, what="a lease")
    name, token, _ = c.leases()[account]
    paused, other = (c.nodes[0], c.nodes[1]) if name == "n1" else (c.nodes[1], c.nodes[0])
    os.kill(paused.proc.pid, signal.SIGSTOP)
    try:
        other.wait_log(f"event=lease_taken_over account={account} from={name}", timeout=lease + 30)
        c.wait(lambda: c.phases().get("synced", 0) == len(users) and not c.leases(), timeout=120,
               what="the other node finishes every account")
        assert (account, other.name, token + 1) in {(a, n, t) for a, _s, f, _o, n, t in c.passes() if f is not None}
        before = c.dump()
    finally:
        os.kill(paused.proc.pid, signal.SIGCONT)
    paused.wait_log(f"event=pass_lost account={account}", timeout=30)
    # one more status rewrite of the woken node: it has run on past the loss
    paused.status_after(time.time(), writes=2)
    assert c.dump() == before                                    # not one row after losing the lease
    stale = [r for r in c.passes() if r[0] == account and r[4] == name]
    assert stale and all(r[2] is None for r in stale), stale     # its pass never finished, under the old token
    _identical(tmp_path, pair, users)
    assert "Traceback" not in paused.log()


def _mismatches(pair, user: str) -> int:
    with open(pair.source.log_path, errors="replace") as f:
        return sum(1 for line in f if "Password mismatch" in line and f"({user}," in line)


def test_wrong_passwords_spread_over_three_nodes_reach_the_source_no_more_than_through_one(
        tmp_path, pair_for, cluster_of):
    users = _users(3)
    pair = pair_for(users)
    c = cluster_of(pair, scheduler={"pass_interval": 100_000},
                   frontdoor={"failure_delay": 0.01, "failure_delay_max": 0.02})
    spread, single = "u00@example.com", "u01@example.com"
    arms = ((c.haproxy.port("imap"), spread, "127.0.0.2"), (c.haproxy.port("one"), single, "127.0.0.3"))

    def guesses(arm):
        port, user, client = arm
        return [login(port, user, f"guess-{i}", source=client) for i in range(300)]
    with ThreadPoolExecutor(2) as ex:
        answers = dict(zip((spread, single), ex.map(guesses, arms)))
    for user, got in answers.items():
        assert all(a.startswith((b"a NO [AUTHENTICATIONFAILED]", b"a NO [UNAVAILABLE]")) for a in got), got[:3]
    for n in c.nodes:                                # round robin: every node answered the spread guesses
        assert f"event=login_failed ip=127.0.0.2 user={spread}" in n.log(), n.name
    reached = {u: _mismatches(pair, u) for u in (spread, single)}
    print(f"300 wrong passwords reached the source: {reached}")
    assert 0 < reached[spread] <= reached[single] < 300, reached
    # the right password from a third address, through HAProxy: the target logs that address
    ok = login(c.haproxy.port("imap"), "u02@example.com", users["u02@example.com"], source="127.0.0.4")
    assert ok.startswith(b"a OK"), ok
    wait_text(pair.target.log_path, r"Login: user=<u02@example\.com>.*rip=127\.0\.0\.4")
    _no_traceback(c)


def test_postgresql_down_open_sessions_relay_new_logins_unavailable_and_all_recovers(tmp_path, pair_for):
    """Its own PostgreSQL (stopped and started again on the same port) under a two-node cluster."""
    import imaplib

    from mailsyncd.testing.postgres import Postgres, postgres_missing_reason
    if postgres_missing_reason():
        pytest.skip(postgres_missing_reason())
    users = _users(3)
    pair = pair_for(users)
    for i, u in enumerate(users):
        seed_maildir(pair.source, u, {"INBOX": 20}, first=i * 100)
    pg = Postgres().start()
    c = Cluster(tmp_path, pair, pg, "down", nodes=2, lease_seconds=4, heartbeat=1,
                scheduler={"pass_interval": 100_000, "failure_backoff": 0.5, "failure_backoff_max": 2})
    try:
        c.start()
        c.import_accounts({u: p for u, p in users.items() if u != "u02@example.com"})
        c.wait(lambda: c.phases().get("synced", 0) == 2 and not c.leases(), timeout=60, what="2 synced")
        port = c.haproxy.port("imap")

        class From(imaplib.IMAP4):
            def _create_socket(self, timeout):
                import socket
                return socket.create_connection((self.host, self.port), timeout, source_address=("127.0.0.2", 0))
        open_session = From("127.0.0.1", port, timeout=30)
        open_session.login("u00@example.com", users["u00@example.com"])
        assert open_session.select("INBOX")[1] == [b"20"]
        pg.stop()
        # the open session goes on relaying
        typ, data = open_session.fetch("1:20", "(UID)")
        assert typ == "OK" and len(data) == 20, data
        # a login that needs the source (no verifier yet) is refused, on every node
        for _ in c.nodes:
            s = From("127.0.0.1", port, timeout=30)
            with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
                s.login("u02@example.com", users["u02@example.com"])
        for n in c.nodes:
            n.wait_log("event=database_unavailable user=u02@example.com")
        assert all(n.alive() for n in c.nodes)
        pg.start()                                   # each node's pool reconnects by itself: no restart
        s = c.wait(lambda: _try_login(From, port, "u02@example.com", users["u02@example.com"]), timeout=30,
                   what="a login once PostgreSQL is back")
        s.logout()
        c.wait(lambda: any("event=pass_done account=u02@example.com ok=True" in n.log() for n in c.nodes),
               timeout=60, what="the new account's pass")
        assert open_session.noop()[0] == "OK"
        open_session.logout()
        _identical(tmp_path, pair, users)
        _no_traceback(c)
    finally:
        c.stop()
        pg.destroy()


def _try_login(cls, port, user, password):
    import imaplib
    s = cls("127.0.0.1", port, timeout=30)
    try:
        s.login(user, password)
        return s
    except imaplib.IMAP4.error:
        s.shutdown()
        return None
