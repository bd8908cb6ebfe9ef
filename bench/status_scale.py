"""Every status view at 50,000 accounts: milliseconds and bytes, for one checkout of mailsyncd.

    python bench/status_scale.py                       # this checkout
    python bench/status_scale.py --repo /work/main     # another one (e.g. before the change)

Fills a fresh state store with --accounts accounts by bulk INSERTs (mailsyncd/testing/bulkaccounts.py of
THIS checkout, run against the --repo checkout's Store and schema), starts that checkout's daemon on it
(loopback only, no admin password: the dashboard serves this machine), and times each view --runs times
(the median is reported, the first run included in the runs).  The store has verifiers but no stored
passwords, so the daemon runs no pass while it is measured.

Views: `mailsyncctl status` and `status --json` (whole processes: Python's start and imports included; the
`--help` line is that start alone), GET /api/status (default page, and a filtered one), the dashboard's
overview (/admin) and accounts page (/admin/accounts), and /metrics.  Prints a Markdown table: wall time,
and CPU time (of the mailsyncctl process; of the daemon's threads while it serves the request: includes
whatever else it does meanwhile, e.g. its 2 s status tick), which a busy machine distorts much less.
"""

from __future__ import annotations

import argparse
import glob
import http.client
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILL = """
import importlib.util, sys
from mailsyncd.store import Store
spec = importlib.util.spec_from_file_location("bulkaccounts", sys.argv[1])
bulk = importlib.util.module_from_spec(spec); spec.loader.exec_module(bulk)
store = Store.in_state_dir(sys.argv[2])
bulk.fill(store, int(sys.argv[3]), seed=11, sealed=False, messages=int(sys.argv[4]))
store.close()
"""


def free_ports(n: int) -> list[int]:
    import socket
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def env_for(repo: str) -> dict:
    env = dict(os.environ, PYTHONPATH=repo)
    for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "JOURNAL_STREAM"):
        env.pop(k, None)
    return env


def write_config(tmp: str, http_port: int, imap_port: int, closed_port: int) -> str:
    import yaml
    sys.path.insert(0, HERE)
    from mailsyncd.testing.bulkaccounts import DOMAINS
    end = {"host": "127.0.0.1", "port": closed_port, "security": "none"}
    doc = {"state_dir": os.path.join(tmp, "state"),
           "domains": {d: {"source": dict(end), "target": dict(end)} for d in DOMAINS},
           "listen": {"imap": f"127.0.0.1:{imap_port}", "http": f"127.0.0.1:{http_port}"},
           "frontdoor": {"allow_plaintext_login": True}}
    path = os.path.join(tmp, "mailsyncd.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(doc, f)
    return path


def get(port: int, path: str, cookie: str | None = None) -> tuple[int, bytes, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        r = conn.getresponse()
        body = r.read()
        return r.status, body, r.getheader("Set-Cookie")
    finally:
        conn.close()


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def process_cpu(pid: int) -> float:
    """Seconds of CPU the process's threads have used (schedstat: nanoseconds, every thread)."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


def timed(fn, runs: int, cpu) -> tuple[float, float, int]:
    """Median wall ms, median CPU ms (``cpu()``: a CPU-seconds counter of whoever does the work), bytes.
    The CPU time is what the view costs; the wall time also has the waits of a busy machine in it."""
    times, cpus, size = [], [], 0
    for _ in range(runs):
        c, t = cpu(), time.perf_counter()
        size = fn()
        times.append((time.perf_counter() - t) * 1000)
        cpus.append((cpu() - c) * 1000)
    return statistics.median(times), statistics.median(cpus), size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", default=HERE, help="the mailsyncd checkout to measure (default: this one)")
    ap.add_argument("--accounts", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--messages", type=int, default=4,
                    help="UID-map rows at most per synced folder (bulkaccounts.fill; default 4)")
    args = ap.parse_args()
    repo = os.path.abspath(args.repo)
    env = env_for(repo)
    with tempfile.TemporaryDirectory(prefix="status-scale-") as tmp:
        http_port, imap_port, closed = free_ports(3)
        config = write_config(tmp, http_port, imap_port, closed)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", FILL, os.path.join(HERE, "mailsyncd", "testing", "bulkaccounts.py"),
                        os.path.join(tmp, "state"), str(args.accounts), str(args.messages)], env=env, cwd=repo,
                       check=True)
        fill_s = time.perf_counter() - t
        log = open(os.path.join(tmp, "daemon.log"), "wb")
        daemon = subprocess.Popen([sys.executable, "-m", "mailsyncd.cli.daemon", "--config", config],
                                  stdout=log, stderr=subprocess.STDOUT, env=env, cwd=repo)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    status, _body, cookie = get(http_port, "/admin")
                    if status == 200:
                        break
                except OSError:
                    pass
                if daemon.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the daemon did not serve /admin; see {log.name}")
                time.sleep(0.3)
            cookie = cookie.split(";", 1)[0] if cookie else None

            def cli(*more: str):
                def run() -> int:
                    r = subprocess.run([sys.executable, "-m", "mailsyncd.cli.ctl", "--config", config, *more],
                                       capture_output=True, env=env, cwd=repo)
                    if r.returncode not in (0, 5):
                        raise SystemExit(f"mailsyncctl {' '.join(more)}: exit {r.returncode}: {r.stderr[-500:]!r}")
                    return len(r.stdout)
                return run

            def web(path: str):
                def run() -> int:
                    status, body, _ = get(http_port, path, cookie)
                    if status != 200:
                        raise SystemExit(f"GET {path}: {status} {body[:300]!r}")
                    return len(body)
                return run

            def served() -> float:
                return process_cpu(daemon.pid)

            views = [("`mailsyncctl status --help` (Python start + imports only)", cli("status", "--help"),
                      children_cpu),
                     ("`mailsyncctl status`", cli("status"), children_cpu),
                     ("`mailsyncctl status --json`", cli("status", "--json"), children_cpu),
                     ("`GET /api/status`", web("/api/status"), served),
                     ("`GET /api/status?domain=beta.example&phase=failed`",
                      web("/api/status?domain=beta.example&phase=failed"), served),
                     ("`GET /admin` (overview)", web("/admin"), served),
                     ("`GET /admin/accounts`", web("/admin/accounts"), served),
                     ("`GET /metrics`", web("/metrics"), served)]
            load = os.getloadavg()[0]
            print(f"{args.accounts:,} accounts (--messages {args.messages}), filled in {fill_s:.1f} s; {repo}; "
                  f"median of {args.runs} runs; "
                  f"load average {load:.1f} on {os.cpu_count()} CPUs\n")
            print("| view | wall ms | CPU ms | bytes |\n| --- | ---: | ---: | ---: |")
            for name, fn, cpu in views:
                ms, cpu_ms, size = timed(fn, args.runs, cpu)
                print(f"| {name} | {ms:,.0f} | {cpu_ms:,.0f} | {size:,} |", flush=True)
        finally:
            daemon.terminate()
            daemon.wait(30)
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
