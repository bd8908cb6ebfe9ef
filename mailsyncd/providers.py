"""Find a domain's OLD mail server for ``source: {host: auto}`` -- and say why.

:func:`detect` tries three steps in order and stops at the first that decides:

1. **preset** -- the domain's MX records (dnspython) matched against the provider presets in
   ``presets.yaml`` (:func:`load_presets`, :func:`match_mx`): Tencent Exmail, NetEase, Alibaba,
   Google, Microsoft, ...  A preset also carries the provider's quirks (``send_id``,
   ``max_connections``, ``app_password`` with the refusal words that ask for it, ``skip_folders``;
   applied at run time by :mod:`mailsyncd.quirks`) and an auth hint (app password / 授权码).
2. **srv** -- RFC 6186 SRV records ``_imaps._tcp``, ``_imap._tcp``, ``_pop3s._tcp`` and
   ``_pop3._tcp``.  A target of ``"."`` means "decidedly not offered" (RFC 2782, RFC 6186 s. 4).
   The preferred protocol (``prefer``, IMAP by default: POP3 sees only the inbox) is taken
   whenever the domain publishes it; among its records the lowest priority wins (RFC 2782),
   implicit TLS before STARTTLS at equal priority (RFC 8314 s. 5.1 prefers implicit TLS), then
   the highest weight.  RFC 6186 s. 3.4 lets the priority rank IMAP against POP3 too; when the
   domain ranks the other protocol first, the reasons say so.  RFC 6186 s. 6: the certificate
   is checked against the mail domain (:attr:`Detection.tls_name`), or against the SRV target
   when the target lies in the mail domain, so a forged SRV answer cannot send us to a host
   whose certificate merely names itself.
3. **probe** -- ``imap.<domain>`` then ``mail.<domain>``, on 993 (implicit TLS) then 143
   (STARTTLS), with a live IMAP greeting + CAPABILITY (:func:`imap_probe`).  Certificates are
   verified; nothing is ever sent but CAPABILITY, STARTTLS and LOGOUT -- never credentials.
   Port 143 without STARTTLS is not used (cleartext).

An MX or SRV answer whose host resolves to a loopback, private, link-local, multicast,
reserved or unspecified address is refused (a DNS answer must not point us inside the network)
unless ``allow_private`` is set (config ``dns.allow_private``).

Every step tried is recorded in words (:attr:`Detection.reasons`, or
:attr:`DetectionFailed.steps` when nothing was found), e.g.
``"MX: mx1.qiye.aliyun.com matches '*.qiye.aliyun.com' -> preset aliyun (Alibaba Mail)"``.

Network access goes through injectable pieces so tests point them at local servers: a
``dns.resolver.Resolver`` (``resolver=``), a ``probe(host, port, security, timeout)`` function
(``probe=``; the default, :func:`make_probe`, resolves probe hosts with the same resolver when one
was given) and the probe ports (``probe_ports=``).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import dns.exception
import dns.name
import dns.resolver
import yaml

__all__ = [
    "Server", "Preset", "AppPassword", "PresetError", "preset_for_host", "load_presets", "default_presets", "match_mx",
    "Detection", "DetectionFailed", "detect", "ProbeError", "imap_probe", "make_probe",
    "DEFAULT_PROBE_PORTS", "PROBE_PREFIXES", "SRV_SERVICES", "PRESETS_PATH",
]

PRESETS_PATH = Path(__file__).with_name("presets.yaml")

SECURITIES = ("tls", "starttls")
PROTOCOLS = ("imap", "pop3")
STEPS = ("preset", "srv", "probe")
DEFAULT_PROBE_PORTS: tuple[tuple[int, str], ...] = ((993, "tls"), (143, "starttls"))
PROBE_PREFIXES: tuple[str, ...] = ("imap", "mail")
# (label, protocol, security), in the order they are asked and listed
SRV_SERVICES: tuple[tuple[str, str, str], ...] = (
    ("_imaps._tcp", "imap", "tls"),
    ("_imap._tcp", "imap", "starttls"),
    ("_pop3s._tcp", "pop3", "tls"),
    ("_pop3._tcp", "pop3", "starttls"),
)

ProbeFunc = Callable[[str, int, str, float], "str | None"]


# ============================================================================ presets

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
        doc = yaml.safe_load(text)
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


# ============================================================================ probe

class ProbeError(Exception):
    """Why a probe found no usable IMAP server.  ``no_host``: the name does not resolve, so the
    other ports of that host need not be tried."""

    def __init__(self, message: str, *, no_host: bool = False) -> None:
        super().__init__(message)
        self.no_host = no_host


def _addresses(host: str, port: int, resolver: dns.resolver.Resolver | None, timeout: float) -> list[str]:
    if resolver is None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise ProbeError(f"cannot resolve: {e.strerror}", no_host=True) from None
        return list(dict.fromkeys(info[4][0] for info in infos))
    addrs: list[str] = []
    nx = False
    problems = []
    for rdtype in ("A", "AAAA"):
        res = _query(resolver, host, rdtype, timeout)
        nx = nx or res.nxdomain
        if res.error and not res.nxdomain:
            problems.append(f"{rdtype}: {res.error}")
        addrs += [r.address for r in res.records]
    if addrs:
        return addrs
    if nx:
        raise ProbeError("no such host (NXDOMAIN)", no_host=True)
    raise ProbeError("no A/AAAA record" + (f" ({'; '.join(problems)})" if problems else ""),
                     no_host=True)


class _Lines:
    """Line reader/writer on a socket, with a hard cap on line length."""

    MAX_LINE = 65536

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.tag = 0

    def readline(self) -> str:
        while b"\n" not in self.buf:
            if len(self.buf) > self.MAX_LINE:
                raise ProbeError("server sent an over-long line")
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ProbeError("connection closed by the server"
                                 + (f" after {self.buf[:80]!r}" if self.buf else ""))
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def command(self, cmd: str) -> tuple[str, list[str]]:
        """Send ``cmd``; return (tagged status line, untagged lines)."""
        self.tag += 1
        tag = f"p{self.tag}"
        self.sock.sendall(f"{tag} {cmd}\r\n".encode("ascii"))
        untagged = []
        while True:
            line = self.readline()
            if line.startswith(tag + " "):
                return line[len(tag) + 1:], untagged
            untagged.append(line)


def _capability(conn: _Lines) -> str:
    status, untagged = conn.command("CAPABILITY")
    if not status.upper().startswith("OK"):
        raise ProbeError(f"CAPABILITY refused: {status[:120]}")
    for line in untagged:
        if line.upper().startswith("* CAPABILITY "):
            return line[len("* CAPABILITY "):].strip()
    m = re.search(r"\[CAPABILITY ([^\]]*)\]", status, re.I)
    if m:
        return m.group(1).strip()
    raise ProbeError("no CAPABILITY in the answer to CAPABILITY")


def _tls_wrap(ctx: ssl.SSLContext, sock: socket.socket, host: str) -> ssl.SSLSocket:
    try:
        return ctx.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as e:
        raise ProbeError(f"TLS certificate not accepted for {host}: {e.verify_message or e.reason}") from None
    except (ssl.SSLError, OSError) as e:
        raise ProbeError(f"TLS handshake failed: {e}") from None


def _imap_session(sock: socket.socket, host: str, security: str, ctx: ssl.SSLContext) -> str:
    if security == "tls":
        sock = _tls_wrap(ctx, sock, host)
    conn = _Lines(sock)
    greeting = conn.readline()
    if re.match(r"\* BYE\b", greeting, re.I):
        raise ProbeError(f"server refused the connection: {greeting[:120]}")
    if not re.match(r"\* (OK|PREAUTH)\b", greeting, re.I):
        raise ProbeError(f"not an IMAP server (greeting {greeting[:80]!r})")
    caps = _capability(conn)
    if security == "starttls":
        if "STARTTLS" not in caps.upper().split():
            raise ProbeError("IMAP without STARTTLS (cleartext only: not used)")
        status, _ = conn.command("STARTTLS")
        if not status.upper().startswith("OK"):
            raise ProbeError(f"STARTTLS refused: {status[:120]}")
        if conn.buf:  # RFC 3501 s. 6.2.1: nothing may follow the OK before the handshake
            raise ProbeError("server sent data after STARTTLS OK (possible injection): not used")
        conn = _Lines(_tls_wrap(ctx, conn.sock, host))
        conn.tag = 10
        caps = _capability(conn)  # the capabilities before TLS are not to be trusted
    try:
        conn.command("LOGOUT")
    except (OSError, ProbeError):
        pass
    return caps


def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()  # system CAs, hostname check, TLS >= 1.2
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=ca_file)  # in addition to the system's
        except (OSError, ssl.SSLError) as e:
            raise ValueError(f"cannot load CA file {ca_file}: {e}") from None
    return ctx


def imap_probe(host: str, port: int, security: str, timeout: float, *,
               resolver: dns.resolver.Resolver | None = None, ca_file: str | None = None,
               ssl_context: ssl.SSLContext | None = None) -> str:
    """Connect to an IMAP server and return its CAPABILITY (after TLS); raise :class:`ProbeError`.

    ``security``: ``"tls"`` (implicit TLS, e.g. 993) or ``"starttls"`` (e.g. 143: greeting,
    CAPABILITY, STARTTLS, then CAPABILITY again over TLS).  The certificate is verified against
    the system's CAs plus ``ca_file`` and must match ``host``.  Names are resolved with
    ``resolver`` when given (else the system resolver).  ``ssl_context`` replaces the context
    built from ``ca_file``.  Sends no credentials.
    """
    if security not in SECURITIES:
        raise ValueError(f"security must be one of {SECURITIES}, not {security!r}")
    ctx = ssl_context or _ssl_context(ca_file)
    errors = []
    for addr in _addresses(host, port, resolver, timeout):
        where = f"{addr}" if addr != host else host
        try:
            sock = socket.create_connection((addr, port), timeout=timeout)
        except ConnectionRefusedError:
            errors.append(f"{where}: connection refused")
            continue
        except TimeoutError:
            errors.append(f"{where}: no answer within {timeout:g}s")
            continue
        except OSError as e:
            errors.append(f"{where}: {e.strerror or e}")
            continue
        try:
            sock.settimeout(timeout)
            return _imap_session(sock, host, security, ctx)
        except TimeoutError:
            raise ProbeError(f"{where}: server went silent for {timeout:g}s") from None
        except ssl.SSLError as e:
            raise ProbeError(f"{where}: TLS error: {e}") from None
        except OSError as e:
            raise ProbeError(f"{where}: {e.strerror or e}") from None
        finally:
            sock.close()
    raise ProbeError("; ".join(errors) or "no address")


def make_probe(*, resolver: dns.resolver.Resolver | None = None, ca_file: str | None = None) -> ProbeFunc:
    """The default probe: :func:`imap_probe` with this resolver and CA file (ValueError at once
    when the CA file cannot be loaded)."""
    ctx = _ssl_context(ca_file)

    def probe(host: str, port: int, security: str, timeout: float) -> str:
        return imap_probe(host, port, security, timeout, resolver=resolver, ssl_context=ctx)
    return probe


# ============================================================================ DNS

class _Result(NamedTuple):
    records: list
    error: str | None = None
    nxdomain: bool = False


def _query(resolver: dns.resolver.Resolver, name: str, rdtype: str, timeout: float) -> _Result:
    try:
        qname = dns.name.from_text(name)  # absolute: no search list
        return _Result(list(resolver.resolve(qname, rdtype, lifetime=timeout, search=False)))
    except dns.resolver.NXDOMAIN:
        return _Result([], "no such name (NXDOMAIN)", nxdomain=True)
    except dns.resolver.NoAnswer:
        return _Result([])
    except dns.resolver.NoNameservers as e:
        return _Result([], f"no name server gave an answer ({_short(e)})")
    except dns.resolver.LifetimeTimeout:
        return _Result([], f"DNS timed out after {timeout:g}s")
    except dns.exception.Timeout:
        return _Result([], f"DNS timed out after {timeout:g}s")
    except dns.exception.DNSException as e:
        return _Result([], f"DNS error: {_short(e)}")


def _short(e: BaseException, n: int = 160) -> str:
    s = " ".join(str(e).split())
    return s if len(s) <= n else s[: n - 3] + "..."


def _normalize_domain(domain: str) -> str:
    d = (domain or "").strip()
    if "@" in d:
        d = d.rsplit("@", 1)[1]
    d = d.rstrip(".").lower()
    if not d or "." not in d:
        raise ValueError(f"not a mail domain: {domain!r}")
    try:
        return dns.name.from_text(d).to_text(omit_final_dot=True).lower()
    except dns.exception.DNSException as e:
        raise ValueError(f"not a valid domain name: {domain!r} ({e})") from None


# ============================================================================ detect

@dataclass(frozen=True)
class Detection:
    domain: str
    host: str
    port: int
    security: str  # "tls" | "starttls"
    protocol: str  # "imap" | "pop3"
    step: str  # "preset" | "srv" | "probe": which step decided
    preset: Preset | None  # the provider, when known (step preset, or the host is a preset's server)
    reasons: tuple[str, ...]  # every step tried, in words, ending with the decision
    tls_name: str | None = None  # the name the certificate must carry, when not ``host`` (SRV)

    def endpoint_settings(self) -> dict[str, Any]:
        """The config Endpoint fields this detection determines.

        host/port/security/protocol always; ``tls_name`` when the certificate must name another host
        than ``host`` (an SRV target outside the mail domain); ``preset``, ``send_id`` and ``max_connections``
        only when a preset is known (``send_id`` only when True: the Endpoint default is already True).
        """
        out: dict[str, Any] = {"host": self.host, "port": self.port, "security": self.security,
                               "protocol": self.protocol}
        if self.tls_name is not None and self.tls_name != self.host:
            out["tls_name"] = self.tls_name
        if self.preset is not None:
            out["preset"] = self.preset.key
            if self.preset.send_id:
                out["send_id"] = True
            if self.preset.max_connections is not None:
                out["max_connections"] = self.preset.max_connections
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"found": True, "domain": self.domain, "host": self.host, "port": self.port,
                "security": self.security, "protocol": self.protocol, "step": self.step,
                "tls_name": self.tls_name,
                "preset": self.preset.to_dict() if self.preset else None,
                "reasons": list(self.reasons), "endpoint": self.endpoint_settings()}


class DetectionFailed(Exception):
    """No server found; ``.steps`` says what was tried and why each step failed."""

    def __init__(self, domain: str, steps: Iterable[str]) -> None:
        self.domain = domain
        self.steps = tuple(steps)
        super().__init__(f"no mail server found for {domain}: " + "; ".join(self.steps))

    def to_dict(self) -> dict[str, Any]:
        return {"found": False, "domain": self.domain, "steps": list(self.steps)}


class _Srv(NamedTuple):
    label: str
    protocol: str
    security: str
    priority: int
    weight: int
    port: int
    target: str

    def sort_key(self) -> tuple:
        return (self.priority, SECURITIES.index(self.security), -self.weight, self.target)

    def __str__(self) -> str:
        return f"{self.label} {self.target}:{self.port} (priority {self.priority}, weight {self.weight})"


def _step_mx(domain: str, resolver, timeout: float, presets: dict[str, Preset], prefer: str,
             reasons: list[str], allow_private: bool) -> Detection | None:
    res = _query(resolver, domain, "MX", timeout)
    if res.error:
        reasons.append(f"MX: look-up of {domain} failed: {res.error}")
        return None
    if not res.records:
        reasons.append(f"MX: {domain} has no MX records")
        return None
    recs = sorted(res.records, key=lambda r: (r.preference, _norm_host(r.exchange)))
    hosts = [_norm_host(r.exchange) for r in recs]
    if hosts == [""]:
        reasons.append(f"MX: {domain} has a null MX (RFC 7505): it receives no mail")
        return None
    listed = ", ".join(f"{h} ({r.preference})" for h, r in zip(hosts, recs, strict=True))
    m = _match_mx([h for h in hosts if h], presets)
    if m is None:
        reasons.append(f"MX: no preset matches {listed}")
        return None
    preset, host, pattern = m
    inside = _private_addresses(host, resolver, timeout, allow_private)
    if inside:
        reasons.append(f"MX: {host} resolves to {inside}: a non-public address, refused "
                       "(dns.allow_private: true allows it)")
        return None
    reasons.append(f"MX: {host} -> preset {preset.key} ({preset.name}; pattern {pattern!r}; MX: {listed})")
    protocol = prefer if preset.server(prefer) is not None else _other(prefer)
    if protocol != prefer:
        reasons.append(f"preset: {preset.key} offers no {prefer.upper()}; using {protocol.upper()}")
    srv = preset.server(protocol)
    assert srv is not None
    reasons.append(f"decision: preset {preset.key}: {protocol.upper()} {srv}")
    return Detection(domain, srv.host, srv.port, srv.security, protocol, "preset", preset, tuple(reasons))


def _other(protocol: str) -> str:
    return "pop3" if protocol == "imap" else "imap"


def _step_srv(domain: str, resolver, timeout: float, presets: dict[str, Preset], prefer: str,
              reasons: list[str], allow_private: bool) -> Detection | None:
    cands: list[_Srv] = []
    none: list[str] = []
    for label, protocol, security in SRV_SERVICES:
        name = f"{label}.{domain}"
        res = _query(resolver, name, "SRV", timeout)
        if res.error and not res.nxdomain:
            reasons.append(f"SRV: look-up of {name} failed: {res.error}")
            continue
        if not res.records:
            none.append(label)
            continue
        recs = [(r.priority, r.weight, r.port, _norm_host(r.target)) for r in res.records]
        if any(t == "" for _, _, _, t in recs):
            # RFC 2782: target "." = the service is decidedly not available at this domain
            reasons.append(f"SRV: {name} has target '.': {protocol.upper()} "
                           f"({'implicit TLS' if security == 'tls' else 'STARTTLS'}) not offered")
            continue
        for prio, weight, port, target in recs:
            if port == 0:
                reasons.append(f"SRV: {name} -> {target} has port 0: ignored")
                continue
            inside = _private_addresses(target, resolver, timeout, allow_private)
            if inside:
                reasons.append(f"SRV: {name} -> {target} resolves to {inside}: a non-public address, refused "
                               "(dns.allow_private: true allows it)")
                continue
            cands.append(_Srv(label, protocol, security, prio, weight, port, target))
    if none:
        reasons.append(f"SRV: no {'/'.join(none)} records for {domain}")
    if not cands:
        if not none:
            reasons.append(f"SRV: no usable records for {domain}")
        return None
    mine = sorted((c for c in cands if c.protocol == prefer), key=_Srv.sort_key)
    other = sorted((c for c in cands if c.protocol != prefer), key=_Srv.sort_key)
    if mine:
        best = mine[0]
        if other and other[0].priority < best.priority:
            reasons.append(f"SRV: the domain ranks {other[0].protocol.upper()} first ({other[0]}); using "
                           f"{prefer.upper()} as preferred (it sees every folder)")
    else:
        best = other[0]
        reasons.append(f"SRV: no {prefer.upper()} service published; using {best.protocol.upper()}")
    rest = [str(c) for c in sorted(cands, key=_Srv.sort_key) if c != best]
    reasons.append(f"SRV: {best}" + (f"; also published: {', '.join(rest)}" if rest else ""))
    preset = preset_for_host(best.target, presets)
    if preset is not None:
        reasons.append(f"SRV: {best.target} is the server of preset {preset.key} ({preset.name}): "
                       f"its quirks apply")
    tls_name = srv_tls_name(domain, best.target)
    if tls_name != best.target:
        reasons.append(f"SRV: {best.target} is outside {domain}: its certificate must name {domain} "
                       "(RFC 6186 s. 6)")
    reasons.append(f"decision: SRV {best.label}.{domain}: {best.protocol.upper()} "
                   f"{Server(best.target, best.port, best.security)}")
    return Detection(domain, best.target, best.port, best.security, best.protocol, "srv", preset, tuple(reasons),
                     tls_name=tls_name)


def srv_tls_name(domain: str, target: str) -> str:
    """The reference identifier for an SRV target's certificate (RFC 6186 s. 6): the mail domain,
    or the target itself when it is the domain or lies under it (the domain's owner named it)."""
    return target if target == domain or target.endswith("." + domain) else domain


def _private_addresses(host: str, resolver, timeout: float, allow: bool) -> str:
    """The non-public addresses ``host`` resolves to ("" if none, if it does not resolve, or if allowed)."""
    if allow:
        return ""
    try:
        addrs = _addresses(host, 0, resolver, timeout)
    except ProbeError:
        return ""
    bad = [a for a in addrs if not ipaddress.ip_address(a).is_global or ipaddress.ip_address(a).is_multicast]
    return ", ".join(bad)


def _step_probe(domain: str, probe: ProbeFunc, timeout: float, presets: dict[str, Preset], prefer: str,
                probe_ports: Iterable[tuple[int, str]], probe_prefixes: Iterable[str],
                reasons: list[str]) -> Detection | None:
    if prefer != "imap":
        reasons.append("probe: only IMAP is probed")
    for prefix in probe_prefixes:
        host = f"{prefix}.{domain}"
        for port, security in probe_ports:
            where = f"probe: {host}:{port} ({security})"
            try:
                caps = probe(host, port, security, timeout)
            except ProbeError as e:
                if e.no_host:
                    reasons.append(f"probe: {host}: {e}")
                    break
                reasons.append(f"{where}: {e}")
                continue
            except Exception as e:  # an injected probe may fail in any way: it is just "not here"
                reasons.append(f"{where}: {type(e).__name__}: {_short(e)}")
                continue
            if not caps:
                reasons.append(f"{where}: no IMAP server answered")
                continue
            reasons.append(f"{where}: IMAP answered, CAPABILITY {_short(caps, 200)}")
            preset = preset_for_host(host, presets)
            if preset is not None:
                reasons.append(f"probe: {host} is the server of preset {preset.key} ({preset.name}): "
                               f"its quirks apply")
            reasons.append(f"decision: probe: IMAP {Server(host, port, security)}")
            return Detection(domain, host, port, security, "imap", "probe", preset, tuple(reasons))
    return None


def detect(domain: str, *, resolver: dns.resolver.Resolver | None = None, probe: ProbeFunc | None = None,
           timeout: float = 5.0, prefer: str = "imap", presets: dict[str, Preset] | None = None,
           probe_ports: Iterable[tuple[int, str]] = DEFAULT_PROBE_PORTS,
           probe_prefixes: Iterable[str] = PROBE_PREFIXES, ca_file: str | None = None,
           allow_private: bool = False) -> Detection:
    """Find ``domain``'s mail server: presets by MX, then RFC 6186 SRV, then probing (see module doc).

    ``domain`` may also be an address (its domain part is used).  ``resolver``: dnspython
    resolver (default: the system's configuration); it also resolves the probed names when the
    default probe is used.  ``probe(host, port, security, timeout)`` returns the CAPABILITY
    string, or None / raises when there is no usable IMAP server (the exception's text becomes a
    reason); default :func:`make_probe`.  ``timeout``: per DNS look-up and per connection.
    ``probe_ports``: (port, "tls"|"starttls") pairs tried on each probed host, in order.
    ``ca_file``: extra trust anchors for the default probe.  ``allow_private``: accept MX/SRV
    hosts on loopback, private or link-local addresses (refused by default).

    Raises :class:`DetectionFailed` (with ``.steps``) when no step finds a server, ``ValueError``
    for a malformed domain or arguments.
    """
    if prefer not in PROTOCOLS:
        raise ValueError(f"prefer must be one of {PROTOCOLS}, not {prefer!r}")
    probe_ports = tuple((int(p), s) for p, s in probe_ports)
    for p, s in probe_ports:
        if s not in SECURITIES or not 1 <= p <= 65535:
            raise ValueError(f"bad probe port {(p, s)!r}: (1..65535, 'tls'|'starttls')")
    domain = _normalize_domain(domain)
    presets = default_presets() if presets is None else presets
    explicit_resolver = resolver is not None
    if resolver is None:
        try:
            resolver = dns.resolver.Resolver()
        except dns.exception.DNSException as e:
            raise DetectionFailed(domain, [f"DNS: no resolver configured ({_short(e)}); name a DNS server"]) \
                from None
    if probe is None:
        probe = make_probe(resolver=resolver if explicit_resolver else None, ca_file=ca_file)
    reasons: list[str] = []
    found = (_step_mx(domain, resolver, timeout, presets, prefer, reasons, allow_private)
             or _step_srv(domain, resolver, timeout, presets, prefer, reasons, allow_private)
             or _step_probe(domain, probe, timeout, presets, prefer, probe_ports, probe_prefixes, reasons))
    if found is None:
        raise DetectionFailed(domain, reasons)
    return found
