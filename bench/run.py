#!/usr/bin/env python3
"""bench/run.py — measure mailsyncd against its peers, in one run, on one corpus.

For each corpus size it runs mailsyncd and every peer (doveadm, mbsync, offlineimap) through the
same three scenarios on the same freshly generated corpus, using the shared measuring rig
(dovecot-pair.sh, corpus.py, verify.py, bench.py; see its README.md):

  full  first sync (source freshly generated, target empty, mailsyncd state deleted)
  noop  immediate re-run, nothing changed
  add   re-run after --add new messages were APPENDed to the source

Peers are run by the rig's bench.py; mailsyncd is run here the same way (reset both sides,
corpus.py --maildir, /usr/bin/time -v, verify.py source vs target, source-unchanged check
against a manifest saved before the run). Every record goes to one results file (JSON lines,
bench.py's fields). At the end a Markdown table per size is printed and written to
WORK/report.md, with ratios to each peer, followed by PASS/FAIL lines for the targets.

  python bench/run.py                                        # sizes 5000,20000, all peers
  python bench/run.py --sizes 2000 --peers doveadm,mbsync    # quick
  SRC_IMAP_PORT=... or --src-port/--dst-port                 # when 10143/11143 are taken
"""
import argparse
import compileall
import json
import os
import shutil
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import scenarios as S  # noqa: E402  (rtt100, big100k, accounts16, tls_relay)
PEERS = ("doveadm", "mbsync", "offlineimap")
SCENARIOS = ("full", "noop", "add")
USER, PASSWORD, ADDRESS = "alice", "secret", "alice@example.com"

# Targets from the issue.
TARGET_FULL_VS_DOVEADM = 1.5     # mailsyncd first-sync wall <= 1.5 x doveadm's
TARGET_NOOP_S = 0.5              # no-change rerun of 20,000 messages
TARGET_RSS_MB = 150              # peak RSS at 20,000 messages
TARGET_N = 20000


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default="/tmp/msb-pair",
                    help="Dovecot pair directory for dovecot-pair.sh (short: <= 60 chars; default %(default)s)")
    ap.add_argument("--work", default=os.path.join(HERE, "out"),
                    help="scratch/output directory (default: bench/out/ in the repo)")
    ap.add_argument("--scenario", default="sizes," + ",".join(S.NAMES),
                    help="scenarios to run, comma separated: sizes (full/noop/add per --sizes, the peers through "
                         "the rig's bench.py), " + ", ".join(S.NAMES) + " (bench/scenarios.py; default: all)")
    ap.add_argument("--sizes", default="20000", help="corpus sizes, comma separated (default %(default)s)")
    ap.add_argument("--peers", default="doveadm,mbsync",
                    help="peers to run, comma separated, from %s; empty for none (default %%(default)s; "
                         "offlineimap takes ~5 min at 20,000)" % ",".join(PEERS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--add", type=int, default=50, help="messages added for the 'add' scenario")
    ap.add_argument("--rig", default=os.environ.get("MAILSYNCD_BENCH_RIG")
                    or os.path.normpath(os.path.join(REPO, "..", "shared", "bench")),
                    help="the measuring rig (default: $MAILSYNCD_BENCH_RIG, else ../shared/bench from the repo)")
    ap.add_argument("--connections", type=int, default=None,
                    help="mailsyncd sync.connections (default: mailsyncd's own default)")
    # Ports: only used when the pair's configs are first written (dovecot-pair.sh reads them then);
    # afterwards the ports are read back from the pair's dovecot.conf files.
    ap.add_argument("--src-port", type=int, default=_env_int("SRC_IMAP_PORT"),
                    help="source IMAP port for a new pair (default $SRC_IMAP_PORT or 10143)")
    ap.add_argument("--dst-port", type=int, default=_env_int("DST_IMAP_PORT"),
                    help="target IMAP port for a new pair (default $DST_IMAP_PORT or 11143)")
    ap.add_argument("--src-pop3-port", type=int, default=_env_int("SRC_POP3_PORT"),
                    help="source POP3 port for a new pair (default $SRC_POP3_PORT or 10110)")
    ap.add_argument("--dst-pop3-port", type=int, default=_env_int("DST_POP3_PORT"),
                    help="target POP3 port for a new pair (default $DST_POP3_PORT or 11110)")
    ap.add_argument("--rtt-ms", type=int, default=100, help="rtt100: round-trip time added by the relay")
    ap.add_argument("--rtt-rate-mbit", type=float, default=100.0, help="rtt100: link rate each way (0: unlimited)")
    ap.add_argument("--rtt-messages", type=int, default=2000)
    ap.add_argument("--big-messages", type=int, default=100000, help="big100k: messages in the one folder")
    ap.add_argument("--accounts", type=int, default=16, help="accounts16: accounts (and scheduler.max_accounts)")
    ap.add_argument("--account-messages", type=int, default=1000, help="accounts16: messages per account")
    ap.add_argument("--accounts-timeout", type=float, default=600)
    ap.add_argument("--accounts-runs", type=int, default=3,
                    help="accounts16: rounds of (one account alone, the daemon), medians reported (default %(default)s)")
    ap.add_argument("--accounts-compare", action="append", metavar="CHECKOUT",
                    help="accounts16: another mailsyncd checkout run in the same rounds, interleaved (before/after)")
    ap.add_argument("--report-only", metavar="RESULTS",
                    help="do not run anything: render the tables/targets from an existing results file")
    a = ap.parse_args()
    a.scenario = [x.strip() for x in a.scenario.split(",") if x.strip()]
    unknown = [x for x in a.scenario if x not in ("sizes",) + S.NAMES]
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)} (choose from sizes, {', '.join(S.NAMES)})")
    a.sizes = [int(s) for s in a.sizes.split(",") if s.strip()] if "sizes" in a.scenario else []
    a.peers = [p.strip() for p in a.peers.split(",") if p.strip()]
    bad = [p for p in a.peers if p not in PEERS]
    if bad:
        ap.error(f"unknown peer(s) {', '.join(bad)} (choose from {', '.join(PEERS)}; imapsync is not installed)")
    a.work = os.path.abspath(a.work)
    a.pair = os.path.abspath(a.pair)
    a.rig = os.path.abspath(a.rig)
    return a


def _env_int(name):
    v = os.environ.get(name)
    return int(v) if v else None


def log(msg):
    print(f"[run.py {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- the pair

def conf_ports(conf):
    """The (imap, pop3) ports written into a dovecot-pair.sh config (imap listener comes first)."""
    ports = []
    with open(conf) as f:
        for line in f:
            k, _, v = line.strip().partition(" = ")
            if k == "port" and v.isdigit() and int(v) > 0:
                ports.append(int(v))
    return ports[0], ports[1]


def listening(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def pair_running(pair, inst):
    try:
        with open(os.path.join(pair, inst, "run", "master.pid")) as f:
            os.kill(int(f.read().strip()), 0)
        return True
    except (OSError, ValueError):
        return False


def start_pair(a, pair_sh):
    env = dict(os.environ)
    for var, val in (("SRC_IMAP_PORT", a.src_port), ("DST_IMAP_PORT", a.dst_port),
                     ("SRC_POP3_PORT", a.src_pop3_port), ("DST_POP3_PORT", a.dst_pop3_port)):
        if val is not None:
            env[var] = str(val)
    # Wanted ports: for an existing pair, what its configs say; for a new one, what we pass.
    wanted = {}
    defaults = {"src": (10143, 10110), "dst": (11143, 11110)}
    for inst, (pi, pp) in (("src", ("SRC_IMAP_PORT", "SRC_POP3_PORT")), ("dst", ("DST_IMAP_PORT", "DST_POP3_PORT"))):
        conf = os.path.join(a.pair, inst, "dovecot.conf")
        if os.path.exists(conf):
            wanted[inst] = conf_ports(conf)
            asked = (env.get(pi), env.get(pp))
            if any(x is not None and int(x) != w for x, w in zip(asked, wanted[inst])):
                raise SystemExit(f"run.py: {a.pair} already has a {inst} config with ports {wanted[inst]} "
                                 f"(asked for {asked}); ports are fixed when a pair is first started: "
                                 f"use another --pair directory")
        else:
            wanted[inst] = (int(env.get(pi) or defaults[inst][0]), int(env.get(pp) or defaults[inst][1]))
        # Someone else's Dovecot on our ports would receive our corpus and our verify logins.
        if not pair_running(a.pair, inst):
            busy = [p for p in wanted[inst] if listening(p)]
            if busy:
                raise SystemExit(f"run.py: port(s) {busy} already in use by another server, and the {inst} "
                                 f"instance of {a.pair} is not running; pick free ports with "
                                 f"--src-port/--dst-port/--src-pop3-port/--dst-pop3-port and a new --pair dir")
    B.sh([pair_sh, "start", a.pair], env=env)
    src_port, _ = conf_ports(os.path.join(a.pair, "src", "dovecot.conf"))
    dst_port, _ = conf_ports(os.path.join(a.pair, "dst", "dovecot.conf"))
    return src_port, dst_port


# ---------------------------------------------------------------- mailsyncd through the rig's method

def write_mailsyncd_config(a, msd, src_port, dst_port):
    os.makedirs(msd, exist_ok=True)
    secret = os.path.join(msd, "master.secret")
    pwfile = os.path.join(msd, "password.secret")
    for path, text in ((secret, "masterpw\n"), (pwfile, PASSWORD + "\n")):
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
    cfg = os.path.join(msd, "mailsyncd.yaml")
    sync = f"sync:\n  connections: {a.connections}\n" if a.connections else ""
    with open(cfg, "w") as f:
        f.write(f"""# generated by bench/run.py
state_dir: {json.dumps(os.path.join(msd, "state"))}
{sync}domains:
  example.com:
    source: {{host: 127.0.0.1, port: {src_port}, security: none, protocol: imap, username: "{{local}}"}}
    target: {{host: 127.0.0.1, port: {dst_port}, security: none, auth: master, master_user: master, master_password_file: {json.dumps(secret)}, username: "{{local}}"}}
""")
    return cfg, pwfile


def run_mailsyncd(a, n, src_port, dst_port, results, pair_sh):
    """Mirror of bench.py's main() for peer 'mailsyncd' (same steps, same record)."""
    py = sys.executable
    work = os.path.join(a.work, f"n{n}", "mailsyncd")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    logf = os.path.join(work, "mailsyncd.log")
    msd = os.path.join(a.work, "mailsyncd")
    cfg, pwfile = write_mailsyncd_config(a, msd, src_port, dst_port)
    shutil.rmtree(os.path.join(msd, "state"), ignore_errors=True)

    B.sh([pair_sh, "reset", a.pair, "all"])
    B.sh([py, os.path.join(a.rig, "corpus.py"), "--user", USER, "--password", PASSWORD,
          "--port", str(src_port), "--messages", str(n), "--seed", str(a.seed),
          "--maildir", os.path.join(a.pair, "src", "home", USER, "Maildir")], log=logf)

    def verify(tag, extra):
        jf = os.path.join(work, f"verify-mailsyncd-{tag}.json")
        cmd = [py, os.path.join(a.rig, "verify.py"), "--user", USER, "--password", PASSWORD,
               "--src-port", str(src_port), "--dst-port", str(dst_port), "--quiet",
               "--details", "3", "--json", jf] + extra
        with open(logf, "ab") as f:
            f.write(f"\n===== verify {tag} =====\n".encode())
        r = B.sh(cmd, log=logf, check=False)
        with open(jf) as f:
            v = json.load(f)
        print(f"   verify {tag}: rc={r.returncode} {v['summary']}", flush=True)
        return r.returncode, v

    def snapshot_src(tag):
        mf = os.path.join(work, f"src-mailsyncd-{tag}.json")
        snap = V.snapshot("127.0.0.1", src_port, USER, PASSWORD)
        with open(mf, "w") as f:
            json.dump(snap, f, ensure_ascii=False)
        return mf, snap

    cmd = [py, "-m", "mailsyncd.cli.ctl", "--config", cfg, "sync", ADDRESS, "--add",
           "--password-file", pwfile, "--progress", "none"]
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for scen in SCENARIOS:
        if scen == "add":
            B.sh([py, os.path.join(a.rig, "corpus.py"), "--user", USER, "--password", PASSWORD,
                  "--port", str(src_port), "--messages", str(a.add), "--offset", str(n),
                  "--seed", str(a.seed)], log=logf)
        mf, snap = snapshot_src(scen)
        tf = os.path.join(work, f"time-mailsyncd-{scen}.txt")
        with open(logf, "ab") as f:
            f.write(f"\n===== mailsyncd {scen} =====\n".encode())
        c0 = B.cpu_busy()
        t0 = time.time()
        r = B.sh(["/usr/bin/time", "-v", "-o", tf] + cmd, log=logf, check=False, cwd=REPO, env=env)
        wall = time.time() - t0
        c1 = B.cpu_busy()
        tv = B.parse_time_v(tf)
        rc_v, v = verify(scen, [])
        rc_s, vs = verify(scen + "-source-unchanged", ["--src-manifest", mf, "--dst-port", str(src_port)])
        rec = {
            "peer": "mailsyncd", "scenario": scen, "label": f"n{n}", "messages_in_source": snap["messages"],
            "bytes_in_source": snap["bytes"], "seed": a.seed, "rc": r.returncode,
            "wall_s": round(tv.get("wall_s", wall), 2), "user_s": tv.get("user_s"), "sys_s": tv.get("sys_s"),
            "maxrss_kb": tv.get("maxrss_kb"), "cpu_pct": tv.get("cpu_pct"),
            "system_busy_cpu_s": round(c1 - c0, 2),
            "identical": rc_v == 0, "verify": v["summary"], "verify_totals": v["totals"],
            "flag_diff": v.get("flag_diff"),
            "missing_folders": v["missing_folders"], "extra_folders": v["extra_folders"],
            "extra_empty_folders": v["extra_empty_folders"], "bad_names": v["bad_names"],
            "source_unchanged": rc_s == 0, "source_check": vs["summary"], "lenient": None,
            "command": cmd, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        with open(results, "a") as f:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        print(f"== mailsyncd {scen}: rc={r.returncode} wall={rec['wall_s']}s rss={rec['maxrss_kb']}kB "
              f"cpu(user+sys)={(rec['user_s'] or 0) + (rec['sys_s'] or 0):.1f}s "
              f"system-busy={rec['system_busy_cpu_s']}s identical={rec['identical']} "
              f"source_unchanged={rec['source_unchanged']}", flush=True)


def run_peer(a, n, peer, src_port, dst_port, results):
    # bench.py keeps its work dir (mbsync's SyncState, offlineimap's metadata): a leftover from an
    # earlier run would make the tool believe an empty target is already in sync.
    shutil.rmtree(os.path.join(a.work, f"n{n}", peer), ignore_errors=True)
    cmd = [sys.executable, os.path.join(a.rig, "bench.py"), "--peer", peer, "--pair", a.pair,
           "--work", os.path.join(a.work, f"n{n}", peer), "--messages", str(n), "--seed", str(a.seed),
           "--add", str(a.add), "--src-port", str(src_port), "--dst-port", str(dst_port),
           "--results", results, "--label", f"n{n}"]
    r = B.sh(cmd, check=False)
    if r.returncode != 0:
        log(f"WARNING: bench.py --peer {peer} --messages {n} exited {r.returncode}")


# ---------------------------------------------------------------- report

def load(results):
    with open(results) as f:
        return [json.loads(line) for line in f if line.strip()]


def index(rows):
    """{(label, peer, scenario): record}; for a repeated key the last record wins."""
    out = {}
    for r in rows:
        out[(r.get("label"), r["peer"], r["scenario"])] = r
    return out


def fnum(x, nd=2):
    return "—" if x is None else f"{x:,.{nd}f}"


def mb(r):
    return (r.get("maxrss_kb") or 0) / 1024


def verdict(r):
    if r["identical"]:
        s = "yes"
    else:
        t = r.get("verify_totals") or {}
        parts = [f"{k}={t[k]}" for k in ("missing", "extra", "duplicated", "flag_mismatch", "date_mismatch")
                 if t.get(k)]
        if r.get("missing_folders"):
            parts.append(f"missing_folders={len(r['missing_folders'])}")
        if r.get("extra_folders"):
            parts.append(f"extra_folders={len(r['extra_folders'])}")
        s = "**NO**" + (f" ({', '.join(parts)})" if parts else "")
    lenient = r.get("lenient")
    if lenient:
        lt = lenient.get("verify_totals") or {}
        s += "; ignoring " + ",".join(lenient["ignored_headers"]) + ": " + \
             ("yes" if lenient["identical"] else "no (" + ", ".join(
                 f"{k}={lt[k]}" for k in ("missing", "extra", "duplicated", "flag_mismatch", "date_mismatch")
                 if lt.get(k)) + ")")
    return s


def rate(r, base):
    """msgs/s as the rig's report.py counts it: full = all / wall, noop = scanned / wall, add = added / wall."""
    n = r["messages_in_source"]
    if r["scenario"] == "add" and base is not None:
        n -= base["messages_in_source"]
    w = r["wall_s"] or 1e-9
    return f"{n / w:,.0f}" + (" (scan)" if r["scenario"] == "noop" else "")


def render(rows, sizes, peers):
    idx = index(rows)
    out = []
    for n in sizes:
        lab = f"n{n}"
        m_full = idx.get((lab, "mailsyncd", "full"))
        if m_full:
            out.append(f"### {n:,} messages ({m_full['bytes_in_source'] / 1e6:,.1f} MB, seed {m_full['seed']})\n")
        else:
            out.append(f"### {n:,} messages\n")
        out.append("Ratios: *speed* = peer wall ÷ mailsyncd wall (> 1: mailsyncd is faster); "
                   "*RSS* = mailsyncd max RSS ÷ peer max RSS (< 1: mailsyncd uses less memory).\n")
        out.append("| scenario | tool | wall s | msgs/s | max RSS MB | rc | identical | source unchanged "
                   "| speed ratio | RSS ratio |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for scen in SCENARIOS:
            m = idx.get((lab, "mailsyncd", scen))
            tools = ["mailsyncd"] + [p for p in peers]
            for tool in tools:
                r = idx.get((lab, tool, scen))
                name = f"**{tool}**" if tool == "mailsyncd" else tool
                scen_s = scen if scen != "add" else f"add (+{_added(idx, lab, tool)})"
                if r is None:
                    out.append(f"| {scen_s} | {name} | (no result) | | | | | | | |")
                    continue
                base = idx.get((lab, tool, "full"))
                if tool == "mailsyncd" or m is None:
                    sr = rr = "—"
                else:
                    sr = f"{r['wall_s'] / m['wall_s']:.2f}×" if m["wall_s"] else "—"
                    rr = f"{mb(m) / mb(r):.2f}×" if mb(r) else "—"
                out.append(f"| {scen_s} | {name} | {r['wall_s']:.2f} | {rate(r, base)} | {mb(r):,.0f} | {r['rc']} | "
                           f"{verdict(r)} | {'yes' if r['source_unchanged'] else '**NO**'} | {sr} | {rr} |")
        out.append("")
    return "\n".join(out)


def _added(idx, lab, tool):
    f, a = idx.get((lab, tool, "full")), idx.get((lab, tool, "add"))
    return (a["messages_in_source"] - f["messages_in_source"]) if f and a else "?"


def targets(rows, sizes):
    idx = index(rows)
    lines = []

    def line(ok, text):
        lines.append(f"{'PASS' if ok else 'FAIL'}: {text}")

    for n in sizes:
        lab = f"n{n}"
        ms = [idx.get((lab, "mailsyncd", s)) for s in SCENARIOS]
        if all(ms):
            bad = [r["scenario"] for r in ms if not (r["identical"] and r["source_unchanged"] and r["rc"] == 0)]
            line(not bad, f"n={n}: mailsyncd rc 0, IDENTICAL and source unchanged in every scenario"
                 + (f" (not in: {', '.join(bad)})" if bad else ""))
        m = idx.get((lab, "mailsyncd", "full"))
        if m is None:
            lines.append(f"SKIP: n={n}: no mailsyncd full-sync result")
            continue
        mb_ = idx.get((lab, "mbsync", "full"))
        if mb_:
            line(m["wall_s"] < mb_["wall_s"], f"n={n}: first sync faster than mbsync: mailsyncd "
                 f"{m['wall_s']:.2f} s vs mbsync {mb_['wall_s']:.2f} s ({mb_['wall_s'] / m['wall_s']:.2f}×)")
        else:
            lines.append(f"SKIP: n={n}: first sync faster than mbsync (mbsync not run)")
        dv = idx.get((lab, "doveadm", "full"))
        if dv:
            lim = TARGET_FULL_VS_DOVEADM * dv["wall_s"]
            line(m["wall_s"] <= lim, f"n={n}: first sync at most {TARGET_FULL_VS_DOVEADM}× doveadm's wall: "
                 f"mailsyncd {m['wall_s']:.2f} s vs doveadm {dv['wall_s']:.2f} s "
                 f"({m['wall_s'] / dv['wall_s']:.2f}× doveadm, limit {lim:.2f} s)")
        else:
            lines.append(f"SKIP: n={n}: first sync at most {TARGET_FULL_VS_DOVEADM}× doveadm (doveadm not run)")
    lab = f"n{TARGET_N}"
    noop = idx.get((lab, "mailsyncd", "noop"))
    if noop:
        line(noop["wall_s"] < TARGET_NOOP_S,
             f"no-change rerun of {TARGET_N:,} under {TARGET_NOOP_S} s: {noop['wall_s']:.2f} s")
    else:
        lines.append(f"SKIP: no-change rerun of {TARGET_N:,} under {TARGET_NOOP_S} s ({TARGET_N} not in --sizes)")
    ms = [r for r in (idx.get((lab, "mailsyncd", s)) for s in SCENARIOS) if r]
    if ms:
        peak = max(ms, key=mb)
        line(mb(peak) < TARGET_RSS_MB, f"peak RSS at {TARGET_N:,} under {TARGET_RSS_MB} MB: "
             f"{mb(peak):.0f} MB ({peak['scenario']})")
    else:
        lines.append(f"SKIP: peak RSS at {TARGET_N:,} under {TARGET_RSS_MB} MB ({TARGET_N} not in --sizes)")
    return "\n".join(lines)


def write_report(a, results, started):
    rows = load(results)
    sizes = a.sizes or sorted({int(r["label"][1:]) for r in rows if str(r.get("label", "")).startswith("n")})
    peers = a.peers
    tables = render(rows, sizes, peers)
    checks = targets(rows, sizes)
    raw = subprocess.run([sys.executable, os.path.join(a.rig, "report.py"), results],
                         capture_output=True, text=True).stdout
    head = (f"# mailsyncd vs peers — {started}\n\n"
            f"Host: {os.uname().nodename}, {os.cpu_count()} CPUs; rig: {a.rig}; results: {results}\n"
            f"mailsyncd sync.connections: {a.connections or 'default'}; seed {a.seed}; add {a.add}\n\n"
            "All figures come from this one run, on the same corpus, on the same machine: compare them as "
            "ratios, not with figures from other runs.\n")
    sj = os.path.join(a.work, "scenarios.json")
    extra = ""
    if os.path.exists(sj) and [x for x in a.scenario if x != "sizes"]:
        with open(sj) as f:
            extra = "\n## Issue 16 scenarios\n\n" + S.render(json.load(f)) + "\n"
        print(extra)
    md = (head + "\n" + tables + extra + "\n## Targets\n\n```\n" + checks + "\n```\n\n"
          "## All records (rig's report.py)\n\n" + raw)
    with open(os.path.join(a.work, "report.md"), "w") as f:
        f.write(md)
    print("\n" + tables)
    print(checks)
    print(f"\n(report written to {os.path.join(a.work, 'report.md')})", flush=True)


# ---------------------------------------------------------------- main

def main():
    global B, V
    a = parse_args()
    if not os.path.isfile(os.path.join(a.rig, "bench.py")):
        raise SystemExit(f"run.py: no measuring rig at {a.rig} (use --rig or $MAILSYNCD_BENCH_RIG)")
    sys.path.insert(0, a.rig)
    import bench as B       # noqa: E402  (sh, cpu_busy, parse_time_v)
    import verify as V      # noqa: E402  (snapshot)
    os.makedirs(a.work, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    if a.report_only:
        write_report(a, os.path.abspath(a.report_only), started)
        return
    if len(a.pair) > 60:
        raise SystemExit(f"run.py: --pair path too long for Dovecot's sockets ({len(a.pair)} > 60): {a.pair}")
    if not os.access("/usr/bin/time", os.X_OK):
        raise SystemExit("run.py: /usr/bin/time is missing (apt-get install time)")
    for p in a.peers:
        tool = {"doveadm": "doveadm", "mbsync": "mbsync", "offlineimap": "offlineimap"}[p]
        if shutil.which(tool) is None:
            raise SystemExit(f"run.py: peer {p}: {tool} not found in PATH (leave it out with --peers)")

    results = os.path.join(a.work, "results.jsonl")
    if os.path.exists(results) and os.path.getsize(results):
        old = os.path.join(a.work, time.strftime("results-%Y%m%d-%H%M%S.jsonl",
                                                 time.localtime(os.path.getmtime(results))))
        os.replace(results, old)
        log(f"previous results moved to {old}")
    open(results, "w").close()
    sj = os.path.join(a.work, "scenarios.json")
    if os.path.exists(sj):
        os.replace(sj, os.path.join(a.work, time.strftime("scenarios-%Y%m%d-%H%M%S.json",
                                                          time.localtime(os.path.getmtime(sj)))))

    # mailsyncd is timed as installed, with its bytecode compiled (pip does it): a checkout under
    # PYTHONDONTWRITEBYTECODE=1 would otherwise compile every module in every timed run (~0.2 s CPU)
    compileall.compile_dir(os.path.join(REPO, "mailsyncd"), quiet=1)
    pair_sh = os.path.join(a.rig, "dovecot-pair.sh")
    src_port, dst_port = start_pair(a, pair_sh)
    log(f"pair {a.pair}: source 127.0.0.1:{src_port}, target 127.0.0.1:{dst_port}; results {results}")
    t0 = time.time()
    for n in a.sizes:
        log(f"===== n={n}: mailsyncd =====")
        run_mailsyncd(a, n, src_port, dst_port, results, pair_sh)
        for peer in a.peers:
            log(f"===== n={n}: {peer} (rig's bench.py) =====")
            run_peer(a, n, peer, src_port, dst_port, results)
    others = [x for x in a.scenario if x != "sizes"]
    if others:
        ctx = S.Ctx(a, B, V, pair_sh, src_port, dst_port, write_mailsyncd_config)
        S.run(ctx, others, os.path.join(a.work, "scenarios.json"))
    log(f"all runs done in {time.time() - t0:.0f} s")
    write_report(a, results, started)


if __name__ == "__main__":
    sys.dont_write_bytecode = True
    main()
