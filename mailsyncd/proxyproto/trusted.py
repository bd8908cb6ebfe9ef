"""Which peers may send a PROXY header: ``frontdoor.trusted_proxies``.

Apart from ``header`` (which needs Twisted's parsers) so that reading a config does not load Twisted.
"""

from __future__ import annotations

import ipaddress


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or network (CIDR, e.g. 10.0.0.0/24)") from None
        raise ValueError(f"{text!r} has host bits set; did you mean {net}?") from None


def _ip(host: str | None):
    try:
        ip = ipaddress.ip_address((host or "").split("%", 1)[0])
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:    # a dual-stack [::] listener's IPv4 peers
        ip = ip.ipv4_mapped
    return ip


class TrustedProxies:
    """The networks whose peers may tell us, in a PROXY header, who the client is."""

    def __init__(self, networks=()):
        self.networks = tuple(_network(n) if isinstance(n, str) else n for n in networks)

    @staticmethod
    def parse(items) -> tuple[str, ...]:
        """Normalised CIDR strings (a bare address is /32 or /128); ValueError says what is wrong."""
        return tuple(str(_network(item)) for item in items)

    def trusts(self, host: str | None) -> bool:
        ip = _ip(host)
        return ip is not None and any(ip.version == n.version and ip in n for n in self.networks)

    def __bool__(self) -> bool:
        return bool(self.networks)
