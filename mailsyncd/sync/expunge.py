"""Carry expunges at the source over to the target (sync.deletions: mirror); sync/deletions.py decides.

Crash safety, as for appends: the intent (source UID -> target UID) is recorded before the target
is touched, and the UID map rows go only once the target no longer holds the messages.  On the
target: ``UID STORE +FLAGS.SILENT (\\Deleted)`` then ``UID EXPUNGE`` of exactly those UIDs (UIDPLUS):
a plain EXPUNGE would also remove the messages the user marked \\Deleted.  A pass killed in
between leaves the intent and our \\Deleted; the next pass finishes the expunge.  Expunged source
messages are never copied again: the copier only copies UIDs above the folder's mark.

The source is only EXAMINEd and searched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..net.imap import fetch, lost_is_transient
from .deletions import CHANGED, DELETED, OnTarget, decide, gone_at_source, gone_by_count, unchanged
from .logic import batches, bounded_uids, fingerprint

logger = logging.getLogger(__name__)

NO_UIDPLUS = ("the target lacks UIDPLUS, and a plain EXPUNGE would also remove the messages the user "
              "marked \\Deleted there")


@dataclass(frozen=True, slots=True)
class Outcome:
    deleted: int = 0
    held: str | None = None      # for the report: why fewer were deleted than the source expunged
    again: bool = False          # deletions were held back: look again next pass even if the source is unchanged


def mirror(fs, st) -> Outcome:
    """Expunge on the target what the source expunged from folder ``fs`` (a FolderSync) since we copied it."""
    ctx, store, s = fs.ctx, fs.ctx.store, fs.ctx.settings
    if not ctx.target_caps.uidplus:
        return Outcome(held=NO_UIDPLUS)
    total = store.count_mapped(fs.acct, fs.path, st.uidvalidity)
    if not total:
        return Outcome()
    with lost_is_transient(f"source, {fs.where}"):
        exists = fs.src.select_folder(fs.plan.source, readonly=True).get(b"EXISTS")  # EXAMINE
        if exists is None:
            return Outcome(held="the source did not say how many messages it holds", again=True)
        gone = _gone_cheaply(fs, st, exists)
        if gone is None:    # the counts do not settle it: list every UID
            present = set(fs.src.search("ALL"))
            if len(present) != exists:
                # a source that lists fewer messages than it says it holds must not empty the target
                return Outcome(held=f"the source listed {len(present)} messages but said it holds {exists}",
                               again=True)
            gone = gone_at_source(store.mapped_uids(fs.acct, fs.path, st.uidvalidity), present)
    if not gone:
        return Outcome()
    rows = store.map_rows(fs.acct, fs.path, st.uidvalidity, gone)
    pending = store.pending_deletions(fs.acct, fs.path, st.uidvalidity)
    with lost_is_transient(f"target, {fs.where}"):
        info = fs.tgt.select_folder(fs.target)
        tuidvalidity = info.get(b"UIDVALIDITY")
        asked = {rows[u].target_uid: u for u in gone
                 if rows[u].target_uid is not None and rows[u].target_uidvalidity == tuidvalidity}
        flags = {tuid: d.get(b"FLAGS", ()) for tuid, d in fetch(fs.tgt, sorted(asked), [b"FLAGS"]).items()
                 if tuid in asked}
        # only the messages whose flags say "ours, untouched" are read whole, to check their content
        check = [(tuid, rows[asked[tuid]].size) for tuid, f in flags.items()
                 if unchanged(rows[asked[tuid]], f, fs.permanent, pending.get(asked[tuid]) == tuid)]
        fps: dict[int, bytes] = {}
        for batch in batches(sorted(check), s.batch_messages, s.batch_bytes):
            data = fetch(fs.tgt, [t for t, _ in batch], [b"BODY.PEEK[]"])
            fps.update((t, fingerprint(d[b"BODY[]"])) for t, d in data.items()
                       if t in flags and d.get(b"BODY[]") is not None)
    target = {tuid: OnTarget(tuple(f), fps.get(tuid)) for tuid, f in flags.items()}
    plan = decide(rows, gone, tuidvalidity, target, pending, s.max_delete.of(total), fs.permanent)
    deleted = sum(1 for u in plan.forget if u in pending)   # expunged by a pass that died before recording it
    if plan.forget:
        store.commit_deletions(fs.acct, fs.path, st.uidvalidity, plan.forget)
    if plan.expunge:
        deleted += _expunge(fs, st, plan.expunge)
    notes = [plan.held] if plan.held else []
    changed = sum(1 for why in plan.kept.values() if why == CHANGED)
    if changed:
        notes.append(f"kept {changed} {'message' if changed == 1 else 'messages'} the user changed on the target")
    others = len(plan.kept) - changed
    if others:
        notes.append(f"kept {others} that cannot be matched safely on the target")
    logger.info("event=deletions %s gone_at_source=%d deleted=%d already_gone=%d kept=%d%s",
                fs.where, len(gone), deleted, len(plan.forget), len(plan.kept),
                f" held={plan.held!r}" if plan.held else "")
    return Outcome(deleted, "; ".join(notes) or None, again=plan.held is not None)


def _gone_cheaply(fs, st, exists: int) -> list[int] | None:
    """What the source expunged, from its count and the few UIDs above the mark (deletions.gone_by_count);
    None: list the folder.  Costs what arrived since the mark, not what the folder holds."""
    store = fs.ctx.store
    mark = store.folder(fs.acct, fs.path).last_uid     # this pass's copy moved it
    # "n:*" also matches the highest UID when it is below n (RFC 3501): keep only those above the mark
    above = {u for u in bounded_uids(fs.src.search(["UID", f"{mark + 1}:*"]), None) if u > mark}
    return gone_by_count(exists, store.count_known(fs.acct, fs.path, st.uidvalidity, mark), above,
                         store.mapped_uids(fs.acct, fs.path, st.uidvalidity, above=mark))


def _expunge(fs, st, items: dict[int, int]) -> int:
    """UID STORE \\Deleted and UID EXPUNGE ``items`` (source UID -> target UID); how many went."""
    store = fs.ctx.store
    tuids = sorted(items.values())
    store.begin_deletions(fs.acct, fs.path, st.uidvalidity, items)
    store.check_lease()
    with lost_is_transient(f"target, {fs.where}"):
        fs.tgt.add_flags(tuids, [DELETED], silent=True)
        fs.tgt.uid_expunge(tuids)
        still = set(fetch(fs.tgt, tuids, [b"FLAGS"]))   # confirm: record only what the target no longer holds
    gone = [uid for uid, tuid in items.items() if tuid not in still]
    store.commit_deletions(fs.acct, fs.path, st.uidvalidity, gone)
    if len(gone) < len(items):
        # their intents stay: the next pass tries again
        logger.warning("event=expunge_incomplete %s asked=%d expunged=%d", fs.where, len(items), len(gone))
    return len(gone)


__all__ = ["NO_UIDPLUS", "Outcome", "mirror"]
