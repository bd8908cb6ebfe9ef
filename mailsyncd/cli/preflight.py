"""`mailsyncctl preflight`: before a migration, what each account holds and what would stop its copy."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

from .common import EPILOG, EXIT_ERROR, EXIT_INCOMPLETE, EXIT_OK

DESCRIPTION = """\
Check every account before its migration, reading only: does the old password work at the old server
(and the login at the new one), which folders would be copied, messages and bytes in each (STATUS, with
SIZE where the server offers STATUS=SIZE; else EXAMINE and FETCH RFC822.SIZE), how many messages are
larger than the copy takes (sync.max_message_size, lowered to the new server's APPENDLIMIT), and how
long the first copy would take: at the throughput measured by earlier passes in the store, else at 2
MiB/s per account, with scheduler.max_accounts accounts at once. Accounts come from CSV (the import
format; rows without a password use the stored one) or from the store with their stored passwords.
At most --connections accounts are checked at once, never more than a source's
source.max_connections (a running daemon uses that budget too). Nothing is written on either
server; passwords are never printed. Exit 0: all clear; 1: a login failed or a server could not be
read; 3: some messages or folders would be skipped."""


def add_parser(sub) -> None:
    p = sub.add_parser("preflight", help="before migrating: credentials, folders, sizes, too-large messages, "
                                         "estimated duration (reads only)",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv", metavar="CSV", nargs="?", help="accounts to check (the import format; '-' reads stdin); "
                                                         "default: the accounts in the store")
    p.add_argument("--domain", metavar="D", help="only accounts of this domain")
    p.add_argument("--connections", type=int, default=2, metavar="N",
                   help="accounts checked at once (default 2; each source host: at most its source.max_connections)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--csv", dest="as_csv", action="store_true", help="one CSV row per folder on stdout")
    g.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def _accounts(cfg, args) -> list[tuple[str, str | None, str | None, str]] | None:
    """(address, source login, password or None, domain); None once the problem is said on stderr."""
    from ..importer import ImportError_, parse
    from ..store import Store
    from ..vault import Vault, VaultError
    rows = None
    if args.csv:
        try:
            if args.csv == "-":
                data = sys.stdin.buffer.read()
            else:
                with open(args.csv, "rb") as f:
                    data = f.read()
            parsed = parse(data, cfg, domain=args.domain)
        except OSError as e:
            print(f"mailsyncctl: cannot read {args.csv}: {e.strerror}", file=sys.stderr)
            return None
        except ImportError_ as e:
            print(f"mailsyncctl: {args.csv}: {e}", file=sys.stderr)
            return None
        if parsed.errors:
            print(f"mailsyncctl: {args.csv}: {len(parsed.errors)} problems:", file=sys.stderr)
            for err in parsed.errors[:50]:
                print(f"  {err}", file=sys.stderr)
            return None
        rows = [(r.target, r.source, r.password or None, r.domain) for r in parsed.rows]
    if args.domain and args.domain.lower() not in cfg.domains:
        print(f"mailsyncctl: no domain {args.domain!r} in the config (known: {', '.join(sorted(cfg.domains))})",
              file=sys.stderr)
        return None
    store = Store.open(cfg)
    try:
        vault = Vault.open(cfg.state_dir, store)
        if rows is None:
            rows = [(a["address"], a["source_address"], None, a["domain"])
                    for a in store.accounts(args.domain.lower() if args.domain else None) if a["domain"] in cfg.domains]
        return [(a, s, pw if pw is not None else vault.source_password(a), d) for a, s, pw, d in rows]
    except VaultError as e:
        print(f"mailsyncctl: {e}", file=sys.stderr)
        return None
    finally:
        store.close()


def cmd_preflight(cfg, args) -> int:
    from .. import preflight
    from ..store import Store
    if args.connections < 1:
        print("mailsyncctl: --connections must be at least 1", file=sys.stderr)
        return EXIT_ERROR
    todo = _accounts(cfg, args)
    if todo is None:
        return EXIT_ERROR
    if not todo:
        print("mailsyncctl: no accounts to check (import some, or give a CSV)", file=sys.stderr)
        return EXIT_ERROR
    sems: dict[str, threading.Semaphore] = {}
    for _, _, _, d in todo:
        ep = cfg.domains[d].source
        sems.setdefault(f"{ep.host}:{ep.port}", threading.Semaphore(min(args.connections, ep.max_connections)))
    lock = threading.Lock()
    done = [0]

    def one(item) -> preflight.AccountCheck:
        address, source, password, d = item
        domain = cfg.domains[d]
        if password is None:
            res = preflight.AccountCheck(address, source_login="no password: give it in the CSV, or import it")
        else:
            with sems[f"{domain.source.host}:{domain.source.port}"]:
                res = preflight.check_account(domain, address, password, source_address=source)
        with lock:
            done[0] += 1
            print(f"preflight: {done[0]}/{len(todo)} {address}: {res.source_login.split(':')[0]}", file=sys.stderr,
                  flush=True)
        return res

    with ThreadPoolExecutor(max_workers=min(args.connections, len(todo))) as ex:
        results = list(ex.map(one, todo))
    with closing(Store.open(cfg)) as store:
        measured = store.copy_rate()
    est = preflight.estimate(sum(r.bytes for r in results), max((r.bytes for r in results), default=0),
                             measured=measured, parallel=min(cfg.scheduler.max_accounts, len(results)))
    if args.json:
        json.dump({"schema": 1, "accounts": [r.to_dict() for r in results],
                   "total": {"accounts": len(results), "messages": sum(r.messages for r in results),
                             "bytes": sum(r.bytes for r in results), "too_large": sum(r.too_large for r in results)},
                   "estimate": {"seconds": round(est.seconds), "bytes_per_second": round(est.bytes_per_second),
                                "measured": est.measured, "accounts_at_once": est.parallel}},
                  sys.stdout, ensure_ascii=False, indent=1)
        print()
    elif args.as_csv:
        _write_csv(results)
    else:
        _print_table(results, est)
    if any(not r.ok or r.target_login != "ok" for r in results):
        return EXIT_ERROR
    return EXIT_INCOMPLETE if any(r.too_large or r.skipped_folders for r in results) else EXIT_OK


def _write_csv(results) -> None:
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(["account", "source_login", "target_login", "folder", "messages", "bytes", "too_large",
                "largest", "limit"])
    for r in results:
        if not r.folders:
            w.writerow([r.address, r.source_login, r.target_login, "", "", "", "", "", r.limit])
        for f in r.folders:
            w.writerow([r.address, r.source_login, r.target_login, f.path, f.messages, f.bytes, f.too_large,
                        f.largest or "", r.limit])


def _print_table(results, est) -> None:
    from ..status import size_text
    from ..text import shown
    from ..web.pages.format import duration
    for r in results:
        head = f"{r.address}: source login {shown(r.source_login, 300)}"
        if r.target_login != "ok":
            head += f"; target login {shown(r.target_login, 300)}"
        print(head)
        if r.folders:
            width = max(len(f.path) for f in r.folders)
            for f in r.folders:
                over = f"  {f.too_large} over {size_text(r.limit)}" if f.too_large else ""
                print(f"  {shown(f.path, 120):<{width}}  {f.messages:>8} msgs  {size_text(f.bytes):>10}{over}")
            print(f"  {'total':<{width}}  {r.messages:>8} msgs  {size_text(r.bytes):>10}"
                  f"  ({r.size_from}; largest copied: {size_text(r.limit)}"
                  f"{', APPENDLIMIT ' + size_text(r.appendlimit) if r.appendlimit else ''})")
        for s in r.skipped_folders:
            print(f"  not copied: {shown(s, 300)}")
    ok = sum(1 for r in results if r.ok)
    print(f"\n{len(results)} accounts ({ok} with a working login), {sum(r.messages for r in results)} messages, "
          f"{size_text(sum(r.bytes for r in results))}, {sum(r.too_large for r in results)} too large to copy")
    how = "measured by earlier passes" if est.measured else "no copy measured yet: the default"
    print(f"estimated first copy: {duration(est.seconds, 'en')} at {size_text(est.bytes_per_second)}/s per "
          f"account ({how}), {est.parallel} account{'s' if est.parallel != 1 else ''} at once "
          f"(scheduler.max_accounts)")
