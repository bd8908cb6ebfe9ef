#!/usr/bin/env python3
"""bench/time_to_useful.py — how soon is the last month of INBOX on the new server? (sync.recent_first)

A throwaway Dovecot pair (mailsyncd.testing) on 127.0.0.1; the source gets the shared rig's corpus
(corpus.py --maildir, 20,000 messages by default), its INTERNALDATEs moved forward so that the newest
is a day old (the corpus spans 2015 to mid-2025: as generated, no message would be recent).  Then, for
each ``sync.recent_first`` given (default 30, then 0), a fresh target and state, and one first pass by
``mailsyncctl sync`` from this checkout; meanwhile a watcher asks the target every 0.1 s how many
INBOX messages of the last 30 days it holds (UID SEARCH SINCE: INTERNALDATEs are copied exactly).

  useful  seconds from the start to the moment the last 30 days of the source's INBOX are all on
          the target
  total   seconds of the whole first pass

Two starts (``--via``):

  sync    the start is ``mailsyncctl sync`` (process start, logins and LIST included)
  login   the real daemon (``python -m mailsyncd.cli.daemon``, plaintext LOGIN on a loopback
          listener, ``scheduler.pass_interval`` one day, ``sync.watch: off``) is started and ready
          first; the start is the user's first LOGIN through the front door (the old password checked
          at the source, the target login, then the pass that login starts); total ends at the
          daemon's ``event=pass_done``

  python bench/time_to_useful.py                         # 20,000 messages, recent_first 30 then 0
  python bench/time_to_useful.py --messages 5000 --modes 30,0,30 --via login,sync
"""

from __future__ import annotations

import argparse
import datetime as dt
import imaplib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from imapclient import IMAPClient  # noqa: E402

from mailsyncd.testing import Dovecot, free_port  # noqa: E402

USER, PASSWORD, MASTER = "alice@example.com", "secret", ("master", "masterpw")
WINDOW = 30     # what "useful" means: the last 30 days of INBOX


def login(port: int, user: str, password: str) -> IMAPClient:
    c = IMAPClient("127.0.0.1", port=port, ssl=False, timeout=60)
    c.login(user, password)
    return c


def seed(rig: str, src: Dovecot, messages: int, seed_no: int) -> None:
    maildir = src.maildir(USER)
    subprocess.run([sys.executable, os.path.join(rig, "corpus.py"), "--messages", str(messages), "--seed",
                    str(seed_no), "--maildir", maildir, "--no-imap"], check=True, stdout=subprocess.DEVNULL)
    sys.path.insert(0, rig)
    import corpus   # the rig's module: its newest INTERNALDATE
    shift = time.time() - 86400 - corpus.T_MAX
    for root, _dirs, files in os.walk(maildir):
        if os.path.basename(root) in ("cur", "new"):
            for f in files:
                p = os.path.join(root, f)
                t = os.stat(p).st_mtime + shift
                os.utime(p, (t, t))


def recent_in_inbox(port: int, user: str, password: str, since: dt.date) -> int:
    with login(port, user, password) as c:
        if not c.folder_exists("INBOX"):
            return 0
        c.select_folder("INBOX", readonly=True)
        return len(c.search(["SINCE", since]))


def config(work: str, src: Dovecot, tgt: Dovecot, days: int, connections: int | None,
           front_door: int | None = None) -> str:
    import yaml
    master = os.path.join(work, "master.secret")
    with open(master, "w") as f:
        f.write(MASTER[1] + "\n")
    os.chmod(master, 0o600)
    sync = {"recent_first": days, **({"connections": connections} if connections else {})}
    doc = {"state_dir": os.path.join(work, "state"), "sync": sync, "domains": {"example.com": {
        "source": {"host": "127.0.0.1", "port": src.imap_port, "security": "none", "protocol": "imap"},
        "target": {"host": "127.0.0.1", "port": tgt.imap_port, "security": "none", "auth": "master",
                   "master_user": MASTER[0], "master_password_file": master},
        "folders": {"layout": "mirror"}}}}
    if front_door is not None:     # the daemon: only the first login starts a pass, nothing watches
        doc["listen"] = {"imap": f"127.0.0.1:{front_door}"}
        doc["frontdoor"] = {"allow_plaintext_login": True}
        doc["scheduler"] = {"pass_interval": 86400}
        sync["watch"] = "off"
    path = os.path.join(work, "mailsyncd.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(doc, f)
    return path


def start_daemon(cfg: str, log_path: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=REPO)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mailsyncd.cli.daemon", "--config", cfg], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO, env=env)
    deadline = time.monotonic() + 60
    while "event=ready" not in read(log_path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("mailsyncd did not start:\n" + read(log_path)[-3000:])
        time.sleep(0.05)
    return proc


def read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def one_run(root: str, src: Dovecot, days: int, want: int, since: dt.date, connections: int | None,
            via: str) -> dict:
    work = tempfile.mkdtemp(prefix=f"ttu-{via}-{days}-", dir=root)
    tgt = Dovecot(work, "target", {USER: "new-pw"}, master=MASTER, pop3=False)
    tgt.start()
    daemon = None
    try:
        port = free_port() if via == "login" else None
        cfg = config(work, src, tgt, days, connections, port)
        log_path = os.path.join(work, "mailsyncd.log")
        if via == "login":
            daemon = start_daemon(cfg, log_path)
        pwf = os.path.join(work, "old.pw")
        with open(pwf, "w") as f:
            f.write(PASSWORD + "\n")
        os.chmod(pwf, 0o600)
        useful: list[float] = []
        done = threading.Event()
        t0 = time.monotonic()

        def watch() -> None:
            while not done.is_set():
                try:
                    n = recent_in_inbox(tgt.imap_port, f"{USER}*{MASTER[0]}", MASTER[1], since)
                except Exception:   # noqa: BLE001 - the target account is not there yet
                    n = 0
                if n >= want:
                    useful.append(time.monotonic() - t0)
                    return
                done.wait(0.1)

        w = threading.Thread(target=watch, daemon=True)
        if via == "login":
            c = imaplib.IMAP4("127.0.0.1", port)
            t0 = time.monotonic()
            w.start()
            c.login(USER, PASSWORD)     # the first login: it starts the migration
            login_s = time.monotonic() - t0
            c.logout()
            deadline = time.monotonic() + 1800
            while f"event=pass_done account={USER}" not in read(log_path):
                if daemon.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("no pass_done:\n" + read(log_path)[-3000:])
                time.sleep(0.05)
            total = time.monotonic() - t0
            rc = 0 if f"event=pass_done account={USER} ok=True" in read(log_path) else 1
            err = "" if rc == 0 else read(log_path)[-2000:]
        else:
            w.start()
            env = dict(os.environ, PYTHONPATH=REPO)
            cp = subprocess.run([sys.executable, "-m", "mailsyncd.cli.ctl", "--config", cfg, "sync", USER, "--add",
                                 "--password-file", pwf, "--progress", "none"], cwd=REPO, env=env,
                                capture_output=True, text=True)
            total = time.monotonic() - t0
            rc, err, login_s = cp.returncode, cp.stderr[-2000:], None
        w.join(5)
        done.set()
        with login(tgt.imap_port, f"{USER}*{MASTER[0]}", MASTER[1]) as c:
            on_target = sum(c.folder_status(n, ["MESSAGES"])[b"MESSAGES"] for fl, _, n in c.list_folders()
                            if b"\\Noselect" not in fl)
        return {"via": via, "recent_first": days, "useful_s": round(useful[0], 2) if useful else None,
                "total_s": round(total, 2), "rc": rc, "on_target": on_target, "recent_inbox": want,
                **({"login_s": round(login_s, 3)} if login_s is not None else {}), **({"stderr": err} if rc else {})}
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        tgt.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--modes", default="30,0", help="sync.recent_first values, one first pass each")
    ap.add_argument("--via", default="sync", help="what starts the pass: login (first front-door login), "
                    "sync (mailsyncctl sync), or both, comma-separated: each mode runs once per start")
    ap.add_argument("--connections", type=int, default=None, help="sync.connections (default: mailsyncd's)")
    ap.add_argument("--rig", default=os.environ.get("MAILSYNCD_BENCH_RIG")
                    or os.path.normpath(os.path.join(REPO, "..", "shared", "bench")))
    ap.add_argument("--work", default=None, help="scratch directory (default: a new one under /tmp)")
    a = ap.parse_args()
    root = a.work or tempfile.mkdtemp(prefix="ttu-")
    src = Dovecot(root, "source", {USER: PASSWORD}, pop3=False)
    src.start()     # nothing reads the account before the corpus is written
    try:
        seed(a.rig, src, a.messages, a.seed)
        since = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=WINDOW)
        with login(src.imap_port, USER, PASSWORD) as c:
            total = sum(c.folder_status(n, ["MESSAGES"])[b"MESSAGES"] for fl, _, n in c.list_folders()
                        if b"\\Noselect" not in fl)
        want = recent_in_inbox(src.imap_port, USER, PASSWORD, since)
        print(f"source: {total} messages; INBOX since {since}: {want}", flush=True)
        for days in (int(x) for x in a.modes.split(",")):
            for via in a.via.split(","):
                r = one_run(root, src, days, want, since, a.connections, via)
                r["source_messages"] = total
                print(json.dumps(r), flush=True)
    finally:
        src.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
