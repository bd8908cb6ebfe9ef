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
    # One row per lane: a large folder may be copied by several connections at once, each its own batch.
    def begin_batch(self, account: str, path: str, inflight: Inflight, lane: int = 0) -> None:
        items = [[i.key, i.size, i.fingerprint.hex(), list(i.flags)] for i in inflight.items]
        with self._tx() as c:
            c.execute(upsert("inflight", "account, path, lane, target_name, target_uidvalidity, target_uidnext, items",
                             "account, path, lane"),
                      (account, path, lane, inflight.target_name, inflight.target_uidvalidity,
                       inflight.target_uidnext, json.dumps(items)))

    def inflight(self, account: str, path: str) -> Inflight | None:
        """Lane 0's batch in flight (POP3 has no other)."""
        found = self.inflights(account, path, lane=0)
        return found[0] if found else None

    def inflights(self, account: str, path: str, lane: int | None = None) -> list[Inflight]:
        """The folder's batches in flight, every lane's (or ``lane``'s), lowest lane first."""
        q = "SELECT target_name, target_uidvalidity, target_uidnext, items FROM inflight WHERE account=? AND path=?"
        args: tuple = (account, path)
        if lane is not None:
            q += " AND lane=?"
            args += (lane,)
        out = []
        for row in self._conn().execute(q + " ORDER BY lane", args).fetchall():
            # a POP3 batch journalled before schema 11 has no flags
            items = tuple(InflightItem(k, s, bytes.fromhex(fp), tuple(f[0]) if f else ())
                          for k, s, fp, *f in json.loads(row[3]))
            out.append(Inflight(row[0], row[1], row[2], items))
        return out

    def commit_batch(self, account: str, path: str, uidvalidity: int, rows: Iterable[MapRow],
                     skipped: Iterable[tuple[int, int, str]], last_uid: int | None, lane: int | None = 0) -> None:
        """Record what landed, what was skipped, advance the mark and clear the lane's in-flight record
        (``lane`` None: every lane's, as a recovery does): atomically."""
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
            if lane is None:
                c.execute("DELETE FROM inflight WHERE account=? AND path=?", (account, path))
            else:
                c.execute("DELETE FROM inflight WHERE account=? AND path=? AND lane=?", (account, path, lane))

    def mapped_target_uids(self, account: str, path: str, target_uidvalidity: int, above: int) -> set[int]:
        """The target UIDs above ``above`` that the folder's UID map holds (batches committed)."""
        return {r[0] for r in self._conn().execute(
            "SELECT target_uid FROM messages WHERE account=? AND path=? AND target_uidvalidity=? AND target_uid>?",
            (account, path, target_uidvalidity, above))}

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
