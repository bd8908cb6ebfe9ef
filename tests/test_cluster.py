"""End to end: three real mailsyncd processes on one PostgreSQL behind one HAProxy, the Dovecot pair
(tests/cluster.py).  Copies are checked with /work/shared/bench/verify.py, overlaps from the pass records,
the source's load by a counting relay in front of it, the throttle by the source's own log."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from cluster import Cluster, lease_expiries, overlapping, seed_maildir
from matrix import verify
from test_frontdoor_gate import login
from test_proxyproto import wait_text
from test_selfservice import source_mismatches

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
    with ThreadPoolExecutor(4) as ex:
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
        seed_maildir(pair.source, u, {"INBOX": 150, "Sent": 50}, first=i * 1000)
    budget = 4
    c = cluster_of(pair, source={"max_connections": budget}, sync={"connections": 2},
                   scheduler={"pass_interval": 100_000, "max_accounts": 2})
    t0 = time.monotonic()
    c.import_accounts(users)
    c.wait(lambda: c.phases().get("synced", 0) == 60 and not c.leases(), timeout=200, what="60 accounts synced")
    took = time.monotonic() - t0
    assert c.relay.peak <= budget, (c.relay.peak, budget)
    runs = c.passes()
    assert len(runs) == 60 and all(r[4] and r[5] for r in runs), runs        # one pass each, under a lease
    assert not overlapping(runs, lease_expiries(c.nodes))
    by_node = {n.name: sum(r[4] == n.name for r in runs) for n in c.nodes}
    print(f"60 accounts x 200 messages in {took:.1f}s; passes per node {by_node}; source peak {c.relay.peak}")
    assert all(by_node.values()), by_node                                     # every node took work
    _identical(tmp_path, pair, users)
    _no_traceback(c)
