"""A listener that reads a PROXY protocol header before anything else (HAProxy ``send-proxy[-v2]``).

``ProxyHeaderFactory`` wraps the listener's own factory (the front door's, or the web site's; for an
implicit-TLS port, the TLS factory around it: the header comes before the TLS handshake):

* a peer outside ``frontdoor.trusted_proxies`` is closed at once (``event=proxy_untrusted``, its first
  refusal; then at most one ``event=proxy_untrusted_more`` a minute per address: refusals.py);
* a trusted peer must send a well-formed header within ``HEADER_TIMEOUT`` (``event=proxy_header_bad``),
  and still be trusted when it is complete (a reload may have taken it off the list meanwhile);
* a header without a client address (v2 LOCAL: HAProxy's health checks; v1 UNKNOWN) is closed
  once read: serving it as the proxy's own address would make the proxy's address a client's;
* only then is the wrapped protocol built, with the header's client address: the connection caps,
  the login throttle, the logs, the target's x-originating-ip and the web's rules all see it through
  ``buildProtocol(addr)`` and ``transport.getPeer()``.
"""

from __future__ import annotations

import logging

from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import directlyProvides, providedBy

from .header import HEADER_TIMEOUT, BadHeader, HeaderReader, TrustedProxies
from .refusals import SUMMARY_INTERVAL, RefusalLog

logger = logging.getLogger("mailsyncd.proxy")


class ProxyHeaderFactory(WrappingFactory):
    noisy = False

    def __init__(self, wrapped, reactor, trusted_ref, *, name: str, timeout: float = HEADER_TIMEOUT):
        super().__init__(wrapped)
        self.reactor = reactor
        self.trusted_ref = trusted_ref          # () -> CIDR strings (frontdoor.trusted_proxies; follows reloads)
        self.name = name
        self.timeout = timeout
        self._trusted_key: tuple[str, ...] | None = None
        self._trusted = TrustedProxies()
        self.refusals = RefusalLog(reactor, self._log_refused)

    def trusted(self) -> TrustedProxies:
        key = tuple(self.trusted_ref())
        if key != self._trusted_key:
            self._trusted_key, self._trusted = key, TrustedProxies(key)
        return self._trusted

    def buildProtocol(self, addr):
        ip = getattr(addr, "host", "?")
        if not self.trusted().trusts(ip):
            self.refusals.refused(ip)
            return None                        # Twisted closes the socket at once
        return ProxyHeaderProtocol(self)

    def _log_refused(self, ip: str, more: int) -> None:
        if more:
            logger.warning("event=proxy_untrusted_more ip=%s listener=%s refused=%d seconds=%d", ip, self.name,
                           more, SUMMARY_INTERVAL)
        else:
            logger.warning("event=proxy_untrusted ip=%s listener=%s", ip, self.name)


class ProxyHeaderProtocol(ProtocolWrapper):
    """Reads the header, then becomes a plain wrapper whose getPeer/getHost are the header's addresses."""

    def __init__(self, factory: ProxyHeaderFactory):
        super().__init__(factory, None)
        self.reader: HeaderReader | None = HeaderReader()
        self.client = self.destination = None
        self._timer = None

    def makeConnection(self, transport) -> None:
        # Like ProtocolWrapper's, but the wrapped protocol is built only once the header has come.
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)

    def connectionMade(self) -> None:
        self._timer = self.factory.reactor.callLater(self.factory.timeout, self._refuse, "timeout")

    def dataReceived(self, data: bytes) -> None:
        if self.wrappedProtocol is not None:
            self.wrappedProtocol.dataReceived(data)
            return
        if self.reader is None:                # refused, closing: ignore the rest
            return
        try:
            header = self.reader.feed(data)
        except BadHeader as e:
            self._refuse(str(e))
            return
        if header is None:
            return
        self.reader = None
        self._cancel_timer()
        if not self.factory.trusted().trusts(self.transport.getPeer().host):
            self._refuse("peer no longer in trusted_proxies")      # a reload while the header was coming
            return
        if header.source is None:
            logger.debug("event=proxy_local ip=%s listener=%s version=%d", self.transport.getPeer().host,
                         self.factory.name, header.version)
            self.transport.loseConnection()
            return
        self.client, self.destination = header.source, header.destination
        proto = self.factory.wrappedFactory.buildProtocol(header.source)
        if proto is None:
            self.transport.loseConnection()
            return
        self.wrappedProtocol = proto
        self.factory.registerProtocol(self)
        proto.makeConnection(self)
        if header.rest and self.wrappedProtocol is not None and self.connected:
            proto.dataReceived(header.rest)

    def _refuse(self, reason: str) -> None:
        self._timer = None
        self.reader = None
        logger.warning("event=proxy_header_bad ip=%s listener=%s reason=%r", self.transport.getPeer().host,
                       self.factory.name, reason)
        self.transport.abortConnection()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def connectionLost(self, reason) -> None:
        self._cancel_timer()
        self.connected = False
        if self.wrappedProtocol is not None:
            super().connectionLost(reason)

    def getPeer(self):
        return self.client or self.transport.getPeer()

    def getHost(self):
        return self.destination or self.transport.getHost()
