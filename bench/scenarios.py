"""bench/scenarios.py — the scenarios of issue 16 for bench/run.py (``--scenario NAME``).

  rtt100      2,000 messages from a source behind bench/delayrelay.py (50 ms each way = 100 ms RTT,
              --rtt-rate-mbit link): mailsyncd, mbsync and doveadm (imapc pointed at the relay), and
              each at 0 ms; round trips (turns) per connection from the relay.
  big100k     one folder (INBOX) of 100,000 small messages: first sync, no-op, +50; mailsyncd, doveadm.
  accounts16  the daemon with 16 imported accounts and scheduler.max_accounts 16: peak RSS, throughput
              vs one account's rate (mailsyncctl sync) x CPUs.  Own throwaway Dovecot pair (17 users).
  tls_relay   bench/tls_relay.py: 100 MB FETCH through the TLS front door vs plaintext direct.

The rig's pair (dovecot-pair.sh) serves rtt100 and big100k; every timed run is wrapped in
/usr/bin/time -v with /proc/stat sampled around it, and followed by verify.py (direct ports).
Each record carries the 1-minute load average at its start: the machine is shared.
"""
from __future__ import annotations

import argparse
import imaplib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
USER, PASSWORD, ADDRESS = "alice", "secret", "alice@example.com"
NAMES = ("rtt100", "big100k", "accounts16", "tls_relay")

# Goals (issue 16).
RTT_BOUND = 1.3              # wall at 100 ms RTT <= 1.3 x (wall at 0 ms + bytes / link rate)
BIG_NOOP_S, BIG_ADD_S, BIG_FULL_VS_DOVEADM = 0.5, 1.0, 0.8
ACC_RSS_MB, ACC_WITHIN = 400, 0.8
TLS_RATIO = 0.8


def log(msg):
    print(f"[scenarios {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ctx:
    """What every scenario needs: args, the rig's modules, the pair, the environment."""

    def __init__(self, a, B, V, pair_sh, src_port, dst_port, write_config):
        self.a, self.B, self.V, self.pair_sh = a, B, V, pair_sh
        self.src_port, self.dst_port = src_port, dst_port
        self.write_config = write_config          # run.py's write_mailsyncd_config(a, msd, src, dst)
        self.py = sys.executable
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = REPO + (os.pathsep + self.env["PYTHONPATH"] if self.env.get("PYTHONPATH") else "")
        self.pair_env = dict(line.split("=", 1) for line in subprocess.run(
            [pair_sh, "env", a.pair], capture_output=True, text=True, check=True).stdout.split())

    def work(self, *parts):
        p = os.path.join(self.a.work, *parts)
        os.makedirs(p, exist_ok=True)
        return p

    def timed(self, cmd, tf, logf, **kw):
        load = os.getloadavg()[0]
        c0, t0 = self.B.cpu_busy(), time.time()
        r = self.B.sh(["/usr/bin/time", "-v", "-o", tf] + cmd, log=logf, check=False, **kw)
        wall = time.time() - t0
        c1 = self.B.cpu_busy()
        tv = self.B.parse_time_v(tf)
        return {"rc": r.returncode, "wall_s": round(wall, 3), "user_s": tv.get("user_s"), "sys_s": tv.get("sys_s"),
                "maxrss_mb": round((tv.get("maxrss_kb") or 0) / 1024, 1), "system_busy_cpu_s": round(c1 - c0, 2),
                "load1": round(load, 2)}

    def verify(self, tag, logf, extra=()):
        jf = os.path.join(os.path.dirname(logf), f"verify-{tag}.json")
        cmd = [self.py, os.path.join(self.a.rig, "verify.py"), "--user", USER, "--password", PASSWORD,
               "--src-port", str(self.src_port), "--dst-port", str(self.dst_port), "--quiet", "--details", "3",
               "--json", jf, *extra]
        r = self.B.sh(cmd, log=logf, check=False)
        with open(jf) as f:
            v = json.load(f)
        log(f"verify {tag}: rc={r.returncode} {v['summary']}")
        return r.returncode == 0

    def reset(self, which):
        self.B.sh([self.pair_sh, "reset", self.a.pair, which])

    def mailsyncd_cmd(self, msd, src_port):
        shutil.rmtree(os.path.join(msd, "state"), ignore_errors=True)
        cfg, pwfile = self.write_config(self.a, msd, src_port, self.dst_port)
        return [self.py, "-m", "mailsyncd.cli.ctl", "--config", cfg, "sync", ADDRESS, "--add",
                "--password-file", pwfile, "--progress", "none"]

    def peer_cmd(self, peer, work, src_port):
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        ns = argparse.Namespace(peer=peer, user=USER, password=PASSWORD, src_port=src_port, dst_port=self.dst_port,
                                mbsync="mbsync", mbsync_arrival="yes", doveadm="doveadm", extra=[])
        return self.B.peer_command(ns, work, self.pair_env)


def sync_defaults():
    sys.path.insert(0, REPO)
    from mailsyncd.config.sync import SyncSettings
    return SyncSettings()


# ---------------------------------------------------------------- rtt100

class Relay:
    def __init__(self, ctx, stats):
        self.port, self.stats = free_port(), stats
        self.p = subprocess.Popen([ctx.py, os.path.join(HERE, "delayrelay.py"), "--listen", str(self.port),
                                   "--to", f"127.0.0.1:{ctx.src_port}", "--delay", str(ctx.a.rtt_ms / 2000),
                                   "--rate-mbit", str(ctx.a.rtt_rate_mbit), "--stats", stats],
                                  stdout=subprocess.PIPE, text=True)
        assert self.p.stdout.readline().strip() == "ready"

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        self.p.wait(30)
        with open(self.stats) as f:
            return json.load(f)


def rtt100(ctx):
    a, n = ctx.a, ctx.a.rtt_messages
    work = ctx.work("rtt100")
    logf = os.path.join(work, "rtt100.log")
    ctx.reset("all")
    ctx.B.sh([ctx.py, os.path.join(a.rig, "corpus.py"), "--user", USER, "--password", PASSWORD, "--port",
              str(ctx.src_port), "--messages", str(n), "--seed", str(a.seed),
              "--maildir", os.path.join(a.pair, "src", "home", USER, "Maildir")], log=logf)
    snap = ctx.V.snapshot("127.0.0.1", ctx.src_port, USER, PASSWORD)
    manifest = os.path.join(work, "src-before.json")
    with open(manifest, "w") as f:
        json.dump(snap, f, ensure_ascii=False)
    runs = {}
    for tool in ("mailsyncd", "mbsync", "doveadm"):
        for rtt in (0, a.rtt_ms):
            if tool != "mailsyncd" and tool not in a.peers:
                continue
            key = f"{tool}@{rtt}ms"
            ctx.reset("dst")
            relay = Relay(ctx, os.path.join(work, f"relay-{tool}.json")) if rtt else None
            port = relay.port if relay else ctx.src_port
            cmd = (ctx.mailsyncd_cmd(ctx.work("rtt100", "mailsyncd"), port) if tool == "mailsyncd"
                   else ctx.peer_cmd(tool, os.path.join(work, tool), port))
            log(f"rtt100: {key}")
            rec = ctx.timed(cmd, os.path.join(work, f"time-{tool}-{rtt}.txt"), logf, cwd=REPO, env=ctx.env)
            if relay:
                st = relay.stop()
                turns = [c["turns"] for c in st["connections"] if c["down"] > 10000]
                rec["relay"] = {"connections": len(st["connections"]), "busy_connections": len(turns),
                                "turns_max": max(turns, default=0), "turns_total": sum(turns),
                                "bytes_down": sum(c["down"] for c in st["connections"])}
            extra = ["--ignore-header", "X-TUID"] if tool == "mbsync" else []
            rec["identical"] = ctx.verify(f"rtt100-{tool}-{rtt}", logf, extra)
            if tool == "mbsync":
                rec["identical_note"] = "ignoring the X-TUID header mbsync adds"
            runs[key] = rec
            log(f"rtt100: {key}: {rec}")
    unchanged = ctx.verify("rtt100-source-unchanged", logf, ["--src-manifest", manifest,
                                                              "--dst-port", str(ctx.src_port)])
    link_s = snap["bytes"] / (a.rtt_rate_mbit * 1e6 / 8) if a.rtt_rate_mbit else 0.0
    m0, m1 = runs["mailsyncd@0ms"], runs[f"mailsyncd@{a.rtt_ms}ms"]
    bound = m0["wall_s"] + link_s
    s = sync_defaults()
    conns = a.connections or s.connections
    res = {"messages": snap["messages"], "bytes": snap["bytes"], "rtt_ms": a.rtt_ms, "rate_mbit": a.rtt_rate_mbit,
           "link_s": round(link_s, 2), "runs": runs, "source_unchanged": unchanged,
           "reference_s": round(bound, 2), "ratio_to_reference": round(m1["wall_s"] / bound, 3),
           "goal": RTT_BOUND, "met": m1["wall_s"] <= RTT_BOUND * bound and m1["identical"],
           "pipelining": {"connections": conns, "batch_messages": s.batch_messages, "batch_bytes": s.batch_bytes,
                          "round_trips_busiest_connection": m1["relay"]["turns_max"],
                          "messages_per_round_trip": round(snap["messages"] / max(1, m1["relay"]["turns_total"]), 1)}}
    for tool in ("mbsync", "doveadm"):
        r = runs.get(f"{tool}@{a.rtt_ms}ms")
        if r:
            res[f"speed_vs_{tool}"] = round(r["wall_s"] / m1["wall_s"], 2)
    return res


# ---------------------------------------------------------------- big100k

def small_message(i):
    body = (f"Message {i} of the one-folder bench.\r\n" + "Lorem ipsum dolor sit amet, consectetur.\r\n" * 12)
    raw = (f"From: sender{i % 97}@example.net\r\nTo: {ADDRESS}\r\nSubject: small message {i}\r\n"
           f"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <big100k-{i}@example.net>\r\n"
           f"Content-Type: text/plain; charset=us-ascii\r\n\r\n{body}").encode()
    return raw


def big_append(ctx, start, count):
    c = imaplib.IMAP4("127.0.0.1", ctx.src_port)
    c.login(USER, PASSWORD)
    for i in range(start, start + count):
        c.append("INBOX", r"(\Seen)", imaplib.Time2Internaldate(1704067200 + i), small_message(i))
    c.logout()


def big100k(ctx):
    a, n = ctx.a, ctx.a.big_messages
    work = ctx.work("big100k")
    logf = os.path.join(work, "big100k.log")
    ctx.reset("all")
    sys.path.insert(0, a.rig)
    import corpus as C
    t0 = time.time()
    sink = C.MaildirSink(os.path.join(a.pair, "src", "home", USER, "Maildir"))
    for i in range(n):
        sink.add({"folder": "INBOX", "flags": ["\\Seen"] if i % 3 else [], "raw": small_message(i),
                  "t": 1577836800 + i * 60, "i": i})
    sink.close()
    c = imaplib.IMAP4("127.0.0.1", ctx.src_port)      # Dovecot indexes the folder now, not in a timed run
    c.login(USER, PASSWORD)
    c.select("INBOX", readonly=True)
    c.logout()
    log(f"big100k: {n} messages written and indexed in {time.time() - t0:.0f} s")
    runs, added = {}, n
    for tool in ("mailsyncd", "doveadm"):
        if tool != "mailsyncd" and tool not in a.peers:
            continue
        ctx.reset("dst")
        cmd = (ctx.mailsyncd_cmd(ctx.work("big100k", "mailsyncd"), ctx.src_port) if tool == "mailsyncd"
               else ctx.peer_cmd(tool, os.path.join(work, tool), ctx.src_port))
        for scen in ("full", "noop", "add"):
            if scen == "add":
                big_append(ctx, added, a.add)
                added += a.add
            log(f"big100k: {tool} {scen}")
            rec = ctx.timed(cmd, os.path.join(work, f"time-{tool}-{scen}.txt"), logf, cwd=REPO, env=ctx.env)
            rec["messages_in_source"] = added
            if scen != "noop":
                rec["identical"] = ctx.verify(f"big100k-{tool}-{scen}", logf)
            runs[f"{tool} {scen}"] = rec
            log(f"big100k: {tool} {scen}: {rec}")
    m = {s: runs[f"mailsyncd {s}"] for s in ("full", "noop", "add")}
    res = {"messages": n, "runs": runs,
           "goals": {"noop_s": BIG_NOOP_S, "add_s": BIG_ADD_S, "full_vs_doveadm": BIG_FULL_VS_DOVEADM},
           "met": {"noop": m["noop"]["wall_s"] < BIG_NOOP_S, "add": m["add"]["wall_s"] < BIG_ADD_S,
                   "identical": all(r.get("identical", True) for k, r in runs.items() if k.startswith("mailsyncd"))}}
    d = runs.get("doveadm full")
    if d:
        res["full_vs_doveadm"] = round(m["full"]["wall_s"] / d["wall_s"], 3)
        res["met"]["full"] = res["full_vs_doveadm"] <= BIG_FULL_VS_DOVEADM
    return res


# ---------------------------------------------------------------- accounts16

def _proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def _proc_cpu(pid):
    v = _stat(pid)
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")


def _session_cpu(sid):
    """CPU seconds of a Dovecot instance: every process of its master's session, with the children each
    has reaped (the imap processes of closed connections)."""
    total = 0
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            v = _stat(p)
        except OSError:
            continue
        if int(v[3]) == sid:
            total += sum(int(x) for x in v[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def _median(xs):
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2 if xs else None


def _pass_seconds(logpath):
    with open(logpath, errors="replace") as f:
        found = re.findall(r"event=pass_done .*? seconds=([\d.]+)", f.read())
    return float(found[-1]) if found else None


class _AccRig:
    """The accounts16 pair and corpus, written once; each run starts from an empty target and state."""

    def __init__(self, ctx, tmp, users, conns):
        from mailsyncd.testing import Dovecot
        self.ctx, self.tmp, self.users, self.conns = ctx, tmp, users, conns
        self.src = Dovecot(tmp, "source", dict.fromkeys(users, PASSWORD))
        self.dst = Dovecot(tmp, "target", dict.fromkeys(users, "new-pw"), master=("master", "masterpw"))
        self.secret = os.path.join(tmp, "master.secret")
        self.pwfile = os.path.join(tmp, "pw.secret")
        for path, text in ((self.secret, "masterpw\n"), (self.pwfile, PASSWORD + "\n")):
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o600)

    def cpu(self):
        return {"source": _session_cpu(self.src.pid), "target": _session_cpu(self.dst.pid)}

    def fresh(self, tag):
        """An empty target and a new state dir; the config for them."""
        self.dst.stop()
        for u in self.users:
            shutil.rmtree(self.dst.maildir(u), ignore_errors=True)
        self.dst.start()
        k = len(self.users) - 1
        doc = {"state_dir": os.path.join(self.tmp, f"state-{tag}"), "log_level": "info",
               "scheduler": {"max_accounts": k, "max_accounts_per_domain": k},
               # the daemon must listen somewhere; nobody logs in during the run
               "listen": {"imap": f"127.0.0.1:{free_port()}"}, "frontdoor": {"allow_plaintext_login": True},
               "domains": {"example.com": {
                   "source": {"host": "127.0.0.1", "port": self.src.imap_port, "security": "none",
                              "protocol": "imap", "max_connections": k * self.conns},
                   "target": {"host": "127.0.0.1", "port": self.dst.imap_port, "security": "none",
                              "auth": "master", "master_user": "master", "master_password_file": self.secret}}}}
        if self.ctx.a.connections:
            doc["sync"] = {"connections": self.ctx.a.connections}
        import yaml
        cfg = os.path.join(self.tmp, f"mailsyncd-{tag}.yaml")
        with open(cfg, "w") as f:
            yaml.safe_dump(doc, f)
        return cfg


def _acc_single(rig, repo, env, cfg, work, tag, single_bytes):
    """One account alone, the one-shot way (mailsyncctl sync): the single-account rate."""
    ctx = rig.ctx
    logf = os.path.join(work, f"single-{tag}.log")
    d0 = rig.cpu()
    one = ctx.timed([ctx.py, "-m", "mailsyncd.cli.ctl", "--config", cfg, "sync", rig.users[-1], "--add",
                     "--password-file", rig.pwfile, "--progress", "none"],
                    os.path.join(work, f"time-single-{tag}.txt"), logf, cwd=repo, env=env)
    d1 = rig.cpu()
    one["mb_s"] = round(single_bytes / one["wall_s"] / 1e6, 2)
    one["pass_s"] = _pass_seconds(logf)
    one["pass_mb_s"] = round(single_bytes / one["pass_s"] / 1e6, 2) if one["pass_s"] else None
    one["cpu_s"] = {"mailsyncctl": round((one["user_s"] or 0) + (one["sys_s"] or 0), 2),
                    **{k: round(d1[k] - d0[k], 2) for k in d0}}
    one["cores_used"] = round(sum(one["cpu_s"].values()) / one["wall_s"], 2)
    return one


def _acc_daemon(rig, repo, env, cfg, work, tag, total_bytes, k):
    """The daemon with k imported accounts: wall until k pass_done, peak RSS, CPU per process."""
    ctx, a = rig.ctx, rig.ctx.a
    ctl = [ctx.py, "-m", "mailsyncd.cli.ctl", "--config", cfg]
    csv_path = os.path.join(rig.tmp, "accounts.csv")
    with open(csv_path, "w") as f:
        f.write("target,source,password\n" + "".join(f"{u},{u},{PASSWORD}\n" for u in rig.users[:k]))
    ctx.B.sh(ctl + ["import", csv_path], log=os.path.join(work, "accounts16.log"), cwd=repo, env=env)
    dlog = os.path.join(work, f"daemon-{tag}.log")
    load = os.getloadavg()[0]
    d0, c0 = rig.cpu(), ctx.B.cpu_busy()
    t0 = time.time()
    daemon = None
    try:
        with open(dlog, "wb") as lf:
            daemon = subprocess.Popen([ctx.py, "-m", "mailsyncd.cli.daemon", "--config", cfg], stdout=lf,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=repo, env=env)
        done, rss_peak, threads_peak = set(), 0, 0
        deadline = t0 + a.accounts_timeout
        while len(done) < k and time.time() < deadline and daemon.poll() is None:     # passes_done < k: not met
            time.sleep(0.2)
            rss_peak = max(rss_peak, _proc_status(daemon.pid, "VmRSS"))
            threads_peak = max(threads_peak, _proc_status(daemon.pid, "Threads"))
            with open(dlog, errors="replace") as f:
                done = set(re.findall(r"event=pass_done account=(\S+) ok=True", f.read()))
        wall = time.time() - t0
        hwm = _proc_status(daemon.pid, "VmHWM") if daemon.poll() is None else 0
        cpu = _proc_cpu(daemon.pid) if daemon.poll() is None else None
        busy = ctx.B.cpu_busy() - c0
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        daemon = None
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    time.sleep(0.5)              # the Dovecots reap their imap processes
    d1 = rig.cpu()
    with open(dlog, errors="replace") as f:
        ends = sorted(float(s) for s in re.findall(r"event=pass_done .*? seconds=([\d.]+)", f.read()))
    return {"tag": tag, "passes_done": len(done), "wall_s": round(wall, 2), "mb_s": round(total_bytes / wall / 1e6, 2),
            "daemon_peak_rss_mb": round(max(hwm, rss_peak) / 1024, 1), "daemon_threads_peak": threads_peak,
            "cpu_s": {"daemon": round(cpu, 2) if cpu is not None else None,
                      **{k_: round(d1[k_] - d0[k_], 2) for k_ in d0}},
            "system_busy_cpu_s": round(busy, 2), "load1": round(load, 2),
            "pass_seconds_min_max": [ends[0], ends[-1]] if ends else None}


def accounts16(ctx):
    """Corpus once; then ``--accounts-runs`` rounds of (one account alone, the daemon with k accounts), each from
    an empty target, for this checkout and, interleaved, for each ``--accounts-compare`` checkout."""
    sys.path.insert(0, REPO)
    a, k, n = ctx.a, ctx.a.accounts, ctx.a.account_messages
    work = ctx.work("accounts16")
    tmp = tempfile.mkdtemp(prefix="msb-acc-", dir="/tmp")
    users = [f"u{j:02d}@example.com" for j in range(k + 1)]       # the last one: the single-account run
    conns = a.connections or sync_defaults().connections
    rig = _AccRig(ctx, tmp, users, conns)
    checkouts = [("this", REPO)] + [(f"cmp{i}", os.path.abspath(p)) for i, p in enumerate(a.accounts_compare or [])]
    try:
        rig.src.start()
        rig.dst.start()
        t0 = time.time()
        total_bytes = 0
        for j, u in enumerate(users):
            out = ctx.B.sh([ctx.py, os.path.join(a.rig, "corpus.py"), "--user", u, "--password", PASSWORD,
                            "--port", str(rig.src.imap_port), "--messages", str(n), "--seed", str(a.seed + j),
                            "--maildir", rig.src.maildir(u)], capture_output=True, text=True)
            if j < k:
                total_bytes += int(re.search(r"bytes=(\d+)", out.stdout).group(1))
        log(f"accounts16: {k + 1} accounts x {n} messages written in {time.time() - t0:.0f} s")
        single_bytes = ctx.V.snapshot("127.0.0.1", rig.src.imap_port, users[k], PASSWORD)["bytes"]
        runs = {name: {"single": [], "daemon": []} for name, _ in checkouts}
        for r in range(a.accounts_runs):
            for name, repo in checkouts:
                env = dict(ctx.env, PYTHONPATH=repo)
                tag = f"{name}-{r}"
                one = _acc_single(rig, repo, env, rig.fresh(tag + "-single"), work, tag, single_bytes)
                log(f"accounts16 {tag}: single account: {one}")
                dm = _acc_daemon(rig, repo, env, rig.fresh(tag), work, tag, total_bytes, k)
                log(f"accounts16 {tag}: daemon: {dm}")
                runs[name]["single"].append(one)
                runs[name]["daemon"].append(dm)
        res = _acc_summary(runs["this"], k, n, total_bytes, conns)
        res["runs"] = runs
        res["compare"] = {name: _acc_summary(runs[name], k, n, total_bytes, conns)
                          for name, repo in checkouts[1:]}
        res["compare_checkouts"] = {name: repo for name, repo in checkouts}
        log(f"accounts16: {res}")
        return res
    finally:
        for d in (rig.dst, rig.src):
            d.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _acc_summary(runs, k, n, total_bytes, conns):
    """Medians over the runs.  The goal's reference is the single account's rate x CPUs; as one account with
    ``conns`` connections already keeps more than one core busy (daemon + both Dovecots), the CPU-fair
    reference is also given: the single account's bytes per machine CPU second x CPUs."""
    cores = os.cpu_count() or 1
    ss, ds = runs["single"], runs["daemon"]
    single_mb_s = _median([s["mb_s"] for s in ss])
    single_pass_mb_s = _median([s["pass_mb_s"] for s in ss])
    mb_s = _median([d["mb_s"] for d in ds])
    def med(rows):
        return {p: _median([r["cpu_s"][p] for r in rows]) for p in rows[0]["cpu_s"]}
    single_cpu = med(ss)
    single_mb_per_cpu_s = _median([_mb_per_cpu_s(s) for s in ss])
    res = {"accounts": k, "messages_each": n, "bytes": total_bytes, "connections_each": conns, "runs_n": len(ds),
           "passes_done": min(d["passes_done"] for d in ds), "wall_s": _median([d["wall_s"] for d in ds]),
           "mb_s": mb_s, "mb_s_all": [d["mb_s"] for d in ds],
           "daemon_peak_rss_mb": max(d["daemon_peak_rss_mb"] for d in ds),
           "daemon_cpu_s": _median([d["cpu_s"]["daemon"] for d in ds]), "cpu_s": med(ds),
           "system_busy_cpu_s": _median([d["system_busy_cpu_s"] for d in ds]),
           "load1": _median([d["load1"] for d in ds]), "load1_all": [d["load1"] for d in ds], "cpus": cores,
           "single": {"mb_s": single_mb_s, "mb_s_all": [s["mb_s"] for s in ss], "pass_mb_s": single_pass_mb_s,
                      "wall_s": _median([s["wall_s"] for s in ss]), "cpu_s": single_cpu,
                      "cores_used": _median([s["cores_used"] for s in ss]),
                      "load1_all": [s["load1"] for s in ss]},
           "single_x_cpus_mb_s": round(single_mb_s * cores, 2),
           "ratio_to_single_x_cpus": round(mb_s / (single_mb_s * cores), 3),
           "ratio_to_single_pass_x_cpus": round(mb_s / (single_pass_mb_s * cores), 3) if single_pass_mb_s else None,
           "goals": {"rss_mb": ACC_RSS_MB, "within": ACC_WITHIN}}
    # CPU-fair: bytes per CPU second of our processes (the daemon or mailsyncctl, both Dovecots), 16 accounts
    # vs one; 1.0: 16 accounts cost what one does per byte, and on CPUs left to us they reach one's rate x CPUs
    # whatever the cores one account alone keeps busy.  Less sensitive to the neighbours than the wall times.
    busy16 = sum(v for v in res["cpu_s"].values() if v)
    res["mb_per_cpu_s"] = round(total_bytes / busy16 / 1e6, 2) if busy16 else None
    res["single"]["mb_per_cpu_s"] = single_mb_per_cpu_s
    res["ratio_to_single_cpu_fair"] = (round(res["mb_per_cpu_s"] / single_mb_per_cpu_s, 3)
                                       if single_mb_per_cpu_s and res["mb_per_cpu_s"] else None)
    done = res["passes_done"] == k
    res["met"] = {"rss": res["daemon_peak_rss_mb"] <= ACC_RSS_MB and done,
                  "throughput": res["ratio_to_single_x_cpus"] >= ACC_WITHIN and done}
    return res


def _mb_per_cpu_s(single):
    busy = sum(v for v in single["cpu_s"].values() if v)
    return round(single["mb_s"] * single["wall_s"] / busy, 2) if busy else None


# ---------------------------------------------------------------- tls_relay

def tls_relay(ctx):
    out = os.path.join(ctx.work("tls_relay"), "tls_relay.json")
    ctx.B.sh([ctx.py, os.path.join(HERE, "tls_relay.py"), "--json", out], cwd=REPO, env=ctx.env)
    with open(out) as f:
        return json.load(f)


# ---------------------------------------------------------------- table

def yes(b):
    return "met" if b else "**not met**"


def render(res):
    out = ["| scenario | measure | mailsyncd | peer / reference | ratio | goal | result |", "|---|---|---|---|---|---|---|"]
    r = res.get("rtt100")
    if r:
        ms = r["runs"]
        m0, m1 = ms["mailsyncd@0ms"], ms[f"mailsyncd@{r['rtt_ms']}ms"]
        out.append(f"| rtt100 | {r['messages']:,} msgs ({r['bytes'] / 1e6:.0f} MB), {r['rtt_ms']} ms RTT, "
                   f"{r['rate_mbit']:g} Mbit/s | {m1['wall_s']:.2f} s (load {m1['load1']}) | 0 ms: {m0['wall_s']:.2f} s "
                   f"+ link {r['link_s']:.2f} s = {r['reference_s']:.2f} s | {r['ratio_to_reference']:.2f}× | "
                   f"≤ {r['goal']}× | {yes(r['met'])} |")
        for tool in ("mbsync", "doveadm"):
            p = ms.get(f"{tool}@{r['rtt_ms']}ms")
            p0 = ms.get(f"{tool}@0ms")
            if p:
                out.append(f"| rtt100 | vs {tool} at {r['rtt_ms']} ms (0 ms: {p0['wall_s']:.2f} s) | {m1['wall_s']:.2f} s | "
                           f"{p['wall_s']:.2f} s | {p['wall_s'] / m1['wall_s']:.2f}× faster | — | "
                           f"identical: {m1['identical']} / {p['identical']} |")
        pl = r["pipelining"]
        out.append(f"| rtt100 | pipelining | {pl['connections']} connections, batches ≤ {pl['batch_messages']} msgs / "
                   f"{pl['batch_bytes'] // 1024} KiB; busiest connection {pl['round_trips_busiest_connection']} round "
                   f"trips; {pl['messages_per_round_trip']} msgs per round trip | | | | |")
    r = res.get("big100k")
    if r:
        ms = r["runs"]
        for scen, goal in (("full", f"≤ {BIG_FULL_VS_DOVEADM}× doveadm"), ("noop", f"< {BIG_NOOP_S} s"),
                           ("add", f"< {BIG_ADD_S} s")):
            m, d = ms[f"mailsyncd {scen}"], ms.get(f"doveadm {scen}")
            met = r["met"].get(scen)
            out.append(f"| big100k | {scen} ({m['messages_in_source']:,} msgs) | {m['wall_s']:.2f} s, "
                       f"{m['maxrss_mb']:.0f} MB (load {m['load1']}) | "
                       f"{'doveadm %.2f s, %.0f MB' % (d['wall_s'], d['maxrss_mb']) if d else '—'} | "
                       f"{'%.2f× doveadm' % (m['wall_s'] / d['wall_s']) if d else '—'} | {goal} | "
                       f"{'—' if met is None else yes(met)} |")
    r = res.get("accounts16")
    if r:
        out += _acc_rows(r, "")
        for name, c in r.get("compare", {}).items():
            out += _acc_rows(c, f" [{name}: {r['compare_checkouts'][name]}]")
    r = res.get("tls_relay")
    if r:
        arms = r["arms"]
        t, d = arms["proxy_tls"], arms["direct"]
        out.append(f"| tls_relay | 100 MB FETCH, TLS front door (load {r['loadavg_before'][0]}) | "
                   f"{t['median_mb_s']:.0f} MB/s, daemon {t['daemon_cpu_s_per_gb']} CPU s/GB | "
                   f"plaintext direct {d['median_mb_s']:.0f} MB/s (Dovecot TLS {arms['direct_tls']['median_mb_s']:.0f}, "
                   f"plaintext front door {arms['proxy']['median_mb_s']:.0f} at {arms['proxy']['daemon_cpu_s_per_gb']} "
                   f"CPU s/GB) | {t['ratio_to_direct']:.2f} | ≥ {TLS_RATIO} | {yes(r['met'])} |")
    return "\n".join(out)


def _acc_rows(r, label):
    if "runs_n" not in r:            # a scenarios.json of one run, before the rounds (--report-only)
        return [f"| accounts16 | {r['accounts']} accounts, passes done {r['passes_done']} | peak RSS "
                f"{r['daemon_peak_rss_mb']:.0f} MB | — | — | ≤ {ACC_RSS_MB} MB | {yes(r['met']['rss'])} |",
                f"| accounts16 | throughput (load {r['load1']}) | {r['mb_s']:.1f} MB/s in {r['wall_s']:.1f} s | one "
                f"account {r['single']['mb_s']:.1f} MB/s × {r['cpus']} CPUs = {r['single_x_cpus_mb_s']:.1f} MB/s | "
                f"{r['ratio_to_single_x_cpus']:.2f} | ≥ {ACC_WITHIN} | {yes(r['met']['throughput'])} |"]
    cpu = ", ".join(f"{p} {v:.1f}" for p, v in r["cpu_s"].items() if v is not None)
    one = r["single"]
    scpu = ", ".join(f"{p} {v:.2f}" for p, v in one["cpu_s"].items() if v is not None)
    return [
        f"| accounts16{label} | {r['accounts']} accounts × {r['messages_each']:,} msgs ({r['bytes'] / 1e6:.0f} MB), "
        f"passes done {r['passes_done']}, {r['runs_n']} runs | peak RSS {r['daemon_peak_rss_mb']:.0f} MB | — | — | "
        f"≤ {ACC_RSS_MB} MB | {yes(r['met']['rss'])} |",
        f"| accounts16{label} | throughput, median (loads {r['load1_all']}) | {r['mb_s']:.1f} MB/s in {r['wall_s']:.1f} s "
        f"(runs {r['mb_s_all']}) | one account {one['mb_s']:.1f} MB/s (runs {one['mb_s_all']}) × {r['cpus']} CPUs = "
        f"{r['single_x_cpus_mb_s']:.1f} MB/s | {r['ratio_to_single_x_cpus']:.2f} | ≥ {ACC_WITHIN} | "
        f"{yes(r['met']['throughput'])} |",
        f"| accounts16{label} | the same, reference without start-up (one account's pass {one['pass_mb_s']} MB/s) | | | "
        f"{r['ratio_to_single_pass_x_cpus']} | — | — |",
        f"| accounts16{label} | CPU s, median: {cpu} ({r['mb_per_cpu_s']} MB per CPU s) | | one account: {scpu} "
        f"({one['mb_per_cpu_s']} MB per CPU s, {one['cores_used']} cores busy) | CPU-fair: "
        f"{r['ratio_to_single_cpu_fair']} | — | — |"]


def run(ctx, names, out_json):
    res = {}
    for name in names:
        log(f"===== scenario {name} =====")
        t0 = time.time()
        res[name] = globals()[name](ctx)
        res[name]["scenario_seconds"] = round(time.time() - t0, 1)
        res[name]["time"] = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(out_json, "w") as f:
            json.dump(res, f, indent=2)
    return res
