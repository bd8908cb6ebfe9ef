"""`mailsyncctl import`: accounts from a CSV, all or nothing."""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from ..text import shown

EXIT_OK, EXIT_ERROR = 0, 1

DESCRIPTION = """\
Import accounts from a CSV exported from a spreadsheet: columns target (new address), source (old
address) and optionally password (the OLD password), with English headers 'target,source,password'
or '搬家账号,待搬家账号,待搬家账号密码'. UTF-8 (with or without BOM) or GB18030/GBK; comma, semicolon
or tab. Every row is checked first and every problem is listed with its row and column: the import
is all or nothing. Rows with a password start syncing at once (plan import); rows without wait for
the user's first login through the front door (plan login). Importing the same file again changes
nothing; a new password replaces the stored one. Passwords are stored encrypted and never printed."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "import", help="add accounts from a CSV (with old passwords, or without: they start at first login)",
        description=DESCRIPTION)
    p.add_argument("csv", metavar="CSV", help="the file; '-' reads stdin")
    p.add_argument("--domain", metavar="D", help="only accept rows whose target is in domain D")
    p.add_argument("--dry-run", action="store_true", help="check everything, change nothing")
    p.add_argument("--verify", action="store_true",
                   help="log in to the old server for every row with a password (within the per-host "
                        "connection limits) and list the rows that fail; nothing is imported if any fails")
    p.add_argument("--allow-merge", action="store_true", help="allow two old mailboxes onto one new address")


def cmd_import(cfg, args) -> int:
    from ..importer import MAX_ERRORS_SHOWN, ImportError_, parse
    from ..store import Store
    from ..vault import Vault, VaultError

    t0 = time.monotonic()
    try:
        if args.csv == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(args.csv, "rb") as f:
                data = f.read()
    except OSError as e:
        print(f"mailsyncctl: cannot read {args.csv}: {e.strerror}", file=sys.stderr)
        return EXIT_ERROR
    try:
        parsed = parse(data, cfg, domain=args.domain, allow_merge=args.allow_merge)
    except ImportError_ as e:
        print(f"mailsyncctl: {args.csv}: {e}; nothing imported", file=sys.stderr)
        return EXIT_ERROR
    if parsed.errors:
        n = len(parsed.errors)
        print(f"mailsyncctl: {args.csv}: {n} problem{'s' if n != 1 else ''} in {n + len(parsed.rows)} rows; "
              "nothing imported:", file=sys.stderr)
        for err in parsed.errors[:MAX_ERRORS_SHOWN]:
            print(f"  {err}", file=sys.stderr)
        if n > MAX_ERRORS_SHOWN:
            print(f"  ... and {n - MAX_ERRORS_SHOWN} more", file=sys.stderr)
        return EXIT_ERROR
    rows = parsed.rows
    store = Store.open(cfg)
    try:
        vault = Vault.open(cfg.state_dir, store)
        existing = {a["address"]: a for a in store.accounts()}
        stored = vault.source_passwords() if existing else {}    # one query, not one a row
        kinds: Counter = Counter()
        items = []
        for r in rows:
            old = existing.get(r.target)
            blob = None
            if old is None:
                kinds["new"] += 1
            elif (old["source_address"] or old["address"]) != r.source:
                kinds["source changed"] += 1
            if r.password:
                current = stored.get(r.target) if old is not None else None
                if current != r.password:
                    blob = vault.seal(r.target, r.password)
                    if old is not None:
                        kinds["password replaced" if current is not None else "password added"] += 1
            if old is not None and blob is None:
                kinds["unchanged"] += 1
            items.append((r.target, r.domain, r.plan, r.source, blob))
        if args.verify:
            failed = _verify(cfg, rows)
            if failed:
                print(f"mailsyncctl: {len(failed)} of {sum(1 for r in rows if r.password)} logins failed at the "
                      "old server; nothing imported:", file=sys.stderr)
                for line in failed:
                    print(f"  {shown(line)}", file=sys.stderr)     # holds the old server's reply
                return EXIT_ERROR
        with_pw = sum(1 for r in rows if r.password)
        summary = (f"{len(rows)} accounts ({with_pw} with a password: plan import; {len(rows) - with_pw} without: "
                   f"wait for the first login)")
        detail = ", ".join(f"{v} {k}" for k, v in sorted(kinds.items()))
        if args.dry_run:
            print(f"dry run: {args.csv} ({parsed.encoding}, {_delim(parsed.delimiter)}, {parsed.language} headers) "
                  f"is valid: {summary}; {detail}; nothing changed")
            return EXIT_OK
        store.import_accounts(items)
    except VaultError as e:
        print(f"mailsyncctl: {e}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        store.close()
    print(f"imported {summary} from {args.csv} in {time.monotonic() - t0:.1f}s; {detail}")
    return EXIT_OK


def _delim(d: str) -> str:
    return {",": "comma", ";": "semicolon", "\t": "tab"}[d]


def _verify(cfg, rows) -> list[str]:
    """Log in at the source for each row with a password, at most max_connections at once per host."""
    from ..auth import source
    from ..sync.progress import Progress
    from .render import ProgressView

    todo = [r for r in rows if r.password]
    sems: dict[str, threading.Semaphore] = {}
    for r in todo:
        ep = cfg.domains[r.domain].source
        sems.setdefault(f"{ep.host}:{ep.port}", threading.Semaphore(ep.max_connections))
    progress = Progress(ProgressView(sys.stderr))
    progress.add_total(len(todo))
    failed: list[tuple[int, str]] = []
    lock = threading.Lock()

    def one(r) -> None:
        ep = cfg.domains[r.domain].source
        with sems[f"{ep.host}:{ep.port}"]:
            result, why = source.check(ep, r.source, r.password)
        if result != source.OK:
            with lock:
                failed.append((r.line, f"row {r.line} ({r.source}): {'wrong password' if result == source.WRONG else 'unavailable'}: {why}"))
        progress.advance("", 1, 0)

    workers = max(1, min(64, sum(cfg.domains[d].source.max_connections for d in {r.domain for r in todo}) or 1))
    with ThreadPoolExecutor(max_workers=workers) as ex:
        list(ex.map(one, todo))
    progress.listener.close(progress)
    return [text for _, text in sorted(failed)]
