"""``listen:`` and ``tls:``: the addresses the daemon serves on, and its certificate."""

import re
from dataclasses import dataclass

from ._base import _Errors, _file, _Invalid, _Section, _text


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
    proxy_protocol: tuple[str, ...] = ()   # listeners that take a PROXY header first (frontdoor.trusted_proxies)

    def proxied(self, name: str) -> bool:
        return name in self.proxy_protocol


@dataclass(frozen=True, slots=True)
class TLSFiles:
    cert: str
    key: str



def _address(v) -> Address:
    text = _text(v)
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^\s:\[\]]+):(\d+)", text)
    if not m:
        raise _Invalid('must be "HOST:PORT", e.g. "0.0.0.0:143" or "[::]:993"')
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    if not 1 <= int(port) <= 65535:
        raise _Invalid("port must be 1-65535")
    return Address(host, int(port))


_LISTENERS = ("imap", "imaps", "http")


def _proxy_protocol(v) -> tuple[str, ...] | bool:
    """true (every listener), false, or a list of listener names."""
    if isinstance(v, bool):
        return v
    if not isinstance(v, list) or not all(isinstance(x, str) and x in _LISTENERS for x in v):
        raise _Invalid("must be true, false, or a list of listener names (imap, imaps, http)")
    return tuple(dict.fromkeys(v))


def _listen(errs: _Errors, node: object) -> Listen:
    s = _Section(errs, node, "listen", (*_LISTENERS, "proxy_protocol"))
    addrs = {name: s.get(name, _address, None) for name in _LISTENERS}
    pp = s.get("proxy_protocol", _proxy_protocol, False)
    # true covers sockets passed by systemd too, which need no address here
    pp = _LISTENERS if pp is True else () if pp is False else pp
    return Listen(**addrs, proxy_protocol=pp)


def _tls(errs: _Errors, node: object, base_dir: str) -> TLSFiles | None:
    if node is None:
        return None
    s = _Section(errs, node, "tls", ("cert", "key"))
    cert, key = s.get("cert", _file(base_dir)), s.get("key", _file(base_dir))
    return TLSFiles(cert, key) if cert and key else None


