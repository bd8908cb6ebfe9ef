"""Per-folder reports and per-account passes."""

from __future__ import annotations

import time

from .base import upsert
from .records import FolderReport


class ReportsMixin:
    # -- reports -------------------------------------------------------------
    def save_report(self, account: str, r: FolderReport) -> None:
        with self._tx() as c:
            c.execute(upsert("reports", "account, path, target_name, source_count, target_count, copied, present,"
                             " skipped, bytes, seconds, error, finished, deleted, held, already_there, altered",
                             "account, path"),
                      (account, r.path, r.target_name, r.source_count, r.target_count, r.copied,
                       r.present, r.skipped, r.bytes, r.seconds, r.error, r.finished, r.deleted, r.held,
                       r.already_there, r.altered))

    def reports(self, account: str) -> list[FolderReport]:
        rows = self._conn().execute(
            "SELECT path, target_name, source_count, target_count, copied, present, skipped, bytes,"
            " seconds, error, finished, deleted, held, already_there, altered FROM reports WHERE account=?"
            " ORDER BY path",
            (account,)).fetchall()
        return [FolderReport(*r) for r in rows]

    def start_pass(self, account: str) -> int:
        lease = getattr(self, "_fence", None)       # a pass under a lease (store/leases.py) records it
        with self._tx() as c:
            return c.execute("INSERT INTO passes (account, started, node, token) VALUES (?,?,?,?) RETURNING id",
                             (account, time.time(), lease and lease.node, lease and lease.token)).fetchone()[0]

    def finish_pass(self, pass_id: int, *, ok: bool, copied: int, present: int, skipped: int,
                    nbytes: int, error: str | None, deleted: int = 0) -> None:
        with self._tx() as c:
            c.execute("UPDATE passes SET finished=?, ok=?, copied=?, present=?, skipped=?, bytes=?, error=?,"
                      " deleted=? WHERE id=?",
                      (time.time(), int(ok), copied, present, skipped, nbytes, error, deleted, pass_id))

    def passes(self, account: str, limit: int = 10) -> list[dict]:
        return self._dicts("SELECT started, finished, ok, copied, present, skipped, bytes, error FROM passes"
                           " WHERE account=? ORDER BY id DESC LIMIT ?", (account, limit))

    def copy_rate(self, *, min_bytes: int = 1 << 20, recent: int = 200) -> tuple[int, float] | None:
        """(bytes, seconds) of the recent finished passes that copied at least ``min_bytes`` (smaller
        ones measure the round trips, not the copy): the measured throughput of one account's pass."""
        rows = self._conn().execute("SELECT bytes, finished - started FROM passes WHERE finished IS NOT NULL"
                                    " AND bytes >= ? ORDER BY id DESC LIMIT ?", (min_bytes, recent)).fetchall()
        total, seconds = sum(r[0] for r in rows), sum(max(0.0, r[1]) for r in rows)
        return (total, seconds) if rows and seconds > 0 else None

    def last_pass(self, account: str) -> dict | None:
        rows = self._dicts("SELECT started, finished, ok, copied, present, skipped, bytes, error, deleted"
                           " FROM passes WHERE account=? ORDER BY id DESC LIMIT 1", (account,))
        return rows[0] if rows else None
