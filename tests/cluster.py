"""A cluster of real mailsyncd processes for the end-to-end tests and bench/cluster.py.

One PostgreSQL database, the Dovecot pair, N ``mailsyncd --config F`` processes whose configs differ
only in ``node.name`` and their listen ports (each has its own ``state_dir`` holding the same vault key),
and HAProxy in front (``send-proxy-v2``; frontend ``imap`` round robin over every node, ``one`` to the
first node only).  The source is reached through a :class:`CountingRelay`, which knows how many source
connections are open at once over every node.
"""

from __future__ import annotations

import csv
import os
import re
import socket
import threading
import time

from faultproxy import Listener
from proxyenv import Daemon
from syncenv import ctl

from mailsyncd.testing.haproxy import Frontend, HAProxy


class CountingRelay(Listener):
    """A TCP relay on 127.0.0.1 that counts connections: open now, the most at once, and in all."""

    def __init__(self, upstream_port: int):
        self.upstream = ("127.0.0.1", upstream_port)
        self.lock = threading.Lock()
        self.open = self.peak = self.total = 0
        self.at_peak: list[dict] = []          # the connections open when the peak was reached
        self._live: dict[int, dict] = {}
        self._listen()

    def reset_peak(self) -> None:
        with self.lock:
            self.peak = self.open

    def _accepted(self, client: socket.socket) -> None:
        try:
            up = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            client.close()
            return
        info = {"opened": time.time(), "first": b""}
        with self.lock:
            self.open += 1
            self.total += 1
            self._live[id(client)] = info
            if self.open > self.peak:
                self.peak = self.open
                self.at_peak = [dict(i) for i in self._live.values()]
        done = threading.Event()
        threading.Thread(target=self._pump, args=(client, up, done, info), daemon=True).start()
        threading.Thread(target=self._pump, args=(up, client, done, None), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket, done: threading.Event, info: dict | None) -> None:
        # the client's side ending (its close) is when the connection stops counting
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                if info is not None and len(info["first"]) < 300:
                    info["first"] += data[:300]
                b.sendall(data)
        except OSError:
            pass
        if info is not None:
            with self.lock:
                self.open -= 1
                self._live.pop(id(a), None)
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if done.is_set():
            a.close()
            b.close()
        done.set()


def write_accounts_csv(path: str, users: dict[str, str]) -> str:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["target", "source", "password"])
        for u, p in users.items():
            w.writerow([u, u, p])
    return path


class Cluster:
    """``nodes`` daemons on one PostgreSQL database behind one HAProxy.  ``start()`` migrates the
    database, writes the shared vault key, starts every node and HAProxy."""

    def __init__(self, tmp_path, pair, pg, db_name: str, nodes: int = 3, *, lease_seconds: float = 60,
                 heartbeat: float | None = None, source=None, sync=None, scheduler=None, frontdoor=None):
        self.tmp_path, self.pair, self.pg = tmp_path, pair, pg
        self.url = pg.create_database(db_name)
        self.relay = CountingRelay(pair.source.imap_port)
        self.key = os.urandom(32)
        self.nodes: list[Daemon] = []
        node = {"lease_seconds": lease_seconds}
        if heartbeat is not None:
            node["heartbeat"] = heartbeat
        for i in range(1, nodes + 1):
            d = tmp_path / f"n{i}"
            d.mkdir()
            n = Daemon(d, pair, source={"port": self.relay.port, **(source or {})}, sync=sync,
                       scheduler=scheduler, frontdoor={"trusted_proxies": ["127.0.0.1"], **(frontdoor or {})})
            n.name = f"n{i}"
            n.doc["database"] = {"url": self.url, "password_file": pg.password_file}
            n.doc["node"] = {"name": n.name, **node}
            n.doc["listen"]["proxy_protocol"] = True
            n.save()
            os.makedirs(n.state_dir, mode=0o700, exist_ok=True)
            key_path = os.path.join(n.state_dir, "vault.key")
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(self.key)
            self.nodes.append(n)
        self.haproxy = HAProxy(str(tmp_path), [
            Frontend("imap", [("127.0.0.1", n.imap_port) for n in self.nodes]),
            Frontend("one", [("127.0.0.1", self.nodes[0].imap_port)])])

    def start(self) -> Cluster:
        self.relay.__enter__()
        cp = ctl("-c", self.nodes[0].config_path, "migrate-db")
        assert cp.returncode == 0, cp.stdout + cp.stderr
        for n in self.nodes:
            n.spawn()
        for n in self.nodes:
            n.wait_log("event=ready", timeout=60)
        self.haproxy.start()
        return self

    def stop(self) -> None:
        self.haproxy.stop()
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                try:
                    os.kill(n.proc.pid, 18)            # SIGCONT: a stopped node cannot take SIGTERM
                except OSError:
                    pass
            n.stop()
        self.relay.__exit__()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def import_accounts(self, users: dict[str, str]) -> None:
        path = write_accounts_csv(str(self.tmp_path / "accounts.csv"), users)
        cp = ctl("-c", self.nodes[0].config_path, "import", path)
        assert cp.returncode == 0, cp.stdout + cp.stderr

    # -- the database, read as the superuser (the tests' view, never the code under test) ----------
    def sql(self, query: str) -> list[list[str]]:
        out = self.pg.psql(query, db=self.url.rsplit("/", 1)[1])
        return [line.split("|") for line in out.splitlines() if line]

    def phases(self) -> dict[str, int]:
        return {p: int(c) for p, c in self.sql("SELECT phase, count(*) FROM accounts GROUP BY phase")}

    def passes(self) -> list[tuple]:
        """(account, started, finished or None, ok, node, token) of every pass."""
        rows = self.sql("SELECT account, started, finished, ok, node, token FROM passes ORDER BY account, id")
        return [(a, float(s), float(f) if f else None, o, n or None, int(t) if t else None)
                for a, s, f, o, n, t in rows]

    def leases(self) -> dict[str, tuple[str, int, float]]:
        """account -> (node, token, expires) of every lease held now."""
        return {a: (n, int(t), float(e)) for a, n, t, e in
                self.sql("SELECT account, node, token, expires FROM leases WHERE node IS NOT NULL")}

    def dump(self) -> dict[str, list]:
        """Every row the passes write (the node bookkeeping tables aside)."""
        skip = ("leases", "nodes", "host_slots", "host_limits", "meta", "throttle", "web_sessions")
        tables = [t for (t,) in self.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                  if t not in skip]
        return {t: sorted(map(tuple, self.sql(f"SELECT * FROM {t}"))) for t in tables}

    def wait(self, cond, *, timeout: float, what: str, step: float = 0.25):
        deadline = time.monotonic() + timeout
        while True:
            got = cond()
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout:.0f}s\n" +
                                     "\n".join(f"--- {n.name}\n{n.log()[-1500:]}" for n in self.nodes))
            time.sleep(step)


def lease_expiries(nodes) -> dict[str, list[float]]:
    """account -> when each taken-over lease had expired (event=lease_taken_over in every node's log)."""
    out: dict[str, list[float]] = {}
    for n in nodes:
        for m in re.finditer(r"event=lease_taken_over account=(\S+) from=\S+ expired_at=([0-9.]+)", n.log()):
            out.setdefault(m.group(1), []).append(float(m.group(2)))
    return out


def overlapping(runs: list[tuple], expiries: dict[str, list[float]]) -> list[str]:
    """Accounts with two passes at once, from the pass records.  A pass that never finished (its node was
    killed, or paused past its lease) ended when its lease expired (``expiries``: lease_expiries()); one
    whose lease no other node took over runs on forever."""
    bad, last = [], {}
    for account, started, finished, _ok, _node, _token in sorted(runs, key=lambda r: (r[0], r[1])):
        if started < last.get(account, 0.0):
            bad.append(account)
        if finished is None:
            later = [e for e in expiries.get(account, ()) if e >= started]
            finished = min(later) if later else float("inf")
        last[account] = finished
    return bad


def seed_maildir(dovecot, user: str, folders: dict[str, int], first: int = 0, size: int | None = None) -> int:
    """Write ``folders`` (name -> message count) straight into the user's maildir: a few hundred messages
    for 60 accounts in a second, where APPENDs would take a minute.  Returns the next message number."""
    from seed import make_message
    ids = dovecot._mail_ids()
    root = dovecot.maildir(user)
    i = first
    for folder, count in folders.items():
        base = root if folder == "INBOX" else os.path.join(root, "." + folder)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        for _ in range(count):
            path = os.path.join(base, "cur", f"{1_700_000_000 + i}.M{i}P1.seed:2,S")
            with open(path, "wb") as f:
                f.write(make_message(i, size=size))
            i += 1
    if ids is not None:
        for d, dirs, files in os.walk(dovecot.home(user)):
            for name in [*dirs, *files]:
                os.chown(os.path.join(d, name), *ids)
    return i
