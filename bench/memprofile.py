#!/usr/bin/env python3
"""bench/memprofile.py — peak RSS and CPU of one first sync (``mailsyncctl sync``), per corpus size.

A throwaway Dovecot pair (mailsyncd.testing) on 127.0.0.1; per size a fresh source with the shared
rig's corpus (corpus.py --maildir, seed 1), a fresh target and state, and one first pass by
``mailsyncctl sync`` from this checkout, wrapped in ``/usr/bin/time -v``.  Reported per run:

  wall_s      the pass's wall time
  rss_mb      the mailsyncctl process's peak RSS (time -v "Maximum resident set size")
  cpu_s       its user+sys CPU seconds
  dovecot_s   user+sys CPU of both Dovecot instances during the run (each master's session:
              live processes plus the ones it reaped meanwhile)
  busy_s      machine-wide busy CPU seconds (/proc/stat; includes other users of the machine)

``--tracemalloc``: the pass runs with tracemalloc on (much slower: figures are not timings); a
sampler keeps the snapshot taken when traced memory was highest and the top allocation sites of
it are printed (by line, and the largest by traceback).

  python bench/memprofile.py --sizes 2000,5000,20000
  python bench/memprofile.py --sizes 5000 --tracemalloc --top 25
  python bench/memprofile.py --sizes 20000 --connections 1

Disk: a run holds its corpus twice (source and target), about 104 MB per 1,000 messages (10 GB
at 100,000), deleted after the run unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from mailsyncd.testing import Dovecot  # noqa: E402
from mailsyncd.testing._proc import session_members  # noqa: E402

USER, PASSWORD, MASTER = "alice@example.com", "secret", ("master", "masterpw")
TICK = os.sysconf("SC_CLK_TCK")

# Run inside the measured process when --tracemalloc is given: samples traced memory every
# 0.2 s and keeps the snapshot of the highest, printed at exit.
_TRACE = r"""
import atexit, os, sys, threading, tracemalloc, runpy
tracemalloc.start(int(os.environ.get("MEMPROFILE_FRAMES", "12")))
best = [0, None]
stop = threading.Event()
def sample():
    while not stop.wait(0.2):
        cur, _ = tracemalloc.get_traced_memory()
        if cur > best[0]:
            best[0], best[1] = cur, tracemalloc.take_snapshot()
def report():
    stop.set()
    snap = best[1]
    if snap is None:
        return
    snap = snap.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    top = int(os.environ.get("MEMPROFILE_TOP", "20"))
    out = sys.stderr
    print(f"== tracemalloc: peak sampled {best[0] / 2**20:.1f} MiB traced; "
          f"peak overall {tracemalloc.get_traced_memory()[1] / 2**20:.1f} MiB", file=out)
    for s in snap.statistics("lineno")[:top]:
        print(f"{s.size / 2**20:8.2f} MiB {s.count:8d} blocks  {s.traceback[0]}", file=out)
    print("== largest by traceback", file=out)
    for s in snap.statistics("traceback")[:8]:
        print(f"{s.size / 2**20:8.2f} MiB {s.count:8d} blocks", file=out)
        for line in s.traceback.format()[-16:]:
            print("    " + line, file=out)
atexit.register(report)
threading.Thread(target=sample, daemon=True).start()
sys.argv = ["mailsyncctl"] + sys.argv[1:]
runpy.run_module("mailsyncd.cli.ctl", run_name="__main__")
"""


def seed(rig: str, src: Dovecot, messages: int, seed_no: int) -> None:
    subprocess.run([sys.executable, os.path.join(rig, "corpus.py"), "--messages", str(messages), "--seed",
                    str(seed_no), "--maildir", src.maildir(USER), "--no-imap"], check=True,
                   stdout=subprocess.DEVNULL)


def config(work: str, src: Dovecot, tgt: Dovecot, connections: int | None) -> str:
    import yaml
    master = os.path.join(work, "master.secret")
    with open(master, "w") as f:
        f.write(MASTER[1] + "\n")
    os.chmod(master, 0o600)
    sync = {"recent_first": 30, **({"connections": connections} if connections else {})}
    doc = {"state_dir": os.path.join(work, "state"), "sync": sync, "domains": {"example.com": {
        "source": {"host": "127.0.0.1", "port": src.imap_port, "security": "none", "protocol": "imap"},
        "target": {"host": "127.0.0.1", "port": tgt.imap_port, "security": "none", "auth": "master",
                   "master_user": MASTER[0], "master_password_file": master},
        "folders": {"layout": "mirror"}}}}
    path = os.path.join(work, "mailsyncd.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(doc, f)
    return path


def dovecot_cpu(d: Dovecot) -> float:
    """CPU seconds of one instance so far: its session's live processes, plus what the master reaped."""
    total = 0
    for pid in set(session_members(d.pid)) | {d.pid}:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])          # utime stime
        if pid == d.pid:
            total += int(fields[13]) + int(fields[14])      # cutime cstime: its reaped children
    return total / TICK


def _child_rss(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            child = f.read().split()[0]
        with open(f"/proc/{child}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, IndexError):
        pass
    return None


def busy() -> float:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / TICK     # all but idle and iowait


def time_v(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        k, _, v = line.strip().rpartition(": ")
        if k == "Maximum resident set size (kbytes)":
            out["rss_mb"] = round(int(v) / 1024, 1)
        elif k == "User time (seconds)":
            out["user_s"] = float(v)
        elif k == "System time (seconds)":
            out["sys_s"] = float(v)
    return out


def on_target(tgt: Dovecot) -> int:
    """Messages the target holds (master login): each run is checked to have copied everything."""
    from imapclient import IMAPClient
    with IMAPClient("127.0.0.1", port=tgt.imap_port, ssl=False, timeout=60) as c:
        c.login(f"{USER}*{MASTER[0]}", MASTER[1])
        return sum(c.folder_status(n, ["MESSAGES"])[b"MESSAGES"] for fl, _, n in c.list_folders()
                   if b"\\Noselect" not in fl)


def measure(cmd: list[str], env: dict, dovecots, timeline: bool) -> dict:
    """Run ``cmd`` (``/usr/bin/time -v ...``): its wall, peak RSS and CPU, the Dovecots' CPU, the machine's."""
    d0, b0, t0 = sum(dovecot_cpu(d) for d in dovecots), busy(), time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    points = []
    while proc.poll() is None:      # RSS of the measured process (time's child), every 0.1 s
        points.append((round(time.monotonic() - t0, 1), _child_rss(proc.pid)))
        time.sleep(0.1)
    _, err = proc.communicate()
    wall = time.monotonic() - t0
    d1, b1 = sum(dovecot_cpu(d) for d in dovecots), busy()
    r = {"rc": proc.returncode, "wall_s": round(wall, 2), **time_v(err)}
    r["cpu_s"] = round(r.pop("user_s", 0) + r.pop("sys_s", 0), 2)
    r["dovecot_s"] = round(d1 - d0, 2)
    r["busy_s"] = round(b1 - b0, 2)
    if timeline:
        r["timeline"] = [x for x in points if x[1]][::max(1, len(points) // 40)]
    r["_stderr"] = err
    return r


def one_run(root: str, rig: str, n: int, a) -> list[dict]:
    work = tempfile.mkdtemp(prefix=f"mp-{n}-", dir=root)
    src = Dovecot(work, "source", {USER: PASSWORD}, pop3=False)
    tgt = Dovecot(work, "target", {USER: "new-pw"}, master=MASTER, pop3=False)
    src.start()
    tgt.start()
    try:
        seed(rig, src, n, a.seed)
        cfg = config(work, src, tgt, a.connections)
        pwf = os.path.join(work, "old.pw")
        with open(pwf, "w") as f:
            f.write(PASSWORD + "\n")
        os.chmod(pwf, 0o600)
        env = dict(os.environ, PYTHONPATH=REPO, MEMPROFILE_TOP=str(a.top))
        py = [sys.executable, "-c", _TRACE] if a.tracemalloc else [sys.executable, "-m", "mailsyncd.cli.ctl"]
        cmd = ["/usr/bin/time", "-v", *py, "--config", cfg, "sync", USER, "--add", "--password-file", pwf,
               "--progress", "none"]
        r = measure(cmd, env, (src, tgt), a.timeline)
        r = {"tool": "mailsyncd", "messages": n, "connections": a.connections, "on_target": on_target(tgt), **r}
        if a.tracemalloc:
            r["tracemalloc"] = True
            print(r["_stderr"][r["_stderr"].find("== tracemalloc"):r["_stderr"].find("\tCommand being timed")],
                  file=sys.stderr)
        cp = subprocess.CompletedProcess(cmd, r["rc"], "", r.pop("_stderr"))
        if cp.returncode:
            r["stderr"] = cp.stderr[-2000:]
        out = [r]
        if a.doveadm:   # the peer, same source, into a second fresh target
            tgt2 = Dovecot(work, "target2", {USER: "new-pw"}, master=MASTER, pop3=False)
            tgt2.start()
            try:
                cmd = ["/usr/bin/time", "-v", "doveadm", "-c", tgt2.conf_path,
                       "-o", "imapc_host=127.0.0.1", "-o", f"imapc_port={src.imap_port}",
                       "-o", f"imapc_user={USER}", "-o", f"imapc_password={PASSWORD}",
                       "-o", "imapc_ssl=no", "-o", "imapc_features=rfc822.size fetch-headers",
                       "-o", "mail_prefetch_count=20", "backup", "-R", "-u", USER, "imapc:"]
                d = measure(cmd, dict(os.environ), (src, tgt2), False)
                err = d.pop("_stderr")
                d = {"tool": "doveadm backup", "messages": n, "on_target": on_target(tgt2), **d}
                if d["rc"]:
                    d["stderr"] = err[-1000:]
                out.append(d)
            finally:
                tgt2.stop()
        return out
    finally:
        tgt.stop()
        src.stop()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)     # a corpus and its copy: 2 x 52 MB per 1,000 messages


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2000,5000,20000")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--connections", type=int, default=None, help="sync.connections (default: mailsyncd's)")
    ap.add_argument("--tracemalloc", action="store_true", help="print the top allocation sites at peak")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--doveadm", action="store_true", help="also run doveadm backup (the rig's command) "
                    "from the same source into a second fresh target, measured the same way")
    ap.add_argument("--timeline", action="store_true", help="also report the RSS every few tenths of a second")
    ap.add_argument("--rig", default=os.environ.get("MAILSYNCD_BENCH_RIG")
                    or os.path.normpath(os.path.join(REPO, "..", "shared", "bench")))
    ap.add_argument("--keep", action="store_true", help="keep each run's Dovecot pair and state")
    ap.add_argument("--work", default=None, help="scratch directory (default: a new one under /tmp)")
    a = ap.parse_args()
    root = a.work or tempfile.mkdtemp(prefix="memprof-")
    os.makedirs(root, exist_ok=True)
    for n in (int(x) for x in a.sizes.split(",")):
        for r in one_run(root, a.rig, n, a):
            print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
