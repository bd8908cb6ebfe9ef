"""``web:`` and ``admin:``: the web pages' sessions, proxies, host names and connection caps, and
the dashboard password."""

import ipaddress
import re
from dataclasses import dataclass, field

from ._base import _Errors, _int_range, _Invalid, _positive, _Section, _str_list, _text


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
class Admin:
    # argon2 hash of the dashboard password (`mailsyncctl hash-password`). Without it the
    # dashboard answers only clients on this machine (loopback).
    password_hash: str | None = field(default=None, repr=False)



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


def _admin(errs: _Errors, node: object) -> Admin:
    s = _Section(errs, node, "admin", ("password_hash",))
    return Admin(password_hash=s.get("password_hash", _argon2_hash, None))


