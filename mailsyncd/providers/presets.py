"""Provider presets: ``presets.yaml`` (the old providers' servers, MX patterns and quirks) loaded,
validated and matched against MX and server host names.

A preset carries the provider's quirks (``send_id``, ``max_connections``, ``app_password`` with the
refusal words that ask for it, ``skip_folders``; applied at run time by :mod:`.quirks`) and an auth
hint (app password / 授权码).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml

PRESETS_PATH = Path(__file__).with_name("presets.yaml")
SECURITIES = ("tls", "starttls")
PROTOCOLS = ("imap", "pop3")


class Server(NamedTuple):
    host: str
    port: int
    security: str  # "tls" | "starttls"

    def __str__(self) -> str:
        return f"{self.host}:{self.port} ({self.security})"


@dataclass(frozen=True)
class AppPassword:
    """The provider wants a password made for mail clients (授权码, app password), not the account's."""
    name_en: str
    name_zh: str
    help_url: str | None
    refusal_patterns: tuple[re.Pattern[str], ...]   # searched in the source's refusal of a login

    def refusal_matches(self, text: str) -> bool:
        """Do the source's words say "use the app password"?  (``text``: the server's words only.)"""
        text = text[:2000]     # hostile text, our patterns: bound the work
        return any(p.search(text) for p in self.refusal_patterns)


@dataclass(frozen=True)
class Preset:
    key: str
    name: str
    name_zh: str
    mx: tuple[str, ...]
    imap: Server | None
    pop3: Server | None
    send_id: bool
    auth_hint_en: str
    auth_hint_zh: str
    max_connections: int | None
    app_password: AppPassword | None = None
    skip_folders: tuple[str, ...] = ()

    def server(self, protocol: str) -> Server | None:
        return {"imap": self.imap, "pop3": self.pop3}[protocol]

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key, "name": self.name, "name_zh": self.name_zh, "mx": list(self.mx),
            "imap": self.imap._asdict() if self.imap else None,
            "pop3": self.pop3._asdict() if self.pop3 else None,
            "send_id": self.send_id, "max_connections": self.max_connections,
            "auth_hint_en": self.auth_hint_en, "auth_hint_zh": self.auth_hint_zh,
            "app_password": None if self.app_password is None else {
                "name_en": self.app_password.name_en, "name_zh": self.app_password.name_zh,
                "help_url": self.app_password.help_url,
                "refusal_patterns": [p.pattern for p in self.app_password.refusal_patterns]},
            "skip_folders": list(self.skip_folders),
        }


class PresetError(ValueError):
    """The presets file is unusable; ``.errors`` lists every problem, each naming preset and key."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("invalid presets:\n  " + "\n  ".join(self.errors))


_HOST_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$")
_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_PRESET_KEYS = {"name", "name_zh", "mx", "imap", "pop3", "quirks"}
_QUIRK_KEYS = {"send_id", "max_connections", "auth_hint", "app_password", "skip_folders"}
_APP_PASSWORD_KEYS = {"name_en", "name_zh", "help_url", "refusal_patterns"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _is_hostname(s: object) -> bool:
    return isinstance(s, str) and bool(_HOST_RE.match(s))


def _check_server(where: str, v: object, errs: list[str]) -> Server | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        errs.append(f"{where}: must be a mapping {{host, port, security}} or null, not {v!r}")
        return None
    unknown = sorted(set(v) - {"host", "port", "security"})
    if unknown:
        errs.append(f"{where}: unknown key(s) {', '.join(map(str, unknown))} (allowed: host, port, security)")
    host, port, sec = v.get("host"), v.get("port"), v.get("security")
    ok = True
    if not _is_hostname(host):
        errs.append(f"{where}.host: must be a lowercase host name, not {host!r}")
        ok = False
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        errs.append(f"{where}.port: must be an integer 1..65535, not {port!r}")
        ok = False
    if sec not in SECURITIES:
        errs.append(f"{where}.security: must be one of {', '.join(SECURITIES)}, not {sec!r}")
        ok = False
    return Server(host, port, sec) if ok else None


def _check_text(where: str, v: object, errs: list[str]) -> str:
    if not isinstance(v, str) or not v.strip():
        errs.append(f"{where}: must be a non-empty string, not {v!r}")
        return ""
    # YAML folding joins lines with a space; after CJK punctuation that space is noise
    return re.sub(r"(?<=[\u3000-\u303f\uff00-\uffef])\s+", "", " ".join(v.split()))


def _check_app_password(where: str, v: object, errs: list[str]) -> AppPassword | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        errs.append(f"{where}: must be a mapping {{name_en, name_zh, help_url, refusal_patterns}}, not {v!r}")
        return None
    n0 = len(errs)
    unknown = sorted(map(str, set(v) - _APP_PASSWORD_KEYS))
    if unknown:
        errs.append(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_APP_PASSWORD_KEYS))})")
    names = {}
    for k in ("name_en", "name_zh"):
        # one line: it goes into an IMAP response line
        t = _check_text(f"{where}.{k}", v.get(k), errs)
        if t and (_CONTROL.search(t) or len(t) > 60):
            errs.append(f"{where}.{k}: must be one short line (at most 60 characters), not {t!r}")
        names[k] = t
    url = v.get("help_url")
    if url is not None and (not isinstance(url, str) or not re.fullmatch(r"https?://[!-~]{1,300}", url)):
        errs.append(f"{where}.help_url: must be an http(s) URL without spaces, not {url!r}")
    raw = v.get("refusal_patterns")
    pats: list[re.Pattern[str]] = []
    if not isinstance(raw, list):
        errs.append(f"{where}.refusal_patterns: must be a list of regular expressions ([] for none), not {raw!r}")
    else:
        for i, pat in enumerate(raw):
            if not isinstance(pat, str) or not pat.strip():
                errs.append(f"{where}.refusal_patterns[{i}]: must be a non-empty string, not {pat!r}")
                continue
            try:
                rx = re.compile(pat)
            except re.error as e:
                errs.append(f"{where}.refusal_patterns[{i}]: {pat!r} is not a valid regular expression: {e}")
                continue
            if rx.search(""):
                errs.append(f"{where}.refusal_patterns[{i}]: {pat!r} matches an empty text: it would give the "
                            "hint for every refusal")
                continue
            pats.append(rx)
    if len(errs) > n0:
        return None
    return AppPassword(names["name_en"], names["name_zh"], url, tuple(pats))


def _check_folder_names(where: str, v: object, errs: list[str]) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, list):
        errs.append(f"{where}: must be a list of folder names (levels joined with '/'), not {v!r}")
        return ()
    out = []
    for i, name in enumerate(v):
        if not isinstance(name, str) or not name.strip("/ ") or _CONTROL.search(name) or "//" in name:
            errs.append(f"{where}[{i}]: must be a folder name like '[Gmail]/All Mail' (no empty levels or "
                        f"control characters), not {name!r}")
        else:
            out.append(name.strip("/"))
    return tuple(out)


def _parse_preset(key: str, d: object, errs: list[str]) -> Preset | None:
    n0 = len(errs)
    where = f"preset {key!r}"
    if not isinstance(key, str) or not _KEY_RE.match(key):
        errs.append(f"{where}: key must match [a-z][a-z0-9_]*")
    if not isinstance(d, dict):
        errs.append(f"{where}: must be a mapping, not {type(d).__name__}")
        return None
    unknown = sorted(map(str, set(d) - _PRESET_KEYS))
    if unknown:
        errs.append(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_PRESET_KEYS))})")
    for k in ("name", "name_zh", "mx", "quirks"):
        if k not in d:
            errs.append(f"{where}: missing key {k!r}")
    for k in ("imap", "pop3"):
        if k not in d:
            errs.append(f"{where}: missing key {k!r} (null when not offered)")
    name = _check_text(f"{where}: name", d.get("name"), errs) if "name" in d else ""
    name_zh = _check_text(f"{where}: name_zh", d.get("name_zh"), errs) if "name_zh" in d else ""
    mx: list[str] = []
    raw_mx = d.get("mx")
    if "mx" in d:
        if not isinstance(raw_mx, list) or not raw_mx:
            errs.append(f"{where}: mx: must be a non-empty list of MX host patterns, not {raw_mx!r}")
        else:
            for i, p in enumerate(raw_mx):
                bare = p[2:] if isinstance(p, str) and p.startswith("*.") else p
                if not _is_hostname(bare) or "." not in bare:
                    errs.append(f"{where}: mx[{i}]: {p!r} is not a pattern like 'mx.example.com' or "
                                f"'*.example.com' (lowercase, no trailing dot)")
                else:
                    mx.append(p)
    imap = _check_server(f"{where}: imap", d.get("imap"), errs)
    pop3 = _check_server(f"{where}: pop3", d.get("pop3"), errs)
    if "imap" in d and "pop3" in d and d.get("imap") is None and d.get("pop3") is None:
        errs.append(f"{where}: imap and pop3 are both null: a preset needs at least one server")
    q = d.get("quirks")
    send_id, maxc, hint_en, hint_zh, app, skip = False, None, "", "", None, ()
    if "quirks" in d:
        if not isinstance(q, dict):
            errs.append(f"{where}: quirks: must be a mapping, not {q!r}")
        else:
            unknown = sorted(map(str, set(q) - _QUIRK_KEYS))
            if unknown:
                errs.append(f"{where}: quirks: unknown key(s) {', '.join(unknown)} "
                            f"(allowed: {', '.join(sorted(_QUIRK_KEYS))})")
            send_id = q.get("send_id", False)
            if not isinstance(send_id, bool):
                errs.append(f"{where}: quirks.send_id: must be true or false, not {send_id!r}")
            maxc = q.get("max_connections")
            if maxc is not None and (isinstance(maxc, bool) or not isinstance(maxc, int) or not 1 <= maxc <= 1000):
                errs.append(f"{where}: quirks.max_connections: must be an integer 1..1000 or null, not {maxc!r}")
            hint = q.get("auth_hint")
            if not isinstance(hint, dict) or set(hint) != {"en", "zh"}:
                errs.append(f"{where}: quirks.auth_hint: must be a mapping with exactly the keys en and zh, "
                            f"not {hint!r}")
            else:
                hint_en = _check_text(f"{where}: quirks.auth_hint.en", hint["en"], errs)
                hint_zh = _check_text(f"{where}: quirks.auth_hint.zh", hint["zh"], errs)
            app = _check_app_password(f"{where}: quirks.app_password", q.get("app_password"), errs)
            skip = _check_folder_names(f"{where}: quirks.skip_folders", q.get("skip_folders"), errs)
    if len(errs) > n0:
        return None
    return Preset(key=key, name=name, name_zh=name_zh, mx=tuple(mx), imap=imap, pop3=pop3, send_id=send_id,
                  auth_hint_en=hint_en, auth_hint_zh=hint_zh, max_connections=maxc, app_password=app,
                  skip_folders=skip)


def load_presets(path: str | Path | None = None) -> dict[str, Preset]:
    """Read and validate a presets file (default: the ``presets.yaml`` shipped beside this module).

    Raises :class:`PresetError` listing every problem, each as ``FILE: preset 'KEY': FIELD: what``.
    """
    p = Path(path) if path is not None else PRESETS_PATH
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise PresetError([f"{p}: cannot read: {e.strerror or e}"]) from None
    except UnicodeDecodeError:
        raise PresetError([f"{p}: not valid UTF-8"]) from None
    try:
        # libyaml's parser where PyYAML has it: a tenth of the pure-Python one's time, paid at every start
        doc = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader
    except yaml.YAMLError as e:
        raise PresetError([f"{p}: not valid YAML: {e}"]) from None
    if not isinstance(doc, dict) or set(doc) != {"presets"} or not isinstance(doc["presets"], dict) \
            or not doc["presets"]:
        raise PresetError([f"{p}: must be a mapping with the single key 'presets' holding a non-empty "
                           f"mapping of presets"])
    errs: list[str] = []
    out: dict[str, Preset] = {}
    owner: dict[str, str] = {}
    for key, d in doc["presets"].items():
        preset = _parse_preset(key, d, errs)
        raw_mx = d.get("mx") if isinstance(d, dict) else None
        for pat in raw_mx if isinstance(raw_mx, list) else ():
            if isinstance(pat, str) and pat in owner:
                errs.append(f"preset {key!r}: mx: pattern {pat!r} is already used by preset {owner[pat]!r}")
            elif isinstance(pat, str):
                owner[pat] = key
        if preset is not None:
            out[key] = preset
    if errs:
        raise PresetError([f"{p}: {e}" for e in errs])
    return out


@functools.lru_cache(maxsize=1)
def default_presets() -> dict[str, Preset]:
    """The shipped presets, loaded once."""
    return load_presets()


def _pattern_matches(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern or host.endswith("." + pattern)


def _norm_host(h: str) -> str:
    return str(h).strip().rstrip(".").lower()


def _match_mx(mx_hosts: Iterable[str], presets: dict[str, Preset]) -> tuple[Preset, str, str] | None:
    """(preset, MX host, pattern) for the first MX host (in the order given) that matches any
    preset; among several matching patterns the longest (most specific) wins."""
    for raw in mx_hosts:
        host = _norm_host(raw)
        best: tuple[int, Preset, str] | None = None
        for preset in presets.values():
            for pat in preset.mx:
                if _pattern_matches(pat, host) and (best is None or len(pat) > best[0]):
                    best = (len(pat), preset, pat)
        if best is not None:
            return best[1], host, best[2]
    return None


def match_mx(mx_hosts: list[str], presets: dict[str, Preset] | None = None) -> Preset | None:
    """The preset of the first MX host (pass them most preferred first) that matches one."""
    m = _match_mx(mx_hosts, default_presets() if presets is None else presets)
    return m[0] if m else None


def preset_for_host(host: str, presets: dict[str, Preset] | None = None) -> Preset | None:
    """The preset whose IMAP or POP3 server is ``host`` (so that its quirks apply)."""
    presets = default_presets() if presets is None else presets
    host = _norm_host(host)
    for preset in presets.values():
        if any(s is not None and s.host == host for s in (preset.imap, preset.pop3)):
            return preset
    return None


