"""`mailsyncctl sync` holds the account's lease like a daemon pass: a real mailsyncd and real one-off
processes, the real Dovecot pair, SQLite and PostgreSQL.  The source is reached through a FaultProxy whose
hook holds a pass at its first message body for as long as the test wants: that pass (the daemon's or
the one-off's) is under way, holding its lease, at a point the test chooses, not after a sleep."""

from __future__ import annotations

import re
import subprocess
import threading
import time

import pytest

from faultproxy import FaultProxy
from proxyenv import Daemon
from seed import Msg, make_message, seed, snapshot
from syncenv import ctl, ctl_popen, on_backend, password_file

from mailsyncd.cli.synclease import OneOffLease
from mailsyncd.config import load_config
from mailsyncd.config.node import Node
from mailsyncd.store import Lease, Refused, Store

A = "alice@example.com"
BOOKKEEPING = ("leases", "nodes", "host_slots", "host_limits", "meta", "throttle", "web_sessions")


def _hold_next_body(proxy: FaultProxy) -> tuple[threading.Event, threading.Event]:
    """(held, go): the next message body through the proxy sets ``held`` and waits for ``go``."""
    held, go = threading.Event(), threading.Event()

    def hold():
        held.set()
        go.wait(120)
    proxy.at_literal_byte(proxy.literal_bytes + 1, hold)
    return held, go


def _dump(cfg_path: str) -> dict[str, list]:
    """Every row a pass writes (the lease bookkeeping aside, which the daemon's renewals move on)."""
    store = Store.open(load_config(cfg_path))
    try:
        c = store._conn()
        q = ("SELECT name FROM sqlite_master WHERE type='table'" if store.backend == "sqlite" else
             "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = [t for (t,) in c.execute(q).fetchall() if t not in BOOKKEEPING]
        return {t: sorted(map(repr, c.execute(f"SELECT * FROM {t}").fetchall())) for t in tables}
    finally:
        store.close()


def _lease_row(cfg_path: str) -> tuple:
    store = Store.open(load_config(cfg_path))
    try:
        return store._conn().execute("SELECT node, token, expires, due FROM leases WHERE account=?",
                                     (A,)).fetchone()
    finally:
        store.close()


def _slots(cfg_path: str) -> list[tuple]:
    store = Store.open(load_config(cfg_path))
    try:
        return [tuple(r) for r in store._conn().execute("SELECT node, connections FROM host_slots").fetchall()]
    finally:
        store.close()


def _passes(cfg_path: str) -> list[tuple]:
    store = Store.open(load_config(cfg_path))
    try:
        return store._conn().execute("SELECT started, finished, node, token FROM passes WHERE account=?"
                                     " ORDER BY id", (A,)).fetchall()
    finally:
        store.close()


def _wait(cond, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.1)
    return got


@pytest.mark.dovecot
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_one_off_sync_and_the_daemon_take_the_account_by_turns(tmp_path, dovecot_pair, request, backend):
    pair = dovecot_pair
    seed(*pair.source_account(A), {"INBOX": [Msg(make_message(i)) for i in range(5)]})
    pw = password_file(tmp_path, pair.users[A].old_password)
    with FaultProxy(pair.source.imap_port, "source") as proxy:
        d = Daemon(tmp_path, pair, source={"port": proxy.port}, scheduler={"pass_interval": 100_000})
        d.doc["node"] = {"name": "n1", "lease_seconds": 3, "heartbeat": 1}
        d.save()
        cfg = on_backend(d.config_path, request, backend)
        (tmp_path / "accounts.csv").write_text(f"target,source,password\n{A},{A},{pair.users[A].old_password}\n")
        r = ctl("-c", cfg, "import", str(tmp_path / "accounts.csv"))
        assert r.returncode == 0, r.stderr
        target = pair.target_account(A)
        try:
            # 1. the daemon's pass is under way: a one-off is refused, names the node, and changes nothing
            held, go = _hold_next_body(proxy)
            d.start()
            assert held.wait(60), d.log()[-3000:]
            rows, mail = _dump(cfg), snapshot(*target)
            r = ctl("-c", cfg, "sync", A, "--password-file", pw, "--progress", "none")
            assert r.returncode == 6, (r.returncode, r.stderr)
            assert re.search(r"node n1 is syncing it now \(it holds the account's lease until \d{4}-\d\d-\d\d "
                             r"\d\d:\d\d:\d\d", r.stderr), r.stderr
            assert _dump(cfg) == rows and snapshot(*target) == mail
            go.set()
            d.wait_log(f"event=pass_done account={A} ok=True")

            # 2. after the daemon's pass, the one-off runs (its own node name and token in the pass record);
            #    the pass logs pass_done before the scheduler releases the lease with the next pass's time
            due = _wait(lambda: (row := _lease_row(cfg))[0] is None and row[3], "the daemon's lease released")
            r = ctl("-c", cfg, "sync", A, "--password-file", pw, "--progress", "none")
            assert r.returncode == 0, r.stderr
            assert "already present 5" in r.stdout, r.stdout
            node, _token, _expires, after = _lease_row(cfg)
            assert node is None and after == due        # released, the daemon's schedule as it was

            # 3. a daemon pass begun during a one-off is refused its lease, also after the lease's first
            #    expiry (the one-off renews it); the one-off then finishes
            d.stop()
            seed(*pair.source_account(A), {"INBOX": [Msg(make_message(i)) for i in range(5, 8)]})
            held, go = _hold_next_body(proxy)
            p = ctl_popen("-c", cfg, "sync", A, "--password-file", pw, "--progress", "none",
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                assert held.wait(60)
                node, token, first_expiry, _due = _lease_row(cfg)
                assert node.startswith("ctl-"), node
                assert [(n, c >= 1) for n, c in _slots(cfg)] == [(node, True)]   # in the host's shared budget
                d.start()
                refused = f"event=lease_refused account={A} why='held by node {node}'"
                _wait(lambda: d.log().count(refused) >= 2 and time.time() > first_expiry + 1,
                      "the daemon refused twice, past the first expiry")
                assert _lease_row(cfg)[:2] == (node, token)      # renewed, never taken over
                go.set()
                out, err = p.communicate(timeout=120)
            finally:
                go.set()
                if p.poll() is None:
                    p.kill()
                    p.wait()
            assert p.returncode == 0, err
            assert f"{A}: copied 3, already present 5" in out.decode(), out
        finally:
            go.set()
            d.stop()
    runs = _passes(cfg)
    assert [(n.split("-")[0], t) for _s, _f, n, t in runs] == [("n1", 1), ("ctl", 2), ("ctl", 3)]
    assert runs[2][2] == node
    assert all(f is not None for _s, f, _n, _t in runs)
    for (_s1, f1, _n1, _t1), (s2, _f2, _n2, _t2) in zip(runs, runs[1:]):
        assert s2 >= f1                                  # never two passes of the account at once


NODE = Node(name="n1", lease_seconds=60, heartbeat=15)


class _Source:
    host, port, max_connections = "127.0.0.1", 143, 4


def test_one_off_lease_is_refused_while_held_and_counts_in_the_hosts_budget(make_store, caplog):
    caplog.set_level("INFO", "mailsyncd.leases")
    store = make_store()
    clock = [1000.0]
    daemon = store.claim_lease(A, "n1", clock[0], 60, host="127.0.0.1:143", wanted=3, cap=4)
    assert isinstance(daemon, Lease)
    one = OneOffLease(store, A, _Source, 2, NODE, name="ctl-x-1", clock=lambda: clock[0],
                      sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    got = one.claim(slot_wait=60)
    assert isinstance(got, Refused) and got.holder == "n1" and got.retry_at == 1060
    assert clock[0] == 1000.0                       # refused at once: no waiting on another node's pass
    assert store.release_lease(daemon, due=5000.0)

    # the daemon's pass released the lease, but another account's pass holds 3 of the host's 4 connections
    other = store.claim_lease("bob@example.com", "n1", clock[0], 60, host="127.0.0.1:143", wanted=3, cap=4)
    assert other.connections == 3
    got = one.claim(slot_wait=60)
    assert isinstance(got, Lease) and got.connections == 1 and got.node == "ctl-x-1"
    assert store.host_use(clock[0]) == {"127.0.0.1:143": 4}
    again = store.claim_lease(A, "n1", clock[0], 60, host="127.0.0.1:143", wanted=3, cap=4, ignore_due=True)
    assert isinstance(again, Refused) and again.holder == "ctl-x-1"
    one.release()
    assert store.host_use(clock[0]) == {"127.0.0.1:143": 3}
    assert store.lease_due(A) == 5000.0             # the daemon's schedule, as it was

    # the host full: the one-off claims each second until slot_wait, then is refused
    store.claim_lease("carol@example.com", "n1", clock[0], 60, host="127.0.0.1:143", wanted=1, cap=4)
    got = OneOffLease(store, A, _Source, 2, NODE, name="ctl-x-2", clock=lambda: clock[0],
                      sleep=lambda s: clock.__setitem__(0, clock[0] + s)).claim(slot_wait=5)
    assert isinstance(got, Refused) and not got.holder and "no free connection" in got.why
    assert clock[0] == 1005.0
    assert caplog.text.count("event=lease_waiting") == 1            # said once, not once a second


def test_a_killed_one_offs_lease_is_taken_over_by_the_rerun_on_the_same_machine(make_store, caplog):
    """kill -9 of a one-off leaves its lease for lease_seconds; the rerun that recovers its in-flight batch
    takes it over at once when that process is gone (the crash tests rerun at once), never from a live one
    or another machine's."""
    import os

    from mailsyncd.cli.synclease import node_name
    caplog.set_level("INFO", "mailsyncd.leases")
    store = make_store()
    clock = [1000.0]
    gone = subprocess.Popen(["true"])
    gone.wait()                                     # a pid no process has now
    mine = node_name()
    dead_name = mine[:mine.rindex("-") + 1] + str(gone.pid)
    live_name = mine[:mine.rindex("-") + 1] + str(os.getppid())
    for holder, taken in ((live_name, False), ("ctl-otherhost-" + str(gone.pid), False), ("n1", False),
                          (dead_name, True)):
        held = store.claim_lease(A, holder, clock[0], 60, host="127.0.0.1:143", wanted=3, cap=4, ignore_due=True)
        assert isinstance(held, Lease), holder
        got = OneOffLease(store, A, _Source, 2, NODE, clock=lambda: clock[0]).claim(slot_wait=0)
        assert isinstance(got, Lease) == taken, (holder, got)
        if taken:
            assert got.connections == 2 and store.host_use(clock[0]) == {"127.0.0.1:143": 2}   # its 3 given back
            assert f"from={dead_name} why='that process is gone'" in caplog.text
            store.release_lease(got, 0.0)
        else:
            assert got.holder == holder
            store.release_lease(held, 0.0)


def test_one_off_lease_renewal_keeps_it_and_stops_the_pass_once_lost_or_late(make_store, caplog):
    store = make_store()
    clock = [1000.0]
    one = OneOffLease(store, A, _Source, 1, NODE, name="ctl-x-1", clock=lambda: clock[0])
    lease = one.claim(slot_wait=0)
    for _ in range(8):                          # 2 minutes of heartbeats: past the first expiry, still ours
        clock[0] += NODE.heartbeat
        assert one.beat()
    assert lease.expires == 1120.0 + 60 and store.lease_due(A) == 0.0
    assert isinstance(store.claim_lease(A, "n1", clock[0] + 59, 60, host="127.0.0.1:143", wanted=1, cap=4),
                      Refused)
    # the renewals failed for a whole lease (the database was down): stop before it could be another's
    clock[0] = lease.expires - NODE.heartbeat
    with caplog.at_level("ERROR", "mailsyncd.leases"):
        store.renew_leases = lambda *a: (_ for _ in ()).throw(OSError("database down"))
        assert not one.beat()
        del store.renew_leases
        assert "event=lease_expiring" in caplog.text
        # another node took the account over (as after a long pause of this process)
        clock[0] = lease.expires + 1
        taken = store.claim_lease(A, "n2", clock[0], 60, host="127.0.0.1:143", wanted=1, cap=4)
        assert isinstance(taken, Lease)
        assert not one.beat()
        assert "event=lease_lost" in caplog.text
    one.release()
    assert [(r["node"], r["token"]) for r in store.leases()] == [("n2", 2)]    # the release left n2's alone
