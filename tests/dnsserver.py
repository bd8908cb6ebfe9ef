"""A tiny authoritative DNS server for tests (dnslib), on 127.0.0.1, UDP and TCP, in threads.

Tests never touch the outside network: they start one of these, load zone lines into it and
point a ``dns.resolver.Resolver(configure=False)`` at it::

    with TestDNS() as dns_srv:
        dns_srv.add('''
            example.test.          300 IN MX  10 mx1.qiye.aliyun.com.
            _imaps._tcp.example.test. 300 IN SRV 0 1 993 mail.example.test.
            imap.example.test.     300 IN A   127.0.0.1
        ''')
        resolver = dns_srv.resolver()

Answers are authoritative (AA set): records of the asked name and type; NOERROR with an empty
answer (NODATA) when the name has records of other types only (or is an empty non-terminal,
e.g. ``_tcp.example.test``); NXDOMAIN otherwise.  No CNAME chasing, no wildcards, no
delegation -- enough for MX, SRV, A and AAAA look-ups.  Records can be added while it runs.
"""

from __future__ import annotations

import threading

import dns.resolver
from dnslib import QTYPE, RCODE, RR, DNSLabel, DNSRecord
from dnslib.server import DNSLogger, DNSServer

__all__ = ["TestDNS"]


class _Resolver:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rrs: dict[tuple[str, int], list[RR]] = {}
        self._names: set[str] = set()  # every owner name and its ancestors (empty non-terminals)

    @staticmethod
    def _key(name) -> str:
        return str(DNSLabel(str(name))).lower().rstrip(".") + "."

    def add(self, zone_text: str) -> None:
        rrs = RR.fromZone(_dedent(zone_text))
        with self._lock:
            for rr in rrs:
                owner = self._key(rr.rname)
                self._rrs.setdefault((owner, rr.rtype), []).append(rr)
                labels = owner.rstrip(".").split(".")
                for i in range(len(labels)):
                    self._names.add(".".join(labels[i:]) + ".")

    def clear(self) -> None:
        with self._lock:
            self._rrs.clear()
            self._names.clear()

    def resolve(self, request: DNSRecord, handler) -> DNSRecord:
        reply = request.reply()  # QR, AA and RD copied; RA off
        reply.header.aa = 1
        q = request.q
        name = self._key(q.qname)
        with self._lock:
            if q.qtype == QTYPE.ANY:
                found = [rr for (n, _), rrs in self._rrs.items() if n == name for rr in rrs]
            else:
                found = list(self._rrs.get((name, q.qtype), ()))
            known = name in self._names
        for rr in found:
            rr = RR(rname=q.qname, rtype=rr.rtype, rclass=rr.rclass, ttl=rr.ttl, rdata=rr.rdata)
            reply.add_answer(rr)
        if not found and not known:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


def _dedent(text: str) -> str:
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


class TestDNS:
    """Authoritative test DNS server on 127.0.0.1:<free port>, UDP and TCP (see the module doc)."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, zone_text: str = "", *, address: str = "127.0.0.1") -> None:
        self.address = address
        self.port: int = 0
        self._resolver = _Resolver()
        self._servers: list[DNSServer] = []
        self.queries: list[tuple[str, str]] = []  # (name, type) asked, for assertions
        if zone_text:
            self.add(zone_text)

    # -------------------------------------------------------------- zone data

    def add(self, zone_text: str) -> TestDNS:
        """Add records written as zone-file lines (absolute names, with TTL and class)."""
        self._resolver.add(zone_text)
        return self

    def clear(self) -> None:
        self._resolver.clear()

    # -------------------------------------------------------------- lifecycle

    def start(self) -> TestDNS:
        if self._servers:
            return self
        logger = DNSLogger(log="-recv,-send,-request,-reply,-truncated,-error,-data", logf=lambda s: None)
        outer = self

        class _Recording:
            def resolve(self, request, handler):
                outer.queries.append((str(request.q.qname).rstrip(".").lower(), QTYPE[request.q.qtype]))
                return outer._resolver.resolve(request, handler)

        last: OSError | None = None
        for _ in range(20):  # a free UDP port whose TCP twin is free too
            udp = tcp = None
            try:
                udp = DNSServer(_Recording(), address=self.address, port=0, tcp=False, logger=logger)
                port = udp.server.server_address[1]
                tcp = DNSServer(_Recording(), address=self.address, port=port, tcp=True, logger=logger)
            except OSError as e:
                last = e
                for s in (udp, tcp):
                    if s is not None:
                        s.server.server_close()
                continue
            self.port = port
            self._servers = [udp, tcp]
            for s in self._servers:
                s.start_thread()
            return self
        raise RuntimeError(f"no free UDP+TCP port pair on {self.address}: {last}")

    def stop(self) -> None:
        servers, self._servers = self._servers, []
        for s in servers:
            s.server.shutdown()
            s.server.server_close()
            s.thread.join(timeout=5)

    def __enter__(self) -> TestDNS:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -------------------------------------------------------------- clients

    def resolver(self, timeout: float = 2.0) -> dns.resolver.Resolver:
        """A dnspython resolver that asks only this server (nothing from /etc/resolv.conf)."""
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [self.address]
        r.port = self.port
        r.timeout = timeout
        r.lifetime = timeout
        r.cache = None
        return r
