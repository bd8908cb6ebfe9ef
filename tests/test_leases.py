"""Work leases, fencing and the shared host budget, on one store shared by several nodes (pure store logic,
the scheduler's clock passed in as ``now``), on both backends (``make_store``: SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from mailsyncd.errors import LeaseLost
from mailsyncd.store import Inflight, InflightItem, Lease, Refused

A, B = "alice@example.com", "bob@example.com"
HOST = "127.0.0.1:1"


@pytest.fixture
def store(make_store):
    s = make_store()
    s.ensure_account(A, "example.com")
    s.ensure_account(B, "example.com")
    return s


def _claim(store, account, node, now, wanted=1, cap=4, **kw):
    return store.claim_lease(account, node, now, 60, host=HOST, wanted=wanted, cap=cap, **kw)


def test_one_lease_an_account_until_it_expires_then_another_node_takes_it_over(store):
    first = _claim(store, A, "n1", 1000)
    assert isinstance(first, Lease) and first.token == 1 and first.expires == 1060
    refused = _claim(store, A, "n2", 1059)
    assert isinstance(refused, Refused) and "n1" in refused.why and refused.retry_at == 1060
    second = _claim(store, A, "n2", 1060)
    assert isinstance(second, Lease) and second.token == 2 and second.node == "n2"
    # n1 comes back: its renewal finds the lease gone, its release changes nothing
    assert store.renew_leases("n1", [first], 1061, 60) == [first]
    assert store.release_lease(first, due=0) is False
    assert [(r["account"], r["node"], r["token"]) for r in store.leases()] == [(A, "n2", 2)]


def test_a_renewed_lease_is_not_taken_over(store):
    lease = _claim(store, A, "n1", 1000)
    assert store.renew_leases("n1", [lease], 1050, 60) == [] and lease.expires == 1110
    assert isinstance(_claim(store, A, "n2", 1100), Refused)


def test_the_next_pass_is_due_for_every_node_when_the_releasing_node_said(store):
    lease = _claim(store, A, "n1", 1000)
    assert store.release_lease(lease, due=1300) is True
    assert _claim(store, A, "n2", 1200).why == "not due yet"
    assert isinstance(_claim(store, A, "n2", 1200, ignore_due=True), Lease)     # a login asked for it


def test_every_write_through_a_taken_over_lease_is_refused_and_writes_nothing(store):
    lease = _claim(store, A, "n1", 1000)
    view = store.fenced(lease)
    view.set_phase(A, "syncing")                        # ours: written
    assert store.account(A)["phase"] == "syncing"
    assert isinstance(_claim(store, A, "n2", 2000), Lease)
    item = InflightItem(5, 10, b"\x01" * 32, ())
    for write in (lambda: view.set_phase(A, "synced"),
                  lambda: view.begin_batch(A, "INBOX", Inflight("INBOX", 1, 1, (item,))),
                  lambda: view.start_pass(A),
                  lambda: view.commit_batch(A, "INBOX", 1, [], [(7, 10, "too big")], 7)):
        with pytest.raises(LeaseLost):
            write()
    assert store.account(A)["phase"] == "syncing" and store.inflight(A, "INBOX") is None
    assert store.skipped(A) == [] and store.passes(A) == []
    store.set_phase(A, "synced")                        # the plain store is not fenced


def test_the_lease_refuses_target_writes_once_it_may_have_expired(store):
    now = [1000.0]
    lease = _claim(store, A, "n1", 1000)
    lease.clock, lease.margin = (lambda: now[0]), 15
    view = store.fenced(lease)
    view.check_lease()
    now[0] = 1045
    with pytest.raises(LeaseLost):
        view.check_lease()
    store.check_lease()                                 # the plain store has no lease to check


def test_a_hosts_budget_is_shared_by_every_node_and_a_dead_nodes_slots_expire(store):
    first = _claim(store, A, "n1", 1000, wanted=3, cap=4)
    assert first.connections == 3
    second = _claim(store, B, "n2", 1000, wanted=3, cap=4)
    assert second.connections == 1                      # what is left of 4
    assert store.host_use(1000) == {HOST: 4}
    store.free_slot(second)
    store.set_login_checks(HOST, "n3", 1, 1000, 30)          # a login check on a third node
    assert store.host_use_by_others("n1", 1000) == {HOST: 1}
    assert isinstance(_claim(store, B, "n2", 1000), Refused)  # 3 + 1 of 4: nothing left
    # n1 dies: its slot expires with its lease
    assert store.host_use(1061) == {}
    assert _claim(store, A, "n2", 1061, wanted=4, cap=4).connections == 4


def test_the_adaptive_limit_is_shared(store):
    assert store.adapt_host_limit(HOST, 4, throttled=True, ok=False, now=1) == 2.0
    assert _claim(store, A, "n1", 1000, wanted=4, cap=4).connections == 2
    assert store.adapt_host_limit(HOST, 4, throttled=False, ok=True, now=2) == 2.25


def test_status_lists_the_nodes_when_there_are_several_or_when_asked(tmp_path, make_store, store_backend, request):
    import json
    import time

    import yaml
    from syncenv import ctl, on_backend

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"), "domains": {"example.com": {
        "source": {"host": "127.0.0.1", "port": 1, "security": "none"},
        "target": {"host": "127.0.0.1", "port": 2, "security": "none"}}}}))
    on_backend(str(cfg), request, store_backend)
    s = make_store(str(tmp_path / "state"))
    now = time.time()
    s.ensure_account(A, "example.com")
    s.node_started("n1", 101, "host-a", now - 100, "0.1.0")
    s.close()
    out = ctl("status", "-c", str(cfg))
    assert out.returncode == 0, out.stderr
    assert "nodes:" not in out.stdout                               # one node: nothing to say
    assert "n1 " in ctl("status", "--nodes", "-c", str(cfg)).stdout
    s = make_store(str(tmp_path / "state"))
    s.node_started("n2", 202, "host-b", now - 50, "0.1.0")
    assert isinstance(s.claim_lease(A, "n2", now, 60, host=HOST, wanted=1, cap=4), Lease)
    s.close()
    out = ctl("status", "-c", str(cfg))
    assert "nodes: 2" in out.stdout, out.stdout
    line = next(x for x in out.stdout.splitlines() if x.strip().startswith("n2"))
    assert "host-b" in line and "1 leases: " + A in line, line
    doc = json.loads(ctl("status", "--json", "-c", str(cfg)).stdout)
    assert [(n["name"], n["leases"]) for n in doc["nodes"]] == [("n1", []), ("n2", [A])]


def test_a_cutover_is_closed_once_for_the_cluster(tmp_path, make_store):
    """Two nodes on one store both run the domain's cutover; one closes it (compare-and-set) and destroys
    the passwords, the other sees it done and stops scheduling the domain."""
    import os

    from fakes import FakeReactor, HeldPool, SyncPool

    from mailsyncd.config import parse_config
    from mailsyncd.scheduler import Scheduler
    from mailsyncd.sync.account import PassResult
    from mailsyncd.vault import Vault

    state = tmp_path / "state"
    reactor = FakeReactor()
    reactor.advance(10_000)
    scheds, pools = [], []
    key = os.urandom(32)
    for name in ("n1", "n2"):
        cfg = parse_config({"state_dir": str(state), "node": {"name": name}, "domains": {"example.com": {
            "source": {"host": "127.0.0.1", "port": 1, "security": "none"},
            "target": {"host": "127.0.0.1", "port": 2, "security": "none"}}}}, path=str(tmp_path / "c.yaml"))
        store = make_store(cfg.state_dir)
        vault = Vault(store, key)
        if name == "n1":
            for a in (A, B):
                store.ensure_account(a, "example.com", "import")
                vault.put_password(a, "pw")
        pool = HeldPool(PassResult)
        scheds.append(Scheduler(reactor, pool, SyncPool(), store, vault, lambda cfg=cfg: cfg))
        pools.append(pool)
    for s in scheds:
        s.start()
    for pool in pools:
        pool.finish()                   # the first passes, before the cutover
    reactor.advance(0)
    scheds[0].store.set_cutover("example.com", reactor.seconds(), "scheduled", "test")
    for s in scheds:
        s.refresh_cutovers(s.store.cutovers())
    for _ in range(3):
        reactor.advance(1)
        for pool in pools:
            pool.finish()
    reactor.advance(1)
    assert all(s.is_cut_over("example.com") for s in scheds), [(s.cutovers, s.running, len(p.held)) for s, p in zip(scheds, pools)]
    assert scheds[0].store.cutover("example.com")["state"] == "done"
    assert scheds[0].store.secret_password(A) is None and scheds[0].store.secret_password(B) is None
    assert not any(s.accounts for s in scheds)
    for s in scheds:
        s.shutdown()
        s.store.close()


@pytest.mark.parametrize("node, error", [
    ({"name": "bad name"}, "node.name: must be 1-63 letters"),
    ({"lease_seconds": 0}, "node.lease_seconds: must be a number > 0"),
    ({"lease_seconds": 60, "heartbeat": 40}, "node.heartbeat: must be at most half of node.lease_seconds (60)"),
    ({"lease": 60}, "node.lease: unknown key"),
])
def test_node_config_errors_name_the_key(tmp_path, node, error):
    from mailsyncd.config import ConfigError, parse_config
    with pytest.raises(ConfigError) as e:
        parse_config({"state_dir": str(tmp_path), "node": node, "domains": {"example.com": {
            "source": {"host": "127.0.0.1", "port": 1, "security": "none"},
            "target": {"host": "127.0.0.1", "port": 2, "security": "none"}}}}, path=str(tmp_path / "c.yaml"))
    assert any(m.startswith(error) for m in e.value.errors), e.value.errors


def test_node_defaults(tmp_path):
    import socket

    from mailsyncd.config import parse_config
    cfg = parse_config({"state_dir": str(tmp_path), "node": {"lease_seconds": 40}, "domains": {"example.com": {
        "source": {"host": "127.0.0.1", "port": 1, "security": "none"},
        "target": {"host": "127.0.0.1", "port": 2, "security": "none"}}}}, path=str(tmp_path / "c.yaml"))
    assert (cfg.node.name, cfg.node.lease_seconds, cfg.node.heartbeat) == \
        (socket.gethostname().split(".")[0], 40.0, 10.0)


def _sched(tmp_path, make_store, name, reactor, *, max_connections=4):
    import os

    from fakes import HeldPool, SyncPool

    from mailsyncd.config import parse_config
    from mailsyncd.scheduler import Scheduler
    from mailsyncd.sync.account import PassResult
    from mailsyncd.vault import Vault

    cfg = parse_config({"state_dir": str(tmp_path / "state"), "node": {"name": name, "lease_seconds": 60},
                        "domains": {"example.com": {
                            "source": {"host": "127.0.0.1", "port": 1, "security": "none",
                                       "max_connections": max_connections},
                            "target": {"host": "127.0.0.1", "port": 2, "security": "none"}}}},
                       path=str(tmp_path / "c.yaml"))
    store = make_store(cfg.state_dir)
    return Scheduler(reactor, HeldPool(PassResult), SyncPool(), store, Vault(store, os.urandom(32)),
                     lambda: cfg), cfg


def _two_nodes(tmp_path, make_store):
    """Nodes na and nb on one store and one fake clock; the source's endpoint and its budget's key."""
    from fakes import FakeReactor

    from mailsyncd.scheduler import host_key
    reactor = FakeReactor()
    reactor.advance(10_000)
    a, cfg = _sched(tmp_path, make_store, "na", reactor)
    b, _ = _sched(tmp_path, make_store, "nb", reactor)
    ep = cfg.domains["example.com"].source
    return reactor, a, b, ep, host_key(ep)


def test_a_login_check_on_one_node_waits_for_the_connections_another_nodes_passes_hold(tmp_path, make_store):
    import threading

    from mailsyncd.scheduler import _Running
    from mailsyncd.sync.progress import Progress

    reactor, a, b, ep, host = _two_nodes(tmp_path, make_store)
    lease = a.store.claim_lease(A, "na", reactor.seconds(), 60, host=host, wanted=4, cap=4)  # na's pass: all 4
    assert lease.connections == 4
    b.leases.refresh_others()
    got = []
    b.acquire(ep, 5.0).addCallback(got.append)
    reactor.advance(5.1)
    assert got == [False] and b.counts["login_checks_refused"] == 1
    a.store.free_slot(lease)
    b.leases.refresh_others()
    b.acquire(ep, 5.0).addCallback(got.append)
    assert got == [False, True]
    # ...and the check, published in the store, holds one connection back from the other node's passes
    assert a.store.claim_lease(B, "na", reactor.seconds(), 60, host=host, wanted=4, cap=4).connections == 3
    # a node whose lease was taken over stops its pass at the next heartbeat
    run = _Running(Progress(), threading.Event(), host, 3, "example.com")
    run.lease = lease
    a.running[A] = run
    reactor.advance(61)
    assert b.store.claim_lease(A, "nb", reactor.seconds(), 60, host=host, wanted=1, cap=4).node == "nb"
    a.leases.heartbeat(a.running)
    assert run.stop.is_set()
    # belt and braces: a lease this node could not renew is given up before it expires, store or not
    late = _Running(Progress(), threading.Event(), host, 1, "example.com")
    late.lease = Lease(B, "na", 7, reactor.seconds() + 10, host, "x", 1, margin=15, clock=reactor.seconds)
    class Down:
        def renew_leases(self, *args):
            raise OSError("database unreachable")
    a.leases.store = Down()
    a.leases.heartbeat({B: late})
    assert late.stop.is_set()
    for s in (a, b):
        s.store.close()


def test_a_waiting_login_check_is_granted_as_soon_as_a_fresh_read_shows_the_other_nodes_freed_a_connection(
        tmp_path, make_store):
    """CI saw a login wait its whole 10 s on a view of the others read while their passes ran, though the
    passes had ended: only this node's own releases woke the waiting checks."""
    reactor, a, b, ep, host = _two_nodes(tmp_path, make_store)
    lease = a.store.claim_lease(A, "na", reactor.seconds(), 60, host=host, wanted=4, cap=4)
    b.leases.refresh_others()
    got = []
    b.acquire(ep, 10.0).addCallback(got.append)
    assert got == []
    a.store.free_slot(lease)
    reactor.advance(1.0)
    b.leases.refresh_others()            # what the scheduler's tick does every second
    assert got == [True] and b.counts["login_checks_refused"] == 0
    b.release(ep)
    for s in (a, b):
        s.store.close()


def test_a_login_check_granted_on_a_stale_view_is_confirmed_in_the_shared_budget_first(tmp_path, make_store):
    """nb's view of the others was read before na's pass took every connection: nb's check is not granted
    on that view alone (the store refuses it), it waits, and gets the connection once na's pass ends."""
    reactor, a, b, ep, host = _two_nodes(tmp_path, make_store)
    b.leases.refresh_others()                      # nb reads: nothing in use
    lease = a.store.claim_lease(A, "na", reactor.seconds(), 60, host=host, wanted=4, cap=4)
    assert lease.connections == 4
    got = []
    b.acquire(ep, 10.0).addCallback(got.append)
    assert got == [] and b.checks == {} and a.store.host_use(reactor.seconds()) == {host: 4}
    a.store.free_slot(lease)
    reactor.advance(1.0)
    b.leases.refresh_others()
    assert got == [True] and b.checks == {host: 1}
    assert a.store.host_use_by_others("na", reactor.seconds()) == {host: 1}
    b.release(ep)
    assert b.checks == {} and a.store.host_use_by_others("na", reactor.seconds()) == {}
    # a stale view and no room until the deadline: refused, counted, nothing left held
    lease = a.store.claim_lease(B, "na", reactor.seconds(), 60, host=host, wanted=4, cap=4)
    b.leases.others = {}
    b.acquire(ep, 5.0).addCallback(got.append)
    reactor.advance(5.1)
    assert got == [True, False] and b.checks == {} and b.counts["login_checks_refused"] == 1
    for s in (a, b):
        s.store.close()


def test_a_watch_connection_is_counted_in_the_shared_budget_before_it_is_opened(tmp_path, make_store):
    """Watches (IDLE, polls) hold source connections too.  One taken on a node's view of the others (read up
    to a second before) is confirmed in the store before it connects: a pass another node claimed meanwhile
    wins, and the watch gives it back (bench/cluster.py saw 7 connections under a budget of 6)."""
    reactor, a, b, ep, host = _two_nodes(tmp_path, make_store)
    assert a.take_watch_connection(ep, reserve=0) and a.confirm_watch_connection(ep)
    # nb's pass takes all that was left; na's view of the others is not read again: it says 3 free
    assert b.store.claim_lease(A, "nb", reactor.seconds(), 60, host=host, wanted=4, cap=4).connections == 3
    assert a.take_watch_connection(ep, reserve=0)
    assert not a.confirm_watch_connection(ep)                  # na's second watch: no room after all
    a.release_watch_connection(ep)
    assert a.store.host_use(reactor.seconds()) == {host: 4}    # nb's pass 3 + na's first watch
    assert a.store.host_use_by_others("nb", reactor.seconds()) == {host: 1}
    a.release_watch_connection(ep)
    assert a.store.host_use_by_others("nb", reactor.seconds()) == {}
    for s in (a, b):
        s.store.close()


def test_a_restarted_node_takes_back_at_once_the_leases_its_dead_previous_run_held(store):
    """kill -9 (or a crash) and a restart under the same name: the previous run cannot write any more, so its
    leases and connections are given back at start instead of blocking the node for lease_seconds.  Never
    when the row is another host's, or its process lives (two nodes given one name)."""
    store.node_started("n1", 4242, "hostA", 1000.0, "x")
    for acct in (A, B):
        assert isinstance(store.claim_lease(acct, "n1", 1000.0, 60, host=HOST, wanted=1, cap=4), Lease)
    store.claim_lease("carol@example.com", "n2", 1000.0, 60, host=HOST, wanted=1, cap=4)
    asked = []
    assert store.reclaim_node("n1", "hostB", lambda pid: asked.append(pid) or False) == 0   # another host's
    assert asked == []
    assert store.reclaim_node("n1", "hostA", lambda pid: True) == 0                          # alive
    assert store.host_use(1001.0) == {HOST: 3}
    assert store.reclaim_node("n1", "hostA", lambda pid: asked.append(pid) or False) == 2
    assert asked == [4242]
    assert store.host_use(1001.0) == {HOST: 1}                      # n2's pass keeps its connection
    assert [row["account"] for row in store.leases()] == ["carol@example.com"]
    got = store.claim_lease(A, "n1", 1001.0, 60, host=HOST, wanted=1, cap=4)
    assert isinstance(got, Lease) and got.token == 2                # a new token: the old run's writes fail
