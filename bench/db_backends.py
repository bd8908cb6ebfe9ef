"""SQLite vs PostgreSQL: database statements per copied batch, and N accounts imported and synced.

    python bench/db_backends.py [--accounts 20] [--messages 200]

Starts its own Dovecot pair and PostgreSQL (mailsyncd/testing), seeds N accounts with the shared
bench corpus (../shared/bench/corpus.py), then for each backend on a fresh target:
1. one account synced in-process with one connection, counting the statements each batch's two store
   transactions send (begin_batch + commit_batch; on PostgreSQL each is a network round trip, an
   executemany is pipelined into one);
2. `mailsyncctl import` of all N accounts + `mailsyncctl sync` of each, timed by /usr/bin/time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]

from mailsyncd.config import load_config  # noqa: E402
from mailsyncd.store import Store  # noqa: E402
from mailsyncd.store.base import StoreBase  # noqa: E402
from mailsyncd.sync.account import AccountSync  # noqa: E402
from mailsyncd.testing import Dovecot  # noqa: E402
from mailsyncd.testing.postgres import Postgres  # noqa: E402
from matrix import load  # noqa: E402

MASTER = ("master", "master-pw")
_local = threading.local()


def _count(_stmt) -> None:
    _local.n = getattr(_local, "n", 0) + 1


def _instrument():
    """Per thread: statements sent (SQLite: trace callback; PostgreSQL: the store's counter), and the
    statements of each begin_batch + commit_batch pair."""
    per_batch: list[int] = []
    real_conn, real_begin, real_commit = StoreBase._conn, Store.begin_batch, Store.commit_batch

    def conn(self):
        c = real_conn(self)
        if self.backend == "sqlite":
            c.set_trace_callback(_count)
        return c

    def sent(self) -> int:
        return self.statements[0] if self.backend == "postgresql" else getattr(_local, "n", 0)

    def begin(self, *a, **kw):
        _local.start = sent(self)
        return real_begin(self, *a, **kw)

    def commit(self, *a, **kw):
        r = real_commit(self, *a, **kw)
        per_batch.append(sent(self) - _local.start)
        return r

    StoreBase._conn, Store.begin_batch, Store.commit_batch = conn, begin, commit
    return per_batch


def config(root: str, source: Dovecot, target: Dovecot, database: dict | None) -> str:
    master = os.path.join(root, "master.secret")
    with open(master, "w") as f:
        f.write(MASTER[1] + "\n")
    doc = {"state_dir": os.path.join(root, "state"), "domains": {"example.com": {
        "source": {"host": "127.0.0.1", "port": source.imap_port, "security": "none"},
        "target": {"host": "127.0.0.1", "port": target.imap_port, "security": "none", "auth": "master",
                   "master_user": MASTER[0], "master_password_file": master}}}}
    if database:
        doc["database"] = database
    path = os.path.join(root, "mailsyncd.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(doc, f)
    return path


def ctl(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "mailsyncd.cli.ctl", *args], check=True, cwd=REPO,
                   env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=20)
    ap.add_argument("--messages", type=int, default=200)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="db-bench-")
    users = {f"u{i:02d}@example.com": f"pw{i}" for i in range(args.accounts)}
    source = Dovecot(root, "source", users)
    source.start()
    for u, pw in users.items():
        load(source.imap_port, u, pw, "", "/", args.messages, big=None, seed=hash(u) % 1000)
    pg = Postgres().start()
    per_batch = _instrument()
    try:
        for backend in ("sqlite", "postgresql"):
            work = os.path.join(root, backend)
            os.makedirs(work)
            target = Dovecot(work, "target", {u: "new" for u in users}, master=MASTER)
            target.start()
            database = None
            if backend == "postgresql":
                database = {"url": pg.create_database("bench"), "password_file": pg.password_file}
            cfg_path = config(work, source, target, database)
            cfg = load_config(cfg_path)
            if database:
                ctl("-c", cfg_path, "migrate-db")
            # 1. statements per batch, one account in this process, one connection
            first = next(iter(users))
            per_batch.clear()
            store = Store.open(cfg)
            res = AccountSync(cfg.domain_for(first), first, users[first], store, connections=1).run()
            store.close()
            print(f"{backend}: {first}: {res.copied} messages in {len(per_batch)} batches; statements per batch "
                  f"(begin_batch + commit_batch): min {min(per_batch)} max {max(per_batch)} "
                  f"mean {sum(per_batch) / len(per_batch):.1f}")
            # 2. import + sync of every account, in processes, timed
            csv_path = os.path.join(work, "accounts.csv")
            with open(csv_path, "w") as f:
                f.write("target,source,password\n" + "".join(f"{u},{u},{pw}\n" for u, pw in users.items()))
            script = f"{sys.executable} -m mailsyncd.cli.ctl -c {cfg_path} import {csv_path} >/dev/null && " + \
                " && ".join(f"{sys.executable} -m mailsyncd.cli.ctl -c {cfg_path} sync {u} --progress none >/dev/null"
                            for u in users)
            t = subprocess.run(["/usr/bin/time", "-f", "%e s elapsed, %U s user, %S s sys", "sh", "-c", script],
                               cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True)
            print(f"{backend}: import + sync of {len(users)} accounts x {args.messages} messages "
                  f"(one already synced): {t.stderr.strip().splitlines()[-1]}")
            target.stop()
    finally:
        pg.destroy()
        source.stop()


if __name__ == "__main__":
    main()
