"""mailsyncctl: the admin's command line -- its parser and dispatch.  Each command group has its
module: ``account`` (sync, report, remap), ``control`` (reload, status, cutover), ``importcmd``,
``detect``, ``demo``."""

from __future__ import annotations

import argparse
import os
import sys

from . import account
from .common import (EPILOG, EXIT_ERROR, EXIT_OK, EXIT_PIPE, EXIT_USAGE, add_config_options,
                     load_checked_config, state_usable)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="mailsyncctl", description="Administer mailsyncd: check the config, run and inspect migrations.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_options(ap, "override the config's log_level (logs go to stderr)")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    sub.add_parser("check-config", help="validate the config: list every error (exit 1), or summarise it (exit 0)")

    account.add_parsers(sub)
    from .accountcmd import add_parser as add_account
    add_account(sub)

    p = sub.add_parser("reload", help="make the running daemon re-read its config (SIGHUP) and wait for the result",
                       description="Check the config, send SIGHUP to the mailsyncd running on this state_dir, and "
                                   "wait until it reports the new config generation (exit 0) or its error (exit 1). "
                                   "A bad file is refused here first; the daemon would keep its old config anyway. "
                                   "Listen addresses and state_dir change only on restart: when they changed, "
                                   "it says so and exits 4.")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S", help="seconds to wait (default 30)")

    p = sub.add_parser("status", help="progress at a glance: per domain and per account, failed first",
                       description="Per domain: messages on the new server of those at the source, accounts by "
                                   "phase (failed, syncing, waiting for first login, tailing, cutover), ETA and "
                                   "cutover. Per account: a progress bar, counts, skipped, rate, last and next pass. "
                                   "With many accounts it lists the failed ones and those with a pass running "
                                   "first, then the first 20 accounts in address order, and says how to see the "
                                   "next ones; --all lists every account. --json gives the same numbers (schema 1, "
                                   "docs/status.md): one page of 100 accounts (--limit, up to 1000), the totals "
                                   "of the whole filter, and the cursor of the next page in \"next\".")
    p.add_argument("--domain", metavar="D", help="only this domain")
    p.add_argument("--user", metavar="ADDRESS", help="only this account")
    p.add_argument("--phase", metavar="P",
                   help="only accounts in this phase: failed, syncing, waiting, tailing, cutover")
    p.add_argument("--q", metavar="TEXT", help="only accounts whose address (or source address) contains TEXT, "
                                               "in any case")
    p.add_argument("--limit", type=int, metavar="N", help="accounts per page (default 20, --json 100; at most 1000)")
    p.add_argument("--cursor", metavar="C", help="the page after the one that printed this cursor (its \"next\")")
    p.add_argument("--all", action="store_true", help="every account, in one listing (slow with many accounts)")
    p.add_argument("--sort", choices=["phase", "behind", "address"],
                   help="order of the accounts listed: phase (failed first; the default of --all without "
                        "--json), behind (most messages still to copy), address (the default of a page)")
    p.add_argument("--json", action="store_true", help="machine-readable output (schema 1, docs/status.md)")
    p.add_argument("--nodes", action="store_true", help="list the nodes sharing the database (name, last "
                                                       "heartbeat, leases held); shown anyway when there are several")
    p.add_argument("--state-dir", metavar="DIR", help="the daemon's state_dir, when the config file does not "
                                                      "load (default: the file's state_dir line)")

    p = sub.add_parser("cutover", help="show, schedule, postpone or cancel a domain's cutover",
                       description="The cutover ends a domain's migration: one final pass per account, then "
                                   "syncing stops, logins are checked against the last good password only, and "
                                   "the stored source passwords are destroyed. Without an option: show its state. "
                                   "A time set here overrides the YAML's cutover: until --clear.")
    p.add_argument("domain")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--now", action="store_true", help="run it now")
    g.add_argument("--at", metavar="TIME", help="schedule or postpone it, e.g. 2026-12-31T18:00:00+08:00")
    g.add_argument("--cancel", action="store_true", help="call it off (possible until its final passes are done)")
    g.add_argument("--clear", action="store_true", help="forget what was set here; follow the YAML again")

    from .importcmd import add_parser as add_import
    add_import(sub)
    from .detect import add_parser as add_detect
    add_detect(sub)
    sub.add_parser("hash-password", help="print an argon2 hash for admin.password_hash (the dashboard's password)",
                   description="Asks twice on a terminal, or reads one line from a pipe, and prints the argon2 "
                               "hash to put in the config as admin: {password_hash: ...}.")

    from .preflight import add_parser as add_preflight
    add_preflight(sub)
    from .demo import add_parser as add_demo
    add_demo(sub)
    from .dbcmd import add_parsers as add_db
    add_db(sub)
    for p in sub.choices.values():    # the global options, after the command too
        add_config_options(p, "override the config's log_level (logs go to stderr)", in_command=True)
    return ap


def main(argv: list[str] | None = None) -> int:
    from ..store import StoreError
    try:
        code = _main(argv)
        sys.stdout.flush()      # inside the try: a closed pipe shows here for buffered output
        return code
    except StoreError as e:     # the database is down, refused us, or has another schema: said, no traceback
        print(f"mailsyncctl: {e}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        # the reader went away (`mailsyncctl status | head`): no traceback; stdout points at devnull so
        # that the interpreter's own flush at exit does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE


def _main(argv: list[str] | None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    from .. import heap, logs, statedir
    heap.tune()     # before any thread: sync and import copy on several
    statedir.private_umask()
    if args.cmd == "hash-password":   # needs no config file
        from .hashpw import cmd_hash_password
        return cmd_hash_password(args)
    if args.cmd == "detect":          # needs no config file
        from .detect import cmd_detect
        return cmd_detect(args)
    if args.cmd == "demo":
        from .demo import run_demo
        logs.setup(args.log_level or "warning")
        return run_demo(args)
    if args.cmd == "status":          # works on a broken config file too: the daemon's own record
        from . import control
        return control.cmd_status_any(args)
    cfg = load_checked_config(args.config, "mailsyncctl")
    if cfg is None:
        return EXIT_ERROR
    if args.cmd != "check-config" and not state_usable(cfg.state_dir):
        return EXIT_ERROR
    logs.setup(args.log_level or cfg.log_level)
    if args.cmd in ("sync", "import", "preflight") and any(d.source.auto for d in cfg.domains.values()):
        from ..providers.autodetect import resolve
        cfg, _found, failed = resolve(cfg)
        for name, why in failed.items():
            print(f"mailsyncctl: {name}: source host: auto found nothing ({why})", file=sys.stderr)
    if args.cmd == "check-config":
        from ..config import summary
        print(f"{cfg.path}: OK")
        print(summary(cfg))
        return EXIT_OK
    if args.cmd in ("sync", "report", "remap"):
        return getattr(account, f"cmd_{args.cmd}")(cfg, args)
    if args.cmd == "account":
        from .accountcmd import cmd_account
        return cmd_account(cfg, args)
    if args.cmd == "import":
        from .importcmd import cmd_import
        return cmd_import(cfg, args)
    if args.cmd == "preflight":
        from .preflight import cmd_preflight
        return cmd_preflight(cfg, args)
    if args.cmd in ("reload", "status", "cutover"):
        from . import control
        return getattr(control, f"cmd_{args.cmd}")(cfg, args)
    if args.cmd in ("migrate-db", "export-db", "import-db"):
        from . import dbcmd
        return getattr(dbcmd, f"cmd_{args.cmd.replace('-', '_')}")(cfg, args)
    ap.error(f"unknown command {args.cmd}")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
