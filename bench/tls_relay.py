#!/usr/bin/env python3
"""bench/tls_relay.py — a 100 MB FETCH through the front door over TLS vs a plaintext direct fetch.

One throwaway Dovecot pair (mailsyncd.testing, 127.0.0.1), the real daemon with a ``tls:``
section and an ``imaps`` listener (relay to the target in plaintext on loopback), and a raw
reader (bench/proxy.py's RawImap, here also over TLS) timing ``FETCH 1:* BODY.PEEK[]`` of a
target-only mailbox of --messages x --message-mb MB.  Arms, in alternating order, --repeats
runs each after one warm-up:

  direct      plaintext straight to the target Dovecot           (the reference)
  direct_tls  TLS straight to the target Dovecot (its own TLS)   (what TLS costs Dovecot)
  proxy_tls   TLS to the front door, relayed in plaintext        (the goal: >= 0.8 x direct)
  proxy       plaintext to the front door                        (what the relay alone costs)

Reported per arm: median MB/s (MB = 10^6 bytes), the machine's busy CPU share during the FETCH,
the reader's own CPU seconds per GB (its TLS decryption on the _tls arms, and the cipher it was
given), and for the proxy arms the daemon's CPU seconds per GB relayed.  Used by bench/run.py
(--scenario tls_relay); runnable alone:

  .venv/bin/python bench/tls_relay.py [--json out.json] [--profile /tmp/tls.svg | /tmp/tls.perf.data]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import ssl
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import proxy as P  # noqa: E402  (Daemon, RawImap, seed_target, machine_busy, ...)
import yaml  # noqa: E402

from mailsyncd.testing import Dovecot, free_port, make_test_cert  # noqa: E402

TARGET_RATIO = 0.8   # proxy_tls MB/s >= 0.8 x direct plaintext MB/s (issue 16)


class TlsImap(P.RawImap):
    """RawImap over implicit TLS (verifies the bench's self-signed certificate)."""

    def __init__(self, port: int, cafile: str, timeout: float = 120):
        ctx = ssl.create_default_context(cafile=cafile)
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.buf = bytearray(self.BUFSIZE)
        self.view = memoryview(self.buf)
        self.have = self.start = self.n = 0
        greeting = self._line()
        if not greeting.startswith(b"* OK"):
            raise P.ImapError(f"greeting: {greeting[:200]!r}")


def tls_daemon(workdir: str, source: Dovecot, target: Dovecot, cert: tuple[str, str]) -> P.Daemon:
    d = P.Daemon(workdir, source, target)
    with open(d.config_path) as f:
        doc = yaml.safe_load(f)
    d.imaps_port = free_port()
    doc["listen"]["imaps"] = f"127.0.0.1:{d.imaps_port}"
    doc["tls"] = {"cert": cert[0], "key": cert[1]}
    with open(d.config_path, "w") as f:
        yaml.safe_dump(doc, f)
    return d


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user+system) of pid's threads, to the nanosecond (schedstat): /proc/PID/stat
    counts 10 ms ticks, 0.1 s/GB on a 100 MB FETCH, the size of the differences measured here."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):   # a thread that ended meanwhile
            pass
    return total / 1e9


def fetch(arm: tuple, cpu_pid: int | None = None) -> dict:
    port, user, pw, cafile = arm
    c = TlsImap(port, cafile) if cafile else P.RawImap(port)
    try:
        c.login(user, pw)
        c.ok(f"EXAMINE {P.BENCH_BOX}")
        c0 = proc_cpu_s(cpu_pid) if cpu_pid else 0.0
        b0 = P.machine_busy()
        r0 = time.process_time()
        t0 = time.perf_counter()
        line, nbytes = c.command("FETCH 1:* BODY.PEEK[]")
        dt = time.perf_counter() - t0
        r1 = time.process_time()
        b1 = P.machine_busy()
        c1 = proc_cpu_s(cpu_pid) if cpu_pid else 0.0
        if line.split(b" ", 2)[1:2] != [b"OK"]:
            raise P.ImapError(f"FETCH: {line[:300]!r}")
        cipher = c.sock.cipher()[0] if cafile else None     # what the reader decrypts: the arms differ here
    finally:
        c.close()
    busy = (b1[0] - b0[0]) / (b1[1] - b0[1]) * (os.cpu_count() or 1) if b1[1] > b0[1] else None
    rec = {"bytes": nbytes, "seconds": round(dt, 4), "mb_s": round(nbytes / dt / 1e6, 1),
           "machine_busy": round(busy, 2) if busy is not None else None,
           "reader_cpu_s_per_gb": round((r1 - r0) / (nbytes / 1e9), 3)}
    if cipher:
        rec["cipher"] = cipher
    if cpu_pid:
        rec["daemon_cpu_s_per_gb"] = round((c1 - c0) / (nbytes / 1e9), 3)
    return rec


def measure(arms: dict, repeats: int, pid: int) -> dict:
    for name, arm in arms.items():
        fetch(arm)                              # warm-up: page cache, indexes, TLS session
    runs = {name: [] for name in arms}
    order = list(arms)
    for r in range(repeats):
        for name in (order if r % 2 == 0 else order[::-1]):
            rec = fetch(arms[name], pid if name.startswith("proxy") else None)
            runs[name].append(rec)
            P.log(f"  run {r + 1}/{repeats} {name:10}: {rec['bytes'] / 1e6:.1f} MB at {rec['mb_s']:.1f} MB/s, "
                  f"machine busy {rec['machine_busy']}"
                  + (f", daemon {rec['daemon_cpu_s_per_gb']} CPU s/GB" if "daemon_cpu_s_per_gb" in rec else ""))
    out = {}
    for name, rs in runs.items():
        out[name] = {"median_mb_s": statistics.median(x["mb_s"] for x in rs),
                     "machine_busy": statistics.median(x["machine_busy"] or 0 for x in rs),
                     "reader_cpu_s_per_gb": statistics.median(x["reader_cpu_s_per_gb"] for x in rs), "runs": rs,
                     "cipher": rs[0].get("cipher")}
        if name.startswith("proxy"):
            out[name]["daemon_cpu_s_per_gb"] = statistics.median(x["daemon_cpu_s_per_gb"] for x in rs)
    base = out["direct"]["median_mb_s"]
    for name in out:
        out[name]["ratio_to_direct"] = round(out[name]["median_mb_s"] / base, 3)
    return out


def profile(path: str, pid: int, arm: tuple) -> None:
    import signal
    import subprocess
    if path.endswith(".data"):          # perf: C and kernel time (perf report -i FILE --no-children --sort dso,sym)
        if not shutil.which("perf"):
            P.log("perf not found: no profile")
            return
        cmd = ["perf", "record", "-g", "-F", "999", "-o", path, "-p", str(pid)]
    else:
        pyspy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        if not os.path.exists(pyspy):
            P.log("py-spy not found: no profile (FILE.data: perf instead)")
            return
        fmt = ["-f", "raw"] if path.endswith(".txt") else []
        cmd = [pyspy, "record", "-r", "500", "--native", *fmt, "-o", path, "--pid", str(pid)]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)
    for _ in range(3):
        fetch(arm)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    P.log(f"profile: {path} (py-spy rc {p.returncode}) {err.decode(errors='replace').strip()[-300:]}")


def run(messages: int = 5, message_mb: float = 20.0, repeats: int = 3, profile_path: str | None = None) -> dict:
    P.raise_nofile()
    size = int(message_mb * 1e6)
    workdir = tempfile.mkdtemp(prefix="msb-tls-", dir="/tmp")
    cert = make_test_cert(os.path.join(workdir, "tls"))
    source = Dovecot(workdir, "source", {P.USER: P.OLD_PW})
    target = Dovecot(workdir, "target", {P.USER: P.NEW_PW}, master=P.MASTER, ssl=cert)
    daemon = None
    try:
        source.start()
        target.start()
        P.seed_target(target, messages, size)
        daemon = tls_daemon(workdir, source, target, cert)
        daemon.start()
        c = P.RawImap(daemon.port)
        c.login(P.USER, P.OLD_PW)
        c.close()
        daemon.wait_log("event=pass_done", 120)     # the first login's background pass: nothing to copy
        arms = {"direct": (target.imap_port, P.USER, P.NEW_PW, None),
                "direct_tls": (target.imaps_port, P.USER, P.NEW_PW, cert[0]),
                "proxy_tls": (daemon.imaps_port, P.USER, P.OLD_PW, cert[0]),
                "proxy": (daemon.port, P.USER, P.OLD_PW, None)}
        load0 = os.getloadavg()
        res = {"arms": measure(arms, repeats, daemon.pid), "bytes": messages * size,
               "loadavg_before": [round(x, 2) for x in load0],
               "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
        if profile_path:
            profile(profile_path, daemon.pid, arms["proxy_tls"])
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"mailsyncd died during the run ({daemon.proc.returncode})")
        ratio = res["arms"]["proxy_tls"]["ratio_to_direct"]
        res["target_ratio"] = TARGET_RATIO
        res["met"] = ratio >= TARGET_RATIO
        return res
    finally:
        if daemon is not None:
            daemon.stop()
        for d in (target, source):
            d.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def table(res: dict) -> str:
    rows = ["| arm | MB/s (median) | ÷ direct plaintext | machine busy (1.0 = 1 CPU) | daemon CPU s/GB "
            "| reader CPU s/GB | cipher |", "|---|---:|---:|---:|---:|---:|---|"]
    for name, r in res["arms"].items():
        rows.append(f"| {name} | {r['median_mb_s']:.0f} | {r['ratio_to_direct']:.2f} | {r['machine_busy']:.2f} | "
                    f"{r.get('daemon_cpu_s_per_gb', '—')} | {r['reader_cpu_s_per_gb']} | {r['cipher'] or '—'} |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=5)
    ap.add_argument("--message-mb", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--profile", metavar="FILE", help="py-spy (--native) of the daemon during 3 proxied TLS FETCHes; "
                    "FILE.data: perf record -g instead")
    a = ap.parse_args()
    res = run(a.messages, a.message_mb, a.repeats, a.profile)
    print(table(res))
    r = res["arms"]["proxy_tls"]["ratio_to_direct"]
    print(f"{'PASS' if res['met'] else 'FAIL'}: TLS front door {r:.2f} x plaintext direct (goal >= {TARGET_RATIO}); "
          f"load average {res['loadavg_before']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
