"""DNS lookups for detection: one query with its failure in words, and domain name checks."""

from __future__ import annotations

from typing import NamedTuple

import dns.exception
import dns.name
import dns.resolver


class _Result(NamedTuple):
    records: list
    error: str | None = None
    nxdomain: bool = False


def _query(resolver: dns.resolver.Resolver, name: str, rdtype: str, timeout: float) -> _Result:
    try:
        qname = dns.name.from_text(name)  # absolute: no search list
        return _Result(list(resolver.resolve(qname, rdtype, lifetime=timeout, search=False)))
    except dns.resolver.NXDOMAIN:
        return _Result([], "no such name (NXDOMAIN)", nxdomain=True)
    except dns.resolver.NoAnswer:
        return _Result([])
    except dns.resolver.NoNameservers as e:
        return _Result([], f"no name server gave an answer ({_short(e)})")
    except dns.resolver.LifetimeTimeout:
        return _Result([], f"DNS timed out after {timeout:g}s")
    except dns.exception.Timeout:
        return _Result([], f"DNS timed out after {timeout:g}s")
    except dns.exception.DNSException as e:
        return _Result([], f"DNS error: {_short(e)}")


def _short(e: BaseException, n: int = 160) -> str:
    s = " ".join(str(e).split())
    return s if len(s) <= n else s[: n - 3] + "..."


def _normalize_domain(domain: str) -> str:
    d = (domain or "").strip()
    if "@" in d:
        d = d.rsplit("@", 1)[1]
    d = d.rstrip(".").lower()
    if not d or "." not in d:
        raise ValueError(f"not a mail domain: {domain!r}")
    try:
        return dns.name.from_text(d).to_text(omit_final_dot=True).lower()
    except dns.exception.DNSException as e:
        raise ValueError(f"not a valid domain name: {domain!r} ({e})") from None


