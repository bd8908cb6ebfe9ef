"""IMAP namespaces (RFC 2342): where a mailbox name sits, and how to re-root it on another server.

Pure logic. A source name is taken relative to the namespace it falls in (longest prefix
wins); personal names are re-rooted under the target's personal prefix with the target's
separator.  Names in other users' or shared namespaces keep their prefix as a first path
component ("shared/alice/INBOX", "#shared/foo"); a namespace with an empty prefix there gets
a fixed one ("Shared Folders", "Other Users") so that its folders cannot land among the
user's own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

KINDS = ("personal", "other", "shared")
_EMPTY_PREFIX_ROOT = {"other": "Other Users", "shared": "Shared Folders"}


@dataclass(frozen=True, slots=True)
class Namespace:
    kind: str              # personal | other | shared
    prefix: str            # as the server sends it, e.g. "INBOX." or "" or "shared/"
    delimiter: str | None  # None: a flat namespace


@dataclass(frozen=True, slots=True)
class Namespaces:
    entries: tuple[Namespace, ...]
    from_server: bool = True   # False: guessed from LIST (the server did not answer NAMESPACE)

    @property
    def personal(self) -> Namespace:
        for ns in self.entries:
            if ns.kind == "personal":
                return ns
        return Namespace("personal", "", self.entries[0].delimiter if self.entries else "/")


def from_response(ns) -> Namespaces | None:
    """imapclient's ``namespace()`` answer (personal, other, shared) -> Namespaces, or None when
    it is not the shape RFC 2342 allows (a hostile or broken server: fall back to LIST)."""
    try:
        groups = tuple(ns)
    except TypeError:
        return None
    if len(groups) != 3:
        return None
    out = []
    for kind, group in zip(KINDS, groups):
        if group is None:
            continue
        if not isinstance(group, (tuple, list)):
            return None
        for item in group:
            if not isinstance(item, (tuple, list)) or len(item) < 2:
                return None
            prefix, delim = item[0], item[1]
            if isinstance(prefix, bytes):
                prefix = prefix.decode("utf-8", "replace")
            if isinstance(delim, bytes):
                delim = delim.decode("utf-8", "replace")
            if not isinstance(prefix, str) or not (delim is None or (isinstance(delim, str) and len(delim) == 1)):
                return None
            if any(c in prefix for c in "\r\n\0"):
                return None
            out.append(Namespace(kind, prefix, delim))
    if not any(n.kind == "personal" for n in out):
        return None
    return Namespaces(tuple(out))


def guess(boxes: Sequence, default_delimiter: str | None = "/") -> Namespaces:
    """Without NAMESPACE: the LIST delimiter (INBOX's first), and "INBOX<delim>" as the personal
    prefix when every other folder starts with it (Courier-style servers)."""
    delim = None
    for mb in boxes:
        if mb.name.casefold() == "inbox" and mb.delimiter:
            delim = mb.delimiter
            break
    if delim is None:
        delim = next((mb.delimiter for mb in boxes if mb.delimiter), None if boxes else default_delimiter)
    prefix = ""
    if delim:
        others = [mb.name for mb in boxes if mb.name.casefold() != "inbox"]
        head = "INBOX" + delim
        if others and all(n[: len(head)].casefold() == head.casefold() for n in others):
            prefix = next(n[: len(head)] for n in others)
    return Namespaces((Namespace("personal", prefix, delim),), from_server=False)


def _is_inbox(name: str) -> bool:
    return name.casefold() == "inbox"


def locate(name: str, delimiter: str | None, nss: Namespaces) -> tuple[str, list[str]]:
    """(namespace kind, path parts relative to the user's folder tree) for a LISTed name.

    INBOX (any case) is ("personal", ["INBOX"]).  Personal names lose their prefix; other and
    shared names keep theirs as leading component(s).
    """
    if _is_inbox(name):
        return "personal", ["INBOX"]
    best: Namespace | None = None
    for ns in nss.entries:
        if _starts(name, ns.prefix) and (best is None or len(ns.prefix) > len(best.prefix)):
            best = ns
    if best is None:
        best = nss.personal
    delim = delimiter or best.delimiter
    if best.kind == "personal":
        rest = name[len(best.prefix):] if _starts(name, best.prefix) else name
        parts = _split(rest, delim)
        if parts and _is_inbox(parts[0]):
            parts[0] = "INBOX"
        return "personal", [p for p in parts] or ["INBOX"]
    prefix = best.prefix
    head = _split(prefix.rstrip(best.delimiter or ""), best.delimiter) if prefix else [_EMPTY_PREFIX_ROOT[best.kind]]
    rest = name[len(prefix):]
    return best.kind, head + _split(rest, delim)


def _starts(name: str, prefix: str) -> bool:
    if not prefix:
        return True
    # "INBOX." matches "inbox.Sent": INBOX is case-insensitive, the rest is not
    if prefix[:5].casefold() == "inbox":
        return name[: len(prefix)].casefold()[:5] == "inbox" and name[5: len(prefix)] == prefix[5:]
    return name.startswith(prefix)


def _split(s: str, delim: str | None) -> list[str]:
    if not s:
        return []
    return s.split(delim) if delim else [s]


def reroot(parts: Sequence[str], nss: Namespaces) -> str:
    """Relative path parts -> the full name in ``nss``'s personal namespace.  INBOX stays INBOX;
    a component holding the target's delimiter gets "_" in its place."""
    ns = nss.personal
    delim = ns.delimiter
    clean = [p.replace(delim, "_") for p in parts] if delim else list(parts)
    if clean == ["INBOX"]:
        return "INBOX"
    if not clean:
        return "INBOX"
    j = (delim or "/").join(clean)
    prefix = ns.prefix
    if prefix and _is_inbox(prefix.rstrip(delim or "")) and clean[0] == "INBOX":
        # the target's personal folders live under INBOX already: "INBOX/x" is "INBOX.x" there
        return "INBOX" + (delim or "/") + (delim or "/").join(clean[1:])
    return prefix + j
