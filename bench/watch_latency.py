#!/usr/bin/env python3
"""bench/watch_latency.py — new mail in seconds (issue 14): latency and cost of watching source INBOXes.

  latency  A real Dovecot pair and the real daemon (pass_interval 3600, so only the watch can explain a
           copy).  After the first pass, N messages are APPENDed to the source INBOX at random intervals
           (uniform 0.2–4 s); a reader polls the target INBOX every 0.1 s for their Message-IDs.  Prints
           p50/p95/max seconds from the APPEND's return to the message being on the target, per mode
           (sync.watch idle, then poll with the default sync.poll_interval of 30 s).
  cost     N watches (mailsyncd.watch.conn, as the daemon runs them) held in IDLE against a fake IDLE
           server in another process; prints this process's RSS and open fds before and after, per watch.
           ``--threads`` measures the alternative: one thread per watch with imapclient's idle()/idle_check().

  python bench/watch_latency.py latency --messages 100
  python bench/watch_latency.py cost --watches 1000 [--threads]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]
A = "alice@example.com"


# -- latency ------------------------------------------------------------------------------------------

def _pctl(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def latency(mode: str, n: int, seed_: int) -> list[float]:
    from conftest import MASTER, SOURCE_USERS, TARGET_USERS, DovecotPair, UserCreds
    from proxyenv import Daemon
    from seed import Msg, connect, make_message, seed
    from mailsyncd.testing import Dovecot
    import imaplib

    rnd = random.Random(seed_)
    tmp = tempfile.mkdtemp(prefix=f"watchbench-{mode}-")
    src = Dovecot(tmp, "source", dict(SOURCE_USERS))
    tgt = Dovecot(tmp, "target", dict(TARGET_USERS), master=MASTER)
    src.start()
    tgt.start()
    try:
        pair = DovecotPair(src, tgt, {u: UserCreds(SOURCE_USERS[u], TARGET_USERS[u]) for u in SOURCE_USERS})
        seed(*pair.source_account(A), {"INBOX": [Msg(make_message(i)) for i in range(5)]})
        from pathlib import Path
        with Daemon(Path(tmp), pair, scheduler={"pass_interval": 3600}, sync={"watch": mode}) as d:
            c = imaplib.IMAP4("127.0.0.1", d.imap_port)
            c.login(A, pair.users[A].old_password)
            c.logout()
            d.wait_log("event=pass_done account=alice@example.com ok=True")
            if mode == "idle":
                d.wait_log("event=watch_idle account=alice@example.com", 30)
            else:
                time.sleep(31)          # the first poll (within one interval) is the baseline
            sent: dict[str, float] = {}
            seen: dict[str, float] = {}
            done = threading.Event()

            def reader():
                t = connect(*pair.target_account(A))
                t.select_folder("INBOX", readonly=True)
                known: set[int] = set()
                while not done.is_set() or any(m not in seen for m in list(sent)):
                    t.noop()
                    uids = [u for u in t.search("ALL") if u not in known]
                    if uids:
                        for uid, data in t.fetch(uids, [b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]).items():
                            known.add(uid)
                            m = re.search(rb"<([^>]+)>", data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"])
                            if m:
                                seen.setdefault(m.group(1).decode(), time.monotonic())
                    time.sleep(0.1)
                    if done.is_set() and time.monotonic() - done.at > 400:
                        break
                t.logout()

            th = threading.Thread(target=reader, daemon=True)
            th.start()
            s = connect(*pair.source_account(A))
            for i in range(n):
                time.sleep(rnd.uniform(0.2, 4.0))
                msgid = f"{1000 + i}.watch@bench"
                s.append("INBOX", make_message(1000 + i, msgid=f"<{msgid}>"))
                sent[msgid] = time.monotonic()
            s.logout()
            done.at = time.monotonic()
            done.set()
            th.join(420)
            log = d.log()
        lat = [seen[m] - sent[m] for m in sent if m in seen]
        missing = len(sent) - len(lat)
        passes = log.count("event=pass_start account=")
        print(f"{mode}: {len(lat)} of {n} on the target, missing {missing}; p50 {statistics.median(lat):.2f}s "
              f"p95 {_pctl(lat, 95):.2f}s max {max(lat):.2f}s; passes {passes}; "
              f"fallbacks {log.count('event=watch_fallback')}", flush=True)
        return lat
    finally:
        src.stop()
        tgt.stop()


# -- cost ---------------------------------------------------------------------------------------------

async def _fake_idle_server(port_file: str) -> None:
    """Greeting, LOGIN/CAPABILITY, EXAMINE INBOX and IDLE for anyone; then silence (and DONE -> OK)."""
    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"* OK [CAPABILITY IMAP4rev1 IDLE] fake\r\n")
        idle_tag = b"*"
        try:
            while line := await r.readline():
                tag, _, cmd = line.strip().partition(b" ")
                word = cmd.split(b" ", 1)[0].upper()
                if tag.upper() == b"DONE":
                    w.write(b"%s OK idle done\r\n" % idle_tag)
                elif word == b"CAPABILITY":
                    w.write(b"* CAPABILITY IMAP4rev1 IDLE\r\n" + tag + b" OK done\r\n")
                elif word == b"LOGIN":
                    w.write(tag + b" OK [CAPABILITY IMAP4rev1 IDLE] in\r\n")
                elif word == b"EXAMINE":
                    w.write(b"* 5 EXISTS\r\n* OK [UIDVALIDITY 1] v\r\n* OK [UIDNEXT 6] n\r\n" + tag + b" OK [READ-ONLY] x\r\n")
                elif word == b"IDLE":
                    idle_tag = tag
                    w.write(b"+ idling\r\n")
                elif word == b"LOGOUT":
                    w.write(b"* BYE\r\n" + tag + b" OK bye\r\n")
                    break
                else:
                    w.write(tag + b" OK done\r\n")
                await w.drain()
        except ConnectionError:
            pass
        w.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=4096)
    with open(port_file, "w") as f:
        f.write(str(srv.sockets[0].getsockname()[1]))
    await srv.serve_forever()


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def cost(n: int, use_threads: bool) -> None:
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * n + 256)), hard))
    port_file = tempfile.mktemp()
    server = subprocess.Popen([sys.executable, __file__, "serve", port_file])
    try:
        while not os.path.exists(port_file) or not open(port_file).read():
            time.sleep(0.05)
        port = int(open(port_file).read())
        (_threads if use_threads else _twisted)(n, port)
    finally:
        server.terminate()
        server.wait()


def _twisted(n: int, port: int) -> None:
    from twisted.internet import reactor

    from mailsyncd.watch.conn import open_inbox

    class Ep:
        host, timeout, security, send_id = "127.0.0.1", 30.0, "none", False
    Ep.port = port
    import mailsyncd.watch.manager  # noqa: F401 - what the daemon has loaded anyway
    rss0, fds0 = _rss_kib(), _fds()
    idle = []

    def started(m):
        idle.append(m)
        if len(idle) == n:
            reactor.callLater(2, report)

    def report():
        rss1, fds1 = _rss_kib(), _fds()
        cpu0 = time.process_time()

        def done():
            print(f"twisted: {n} watches in IDLE: RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB "
                  f"({(rss1 - rss0) / n:.1f} KiB per watch), fds {fds0} -> {fds1} ({(fds1 - fds0) / n:.2f} per "
                  f"watch), threads 1, CPU while idle {100 * (time.process_time() - cpu0) / 10:.1f}%", flush=True)
            reactor.stop()
        reactor.callLater(10, done)

    def open_some(i=0):
        for k in range(i, min(n, i + 100)):
            open_inbox(reactor, Ep, f"u{k}", "pw", "idle", on_mark=started, on_change=lambda m: None)
        if i + 100 < n:
            reactor.callLater(0.05, open_some, i + 100)
    reactor.callWhenRunning(open_some)
    reactor.run()


def _threads(n: int, port: int) -> None:
    from imapclient import IMAPClient
    rss0, fds0 = _rss_kib(), _fds()
    ready = threading.Semaphore(0)
    stop = threading.Event()

    def watch(k: int) -> None:
        c = IMAPClient("127.0.0.1", port, ssl=False, timeout=30)
        c.login(f"u{k}", "pw")
        c.select_folder("INBOX", readonly=True)
        c.idle()
        ready.release()
        while not stop.is_set():
            c.idle_check(timeout=30)

    for k in range(n):
        threading.Thread(target=watch, args=(k,), daemon=True).start()
    for _ in range(n):
        ready.acquire()
    time.sleep(2)
    rss1, fds1 = _rss_kib(), _fds()
    cpu0 = time.process_time()
    time.sleep(10)
    print(f"threads: {n} watches in IDLE: RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB "
          f"({(rss1 - rss0) / n:.1f} KiB per watch), fds {fds0} -> {fds1} ({(fds1 - fds0) / n:.2f} per watch), "
          f"threads {threading.active_count()}, CPU while idle {100 * (time.process_time() - cpu0) / 10:.1f}% "
          "(idle_check wakes each thread every 30 s)", flush=True)
    stop.set()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("latency")
    p.add_argument("--messages", type=int, default=100)
    p.add_argument("--modes", default="idle,poll")
    p.add_argument("--seed", type=int, default=14)
    p = sub.add_parser("cost")
    p.add_argument("--watches", type=int, default=1000)
    p.add_argument("--threads", action="store_true")
    p = sub.add_parser("serve")
    p.add_argument("port_file")
    args = ap.parse_args()
    if args.cmd == "serve":
        asyncio.run(_fake_idle_server(args.port_file))
    elif args.cmd == "cost":
        cost(args.watches, args.threads)
    else:
        for mode in args.modes.split(","):
            latency(mode, args.messages, args.seed)


if __name__ == "__main__":
    main()
