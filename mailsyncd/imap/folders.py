"""Folder planning: which source mailboxes to copy and what they are called on the target.

Pure logic over LIST results. Names are already decoded from modified UTF-7 and
carry their server's own hierarchy delimiter.
"""
from __future__ import annotations

import fnmatch
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

# RFC 6154 special-use flags (compared casefolded).
FLAG_ROLES = {
    "\\sent": "sent",
    "\\drafts": "drafts",
    "\\trash": "trash",
    "\\junk": "junk",
    "\\archive": "archive",
}

# Well-known names, used when a server does not advertise special-use flags.
NAME_ROLES = {
    "sent": ("Sent", "Sent Messages", "Sent Items", "Sent Mail", "已发送", "已发送邮件"),
    "drafts": ("Drafts", "Draft", "草稿箱", "草稿"),
    "trash": ("Trash", "Deleted Messages", "Deleted Items", "Deleted", "已删除", "已删除邮件"),
    "junk": ("Junk", "Spam", "Junk E-mail", "Junk Email", "Bulk Mail", "垃圾邮件", "垃圾箱"),
    "archive": ("Archive", "Archives", "归档"),
}

# Parents only: the target creates them implicitly when a child is created.
NOT_MAILBOX = {"\\noselect": "\\Noselect", "\\nonexistent": "\\NonExistent"}
# Views over other folders (Gmail's All Mail / Starred): copying them duplicates every message.
VIRTUAL = {"\\all": "\\All", "\\flagged": "\\Flagged"}

# casefolded name -> (role, rank within its table)
_NAME_TO_ROLE = {
    n.casefold(): (role, i) for role, names in NAME_ROLES.items() for i, n in enumerate(names)
}


@dataclass(frozen=True, slots=True)
class Mailbox:
    name: str
    delimiter: str | None
    flags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FolderPlan:
    source: str
    target: str
    path: str
    role: str | None
    target_exists: bool
    merged_with: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Skipped:
    path: str
    reason: str


def split_path(name: str, delimiter: str | None) -> list[str]:
    return name.split(delimiter) if delimiter else [name]


def join_path(parts: Sequence[str], delimiter: str | None) -> str:
    # A flat namespace has no hierarchy; "/" keeps a nested path readable as one name.
    return (delimiter or "/").join(parts)


def _norm(parts: Sequence[str]) -> list[str]:
    # INBOX is case-insensitive (RFC 3501); one spelling keeps paths and comparisons stable.
    if parts and parts[0].casefold() == "inbox":
        return ["INBOX", *parts[1:]]
    return list(parts)


def _flags(mb: Mailbox) -> set[str]:
    return {f.casefold() for f in mb.flags}


def _name_role(parts: Sequence[str]) -> tuple[str, int] | None:
    parts = _norm(parts)
    if parts == ["INBOX"]:
        return ("inbox", 0)
    # Only top level or directly under INBOX (Courier-style "INBOX.Sent"): a "Sent"
    # deep inside a user's tree is just a user folder.
    if len(parts) == 1 or (len(parts) == 2 and parts[0] == "INBOX"):
        return _NAME_TO_ROLE.get(parts[-1].casefold())
    return None


def source_role(mb: Mailbox) -> str | None:
    parts = split_path(mb.name, mb.delimiter)
    if _norm(parts) == ["INBOX"]:
        return "inbox"
    for f in mb.flags:
        if f.casefold() in FLAG_ROLES:
            return FLAG_ROLES[f.casefold()]
    hit = _name_role(parts)
    return hit[0] if hit else None


def _target_delimiter(target: Sequence[Mailbox]) -> str | None:
    for mb in target:
        if mb.name.casefold() == "inbox" and mb.delimiter:
            return mb.delimiter
    for mb in target:
        if mb.delimiter:
            return mb.delimiter
    return None if target else "/"


def _role_targets(target: Sequence[Mailbox]) -> dict[str, list[str]]:
    """role -> target path parts: a special-use flag wins, else the best well-known name."""
    by_flag: dict[str, list[str]] = {}
    by_name: dict[str, tuple[tuple[int, int], list[str]]] = {}
    for mb in target:
        if _flags(mb) & NOT_MAILBOX.keys():
            continue
        parts = split_path(mb.name, mb.delimiter)
        for f in mb.flags:
            if f.casefold() in FLAG_ROLES:
                by_flag.setdefault(FLAG_ROLES[f.casefold()], parts)
        hit = _name_role(parts)
        if hit and hit[0] != "inbox":
            rank = (len(parts), hit[1])  # top level first, then table order
            if hit[0] not in by_name or rank < by_name[hit[0]][0]:
                by_name[hit[0]] = (rank, parts)
    return {**{r: p for r, (_, p) in by_name.items()}, **by_flag}


def _excluded_by(path: str, patterns: Sequence[str]) -> str | None:
    for pat in patterns:
        if fnmatch.fnmatchcase(path, pat) or fnmatch.fnmatchcase(path, "/".join(_norm(pat.split("/")))):
            return pat
    return None


def plan_folders(
    source: Sequence[Mailbox], target: Sequence[Mailbox], rules, skip: Sequence[str] = ()
) -> tuple[list[FolderPlan], list[Skipped]]:
    """``skip``: the source provider's folders never to copy (its preset's ``skip_folders``: full
    names with "/" between levels, compared exactly; INBOX in any case)."""
    skip_paths = {"/".join(_norm(s.split("/"))) for s in skip}
    if rules.layout not in ("mirror", "under"):
        raise ValueError(f"unknown layout {rules.layout!r}")
    tdelim = _target_delimiter(target)

    def clean(parts: Sequence[str]) -> list[str]:
        # The target cannot represent its own delimiter inside a component.
        return [p.replace(tdelim, "_") for p in parts] if tdelim else list(parts)

    def split_rule(p: str) -> list[str]:
        return _norm(p.strip("/").split("/")) if p.strip("/") else []

    listed = {
        join_path(_norm(split_path(mb.name, mb.delimiter)), tdelim)
        for mb in target
        if not _flags(mb) & NOT_MAILBOX.keys()
    }
    maps = [(split_rule(k), split_rule(v)) for k, v in rules.map]
    role_targets = _role_targets(target) if rules.special_use and rules.layout == "mirror" else {}

    entries: list[tuple[Mailbox, list[str], str | None]] = []
    roles: dict[tuple[str, ...], str | None] = {}
    for mb in source:
        parts = _norm(split_path(mb.name, mb.delimiter))
        if tuple(parts) in roles:
            continue  # duplicate LIST entry
        role = source_role(mb)
        roles[tuple(parts)] = role
        entries.append((mb, parts, role))

    def follow_role(parts: list[str]) -> list[str] | None:
        # Nearest ancestor-or-self with a role decides; an unlisted ancestor counts by name.
        for n in range(len(parts), 0, -1):
            key = tuple(parts[:n])
            if key in roles:
                role = roles[key]
            else:
                hit = _name_role(key)
                role = hit[0] if hit else None
            if role and role != "inbox":
                return role_targets[role] + clean(parts[n:]) if role in role_targets else None
        return None

    def target_parts(parts: list[str]) -> list[str]:
        best = None
        for key, dest in maps:
            if key and parts[: len(key)] == key and (best is None or len(key) > len(best[0])):
                best = (key, dest)
        if best:
            return clean(best[1]) + clean(parts[len(best[0]) :])
        followed = follow_role(parts) if role_targets else None
        if followed is not None:
            return followed
        if rules.layout == "under":
            return clean(split_rule(rules.prefix)) + clean(parts)
        return clean(parts)

    skipped: list[Skipped] = []
    planned: list[tuple[Mailbox, str, str | None, str]] = []
    for mb, parts, role in entries:
        path = "/".join(parts)
        flags = _flags(mb)
        reason = None
        if flags & NOT_MAILBOX.keys():
            reason = f"{NOT_MAILBOX[min(flags & NOT_MAILBOX.keys())]} (not a mailbox)"
        elif flags & VIRTUAL.keys():
            reason = f"virtual folder ({VIRTUAL[min(flags & VIRTUAL.keys())]})"
        elif path in skip_paths:
            reason = "the provider's preset skips it (quirks.skip_folders)"
        elif (pat := _excluded_by(path, rules.exclude)) is not None:
            reason = f"excluded by rule {pat!r}"
        if reason:
            skipped.append(Skipped(path, reason))
            continue
        planned.append((mb, path, role, join_path(_norm(target_parts(parts)), tdelim)))

    by_target: dict[str, list[str]] = defaultdict(list)
    for _, path, _, tname in planned:
        by_target[tname].append(path)

    plans = [
        FolderPlan(
            source=mb.name,
            target=tname,
            path=path,
            role=role,
            target_exists=tname in listed,
            merged_with=tuple(sorted(p for p in by_target[tname] if p != path)),
        )
        for mb, path, role, tname in planned
    ]
    plans.sort(key=lambda p: (p.path != "INBOX", p.path))
    skipped.sort(key=lambda s: s.path)
    return plans, skipped
