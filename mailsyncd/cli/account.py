"""``mailsyncctl sync``, ``report`` and ``remap``: one account, in the foreground."""

from __future__ import annotations

import argparse
import csv
import sys
import threading
import time
from contextlib import closing

from .common import EPILOG, EXIT_BUSY, EXIT_ERROR, EXIT_INCOMPLETE, EXIT_OK, account_domain, account_password


def add_parsers(sub) -> None:
    p = sub.add_parser("sync", help="run one sync pass for one account in the foreground",
                       description="Copy new messages and flag changes from the account's old server to the "
                                   "new one, then print a per-folder report. A one-off pass does not change what "
                                   "the daemon thinks of the account unless asked: an unknown address needs --add, "
                                   "and a known account's phase changes only with --record. The pass holds the account's "
                                   "lease, as a daemon's pass does: while a daemon (any node sharing the database) "
                                   "has a pass of the account under way, it is refused with exit code 6 and the "
                                   "node holding the lease; its connections count in the source host's "
                                   "max_connections shared with the daemons.", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("address", help="the user's email address; its domain selects the config section")
    p.add_argument("--password-file", metavar="FILE",
                   help="file holding the user's OLD (source) password on its first line; '-' reads stdin")
    p.add_argument("--progress", choices=["auto", "bar", "lines", "none"], default="auto",
                   help="progress display on stderr (default: a bar on a terminal, lines otherwise)")
    p.add_argument("--add", action="store_true",
                   help="the account may be new: create it, its phase from this pass (without it, an address the "
                        "store does not know is refused, so a typo leaves nothing behind)")
    p.add_argument("--record", action="store_true",
                   help="record the outcome as the account's phase (failed or in sync), as a daemon pass does; "
                        "without it the pass is logged and shown by `report`, but status and the daemon's "
                        "schedule keep the phase they had")

    p = sub.add_parser("report", help="the migration report: every account (or one), per folder, source vs target",
                       description="Without ADDRESS: the migration report to hand to the customer, for every account "
                                   "(or --domain's): per account and per folder, messages and bytes at the source and "
                                   "on the new server, every skipped or altered message with the server's words, and "
                                   "totals; as text, --csv or a printable --html page (the dashboard's /admin/report "
                                   "shows the same). With ADDRESS: that account's last pass in detail (--html: its "
                                   "part of the migration report).")
    p.add_argument("address", nargs="?", help="one account (default: all)")
    p.add_argument("--domain", metavar="D", help="only accounts of this domain")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--csv", action="store_true", help="CSV, for a spreadsheet")
    g.add_argument("--html", action="store_true", help="a standalone printable HTML page")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")

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


def cmd_sync(cfg, args) -> int:
    from ..errors import MailsyncError
    from ..store import Refused, Store
    from ..sync.account import AccountSync
    from ..sync.progress import Progress
    from ..text import shown
    from .render import ProgressView, human_bytes, deletion_lines, report_table
    from .synclease import OneOffLease

    domain = account_domain(cfg, args.address)
    if domain is None:
        return EXIT_ERROR
    with closing(Store.open(cfg)) as store:
        known = store.account(args.address) is not None
    if not known and not args.add:
            print(f"mailsyncctl: no account {shown(args.address)} in {cfg.state_dir}; check the address, or pass "
                  "--add to create it with this pass", file=sys.stderr)
            return EXIT_ERROR
    password = account_password(cfg, args)
    if password is None:
        return EXIT_ERROR
    store = Store.open(cfg)
    lease = OneOffLease(store, args.address, domain.source, domain.sync.connections, cfg.node)
    try:
        got = lease.claim(slot_wait=cfg.node.lease_seconds)
        if isinstance(got, Refused):
            print(f"mailsyncctl: {shown(args.address)}: {_refusal(got)}; nothing was done", file=sys.stderr)
            return EXIT_BUSY
        view = None
        if args.progress != "none":
            tty = {"bar": True, "lines": False}.get(args.progress)
            view = ProgressView(sys.stderr, tty=tty)
        progress = Progress(view)
        stop = threading.Event()
        lease.keep(stop)
        try:
            res = AccountSync(domain, args.address, password, store.fenced(got), progress=progress, stop=stop,
                              connections=got.connections,
                              record_phase=args.record or not known).run()   # a new account has no other view
        except MailsyncError as e:
            res = None
            err = str(e)
        finally:
            if view:
                view.close(progress)
    finally:
        lease.release()
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
    skipped, altered = _skipped_rows(cfg, args.address)
    for path, uid, size, reason in skipped:
        print(f"skipped message: folder={shown(path)} uid={uid} size={size}: {shown(reason)}")
    for path, uid, size, reason in altered:
        print(f"altered message: folder={shown(path)} uid={uid} size={size}: {shown(reason)}")
    rate = res.copied / res.seconds if res.seconds else 0
    deleted = f"deleted {res.deleted}, " if res.deleted else ""
    deleted += f"altered by the target {res.altered}, " if res.altered else ""
    print(f"{args.address}: copied {res.copied}, already present {res.present}, skipped {res.skipped}, {deleted}"
          f"{human_bytes(res.bytes)} in {res.seconds:.1f}s ({rate:.0f} msg/s, "
          f"{human_bytes(res.bytes / res.seconds if res.seconds else 0)}/s)")
    return EXIT_OK if res.complete else EXIT_INCOMPLETE


def _refusal(r) -> str:
    if not r.holder:
        return r.why
    until = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(r.retry_at))
    return (f"node {r.holder} is syncing it now (it holds the account's lease until {until}, in "
            f"{max(0.0, r.retry_at - time.time()):.0f}s, renewed while its pass runs); try again when that pass "
            "has ended (mailsyncctl status --user ADDRESS)")


def cmd_remap(cfg, args) -> int:
    from ..errors import MailsyncError
    from ..store import Store
    from ..sync.remap import remap
    from ..text import shown
    domain = account_domain(cfg, args.address)
    if domain is None:
        return EXIT_ERROR
    password = None
    if domain.target.auth == "same":
        password = account_password(cfg, args)
        if password is None:
            return EXIT_ERROR
    store = Store.open(cfg)
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
    store = Store.open(cfg)
    try:
        return store.skipped(address), store.altered(address)
    finally:
        store.close()


def cmd_report(cfg, args) -> int:
    if args.address is None or args.html or args.domain or args.output:
        return _migration_report(cfg, args)
    return _account_report(cfg, args)


def _migration_report(cfg, args) -> int:
    import io

    from .. import migration_report
    from ..status import size_text
    from ..store import Store
    from ..text import shown
    domain = args.domain.lower() if args.domain else None
    if domain is not None and domain not in cfg.domains:
        print(f"mailsyncctl: no domain {shown(domain)!r} in the config (known: {', '.join(sorted(cfg.domains))})",
              file=sys.stderr)
        return EXIT_ERROR
    with closing(Store.open(cfg)) as store:
        if args.address is not None and store.account(args.address) is None:
            print(f"mailsyncctl: no record of {shown(args.address)} in {store.path}", file=sys.stderr)
            return EXIT_ERROR
        model = migration_report.build(store, domain, address=args.address)
    out = io.StringIO()
    if args.csv:
        migration_report.write_csv(model, out)
    elif args.html:
        out.write(migration_report.html_document(model))
    else:
        t = model["totals"]
        for a in model["accounts"]:
            at = a["totals"]
            out.write(f"{shown(a['account'])}: {at['target_messages']} of {at['source_messages']} messages, "
                      f"{size_text(at['target_bytes'])} of {size_text(at['source_bytes'])}, {at['skipped']} skipped, "
                      f"{at['altered']} altered ({a['phase']})\n")
        out.write(f"total: {t['accounts']} accounts, {t['target_messages']} of {t['source_messages']} messages, "
                  f"{size_text(t['target_bytes'])} of {size_text(t['source_bytes'])}, {t['skipped']} skipped, "
                  f"{t['altered']} altered\n")
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(out.getvalue())
        except OSError as e:
            print(f"mailsyncctl: cannot write {args.output}: {e.strerror}", file=sys.stderr)
            return EXIT_ERROR
    else:
        sys.stdout.write(out.getvalue())
    return EXIT_OK


def _account_report(cfg, args) -> int:
    from ..store import Store
    from ..text import shown
    from .render import deletion_lines, report_table
    store = Store.open(cfg)
    try:
        acct = store.account(args.address)
        if acct is None:
            print(f"mailsyncctl: no record of {shown(args.address)} in {store.path}", file=sys.stderr)
            return EXIT_ERROR
        reports = store.reports(args.address)
        last = store.last_pass(args.address)
        skipped = store.skipped(args.address)
        altered = store.altered(args.address)
        not_synced = store.skipped_folders(args.address)
        changes = store.mapping_changes(args.address)
    finally:
        store.close()
    if args.csv:   # escaped too: a CSV is as often read on the terminal as in a spreadsheet
        w = csv.writer(sys.stdout)
        w.writerow(["folder", "target", "source_count", "target_count", "copied", "present", "skipped",
                    "bytes", "seconds", "error", "deleted", "deletions_held", "already_there", "altered"])
        for r in reports:
            w.writerow([shown(r.path), shown(r.target_name), r.source_count, r.target_count, r.copied, r.present,
                        r.skipped, r.bytes, r.seconds, shown(r.error or ""), r.deleted, shown(r.held or ""),
                        r.already_there, r.altered])
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
    for path, reason in not_synced:
        print(f"not synced: {shown(path)}: {shown(reason)}")
    for path, uid, size, reason in skipped:
        print(f"skipped message: folder={shown(path)} uid={uid} size={size}: {shown(reason)}")
    for path, uid, size, reason in altered:
        print(f"altered message: folder={shown(path)} uid={uid} size={size}: {shown(reason)}")
    for path, kept, would_be in changes:
        print(f"mapping_changed: folder={shown(path)} kept={shown(kept)} would_be={shown(would_be)} "
              f"(mailsyncctl remap {shown(args.address)} --folder {shown(path)} applies it)")
    return EXIT_OK
