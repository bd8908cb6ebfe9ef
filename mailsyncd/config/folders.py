"""``folders:`` of a domain: how source folder names become target folder names."""

from dataclasses import dataclass

from ._base import _boolean, _choice, _Errors, _got, _Invalid, _join, _Section, _str_list


@dataclass(frozen=True, slots=True)
class FolderRules:
    layout: str = "mirror"
    prefix: str = ""
    map: tuple[tuple[str, str], ...] = ()
    exclude: tuple[str, ...] = ()
    special_use: bool = True
    namespaces: tuple[str, ...] = ("personal",)          # personal | other | shared
    special_use_names: tuple[tuple[str, str], ...] = ()   # (role, target path) for roles without one



def _folder_path(v):
    # Names are "/"-separated paths; a leading/trailing or doubled "/" would
    # make an empty path component.
    if not isinstance(v, str) or not v or v.startswith("/") or v.endswith("/") or "//" in v:
        raise _Invalid("must be a non-empty folder path, '/'-separated, not starting or ending with '/'")
    return v


def _folders(errs: _Errors, node: object, path: str) -> FolderRules:
    s = _Section(errs, node, path, ("layout", "prefix", "map", "exclude", "special_use", "namespaces",
                                    "special_use_names"))
    layout = s.get("layout", _choice("mirror", "under"), "mirror")
    prefix = s.get("prefix", _folder_path, "")
    if layout == "under" and not s.has("prefix"):
        errs.add(_join(path, "prefix"), "required with layout: under")
    if layout == "mirror" and s.has("prefix"):
        errs.add(_join(path, "prefix"), "only used with layout: under")
    pairs = []
    raw = s.node.get("map")
    if raw is not None and not isinstance(raw, dict):
        errs.add(_join(path, "map"), f"must be a mapping of source folder: target folder (got {_got(raw)})")
    for src, dst in (raw or {}).items() if isinstance(raw, dict) else ():
        entry = _join(_join(path, "map"), src)
        try:
            pairs.append((_folder_path(src), _folder_path(dst)))
        except _Invalid as e:
            errs.add(entry, f"both names {e} (got {_got(src)}: {_got(dst)})")
    return FolderRules(layout=layout, prefix=prefix if layout == "under" else "", map=tuple(pairs),
                       exclude=s.get("exclude", _str_list, ()),
                       special_use=s.get("special_use", _boolean, True),
                       namespaces=s.get("namespaces", _namespaces, ("personal",)),
                       special_use_names=_special_use_names(errs, s.node.get("special_use_names"),
                                                            _join(path, "special_use_names")))


def _namespaces(v):
    items = _str_list(v)
    bad = [x for x in items if x not in ("personal", "other", "shared")]
    if bad:
        raise _Invalid(f"unknown namespace {bad[0]!r} (known: personal, other, shared)")
    if "personal" not in items:
        raise _Invalid("must include personal (the user's own folders)")
    return tuple(dict.fromkeys(items))


def _special_use_names(errs: _Errors, node: object, path: str) -> tuple[tuple[str, str], ...]:
    if node is None:
        return ()
    if not isinstance(node, dict):
        errs.add(path, f"must be a mapping of role: target folder (got {_got(node)})")
        return ()
    out = []
    for role, name in node.items():
        if role not in ("sent", "drafts", "trash", "junk", "archive"):
            errs.add(_join(path, str(role)), "unknown role (known: sent, drafts, trash, junk, archive)")
            continue
        try:
            out.append((role, _folder_path(name)))
        except _Invalid as e:
            errs.add(_join(path, role), f"{e} (got {_got(name)})")
    return tuple(out)


