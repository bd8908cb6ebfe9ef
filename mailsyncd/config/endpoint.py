"""``source:`` and ``target:`` of a domain: where a server is and how to log in to it."""

from dataclasses import dataclass

from ..netaddr import loopback_host
from ._base import (
    ConfigError, _boolean, _choice, _Errors, _file, _hostname, _int_range, _Invalid, _join,
    _positive, _Section, _split_address, _template, _text,
)


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
    preset: str | None = None       # source only: the provider preset whose quirks apply (mailsyncd/providers/presets.yaml)

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



_DEFAULT_PORTS = {("imap", "tls"): 993, ("imap", "starttls"): 143, ("imap", "none"): 143,
                  ("pop3", "tls"): 995, ("pop3", "starttls"): 110, ("pop3", "none"): 110}
_MASTER_KEYS = ("master_user", "master_password_file", "master_separator")
_ENDPOINT_KEYS = ("host", "port", "security", "protocol", "username", "verify_tls", "ca_file",
                  "timeout", "dangerously_allow_cleartext", "send_id", "auth", "max_connections",
                  "pop3_no_uidl", "preset") + _MASTER_KEYS


def _preset(v):
    """A preset key (its quirks: app password, folders to skip, IMAP ID, connection cap)."""
    from ..providers import PresetError, default_presets   # lazy: DNS code is not needed to read a config
    try:
        presets = default_presets()
    except PresetError as e:
        raise _Invalid(f"the presets file is unusable: {e}") from None
    if v not in presets:
        raise _Invalid("not a known provider preset (known: " + ", ".join(sorted(presets)) + ")")
    return presets[v]


def _preset_of_host(host: str | None):
    from ..providers import PresetError, preset_for_host
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
    if security == "none" and host is not None and not cleartext and not loopback_host(host):
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


