"""The in-flight journal (one for both engines, see sync/appender.py) and each engine's commit."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from .base import upsert
from .records import POP3_PATH, Inflight, InflightItem, MapRow, Pop3Row, flags_text

_MESSAGES = upsert("messages", "account, path, uidvalidity, uid, target_uidvalidity, target_uid, size, fingerprint,"
                   " flags", "account, path, uidvalidity, uid")
_SKIPPED = upsert("skipped", "account, path, uidvalidity, uid, size, reason, at", "account, path, uidvalidity, uid")


class BatchesMixin:
    # -- a batch in flight (either engine: POP3 under POP3_PATH) ----------------------
    def begin_batch(self, account: str, path: str, inflight: Inflight) -> None:
        items = [[i.key, i.size, i.fingerprint.hex(), list(i.flags)] for i in inflight.items]
        with self._tx() as c:
            c.execute(upsert("inflight", "account, path, target_name, target_uidvalidity, target_uidnext, items",
                             "account, path"),
                      (account, path, inflight.target_name, inflight.target_uidvalidity,
                       inflight.target_uidnext, json.dumps(items)))

    def inflight(self, account: str, path: str) -> Inflight | None:
        row = self._conn().execute(
            "SELECT target_name, target_uidvalidity, target_uidnext, items FROM inflight"
            " WHERE account=? AND path=?", (account, path)).fetchone()
        if row is None:
            return None
        # a POP3 batch journalled before schema 11 has no flags
        items = tuple(InflightItem(k, s, bytes.fromhex(fp), tuple(f[0]) if f else ())
                      for k, s, fp, *f in json.loads(row[3]))
        return Inflight(row[0], row[1], row[2], items)

    def commit_batch(self, account: str, path: str, uidvalidity: int, rows: Iterable[MapRow],
                     skipped: Iterable[tuple[int, int, str]], last_uid: int | None) -> None:
        """Record what landed, what was skipped, advance the mark and clear the in-flight record: atomically."""
        now = time.time()
        with self._tx() as c:
            c.executemany(
                _MESSAGES,
                [(account, path, uidvalidity, r.uid, r.target_uidvalidity, r.target_uid, r.size,
                  r.fingerprint, flags_text(r.flags)) for r in rows])
            c.executemany(
                _SKIPPED,
                [(account, path, uidvalidity, uid, size, reason, now) for uid, size, reason in skipped])
            if last_uid is not None:
                c.execute("UPDATE folders SET last_uid=? WHERE account=? AND path=? AND last_uid < ?",
                          (last_uid, account, path, last_uid))
            c.execute("DELETE FROM inflight WHERE account=? AND path=?", (account, path))

    def skipped(self, account: str, path: str | None = None) -> list[tuple[str, int, int, str]]:
        q = "SELECT path, uid, size, reason FROM skipped WHERE account=?"
        args: tuple = (account,)
        if path is not None:
            q += " AND path=?"
            args += (path,)
        return [tuple(r) for r in self._conn().execute(q + " ORDER BY path, uid", args)]

    def count_skipped(self, account: str, path: str, uidvalidity: int) -> int:
        return self._conn().execute(
            "SELECT count(*) FROM skipped WHERE account=? AND path=? AND uidvalidity=?",
            (account, path, uidvalidity)).fetchone()[0]

    # -- messages the target changed at APPEND ----------------------------------
    def record_altered(self, account: str, path: str, uidvalidity: int,
                       items: Iterable[tuple[int, int, str]]) -> None:
        """(uid, size, reason) of messages that landed changed: they stay mapped, and are listed apart."""
        now = time.time()
        with self._tx() as c:
            c.executemany(upsert("altered", "account, path, uidvalidity, uid, size, reason, at",
                                 "account, path, uidvalidity, uid"),
                          [(account, path, uidvalidity, uid, size, reason, now) for uid, size, reason in items])

    def altered(self, account: str) -> list[tuple[str, int, int, str]]:
        return [tuple(r) for r in self._conn().execute(
            "SELECT path, uid, size, reason FROM altered WHERE account=? ORDER BY path, uid", (account,))]

    def count_altered(self, account: str, path: str, uidvalidity: int) -> int:
        return self._conn().execute(
            "SELECT count(*) FROM altered WHERE account=? AND path=? AND uidvalidity=?",
            (account, path, uidvalidity)).fetchone()[0]

    # -- POP3 sources (sync/pop3.py) --------------------------------------------
    def pop3_rows(self, account: str, target_name: str) -> list[Pop3Row]:
        """Everything recorded for this account's POP3 INBOX in ``target_name``: copied and refused."""
        rows = self._conn().execute(
            "SELECT uidl, size, fingerprint, target_uidvalidity, target_uid, skipped, id FROM pop3_messages"
            " WHERE account=? AND target_name=? ORDER BY id", (account, target_name)).fetchall()
        return [Pop3Row(r[0], r[1], bytes(r[2]), r[3], r[4], r[5], r[6]) for r in rows]

    def pop3_commit_batch(self, account: str, target_name: str, rows: Iterable[Pop3Row],
                          claims: dict[int, str] | None = None) -> list[Pop3Row]:
        """Record what landed and what the target refused, give rows their current UIDL (``claims``:
        row id -> UIDL; for rows copied without one or under one the server no longer lists), and
        clear the in-flight record: atomically.

        Refused rows are also entered in the skipped table (path POP3_PATH, uid = the row's
        id) so that reports list them.  Returns the rows with their ids.
        """
        now = time.time()
        out = []
        with self._tx() as c:
            nxt = c.execute("SELECT coalesce(max(id), 0) + 1 FROM pop3_messages WHERE account=?",
                            (account,)).fetchone()[0]
            for r in rows:
                # a UIDL already recorded (a recovered batch that had been committed) stays as it is
                if c.execute("INSERT INTO pop3_messages (account, id, uidl, size, fingerprint, target_name,"
                             " target_uidvalidity, target_uid, skipped, at) VALUES (?,?,?,?,?,?,?,?,?,?)"
                             " ON CONFLICT DO NOTHING",
                             (account, nxt, r.uidl, r.size, r.fingerprint, target_name, r.target_uidvalidity,
                              r.target_uid, r.skipped, now)).rowcount == 0:
                    continue
                if r.skipped is not None:
                    c.execute(_SKIPPED,
                              (account, POP3_PATH, 0, nxt, r.size, r.skipped, now))
                out.append(Pop3Row(r.uidl, r.size, r.fingerprint, r.target_uidvalidity, r.target_uid,
                                   r.skipped, nxt))
                nxt += 1
            for rid, uidl in (claims or {}).items():
                c.execute("UPDATE pop3_messages SET uidl=? WHERE account=? AND id=?", (uidl, account, rid))
            c.execute("DELETE FROM inflight WHERE account=? AND path=?", (account, POP3_PATH))
        return out
