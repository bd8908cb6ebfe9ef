"""mailsyncctl commands that talk to a running daemon or change its plans: reload, status, cutover."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sys
import time
from dataclasses import replace as dataclass_replace

from .. import cutover, nodes, status
from ..text import json_text, shown

from .common import EXIT_CONFIG_BROKEN, EXIT_ERROR, EXIT_OK, EXIT_RESTART, EXIT_USAGE


def _status_path(cfg) -> str:
    from ..statedir import STATUS_FILE       # not from daemon.py: mailsyncctl status need not load Twisted
    return os.path.join(cfg.state_dir, STATUS_FILE)


def read_status(cfg) -> dict | None:
    """The running daemon's status file, or None when no daemon runs for this state_dir."""
    try:
        with open(_status_path(cfg)) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(doc["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError, TypeError):
        return None
    except PermissionError:
        pass        # alive, under another user
    return doc


def cmd_reload(cfg, args) -> int:
    doc = read_status(cfg)
    if doc is None:
        print(f"mailsyncctl: no running mailsyncd for {cfg.state_dir} (no live {_status_path(cfg)})",
              file=sys.stderr)
        return EXIT_ERROR
    before = doc["reloads"]
    os.kill(int(doc["pid"]), signal.SIGHUP)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = read_status(cfg)
        if now is None:
            print("mailsyncctl: the daemon went away during the reload", file=sys.stderr)
            return EXIT_ERROR
        if now["reloads"] > before:
            if now.get("reload_error"):
                print(f"mailsyncctl: reload failed, still running generation {now['generation']}: "
                      f"{shown(now['reload_error'])}", file=sys.stderr)
                return EXIT_ERROR
            print(f"reloaded: generation {now['generation']}, domains {', '.join(now['domains'])}")
            for note in now.get("restart_needed") or []:
                print(f"restart needed: {shown(note)}")
            return EXIT_RESTART if now.get("restart_needed") else EXIT_OK
    print(f"mailsyncctl: no answer to SIGHUP within {args.timeout:g}s (pid {doc['pid']})", file=sys.stderr)
    return EXIT_ERROR


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _parse_when(text: str) -> float:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"mailsyncctl: --at {text!r}: not an ISO 8601 time, e.g. 2026-12-31T18:00:00+08:00") from None
    if when.tzinfo is None:
        raise SystemExit(f"mailsyncctl: --at {text!r}: give the time zone, e.g. +08:00 or Z")
    return when.timestamp()


def cmd_cutover(cfg, args) -> int:
    from ..store import Store
    domain = args.domain.lower()
    if domain not in cfg.domains:
        print(f"mailsyncctl: no domain {domain!r} in the config (known: {', '.join(sorted(cfg.domains))})",
              file=sys.stderr)
        return EXIT_ERROR
    store = Store.open(cfg)
    try:
        state = cutover.state_of(store.cutover(domain))
        event = (cutover.SCHEDULE if args.now or args.at else cutover.CLEAR if args.clear else
                 cutover.CANCEL if args.cancel else None)
        if event in (cutover.SCHEDULE, cutover.CLEAR) and not cutover.allowed(state, event):
            print(f"mailsyncctl: the cutover of {domain} is already {cutover.word(state)}; "
                  "it cannot be changed now", file=sys.stderr)
            return EXIT_ERROR
        if args.cancel:
            # decided by the store in one transaction, against the scheduler closing the cutover
            refused = store.cancel_cutover(domain, "cancelled with mailsyncctl")
            if refused is not None:
                print(f"mailsyncctl: too late to cancel: the cutover of {domain} is already "
                      f"{cutover.word(refused['state'])} (its final passes are over and syncing has "
                      "stopped)", file=sys.stderr)
                return EXIT_ERROR
            print(f"{domain}: cutover cancelled (the YAML's cutover time is ignored until "
                  f"`mailsyncctl cutover {domain} --clear` or a new --at)")
        elif args.now or args.at:
            at = time.time() if args.now else _parse_when(args.at)
            store.set_cutover(domain, at, cutover.SCHEDULED, "set with mailsyncctl")
            print(f"{domain}: cutover scheduled for {_when(at)}")
        elif args.clear:
            store.clear_cutover(domain)
            yaml_at = cfg.domains[domain].cutover
            print(f"{domain}: cutover follows the YAML again: {_when(yaml_at) if yaml_at else 'none set'}")
        row = store.cutover(domain)
        counts = {k: v for k, v in status.totals_of(store.progress_totals(domain=domain), 0.0)["phases"].items() if v}
    finally:
        store.close()
    yaml_at = cfg.domains[domain].cutover
    if row is None:
        line = f"scheduled for {_when(yaml_at)} (from the YAML)" if yaml_at else "not scheduled"
    else:
        line = cutover.word(row["state"]) + (f", at {_when(row['at'])}" if row["at"] else "")
        if row.get("note"):
            line += f" ({shown(row['note'])})"
    print(f"{domain}: cutover {line}")
    print(f"{domain}: accounts by phase: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"))
    if (args.now or args.at) and read_status(cfg) is None:
        print("note: no mailsyncd is running for this state_dir; the cutover runs when it starts", file=sys.stderr)
    return EXIT_OK


def _bar(percent: float, width: int = 20) -> str:
    full = int(round(width * percent / 100))
    return "█" * full + "░" * (width - full)


def _ago(ts: float | None, now: float) -> str:
    if not ts:
        return "-"
    d = now - ts
    if d < 0:
        d = -d
        return f"in {d:.0f}s" if d < 90 else f"in {d / 60:.0f}m" if d < 5400 else f"in {d / 3600:.1f}h"
    return f"{d:.0f}s ago" if d < 90 else f"{d / 60:.0f}m ago" if d < 5400 else f"{d / 3600:.1f}h ago"


def _eta(sec) -> str:
    if sec is None:
        return "-"
    return f"{sec:.0f}s" if sec < 90 else f"{sec / 60:.0f}m" if sec < 5400 else f"{sec / 3600:.1f}h"


def cmd_status_any(args) -> int:
    """status, also while the config file is broken (statusconfig)."""
    from .. import logs
    from . import statusconfig
    cfg, errors = statusconfig.load(args)
    if cfg is None:
        return EXIT_ERROR
    logs.setup(args.log_level or cfg.log_level)
    return cmd_status(cfg, args, errors)


def _config_problems(cfg, doc: dict | None, errors: list[str]) -> list[str]:
    """What status says first: a failed reload, a config file that would fail the next one."""
    lines = []
    if doc is not None and doc.get("reload_error"):
        lines.append(f"RELOAD FAILED: mailsyncd keeps running generation {doc['generation']} "
                     f"(config {shown(doc.get('config_path') or cfg.path)}): {shown(doc['reload_error'], 2000)}")
    if errors:
        lines.append(f"CONFIG FILE HAS ERRORS: {shown(cfg.path)}"
                     + ("" if doc is None or doc.get("reload_error") else
                        f" (not reloaded yet: the daemon runs generation {doc['generation']})"))
        lines += [f"  {shown(e, 2000)}" for e in errors]
        source = "the running daemon's record" if getattr(cfg, "from_daemon", False) else "the state store"
        lines.append(f"  status below from {source} in {shown(cfg.state_dir)}")
    return lines


HUMAN_LIMIT = 20       # accounts `mailsyncctl status` lists by default (after the failed ones)


def _status_query(args):
    """The filters and the page asked for (statusquery.Query); QueryError names a bad one."""
    from .. import statusquery
    given = {"domain": args.domain, "user": args.user, "phase": args.phase, "q": args.q,
             "limit": None if args.limit is None else str(args.limit), "cursor": args.cursor}
    query = statusquery.parse(given.get)
    if args.all:
        return statusquery.Query(**{**query.__dict__, "limit": None})
    if args.limit is None and not args.json:
        return statusquery.Query(**{**query.__dict__, "limit": HUMAN_LIMIT})
    return query


def _read_pages(store, query, live: dict, human: bool):
    """The page of ``query``; for people also the accounts that need attention: failed ones (one page
    of them) and those with a pass running now.  Returns (read, attention rows)."""
    from .. import statusquery
    got = statusquery.read(store, query, running=live.keys())
    attention = []
    if human and query.limit is not None and query.phase is None and query.user is None and query.after is None:
        failed = dataclass_replace(query, phase="failed", limit=query.limit)
        attention = statusquery.read(store, failed, running=live.keys(), totals=False)["rows"]
        for address in sorted(live)[:query.limit]:
            attention += statusquery.read(store, dataclass_replace(query, user=address, limit=1),
                                          running=live.keys(), totals=False)["rows"]
    return got, attention


def cmd_status(cfg, args, config_errors: list[str] = ()) -> int:
    from .. import statusquery
    from ..store import Store
    try:
        query = _status_query(args)
    except statusquery.QueryError as e:
        print(f"mailsyncctl: status: {e}", file=sys.stderr)
        return EXIT_USAGE
    doc = read_status(cfg)
    live = (doc or {}).get("live") or {}
    watch = (doc or {}).get("watch") or {}
    store = Store.open(cfg)
    try:
        got, attention = _read_pages(store, query, live, not args.json)
        cutovers = store.cutovers()
        cluster = nodes.read_nodes(store, time.time())
    finally:
        store.close()
    if not (getattr(args, "nodes", False) or len(cluster) > 1):
        cluster = None          # one node: nothing to say about it
    daemon = None
    if doc is not None:
        daemon = {k: doc.get(k) for k in ("pid", "generation", "started", "sessions", "relayed", "reload_error",
                                          "config_path")}
        daemon["running"] = True
    report = status.build_page(got["rows"], got["groups"], config=cfg, live=live, cutovers=cutovers,
                               running_domains=got["running_domains"], daemon=daemon, domain=query.domain,
                               next_cursor=got["next_cursor"], watch=watch)
    seen = {a["address"] for a in report["accounts"]}
    extra = status.build_page([r for r in attention if r["address"] not in seen], [], config=cfg, live=live,
                              now=report["generated"], watch=watch)["accounts"]
    # a page keeps its order (addresses: the footer says how to go on) unless asked; --all for people:
    # failed first, as the listing of every account always was
    how = args.sort or ("phase" if args.all and not args.json else None)
    if how == "behind":
        report["accounts"].sort(key=lambda a: (-a["behind"], a["address"]))
    elif how == "phase":
        report["accounts"].sort(key=status.sort_key)
    report["accounts"] = sorted({a["address"]: a for a in extra}.values(), key=status.sort_key) \
        + report["accounts"]
    problems = _config_problems(cfg, doc, list(config_errors))
    done = EXIT_CONFIG_BROKEN if problems else EXIT_OK
    if cluster is not None:
        report["nodes"] = cluster
    if args.json:
        if config_errors:
            report["config_errors"] = list(config_errors)
        print(json_text(report, indent=2))
        return done
    now = time.time()
    for line in problems:
        print(line)
    if doc is None:
        print("daemon: not running (numbers from the state store)")
    else:
        print(f"daemon: pid {doc['pid']}, up {now - doc['started']:.0f}s, config generation {doc['generation']}, "
              f"{doc['sessions']} sessions ({doc['relayed']} relayed), "
              f"{len((doc.get('live') or {}))} passes running")
    if cluster is not None:
        for line in nodes.lines(cluster):
            print(line)
    for d in report["domains"]:
        ph = d["phases"]
        cut = d["cutover"]
        cut_text = cutover.word(cutover.state_of(cut)) + (f" at {_when(cut['at'])}" if cut and cut.get("at") else "")
        skipped = f", {d['skipped']:,} skipped" if d["skipped"] else ""
        phases = ", ".join(f"{v} {k}" for k, v in ph.items() if v) or "none"
        if d["source_known"]:
            print(f"\n{d['name']}  {_bar(d['percent'])} {d['percent']:5.1f}%  "
                  f"{d['target_messages']:,} of {d['source_messages']:,} messages on the new server"
                  f"{skipped}; eta {_eta(d['eta_seconds'])}")
        else:   # 0 of 0 would read as "done"
            print(f"\n{d['name']}  progress unknown: {d['target_messages']:,} messages on the new server{skipped}, "
                  "source not counted yet" + ("" if d["accounts"] else " (no accounts)"))
        print(f"  accounts: {d['accounts']} ({phases}); cutover {cut_text}")
    accounts = report["accounts"]
    if not accounts:
        return done
    for a in accounts:
        a["address"] = shown(a["address"])
    width = max(len(a["address"]) for a in accounts)
    print(f"\n{'account':<{width}}  {'phase':<8} {'progress':<28} {'messages':>17} {'skip':>5} "
          f"{'eta':>6}  {'last pass':>10}  {'next':>11}  {'watch':<5} {'new mail':>8}")
    for a in accounts:
        if a["source_known"]:
            msgs = f"{a['target_messages']:,}/{a['source_messages']:,}"
            progress = f"{_bar(a['percent'])} {a['percent']:5.1f}%"
        else:
            msgs, progress = f"{a['target_messages']:,}/unknown", "unknown"
        # no daemon, no next pass: "now" would be a promise nobody keeps
        nxt = "running" if a["running"] else "not running" if doc is None else (
            "-" if not a["next_pass"] else "now" if a["next_pass"] <= now else _ago(a["next_pass"], now))
        print(f"{a['address']:<{width}}  {a['phase']:<8} {progress:<28} "
              f"{msgs:>17} {a['skipped']:>5} {_eta(a['eta_seconds']):>6}  {_ago(a['last_pass'], now):>10}  "
              f"{nxt:>11}  {a['watching']:<5} {_latency(a['new_mail_latency']):>8}")
        if a.get("stage") == "recent":
            print(f"{'':<{width}}  ↳ newest first: the recent mail of INBOX and Sent goes before the rest")
        if a["reason"]:
            print(f"{'':<{width}}  ↳ {shown(a['reason'], 160)}")
    _footer(report, query, len(extra))
    return done


def _latency(seconds: float | None) -> str:
    """The last new-mail latency (watch's notice to the end of the pass that copied it)."""
    return "-" if seconds is None else f"{seconds:.1f}s" if seconds < 100 else _eta(seconds)


def _footer(report: dict, query, attention: int) -> None:
    """How many of how many, and how to see the rest."""
    shown_now = len(report["accounts"]) - attention
    total = report["totals"]["accounts"]
    if report["next"] is None and not attention:
        return
    lines = [f"\n{total:,} accounts" + (" match" if (query.phase or query.q or query.user) else "")
             + (f"; above: {attention} that need attention (failed, or a pass running now), then"
                if attention else ";") + f" {shown_now:,} in address order."]
    if report["next"] is not None:
        lines.append(f"next {shown_now}: mailsyncctl status --cursor {report['next']}  (same filters); "
                     "every account: --all; filter: --phase P, --domain D, --q TEXT")
    print("\n".join(lines))
