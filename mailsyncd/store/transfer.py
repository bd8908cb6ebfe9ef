"""Copying a whole store to another (``mailsyncctl export-db`` / ``import-db``): every table, row for row.

Both ends are at this mailsyncd's schema version (a store migrates, or refuses, as it opens), so the
tables and their columns are the same; the copy is one transaction on the receiving end.
"""

from __future__ import annotations

from .base import StoreError

CHUNK = 2000
_SKIP_META = {"schema_version"}     # each end has its own, equal by the time they are open
_DERIVED = {"account_totals"}       # kept by the receiving end's triggers as the rows they count arrive


def table_rows(store, table: str, columns: list[str]):
    """Every row of ``table`` (columns in the given order), in a stable order."""
    cols = ", ".join(columns)
    return store._conn().execute(f"SELECT {cols} FROM {table} ORDER BY {cols}")


def copy_store(src, dst) -> dict[str, int]:
    """Every row of ``src`` into ``dst``, which must hold no account yet.  Returns {table: rows copied}."""
    counts: dict[str, int] = {}
    with dst._tx() as c:
        if c.execute("SELECT 1 FROM accounts LIMIT 1").fetchone() is not None:
            raise StoreError(f"{dst.path} already holds accounts: import-db only fills an empty database")
        src_tables = src._columns(src._conn())
        dst_tables = dst._columns(c)
        for table in sorted(set(src_tables) - _DERIVED):
            if table not in dst_tables:
                raise StoreError(f"{dst.path} has no table {table}: are both at schema version the same?")
            columns = sorted(src_tables[table])
            if set(columns) != dst_tables[table]:
                raise StoreError(f"{dst.path}: table {table} has other columns than the source's")
            sql = (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({','.join('?' * len(columns))})")
            if table == "meta":
                sql += " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            rows = table_rows(src, table, columns)
            n, chunk = 0, []
            for row in rows:
                if table == "meta" and row[columns.index("key")] in _SKIP_META:
                    continue
                chunk.append(tuple(bytes(v) if isinstance(v, memoryview) else v for v in row))
                if len(chunk) >= CHUNK:
                    c.executemany(sql, chunk)
                    n, chunk = n + len(chunk), []
            if chunk:
                c.executemany(sql, chunk)
                n += len(chunk)
            counts[table] = n
        dst._after_import(c)
    return counts
