#!/usr/bin/env python3
"""bench/proxy.py — the front door (IMAP login proxy) against a direct connection to the target.

In ONE run, on the same pair of throwaway Dovecot servers (source = "old", target = "new", both
on 127.0.0.1 in a temp dir) and one real ``mailsyncd`` daemon (subprocess, plaintext LOGIN on a
loopback listener), it measures:

1. throughput  FETCH 1:* BODY.PEEK[] of a target-only mailbox ("Bench", ~10 x 20 MB, seeded
               with doveadm save) by a raw-socket reader that counts bytes until the tagged OK;
               direct vs proxy, REPEATS times each in alternating order, median MB/s
               (MB = 10^6 bytes); target proxy/direct >= 0.9
2. latency     sequential NOOP round trips (authenticated state) on one session per arm, timed
               with perf_counter, direct and proxy interleaved in blocks; median and p99;
               target: added median < 0.2 ms
3. idle        N concurrent logged-in sessions through the proxy (asyncio client: LOGIN, SELECT
               INBOX, then nothing), spread over --users users (default 50) whose first login
               (source check + background pass) is done beforehand; each user's sessions log in
               one after the other (see the same-user probe); daemon VmRSS before and with all
               open; (with-before)/N in KB (1 KB = 1024 bytes); target < 50 KB per session and
               0 errors.  At the end every session sends one NOOP, to prove it is still relayed.
   probe       (diagnostic, no target) --probe simultaneous logins of ONE user with the same
               password, as a mail client opening several connections does; failures counted.

  .venv/bin/python bench/proxy.py                 # full: 200 MB, 10,000 round trips, 2000 sessions
  .venv/bin/python bench/proxy.py --quick         # smoke: 20 MB, 1000 round trips, 200 sessions
  .venv/bin/python bench/proxy.py --sessions 500 --json /tmp/proxy.json
  .venv/bin/python bench/proxy.py --profile /tmp/proxy-fetch.svg   # + py-spy of one proxied FETCH

Progress goes to stderr; the table and PASS/FAIL lines to stdout.  Self-contained: only
mailsyncd.testing (throwaway Dovecot) is imported from the project; the daemon is run from this
checkout as ``python -m mailsyncd.cli.daemon``.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import resource
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

import yaml  # noqa: E402  (a mailsyncd dependency)

from mailsyncd.testing import Dovecot, free_port  # noqa: E402

# Targets from the issue.
TARGET_RATIO = 0.9          # proxy MB/s >= 0.9 x direct MB/s
TARGET_ADDED_MS = 0.2       # added median round-trip latency
TARGET_KB_PER_SESSION = 50  # daemon RSS per idle relayed session

USER = "alice@example.com"  # throughput, latency, same-user probe
OLD_PW = "old-pw"           # on the source: what the client types at the front door (every user)
NEW_PW = "new-pw"           # on the target: what a direct client uses
MASTER = ("master", "master-pw")
BENCH_BOX = "Bench"         # target-only mailbox: the background pass never touches it

# The target must take thousands of concurrent sessions: one imap-login process in
# high-performance mode, imap processes serving many clients each, no per-user/IP cap.
TARGET_EXTRA_CONF = """\
default_client_limit = 20000
default_process_limit = 1000
service imap-login {
  service_count = 0
  client_limit = 10000
  process_min_avail = 2
  process_limit = 16
}
service imap {
  service_count = 0
  client_limit = 100
  process_limit = 1000
}
service auth {
  client_limit = 20000
}
service anvil {
  client_limit = 20000
}
protocol imap {
  mail_max_userip_connections = 100000
}
"""


def log(msg: str) -> None:
    print(f"[proxy.py {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 20 MB, 1000 round trips, 200 sessions (unless given explicitly)")
    ap.add_argument("--sessions", type=int, help="idle sessions through the proxy (default 2000; quick 200)")
    ap.add_argument("--round-trips", type=int, help="NOOP round trips per arm (default 10000; quick 1000)")
    ap.add_argument("--messages", type=int, help="messages in the FETCH mailbox (default 10; quick 1)")
    ap.add_argument("--message-mb", type=float, default=20.0, help="size of each message, MB (default 20)")
    ap.add_argument("--repeats", type=int, default=3, help="FETCH runs per arm (default 3)")
    ap.add_argument("--users", type=int, default=50,
                    help="users for the idle sessions, each logging in its share one after the other; "
                         "= idle logins in flight at once (default 50)")
    ap.add_argument("--probe", type=int, default=20,
                    help="simultaneous logins of one user in the same-user probe (default 20; 0: skip)")
    ap.add_argument("--hold", type=float, default=5.0,
                    help="seconds to hold all idle sessions open before measuring RSS (default 5)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--profile", metavar="FILE",
                    help="after the measurements, py-spy record the daemon during one extra proxied FETCH "
                         "(FILE.svg: flame graph; FILE.txt: collapsed stacks)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs) afterwards")
    a = ap.parse_args()
    a.sessions = a.sessions if a.sessions is not None else (200 if a.quick else 2000)
    a.round_trips = a.round_trips if a.round_trips is not None else (1000 if a.quick else 10000)
    a.messages = a.messages if a.messages is not None else (1 if a.quick else 10)
    return a


# ---------------------------------------------------------------- process helpers

def raise_nofile() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:
            log(f"cannot raise RLIMIT_NOFILE to {hard}: {e}")
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def proc_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def proc_cpu_s(pid: int) -> float:
    """user+system CPU seconds of pid (all threads)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat (busy = all but idle and iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)


def proc_nofile(pid: int) -> tuple[str, str]:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                parts = line.split()
                return parts[3], parts[4]
    return "?", "?"


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


class Daemon:
    """The real mailsyncd daemon in front of the pair (subprocess; SIGTERM to stop)."""

    def __init__(self, workdir: str, source: Dovecot, target: Dovecot):
        self.workdir = workdir
        self.port = free_port()
        master_file = os.path.join(workdir, "master.secret")
        with open(master_file, "w") as f:
            f.write(MASTER[1] + "\n")
        os.chmod(master_file, 0o600)
        doc = {
            "state_dir": os.path.join(workdir, "state"),
            "log_level": "info",
            "domains": {"example.com": {
                "source": {"host": "127.0.0.1", "port": source.imap_port, "security": "none",
                           "protocol": "imap"},
                "target": {"host": "127.0.0.1", "port": target.imap_port, "security": "none",
                           "auth": "master", "master_user": MASTER[0], "master_password_file": master_file},
                "folders": {"layout": "mirror"},
            }},
            "listen": {"imap": f"127.0.0.1:{self.port}"},
            "frontdoor": {
                "allow_plaintext_login": True,   # no tls: section; loopback listener only
                "ip_burst": 100000, "user_burst": 100000,
                "verifier_ttl": 86400,           # one source check for the whole run
                "failure_delay": 0.05, "failure_delay_max": 0.2,
            },
        }
        self.config_path = os.path.join(workdir, "mailsyncd.yaml")
        with open(self.config_path, "w") as f:
            yaml.safe_dump(doc, f)
        self.log_path = os.path.join(workdir, "mailsyncd.log")
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self, timeout: float = 30) -> None:
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("JOURNAL_STREAM", None)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "mailsyncd.cli.daemon", "--config", self.config_path],
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=REPO, env=env)
        self.wait_log("event=ready", timeout)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_log(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.proc.poll() is not None:
                raise RuntimeError(f"mailsyncd exited ({self.proc.returncode}):\n{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{text!r} not in the mailsyncd log after {timeout}s:\n{self.log()[-4000:]}")
            time.sleep(0.05)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                log("mailsyncd did not stop within 30 s of SIGTERM: SIGKILL")
                self.proc.kill()
                self.proc.wait()
        if self._log:
            self._log.close()
            self._log = None
        return self.proc.returncode


# ---------------------------------------------------------------- a raw IMAP client

class ImapError(RuntimeError):
    pass


class RawImap:
    """Blocking raw-socket IMAP: just enough to log in, select and count FETCH bytes.

    Responses are scanned line by line; a line ending in ``{N}`` is followed by an N-byte literal
    that is skipped by count (never copied, never searched), so the reader costs little CPU.
    """

    BUFSIZE = 1 << 20

    def __init__(self, port: int, timeout: float = 120):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray(self.BUFSIZE)
        self.view = memoryview(self.buf)
        self.have = 0      # unread bytes at the front of buf: buf[start:have]
        self.start = 0
        self.n = 0
        greeting = self._line()
        if not greeting.startswith(b"* OK"):
            raise ImapError(f"greeting: {greeting[:200]!r}")

    def _fill(self) -> int:
        if self.start == self.have:
            self.start = self.have = 0
        elif self.have == self.BUFSIZE:
            rest = self.have - self.start
            self.buf[:rest] = self.buf[self.start:self.have]
            self.start, self.have = 0, rest
        got = self.sock.recv_into(self.view[self.have:])
        if not got:
            raise ImapError("connection closed by server")
        self.have += got
        return got

    def _line(self) -> bytes:
        while True:
            i = self.buf.find(b"\n", self.start, self.have)
            if i >= 0:
                line = bytes(self.buf[self.start:i + 1])
                self.start = i + 1
                return line
            self._fill()

    def command(self, text: str) -> tuple[bytes, int]:
        """Send one command, read to its tagged answer; returns (tagged line, bytes received)."""
        self.n += 1
        tag = b"t%d" % self.n
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        return self.read_tagged(tag)

    def read_tagged(self, tag: bytes) -> tuple[bytes, int]:
        total = 0
        prefix = tag + b" "
        while True:
            line = self._line()
            total += len(line)
            if line.endswith(b"}\r\n") and b"{" in line:
                size = int(line[line.rindex(b"{") + 1:-3].rstrip(b"+"))
                total += size
                avail = self.have - self.start
                if avail >= size:
                    self.start += size
                else:
                    size -= avail
                    self.start = self.have = 0
                    while size > 0:        # skip the literal straight from the socket
                        got = self.sock.recv_into(self.view, min(size, self.BUFSIZE))
                        if not got:
                            raise ImapError("connection closed inside a literal")
                        size -= got
                continue
            if line.startswith(prefix):
                return line, total

    def ok(self, text: str) -> bytes:
        line, _ = self.command(text)
        if not line.split(b" ", 2)[1:2] == [b"OK"]:
            raise ImapError(f"{text.split(' ')[0]}: {line[:300]!r}")
        return line

    def login(self, user: str, password: str) -> None:
        self.ok(f'LOGIN "{user}" "{password}"')

    def close(self) -> None:
        try:
            self.sock.settimeout(5)
            self.command("LOGOUT")
        except (OSError, ImapError):
            pass
        self.sock.close()


# ---------------------------------------------------------------- setup

def make_message(i: int, size: int) -> str:
    """An ASCII message of about ``size`` bytes (76-character base64 lines), unique per i."""
    head = (f"From: bench@example.com\r\nTo: {USER}\r\nSubject: proxy bench {i}\r\n"
            f"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <proxy-bench-{i}@example.com>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n")
    line_raw = 57                                   # 57 bytes -> 76 base64 characters
    nlines = max(1, (size - len(head)) // 78)
    block = os.urandom(line_raw * 1024)
    b64 = base64.b64encode(block).decode()
    lines = [b64[k:k + 76] for k in range(0, len(b64), 76)]
    body = "\r\n".join(lines[(j + i) % len(lines)] for j in range(nlines))
    return head + body + "\r\n"


def seed_target(target: Dovecot, messages: int, size: int) -> None:
    target.doveadm("mailbox", "create", "-u", USER, BENCH_BOX)
    for i in range(messages):
        target.doveadm("save", "-u", USER, "-m", BENCH_BOX, input=make_message(i, size))
    # one small message in INBOX (idle sessions SELECT it)
    target.doveadm("save", "-u", USER, "-m", "INBOX", input=make_message(999, 2000))
    st = target.doveadm("mailbox", "status", "-u", USER, "messages vsize", BENCH_BOX).stdout.strip()
    log(f"target {BENCH_BOX}: {st}")


# ---------------------------------------------------------------- 1. throughput

def fetch_once(port: int, user: str, password: str, cpu_pid: int | None = None,
               busy: list | None = None) -> tuple[int, float, float]:
    """(bytes received, seconds, CPU seconds of cpu_pid) for one FETCH 1:* BODY.PEEK[];
    appends the machine's busy share (all CPUs, 1.0 = one CPU) during the FETCH to ``busy``."""
    c = RawImap(port)
    try:
        c.login(user, password)
        c.ok(f"EXAMINE {BENCH_BOX}")
        c0 = proc_cpu_s(cpu_pid) if cpu_pid else 0.0
        b0 = machine_busy()
        t0 = time.perf_counter()
        line, nbytes = c.command("FETCH 1:* BODY.PEEK[]")
        dt = time.perf_counter() - t0
        b1 = machine_busy()
        c1 = proc_cpu_s(cpu_pid) if cpu_pid else 0.0
        if busy is not None and b1[1] > b0[1]:
            busy.append((b1[0] - b0[0]) / (b1[1] - b0[1]) * (os.cpu_count() or 1))
        if line.split(b" ", 2)[1:2] != [b"OK"]:
            raise ImapError(f"FETCH: {line[:300]!r}")
        return nbytes, dt, c1 - c0
    finally:
        c.close()


def throughput(arms: dict, repeats: int, daemon: Daemon) -> dict:
    log("throughput: warm-up FETCH (page cache, indexes) on each arm")
    for name, (port, user, pw) in arms.items():
        fetch_once(port, user, pw)
    runs = {name: [] for name in arms}
    busy = {name: [] for name in arms}   # machine CPU busy during each FETCH (1.0 = one CPU)
    cpu = []   # daemon CPU seconds / wall during proxied fetches
    order = list(arms)
    for r in range(repeats):
        for name in (order if r % 2 == 0 else order[::-1]):
            port, user, pw = arms[name]
            nbytes, dt, cpu_s = fetch_once(port, user, pw, daemon.pid if name == "proxy" else None, busy[name])
            mbps = nbytes / dt / 1e6
            runs[name].append({"bytes": nbytes, "seconds": round(dt, 4), "mb_s": round(mbps, 1),
                               "machine_busy": round(busy[name][-1], 2) if busy[name] else None})
            extra = ""
            if name == "proxy":
                cpu.append(cpu_s / dt)
                extra = f", daemon CPU {cpu_s:.2f} s"
            log(f"  run {r + 1}/{repeats} {name:6}: {nbytes / 1e6:.1f} MB in {dt:.3f} s = {mbps:.1f} MB/s "
                f"(machine busy {100 * busy[name][-1]:.0f}% of {100 * (os.cpu_count() or 1)}%{extra})")
    med = {name: statistics.median(x["mb_s"] for x in runs[name]) for name in runs}
    per_gb = [r_["seconds"] * share / (r_["bytes"] / 1e9) for r_, share in zip(runs["proxy"], cpu)]
    return {"runs": runs, "median_mb_s": med, "ratio": med["proxy"] / med["direct"],
            "daemon_cpu_share": round(statistics.median(cpu), 3) if cpu else None,
            "daemon_cpu_s_per_gb": round(statistics.median(per_gb), 3) if per_gb else None,
            "machine_busy": {n: round(statistics.median(b), 2) for n, b in busy.items() if b}}


# ---------------------------------------------------------------- 2. latency

def noop_block(c: RawImap, n: int, out: list) -> None:
    sock = c.sock
    for _ in range(n):
        c.n += 1
        tag = b"t%d" % c.n
        msg = tag + b" NOOP\r\n"
        t0 = time.perf_counter()
        sock.sendall(msg)
        line, _ = c.read_tagged(tag)
        out.append(time.perf_counter() - t0)
        if line[len(tag) + 1:len(tag) + 3] != b"OK":
            raise ImapError(f"NOOP: {line[:200]!r}")


def latency(arms: dict, n: int, blocks: int = 10) -> dict:
    conns = {}
    for name, (port, user, pw) in arms.items():
        c = RawImap(port)
        c.login(user, pw)
        conns[name] = c
    try:
        for c in conns.values():      # warm-up
            noop_block(c, 200, [])
        samples = {name: [] for name in arms}
        per = max(1, n // blocks)
        order = list(arms)
        done = 0
        b = 0
        while done < n:
            k = min(per, n - done)
            for name in (order if b % 2 == 0 else order[::-1]):
                noop_block(conns[name], k, samples[name])
            done += k
            b += 1
        log(f"latency: {n} NOOP round trips per arm, in {b} interleaved blocks")
    finally:
        for c in conns.values():
            c.close()
    res = {}
    for name, xs in samples.items():
        xs.sort()
        res[name] = {"n": len(xs), "median_ms": xs[len(xs) // 2] * 1e3,
                     "p99_ms": xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1e3,
                     "mean_ms": statistics.fmean(xs) * 1e3}
    res["added_median_ms"] = res["proxy"]["median_ms"] - res["direct"]["median_ms"]
    res["added_p99_ms"] = res["proxy"]["p99_ms"] - res["direct"]["p99_ms"]
    return res


# ---------------------------------------------------------------- 3. idle sessions

async def _read_tagged(reader: asyncio.StreamReader, tag: bytes) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ImapError("connection closed")
        if line.startswith(tag + b" "):
            return line


async def _login_session(port: int, user: str, password: str, select: bool, timeout: float):
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        greeting = await asyncio.wait_for(reader.readline(), timeout)
        if not greeting.startswith(b"* OK"):
            raise ImapError(f"greeting {greeting[:100]!r}")
        writer.write(f'a LOGIN "{user}" "{password}"\r\n'.encode())
        line = await asyncio.wait_for(_read_tagged(reader, b"a"), timeout)
        if not line.startswith(b"a OK"):
            raise ImapError(f"LOGIN {line[:200]!r}")
        if select:
            writer.write(b"b SELECT INBOX\r\n")
            line = await asyncio.wait_for(_read_tagged(reader, b"b"), timeout)
            if not line.startswith(b"b OK"):
                raise ImapError(f"SELECT {line[:200]!r}")
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def _noop_all(sessions, timeout: float) -> int:
    async def one(rw):
        reader, writer = rw
        writer.write(b"c NOOP\r\n")
        line = await asyncio.wait_for(_read_tagged(reader, b"c"), timeout)
        return line.startswith(b"c OK")
    res = await asyncio.gather(*(one(s) for s in sessions), return_exceptions=True)
    return sum(1 for r in res if r is not True)


def _error_kinds(errors) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for e in errors:
        k = f"{type(e).__name__}: {str(e)[:120]}"
        kinds[k] = kinds.get(k, 0) + 1
    return kinds


async def _close_all(sessions) -> None:
    for _, w in sessions:
        w.close()
    await asyncio.gather(*(w.wait_closed() for _, w in sessions), return_exceptions=True)


async def _idle(port: int, n: int, users: list[str], hold: float, daemon: Daemon, select: bool = True) -> dict:
    """``len(users)`` workers, one per user, each opening its share of the sessions one after the
    other: logins of one user never overlap (see same_user_probe for why)."""
    def snapshot():
        return {"rss_kb": proc_rss_kb(daemon.pid), "fds": proc_fds(daemon.pid), "threads": proc_threads(daemon.pid)}

    timeout = 120.0
    before = snapshot()
    log(f"idle: daemon before: RSS {before['rss_kb']} kB, {before['fds']} fds, {before['threads']} threads; "
        f"opening {n} sessions ({len(users)} users logging in in parallel)")
    sessions, errors = [], []

    async def worker(w: int):
        for _ in range(w, n, len(users)):
            try:
                sessions.append(await _login_session(port, users[w], OLD_PW, select, timeout))
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(e)

    t0 = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(len(users))))
    open_s = time.monotonic() - t0
    kinds = _error_kinds(errors)
    log(f"idle: {len(sessions)} open, {len(errors)} errors in {open_s:.1f} s"
        + (f" -- {kinds}" if kinds else ""))
    await asyncio.sleep(hold)
    during = snapshot()
    samples = [during["rss_kb"]]
    for _ in range(4):
        await asyncio.sleep(0.5)
        samples.append(proc_rss_kb(daemon.pid))
    during["rss_kb"] = max(samples)
    log(f"idle: daemon with {len(sessions)} sessions: RSS {during['rss_kb']} kB, {during['fds']} fds, "
        f"{during['threads']} threads")
    noop_failed = await _noop_all(sessions, timeout)
    log(f"idle: NOOP on every open session: {len(sessions) - noop_failed} OK, {noop_failed} failed")
    await _close_all(sessions)
    await asyncio.sleep(2)
    after = snapshot()
    log(f"idle: daemon after closing: RSS {after['rss_kb']} kB, {after['fds']} fds")
    per = (during["rss_kb"] - before["rss_kb"]) / max(1, len(sessions))
    return {"sessions": n, "users": len(users), "opened": len(sessions), "errors": len(errors) + noop_failed,
            "login_errors": len(errors), "noop_failed": noop_failed, "error_kinds": kinds,
            "open_seconds": round(open_s, 2), "logins_per_s": round(len(sessions) / open_s, 1) if open_s else None,
            "select": select, "before": before, "during": during, "after_close": after, "kb_per_session": per}


def idle(port: int, n: int, users: list[str], hold: float, daemon: Daemon) -> dict:
    return asyncio.run(_idle(port, n, users, hold, daemon))


async def _warm_users(port: int, users: list[str]) -> list:
    res = await asyncio.gather(*(_login_session(port, u, OLD_PW, True, 120.0) for u in users),
                               return_exceptions=True)
    ok = [r for r in res if not isinstance(r, BaseException)]
    await _close_all(ok)
    return [r for r in res if isinstance(r, BaseException)]


def warm_users(port: int, users: list[str], daemon: Daemon) -> None:
    """First login of each idle-test user (source check + its background pass), then wait for
    every pass to end, so that the RSS baseline includes the per-user state."""
    errors = asyncio.run(_warm_users(port, users))
    if errors:
        raise RuntimeError(f"first logins of the idle-test users failed: {_error_kinds(errors)}")
    deadline = time.monotonic() + 300
    while daemon.log().count("event=pass_done") < len(users) + 1:
        if time.monotonic() > deadline:
            raise RuntimeError("background passes of the idle-test users did not finish in 300 s")
        time.sleep(0.2)


async def _same_user_probe(port: int, k: int) -> dict:
    res = await asyncio.gather(*(_login_session(port, USER, OLD_PW, False, 60.0) for _ in range(k)),
                               return_exceptions=True)
    ok = [r for r in res if not isinstance(r, BaseException)]
    errors = [r for r in res if isinstance(r, BaseException)]
    await _close_all(ok)
    return {"attempts": k, "failed": len(errors), "error_kinds": _error_kinds(errors)}


def same_user_probe(port: int, k: int) -> dict:
    """k logins of ONE user with the same (verified) password at the same moment -- what a mail
    client opening several connections does.  Not one of the issue's targets: a diagnostic."""
    r = asyncio.run(_same_user_probe(port, k))
    log(f"same-user probe: {k} simultaneous logins of {USER}: {r['failed']} failed"
        + (f" -- {r['error_kinds']}" if r["error_kinds"] else ""))
    return r


# ---------------------------------------------------------------- profile

def profile_fetch(svg: str, daemon: Daemon, port: int) -> str | None:
    pyspy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(pyspy):
        log("py-spy not found: no profile")
        return None
    fmt = ["-f", "raw"] if svg.endswith(".txt") else []     # .txt: collapsed stacks, else a flame graph
    p = subprocess.Popen([pyspy, "record", "--nonblocking", "-r", "200", *fmt, "-o", svg, "--pid", str(daemon.pid)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)
    nbytes, dt, _ = fetch_once(port, USER, OLD_PW)
    log(f"profile: proxied FETCH {nbytes / 1e6:.1f} MB in {dt:.3f} s under py-spy")
    p.send_signal(signal.SIGINT)
    try:
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
    log(f"profile: {svg} (py-spy rc {p.returncode}) {err.decode(errors='replace').strip()[-300:]}")
    return svg


# ---------------------------------------------------------------- report

def report(res: dict, a) -> str:
    t, lat, idl = res["throughput"], res["latency"], res["idle"]
    mb = t["runs"]["direct"][0]["bytes"] / 1e6
    lines = [
        f"## Front door (proxy) vs direct -- {res['date']} -- {res['machine']}",
        "",
        "| measure | direct | proxy | proxy vs direct | target | result |",
        "|---|---:|---:|---:|---|---|",
        f"| FETCH {mb:.0f} MB, median of {a.repeats} (MB/s) | {t['median_mb_s']['direct']:.1f} | "
        f"{t['median_mb_s']['proxy']:.1f} | ratio {t['ratio']:.2f} | ≥ {TARGET_RATIO} | "
        f"{'PASS' if t['ratio'] >= TARGET_RATIO else 'FAIL'} |",
        f"| NOOP round trip, median (ms), n={lat['direct']['n']} | {lat['direct']['median_ms']:.3f} | "
        f"{lat['proxy']['median_ms']:.3f} | +{lat['added_median_ms']:.3f} ms | < {TARGET_ADDED_MS} ms added | "
        f"{'PASS' if lat['added_median_ms'] < TARGET_ADDED_MS else 'FAIL'} |",
        f"| NOOP round trip, p99 (ms) | {lat['direct']['p99_ms']:.3f} | {lat['proxy']['p99_ms']:.3f} | "
        f"+{lat['added_p99_ms']:.3f} ms | | |",
        f"| {idl['sessions']} idle sessions: daemon RSS per session (KB) | – | {idl['kb_per_session']:.1f} | "
        f"RSS {idl['before']['rss_kb'] / 1024:.1f} → {idl['during']['rss_kb'] / 1024:.1f} MiB | "
        f"< {TARGET_KB_PER_SESSION} KB | {'PASS' if idl['kb_per_session'] < TARGET_KB_PER_SESSION else 'FAIL'} |",
        f"| {idl['sessions']} idle sessions: errors | – | {idl['errors']} | {idl['opened']} opened in "
        f"{idl['open_seconds']:.1f} s ({idl['users']} users) | 0 | {'PASS' if idl['errors'] == 0 else 'FAIL'} |",
        "",
        "FETCH runs (MB/s): " + "; ".join(f"{n} " + ", ".join(f"{x['mb_s']:.1f}" for x in t["runs"][n])
                                          for n in t["runs"]),
    ]
    if t.get("daemon_cpu_share") is not None:
        lines.append(f"daemon CPU during proxied FETCH: {100 * t['daemon_cpu_share']:.0f}% of one core, "
                     f"{t['daemon_cpu_s_per_gb']:.2f} CPU s per GB relayed (medians)")
    if t.get("machine_busy"):
        mbz = t["machine_busy"]
        lines.append(f"machine CPU busy during FETCH (median, all processes, 100% = one CPU of {os.cpu_count()}): "
                     + ", ".join(f"{n} {100 * v:.0f}%" for n, v in mbz.items()))
    w = res.get("warm_users")
    if w:
        lines.append(f"first logins of {w['users']} users ({w['users']} background passes): daemon fds "
                     f"{w['before']['fds']} → {w['after']['fds']}, RSS {w['before']['rss_kb'] / 1024:.1f} → "
                     f"{w['after']['rss_kb'] / 1024:.1f} MiB")
    lines.append(f"idle: daemon fds {idl['before']['fds']} → {idl['during']['fds']}, threads "
                 f"{idl['before']['threads']} → {idl['during']['threads']}; RSS after closing all "
                 f"{idl['after_close']['rss_kb'] / 1024:.1f} MiB")
    pr = res.get("same_user_probe")
    if pr:
        lines.append(f"same-user probe (diagnostic, not a target): {pr['attempts']} simultaneous logins of one "
                     f"user with its verified password: {pr['failed']} failed"
                     + (f" -- {'; '.join(f'{v} x {k}' for k, v in pr['error_kinds'].items())}"
                        if pr["error_kinds"] else ""))
    lines.append("")
    for name, ok in (("throughput", t["ratio"] >= TARGET_RATIO),
                     ("latency", lat["added_median_ms"] < TARGET_ADDED_MS),
                     ("idle RSS", idl["kb_per_session"] < TARGET_KB_PER_SESSION),
                     ("idle errors", idl["errors"] == 0)):
        lines.append(f"{'PASS' if ok else 'FAIL'}  {name}")
    return "\n".join(lines)


def machine_note() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        model = "?"
    return f"{os.cpu_count()} CPUs ({model}), load {os.getloadavg()[0]:.2f}, Linux {platform.release()}"


# ---------------------------------------------------------------- main

def main() -> int:
    a = parse_args()
    soft, hard = raise_nofile()
    need = a.sessions + 200
    log(f"RLIMIT_NOFILE {soft}/{hard} (bench needs ~{need}; the daemon ~{2 * a.sessions + 100})")
    if soft < need:
        log(f"WARNING: RLIMIT_NOFILE {soft} is too low for {a.sessions} sessions")
    size = int(a.message_mb * 1e6)
    workdir = tempfile.mkdtemp(prefix="msb-proxy-", dir="/tmp")
    log(f"workdir {workdir}")
    idle_users = [f"idle{k:03d}@example.com" for k in range(max(1, a.users))]
    everyone = [USER, *idle_users]
    source = Dovecot(workdir, "source", dict.fromkeys(everyone, OLD_PW))
    target = Dovecot(workdir, "target", dict.fromkeys(everyone, NEW_PW), master=MASTER,
                     extra_conf=TARGET_EXTRA_CONF)
    daemon = None
    res = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine_note(),
           "command": " ".join([os.path.relpath(sys.executable, REPO) if sys.executable.startswith(REPO)
                                else sys.executable, "bench/proxy.py", *sys.argv[1:]]),
           "params": {"messages": a.messages, "message_bytes": size, "repeats": a.repeats,
                      "round_trips": a.round_trips, "sessions": a.sessions, "users": a.users}}
    try:
        source.start()
        target.start()
        log(f"source imap {source.imap_port}, target imap {target.imap_port}")
        t0 = time.monotonic()
        seed_target(target, a.messages, size)
        log(f"seeded {a.messages} x {size / 1e6:.0f} MB in {time.monotonic() - t0:.1f} s")

        daemon = Daemon(workdir, source, target)
        daemon.start()
        s, h = proc_nofile(daemon.pid)
        log(f"mailsyncd pid {daemon.pid} on 127.0.0.1:{daemon.port}; its RLIMIT_NOFILE {s}/{h}")
        res["daemon_nofile"] = [s, h]
        if s.isdigit() and int(s) < 2 * a.sessions + 100:
            log(f"WARNING: the daemon's soft RLIMIT_NOFILE {s} < {2 * a.sessions + 100}: idle sessions will fail")

        # First login through the front door: source check + background pass (source INBOX is
        # empty, the Bench mailbox exists only on the target).  Wait for it, so that nothing
        # runs in the background while we measure.
        c = RawImap(daemon.port)
        c.login(USER, OLD_PW)
        c.close()
        daemon.wait_log("event=pass_done", 120)
        log("first proxied login done, background pass finished")

        arms = {"direct": (target.imap_port, USER, NEW_PW), "proxy": (daemon.port, USER, OLD_PW)}
        res["throughput"] = throughput(arms, a.repeats, daemon)
        res["latency"] = latency(arms, a.round_trips)
        lat = res["latency"]
        log(f"latency median direct {lat['direct']['median_ms']:.3f} ms proxy {lat['proxy']['median_ms']:.3f} ms")
        log(f"idle: first login of {len(idle_users)} users (source check + background pass each)")
        w0 = {"rss_kb": proc_rss_kb(daemon.pid), "fds": proc_fds(daemon.pid)}
        warm_users(daemon.port, idle_users, daemon)
        time.sleep(1)
        res["warm_users"] = {"users": len(idle_users), "before": w0,
                             "after": {"rss_kb": proc_rss_kb(daemon.pid), "fds": proc_fds(daemon.pid)}}
        log(f"idle: after the first logins: daemon fds {w0['fds']} → {res['warm_users']['after']['fds']}, "
            f"RSS {w0['rss_kb']} → {res['warm_users']['after']['rss_kb']} kB")
        res["idle"] = idle(daemon.port, a.sessions, idle_users, a.hold, daemon)
        if a.probe:
            res["same_user_probe"] = same_user_probe(daemon.port, a.probe)
        if a.profile:
            res["profile"] = profile_fetch(a.profile, daemon, daemon.port)
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"mailsyncd died during the run ({daemon.proc.returncode})")
        errs = [ln for ln in daemon.log().splitlines() if " ERROR " in ln or "Traceback" in ln]
        res["daemon_log_errors"] = len(errs)
        if errs:
            log(f"daemon log has {len(errs)} ERROR lines, e.g. {errs[0][:300]}")
    finally:
        if daemon is not None:
            rc = daemon.stop()
            log(f"mailsyncd stopped (rc {rc})")
        for d in (target, source):
            try:
                with open(d.log_path, errors="replace") as f:
                    bad = [ln for ln in f if "Error" in ln or "Fatal" in ln or "Warning" in ln]
                if bad:
                    log(f"{d.name} dovecot.log: {len(bad)} warning/error lines, e.g. {bad[0].strip()[:300]}")
            except OSError:
                pass
            d.stop()
        if a.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    text = report(res, a)
    print(text, flush=True)
    print(f"\ncommand: {res['command']}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2, default=str)
        log(f"results written to {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
