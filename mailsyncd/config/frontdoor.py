"""``frontdoor:``: the IMAP login proxy's timeouts, connection caps and password-check budgets."""

from dataclasses import dataclass

from ..netaddr import loopback_host
from ..proxyproto.trusted import TrustedProxies
from ._base import _boolean, _Errors, _int_range, _Invalid, _positive, _Section, _str_list
from .listen import Listen


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
    trusted_proxies: tuple[str, ...] = ()   # CIDRs that may send PROXY headers (listen.proxy_protocol)
    copy_on_open: int = 500               # a SELECT of a folder lacking fewer messages is held until they are in
    copy_on_open_deadline: float = 3.0    # ...but never longer than this, whatever the source does



def _networks(v) -> tuple[str, ...]:
    try:
        return TrustedProxies.parse(_str_list(v))
    except ValueError as e:
        raise _Invalid(str(e)) from None


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
    "trusted_proxies": _networks,
    "copy_on_open": _int_range(0, 100000),
    "copy_on_open_deadline": _positive(60),
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
    if fd.allow_plaintext_login and listen.imap and not loopback_host(listen.imap.host):
        errs.add("frontdoor.allow_plaintext_login",
                 f"only allowed when listen.imap is a loopback address (got {listen.imap}): "
                 "passwords would cross the network in cleartext")
    if listen.imaps and not tls:
        errs.add("listen.imaps", "needs a tls: {cert: FILE, key: FILE} section")
    if listen.imap and not tls and not fd.allow_plaintext_login:
        errs.add("listen.imap", "needs a tls: section for STARTTLS (or, on loopback only, "
                 "frontdoor.allow_plaintext_login: true)")
    return fd




