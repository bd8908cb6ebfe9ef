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


def _proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")


def accounts16(ctx):
    import yaml
    sys.path.insert(0, REPO)
    from mailsyncd.testing import Dovecot
    a, k, n = ctx.a, ctx.a.accounts, ctx.a.account_messages
    work = ctx.work("accounts16")
    logf = os.path.join(work, "accounts16.log")
    tmp = tempfile.mkdtemp(prefix="msb-acc-", dir="/tmp")
    users = [f"u{j:02d}@example.com" for j in range(k + 1)]       # the last one: the single-account run
    src = Dovecot(tmp, "source", dict.fromkeys(users, PASSWORD))
    dst = Dovecot(tmp, "target", dict.fromkeys(users, "new-pw"), master=("master", "masterpw"))
    daemon = None
    try:
        src.start()
        dst.start()
        t0 = time.time()
        total_bytes = 0
        for j, u in enumerate(users):
            out = ctx.B.sh([ctx.py, os.path.join(a.rig, "corpus.py"), "--user", u, "--password", PASSWORD,
                            "--port", str(src.imap_port), "--messages", str(n), "--seed", str(a.seed + j),
                            "--maildir", src.maildir(u)], capture_output=True, text=True)
            if j < k:
                total_bytes += int(re.search(r"bytes=(\d+)", out.stdout).group(1))
        log(f"accounts16: {k + 1} accounts x {n} messages written in {time.time() - t0:.0f} s")
        secret = os.path.join(tmp, "master.secret")
        with open(secret, "w") as f:
            f.write("masterpw\n")
        os.chmod(secret, 0o600)
        conns = a.connections or sync_defaults().connections
        doc = {"state_dir": os.path.join(tmp, "state"), "log_level": "info",
               "scheduler": {"max_accounts": k, "max_accounts_per_domain": k},
               # the daemon must listen somewhere; nobody logs in during the run
               "listen": {"imap": f"127.0.0.1:{free_port()}"}, "frontdoor": {"allow_plaintext_login": True},
               "domains": {"example.com": {
                   "source": {"host": "127.0.0.1", "port": src.imap_port, "security": "none", "protocol": "imap",
                              "max_connections": k * conns},
                   "target": {"host": "127.0.0.1", "port": dst.imap_port, "security": "none", "auth": "master",
                              "master_user": "master", "master_password_file": secret}}}}
        if a.connections:
            doc["sync"] = {"connections": a.connections}
        cfg = os.path.join(tmp, "mailsyncd.yaml")
        with open(cfg, "w") as f:
            yaml.safe_dump(doc, f)
        pwfile = os.path.join(tmp, "pw.secret")
        with open(pwfile, "w") as f:
            f.write(PASSWORD + "\n")
        os.chmod(pwfile, 0o600)
        ctl = [ctx.py, "-m", "mailsyncd.cli.ctl", "--config", cfg]
        # 1. one account alone, the one-shot way: the single-account rate
        single_bytes = ctx.V.snapshot("127.0.0.1", src.imap_port, users[k], PASSWORD)["bytes"]
        one = ctx.timed(ctl + ["sync", users[k], "--add", "--password-file", pwfile, "--progress", "none"],
                        os.path.join(work, "time-single.txt"), logf, cwd=REPO, env=ctx.env)
        one["mb_s"] = round(single_bytes / one["wall_s"] / 1e6, 2)
        log(f"accounts16: single account: {one}")
        # 2. the daemon with k imported accounts
        csv_path = os.path.join(tmp, "accounts.csv")
        with open(csv_path, "w") as f:
            f.write("target,source,password\n" + "".join(f"{u},{u},{PASSWORD}\n" for u in users[:k]))
        ctx.B.sh(ctl + ["import", csv_path], log=logf, cwd=REPO, env=ctx.env)
        dlog = os.path.join(work, "daemon.log")
        load = os.getloadavg()[0]
        c0 = ctx.B.cpu_busy()
        t0 = time.time()
        with open(dlog, "wb") as lf:
            daemon = subprocess.Popen([ctx.py, "-m", "mailsyncd.cli.daemon", "--config", cfg], stdout=lf,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO, env=ctx.env)
        done, rss_peak = set(), 0
        deadline = t0 + a.accounts_timeout
        while len(done) < k and time.time() < deadline and daemon.poll() is None:     # passes_done < k: not met
            time.sleep(0.2)
            rss_peak = max(rss_peak, _proc_status(daemon.pid, "VmRSS"))
            with open(dlog, errors="replace") as f:
                done = set(re.findall(r"event=pass_done account=(\S+) ok=True", f.read()))
        wall = time.time() - t0
        hwm = _proc_status(daemon.pid, "VmHWM") if daemon.poll() is None else 0
        cpu = _proc_cpu(daemon.pid) if daemon.poll() is None else None
        busy = ctx.B.cpu_busy() - c0
        cores = os.cpu_count() or 1
        rate = total_bytes / wall / 1e6
        res = {"accounts": k, "messages_each": n, "bytes": total_bytes, "connections_each": conns,
               "passes_done": len(done), "wall_s": round(wall, 2), "mb_s": round(rate, 2),
               "daemon_peak_rss_mb": round(max(hwm, rss_peak) / 1024, 1),
               "daemon_cpu_s": round(cpu, 2) if cpu is not None else None,
               "system_busy_cpu_s": round(busy, 2), "load1": round(load, 2), "cpus": cores,
               "single": one, "single_x_cpus_mb_s": round(one["mb_s"] * cores, 2),
               "ratio_to_single_x_cpus": round(rate / (one["mb_s"] * cores), 3),
               "goals": {"rss_mb": ACC_RSS_MB, "within": ACC_WITHIN}}
        res["met"] = {"rss": res["daemon_peak_rss_mb"] <= ACC_RSS_MB and len(done) == k,
                      "throughput": res["ratio_to_single_x_cpus"] >= ACC_WITHIN and len(done) == k}
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        daemon = None
        log(f"accounts16: {res}")
        return res
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        for d in (dst, src):
            d.stop()
        shutil.rmtree(tmp, ignore_errors=True)


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
        out.append(f"| accounts16 | {r['accounts']} accounts × {r['messages_each']:,} msgs ({r['bytes'] / 1e6:.0f} MB), "
                   f"passes done {r['passes_done']} | peak RSS {r['daemon_peak_rss_mb']:.0f} MB | — | — | "
                   f"≤ {ACC_RSS_MB} MB | {yes(r['met']['rss'])} |")
        out.append(f"| accounts16 | throughput (load {r['load1']}) | {r['mb_s']:.1f} MB/s in {r['wall_s']:.1f} s | one account "
                   f"{r['single']['mb_s']:.1f} MB/s × {r['cpus']} CPUs = {r['single_x_cpus_mb_s']:.1f} MB/s | "
                   f"{r['ratio_to_single_x_cpus']:.2f} | ≥ {ACC_WITHIN} | {yes(r['met']['throughput'])} |")
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
