"""Find a domain's OLD mail server for ``source: {host: auto}`` -- and say why.

:func:`detect` tries three steps in order and stops at the first that decides:

1. **preset** -- the domain's MX records (dnspython) matched against the provider presets in
   ``presets.yaml`` (:func:`load_presets`, :func:`match_mx`): Tencent Exmail, NetEase, Alibaba,
   Google, Microsoft, ...  A preset also carries the provider's quirks (``send_id``,
   ``max_connections``, ``app_password`` with the refusal words that ask for it, ``skip_folders``;
   applied at run time by :mod:`.quirks`) and an auth hint (app password / 授权码).
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

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import dns.resolver

from .dnsquery import _normalize_domain, _query, _short
from .presets import PROTOCOLS, SECURITIES, Preset, Server, _match_mx, _norm_host, default_presets, preset_for_host
from .probe import DEFAULT_PROBE_PORTS, PROBE_PREFIXES, ProbeError, ProbeFunc, _addresses, make_probe

# (label, protocol, security), in the order they are asked and listed
SRV_SERVICES: tuple[tuple[str, str, str], ...] = (
    ("_imaps._tcp", "imap", "tls"),
    ("_imap._tcp", "imap", "starttls"),
    ("_pop3s._tcp", "pop3", "tls"),
    ("_pop3._tcp", "pop3", "starttls"),
)


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


