#!/usr/bin/env python3
"""bench/haproxy_login.py — the extra latency of a login through HAProxy + PROXY protocol v2.

One throwaway Dovecot pair (127.0.0.1, temp dir) and two identical mailsyncd daemons in front of it
(separate state dirs, plaintext LOGIN on loopback): "direct" is reached directly; "haproxy" has
``listen.proxy_protocol: true`` and is reached through a throwaway HAProxy (TCP mode,
``send-proxy-v2``, mailsyncd/testing/haproxy.py).  A login = connect -> greeting -> LOGIN -> tagged
OK (the daemon checks the verifier, logs in to the target and starts the relay), timed with
perf_counter; then LOGOUT.  One warm-up login per arm (the source check), then N logins per arm,
interleaved (direct, haproxy, haproxy, direct, ...), median and p90.

  .venv/bin/python bench/haproxy_login.py            # N = 50
  .venv/bin/python bench/haproxy_login.py -n 200 --json /tmp/haproxy-login.json
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

import yaml  # noqa: E402

from mailsyncd.testing import Dovecot  # noqa: E402
from mailsyncd.testing.haproxy import Frontend, HAProxy  # noqa: E402
from proxy import MASTER, NEW_PW, OLD_PW, USER, Daemon, log  # noqa: E402  (bench/proxy.py)


def proxied(d: Daemon) -> Daemon:
    with open(d.config_path) as f:
        doc = yaml.safe_load(f)
    doc["listen"]["proxy_protocol"] = True
    doc["frontdoor"]["trusted_proxies"] = ["127.0.0.1"]
    with open(d.config_path, "w") as f:
        yaml.safe_dump(doc, f)
    return d


def _line(s: socket.socket, buf: bytearray, tag: bytes | None = None) -> bytes:
    while True:
        end = buf.find(b"\r\n")
        if end >= 0:
            line = bytes(buf[:end])
            del buf[:end + 2]
            if tag is None or line.startswith(tag + b" "):
                return line
            continue
        chunk = s.recv(65536)
        if not chunk:
            raise EOFError(bytes(buf))
        buf += chunk


def login_seconds(port: int) -> tuple[float, float]:
    """(connect -> tagged OK of LOGIN, connect -> greeting) in seconds."""
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port), timeout=20, source_address=("127.0.0.2", 0))
    buf = bytearray()
    _line(s, buf)
    greeting = time.perf_counter() - t0
    s.sendall(f"a LOGIN {USER} {OLD_PW}\r\n".encode())
    ok = _line(s, buf, b"a")
    elapsed = time.perf_counter() - t0
    if not ok.startswith(b"a OK"):
        raise RuntimeError(f"login failed: {ok!r}")
    s.sendall(b"b LOGOUT\r\n")
    _line(s, buf, b"b")
    s.close()
    return elapsed, greeting


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("-n", type=int, default=50, help="logins per arm (default 50)")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="msb-haproxy-", dir="/tmp")
    log(f"workdir {workdir}")
    source = Dovecot(workdir, "source", {USER: OLD_PW})
    target = Dovecot(workdir, "target", {USER: NEW_PW}, master=MASTER)
    daemons, ha = [], None
    try:
        source.start()
        target.start()
        for name in ("direct", "haproxy"):
            os.makedirs(os.path.join(workdir, name))
            d = Daemon(os.path.join(workdir, name), source, target)
            daemons.append(proxied(d) if name == "haproxy" else d)
            d.start()
        ha = HAProxy(workdir, [Frontend("imap", [("127.0.0.1", daemons[1].port)])])
        ha.start()
        ports = {"direct": daemons[0].port, "haproxy": ha.port("imap")}
        for arm, port in ports.items():                      # the source check and first pass, once
            log(f"warm-up {arm}: {login_seconds(port)[0] * 1000:.1f} ms")
        time.sleep(2)
        times, greetings = {"direct": [], "haproxy": []}, {"direct": [], "haproxy": []}
        order = ["direct", "haproxy"]
        for i in range(a.n):
            for arm in (order if i % 2 == 0 else order[::-1]):
                t, g = login_seconds(ports[arm])
                times[arm].append(t)
                greetings[arm].append(g)
        res = {"n": a.n, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        for arm, ts in times.items():
            ms = sorted(t * 1000 for t in ts)
            res[arm] = {"median_ms": statistics.median(ms), "p90_ms": ms[int(0.9 * (len(ms) - 1))],
                        "min_ms": ms[0], "greeting_median_ms": statistics.median(greetings[arm]) * 1000}
        res["added_median_ms"] = res["haproxy"]["median_ms"] - res["direct"]["median_ms"]
        print(f"login (connect -> tagged OK of LOGIN), n={a.n} per arm, interleaved")
        print("| arm | login median (ms) | p90 (ms) | min (ms) | greeting median (ms) |")
        print("|---|---:|---:|---:|---:|")
        for arm in ("direct", "haproxy"):
            r = res[arm]
            print(f"| {arm} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | {r['min_ms']:.2f} "
                  f"| {r['greeting_median_ms']:.2f} |")
        res["added_greeting_ms"] = res["haproxy"]["greeting_median_ms"] - res["direct"]["greeting_median_ms"]
        print(f"added by HAProxy + PROXY v2 (median): login {res['added_median_ms']:+.2f} ms, "
              f"greeting {res['added_greeting_ms']:+.2f} ms")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=1)
        bad = [line for line in daemons[1].log().splitlines() if "event=proxy_header_bad" in line]
        if bad or "ip=127.0.0.2" not in daemons[1].log():
            print("FAIL: the proxied daemon did not see the client address", bad[:3])
            return 1
        return 0
    finally:
        if ha is not None:
            ha.stop()
        for d in daemons:
            d.stop()
        target.stop()
        source.stop()


if __name__ == "__main__":
    sys.exit(main())
