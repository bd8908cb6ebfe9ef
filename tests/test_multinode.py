"""Several nodes (Scheduler instances with their own node name, store connections and thread pools) on ONE
SQLite store, in one process, against the real Dovecot pair.  The schedulers share one fake clock; passes
run in real threads and report back through the clock's queue, which the test drains on its own thread.
"""

from __future__ import annotations

import os
import queue
import threading
import time

import pytest
import yaml

from twisted.internet import task
from twisted.python.threadpool import ThreadPool

from matrix import verify
from seed import Msg, make_message, seed, snapshot
from syncenv import make_config

from mailsyncd.config import load_config
from mailsyncd.net import imap
from mailsyncd.scheduler import Scheduler
from mailsyncd.store import Store
from mailsyncd.vault import Vault

pytestmark = pytest.mark.dovecot

KEY = os.urandom(32)
MASTER = ("master", "master-pw")


class ThreadedClock(task.Clock):
    """A fake clock whose callFromThread queues the call for the test's thread (``drain``)."""

    def __init__(self):
        super().__init__()
        self.q: queue.SimpleQueue = queue.SimpleQueue()

    def callFromThread(self, f, *args, **kw):
        self.q.put((f, args, kw))

    def drain(self) -> None:
        while True:
            try:
                f, args, kw = self.q.get_nowait()
            except queue.Empty:
                return
            f(*args, **kw)


class Node:
    def __init__(self, cfg_path: str, name: str, reactor, lease_seconds: float, heartbeat: float):
        doc = yaml.safe_load(open(cfg_path))
        doc["node"] = {"name": name, "lease_seconds": lease_seconds, "heartbeat": heartbeat}
        path = cfg_path.replace(".yaml", f"-{name}.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(doc, f)
        self.cfg = load_config(path)
        self.store = Store.in_state_dir(self.cfg.state_dir)     # its own connections, as another process
        self.sync_pool = ThreadPool(minthreads=0, maxthreads=self.cfg.scheduler.max_accounts, name=f"sync-{name}")
        self.state_pool = ThreadPool(minthreads=1, maxthreads=1, name=f"state-{name}")
        self.sync_pool.start()
        self.state_pool.start()
        self.sched = Scheduler(reactor, self.sync_pool, self.state_pool, self.store, Vault(self.store, KEY),
                               lambda: self.cfg)

    def freeze(self) -> None:
        """As if SIGSTOPped: no tick, no renewal (its pass threads are held by the test)."""
        self.sched.stopping = True
        self.sched._loop.stop()
        self.sched.leases.stop()

    def close(self) -> None:
        self.sched.stopping = True
        for run in self.sched.running.values():
            run.stop.set()
        for pool in (self.sync_pool, self.state_pool):
            if not pool.joined:
                pool.stop()
        self.store.close()


def run_until(reactor, cond, *, timeout: float = 180, step: float = 0.5) -> None:
    """Move the shared clock on ``step`` seconds at a time while the threads work."""
    deadline = time.monotonic() + timeout
    while True:
        reactor.drain()
        if cond():
            return
        assert time.monotonic() < deadline, "timed out"
        reactor.advance(step)
        time.sleep(0.005)


def _users(n: int) -> dict[str, str]:
    return {f"u{i:02d}@example.com": f"pw-{i}" for i in range(n)}


@pytest.fixture
def cluster(tmp_path, make_dovecot):
    made: list[Node] = []

    def build(users: dict[str, str], *, nodes: int, sync=None, source=None, scheduler=None,
              lease_seconds: float = 60, heartbeat: float = 15):
        src = make_dovecot("source", users)
        tgt = make_dovecot("target", {u: "new-" + p for u, p in users.items()}, master=MASTER)

        class Pair:
            source, target, master = src, tgt, MASTER
        cfg_path = make_config(tmp_path, Pair, sync=sync, source=source)
        doc = yaml.safe_load(open(cfg_path))
        doc["scheduler"] = {"pass_interval": 100_000, **(scheduler or {})}
        with open(cfg_path, "w") as f:
            yaml.safe_dump(doc, f)
        store = Store.in_state_dir(load_config(cfg_path).state_dir)
        vault = Vault(store, KEY)
        for u, p in users.items():
            store.ensure_account(u, "example.com", "import")
            vault.put_password(u, p)
        store.close()
        reactor = ThreadedClock()
        reactor.advance(50_000)
        out = []
        for i in range(nodes):
            n = Node(cfg_path, f"n{i + 1}", reactor, lease_seconds, heartbeat)
            made.append(n)
            out.append(n)
        return src, tgt, reactor, out

    yield build
    for n in made:
        n.close()


def _passes(store) -> list[tuple]:
    return store._conn().execute("SELECT account, started, finished, ok, node, token FROM passes"
                                 " ORDER BY account, id").fetchall()


def _assert_no_overlap(runs: list[tuple]) -> None:
    """From the pass records: no account has two passes at once (an unfinished pass runs until forever)."""
    last: dict[str, float] = {}
    for account, started, finished, _ok, node, token in sorted(runs, key=lambda r: (r[0], r[1])):
        assert node is not None and token is not None          # every pass ran under a lease
        assert started >= last.get(account, 0.0), f"{account}: two passes at once"
        last[account] = finished if finished is not None else float("inf")


def _dump(store) -> dict[str, list]:
    """Every row the passes write (the node bookkeeping tables aside)."""
    c = store._conn()
    tables = [t for (t,) in c.execute("SELECT name FROM sqlite_master WHERE type='table'")
              if t not in ("leases", "nodes", "host_slots", "host_limits", "meta")]
    return {t: sorted(map(repr, c.execute(f"SELECT * FROM {t}").fetchall())) for t in tables}


@pytest.mark.parametrize("pause_at", ["before_append", "before_commit"])
def test_a_pass_paused_past_its_lease_writes_nothing_after_the_takeover(cluster, monkeypatch, tmp_path, pause_at):
    """Node 1 is paused mid-batch past its lease; node 2 takes the account over, recovers the batch in
    flight and finishes; node 1 then wakes up: not one row more, and the copy is IDENTICAL."""
    user, pw = "u00@example.com", "pw-0"
    src, tgt, reactor, (n1, n2) = cluster({user: pw}, nodes=2, sync={"batch_messages": 4, "connections": 1})
    seed("127.0.0.1", src.imap_port, user, pw, {"INBOX": [Msg(make_message(i)) for i in range(20)],
                                                 "Archive": [Msg(make_message(100 + i)) for i in range(6)]})
    paused, wake = threading.Event(), threading.Event()
    calls = {"n": 0}
    name = "begin_batch" if pause_at == "before_append" else "commit_batch"
    real = getattr(Store, name)

    def pausing(self, *a, **kw):
        out = real(self, *a, **kw) if pause_at == "before_append" else None
        fence = getattr(self, "_fence", None)
        if fence is not None and fence.node == "n1":
            calls["n"] += 1
            if calls["n"] == 2:                     # the second batch: the first one is committed
                paused.set()
                assert wake.wait(120)
        return out if pause_at == "before_append" else real(self, *a, **kw)
    monkeypatch.setattr(Store, name, pausing)

    n1.sched.start()
    run_until(reactor, paused.is_set, step=0.1)
    assert n1.sched.running[user].lease.node == "n1"
    n1.freeze()                                     # the whole node stops, as under SIGSTOP
    first_expiry = n1.sched.running[user].lease.expires
    n2.sched.start()
    run_until(reactor, lambda: n2.sched.counts["passes"] == 1 and not n2.sched.running and not n2.store.leases(),
              step=1.0)
    (claimed, token), = n2.store._conn().execute("SELECT claimed, token FROM leases").fetchall()
    assert token == 2 and first_expiry <= claimed <= first_expiry + 2   # taken over once node 1's lease ran out
    rows = _dump(n2.store)
    wake.set()                                      # node 1 wakes up
    n1.sync_pool.stop()                             # waits for its pass thread to end
    reactor.drain()
    assert _dump(n2.store) == rows                  # not one row from node 1 after the takeover
    passes = _passes(n2.store)
    # node 1's pass never finished (no row after the takeover); node 2's, under the next token, did
    assert [(p[4], p[5], p[2] is not None, p[3]) for p in passes] == [("n1", 1, False, None), ("n2", 2, True, 1)]
    src_ep = {"port": src.imap_port, "user": user, "pass": pw}
    dst_ep = {"port": tgt.imap_port, "user": f"{user}*{MASTER[0]}", "pass": MASTER[1]}
    rc, verdict, text = verify(src_ep, dst_ep, {}, str(tmp_path / "verify.json"))
    assert rc == 0, text


def test_three_nodes_copy_60_accounts_without_overlapping_passes_within_the_hosts_budget(cluster, monkeypatch):
    users = _users(60)
    budget = 4
    src, tgt, reactor, nodes = cluster(users, nodes=3, source={"max_connections": budget},
                                       sync={"connections": 2}, scheduler={"max_accounts": 3},
                                       lease_seconds=600, heartbeat=150)
    for i, (u, p) in enumerate(users.items()):
        seed("127.0.0.1", src.imap_port, u, p, {"INBOX": [Msg(make_message(i * 10 + k)) for k in range(3)],
                                                 "Sent": [Msg(make_message(i * 10 + 5))]})
    lock = threading.Lock()
    now = {"open": 0, "max": 0}
    sources: set[int] = set()
    real_connect, real_close = imap.connect, imap.close

    def connect(endpoint, *, role):
        c = real_connect(endpoint, role=role)
        if role == "source":
            with lock:
                sources.add(id(c))
                now["open"] += 1
                now["max"] = max(now["max"], now["open"])
        return c

    def close(client):
        with lock:
            if id(client) in sources:
                sources.discard(id(client))
                now["open"] -= 1
        real_close(client)
    monkeypatch.setattr(imap, "connect", connect)
    monkeypatch.setattr(imap, "close", close)
    for n in nodes:
        n.sched.start()
    store = nodes[0].store
    run_until(reactor, lambda: store.phase_counts().get("synced", 0) == 60
              and not any(n.sched.running for n in nodes), timeout=300)
    assert now["max"] <= budget, now
    runs = _passes(store)
    by_node = {n.sched.leases.name: n.sched.counts["passes"] for n in nodes}
    assert sum(by_node.values()) == len(runs) == 60, by_node     # one pass each: no account passed twice
    _assert_no_overlap(runs)
    for u, p in users.items():
        assert snapshot("127.0.0.1", src.imap_port, u, p) == \
            snapshot("127.0.0.1", tgt.imap_port, f"{u}*{MASTER[0]}", MASTER[1]), u
