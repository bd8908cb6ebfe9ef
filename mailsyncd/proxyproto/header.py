"""PROXY protocol headers (HAProxy v1 and v2): which peers may send one, and what a header says.

Pure logic, no sockets.  Twisted's parsers (``twisted.protocols.haproxy``) read the header; this
module frames it (bytes may arrive in pieces), bounds it, and checks what the parsers do not: a v1
address must be an IP address of the family it claims, the transport must be TCP.  Every byte is
hostile until the peer is known to be one of ``frontdoor.trusted_proxies``; even then a header that
does not parse closes the connection (``BadHeader``) -- nothing of it is logged.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from twisted.internet.address import IPv4Address, IPv6Address
# Twisted's private parsers, on purpose.  Its public PROXY API is only ``proxyEndpoint`` (the wrapper
# HAProxyWrappingFactory behind it is private too), and that wrapper cannot be ours: it builds the wrapped
# protocol before the header, with the proxy's own address (the connection caps and the login throttle
# would count HAProxy); it trusts every peer; it has no header timeout; it closes a header whose first
# piece is under 8 (v1) or 16 (v2) bytes; it serves a v2 LOCAL or v1 UNKNOWN header as the proxy's own
# address; and it drops bad headers without a word.  The parsers themselves are sound, so we keep them
# for the bytes and do the rest here.  tests/test_proxyproto.py pins what we use of them
# (test_twisteds_private_proxy_parsers_*): a Twisted that changes them fails that test, not a login.
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser

from .trusted import TrustedProxies  # noqa: F401 - where the listener finds it

V1_PREFIX = b"PROXY "
V2_PREFIX = V2Parser.PREFIX
V1_MAX = 107          # the specification's longest v1 line, CRLF included
V2_MAX = 16 + 2048    # fixed part + addresses + TLVs; HAProxy's own TLVs are far smaller
HEADER_TIMEOUT = 5.0  # seconds a trusted peer has to send the whole header (HAProxy sends it at once)


class BadHeader(Exception):
    """Not a PROXY header, or one we refuse; the message is ours, never the peer's bytes."""


@dataclass(frozen=True)
class Header:
    version: int
    source: IPv4Address | IPv6Address | None       # None: v2 LOCAL (a health check) or v1 UNKNOWN
    destination: IPv4Address | IPv6Address | None
    rest: bytes                                   # what followed the header: the client's first bytes


def _checked(addr, family: int):
    if addr is None:
        return None
    if getattr(addr, "type", None) != "TCP":
        raise BadHeader("not a TCP connection")
    try:
        ip = ipaddress.ip_address(addr.host)
    except ValueError:
        raise BadHeader("address is not an IP address") from None
    if ip.version != family or not 0 <= addr.port <= 65535:
        raise BadHeader("address does not match its family")
    if ip.version == 6 and ip.ipv4_mapped is not None:
        # a dual-stack proxy's IPv4 client: one address form, for the caps, the throttle and fail2ban
        return IPv4Address("TCP", str(ip.ipv4_mapped), addr.port)
    return type(addr)("TCP", str(ip), addr.port)


class HeaderReader:
    """Feed bytes as they arrive; ``feed`` returns the Header once it is complete, else None."""

    def __init__(self):
        self.buf = b""

    def feed(self, data: bytes) -> Header | None:
        self.buf += data
        b = self.buf
        if V2_PREFIX.startswith(b[:len(V2_PREFIX)]):
            return self._v2(b)
        if V1_PREFIX.startswith(b[:len(V1_PREFIX)]):
            return self._v1(b)
        raise BadHeader("not a PROXY protocol header")

    def _v2(self, b: bytes) -> Header | None:
        if len(b) < 16:
            return None
        if b[12] >> 4 != 2:
            raise BadHeader("unknown PROXY protocol v2 version")
        size = 16 + struct.unpack("!H", b[14:16])[0]
        if size > V2_MAX:
            raise BadHeader("PROXY protocol v2 header too long")
        if len(b) < size:
            return None
        info = self._parse(V2Parser.parse, b[:size])
        if info.source is not None and not isinstance(info.source, (IPv4Address, IPv6Address)):
            return Header(2, None, None, b[size:])         # AF_UNIX: no client address we can use
        family = 4 if isinstance(info.source, IPv4Address) else 6
        return Header(2, _checked(info.source, family), _checked(info.destination, family), b[size:])

    def _v1(self, b: bytes) -> Header | None:
        end = b.find(b"\r\n")
        if end < 0:
            if len(b) >= V1_MAX:
                raise BadHeader("PROXY protocol v1 line too long")
            return None
        if end + 2 > V1_MAX:
            raise BadHeader("PROXY protocol v1 line too long")
        line = b[:end]
        if line.split(b" ")[1:2] == [b"UNKNOWN"]:
            # the rest of an UNKNOWN line is to be ignored; Twisted's parser refuses a bare "PROXY UNKNOWN"
            return Header(1, None, None, b[end + 2:])
        info = self._parse(V1Parser.parse, line)
        family = 6 if line.split(b" ")[1:2] == [b"TCP6"] else 4
        return Header(1, _checked(info.source, family), _checked(info.destination, family), b[end + 2:])

    @staticmethod
    def _parse(parse, raw: bytes):
        try:
            return parse(raw)
        except (InvalidProxyHeader, ValueError, struct.error, KeyError, IndexError, UnicodeDecodeError):
            raise BadHeader("malformed PROXY protocol header") from None
