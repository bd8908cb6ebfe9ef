"""Is this host loopback?  The one rule for config checks and the web pages' client checks."""

import ipaddress


def loopback_ip(host: str | None) -> bool:
    """127.0.0.0/8 and ::1 (also IPv4-mapped); names are not addresses."""
    try:
        ip = ipaddress.ip_address((host or "").split("%", 1)[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def loopback_host(host: str) -> bool:
    """A host to listen on or connect to: "localhost" or a loopback address (any other name may
    resolve anywhere)."""
    return host.lower().rstrip(".") == "localhost" or loopback_ip(host)
