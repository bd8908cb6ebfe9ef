#!/usr/bin/env python3
"""bench/open_folder.py — open-folder latency (issue 14): a client SELECTs a folder of N messages the
migration has not copied yet, through the front door.

Self-contained: a throwaway Dovecot pair (mailsyncd.testing, 127.0.0.1, temp dir) and the real daemon
(``python -m mailsyncd.cli.daemon`` from this checkout, plaintext LOGIN on a loopback listener,
``scheduler.pass_interval`` one day and ``sync.watch: off``, so that after the first pass only the front
door's focus copies; ``--watch auto`` keeps the daemon's default watch, whose NOTIFY sees the folder
being filled at the source and starts copying it before the client opens it).

For each run: a new source folder ``OpenK`` with --messages messages (default 300) appears at the
source after the first pass; a raw-socket client logs in through the front door and times
``SELECT OpenK`` from the command's send to its tagged OK; the folder is *complete* when the
SELECT's EXISTS equals the source's count.  Arms:

  hold   the defaults (frontdoor.copy_on_open 500, copy_on_open_deadline 3 s)
  off    frontdoor.copy_on_open 0: the SELECT is never held (what the relay did before)
  large  the defaults, a folder of --large messages (default 2000): forwarded at once with an [ALERT]

  .venv/bin/python bench/open_folder.py                  # 5 runs per arm
  .venv/bin/python bench/open_folder.py --runs 10 --json /tmp/open.json

Progress goes to stderr; the table to stdout.
"""
from __future__ import annotations

import argparse
import datetime as dt
import imaplib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

import yaml  # noqa: E402
from imapclient import IMAPClient  # noqa: E402

from mailsyncd.scheduler import UNKNOWN_LOOKS  # noqa: E402
from mailsyncd.testing import Dovecot, free_port  # noqa: E402

USER = "alice@example.com"
OLD_PW, NEW_PW = "old-pw", "new-pw"
MASTER = ("master", "master-pw")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def message(i: int, size: int) -> bytes:
    body = (f"Message {i} of the open-folder bench.\r\n" * (size // 40 + 1))[:size]
    return (f"From: Sender {i} <s{i}@example.org>\r\nTo: {USER}\r\nSubject: bench {i}\r\n"
            f"Message-ID: <open-{i}@bench.example>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n{body}").encode()


def seed(port: int, folder: str, n: int, size: int, start: int) -> None:
    with IMAPClient("127.0.0.1", port, ssl=False) as c:
        c.login(USER, OLD_PW)
        if folder.upper() != "INBOX":
            c.create_folder(folder)
            c.subscribe_folder(folder)
        when = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
        for i in range(n):
            c.append(folder, message(start + i, size), flags=(b"\\Seen",), msg_time=when)


class Daemon:
    def __init__(self, workdir: str, source: Dovecot, target: Dovecot, watch: str = "off"):
        self.workdir, self.port = workdir, free_port()
        master_file = os.path.join(workdir, "master.secret")
        with open(master_file, "w") as f:
            f.write(MASTER[1] + "\n")
        os.chmod(master_file, 0o600)
        self.doc = {
            "state_dir": os.path.join(workdir, "state"),
            "domains": {"example.com": {
                "source": {"host": "127.0.0.1", "port": source.imap_port, "security": "none"},
                "target": {"host": "127.0.0.1", "port": target.imap_port, "security": "none",
                           "auth": "master", "master_user": MASTER[0], "master_password_file": master_file},
                "folders": {"layout": "mirror"}}},
            "listen": {"imap": f"127.0.0.1:{self.port}"},
            "scheduler": {"pass_interval": 86400},
            "sync": {"watch": watch},
            "frontdoor": {"allow_plaintext_login": True, "verifier_ttl": 86400},
        }
        self.config_path = os.path.join(workdir, "mailsyncd.yaml")
        self.log_path = os.path.join(workdir, "mailsyncd.log")
        self.proc = None
        self.looks = 0      # SELECTs of folders new since the last plan (Scheduler: UNKNOWN_LOOKS per 5 min)

    def start(self, **frontdoor) -> None:
        self.doc["frontdoor"].update(frontdoor)
        with open(self.config_path, "w") as f:
            yaml.safe_dump(self.doc, f)
        before = self.log().count("event=ready")
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "mailsyncd.cli.daemon", "--config", self.config_path],
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=REPO, env=env)
        deadline = time.monotonic() + 30
        while self.log().count("event=ready") <= before:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mailsyncd did not start:\n" + self.log()[-3000:])
            time.sleep(0.05)
        self.looks = 0

    def restart(self) -> None:
        """A restart begins with a full pass of the account (it copies Open1..): wait for it to end."""
        passes = self.log().count("event=pass_done")
        self.stop()
        self.start()
        deadline = time.monotonic() + 120
        while self.log().count("event=pass_done") == passes and time.monotonic() < deadline:
            time.sleep(0.05)

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_log(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{text!r} not logged:\n" + self.log()[-3000:])
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._log.close()
        self.proc = None


def timed_select(port: int, folder: str) -> dict:
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    f = s.makefile("rb")
    f.readline()
    s.sendall(f"a LOGIN {USER} {OLD_PW}\r\n".encode())
    while not f.readline().startswith(b"a "):
        pass
    t0 = time.perf_counter()
    s.sendall(f'b SELECT "{folder}"\r\n'.encode())
    lines = []
    while True:
        ln = f.readline()
        lines.append(ln)
        if ln.startswith(b"b "):
            break
    took = time.perf_counter() - t0
    s.sendall(b"c LOGOUT\r\n")
    s.close()
    exists = next((int(m.group(1)) for m in (re.match(rb"\* (\d+) EXISTS", ln) for ln in lines) if m), None)
    alert = next((ln.decode().strip() for ln in lines if b"[ALERT]" in ln), None)
    return {"seconds": took, "ok": lines[-1].startswith(b"b OK"), "exists": exists, "alert": alert}


def run_arm(name: str, daemon: Daemon, source: Dovecot, runs: int, n: int, size: int, counter: list) -> list[dict]:
    out = []
    for _ in range(runs):
        if name != "off" and daemon.looks >= UNKNOWN_LOOKS:
            # past UNKNOWN_LOOKS new names in 5 min the scheduler takes a name as made up and lets its SELECT
            # through at once (no source login per invented name): a new daemon, a new plan, a new count
            daemon.restart()
        daemon.looks += name != "off"
        counter[0] += 1
        folder = f"Open{counter[0]}"
        seed(source.imap_port, folder, n, size, counter[0] * 100_000)
        r = timed_select(daemon.port, folder)
        r.update(arm=name, folder=folder, messages=n, complete=r["exists"] == n)
        log(f"{name}: {folder} {n} msgs -> {r['seconds']:.3f}s exists={r['exists']} alert={bool(r['alert'])}")
        out.append(r)
        if name != "off":   # let the focused pass finish before the next folder appears
            daemon.wait_log(f"folder='{folder}' state=")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--large", type=int, default=2000)
    ap.add_argument("--size", type=int, default=4000, help="bytes per message body (default 4000)")
    ap.add_argument("--json")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--watch", default="off", choices=("off", "auto", "idle", "poll"),
                    help="sync.watch of the daemon (default off: only the front door copies the opened folder)")
    a = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="mailsyncd-openbench-")
    source = Dovecot(workdir, "source", {USER: OLD_PW})
    target = Dovecot(workdir, "target", {USER: NEW_PW}, master=MASTER)
    daemon = None
    results: list[dict] = []
    try:
        source.start()
        target.start()
        daemon = Daemon(workdir, source, target, a.watch)
        seed(source.imap_port, "INBOX", 3, a.size, 0)
        daemon.start()
        c = imaplib.IMAP4("127.0.0.1", daemon.port)
        c.login(USER, OLD_PW)
        c.logout()
        daemon.wait_log(f"event=pass_done account={USER} ok=True")
        counter = [0]
        results += run_arm("hold", daemon, source, a.runs, a.messages, a.size, counter)
        results += run_arm("large", daemon, source, 1, a.large, a.size, counter)
        daemon.doc["frontdoor"]["copy_on_open"] = 0
        daemon.restart()
        results += run_arm("off", daemon, source, a.runs, a.messages, a.size, counter)
    finally:
        if daemon is not None:
            daemon.stop()
        target.stop()
        source.stop()
        if a.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nopen-folder latency: SELECT of a not-yet-copied folder through the front door "
          f"({a.messages} messages of ~{a.size} B; large: {a.large}; sync.watch {a.watch})\n")
    print("| arm | runs | time to tagged OK, median (s) | max (s) | complete | ALERT |")
    print("|---|---:|---:|---:|---:|---:|")
    for arm in ("hold", "large", "off"):
        rs = [r for r in results if r["arm"] == arm]
        if rs:
            secs = [r["seconds"] for r in rs]
            print(f"| {arm} | {len(rs)} | {statistics.median(secs):.3f} | {max(secs):.3f} | "
                  f"{sum(r['complete'] for r in rs)}/{len(rs)} | {sum(bool(r['alert']) for r in rs)}/{len(rs)} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
