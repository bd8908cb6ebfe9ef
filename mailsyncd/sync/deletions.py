"""Which target messages a pass may expunge because the source expunged theirs (sync.deletions: mirror).

Pure decisions: sync/expunge.py gathers the facts (the UID map, the UIDs the source still lists,
what the target holds at the mapped UIDs) and carries the answer out.

A target message is ours to expunge only if all of these hold:
- the UID map records it (we copied it) under the target folder's current UIDVALIDITY;
- its content at that UID is what we copied (same fingerprint): a map gone stale never hits another message;
- the user has not changed it on the target: its flags there are still the ones we last wrote (the
  map's flags, as far as the target's PERMANENTFLAGS can hold them).  Flags are all a user can
  change on an IMAP message; its content is immutable.  MODSEQ is not used: our own flag updates
  move it too, and a flag set and cleared again leaves the message as we wrote it.
A message the user added on the target is in no map row, so it is never a candidate.

An expunge that a crash interrupted (the intent recorded, ``\\Deleted`` perhaps stored) is finished
by the next pass: for those, our own ``\\Deleted`` does not count as the user's change, and they do
not count against the limit, which they already passed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..store import MapRow
from .logic import source_flags, storable

DELETED = "\\Deleted"

# why a candidate's target copy stays (the report counts them by reason)
NO_TARGET_UID = "its target UID is unknown"
OTHER_UIDVALIDITY = "the target folder was renumbered since it was copied"
CHANGED = "changed by the user on the target"
NOT_OURS = "the target holds another message at its UID"


@dataclass(frozen=True, slots=True)
class OnTarget:
    flags: tuple[str, ...]
    fingerprint: bytes | None = None   # None: not fetched (its flags already rule it out)


@dataclass(frozen=True, slots=True)
class Plan:
    expunge: dict[int, int] = field(default_factory=dict)   # source UID -> target UID, to expunge now
    forget: tuple[int, ...] = ()       # source UIDs whose target copy is gone already: drop their map rows
    kept: dict[int, str] = field(default_factory=dict)      # source UID -> why its target copy stays
    held: str | None = None            # why no new expunge happens in this folder this pass


def gone_at_source(rows: Iterable[int], present: Iterable[int]) -> list[int]:
    """Source UIDs in the map that the source no longer lists."""
    return sorted(set(rows) - set(present))


def gone_by_count(exists: int, known_upto_mark: int, above: Iterable[int], mapped_above: Iterable[int]) -> list[int] | None:
    """The source UIDs in the map the source no longer lists, without listing the folder; None: the
    counts do not settle it (list every UID).

    Every message the source holds at or below the folder's mark is mapped or skipped (UIDs only grow),
    so if the source holds as many there (``exists`` minus those it lists ``above`` the mark) as
    ``known_upto_mark`` says we know of, none of those is gone.  Above the mark the few listed are
    compared one by one.
    """
    above = set(above)
    if exists - len(above) != known_upto_mark:
        return None
    return sorted(set(mapped_above) - above)


def unchanged(row: MapRow, target_flags: Iterable[str], permanent: frozenset[str] | None,
              pending: bool) -> bool:
    """Are the target's flags still the ones we last wrote (plus our own \\Deleted if we began expunging)?"""
    now = set(source_flags(target_flags))
    ours = set(storable(row.flags, permanent)[0])
    return now == ours or (pending and now == ours | {DELETED})


def decide(rows: Mapping[int, MapRow], gone: Iterable[int], target_uidvalidity: int,
           target: Mapping[int, OnTarget], pending: Mapping[int, int], limit: int,
           permanent: frozenset[str] | None) -> Plan:
    """What to do about the map rows in ``gone`` (source UIDs no longer at the source).

    ``target``: what the target holds, by target UID, for every mapped target UID asked about
    (absent: the target no longer has it).  ``pending``: source UID -> target UID of expunges
    begun by an earlier pass.  ``limit``: the most new expunges allowed.
    """
    expunge: dict[int, int] = {}
    forget: list[int] = []
    kept: dict[int, str] = {}
    for uid in sorted(gone):
        row = rows[uid]
        if row.target_uid is None:
            kept[uid] = NO_TARGET_UID
        elif row.target_uidvalidity != target_uidvalidity:
            kept[uid] = OTHER_UIDVALIDITY
        elif row.target_uid not in target:
            forget.append(uid)      # expunged there already (by the user, or by us before a crash)
        elif not unchanged(row, target[row.target_uid].flags, permanent, pending.get(uid) == row.target_uid):
            kept[uid] = CHANGED
        elif target[row.target_uid].fingerprint != row.fingerprint:
            kept[uid] = NOT_OURS
        else:
            expunge[uid] = row.target_uid
    new = {uid for uid, tuid in expunge.items() if pending.get(uid) != tuid}
    held = None
    if len(new) > limit:
        held = f"would delete {len(new)} > limit {limit}"
        expunge = {uid: tuid for uid, tuid in expunge.items() if uid not in new}
    return Plan(expunge, tuple(forget), kept, held)


__all__ = ["CHANGED", "NOT_OURS", "NO_TARGET_UID", "OTHER_UIDVALIDITY", "OnTarget", "Plan", "decide",
           "gone_at_source", "gone_by_count", "unchanged"]
