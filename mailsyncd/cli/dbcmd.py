"""`mailsyncctl migrate-db`, `export-db`, `import-db`: the store's schema and moving a node's state."""

from __future__ import annotations

import os
import sys

from .common import EXIT_ERROR, EXIT_OK


def add_parsers(sub) -> None:
    sub.add_parser("migrate-db", help="bring the database's schema up to this mailsyncd's version",
                   description="With database: (PostgreSQL) nodes refuse to start against an older or newer "
                               "schema; run this once, from one node, after upgrading mailsyncd (several at once "
                               "are serialized by an advisory lock). SQLite in state_dir migrates by itself.")
    p = sub.add_parser("export-db", help="copy the whole store (every table) into a new SQLite file",
                       description="Every account, UID map row, sealed password, cutover and pass record, into "
                                   "a new SQLite file that import-db reads. Stop the daemon first: the copy is "
                                   "taken table by table.")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to create (must not exist)")
    p = sub.add_parser("import-db", help="fill the configured (empty) PostgreSQL database from an SQLite store",
                       description="FILE is an export-db file or a node's state_dir/mailsyncd.sqlite3 (daemon "
                                   "stopped; it is brought to this version's schema first). The passwords stay "
                                   "sealed: every node needs the vault key of the node they came from.")
    p.add_argument("file", metavar="FILE")


def cmd_migrate_db(cfg, args) -> int:
    from ..store import Store
    store = Store.open(cfg, migrate=True)
    try:
        before, after = getattr(store, "migrated", (None, None))
        if before is None:
            print(f"{store.path}: SQLite, migrated as it opens")
        elif before == after:
            print(f"{store.path}: schema version {after}, up to date")
        else:
            print(f"{store.path}: schema version {before} -> {after}")
    finally:
        store.close()
    return EXIT_OK


def cmd_export_db(cfg, args) -> int:
    from ..store import Store
    from ..store.transfer import copy_store
    if os.path.lexists(args.out):
        print(f"mailsyncctl: export-db: {args.out} exists; give a new file", file=sys.stderr)
        return EXIT_ERROR
    src = Store.open(cfg)
    try:
        dst = Store(args.out)
        try:
            _said(copy_store(src, dst), src.path, dst.path)
        finally:
            dst.close()
    finally:
        src.close()
    return EXIT_OK


def cmd_import_db(cfg, args) -> int:
    from ..store import Store
    from ..store.transfer import copy_store
    if cfg.database.url is None:
        print("mailsyncctl: import-db fills the PostgreSQL database named by database: in the config; this "
              "config keeps its state in SQLite in state_dir", file=sys.stderr)
        return EXIT_ERROR
    if not os.path.isfile(args.file):
        print(f"mailsyncctl: import-db: {args.file}: no such file", file=sys.stderr)
        return EXIT_ERROR
    src = Store(args.file)
    try:
        dst = Store.open(cfg)
        try:
            _said(copy_store(src, dst), src.path, dst.path)
        finally:
            dst.close()
    finally:
        src.close()
    return EXIT_OK


def _said(counts: dict[str, int], src: str, dst: str) -> None:
    print(f"{src} -> {dst}: " + ", ".join(f"{t} {n}" for t, n in sorted(counts.items())))
