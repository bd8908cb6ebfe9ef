"""`mailsyncctl remap`: apply a folder mapping change that a pass only reported.

A pass never moves a folder that was copied before (AccountSync keeps the recorded target and
records the plan's new one as ``would_be``).  Remap moves what was already copied from the
recorded target folder to the new one -- UID MOVE where the target offers MOVE, else UID COPY +
\\Deleted + UID EXPUNGE of exactly those UIDs -- then finds the moved messages in the new folder
by size and fingerprint and updates the UID map and the recorded target in one transaction.

Only the target is touched.  Re-running after a crash is safe: the new folder is searched as a
whole, so messages moved by an interrupted run are found there.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from imapclient import exceptions as imapexc

from ..errors import FolderFailed
from ..net import imap
from ..net.imap import uid_ranges
from ..store import Store
from .logic import batches, fingerprint, match_fingerprints

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Remapped:
    path: str
    old: str
    new: str
    moved: int        # messages found in the new folder afterwards
    missing: int      # UID map rows whose message is in neither folder (deleted on the target)


def remap(domain, address: str, password: str | None, store: Store, folder: str | None = None) -> list[Remapped]:
    changes = [c for c in store.mapping_changes(address) if folder is None or c[0] == folder]
    if not changes:
        return []
    tgt = imap.open_session(domain.target, role="target", address=address, password=password)
    try:
        return [_one(tgt, store, address, path, old, new) for path, old, new in changes]
    finally:
        imap.close(tgt)


def _one(tgt, store: Store, address: str, path: str, old: str, new: str) -> Remapped:
    where = f"account={address} folder={path!r}"
    st = store.folder(address, path)
    rows = store.map_rows(address, path, st.uidvalidity) if st and st.uidvalidity is not None else {}
    with imap.lost_is_transient(f"target, {where}"):
        if not tgt.folder_exists(new):
            try:
                imap.create_folder(tgt, new)
            except imapexc.IMAPClientError as e:
                raise FolderFailed(f"target refused to create folder {new!r}: {e}") from None
        if tgt.folder_exists(old):
            info = tgt.select_folder(old)
            old_v = int(info[b"UIDVALIDITY"])
            ours = {r.target_uid for r in rows.values() if r.target_uid and r.target_uidvalidity == old_v}
            there = set(tgt.search(["UID", uid_ranges(ours)])) & ours if ours else set()
            if there:
                uids = sorted(there)
                if tgt.has_capability("MOVE"):
                    tgt.move(uids, new)
                elif not tgt.has_capability("UIDPLUS"):
                    raise FolderFailed(f"target offers neither MOVE nor UIDPLUS: cannot remove exactly the "
                                       f"copied messages from {old!r}; move them by hand")
                else:
                    tgt.copy(uids, new)
                    tgt.add_flags(uids, [b"\\Deleted"], silent=True)
                    tgt.uid_expunge(uids)   # exactly ours, never another \Deleted message
            # no CLOSE: it would expunge the user's own \Deleted messages too; _find selects another
        moved = _find(tgt, new, rows)
    store.apply_remap(address, path, st.uidvalidity, new, moved)
    logger.warning("event=remapped %s old=%r new=%r moved=%d missing=%d",
                   where, old, new, len(moved), len(rows) - len(moved))
    return Remapped(path, old, new, len(moved), len(rows) - len(moved))


def _find(tgt, name: str, rows) -> dict[int, tuple[int, int]]:
    """source uid -> (uidvalidity, uid) of its message in ``name``, by size then fingerprint."""
    info = tgt.select_folder(name, readonly=True)
    v = int(info[b"UIDVALIDITY"])
    if not rows or not info.get(b"EXISTS"):
        return {}
    sizes = imap.fetch(tgt, "1:*", [b"RFC822.SIZE"])
    wanted = {r.size for r in rows.values()}
    cand = sorted((uid, int(d.get(b"RFC822.SIZE", 0))) for uid, d in sizes.items()
                  if int(d.get(b"RFC822.SIZE", -1)) in wanted)
    found: list[tuple[int, bytes]] = []
    for batch in batches(cand, 200, 32 * 1024**2):
        data = imap.fetch(tgt, [u for u, _ in batch], [b"BODY.PEEK[]"])
        found += [(uid, fingerprint(d[b"BODY[]"])) for uid, d in data.items() if d.get(b"BODY[]") is not None]
    match = match_fingerprints(((uid, r.fingerprint) for uid, r in sorted(rows.items())), found)
    return {uid: (v, tuid) for uid, tuid in match.items()}
