"""``domains:``: each migrated domain with its source, target, folders, sync and cutover."""

import re
from dataclasses import dataclass, field

from ._base import _boolean, _Errors, _got, _Invalid, _join, _Section, _str_list
from .endpoint import Endpoint, _endpoint
from .folders import FolderRules, _folders
from .sync import SyncSettings, _sync


@dataclass(frozen=True, slots=True)
class Domain:
    name: str
    source: Endpoint
    target: Endpoint
    folders: FolderRules = field(default_factory=FolderRules)
    sync: SyncSettings = field(default_factory=SyncSettings)
    cutover: float | None = None    # epoch seconds: when the domain's migration ends
    plans: tuple[str, ...] = ("import", "login")   # how accounts may enter: import | login | self_service
    allow_rename: bool = False      # self-service: the new address may differ from the old one

    def allows(self, plan: str) -> bool:
        return plan in self.plans



def _domain_name(key: object) -> str:
    name = key.lower() if isinstance(key, str) else ""
    labels = name.split(".")
    if not name or len(name) > 253 or not all(
            re.fullmatch(r"[\w-]{1,63}", lab) and lab[0] != "-" and lab[-1] != "-" for lab in labels):
        raise _Invalid("not a valid domain name (no spaces, '@' or empty labels; e.g. example.com)")
    return name



def _domains(errs: _Errors, node: object, base_dir: str, sync: SyncSettings) -> dict[str, Domain]:
    if not isinstance(node, dict) or not node:
        errs.add("domains", f"must be a non-empty mapping of domain name: settings (got {_got(node)})")
        return {}
    out: dict[str, Domain] = {}
    for key, body in node.items():
        path = _join("domains", key)
        name = None
        try:
            name = _domain_name(key)
        except _Invalid as e:
            errs.add(path, str(e))
        if name in out:
            errs.add(path, f"duplicate of domain {name!r} (domain names are case-insensitive)")
            name = None
        s = _Section(errs, body, path, ("source", "target", "folders", "sync", "cutover", "plans", "allow_rename"))
        ends = {}
        for role in ("source", "target"):
            if s.has(role):
                ends[role] = _endpoint(errs, s.node[role], _join(path, role), base_dir, role)
            else:
                errs.add(_join(path, role), "required key is missing")
        folders = _folders(errs, s.node.get("folders"), _join(path, "folders"))
        dsync = _sync(errs, s.node.get("sync"), _join(path, "sync"), sync)
        cutover = s.get("cutover", _instant, None)
        plans = s.get("plans", _plans, ("import", "login"))
        allow_rename = s.get("allow_rename", _boolean, False)
        if name and len(ends) == 2:
            out[name] = Domain(name, ends["source"], ends["target"], folders, dsync, cutover, plans, allow_rename)
    return out


PLANS = ("import", "login", "self_service")


def _plans(v) -> tuple[str, ...]:
    items = _str_list(v)
    bad = [p for p in items if p not in PLANS]
    if bad or not items:
        raise _Invalid("must be a non-empty list of: " + ", ".join(PLANS))
    return tuple(dict.fromkeys(items))


def _instant(v) -> float:
    import datetime as dt
    if isinstance(v, dt.datetime):     # YAML parses an unquoted timestamp itself
        when = v
    elif isinstance(v, str):
        try:
            when = dt.datetime.fromisoformat(v)
        except ValueError:
            raise _Invalid('must be an ISO 8601 time with its zone, e.g. "2026-12-31T18:00:00+08:00"') from None
    else:
        raise _Invalid('must be an ISO 8601 time with its zone, e.g. "2026-12-31T18:00:00+08:00"')
    if when.tzinfo is None:
        raise _Invalid("needs a time zone (e.g. +08:00 or Z): a bare time is ambiguous")
    return when.timestamp()


