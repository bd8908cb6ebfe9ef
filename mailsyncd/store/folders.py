"""Folders, the UID map, recorded folder mappings, flags and deletions in flight."""

from __future__ import annotations

import time
from collections.abc import Iterable

from .base import upsert
from .batches import _MESSAGES
from .records import FolderState, MapRow, flags_text, flags_tuple


class FoldersMixin:
    # -- folders -----------------------------------------------------------
    def folder(self, account: str, path: str) -> FolderState | None:
        row = self._conn().execute(
            "SELECT path, source_name, target_name, uidvalidity, last_uid, uidnext, messages,"
            " highestmodseq, flags_checked FROM folders WHERE account=? AND path=?",
            (account, path)).fetchone()
        return FolderState(*row) if row else None

    def folders(self, account: str) -> dict[str, FolderState]:
        rows = self._conn().execute(
            "SELECT path, source_name, target_name, uidvalidity, last_uid, uidnext, messages,"
            " highestmodseq, flags_checked FROM folders WHERE account=?", (account,)).fetchall()
        return {r[0]: FolderState(*r) for r in rows}

    def set_source_sizes(self, account: str, sizes: dict[str, int]) -> None:
        with self._tx() as c:
            c.executemany("UPDATE folders SET size=? WHERE account=? AND path=?",
                          [(size, account, path) for path, size in sizes.items()])

    def save_folder(self, account: str, st: FolderState) -> None:
        with self._tx() as c:
            # an upsert, not INSERT OR REPLACE: that would drop the columns not named here (would_be)
            c.execute(
                "INSERT INTO folders (account, path, source_name, target_name, uidvalidity,"
                " last_uid, uidnext, messages, highestmodseq, flags_checked) VALUES (?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (account, path) DO UPDATE SET source_name=excluded.source_name,"
                " target_name=excluded.target_name, uidvalidity=excluded.uidvalidity, last_uid=excluded.last_uid,"
                " uidnext=excluded.uidnext, messages=excluded.messages, highestmodseq=excluded.highestmodseq,"
                " flags_checked=excluded.flags_checked",
                (account, st.path, st.source_name, st.target_name, st.uidvalidity, st.last_uid,
                 st.uidnext, st.messages, st.highestmodseq, st.flags_checked))

    # -- the UID map ---------------------------------------------------------
    def mapped_uids(self, account: str, path: str, uidvalidity: int, above: int = 0,
                    upto: int | None = None) -> set[int]:
        """The mapped source UIDs in above+1..upto (a copy's UID window: its bound, not the folder's)."""
        q = "SELECT uid FROM messages WHERE account=? AND path=? AND uidvalidity=? AND uid>?"
        args: tuple = (account, path, uidvalidity, above)
        if upto is not None:
            q += " AND uid<=?"
            args += (upto,)
        rows = self._conn().execute(q, args)
        return {r[0] for r in rows}

    def map_rows(self, account: str, path: str, uidvalidity: int,
                 uids: Iterable[int] | None = None) -> dict[int, MapRow]:
        c = self._conn()
        q = ("SELECT uid, target_uidvalidity, target_uid, size, fingerprint, flags FROM messages"
             " WHERE account=? AND path=? AND uidvalidity=?")
        if uids is None:
            rows = c.execute(q, (account, path, uidvalidity)).fetchall()
        else:
            rows = []
            ul = list(uids)
            for i in range(0, len(ul), 500):
                chunk = ul[i:i + 500]
                rows += c.execute(q + f" AND uid IN ({','.join('?' * len(chunk))})",
                                  (account, path, uidvalidity, *chunk)).fetchall()
        return {r[0]: MapRow(r[0], r[1], r[2], r[3], bytes(r[4]), flags_tuple(r[5])) for r in rows}

    def account_counts(self, account: str) -> tuple[int, int, int]:
        """(messages on the target, their bytes, messages skipped) over all folders, from either kind of
        source (the UID map, or the POP3 rows): a cheap progress figure."""
        c = self._conn()
        mapped, nbytes = c.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM (SELECT size FROM messages WHERE account=?"
            " UNION ALL SELECT size FROM pop3_messages WHERE account=? AND skipped IS NULL) AS m",
            (account, account)).fetchone()
        skipped = c.execute("SELECT count(*) FROM skipped WHERE account=?", (account,)).fetchone()[0]
        return mapped, nbytes, skipped

    def folder_totals(self, account: str) -> dict[str, tuple[int | None, int, int]]:
        """{path: (source bytes from STATUS=SIZE or None, messages copied, their bytes)} for the migration
        report; every UIDVALIDITY of a folder counts (what is on the target)."""
        rows = self._conn().execute(
            "SELECT f.path, f.size, (SELECT count(*) FROM messages m WHERE m.account = f.account AND m.path = f.path),"
            " (SELECT coalesce(sum(m.size), 0) FROM messages m WHERE m.account = f.account AND m.path = f.path)"
            " FROM folders f WHERE f.account=?", (account,)).fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def count_mapped(self, account: str, path: str, uidvalidity: int) -> int:
        return self._conn().execute(
            "SELECT count(*) FROM messages WHERE account=? AND path=? AND uidvalidity=?",
            (account, path, uidvalidity)).fetchone()[0]

    def count_known(self, account: str, path: str, uidvalidity: int, upto: int) -> int:
        """Source UIDs at or below ``upto`` that are mapped or skipped (each once)."""
        # two counts, not a UNION: the map side stays a range count of the primary key (the skipped are few)
        key = (account, path, uidvalidity, upto)
        c = self._conn()
        mapped = c.execute("SELECT count(*) FROM messages WHERE account=? AND path=? AND uidvalidity=? AND uid<=?",
                           key).fetchone()[0]
        return mapped + c.execute(
            "SELECT count(*) FROM skipped s WHERE account=? AND path=? AND uidvalidity=? AND uid<=? AND NOT EXISTS"
            " (SELECT 1 FROM messages m WHERE m.account=s.account AND m.path=s.path AND m.uidvalidity=s.uidvalidity"
            " AND m.uid=s.uid)", key).fetchone()[0]

    def sources_into(self, account: str, target_name: str) -> list[tuple[str, int | None]]:
        """(path, uidvalidity) of the source folders recorded as copied into ``target_name``."""
        return [tuple(r) for r in self._conn().execute(
            "SELECT path, uidvalidity FROM folders WHERE account=? AND target_name=?", (account, target_name))]

    def count_mapped_into(self, account: str, target_name: str) -> int:
        """Messages the UID map puts in ``target_name``, from every source folder recorded there."""
        return self._conn().execute(
            "SELECT count(*) FROM messages m JOIN folders f ON f.account = m.account AND f.path = m.path"
            " AND f.uidvalidity = m.uidvalidity WHERE f.account=? AND f.target_name=?",
            (account, target_name)).fetchone()[0]

    def folders_into(self, account: str, target_name: str) -> list[tuple[str, int | None]]:
        """(source path, messages it still lacks) of the folders recorded as copied into ``target_name``
        (INBOX in any case); None where unknown: the folder's copy has not completed once."""
        rows = self._conn().execute(
            "SELECT path, target_name, uidvalidity, messages FROM folders WHERE account=?", (account,)).fetchall()
        out = []
        for path, target, uidvalidity, messages in rows:
            if not (target == target_name or target.upper() == target_name.upper() == "INBOX"):
                continue
            if messages is None or uidvalidity is None:
                out.append((path, None))
                continue
            known = self.count_mapped(account, path, uidvalidity) + self.count_skipped(account, path, uidvalidity)
            out.append((path, max(0, messages - known)))
        return out

    # -- recorded mappings ---------------------------------------------------
    def set_mapping_changes(self, account: str, would_be: dict[str, str]) -> None:
        """The plan's new targets for folders that keep their recorded one; clears the others."""
        with self._tx() as c:
            c.execute("UPDATE folders SET would_be=NULL WHERE account=? AND would_be IS NOT NULL", (account,))
            c.executemany("UPDATE folders SET would_be=? WHERE account=? AND path=?",
                          [(new, account, path) for path, new in would_be.items()])

    # -- folders the last pass did not copy ---------------------------------------
    def set_skipped_folders(self, account: str, skipped) -> None:
        """The pass's skipped folders (imap.folders.Skipped), replacing the last pass's; implicit
        parents ("not a mailbox") hold no mail and are left out."""
        now = time.time()
        with self._tx() as c:
            c.execute("DELETE FROM skipped_folders WHERE account=?", (account,))
            c.executemany(upsert("skipped_folders", "account, path, reason, at", "account, path"),
                          [(account, s.path, s.reason, now) for s in skipped if "not a mailbox" not in s.reason])

    def skipped_folders(self, account: str) -> list[tuple[str, str]]:
        """(path, reason) of each folder the last pass did not copy."""
        return [tuple(r) for r in self._conn().execute(
            "SELECT path, reason FROM skipped_folders WHERE account=? ORDER BY path", (account,))]

    def mapping_changes(self, account: str) -> list[tuple[str, str, str]]:
        """(path, recorded target, the plan's target) of every change not applied."""
        return [tuple(r) for r in self._conn().execute(
            "SELECT path, target_name, would_be FROM folders WHERE account=? AND would_be IS NOT NULL"
            " ORDER BY path", (account,))]

    def apply_remap(self, account: str, path: str, uidvalidity: int, new_target: str,
                    moved: dict[int, tuple[int, int]]) -> None:
        """After the messages moved: the folder's new target and their new target UIDs
        (source uid -> (target uidvalidity, target uid)), in one transaction."""
        with self._tx() as c:
            c.execute("UPDATE folders SET target_name=?, would_be=NULL WHERE account=? AND path=?",
                      (new_target, account, path))
            # a row whose message was not found in the old target any more points nowhere: NULL, not stale
            c.execute("UPDATE messages SET target_uid=NULL WHERE account=? AND path=? AND uidvalidity=?",
                      (account, path, uidvalidity))
            c.executemany("UPDATE messages SET target_uidvalidity=?, target_uid=? WHERE account=? AND path=?"
                          " AND uidvalidity=? AND uid=?",
                          [(tv, tu, account, path, uidvalidity, uid) for uid, (tv, tu) in moved.items()])
            c.execute("UPDATE reports SET target_name=? WHERE account=? AND path=?", (new_target, account, path))

    def update_flags(self, account: str, path: str, uidvalidity: int,
                     flags: dict[int, tuple[str, ...]]) -> None:
        with self._tx() as c:
            c.executemany(
                "UPDATE messages SET flags=? WHERE account=? AND path=? AND uidvalidity=? AND uid=?",
                [(flags_text(f), account, path, uidvalidity, uid) for uid, f in flags.items()])

    def replace_uidvalidity(self, account: str, path: str, old: int, new: int,
                            rows: dict[int, MapRow]) -> None:
        """After a UIDVALIDITY change: drop the old map, keep the re-matched rows under the new one."""
        with self._tx() as c:
            c.execute("DELETE FROM messages WHERE account=? AND path=? AND uidvalidity=?", (account, path, old))
            c.execute("DELETE FROM skipped WHERE account=? AND path=? AND uidvalidity=?", (account, path, old))
            c.execute("DELETE FROM altered WHERE account=? AND path=? AND uidvalidity=?", (account, path, old))
            c.execute("DELETE FROM deleting WHERE account=? AND path=? AND uidvalidity=?", (account, path, old))
            c.executemany(
                _MESSAGES,
                [(account, path, new, r.uid, r.target_uidvalidity, r.target_uid, r.size, r.fingerprint,
                  flags_text(r.flags)) for r in rows.values()])

    # -- deletions (sync.deletions: mirror) ------------------------------------
    def begin_deletions(self, account: str, path: str, uidvalidity: int, items: dict[int, int]) -> None:
        """Record the intent (source UID -> target UID) before the target is touched."""
        with self._tx() as c:
            c.executemany(upsert("deleting", "account, path, uidvalidity, uid, target_uid",
                                 "account, path, uidvalidity, uid"),
                          [(account, path, uidvalidity, uid, tuid) for uid, tuid in items.items()])

    def pending_deletions(self, account: str, path: str, uidvalidity: int) -> dict[int, int]:
        """Expunges begun and not confirmed (a crash or a lost connection): source UID -> target UID."""
        return dict(self._conn().execute(
            "SELECT uid, target_uid FROM deleting WHERE account=? AND path=? AND uidvalidity=?",
            (account, path, uidvalidity)).fetchall())

    def commit_deletions(self, account: str, path: str, uidvalidity: int, gone: Iterable[int]) -> None:
        """Forget the messages (by source UID) the target no longer holds, with their intents: only
        once the target has answered.  Intents of messages it still holds stay for the next pass."""
        args = [(account, path, uidvalidity, uid) for uid in gone]
        with self._tx() as c:
            c.executemany("DELETE FROM messages WHERE account=? AND path=? AND uidvalidity=? AND uid=?", args)
            c.executemany("DELETE FROM deleting WHERE account=? AND path=? AND uidvalidity=? AND uid=?", args)
            c.executemany("DELETE FROM altered WHERE account=? AND path=? AND uidvalidity=? AND uid=?", args)
