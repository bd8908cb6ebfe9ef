"""The rows the store hands out and takes: frozen dataclasses, no SQL."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FolderState:
    path: str
    source_name: str
    target_name: str
    uidvalidity: int | None
    last_uid: int
    uidnext: int | None
    messages: int | None
    highestmodseq: int | None
    flags_checked: float | None


@dataclass(frozen=True, slots=True)
class MapRow:
    uid: int
    target_uidvalidity: int | None
    target_uid: int | None
    size: int
    fingerprint: bytes
    flags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class InflightItem:
    key: int | str | None           # what the engine knows the message by: an IMAP UID, a POP3 UIDL
    size: int
    fingerprint: bytes
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Inflight:
    target_name: str
    target_uidvalidity: int
    target_uidnext: int
    items: tuple[InflightItem, ...]


@dataclass(frozen=True, slots=True)
class FolderReport:
    path: str
    target_name: str
    source_count: int | None
    target_count: int | None
    copied: int
    present: int
    skipped: int
    bytes: int
    seconds: float
    error: str | None
    finished: float
    deleted: int = 0                # expunged on the target because the source expunged them
    held: str | None = None         # why this pass deleted less than the source did
    # messages in target_name that came from no source folder (on the target before); one figure
    # per target folder, so a merged target's is the same on each of its source folders' rows
    already_there: int | None = None
    altered: int = 0                # on the target, but changed by it at APPEND (the altered table)


@dataclass(frozen=True, slots=True)
class Pop3Row:
    """A POP3 source message on the target (or refused by it: ``skipped`` holds the reason)."""
    uidl: str | None
    size: int
    fingerprint: bytes
    target_uidvalidity: int | None = None
    target_uid: int | None = None
    skipped: str | None = None
    id: int | None = None          # assigned by the store


POP3_PATH = "INBOX (pop3)"   # a POP3 INBOX's path in the skipped table and the in-flight journal


def flags_text(flags: Iterable[str]) -> str:
    return " ".join(sorted(flags))


def flags_tuple(text: str) -> tuple[str, ...]:
    return tuple(text.split()) if text else ()
