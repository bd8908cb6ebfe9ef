"""``dns:``: the resolver used to detect an old provider (``host: auto``)."""

import ipaddress
from dataclasses import dataclass

from ._base import _boolean, _Errors, _Invalid, _positive, _Section, _str_list
from .listen import Address


@dataclass(frozen=True, slots=True)
class DNS:
    nameservers: tuple[Address, ...] = ()   # empty: the system's resolver (/etc/resolv.conf)
    timeout: float = 5.0
    allow_private: bool = False             # MX/SRV answers may point at loopback/private/link-local hosts



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


