#!/usr/bin/env python3
"""bench/memprofile.py — peak RSS and CPU of one first sync (``mailsyncctl sync``), per corpus size.

A throwaway Dovecot pair (mailsyncd.testing) on 127.0.0.1; per size one source with the shared
rig's corpus (corpus.py --maildir, seed 1, then indexed over IMAP as the rig's is, unless
--no-index), and per tool and repeat a fresh target (and state) and one first copy, wrapped in
``/usr/bin/time -v``: ``mailsyncctl sync`` of this checkout (per --connections value, and of each
--compare checkout), then --doveadm and --mbsync, the rig's commands.  Reported per run:

  wall_s      the copy's wall time; load: the 1-minute load average at its start
  rss_mb      the tool's peak RSS (time -v "Maximum resident set size")
  user_s, sys_s, cpu_s   its own CPU seconds
  src_s, tgt_s (and _user_s/_sys_s)   CPU of the source / target Dovecot during the run (each
              master's session: live processes plus the ones it reaped meanwhile)
  machine_s   cpu_s + src_s + tgt_s: what the copy cost the machine, without the neighbours
  busy_s      machine-wide busy CPU seconds (/proc/stat; includes other users of the machine)

Then one summary line per tool: the medians over --runs, and mailsyncd's machine_s over
doveadm's and mbsync's.  The first line printed holds the Dovecot settings that decide what a
copy costs the servers (doveconf), for this pair and the rig pair given by --rig-pair.

``--tracemalloc``: the pass runs with tracemalloc on (much slower: figures are not timings); a
sampler keeps the snapshot taken when traced memory was highest and the top allocation sites of
it are printed (by line, and the largest by traceback).

  python bench/memprofile.py --sizes 2000,5000,20000
  python bench/memprofile.py --sizes 5000 --tracemalloc --top 25
  python bench/memprofile.py --sizes 20000 --connections default,1 --doveadm --mbsync --runs 3 \
      --compare ../main --work /dev/shm/mp --rig-pair /tmp/msb-pair

Disk: a run holds its corpus twice (source and target), about 104 MB per 1,000 messages (10 GB
at 100,000); each target is deleted after its run, the source unless --keep.  ``--work`` on a
tmpfs (/dev/shm) keeps the filesystem's own cost out of the Dovecots' CPU (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
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


def seed(rig: str, src: Dovecot, messages: int, seed_no: int, *, index: bool) -> None:
    """The rig's corpus into the source's maildir; ``index``: then let Dovecot index every folder over
    IMAP (as the rig's pair is), so that the first tool measured does not pay for the source's indexes."""
    subprocess.run([sys.executable, os.path.join(rig, "corpus.py"), "--messages", str(messages), "--seed",
                    str(seed_no), "--maildir", src.maildir(USER),
                    *(["--port", str(src.imap_port), "--user", USER, "--password", PASSWORD] if index else
                      ["--no-imap"])], check=True, stdout=subprocess.DEVNULL)


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


def dovecot_cpu(d: Dovecot) -> tuple[float, float]:
    """(user, sys) CPU seconds of one instance so far: its session's live processes, plus what the master reaped."""
    user = system = 0
    for pid in set(session_members(d.pid)) | {d.pid}:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        user, system = user + int(fields[11]), system + int(fields[12])     # utime stime
        if pid == d.pid:    # cutime cstime: its reaped children
            user, system = user + int(fields[13]), system + int(fields[14])
    return user / TICK, system / TICK


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


def measure(cmd: list[str], env: dict, dovecots: dict[str, Dovecot], timeline: bool, cwd: str = REPO) -> dict:
    """Run ``cmd`` (``/usr/bin/time -v ...``): its wall, peak RSS and CPU, each Dovecot's CPU, the machine's.

    ``machine_s`` is the tool's CPU plus both Dovecots': the machine-wide CPU the copy cost, without the
    neighbours that ``busy_s`` (/proc/stat) also counts on a shared machine."""
    load = os.getloadavg()[0]      # the neighbours: busy_s counts them, the per-process figures do not
    d0, b0, t0 = {k: dovecot_cpu(d) for k, d in dovecots.items()}, busy(), time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    points = []
    while proc.poll() is None:      # RSS of the measured process (time's child), every 0.1 s
        points.append((round(time.monotonic() - t0, 1), _child_rss(proc.pid)))
        time.sleep(0.1)
    _, err = proc.communicate()
    wall = time.monotonic() - t0
    d1, b1 = {k: dovecot_cpu(d) for k, d in dovecots.items()}, busy()
    r = {"rc": proc.returncode, "load": round(load, 1), "wall_s": round(wall, 2), **time_v(err)}
    r["cpu_s"] = round(r.get("user_s", 0) + r.get("sys_s", 0), 2)
    for k in dovecots:
        r[f"{k}_user_s"] = round(d1[k][0] - d0[k][0], 2)
        r[f"{k}_sys_s"] = round(d1[k][1] - d0[k][1], 2)
        r[f"{k}_s"] = round(r[f"{k}_user_s"] + r[f"{k}_sys_s"], 2)
    r["dovecot_s"] = round(sum(r[f"{k}_s"] for k in dovecots), 2)
    r["machine_s"] = round(r["cpu_s"] + r["dovecot_s"], 2)
    r["busy_s"] = round(b1 - b0, 2)
    if timeline:
        r["timeline"] = [x for x in points if x[1]][::max(1, len(points) // 40)]
    r["_stderr"] = err
    return r


def settings(confs: dict[str, str]) -> dict:
    """The settings that decide what a copy costs the servers, per Dovecot config (doveconf -n)."""
    keys = ("mail_fsync", "mail_location", "mmap_disable", "mail_nfs_index", "mail_nfs_storage", "fsync_disable",
            "maildir_very_dirty_syncs", "maildir_copy_with_hardlinks", "mail_cache_fields", "mail_prefetch_count",
            "imapc_features", "mail_plugins", "mail_max_userip_connections")
    out = {}
    for name, conf in confs.items():
        if not os.path.exists(conf):
            continue
        cp = subprocess.run(["doveconf", "-c", conf, *keys], capture_output=True, text=True)
        out[name] = dict(line.split(" = ", 1) for line in cp.stdout.splitlines() if " = " in line)
    return out


def _target(work: str, name: str, fsync: str) -> Dovecot:
    t = Dovecot(work, name, {USER: "new-pw"}, master=MASTER, pop3=False, fsync=fsync)
    t.start()
    return t


def _drop_target(t: Dovecot) -> None:
    t.stop()
    shutil.rmtree(t.dir, ignore_errors=True)     # its copy of the corpus: 52 MB per 1,000 messages


def _py_env(repo: str, **extra) -> dict:
    """mailsyncctl's environment: this checkout, with its bytecode compiled beforehand (__pycache__, as
    git ignores) even where PYTHONDONTWRITEBYTECODE is set: an installed package has its .pyc files, and
    compiling the sync's modules at every start would be counted as the copy's CPU."""
    env = dict(os.environ, PYTHONPATH=repo, **extra)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(repo, "mailsyncd")], env=env,
                   check=True, stdout=subprocess.DEVNULL)
    return env


def _mailsyncd(work: str, rig: str, src: Dovecot, n: int, conns: int | None, k: int, a,
               checkout: tuple[str, str] = ("", REPO)) -> dict:
    """One first sync by ``mailsyncctl sync`` of ``checkout`` (label, directory) into a fresh target."""
    label, repo = checkout
    tgt = _target(work, f"target-{label}{conns or 'd'}-{k}", a.fsync)
    state = os.path.join(work, "state")
    shutil.rmtree(state, ignore_errors=True)
    try:
        cfg = config(work, src, tgt, conns)
        pwf = os.path.join(work, "old.pw")
        with open(pwf, "w") as f:
            f.write(PASSWORD + "\n")
        os.chmod(pwf, 0o600)
        env = _py_env(repo, MEMPROFILE_TOP=str(a.top))
        py = [sys.executable, "-c", _TRACE] if a.tracemalloc else [sys.executable, "-m", "mailsyncd.cli.ctl"]
        cmd = ["/usr/bin/time", "-v", *py, "--config", cfg, "sync", USER, "--add", "--password-file", pwf,
               "--progress", "none"]
        r = measure(cmd, env, {"src": src, "tgt": tgt}, a.timeline, cwd=repo)
        r = {"tool": "mailsyncd" + (f" ({label})" if label else ""), "messages": n, "connections": conns, "run": k, "on_target": on_target(tgt), **r}
        if a.tracemalloc:
            r["tracemalloc"] = True
            print(r["_stderr"][r["_stderr"].find("== tracemalloc"):r["_stderr"].find("\tCommand being timed")],
                  file=sys.stderr)
        err = r.pop("_stderr")
        if r["rc"]:
            r["stderr"] = err[-2000:]
        return r
    finally:
        _drop_target(tgt)


def _doveadm(work: str, src: Dovecot, n: int, k: int, a) -> dict:
    """The rig's ``doveadm backup`` command (bench.py), from the same source into a fresh target: doveadm
    writes the target's maildir itself (``-c`` its config), so the target Dovecot serves nothing."""
    tgt = _target(work, f"target-doveadm-{k}", a.fsync)
    try:
        cmd = ["/usr/bin/time", "-v", "doveadm", "-c", tgt.conf_path,
               "-o", "imapc_host=127.0.0.1", "-o", f"imapc_port={src.imap_port}",
               "-o", f"imapc_user={USER}", "-o", f"imapc_password={PASSWORD}",
               "-o", "imapc_ssl=no", "-o", "imapc_features=rfc822.size fetch-headers",
               "-o", "mail_prefetch_count=20", "backup", "-R", "-u", USER, "imapc:"]
        d = measure(cmd, dict(os.environ), {"src": src, "tgt": tgt}, False)
        err = d.pop("_stderr")
        d = {"tool": "doveadm backup", "messages": n, "run": k, "on_target": on_target(tgt), **d}
        if d["rc"]:
            d["stderr"] = err[-1000:]
        return d
    finally:
        _drop_target(tgt)


def _mbsync(work: str, src: Dovecot, n: int, k: int, a) -> dict:
    """The rig's mbsync channel (bench.py: pull new messages and flags, CopyArrivalDate yes): like
    mailsyncd it reads the source over IMAP and APPENDs to the target over IMAP."""
    tgt = _target(work, f"target-mbsync-{k}", a.fsync)
    state = os.path.join(tgt.dir, "mbsync-state")
    os.makedirs(state)
    rc = os.path.join(tgt.dir, "mbsyncrc")
    stores = "".join(f"IMAPAccount {name}\nHost 127.0.0.1\nPort {d.imap_port}\nUser {USER}\nPass {pw}\n"
                     f"SSLType None\nAuthMechs LOGIN\n\nIMAPStore {name}\nAccount {name}\n\n"
                     for name, d, pw in (("src", src, PASSWORD), ("dst", tgt, "new-pw")))
    with open(rc, "w") as f:
        f.write(stores + "Channel migrate\nFar :src:\nNear :dst:\nPatterns *\nSync Pull New Flags\nCreate Near\n"
                f"Remove None\nExpunge None\nCopyArrivalDate yes\nSyncState {state}/\n")
    try:
        d = measure(["/usr/bin/time", "-v", "mbsync", "-c", rc, "-q", "migrate"], dict(os.environ),
                    {"src": src, "tgt": tgt}, False)
        err = d.pop("_stderr")
        d = {"tool": "mbsync", "messages": n, "run": k, "on_target": on_target(tgt), **d}
        if d["rc"]:
            d["stderr"] = err[-1000:]
        return d
    finally:
        _drop_target(tgt)


def one_run(root: str, rig: str, n: int, a) -> list[dict]:
    """One source; per repeat, each mailsyncd variant and then doveadm, each into a fresh target."""
    work = tempfile.mkdtemp(prefix=f"mp-{n}-", dir=root)
    src = Dovecot(work, "source", {USER: PASSWORD}, pop3=False, fsync=a.fsync)
    src.start()
    out = []
    try:
        seed(rig, src, n, a.seed, index=not a.no_index)
        confs = {"test pair (source; the targets' differ only by the master passdb)": src.conf_path}
        if a.rig_pair:
            confs.update({f"rig pair {x}": os.path.join(a.rig_pair, x, "dovecot.conf") for x in ("src", "dst")})
        print(json.dumps({"settings": settings(confs), "index_source_first": not a.no_index}), flush=True)
        conns = [None if c in ("default", "0", "") else int(c) for c in a.connections.split(",")]
        for k in range(a.runs):
            for c in conns:
                for checkout in [("", REPO)] + [(f"{os.path.basename(d.rstrip('/'))}", d) for d in a.compare]:
                    out.append(_mailsyncd(work, rig, src, n, c, k, a, checkout))
                    print(json.dumps(out[-1]), flush=True)
            if a.doveadm:
                out.append(_doveadm(work, src, n, k, a))
                print(json.dumps(out[-1]), flush=True)
            if a.mbsync:
                out.append(_mbsync(work, src, n, k, a))
                print(json.dumps(out[-1]), flush=True)
        return out
    finally:
        src.stop()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)     # a corpus and its copy: 2 x 52 MB per 1,000 messages


def summary(rows: list[dict]) -> list[dict]:
    """Per tool and connections: the median of each CPU figure over the repeats, and the ratio of
    mailsyncd's machine-wide CPU to doveadm's (< 1: mailsyncd costs the machine less)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["messages"], r["tool"], r.get("connections")), []).append(r)
    out = []
    for (n, tool, conns), rs in groups.items():
        med = {k: round(statistics.median(r[k] for r in rs), 2)
               for k in ("wall_s", "rss_mb", "user_s", "sys_s", "cpu_s", "src_s", "tgt_s", "machine_s", "busy_s")
               if all(k in r for r in rs)}
        out.append({"summary": tool, "messages": n, "connections": conns, "runs": len(rs), **med})
    for o in out:
        peer = next((p for p in out if p["summary"] == "doveadm backup" and p["messages"] == o["messages"]), None)
        if o["summary"].startswith("mailsyncd") and peer and peer.get("machine_s"):
            o["machine_vs_doveadm"] = round(o["machine_s"] / peer["machine_s"], 2)
        mb = next((p for p in out if p["summary"] == "mbsync" and p["messages"] == o["messages"]), None)
        if o["summary"].startswith("mailsyncd") and mb and mb.get("machine_s"):
            o["machine_vs_mbsync"] = round(o["machine_s"] / mb["machine_s"], 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2000,5000,20000")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--connections", default="default",
                    help="sync.connections, a comma list: each is run in turn on the same source "
                         "('default' or 0: mailsyncd's own), e.g. default,1")
    ap.add_argument("--runs", type=int, default=1, help="repeats of each tool (median in the summary)")
    ap.add_argument("--fsync", default="never", choices=["never", "optimized", "always"],
                    help="mail_fsync of both Dovecots (the rig's pair: optimized, Dovecot's default)")
    ap.add_argument("--no-index", action="store_true",
                    help="do not index the source before the first tool (as this script did before)")
    ap.add_argument("--compare", action="append", default=[], metavar="CHECKOUT",
                    help="also run mailsyncctl of this other checkout (e.g. a worktree of main: before/after "
                         "on the same source, same repeats); may be given more than once")
    ap.add_argument("--rig-pair", default=None, help="also print this rig pair's settings (e.g. /tmp/msb-pair)")
    ap.add_argument("--tracemalloc", action="store_true", help="print the top allocation sites at peak")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--doveadm", action="store_true", help="also run doveadm backup (the rig's command) "
                    "from the same source into a second fresh target, measured the same way")
    ap.add_argument("--mbsync", action="store_true", help="also run mbsync (the rig's channel): IMAP to IMAP "
                    "like mailsyncd, into a fresh target, measured the same way")
    ap.add_argument("--timeline", action="store_true", help="also report the RSS every few tenths of a second")
    ap.add_argument("--rig", default=os.environ.get("MAILSYNCD_BENCH_RIG")
                    or os.path.normpath(os.path.join(REPO, "..", "shared", "bench")))
    ap.add_argument("--keep", action="store_true", help="keep each run's Dovecot pair and state")
    ap.add_argument("--work", default=None, help="scratch directory (default: a new one under /tmp)")
    a = ap.parse_args()
    root = a.work or tempfile.mkdtemp(prefix="memprof-")
    os.makedirs(root, exist_ok=True)
    rows = []
    for n in (int(x) for x in a.sizes.split(",")):
        rows += one_run(root, a.rig, n, a)
    for r in summary(rows):
        print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
