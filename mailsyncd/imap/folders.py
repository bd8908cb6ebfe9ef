"""Folder planning: which source mailboxes to copy and what they are called on the target.

Pure logic over LIST and NAMESPACE results. Names are already decoded from modified UTF-7
and carry their server's own hierarchy delimiter.

The rules, decided here once (README "Folders"):

* a source name is taken relative to its namespace (imap/namespaces.py) and re-rooted in the
  target's personal namespace: ``INBOX.客户.重要`` on Courier is ``客户/重要`` on a stock Dovecot;
* a folder's role (Sent, Drafts, Trash, Junk, Archive) comes from its SPECIAL-USE attribute,
  else from its name (NAME_ROLES, top level or directly under INBOX or ``[Gmail]``);
* per role one source folder takes the role: the one with the attribute, then the better name
  (NAME_ROLES order), then the smaller path; the others keep their own (re-rooted) names;
* the role's target folder: the target folder with the attribute, else
  ``folders.special_use_names``, else a top-level target folder with a well-known name, else the
  conventional English name (CONVENTIONAL), CREATEd with ``(USE (\\Sent))`` where the target
  offers CREATE-SPECIAL-USE;
* a mapping recorded at a folder's first copy wins over a new plan (keep_recorded).
"""
from __future__ import annotations

import fnmatch
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

from .namespaces import Namespaces, guess, locate, reroot

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
    "sent": ("Sent", "Sent Messages", "Sent Items", "Sent Mail", "已发送", "已发送邮件", "已发邮件"),
    "drafts": ("Drafts", "Draft", "草稿箱", "草稿"),
    "trash": ("Trash", "Deleted Messages", "Deleted Items", "Deleted", "Bin", "已删除", "已删除邮件"),
    "junk": ("Junk", "Spam", "Junk E-mail", "Junk Email", "Bulk Mail", "垃圾邮件", "垃圾箱", "广告邮件"),
    "archive": ("Archive", "Archives", "归档"),
}
# A role's target name when the target has no folder for it yet: what mail clients create.
CONVENTIONAL = {"sent": "Sent", "drafts": "Drafts", "trash": "Trash", "junk": "Junk", "archive": "Archive"}
ROLE_FLAG = {role: "\\" + role.capitalize() for role in CONVENTIONAL}
# Parents under which provider folders carry role names ("[Gmail]/Sent Mail").
_ROLE_PARENTS = ("INBOX", "[Gmail]", "[Google Mail]")
# Gmail's views, by name, for servers that forget the attribute.
_VIRTUAL_NAMES = {"all mail": "\\All", "starred": "\\Flagged"}

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
    create_use: str | None = None   # CREATE the target with (USE (<this>)) (CREATE-SPECIAL-USE)


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
    # Only top level or directly under INBOX (Courier-style "INBOX.Sent") or [Gmail]: a "Sent"
    # deep inside a user's tree is just a user folder.
    if len(parts) == 1 or (len(parts) == 2 and parts[0] in _ROLE_PARENTS):
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



def _excluded_by(paths: Sequence[str], patterns: Sequence[str]) -> str | None:
    for pat in patterns:
        norm = "/".join(_norm(pat.split("/")))
        if any(fnmatch.fnmatchcase(p, pat) or fnmatch.fnmatchcase(p, norm) for p in paths):
            return pat
    return None


def _norm_full(name: str, delimiter: str | None) -> str:
    """A full name with INBOX (and an "INBOX<delim>" head) in one spelling, for comparisons."""
    if name.casefold() == "inbox":
        return "INBOX"
    if delimiter and name[:6].casefold() == ("inbox" + delimiter).casefold():
        return "INBOX" + name[5:]
    return name


@dataclass(frozen=True, slots=True)
class _Entry:
    mb: Mailbox
    path: str                # the store's key: the full source name, "/"-separated, INBOX normalised
    kind: str                # its namespace
    rel: tuple[str, ...]     # relative to the user's folder tree
    role: str | None


def _role_targets(target: Sequence[Mailbox], tns: Namespaces, rules) -> dict[str, tuple[list[str], bool]]:
    """role -> (target path parts relative to the target's personal namespace, exists there):
    the attribute wins, then folders.special_use_names, then a top-level well-known name, then
    the conventional English name."""
    by_flag: dict[str, list[str]] = {}
    by_name: dict[str, tuple[int, list[str]]] = {}
    existing = set()
    for mb in target:
        if _flags(mb) & NOT_MAILBOX.keys():
            continue
        kind, rel = locate(mb.name, mb.delimiter, tns)
        if kind != "personal":
            continue
        existing.add(tuple(rel))
        for f in mb.flags:
            if f.casefold() in FLAG_ROLES:
                by_flag.setdefault(FLAG_ROLES[f.casefold()], rel)
        hit = _NAME_TO_ROLE.get(rel[0].casefold()) if len(rel) == 1 else None
        if hit and (hit[0] not in by_name or hit[1] < by_name[hit[0]][0]):
            by_name[hit[0]] = (hit[1], rel)
    configured = dict(getattr(rules, "special_use_names", ()) or ())
    out = {}
    for role, name in CONVENTIONAL.items():
        if role in by_flag:
            parts = by_flag[role]
        elif role in configured:
            parts = _norm(configured[role].strip("/").split("/"))
        elif role in by_name:
            parts = by_name[role][1]
        else:
            parts = [name]
        out[role] = (parts, tuple(parts) in existing)
    return out


def plan_folders(source: Sequence[Mailbox], target: Sequence[Mailbox], rules,
                 source_ns: Namespaces | None = None, target_ns: Namespaces | None = None,
                 create_special_use: bool = False, skip: Sequence[str] = ()
                 ) -> tuple[list[FolderPlan], list[Skipped]]:
    """Which source folders to copy, and where to (see the module docstring for the rules).
    Without a namespace (the server had no NAMESPACE) it is guessed from LIST.
    ``skip``: the source provider's folders never to copy (its preset's ``skip_folders``: full
    names with "/" between levels, compared exactly; INBOX in any case)."""
    skip_paths = {"/".join(_norm(p.split("/"))) for p in skip}
    if rules.layout not in ("mirror", "under"):
        raise ValueError(f"unknown layout {rules.layout!r}")
    sns = source_ns or guess(source)
    tns = target_ns or guess(target)
    wanted_ns = tuple(getattr(rules, "namespaces", ("personal",)))

    def split_rule(p: str) -> list[str]:
        return _norm(p.strip("/").split("/")) if p.strip("/") else []

    listed = {_norm_full(mb.name, mb.delimiter) for mb in target if not _flags(mb) & NOT_MAILBOX.keys()}
    maps = [(split_rule(k), split_rule(v)) for k, v in rules.map]

    entries: list[_Entry] = []
    seen: set[str] = set()
    for mb in source:
        path = "/".join(_norm(split_path(mb.name, mb.delimiter)))
        if path in seen:
            continue  # duplicate LIST entry
        seen.add(path)
        kind, rel = locate(mb.name, mb.delimiter, sns)
        role = None
        if kind == "personal":
            role = "inbox" if rel == ["INBOX"] else next(
                (FLAG_ROLES[f.casefold()] for f in mb.flags if f.casefold() in FLAG_ROLES), None)
            if role is None:
                hit = _name_role(rel)
                role = hit[0] if hit else None
        entries.append(_Entry(mb, path, kind, tuple(rel), role))

    skipped: list[Skipped] = []
    kept: list[_Entry] = []
    for e in entries:
        flags = _flags(e.mb)
        relpath = "/".join(e.rel)
        reason = None
        if flags & NOT_MAILBOX.keys():
            reason = f"{NOT_MAILBOX[min(flags & NOT_MAILBOX.keys())]} (not a mailbox)"
        elif flags & VIRTUAL.keys():
            reason = f"virtual folder ({VIRTUAL[min(flags & VIRTUAL.keys())]})"
        elif e.path in skip_paths:
            reason = "the provider's preset skips it (quirks.skip_folders)"
        elif (len(e.rel) == 2 and e.rel[0] in _ROLE_PARENTS[1:]
              and e.rel[1].casefold() in _VIRTUAL_NAMES):
            reason = f"virtual folder ({_VIRTUAL_NAMES[e.rel[1].casefold()]}, by name)"
        elif e.kind not in wanted_ns:
            reason = f"in the {e.kind} namespace (not in folders.namespaces)"
        elif (pat := _excluded_by((relpath, e.path), rules.exclude)) is not None:
            reason = f"excluded by rule {pat!r}"
        if reason:
            skipped.append(Skipped(e.path, reason))
        else:
            kept.append(e)

    # One holder per role: attribute, then a real mailbox over an implicit parent, then the
    # better name, then the smaller path.  Implicit parents ("Sent" of a listed "Sent/2020") count.
    winners: dict[tuple[str, ...], str] = {}
    use_roles = rules.special_use and rules.layout == "mirror"
    if use_roles:
        cands: dict[str, list[tuple[tuple, tuple[str, ...]]]] = defaultdict(list)
        real = {e.rel: e for e in kept if e.kind == "personal"}
        for rel, e in real.items():
            if e.role and e.role != "inbox":
                flagged = any(f.casefold() in FLAG_ROLES for f in e.mb.flags)
                hit = _name_role(rel)
                cands[e.role].append(((not flagged, False, hit[1] if hit else 0, "/".join(rel)), rel))
        for rel in list(real):
            for n in range(1, len(rel)):
                anc = rel[:n]
                if anc in real:
                    continue
                hit = _name_role(anc)
                if hit and hit[0] != "inbox":
                    cands[hit[0]].append(((True, True, hit[1], "/".join(anc)), anc))
        for role, lst in cands.items():
            winners[min(lst)[1]] = role
    role_targets = _role_targets(target, tns, rules) if use_roles else {}

    def target_parts(e: _Entry) -> tuple[list[str], str | None]:
        rel = list(e.rel)
        best = None
        for cand in (rel, _norm(e.path.split("/"))):
            for key, dest in maps:
                if key and cand[: len(key)] == key and (best is None or len(key) > len(best[0])):
                    best = (key, dest, cand)
        if best:
            return best[1] + best[2][len(best[0]):], None
        for n in range(len(rel), 0, -1):
            role = winners.get(tuple(rel[:n]))
            if role:
                parts, exists = role_targets[role]
                use = ROLE_FLAG[role] if n == len(rel) and not exists and create_special_use else None
                return parts + rel[n:], use
        if rules.layout == "under":
            return split_rule(rules.prefix) + rel, None
        return rel, None

    planned = []
    for e in kept:
        parts, use = target_parts(e)
        tname = reroot(_norm(parts), tns)
        planned.append((e, tname, use))

    by_target: dict[str, list[str]] = defaultdict(list)
    for e, tname, _ in planned:
        by_target[_norm_full(tname, tns.personal.delimiter)].append(e.path)

    plans = []
    for e, tname, use in planned:
        key = _norm_full(tname, tns.personal.delimiter)
        plans.append(FolderPlan(
            source=e.mb.name, target=tname, path=e.path, role=e.role, target_exists=key in listed,
            merged_with=tuple(sorted(p for p in by_target[key] if p != e.path)),
            create_use=None if key in listed else use))
    plans.sort(key=lambda p: (p.path != "INBOX", p.path))
    skipped.sort(key=lambda s: s.path)
    return plans, skipped


@dataclass(frozen=True, slots=True)
class MappingChange:
    path: str
    kept: str       # the target recorded at the folder's first copy
    would_be: str   # what the current plan says


def keep_recorded(plans: Sequence[FolderPlan], recorded: dict[str, str],
                  target: Sequence[Mailbox]) -> tuple[list[FolderPlan], list[MappingChange]]:
    """A folder copied before keeps its recorded target: the plan's new target is only reported
    (``mailsyncctl remap`` applies it).  Returns the plans to follow and the changes not applied."""
    listed = {_norm_full(mb.name, mb.delimiter) for mb in target if not _flags(mb) & NOT_MAILBOX.keys()}
    delim = next((mb.delimiter for mb in target if mb.delimiter), None)
    out, changes = [], []
    for p in plans:
        old = recorded.get(p.path)
        if old is not None and old != p.target:
            changes.append(MappingChange(p.path, old, p.target))
            p = FolderPlan(p.source, old, p.path, p.role, _norm_full(old, delim) in listed, ())
        out.append(p)
    by_target: dict[str, list[str]] = defaultdict(list)
    for p in out:
        by_target[p.target].append(p.path)
    out = [FolderPlan(p.source, p.target, p.path, p.role, p.target_exists,
                      tuple(sorted(x for x in by_target[p.target] if x != p.path)), p.create_use) for p in out]
    return out, changes
