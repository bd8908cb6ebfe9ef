"""mailsyncctl: the admin's command line."""

from __future__ import annotations

import argparse
import csv
import os
import sys

from .. import __version__

DEFAULT_CONFIG = os.environ.get("MAILSYNCD_CONFIG", "/etc/mailsyncd/mailsyncd.yaml")

# exit codes (documented in --help)
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3

EPILOG = """exit codes:
  0  done: for sync, every source message is on the target
  1  failed (config error, login refused, server unreachable, ...)
  2  bad command line
  3  sync finished, but some messages were skipped or some folders failed (see the report)
"""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="mailsyncctl", description="Administer mailsyncd: check the config, run and inspect migrations.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", "-c", default=DEFAULT_CONFIG, metavar="FILE",
                    help=f"YAML config file (default: $MAILSYNCD_CONFIG or {DEFAULT_CONFIG})")
    ap.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"],
                    help="override the config's log_level (logs go to stderr)")
    ap.add_argument("--version", action="version", version=f"mailsyncd {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    sub.add_parser("check-config", help="validate the config: list every error (exit 1), or summarise it (exit 0)")

    p = sub.add_parser("sync", help="run one sync pass for one account in the foreground",
                       description="Copy new messages and flag changes from the account's old server to the "
                                   "new one, then print a per-folder report.", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("address", help="the user's email address; its domain selects the config section")
    p.add_argument("--password-file", metavar="FILE",
                   help="file holding the user's OLD (source) password on its first line; '-' reads stdin")
    p.add_argument("--progress", choices=["auto", "bar", "lines", "none"], default="auto",
                   help="progress display on stderr (default: a bar on a terminal, lines otherwise)")

    p = sub.add_parser("report", help="the last pass's report for an account: per folder, source vs target")
    p.add_argument("address")
    p.add_argument("--csv", action="store_true", help="CSV on stdout, for a spreadsheet")

    p = sub.add_parser("remap", help="move a folder's copied mail to the target the last pass would now choose",
                       description="A pass never moves a folder copied before: when the config or the servers' "
                                   "folders change its target, it keeps the recorded one and reports "
                                   "mapping_changed. remap applies those changes: it moves what was copied (UID MOVE, "
                                   "else COPY + \\Deleted + UID EXPUNGE of exactly those messages) and updates the "
                                   "UID map. Only the target is touched.")
    p.add_argument("address")
    p.add_argument("--folder", metavar="F", help="only this source folder (as `report` shows it)")
    p.add_argument("--password-file", metavar="FILE",
                   help="the OLD password (needed only with target auth: same); '-' reads stdin")

    p = sub.add_parser("reload", help="make the running daemon re-read its config (SIGHUP) and wait for the result",
                       description="Check the config, send SIGHUP to the mailsyncd running on this state_dir, and "
                                   "wait until it reports the new config generation (exit 0) or its error (exit 1). "
                                   "A bad file is refused here first; the daemon would keep its old config anyway.")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S", help="seconds to wait (default 30)")

    p = sub.add_parser("status", help="progress at a glance: per domain and per account, failed first",
                       description="Per domain: messages on the new server of those at the source, accounts by "
                                   "phase (failed, syncing, waiting for first login, tailing, cutover), ETA and "
                                   "cutover. Per account: a progress bar, counts, skipped, rate, last and next pass. "
                                   "Failed accounts come first, with their reasons. --json gives the same numbers "
                                   "(schema 1, docs/status.md).")
    p.add_argument("--domain", metavar="D", help="only this domain")
    p.add_argument("--user", metavar="ADDRESS", help="only this account")
    p.add_argument("--sort", choices=["phase", "behind", "address"], default="phase",
                   help="account order: phase (failed first; default), behind (most messages still to copy), address")
    p.add_argument("--json", action="store_true", help="machine-readable output (schema 1, docs/status.md)")

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

    p = sub.add_parser("demo", help="self-contained demo: two local Dovecot servers, a mailbox, a migration")
    p.add_argument("--messages", type=int, default=1000, help="messages to put in the demo mailbox (default 1000)")
    p.add_argument("--keep", action="store_true", help="leave the demo directory in place")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    from .. import logs, statedir
    statedir.private_umask()
    if args.cmd == "hash-password":   # needs no config file
        from ..web.admin import cmd_hash_password
        return cmd_hash_password(args)
    if args.cmd == "detect":          # needs no config file
        from .detect import cmd_detect
        return cmd_detect(args)
    if args.cmd == "demo":
        from .demo import run_demo
        logs.setup(args.log_level or "warning")
        return run_demo(args)
    from ..config import ConfigError, load_config, summary
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"mailsyncctl: {args.config}: configuration is invalid:", file=sys.stderr)
        for err in e.errors:
            print(f"  {err}", file=sys.stderr)
        return EXIT_ERROR
    try:
        statedir.check(cfg.state_dir)
    except statedir.StateDirError as e:
        print(f"mailsyncctl: {e}", file=sys.stderr)
        return EXIT_ERROR
    logs.setup(args.log_level or cfg.log_level)
    if args.cmd in ("sync", "import") and any(d.source.auto for d in cfg.domains.values()):
        from ..providers.autodetect import resolve
        cfg, _found, failed = resolve(cfg)
        for name, why in failed.items():
            print(f"mailsyncctl: {name}: source host: auto found nothing ({why})", file=sys.stderr)
    if args.cmd == "check-config":
        print(f"{cfg.path}: OK")
        print(summary(cfg))
        return EXIT_OK
    if args.cmd == "sync":
        return cmd_sync(cfg, args)
    if args.cmd == "report":
        return cmd_report(cfg, args)
    if args.cmd == "remap":
        return cmd_remap(cfg, args)
    if args.cmd == "import":
        from .importcmd import cmd_import
        return cmd_import(cfg, args)
    if args.cmd in ("reload", "status", "cutover"):
        from . import control
        return getattr(control, f"cmd_{args.cmd}")(cfg, args)
    ap.error(f"unknown command {args.cmd}")
    return EXIT_USAGE


def _read_password(path: str) -> str:
    if path == "-":
        line = sys.stdin.readline()
    else:
        with open(path, encoding="utf-8") as f:
            line = f.readline()
    return line.rstrip("\r\n")


def _password(cfg, args) -> str | None:
    """The account's old password from --password-file or the vault; None (said on stderr) if neither."""
    from ..store import Store
    from ..vault import Vault, VaultError
    if args.password_file:
        try:
            return _read_password(args.password_file)
        except OSError as e:
            print(f"mailsyncctl: cannot read password file: {e.strerror}: {args.password_file}", file=sys.stderr)
            return None
    store = Store.in_state_dir(cfg.state_dir)
    try:
        password = Vault.open(cfg.state_dir, store).source_password(args.address)
    except VaultError as e:
        print(f"mailsyncctl: {e}", file=sys.stderr)
        return None
    finally:
        store.close()
    if password is None:
        print(f"mailsyncctl: no stored source password for {args.address}; pass --password-file FILE",
              file=sys.stderr)
    return password


def cmd_sync(cfg, args) -> int:
    from ..config import UnknownDomain
    from ..errors import MailsyncError
    from ..store import Store
    from ..sync.account import AccountSync
    from ..sync.progress import Progress
    from ..text import shown
    from .render import ProgressView, human_bytes, deletion_lines, report_table

    try:
        domain = cfg.domain_for(args.address)
    except (UnknownDomain, ValueError) as e:
        print(f"mailsyncctl: {e}", file=sys.stderr)
        return EXIT_ERROR
    password = _password(cfg, args)
    if password is None:
        return EXIT_ERROR
    view = None
    if args.progress != "none":
        tty = {"bar": True, "lines": False}.get(args.progress)
        view = ProgressView(sys.stderr, tty=tty)
    progress = Progress(view)
    store = Store.in_state_dir(cfg.state_dir)
    try:
        res = AccountSync(domain, args.address, password, store, progress=progress).run()
    except MailsyncError as e:
        res = None
        err = str(e)
    finally:
        if view:
            view.close(progress)
        store.close()
    if res is None or res.error:
        print(f"mailsyncctl: sync of {shown(args.address)} failed: {shown(err if res is None else res.error)}",
              file=sys.stderr)
        return EXIT_ERROR
    print(report_table(res.folders))
    for line in deletion_lines(res.folders):
        print(line)
    for s in res.skipped_folders:
        if "not a mailbox" not in s.reason:  # implicit parents hold no mail: nothing to report
            print(f"not synced: {shown(s.path)}: {shown(s.reason)}")
    for path, uid, size, reason in _skipped_rows(cfg, args.address):
        print(f"skipped message: folder={shown(path)} uid={uid} size={size}: {shown(reason)}")
    rate = res.copied / res.seconds if res.seconds else 0
    deleted = f"deleted {res.deleted}, " if res.deleted else ""
    print(f"{args.address}: copied {res.copied}, already present {res.present}, skipped {res.skipped}, {deleted}"
          f"{human_bytes(res.bytes)} in {res.seconds:.1f}s ({rate:.0f} msg/s, "
          f"{human_bytes(res.bytes / res.seconds if res.seconds else 0)}/s)")
    return EXIT_OK if res.complete else EXIT_INCOMPLETE


def cmd_remap(cfg, args) -> int:
    from ..config import UnknownDomain
    from ..errors import MailsyncError
    from ..store import Store
    from ..sync.remap import remap
    from ..text import shown
    try:
        domain = cfg.domain_for(args.address)
    except (UnknownDomain, ValueError) as e:
        print(f"mailsyncctl: {e}", file=sys.stderr)
        return EXIT_ERROR
    password = None
    if domain.target.auth == "same":
        password = _password(cfg, args)
        if password is None:
            return EXIT_ERROR
    store = Store.in_state_dir(cfg.state_dir)
    try:
        pending = [c for c in store.mapping_changes(args.address) if args.folder in (None, c[0])]
        if not pending:
            what = f"folder {shown(args.folder)} of " if args.folder else ""
            print(f"mailsyncctl: no mapping change pending for {what}{shown(args.address)} "
                  "(a sync pass records them)", file=sys.stderr)
            return EXIT_ERROR
        done = remap(domain, args.address, password, store, args.folder)
    except MailsyncError as e:
        print(f"mailsyncctl: remap of {shown(args.address)} failed: {shown(str(e))}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        store.close()
    for r in done:
        print(f"remapped: folder={shown(r.path)} {shown(r.old)} -> {shown(r.new)}: moved {r.moved}"
              + (f", {r.missing} no longer on the target" if r.missing else ""))
    return EXIT_OK


def _skipped_rows(cfg, address):
    from ..store import Store
    store = Store.in_state_dir(cfg.state_dir)
    try:
        return store.skipped(address)
    finally:
        store.close()


def cmd_report(cfg, args) -> int:
    from ..store import Store
    from ..text import shown
    from .render import deletion_lines, report_table
    store = Store.in_state_dir(cfg.state_dir)
    try:
        acct = store.account(args.address)
        if acct is None:
            print(f"mailsyncctl: no record of {shown(args.address)} in {store.path}", file=sys.stderr)
            return EXIT_ERROR
        reports = store.reports(args.address)
        last = store.last_pass(args.address)
        skipped = store.skipped(args.address)
        changes = store.mapping_changes(args.address)
    finally:
        store.close()
    if args.csv:   # escaped too: a CSV is as often read on the terminal as in a spreadsheet
        w = csv.writer(sys.stdout)
        w.writerow(["folder", "target", "source_count", "target_count", "copied", "present", "skipped",
                    "bytes", "seconds", "error", "deleted", "deletions_held", "already_there"])
        for r in reports:
            w.writerow([shown(r.path), shown(r.target_name), r.source_count, r.target_count, r.copied, r.present,
                        r.skipped, r.bytes, r.seconds, shown(r.error or ""), r.deleted, shown(r.held or ""),
                        r.already_there])
        return EXIT_OK
    print(f"account {shown(args.address)}: phase={acct['phase']}" + (
        f" error={shown(acct['last_error'])}" if acct["last_error"] else ""))
    if last:
        import time
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["started"]))
        print(f"last pass: {when}, ok={bool(last['ok'])}, copied={last['copied']}, present={last['present']},"
              f" skipped={last['skipped']}" + (f", deleted={last['deleted']}" if last["deleted"] else ""))
    print(report_table(reports))
    for line in deletion_lines(reports):
        print(line)
    for path, uid, size, reason in skipped:
        print(f"skipped message: folder={shown(path)} uid={uid} size={size}: {shown(reason)}")
    for path, kept, would_be in changes:
        print(f"mapping_changed: folder={shown(path)} kept={shown(kept)} would_be={shown(would_be)} "
              f"(mailsyncctl remap {shown(args.address)} --folder {shown(path)} applies it)")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
