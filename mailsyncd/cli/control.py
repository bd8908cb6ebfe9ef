"""mailsyncctl commands that talk to a running daemon or change its plans: reload, status, cutover."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sys
import time

EXIT_OK, EXIT_ERROR = 0, 1


def _status_path(cfg) -> str:
    from ..daemon import STATUS_FILE
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
                      f"{now['reload_error']}", file=sys.stderr)
                return EXIT_ERROR
            print(f"reloaded: generation {now['generation']}, domains {', '.join(now['domains'])}")
            return EXIT_OK
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
    store = Store.in_state_dir(cfg.state_dir)
    try:
        row = store.cutover(domain)
        state = row["state"] if row else None
        if (args.now or args.at or args.cancel or args.clear) and state in ("final_pass", "done") and not (
                args.cancel and state == "final_pass"):
            print(f"mailsyncctl: the cutover of {domain} is already {state.replace('_', ' ')}; "
                  "it cannot be changed now", file=sys.stderr)
            return EXIT_ERROR
        if args.now or args.at:
            at = time.time() if args.now else _parse_when(args.at)
            store.set_cutover(domain, at, "scheduled", "set with mailsyncctl")
            print(f"{domain}: cutover scheduled for {_when(at)}")
        elif args.cancel:
            store.set_cutover(domain, None, "cancelled", "cancelled with mailsyncctl")
            print(f"{domain}: cutover cancelled (the YAML's cutover time is ignored until "
                  f"`mailsyncctl cutover {domain} --clear` or a new --at)")
        elif args.clear:
            store.clear_cutover(domain)
            yaml_at = cfg.domains[domain].cutover
            print(f"{domain}: cutover follows the YAML again: {_when(yaml_at) if yaml_at else 'none set'}")
        row = store.cutover(domain)
        counts = store.phase_counts(domain)
    finally:
        store.close()
    yaml_at = cfg.domains[domain].cutover
    if row is None:
        line = f"scheduled for {_when(yaml_at)} (from the YAML)" if yaml_at else "not scheduled"
    else:
        line = f"{row['state'].replace('_', ' ')}" + (f", at {_when(row['at'])}" if row["at"] else "")
        if row.get("note"):
            line += f" ({row['note']})"
    print(f"{domain}: cutover {line}")
    print(f"{domain}: accounts by phase: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"))
    if (args.now or args.at) and read_status(cfg) is None:
        print("note: no mailsyncd is running for this state_dir; the cutover runs when it starts", file=sys.stderr)
    return EXIT_OK


def cmd_status(cfg, args) -> int:
    from ..store import Store
    doc = read_status(cfg)
    store = Store.in_state_dir(cfg.state_dir)
    try:
        counts = {d: store.phase_counts(d) for d in cfg.domains}
        cutovers = store.cutovers()
    finally:
        store.close()
    if args.json:
        json.dump({"daemon": doc, "domains": {d: {"phases": counts[d], "cutover": cutovers.get(d)}
                                              for d in cfg.domains}}, sys.stdout, indent=2)
        print()
        return EXIT_OK
    if doc is None:
        print("daemon: not running")
    else:
        sch = doc.get("scheduler", {})
        print(f"daemon: pid {doc['pid']}, up {time.time() - doc['started']:.0f}s, config generation "
              f"{doc['generation']}, {doc['sessions']} sessions ({doc['relayed']} relayed), "
              f"{sch.get('running', 0)} passes running")
        if doc.get("reload_error"):
            print(f"  last reload FAILED: {doc['reload_error']}")
    for d in sorted(cfg.domains):
        c = counts[d]
        row = cutovers.get(d)
        cut = row["state"].replace("_", " ") if row else ("at " + _when(cfg.domains[d].cutover)
                                                         if cfg.domains[d].cutover else "not scheduled")
        print(f"{d}: " + (", ".join(f"{v} {k}" for k, v in sorted(c.items())) or "no accounts")
              + f"; cutover {cut}")
    return EXIT_OK
