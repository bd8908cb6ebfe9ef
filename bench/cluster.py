#!/usr/bin/env python3
"""bench/cluster.py — accounts per hour for 1, 2 and 3 nodes on one PostgreSQL, one Dovecot pair.

For each node count: a fresh Dovecot pair and database (throwaway, 127.0.0.1, temp dirs), N accounts
of M messages written into the source's maildirs, N real ``mailsyncd`` processes (tests/cluster.py:
the test harness, HAProxy in front, a counting relay before the source), ``mailsyncctl import``, then
the wall time until every account is synced.  Also: CPU seconds of the node processes, the share of
all cores busy (the machine's, other jobs included), the busiest source connections at once,
PostgreSQL transactions per copied batch (pg_stat_database's commits and rollbacks: every autocommit
statement is one, so this counts round trips that end a transaction), the UID map's bytes per row,
and the machine's load average (the cores are shared).

  .venv/bin/python bench/cluster.py                          # 1,2,3 nodes; 30 accounts x 200 messages
  .venv/bin/python bench/cluster.py --nodes 3 --accounts 60 --json /tmp/cluster.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]

from cluster import Cluster, seed_maildir  # noqa: E402  (tests/cluster.py)

from mailsyncd.testing import Dovecot  # noqa: E402
from mailsyncd.testing.postgres import Postgres  # noqa: E402

MASTER = ("master", "master-pw")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def run(nodes: int, accounts: int, messages: int, budget: int, batch: int, workdir: str) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"n{nodes}-", dir=workdir))
    users = {f"u{i:03d}@example.com": f"pw-{i}" for i in range(accounts)}
    src = Dovecot(str(root), "source", users)
    tgt = Dovecot(str(root), "target", {u: "new-" + p for u, p in users.items()}, master=MASTER)
    pg = Postgres()                                        # in /tmp: the postgres user must reach it
    c = None
    try:
        src.start()
        tgt.start()
        pg.start()
        for i, u in enumerate(users):
            seed_maildir(src, u, {"INBOX": messages * 3 // 4, "Sent": messages - messages * 3 // 4}, first=i * 10_000)
        pair = SimpleNamespace(source=src, target=tgt, master=MASTER)
        c = Cluster(root, pair, pg, "bench", nodes=nodes, source={"max_connections": budget},
                    sync={"connections": 2, "batch_messages": batch},
                    scheduler={"pass_interval": 100_000, "max_accounts": 2})
        c.start()
        db = c.url.rsplit("/", 1)[1]
        xacts = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '%s'" % db
        cpu0 = sum(cpu_seconds(n.proc.pid) for n in c.nodes)
        x0 = int(c.sql(xacts)[0][0])
        load0 = os.getloadavg()[0]
        m0 = machine_cpu()
        t0 = time.monotonic()
        c.import_accounts(users)
        c.wait(lambda: c.phases().get("synced", 0) == accounts and not c.leases(), timeout=3600,
               what="all synced", step=0.2)
        wall = time.monotonic() - t0
        cpu = sum(cpu_seconds(n.proc.pid) for n in c.nodes) - cpu0
        m1 = machine_cpu()
        busy = (m1[0] - m0[0]) / max(1, m1[1] - m0[1])
        time.sleep(1.0)                                    # the statistics collector lags a little
        x = int(c.sql(xacts)[0][0]) - x0
        runs = c.passes()
        rows, size = map(int, c.sql("SELECT count(*), pg_total_relation_size('messages') FROM messages")[0])
        db_size = int(c.sql(f"SELECT pg_database_size('{db}')")[0][0])
        copied = accounts * messages
        batches = accounts * sum(-(-k // batch) for k in (messages * 3 // 4, messages - messages * 3 // 4))
        per_node = {n.name: sum(r[4] == n.name for r in runs) for n in c.nodes}
        return {"nodes": nodes, "accounts": accounts, "messages": messages, "wall_s": round(wall, 2),
                "accounts_per_hour": round(accounts / wall * 3600), "messages_per_s": round(copied / wall),
                "node_cpu_s": round(cpu, 2), "node_cpu_share": round(cpu / wall, 2),
                "machine_busy": round(busy, 2), "load_before": round(load0, 2),
                "load_after": round(os.getloadavg()[0], 2),
                "source_peak": c.relay.peak, "budget": budget, "passes_per_node": per_node,
                "pg_transactions": x, "uid_map_bytes_per_message": round(size / max(rows, 1)),
                "db_mb": round(db_size / 1e6, 1), "batches": batches,
                "pg_transactions_per_batch": round(x / batches, 1)}
    finally:
        if c is not None:
            c.stop()
        pg.destroy()
        tgt.stop()
        src.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--nodes", default="1,2,3")
    ap.add_argument("--accounts", type=int, default=30)
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--budget", type=int, default=6, help="source.max_connections (shared)")
    ap.add_argument("--batch", type=int, default=50, help="sync.batch_messages")
    ap.add_argument("--json")
    a = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="msb-cluster-", dir="/tmp")
    out = []
    for n in map(int, a.nodes.split(",")):
        r = run(n, a.accounts, a.messages, a.budget, a.batch, workdir)
        print(json.dumps(r), flush=True)
        out.append(r)
    print("| nodes | wall (s) | accounts/h | msgs/s | node CPU s (share of wall) | all cores busy | load before/after"
          " | source peak / budget | passes per node | PG xacts per batch |")
    print("|---:|---:|---:|---:|---:|---:|---|---|---|---:|")
    for r in out:
        print(f"| {r['nodes']} | {r['wall_s']} | {r['accounts_per_hour']} | {r['messages_per_s']} | "
              f"{r['node_cpu_s']} ({r['node_cpu_share']}) | {r['machine_busy']:.0%} | "
              f"{r['load_before']}/{r['load_after']} | "
              f"{r['source_peak']}/{r['budget']} | {r['passes_per_node']} | {r['pg_transactions_per_batch']} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
