"""Load and validate mailsyncd's YAML config into frozen, typed objects.

Validation collects every problem before failing, so an operator fixes the whole
file in one pass instead of one error per restart. Each message starts with the
key path (``domains."example.com".source.port``) so it can be found in the file.
"""

import difflib
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import yaml


class ConfigError(Exception):
    """The config is unusable; ``errors`` holds one message per problem."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


class UnknownDomain(LookupError):
    def __init__(self, domain: str, known: list[str]):
        self.domain, self.known = domain, known
        super().__init__(f"no domain {domain!r} in config (known: {', '.join(known)})")


def _split_address(address: object) -> tuple[str, str]:
    # Split at the *last* "@": a quoted local part may itself contain "@".
    if isinstance(address, str):
        local, at, domain = address.rpartition("@")
        if at and local and domain:
            return local, domain
    raise ValueError(f"not an email address: {address!r}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    # Only the *path* of the master password file is kept, never its content,
    # so the generated repr (logs, tracebacks) cannot leak the secret.
    host: str
    port: int
    security: str
    protocol: str
    username: str = "{address}"
    verify_tls: bool = True
    ca_file: str | None = None
    timeout: float = 60.0
    dangerously_allow_cleartext: bool = False
    auth: str = "same"
    master_user: str | None = None
    master_password_file: str | None = None
    master_separator: str = "*"
    send_id: bool = True
    max_connections: int = 8        # at once to this host, over all accounts (providers cap per IP)
    pop3_no_uidl: str = "fail"      # a POP3 server without UIDL: fail, or match by content (fingerprint)
    tls_name: str | None = None     # set by host: auto from SRV: the name the certificate must carry (RFC 6186 s. 6)
    preset: str | None = None       # source only: the provider preset whose quirks apply (mailsyncd/presets.yaml)

    @property
    def auto(self) -> bool:
        """host: auto -- resolved by mailsyncd.autodetect when the daemon (or a command) starts."""
        return self.host == "auto"

    def login_name(self, address: str) -> str:
        local, domain = _split_address(address)
        return self.username.format(address=address, local=local, domain=domain)

    def read_master_password(self) -> str:
        where = self.master_password_file
        if where is None:
            raise ConfigError([f"no master_password_file configured for {self.host}"])
        # Read bytes and decode ourselves: a UnicodeDecodeError carries the raw
        # bytes, and "from None" keeps it out of the traceback.
        try:
            with open(where, "rb") as f:
                secret = f.read().decode("utf-8").rstrip("\r\n")
        except OSError as e:
            raise ConfigError([f"{where}: cannot read master password: {e.strerror}"]) from None
        except UnicodeDecodeError:
            raise ConfigError([f"{where}: master password file is not valid UTF-8"]) from None
        if not secret:
            raise ConfigError([f"{where}: master password file is empty"])
        return secret


class MasterPasswords:
    """The targets' master passwords, read once at start and at each reload (never at a login:
    that would be a blocking file read on the reactor).  The repr shows only the files."""

    def __init__(self, secrets: dict[str, str]):
        self._secrets = secrets

    @classmethod
    def read(cls, config) -> "MasterPasswords":
        """Raises ConfigError naming the file when one cannot be read."""
        out: dict[str, str] = {}
        for d in config.domains.values():
            ep = d.target
            if ep.auth != "same" and ep.master_password_file not in out:
                out[ep.master_password_file] = ep.read_master_password()
        return cls(out)

    def get(self, endpoint: Endpoint) -> str:
        secret = self._secrets.get(endpoint.master_password_file)
        if secret is None:
            raise ConfigError([f"{endpoint.master_password_file}: master password not loaded (reload)"])
        return secret

    def __repr__(self) -> str:
        return f"MasterPasswords(files={sorted(self._secrets)!r})"


@dataclass(frozen=True, slots=True)
class FolderRules:
    layout: str = "mirror"
    prefix: str = ""
    map: tuple[tuple[str, str], ...] = ()
    exclude: tuple[str, ...] = ()
    special_use: bool = True
    namespaces: tuple[str, ...] = ("personal",)          # personal | other | shared
    special_use_names: tuple[tuple[str, str], ...] = ()   # (role, target path) for roles without one


@dataclass(frozen=True, slots=True)
class DeleteLimit:
    """At most this many expunges per folder and pass: ``percent`` of the messages we copied into
    the folder (rounded down) and/or ``count``; the smaller applies where both are set."""
    percent: float | None
    count: int | None

    def of(self, copied: int) -> int:
        limits = [int(copied * self.percent // 100)] if self.percent is not None else []
        if self.count is not None:
            limits.append(self.count)
        return min(limits)


@dataclass(frozen=True, slots=True)
class SyncSettings:
    connections: int = 4
    batch_messages: int = 200
    batch_bytes: int = 2 * 1024**2
    retries: int = 5
    retry_backoff: float = 1.0
    flag_rescan: float = 3600.0
    deletions: str = "keep"          # "mirror": expunge on the target what the source expunged
    max_delete: DeleteLimit = field(default_factory=lambda: DeleteLimit(5.0, 500))
    max_message_size: int = 64 * 1024**2   # larger messages are skipped and recorded, never read


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


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Listen:
    imap: Address | None = None     # STARTTLS (or plaintext on loopback, if allowed)
    imaps: Address | None = None    # implicit TLS
    http: Address | None = None     # the web pages (self-service; HTTPS when tls: is set)


@dataclass(frozen=True, slots=True)
class TLSFiles:
    cert: str
    key: str


@dataclass(frozen=True, slots=True)
class FrontDoor:
    allow_plaintext_login: bool = False   # LOGIN before STARTTLS; loopback listeners only
    preauth_timeout: float = 60.0         # idle time allowed before login (any command resets it)
    preauth_deadline: float = 120.0       # absolute: connected this long without logging in -> BYE
    max_preauth_per_ip: int = 20          # connections not yet logged in, per client network
    max_connections: int = 10000          # every front-door connection; lowered below RLIMIT_NOFILE
    max_pending_per_ip: int = 8           # password checks in progress per client network
    source_wait: float = 10.0             # a login waits this long for a free source connection
    idle_timeout: float = 1860.0          # RFC 3501 wants at least 30 minutes
    verifier_ttl: float = 300.0           # a source-checked password is trusted this long
    accept_verifier_when_source_down: bool = False
    auth_threads: int = 8
    network_burst: int = 10               # password checks per client network, all users...
    network_refill: float = 60.0          # ...one more every this many seconds
    user_network_burst: int = 5           # per (user, client network)
    user_network_refill: float = 300.0
    user_hourly: int = 30                 # per user, from networks it never logged in from
    failure_delay: float = 2.0
    failure_delay_max: float = 15.0


@dataclass(frozen=True, slots=True)
class Scheduler:
    pass_interval: float = 300.0          # seconds between incremental passes of one account
    max_accounts: int = 4                 # accounts synced at once, over all domains
    max_accounts_per_domain: int = 4
    failure_backoff: float = 60.0         # first wait after a failed pass; doubles, with jitter
    failure_backoff_max: float = 3600.0


@dataclass(frozen=True, slots=True)
class Web:
    session_idle: float = 1800.0            # a self-service session ends after this long without a request
    session_max: float = 28800.0            # ... and this long after sign-in, whatever happens
    trusted_proxies: tuple[str, ...] = ()   # reverse proxies whose X-Forwarded-For/-Proto are believed
    hostnames: tuple[str, ...] = ()         # Host names the pages answer to, besides localhost and addresses
    request_timeout: float = 30.0           # a request's headers and body must arrive within this
    max_connections: int = 1024             # open HTTP connections at once (also kept below RLIMIT_NOFILE / 2)
    max_connections_per_ip: int = 64        # ... from one client address (trusted proxies: only the total)


@dataclass(frozen=True, slots=True)
class Notice:
    enabled: bool = False               # append "your mail has been moved" once, when a mailbox is in sync
    sender: str = "Mail migration <postmaster@localhost>"


@dataclass(frozen=True, slots=True)
class Admin:
    # argon2 hash of the dashboard password (`mailsyncctl hash-password`). Without it the
    # dashboard answers only clients on this machine (loopback).
    password_hash: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class DNS:
    nameservers: tuple[Address, ...] = ()   # empty: the system's resolver (/etc/resolv.conf)
    timeout: float = 5.0
    allow_private: bool = False             # MX/SRV answers may point at loopback/private/link-local hosts


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    state_dir: str
    log_level: str
    sync: SyncSettings
    domains: Mapping[str, Domain]
    listen: Listen = field(default_factory=Listen)
    tls: TLSFiles | None = None
    frontdoor: FrontDoor = field(default_factory=FrontDoor)
    scheduler: Scheduler = field(default_factory=Scheduler)
    dns: DNS = field(default_factory=DNS)
    web: Web = field(default_factory=Web)
    admin: Admin = field(default_factory=Admin)
    notice: Notice = field(default_factory=Notice)

    def domain_for(self, address: str) -> Domain:
        domain = _split_address(address)[1].lower()
        try:
            return self.domains[domain]
        except KeyError:
            raise UnknownDomain(domain, sorted(self.domains)) from None


# ---------------------------------------------------------------- validation helpers

class _Invalid(Exception):
    """Raised by a value checker; the message says what the value must be."""


class _Errors(list):
    def add(self, path: str, msg: str) -> None:
        self.append(f"{path}: {msg}")


def _join(path: str, key: object) -> str:
    # Quote keys that are not plain identifiers so that "example.com" does not
    # read as two levels of nesting.
    k = key if isinstance(key, str) and re.fullmatch(r"[A-Za-z_]\w*", key) else f'"{key}"'
    return f"{path}.{k}" if path else k


def _got(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_REQUIRED = object()


class _Section:
    """One YAML mapping being read. Getters record errors and fall back to the
    default, so validation goes on and every problem gets reported."""

    def __init__(self, errs: _Errors, node: object, path: str, allowed):
        self.errs, self.path = errs, path
        if node is None:  # "folders:" with nothing under it means "all defaults"
            node = {}
        if not isinstance(node, dict):
            errs.add(path, f"must be a mapping (got {_got(node)})")
            node = {}
        self.node = node
        for key in node:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), list(allowed), n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
                errs.add(_join(path, key), f"unknown key ({hint})")

    def has(self, key: str) -> bool:
        return key in self.node

    def get(self, key: str, check, default=_REQUIRED):
        if key not in self.node:
            if default is _REQUIRED:
                self.errs.add(_join(self.path, key), "required key is missing")
                return None
            return default
        value = self.node[key]
        try:
            return check(value)
        except _Invalid as e:
            self.errs.add(_join(self.path, key), f"{e} (got {_got(value)})")
            return None if default is _REQUIRED else default


# Value checkers: take the raw YAML value, return the converted one or raise _Invalid.

def _choice(*options: str, msg: str | None = None):
    def check(v):
        if v not in options:
            raise _Invalid(msg or "must be one of " + ", ".join(map(repr, options)))
        return v
    return check


def _int_range(lo: int, hi: int):
    def check(v):
        # bool is an int subclass; "port: yes" is surely a mistake.
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise _Invalid(f"must be an integer {lo}-{hi}")
        return v
    return check


def _positive(hi: float | None = None):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 \
                or (hi is not None and v > hi):
            raise _Invalid("must be a number > 0" + (f" and <= {hi:g}" if hi else ""))
        return float(v)
    return check


def _boolean(v):
    if not isinstance(v, bool):
        raise _Invalid("must be true or false")
    return v


def _text(v):
    if not isinstance(v, str) or not v.strip():
        raise _Invalid("must be a non-empty string")
    return v


def _hostname(v):
    if not isinstance(v, str) or not v or re.search(r"[\s/@]", v):
        raise _Invalid("must be a host name or IP address")
    return v


def _template(v):
    try:
        _text(v).format(address="u@d", local="u", domain="d")
    except (_Invalid, KeyError, IndexError, ValueError, AttributeError):
        raise _Invalid("must be a login-name template using only {address}, {local}, {domain}") from None
    return v


def _folder_path(v):
    # Names are "/"-separated paths; a leading/trailing or doubled "/" would
    # make an empty path component.
    if not isinstance(v, str) or not v or v.startswith("/") or v.endswith("/") or "//" in v:
        raise _Invalid("must be a non-empty folder path, '/'-separated, not starting or ending with '/'")
    return v


def _str_list(v):
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise _Invalid("must be a list of non-empty strings")
    return tuple(v)


_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2,
          "g": 1024**3, "gib": 1024**3}


def _size(v):
    n = None
    if isinstance(v, int) and not isinstance(v, bool):
        n = v
    elif isinstance(v, str):
        m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", v)
        if m and m[2].lower() in _UNITS:  # "MB" is refused: it is ambiguous (10^6 or 2^20)
            n = int(m[1]) * _UNITS[m[2].lower()]
    if n is None or not 64 * 1024 <= n <= 1024**3:
        raise _Invalid("must be a size from 64KiB to 1GiB: bytes, or like '512KiB', '16MiB', '16M', '1GiB'")
    return n


def _delete_limit(v):
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return DeleteLimit(None, v)
    if isinstance(v, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", v)
        if m and 0 < float(m[1]) <= 100:
            return DeleteLimit(float(m[1]), None)
    raise _Invalid("must be a count of messages >= 0 (like 200) or a percent of the folder, "
                   "above 0% and at most 100% (like '5%')")


def _file(base_dir: str):
    def check(v):
        raw = _text(v)
        if "$CREDENTIALS_DIRECTORY" in raw or "${CREDENTIALS_DIRECTORY}" in raw:
            # systemd's LoadCredential= hands secrets to a DynamicUser service under this directory
            if not os.environ.get("CREDENTIALS_DIRECTORY"):
                raise _Invalid("uses $CREDENTIALS_DIRECTORY, which only the systemd service has "
                               "(LoadCredential=); outside it, check with: systemd-run -P "
                               "-p LoadCredential=... mailsyncctl check-config")
            raw = raw.replace("${CREDENTIALS_DIRECTORY}", os.environ["CREDENTIALS_DIRECTORY"]).replace(
                "$CREDENTIALS_DIRECTORY", os.environ["CREDENTIALS_DIRECTORY"])
        p = os.path.normpath(os.path.join(base_dir, raw))
        if not os.path.isfile(p):
            raise _Invalid(f"file does not exist: {p}")
        if not os.access(p, os.R_OK):
            raise _Invalid(f"file is not readable: {p}")
        return p
    return check


def _is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # any other host name may resolve anywhere


def _domain_name(key: object) -> str:
    name = key.lower() if isinstance(key, str) else ""
    labels = name.split(".")
    if not name or len(name) > 253 or not all(
            re.fullmatch(r"[\w-]{1,63}", lab) and lab[0] != "-" and lab[-1] != "-" for lab in labels):
        raise _Invalid("not a valid domain name (no spaces, '@' or empty labels; e.g. example.com)")
    return name


# ---------------------------------------------------------------- section parsers

_DEFAULT_PORTS = {("imap", "tls"): 993, ("imap", "starttls"): 143, ("imap", "none"): 143,
                  ("pop3", "tls"): 995, ("pop3", "starttls"): 110, ("pop3", "none"): 110}
_MASTER_KEYS = ("master_user", "master_password_file", "master_separator")
_ENDPOINT_KEYS = ("host", "port", "security", "protocol", "username", "verify_tls", "ca_file",
                  "timeout", "dangerously_allow_cleartext", "send_id", "auth", "max_connections",
                  "pop3_no_uidl", "preset") + _MASTER_KEYS


def _preset(v):
    """A preset key (its quirks: app password, folders to skip, IMAP ID, connection cap)."""
    from .providers import PresetError, default_presets   # lazy: DNS code is not needed to read a config
    try:
        presets = default_presets()
    except PresetError as e:
        raise _Invalid(f"the presets file is unusable: {e}") from None
    if v not in presets:
        raise _Invalid("not a known provider preset (known: " + ", ".join(sorted(presets)) + ")")
    return presets[v]


def _preset_of_host(host: str | None):
    from .providers import PresetError, preset_for_host
    try:
        return preset_for_host(host) if host and host != "auto" else None
    except PresetError:
        return None     # reported where a preset is named; a plain host needs none


def _endpoint(errs: _Errors, node: object, path: str, base_dir: str, role: str) -> Endpoint:
    s = _Section(errs, node, path, _ENDPOINT_KEYS)
    target = role == "target"
    host = s.get("host", _hostname)
    protocol = s.get("protocol", _choice("imap", msg="the target must be an IMAP server: 'imap'")
                     if target else _choice("imap", "pop3"), "imap")
    security = s.get("security", _choice("tls", "starttls", "none"), "tls")
    cleartext = s.get("dangerously_allow_cleartext", _boolean, False)
    if security == "none" and host is not None and not cleartext and not _is_loopback(host):
        errs.add(_join(path, "security"),
                 f"'none' to non-loopback host {host!r} means passwords would cross the network "
                 "in cleartext; use tls or starttls, or set dangerously_allow_cleartext: true "
                 "on this endpoint if the network is trusted")
    if s.has("pop3_no_uidl") and protocol != "pop3":
        errs.add(_join(path, "pop3_no_uidl"), "only used with protocol: pop3")
    if host == "auto" and target:
        errs.add(_join(path, "host"), "'auto' detects the OLD provider; give the new server's host name")
    if target:
        auth = s.get("auth", _choice("master", "master_separator", "same"), "same")
    else:
        auth = s.get("auth", _choice("same", msg="the source always logs in as the user: 'same'"), "same")
    if auth == "same":
        why = "only valid on the target" if not target else "not used with auth: same"
        for key in _MASTER_KEYS:
            if s.has(key):
                errs.add(_join(path, key), why)
    else:
        for key in ("master_user", "master_password_file"):
            if not s.has(key):
                errs.add(_join(path, key), f"required with auth: {auth}")
        if auth != "master_separator" and s.has("master_separator"):
            errs.add(_join(path, "master_separator"), "only used with auth: master_separator")
    # The OLD provider's quirks: named, or known from its server's host name (host: auto adds them later).
    preset = None
    if target and s.has("preset"):
        errs.add(_join(path, "preset"), "only valid on the source (the old provider's quirks)")
    elif not target:
        preset = s.get("preset", _preset, None) if s.has("preset") else _preset_of_host(host)
    send_id = s.get("send_id", _boolean, True)
    if preset is not None and preset.send_id and s.has("send_id") and send_id is False:
        errs.add(_join(path, "send_id"), f"false, but preset {preset.key!r} ({preset.name}) requires IMAP ID "
                                         "before SELECT; remove send_id")
    return Endpoint(
        host=host, port=s.get("port", _int_range(1, 65535), _DEFAULT_PORTS[protocol, security]),
        security=security, protocol=protocol,
        username=s.get("username", _template, "{address}"),
        verify_tls=s.get("verify_tls", _boolean, True),
        ca_file=s.get("ca_file", _file(base_dir), None),
        timeout=s.get("timeout", _positive(), 60.0),
        dangerously_allow_cleartext=cleartext, auth=auth,
        master_user=s.get("master_user", _text, None),
        master_password_file=s.get("master_password_file", _file(base_dir), None),
        master_separator=s.get("master_separator", _text, "*"),
        send_id=send_id,
        max_connections=s.get("max_connections", _int_range(1, 1000),
                              preset.max_connections if preset and preset.max_connections else 8),
        pop3_no_uidl=s.get("pop3_no_uidl", _choice("fail", "fingerprint"), "fail"),
        preset=preset.key if preset else None,
    )


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


_SYNC_CHECKS = {
    "connections": _int_range(1, 16),
    "batch_messages": _int_range(1, 5000),
    "batch_bytes": _size,
    "retries": _int_range(0, 100),
    "retry_backoff": _positive(60),  # the backoff is capped at 60 s, so a larger start is meaningless
    "flag_rescan": _positive(),
    "deletions": _choice("keep", "mirror"),
    "max_delete": _delete_limit,
    "max_message_size": _size,
}


def _sync(errs: _Errors, node: object, path: str, base: SyncSettings) -> SyncSettings:
    # Keys missing here inherit from ``base``: a per-domain section overrides the
    # global one key by key.
    s = _Section(errs, node, path, tuple(_SYNC_CHECKS))
    return SyncSettings(**{k: s.get(k, check, getattr(base, k)) for k, check in _SYNC_CHECKS.items()})


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


_SCHEDULER_CHECKS = {
    "pass_interval": _positive(),
    "max_accounts": _int_range(1, 1000),
    "max_accounts_per_domain": _int_range(1, 1000),
    "failure_backoff": _positive(),
    "failure_backoff_max": _positive(),
}
_SCHED_DEFAULTS = Scheduler()


def _scheduler(errs: _Errors, node: object) -> Scheduler:
    s = _Section(errs, node, "scheduler", tuple(_SCHEDULER_CHECKS))
    return Scheduler(**{k: s.get(k, check, getattr(_SCHED_DEFAULTS, k)) for k, check in _SCHEDULER_CHECKS.items()})


def _web(errs: _Errors, node: object) -> Web:
    s = _Section(errs, node, "web", ("session_idle", "session_max", "trusted_proxies", "hostnames",
                                     "request_timeout", "max_connections", "max_connections_per_ip"))

    def ips(v):
        out = []
        for item in _str_list(v):
            try:
                out.append(str(ipaddress.ip_address(item)))
            except ValueError:
                raise _Invalid(f"{item!r} is not an IP address") from None
        return tuple(out)

    def names(v):
        out = []
        for item in _str_list(v):
            name = item.lower().rstrip(".")
            if not re.fullmatch(r"[a-z0-9-]{1,63}(\.[a-z0-9-]{1,63})*", name) or name.isdigit():
                raise _Invalid(f"{item!r} is not a host name (no scheme, port or path; e.g. migrate.example.com)")
            out.append(name)
        return tuple(out)

    return Web(session_idle=s.get("session_idle", _positive(), 1800.0),
               session_max=s.get("session_max", _positive(), 28800.0),
               trusted_proxies=s.get("trusted_proxies", ips, ()),
               hostnames=s.get("hostnames", names, ()),
               request_timeout=s.get("request_timeout", _positive(3600), 30.0),
               max_connections=s.get("max_connections", _int_range(1, 1_000_000), 1024),
               max_connections_per_ip=s.get("max_connections_per_ip", _int_range(1, 1_000_000), 64))


def _argon2_hash(v) -> str:
    text = _text(v)
    if not text.startswith("$argon2"):
        raise _Invalid("must be an argon2 hash (make one with: mailsyncctl hash-password)")
    return text


def _notice(errs: _Errors, node: object) -> Notice:
    s = _Section(errs, node, "notice", ("enabled", "from"))
    return Notice(enabled=s.get("enabled", _boolean, False),
                  sender=s.get("from", _text, "Mail migration <postmaster@localhost>"))


def _admin(errs: _Errors, node: object) -> Admin:
    s = _Section(errs, node, "admin", ("password_hash",))
    return Admin(password_hash=s.get("password_hash", _argon2_hash, None))


def _dns(errs: _Errors, node: object) -> DNS:
    s = _Section(errs, node, "dns", ("nameservers", "timeout", "allow_private"))

    def servers(v):
        out = []
        for item in _str_list(v):
            host, _, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "53")
            try:
                ipaddress.ip_address(host.strip("[]"))
                out.append(Address(host.strip("[]"), int(port)))
            except ValueError:
                raise _Invalid(f"{item!r} is not an IP address or IP:PORT") from None
        return tuple(out)

    return DNS(nameservers=s.get("nameservers", servers, ()), timeout=s.get("timeout", _positive(60), 5.0),
               allow_private=s.get("allow_private", _boolean, False))


def _address(v) -> Address:
    text = _text(v)
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^\s:\[\]]+):(\d+)", text)
    if not m:
        raise _Invalid('must be "HOST:PORT", e.g. "0.0.0.0:143" or "[::]:993"')
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    if not 1 <= int(port) <= 65535:
        raise _Invalid("port must be 1-65535")
    return Address(host, int(port))


def _listen(errs: _Errors, node: object) -> Listen:
    s = _Section(errs, node, "listen", ("imap", "imaps", "http"))
    return Listen(imap=s.get("imap", _address, None), imaps=s.get("imaps", _address, None),
                  http=s.get("http", _address, None))


def _tls(errs: _Errors, node: object, base_dir: str) -> TLSFiles | None:
    if node is None:
        return None
    s = _Section(errs, node, "tls", ("cert", "key"))
    cert, key = s.get("cert", _file(base_dir)), s.get("key", _file(base_dir))
    return TLSFiles(cert, key) if cert and key else None


_FRONTDOOR_CHECKS = {
    "allow_plaintext_login": _boolean,
    "preauth_timeout": _positive(3600),
    "preauth_deadline": _positive(3600),
    "max_preauth_per_ip": _int_range(1, 100000),
    "max_connections": _int_range(1, 1000000),
    "max_pending_per_ip": _int_range(1, 1000),
    "source_wait": _positive(300),
    "idle_timeout": _positive(),
    "verifier_ttl": _positive(),
    "accept_verifier_when_source_down": _boolean,
    "auth_threads": _int_range(1, 64),
    "network_burst": _int_range(1, 100000),
    "network_refill": _positive(),
    "user_network_burst": _int_range(1, 100000),
    "user_network_refill": _positive(),
    "user_hourly": _int_range(1, 1000000),
    "failure_delay": _positive(60),
    "failure_delay_max": _positive(600),
}


_FD_DEFAULTS = FrontDoor()
# Keys of earlier versions, still read: the budgets are now per client network (IPv4 /32, IPv6 /64).
_FD_RENAMED = {"ip_burst": "network_burst", "ip_refill": "network_refill",
               "user_burst": "user_network_burst", "user_refill": "user_network_refill"}


def _frontdoor(errs: _Errors, node: object, listen: Listen, tls: bool) -> FrontDoor:
    s = _Section(errs, node, "frontdoor", (*_FRONTDOOR_CHECKS, *_FD_RENAMED))
    for old, new in _FD_RENAMED.items():
        if s.has(old) and s.has(new):
            errs.add(f"frontdoor.{old}", f"renamed to frontdoor.{new}; both are set: keep only {new}")
        elif s.has(old):
            s.node = {**s.node, new: s.node[old]}
    fd = FrontDoor(**{k: s.get(k, check, getattr(_FD_DEFAULTS, k)) for k, check in _FRONTDOOR_CHECKS.items()})
    if fd.idle_timeout < 1800:
        errs.add("frontdoor.idle_timeout", "must be at least 1800 (RFC 3501: 30 minutes); "
                 f"got {fd.idle_timeout:g}")
    if fd.allow_plaintext_login and listen.imap and not _is_loopback(listen.imap.host):
        errs.add("frontdoor.allow_plaintext_login",
                 f"only allowed when listen.imap is a loopback address (got {listen.imap}): "
                 "passwords would cross the network in cleartext")
    if listen.imaps and not tls:
        errs.add("listen.imaps", "needs a tls: {cert: FILE, key: FILE} section")
    if listen.imap and not tls and not fd.allow_plaintext_login:
        errs.add("listen.imap", "needs a tls: section for STARTTLS (or, on loopback only, "
                 "frontdoor.allow_plaintext_login: true)")
    return fd


# ---------------------------------------------------------------- entry points

def parse_config(data: object, *, path: str) -> Config:
    path = os.path.abspath(path)
    base_dir = os.path.dirname(path)
    if not isinstance(data, dict):
        what = "is empty" if data is None else f"must be a mapping at the top level (got {_got(data)})"
        raise ConfigError([f"{path}: config {what}"])
    errs = _Errors()
    s = _Section(errs, data, "", ("state_dir", "log_level", "sync", "domains", "listen", "tls", "frontdoor",
                                  "scheduler", "dns", "web", "admin", "notice"))
    state_dir = os.path.normpath(os.path.join(base_dir, s.get("state_dir", _text, "./state")))
    log_level = s.get("log_level", _choice("debug", "info", "warning", "error"), "info")
    sync = _sync(errs, s.node.get("sync"), "sync", SyncSettings())
    domains = {}
    if s.has("domains"):
        domains = _domains(errs, s.node["domains"], base_dir, sync)
    else:
        errs.add("domains", "required key is missing (configure at least one domain)")
    listen = _listen(errs, s.node.get("listen"))
    tls = _tls(errs, s.node.get("tls"), base_dir)
    frontdoor = _frontdoor(errs, s.node.get("frontdoor"), listen, s.node.get("tls") is not None) if (
        s.has("frontdoor") or listen.imap or listen.imaps) else FrontDoor()
    scheduler = _scheduler(errs, s.node.get("scheduler"))
    dns = _dns(errs, s.node.get("dns"))
    web = _web(errs, s.node.get("web"))
    admin = _admin(errs, s.node.get("admin"))
    notice = _notice(errs, s.node.get("notice"))
    if listen.http and not s.has("tls") and not _is_loopback(listen.http.host):
        errs.add("listen.http", f"plain HTTP on {listen.http} would send passwords across the network: add a "
                 "tls: section (the page is then HTTPS), or listen on a loopback address behind a TLS proxy")
    if errs:
        raise ConfigError(errs)
    return Config(path=path, state_dir=state_dir, log_level=log_level, sync=sync,
                  domains=MappingProxyType(domains), listen=listen, tls=tls, frontdoor=frontdoor,
                  scheduler=scheduler, dns=dns, web=web, admin=admin, notice=notice)


class _StrictLoader(yaml.SafeLoader):
    """safe_load, except that a repeated key is an error: the first domain would vanish silently."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, str):
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def load_config(path: str) -> Config:
    path = os.path.abspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError([f"{path}: config file not found"]) from None
    except OSError as e:
        raise ConfigError([f"{path}: cannot read config file: {e.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: config file is not valid UTF-8"]) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else path
        raise ConfigError([f"{where}: invalid YAML: {e.problem or e.context}"]) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"{path}: invalid YAML: {e}"]) from None
    return parse_config(data, path=path)


def _hostport(e: Endpoint) -> str:
    return f"[{e.host}]:{e.port}" if ":" in e.host else f"{e.host}:{e.port}"


def summary(config: Config) -> str:
    """One line per domain, for ``mailsyncctl check-config``."""
    lines = []
    for d in config.domains.values():
        s, t, f = d.source, d.target, d.folders
        folders = "mirror" if f.layout == "mirror" else f"under {f.prefix!r}"
        extra = "".join(f", {n} {what}" for n, what in ((len(f.map), "mapped"), (len(f.exclude), "excluded")) if n)
        lines.append(f"{d.name}: source {_hostport(s)}/{s.security}/{s.protocol} -> "
                     f"target {_hostport(t)}/{t.security}/auth={t.auth}; folders {folders}{extra}")
    return "\n".join(lines)
